import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { sharedDir } from '../util/fs.js';

/**
 * CLIP's byte-level BPE tokenizer, a port of OpenAI's `simple_tokenizer.py` that gives the same ids
 * (with `ftfy.fix_text` taken as Unicode NFC normalisation). It loads either a Hugging Face tokenizer
 * folder (`vocab.json` + `merges.txt`) or OpenAI's `bpe_simple_vocab_16e6.txt.gz`.
 */

const SOT_TOKEN = '<|startoftext|>';
const EOT_TOKEN = '<|endoftext|>';
const OPENAI_BPE_FILE = 'bpe_simple_vocab_16e6.txt.gz';
/** simple_tokenizer.py keeps merges 1 .. 49152-256-2 of the file (line 0 is the version header). */
const OPENAI_MERGE_COUNT = 49152 - 256 - 2;
const DEFAULT_CONTEXT_LENGTH = 77;
/** Words are cached by their raw text; the cache is dropped when it reaches this size so memory stays bounded. */
const CACHE_LIMIT = 1 << 17;

// ---------------------------------------------------------------------------------------------------
// Text cleaning
// ---------------------------------------------------------------------------------------------------

/**
 * `str.strip()`'s whitespace (Python's `str.isspace`). It differs from JavaScript's: it has U+001C..U+001F
 * and U+0085 but not U+FEFF, so `trim()` won't do.
 */
const PY_SPACE = new Set(
  [0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
    0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000],
);
/**
 * simple_tokenizer.py imports `regex as re`, whose `\s` is Unicode White_Space: the same as `strip()`'s
 * set less U+001C..U+001F, which therefore survive inside the text (as punctuation).
 */
const WS_RUNS = /\p{White_Space}+/gu;

/** Python's `str.strip()` (all its whitespace is in the BMP, so UTF-16 units will do). */
function pyStrip(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && PY_SPACE.has(text.charCodeAt(start))) start++;
  while (end > start && PY_SPACE.has(text.charCodeAt(end - 1))) end--;
  return text.slice(start, end);
}

// HTML character references, following Python's `html.unescape` (which follows the HTML5 rules).

/** Names of U+00A0..U+00FF in code-point order. HTML5 accepts these legacy names without the ';' too. */
const LATIN1_NAMES = (
  'nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not shy reg macr ' +
  'deg plusmn sup2 sup3 acute micro para middot cedil sup1 ordm raquo frac14 frac12 frac34 iquest ' +
  'Agrave Aacute Acirc Atilde Auml Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml ' +
  'ETH Ntilde Ograve Oacute Ocirc Otilde Ouml times Oslash Ugrave Uacute Ucirc Uuml Yacute THORN szlig ' +
  'agrave aacute acirc atilde auml aring aelig ccedil egrave eacute ecirc euml igrave iacute icirc iuml ' +
  'eth ntilde ograve oacute ocirc otilde ouml divide oslash ugrave uacute ucirc uuml yacute thorn yuml'
).split(' ');

/** Other legacy names that also work without the ';'. */
const LEGACY_OTHERS: Record<string, number> = {
  amp: 0x26, lt: 0x3c, gt: 0x3e, quot: 0x22, AMP: 0x26, LT: 0x3c, GT: 0x3e, QUOT: 0x22, COPY: 0xa9, REG: 0xae,
};

/**
 * Names that need the ';': the rest of HTML 4's entities (Greek, punctuation, arrows, mathematics), with
 * HTML5's values, plus HTML5 names often met in scraped captions. Python knows all 2,231 HTML5 names;
 * one missing here is left as written, which only matters for rare symbols.
 */
