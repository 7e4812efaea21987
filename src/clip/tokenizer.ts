import { existsSync, statSync } from 'node:fs';
import { InputFileError, READ_LIMITS, readRegularFile, readRegularText } from '../util/fs.js';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { decodeHTML, replaceCodePoint } from 'entities/decode';

/**
 * CLIP's byte-level BPE tokenizer, a port of OpenAI's `simple_tokenizer.py` that gives the same ids
 * (with `ftfy.fix_text` taken as Unicode NFC normalisation). It loads either a Hugging Face tokenizer
 * folder (`vocab.json` + `merges.txt`) or OpenAI's `bpe_simple_vocab_16e6.txt.gz`; the package ships the
 * latter (OpenAI's CLIP, MIT: assets/clip/LICENSE) for model folders that have no tokenizer files.
 */

const SOT_TOKEN = '<|startoftext|>';
const EOT_TOKEN = '<|endoftext|>';
const OPENAI_BPE_FILE = 'bpe_simple_vocab_16e6.txt.gz';
/** The shipped copy, found from this module: src/clip/ (tsx) and dist/clip/ (built) both sit two levels below the package root. */
const SHIPPED_BPE = fileURLToPath(new URL(`../../assets/clip/${OPENAI_BPE_FILE}`, import.meta.url));
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
const PY_SPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006,
  0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);
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

// HTML character references as Python's `html.unescape` reads them. The entity table and the HTML5
// numeric fixes (NUL, surrogates and out-of-range values to U+FFFD, C1 controls as Windows-1252) are
// the `entities` package's; Python's rules for where a reference ends and what it drops are kept here.

/**
 * Code points that Python drops when they come from a numeric reference (controls and noncharacters);
 * HTML5 and `entities` keep them. C1 controls (0x80..0x9F) are not here: they are Windows-1252.
 */
function isDroppedCodePoint(cp: number): boolean {
  return (
    (cp >= 0x1 && cp <= 0x8) ||
    cp === 0xb ||
    (cp >= 0xe && cp <= 0x1f) ||
    cp === 0x7f ||
    (cp >= 0xfdd0 && cp <= 0xfdef) ||
    (cp <= 0x10ffff && (cp & 0xfffe) === 0xfffe)
  );
}

// Python's `html._charref`. The `u` flag makes `{1,32}` count code points, as Python's `re` does.
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

function replaceCharref(match: string, ref: string): string {
  if (ref[0] === '#') {
    const hex = ref[1] === 'x' || ref[1] === 'X';
    const cp = parseInt(ref.slice(hex ? 2 : 1), hex ? 16 : 10); // parseInt stops at the ';'
    if (isDroppedCodePoint(cp)) return '';
    // A huge number parses inexactly or to Infinity; out of range is all that matters (U+FFFD).
    return String.fromCodePoint(replaceCodePoint(Number.isFinite(cp) ? cp : 0x110000));
  }
  // A named reference: the whole name, else the longest legacy name that starts it ("&copy2024" is "©2024").
  return decodeHTML(match);
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
const WORD_PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\p{White_Space}\p{L}\p{N}]+/giu;

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
  BYTE_ORDER.bytes.forEach((b, i) => {
    out[b] = BYTE_ORDER.chars[i]!;
  });
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
  private idOf: string | undefined;

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

  /** What identifies the tokenizer, whichever files it came from: sha256 of its vocabulary (by id) and merge ranks. */
  get id(): string {
    if (this.idOf === undefined) {
      const h = createHash('sha256');
      this.decoder.forEach((tok, id) => h.update(`${id}\t${tok ?? ''}\n`));
      h.update('\0');
      for (const [pair, rank] of this.ranks) h.update(`${rank}\t${pair}\n`);
      this.idOf = `sha256:${h.digest('hex')}`;
    }
    return this.idOf;
  }

  /**
   * The tokenizer of a model folder, the one place that decides it: Hugging Face's `vocab.json` +
   * `merges.txt`, else OpenAI's `bpe_simple_vocab_16e6.txt.gz`, else (no tokenizer files at all) the
   * vocabulary shipped with the package, which every CLIP shares. Half a pair or a broken file is an
   * error naming the file, never a quiet fallback: it means the folder is not what its owner thinks.
   */
  static fromFolder(dir: string): ClipTokenizer {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${dir}: no such folder (looking for CLIP tokenizer files)`);
    const vocabPath = join(dir, 'vocab.json');
    const mergesPath = join(dir, 'merges.txt');
    const hasVocab = existsSync(vocabPath);
    const hasMerges = existsSync(mergesPath);
    if (hasVocab && hasMerges) return ClipTokenizer.fromHuggingFace(vocabPath, mergesPath);
    if (hasVocab !== hasMerges) {
      const [found, lacking] = hasVocab ? [vocabPath, 'merges.txt'] : [mergesPath, 'vocab.json'];
      throw new Error(`${found}: there is no ${lacking} beside it, which the CLIP tokenizer needs too`);
    }
    const gz = join(dir, OPENAI_BPE_FILE);
    return ClipTokenizer.fromOpenAIBpe(existsSync(gz) ? gz : SHIPPED_BPE);
  }

  /** Loads OpenAI's gzipped merge list; the vocabulary is derived from it as simple_tokenizer.py does. */
  static fromOpenAIBpe(gzPath: string): ClipTokenizer {
    let text: string;
    try {
      // OpenAI's file is 1.4 MB, 1.6 MB unpacked: a cap on both sides keeps a bomb out
      text = gunzipSync(readRegularFile(gzPath, 'CLIP BPE file', READ_LIMITS.json), { maxOutputLength: READ_LIMITS.json }).toString('utf8');
    } catch (err) {
      if (err instanceof InputFileError) throw err;
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

  /**
   * The tokenizer of a model as found on disk, the one rule for a file against a folder: a single weights file
   * (given as the model, or a repo in open_clip's layout) is tokenised with CLIP's vocabulary shipped with the
   * package, a folder with its own files (`fromFolder`).
   */
  static forModel(path: string): ClipTokenizer {
    return statSync(path).isFile() ? ClipTokenizer.default() : ClipTokenizer.fromFolder(path);
  }

  /** OpenAI's BPE vocabulary as shipped with the package, for a CLIP without a folder of its own (e.g. random weights). */
  static default(): ClipTokenizer {
    return ClipTokenizer.fromOpenAIBpe(SHIPPED_BPE);
  }

  private static fromHuggingFace(vocabPath: string, mergesPath: string): ClipTokenizer {
    let raw: unknown;
    try {
      raw = JSON.parse(readRegularText(vocabPath, 'tokenizer vocabulary', READ_LIMITS.json));
    } catch (err) {
      if (err instanceof InputFileError) throw err;
      throw new Error(`${vocabPath}: not a JSON vocabulary (${(err as Error).message})`);
    }
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${vocabPath}: expected an object of token -> id`);
    const encoder = new Map<string, number>();
    for (const [tok, id] of Object.entries(raw)) {
      if (!Number.isInteger(id) || (id as number) < 0)
        throw new Error(`${vocabPath}: token "${tok}" has id ${String(id)}, not a non-negative integer`);
      encoder.set(tok, id as number);
    }
    const lines = readRegularText(mergesPath, 'tokenizer merges', READ_LIMITS.json).split('\n');
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
        if (r !== undefined && r < best) {
          best = r;
          at = i;
        }
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