const NAMED_ONLY: Record<string, number> = {
  // Latin Extended and spacing modifiers
  OElig: 0x152, oelig: 0x153, Scaron: 0x160, scaron: 0x161, Yuml: 0x178, fnof: 0x192, circ: 0x2c6, tilde: 0x2dc,
  // Greek
  Alpha: 0x391, Beta: 0x392, Gamma: 0x393, Delta: 0x394, Epsilon: 0x395, Zeta: 0x396, Eta: 0x397, Theta: 0x398,
  Iota: 0x399, Kappa: 0x39a, Lambda: 0x39b, Mu: 0x39c, Nu: 0x39d, Xi: 0x39e, Omicron: 0x39f, Pi: 0x3a0,
  Rho: 0x3a1, Sigma: 0x3a3, Tau: 0x3a4, Upsilon: 0x3a5, Phi: 0x3a6, Chi: 0x3a7, Psi: 0x3a8, Omega: 0x3a9,
  alpha: 0x3b1, beta: 0x3b2, gamma: 0x3b3, delta: 0x3b4, epsilon: 0x3b5, zeta: 0x3b6, eta: 0x3b7, theta: 0x3b8,
  iota: 0x3b9, kappa: 0x3ba, lambda: 0x3bb, mu: 0x3bc, nu: 0x3bd, xi: 0x3be, omicron: 0x3bf, pi: 0x3c0,
  rho: 0x3c1, sigmaf: 0x3c2, sigma: 0x3c3, tau: 0x3c4, upsilon: 0x3c5, phi: 0x3c6, chi: 0x3c7, psi: 0x3c8,
  omega: 0x3c9, thetasym: 0x3d1, upsih: 0x3d2, piv: 0x3d6,
  // General punctuation
  ensp: 0x2002, emsp: 0x2003, thinsp: 0x2009, zwnj: 0x200c, zwj: 0x200d, lrm: 0x200e, rlm: 0x200f,
  hyphen: 0x2010, dash: 0x2010, ndash: 0x2013, mdash: 0x2014, horbar: 0x2015, lsquo: 0x2018, rsquo: 0x2019,
  sbquo: 0x201a, ldquo: 0x201c, rdquo: 0x201d, bdquo: 0x201e, dagger: 0x2020, Dagger: 0x2021, bull: 0x2022,
  bullet: 0x2022, hellip: 0x2026, mldr: 0x2026, permil: 0x2030, prime: 0x2032, Prime: 0x2033,
  lsaquo: 0x2039, rsaquo: 0x203a, oline: 0x203e, frasl: 0x2044, euro: 0x20ac,
  // Letter-like symbols
  image: 0x2111, weierp: 0x2118, real: 0x211c, trade: 0x2122, TRADE: 0x2122, alefsym: 0x2135, incare: 0x2105,
  // Arrows
  larr: 0x2190, uarr: 0x2191, rarr: 0x2192, darr: 0x2193, harr: 0x2194, crarr: 0x21b5,
  lArr: 0x21d0, uArr: 0x21d1, rArr: 0x21d2, dArr: 0x21d3, hArr: 0x21d4,
  // Mathematical operators
  forall: 0x2200, part: 0x2202, exist: 0x2203, empty: 0x2205, nabla: 0x2207, isin: 0x2208, notin: 0x2209,
  ni: 0x220b, prod: 0x220f, sum: 0x2211, minus: 0x2212, lowast: 0x2217, radic: 0x221a, prop: 0x221d,
  infin: 0x221e, ang: 0x2220, and: 0x2227, or: 0x2228, cap: 0x2229, cup: 0x222a, int: 0x222b, there4: 0x2234,
  sim: 0x223c, cong: 0x2245, asymp: 0x2248, ne: 0x2260, equiv: 0x2261, le: 0x2264, ge: 0x2265, sub: 0x2282,
  sup: 0x2283, nsub: 0x2284, sube: 0x2286, supe: 0x2287, oplus: 0x2295, otimes: 0x2297, perp: 0x22a5,
  sdot: 0x22c5, lceil: 0x2308, rceil: 0x2309, lfloor: 0x230a, rfloor: 0x230b, lang: 0x27e8, rang: 0x27e9,
  // Shapes and symbols
  loz: 0x25ca, spades: 0x2660, clubs: 0x2663, hearts: 0x2665, diams: 0x2666, star: 0x2606, starf: 0x2605,
  bigstar: 0x2605, check: 0x2713, cross: 0x2717, sharp: 0x266f, flat: 0x266d, natural: 0x266e, female: 0x2640,
  male: 0x2642, phone: 0x260e, half: 0xbd, angst: 0xc5, ohm: 0x3a9, micro: 0xb5,
  // ASCII punctuation by name (HTML5)
  apos: 0x27, Tab: 0x09, NewLine: 0x0a, excl: 0x21, num: 0x23, dollar: 0x24, percnt: 0x25, lpar: 0x28,
  rpar: 0x29, ast: 0x2a, midast: 0x2a, plus: 0x2b, comma: 0x2c, period: 0x2e, sol: 0x2f, colon: 0x3a,
  semi: 0x3b, equals: 0x3d, quest: 0x3f, commat: 0x40, lsqb: 0x5b, lbrack: 0x5b, bsol: 0x5c, rsqb: 0x5d,
  rbrack: 0x5d, Hat: 0x5e, lowbar: 0x5f, UnderBar: 0x5f, grave: 0x60, DiacriticalGrave: 0x60, lcub: 0x7b,
  lbrace: 0x7b, verbar: 0x7c, vert: 0x7c, VerticalLine: 0x7c, rcub: 0x7d, rbrace: 0x7d, NonBreakingSpace: 0xa0,
};

/** Entity names as Python's `html.entities.html5` keys them: with the ';', and legacy ones also without. */
const ENTITIES: ReadonlyMap<string, string> = (() => {
  const m = new Map<string, string>();
  const legacy = (name: string, cp: number): void => {
    m.set(name, String.fromCodePoint(cp));
    m.set(`${name};`, String.fromCodePoint(cp));
  };
  LATIN1_NAMES.forEach((name, i) => legacy(name, 0xa0 + i));
  for (const [name, cp] of Object.entries(LEGACY_OTHERS)) legacy(name, cp);
  for (const [name, cp] of Object.entries(NAMED_ONLY)) if (!m.has(`${name};`)) m.set(`${name};`, String.fromCodePoint(cp));
  return m;
})();

/** Numeric references to C1 controls mean Windows-1252 characters (and a few other fixes), per HTML5. */
const INVALID_CHARREFS: ReadonlyMap<number, string> = (() => {
  const m = new Map<number, string>([[0x00, '\ufffd'], [0x0d, '\r']]);
  // 0x80..0x9F as Windows-1252; the five bytes it leaves undefined stand for themselves.
  const cp1252 = '\u20ac\x81\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\x8d\u017d\x8f' +
    '\x90\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\x9d\u017e\u0178';
  for (let i = 0; i < 32; i++) m.set(0x80 + i, cp1252[i]!);
  return m;
})();

/** Code points that HTML5 drops when they come from a numeric reference (controls and noncharacters). */
function isDroppedCodePoint(cp: number): boolean {
  return (cp >= 0x1 && cp <= 0x8) || cp === 0xb || (cp >= 0xe && cp <= 0x1f) || (cp >= 0x7f && cp <= 0x9f) ||
    (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe;
}

// The `u` flag makes `{1,32}` count code points, as Python's `re` does.
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

function replaceCharref(_match: string, ref: string): string {
  if (ref[0] === '#') {
    const hex = ref[1] === 'x' || ref[1] === 'X';
    const digits = ref.slice(hex ? 2 : 1).replace(/;$/, '');
    const cp = parseInt(digits, hex ? 16 : 10);
    const fixed = INVALID_CHARREFS.get(cp);
    if (fixed !== undefined) return fixed;
    if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return '\ufffd';
    if (isDroppedCodePoint(cp)) return '';
    return String.fromCodePoint(cp);
  }
  const whole = ENTITIES.get(ref);
  if (whole !== undefined) return whole;
  // Like browsers, take the longest known name that starts the reference (e.g. "&copy2024" is "©2024").
  const cps = Array.from(ref);
  for (let x = cps.length - 1; x > 1; x--) {
    const prefix = cps.slice(0, x).join('');
    const hit = ENTITIES.get(prefix);
    if (hit !== undefined) return hit + cps.slice(x).join('');
  }
  return `&${ref}`;
}

/** Python's `html.unescape`: named, decimal and hexadecimal character references. */
export function htmlUnescape(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(CHARREF, replaceCharref);
}

/**
 * The text as simple_tokenizer.py sees it before splitting: `fix_text` (here NFC), HTML unescaped twice
 * (captions scraped from the web are often escaped twice), whitespace runs folded to one space, stripped,
 * lower case.
 */
export function cleanText(text: string): string {
  let t = text.normalize('NFC');
  t = pyStrip(htmlUnescape(htmlUnescape(t)));
  t = pyStrip(t.replace(WS_RUNS, ' '));
  return t.toLowerCase();
}

/**
 * simple_tokenizer.py's split into words. Its `\s` is the `regex` module's, i.e. Unicode White_Space;
 * JavaScript's `\s` would also take U+FEFF, which the reference keeps as punctuation.
 */
const WORD_PATTERN =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\p{White_Space}\p{L}\p{N}]+/giu;

// ---------------------------------------------------------------------------------------------------
// Byte-level symbols
// ---------------------------------------------------------------------------------------------------

/**
 * GPT-2/CLIP's byte-to-character map: printable Latin-1 bytes stand for themselves and the other 68
 * bytes take U+0100 onwards, so every byte is a visible, non-space character. Returned in
 * simple_tokenizer.py's order (printable bytes first), which is the order of the first 256 ids.
 */
function bytesToUnicode(): { bytes: number[]; chars: string[] } {
  const bytes: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bytes.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bytes.push(b);
  for (let b = 0xae; b <= 0xff; b++) bytes.push(b);
  const cps = [...bytes];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      cps.push(256 + n);
      n++;
    }
  }
  return { bytes, chars: cps.map((c) => String.fromCharCode(c)) };
}

const BYTE_ORDER = bytesToUnicode();
/** byte value -> its symbol */
const BYTE_TO_CHAR: readonly string[] = (() => {
  const out = new Array<string>(256);
  BYTE_ORDER.bytes.forEach((b, i) => { out[b] = BYTE_ORDER.chars[i]!; });
  return out;
})();
/** symbol -> byte value */
const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_ORDER.chars.map((c, i) => [c, BYTE_ORDER.bytes[i]!]));

// ---------------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------------

export class ClipTokenizer {
  readonly sot: number;
  readonly eot: number;
  readonly vocabSize: number;
  private readonly encoder: ReadonlyMap<string, number>;
  private readonly decoder: readonly (string | undefined)[];
  /** "first second" -> merge rank (lower merges first) */
  private readonly ranks: ReadonlyMap<string, number>;
  private readonly cache = new Map<string, readonly number[]>();

  private constructor(encoder: Map<string, number>, merges: readonly (readonly [string, string])[], source: string) {
    const sot = encoder.get(SOT_TOKEN);
    const eot = encoder.get(EOT_TOKEN);
    if (sot === undefined || eot === undefined) throw new Error(`${source}: the vocabulary lacks ${SOT_TOKEN} or ${EOT_TOKEN}`);
    // Every byte must have a symbol, alone and word-final, or some text could not be encoded.
    for (const c of BYTE_ORDER.chars) {
      if (!encoder.has(c) || !encoder.has(`${c}</w>`)) throw new Error(`${source}: the vocabulary lacks the byte symbol "${c}"`);
    }
    const ranks = new Map<string, number>();
    merges.forEach(([a, b], i) => {
      if (!encoder.has(a + b)) throw new Error(`${source}: merge ${i + 1} ("${a} ${b}") makes a symbol that is not in the vocabulary`);
      const key = `${a} ${b}`;
      if (!ranks.has(key)) ranks.set(key, i);
    });
    let size = 0;
    for (const id of encoder.values()) size = Math.max(size, id + 1);
    const decoder = new Array<string | undefined>(size).fill(undefined);
    for (const [tok, id] of encoder) decoder[id] = tok;
    this.encoder = encoder;
    this.decoder = decoder;
    this.ranks = ranks;
    this.sot = sot;
    this.eot = eot;
    this.vocabSize = size;
    // Special tokens written in the text map to themselves, as simple_tokenizer.py's seeded cache does.
    this.cache.set(SOT_TOKEN, [sot]);
    this.cache.set(EOT_TOKEN, [eot]);
  }

  /** Loads a model folder: Hugging Face's `vocab.json` + `merges.txt`, else OpenAI's `bpe_simple_vocab_16e6.txt.gz`. */
  static fromFolder(dir: string): ClipTokenizer {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${dir}: no such folder (looking for CLIP tokenizer files)`);
    const vocabPath = join(dir, 'vocab.json');
    const mergesPath = join(dir, 'merges.txt');
    const hasVocab = existsSync(vocabPath);
    const hasMerges = existsSync(mergesPath);
    if (hasVocab && hasMerges) return ClipTokenizer.fromHuggingFace(vocabPath, mergesPath);
    const gz = join(dir, OPENAI_BPE_FILE);
    if (existsSync(gz)) return ClipTokenizer.fromOpenAIBpe(gz);
    if (hasVocab !== hasMerges) {
      throw new Error(`${dir}: has ${hasVocab ? 'vocab.json' : 'merges.txt'} but not ${hasVocab ? 'merges.txt' : 'vocab.json'}, which the CLIP tokenizer needs too`);
    }
    throw new Error(`${dir}: no CLIP tokenizer files (expected vocab.json + merges.txt, or ${OPENAI_BPE_FILE})`);
  }

  /** Loads OpenAI's gzipped merge list; the vocabulary is derived from it as simple_tokenizer.py does. */
  static fromOpenAIBpe(gzPath: string): ClipTokenizer {
    let text: string;
    try {
      text = gunzipSync(readFileSync(gzPath)).toString('utf8');
    } catch (err) {
      throw new Error(`${gzPath}: cannot read the CLIP BPE file (${(err as Error).message})`);
    }
    const lines = text.split('\n');
    if (lines.length < OPENAI_MERGE_COUNT + 1) {
      throw new Error(`${gzPath}: has ${lines.length - 1} merges, but CLIP's BPE needs ${OPENAI_MERGE_COUNT}`);
    }
    const merges = lines.slice(1, OPENAI_MERGE_COUNT + 1).map((line, i) => parseMerge(line, gzPath, i + 2));
    // ids: the 256 byte symbols, the same with '</w>', one per merge, then the two special tokens.
    const vocab = [...BYTE_ORDER.chars, ...BYTE_ORDER.chars.map((c) => `${c}</w>`), ...merges.map(([a, b]) => a + b), SOT_TOKEN, EOT_TOKEN];
    const encoder = new Map<string, number>();
    vocab.forEach((tok, i) => encoder.set(tok, i));
    return new ClipTokenizer(encoder, merges, gzPath);
  }

  /** The shared copy of OpenAI's BPE file: for tests and tools; library code loads the model's own folder. */
  static default(): ClipTokenizer {
    return ClipTokenizer.fromOpenAIBpe(join(sharedDir(), 'clip', OPENAI_BPE_FILE));
  }

  private static fromHuggingFace(vocabPath: string, mergesPath: string): ClipTokenizer {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(vocabPath, 'utf8'));
    } catch (err) {
      throw new Error(`${vocabPath}: not a JSON vocabulary (${(err as Error).message})`);
    }
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${vocabPath}: expected an object of token -> id`);
    const encoder = new Map<string, number>();
    for (const [tok, id] of Object.entries(raw)) {
      if (!Number.isInteger(id) || (id as number) < 0) throw new Error(`${vocabPath}: token "${tok}" has id ${String(id)}, not a non-negative integer`);
      encoder.set(tok, id as number);
    }
    const lines = readFileSync(mergesPath, 'utf8').split('\n');
    const merges: (readonly [string, string])[] = [];
    lines.forEach((line, i) => {
      if (i === 0 && line.startsWith('#version')) return;
      if (line.trim() === '') return;
      merges.push(parseMerge(line, mergesPath, i + 1));
    });
    return new ClipTokenizer(encoder, merges, `${vocabPath} + merges.txt`);
  }

  /** BPE ids of the cleaned text, without sot/eot. */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const match of cleanText(text).matchAll(WORD_PATTERN)) {
      const word = match[0];
      let wordIds = this.cache.get(word);
      if (wordIds === undefined) {
        wordIds = this.bpe(word);
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(word, wordIds);
      }
      for (const id of wordIds) ids.push(id);
    }
    return ids;
  }

  /**
   * `[sot, ...ids, eot]` padded with 0 to `contextLength`; longer text is cut to `contextLength` with eot
   * as the last token, as `clip.tokenize(..., truncate=True)` does.
   */
  tokenize(text: string, contextLength: number = DEFAULT_CONTEXT_LENGTH): number[] {
    checkContextLength(contextLength);
    const out = new Array<number>(contextLength).fill(0);
    this.writeRow(text, out, 0, contextLength);
    return out;
  }

  /** Tokenizes each text into one row of a row-major `[texts.length, contextLength]` array. */
  tokenizeBatch(texts: readonly string[], contextLength: number = DEFAULT_CONTEXT_LENGTH): Int32Array {
    checkContextLength(contextLength);
    const out = new Int32Array(texts.length * contextLength);
    texts.forEach((text, i) => this.writeRow(text, out, i * contextLength, contextLength));
    return out;
  }

  /**
   * Text of the ids, as simple_tokenizer.py decodes them, with the conveniences needed for `tokenize`'s
   * output: a leading sot is skipped, decoding stops at the first eot (what follows is padding), and the
   * space that the last word's `</w>` leaves is trimmed. Bytes that do not form UTF-8 become U+FFFD.
   */
  decode(ids: readonly number[]): string {
    const bytes: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id === this.sot && i === 0) continue;
      if (id === this.eot) break;
      const tok = this.decoder[id];
      if (tok === undefined) throw new Error(`token id ${id} is not in the vocabulary (size ${this.vocabSize})`);
      // Special tokens are spelt in printable ASCII, whose symbols are the bytes themselves.
      const body = tok.endsWith('</w>') ? tok.slice(0, -4) : tok;
      for (const c of body) bytes.push(CHAR_TO_BYTE.get(c) ?? 0x3f);
      if (body !== tok) bytes.push(0x20);
    }
    return Buffer.from(bytes).toString('utf8').trimEnd();
  }

  /** Byte-level BPE of one word: its UTF-8 bytes as symbols, '</w>' on the last, then merges by rank. */
  private bpe(word: string): number[] {
    const utf8 = Buffer.from(word, 'utf8');
    let symbols = new Array<string>(utf8.length);
    for (let i = 0; i < utf8.length; i++) symbols[i] = BYTE_TO_CHAR[utf8[i]!]!;
    symbols[symbols.length - 1] += '</w>';
    while (symbols.length > 1) {
      // The adjacent pair that was merged earliest in training goes first.
      let best = Infinity;
      let at = -1;
      for (let i = 0; i < symbols.length - 1; i++) {
        const r = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (r !== undefined && r < best) { best = r; at = i; }
      }
      if (at < 0) break;
      // Merge every occurrence of that pair, left to right and non-overlapping; `at` is the first.
      const first = symbols[at]!;
      const second = symbols[at + 1]!;
      const merged = symbols.slice(0, at);
      for (let i = at; i < symbols.length;) {
        if (i < symbols.length - 1 && symbols[i] === first && symbols[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(symbols[i]!);
          i += 1;
        }
      }
      symbols = merged;
    }
    return symbols.map((s) => {
      const id = this.encoder.get(s);
      if (id === undefined) throw new Error(`BPE symbol "${s}" of word "${word}" is not in the vocabulary`);
      return id;
    });
  }

  private writeRow(text: string, out: number[] | Int32Array, offset: number, contextLength: number): void {
    const ids = this.encode(text);
    const n = Math.min(ids.length + 2, contextLength);
    out[offset] = this.sot;
    for (let i = 1; i < n - 1; i++) out[offset + i] = ids[i - 1]!;
    // When cut, eot replaces the last token that fits, as clip.tokenize(truncate=True) does.
    out[offset + n - 1] = this.eot;
  }
}

/** Position of the first eot token, where CLIP takes the text features. Throws if there is none. */
export function eotIndex(ids: ArrayLike<number>, eot: number = 49407): number {
  for (let i = 0; i < ids.length; i++) if (ids[i] === eot) return i;
  throw new Error(`no end-of-text token (${eot}) among ${ids.length} token ids`);
}

function parseMerge(line: string, file: string, lineNo: number): readonly [string, string] {
  // Python's str.split(): any whitespace; the symbols themselves never contain whitespace.
  const parts = line.trim().split(/\s+/);
  if (parts.length !== 2) throw new Error(`${file}:${lineNo}: expected a merge "a b", got ${JSON.stringify(line)}`);
  return [parts[0]!, parts[1]!];
}

function checkContextLength(contextLength: number): void {
  if (!Number.isInteger(contextLength) || contextLength < 2) {
    throw new Error(`contextLength must be an integer of at least 2 (room for sot and eot), got ${contextLength}`);
  }
}
