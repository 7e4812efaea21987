import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { ClipTokenizer, cleanText, eotIndex, htmlUnescape } from '../src/clip/tokenizer.js';
import { SafeTensorsFile } from '../src/clip/safetensors.js';
import { embed } from '../src/clip/embed.js';
import { loadBackbone } from '../src/methods/index.js';
import { sharedDir } from './helpers/shared.js';

const HF_DIR = join(sharedDir(), 'reference', 'tiny-vit-p32');
const OPENAI_GZ = join(sharedDir(), 'clip', 'bpe_simple_vocab_16e6.txt.gz');
const SHIPPED_GZ = fileURLToPath(new URL('../assets/clip/bpe_simple_vocab_16e6.txt.gz', import.meta.url));

// Loading takes a few hundred milliseconds, so each source is loaded once for the whole file.
const openai = ClipTokenizer.fromOpenAIBpe(OPENAI_GZ);
const hf = ClipTokenizer.fromFolder(HF_DIR);
const shipped = ClipTokenizer.default();
const SOURCES = [
  ['OpenAI gz', openai],
  ['Hugging Face folder', hf],
  ['shipped with the package', shipped],
] as const;

interface Reference {
  context_length: number;
  sot: number;
  eot: number;
  vocab_size: number;
  cases: { text: string; ids: number[] }[];
}
const reference = JSON.parse(readFileSync(join(sharedDir(), 'reference', 'tokenizer.json'), 'utf8')) as Reference;

test('both sources load with the special tokens and vocabulary size of the reference', () => {
  for (const [name, tok] of SOURCES) {
    assert.equal(tok.sot, reference.sot, name);
    assert.equal(tok.eot, reference.eot, name);
    assert.equal(tok.vocabSize, reference.vocab_size, name);
  }
  assert.equal(openai.sot, 49406);
  assert.equal(openai.eot, 49407);
});

test("the shipped vocabulary is byte for byte the shared copy of OpenAI's file", () => {
  const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');
  assert.equal(sha(SHIPPED_GZ), sha(OPENAI_GZ));
});

for (const [name, tok] of SOURCES) {
  test(`all ${reference.cases.length} reference strings give the reference ids (${name})`, () => {
    assert.equal(reference.cases.length, 325);
    const mismatches: { text: string; want: number[]; got: number[] }[] = [];
    for (const c of reference.cases) {
      const got = tok.tokenize(c.text, reference.context_length);
      if (got.length !== c.ids.length || got.some((v, i) => v !== c.ids[i])) mismatches.push({ text: c.text, want: c.ids, got });
    }
    assert.deepEqual(mismatches, []);
  });
}

test('the two sources share one vocabulary: every id decodes the same', () => {
  for (let id = 0; id < openai.vocabSize; id++) {
    if (id === openai.eot || id === openai.sot) continue;
    if (openai.decode([id]) !== hf.decode([id])) assert.fail(`id ${id}: "${openai.decode([id])}" vs "${hf.decode([id])}"`);
  }
});

test('input_ids of the tiny model outputs match tokenizeBatch of their texts', () => {
  const file = SafeTensorsFile.open(join(HF_DIR, 'outputs.safetensors'));
  try {
    const texts = JSON.parse(file.metadata.texts!) as string[];
    const want = file.readInts('input_ids');
    assert.deepEqual(want.shape, [texts.length, 77]);
    for (const [name, tok] of SOURCES) {
      assert.deepEqual(Array.from(tok.tokenizeBatch(texts)), want.data, name);
    }
  } finally {
    file.close();
  }
});

test('tokenize pads with 0 after eot, and eotIndex finds the eot', () => {
  const ids = openai.tokenize('a photo');
  assert.equal(ids.length, 77);
  assert.deepEqual(ids.slice(0, 4), [openai.sot, ...openai.encode('a photo'), openai.eot]);
  assert.ok(ids.slice(4).every((v) => v === 0));
  assert.equal(eotIndex(ids), 3);
  // Empty text is just sot, eot.
  assert.deepEqual(openai.tokenize('', 4), [openai.sot, openai.eot, 0, 0]);
  // Hugging Face pads with eot: the first one counts.
  assert.equal(eotIndex([49406, 320, 49407, 49407, 49407]), 2);
  assert.equal(eotIndex(Int32Array.of(5, 7, 9), 7), 1);
  assert.throws(() => eotIndex([49406, 320, 0]), /no end-of-text token/);
});

test('too long text is cut to contextLength with eot last (clip.tokenize truncate=True)', () => {
  const long = Array.from({ length: 100 }, (_, i) => `word${i % 10}`).join(' ');
  const body = openai.encode(long);
  assert.ok(body.length > 75);
  const ids = openai.tokenize(long);
  assert.equal(ids.length, 77);
  assert.equal(ids[0], openai.sot);
  assert.equal(ids[76], openai.eot);
  assert.deepEqual(ids.slice(1, 76), body.slice(0, 75));
  assert.equal(eotIndex(ids), 76);
  // A short context works the same way.
  assert.deepEqual(openai.tokenize('a photo of a cat', 4), [openai.sot, ...openai.encode('a photo'), openai.eot]);
  // Exactly 75 ids fit without a cut.
  const exact = Array.from({ length: 75 }, () => 'a').join(' ');
  const fit = openai.tokenize(exact);
  assert.equal(fit.filter((v) => v === openai.eot).length, 1);
  assert.deepEqual(fit.slice(1, 76), openai.encode(exact));
  assert.throws(() => openai.tokenize('x', 1), /contextLength/);
  assert.throws(() => openai.tokenizeBatch(['x'], 2.5), /contextLength/);
});

test('tokenizeBatch is row-major [n, contextLength] with one tokenize per row', () => {
  const texts = ['Good photo.', 'Bad photo.', '', 'a photo of a dog'];
  const batch = openai.tokenizeBatch(texts, 16);
  assert.ok(batch instanceof Int32Array);
  assert.equal(batch.length, texts.length * 16);
  texts.forEach((t, i) => assert.deepEqual(Array.from(batch.subarray(i * 16, (i + 1) * 16)), openai.tokenize(t, 16)));
  assert.equal(openai.tokenizeBatch([]).length, 0);
});

test('decode round-trips a plain sentence', () => {
  const sentence = 'a blurry photo of a cat sitting on the sofa';
  for (const [name, tok] of SOURCES) {
    assert.equal(tok.decode(tok.encode(sentence)), sentence, name);
    assert.equal(tok.decode(tok.tokenize(sentence)), sentence, name);
  }
  // Decoding gives the cleaned text: lower case, words and punctuation separated by spaces.
  assert.equal(openai.decode(openai.encode('  Café   日本語 😀\n')), 'café 日本語 😀');
  assert.equal(openai.decode(openai.encode('A photo.')), 'a photo .');
  assert.throws(() => openai.decode([49408]), /not in the vocabulary/);
});

test('special tokens written in the text become their ids', () => {
  const ids = openai.encode('<|startoftext|> hi <|endoftext|>');
  assert.equal(ids[0], openai.sot);
  assert.equal(ids.at(-1), openai.eot);
});

test('text cleaning: NFC, double HTML unescape, whitespace folding, lower case', () => {
  assert.equal(cleanText('  A   Photo\twith\nLines \u3000 '), 'a photo with lines');
  assert.equal(cleanText('cafe\u0301'), 'café');
  assert.equal(cleanText('Tom &amp;amp; Jerry'), 'tom & jerry');
  assert.equal(cleanText('a&nbsp;b'), 'a b');
  // Python's strip() takes U+001C..U+001F, but the folding regex does not.
  assert.equal(cleanText('\x1ca\x1cb\x1c'), 'a\x1cb');
  assert.equal(cleanText('\ufeffx'), '\ufeffx');
});

test('HTML unescaping follows Python html.unescape', () => {
  assert.equal(htmlUnescape('&amp; &lt; &gt; &quot; &#39; &apos;'), "& < > \" ' '");
  assert.equal(htmlUnescape('&#x263A; &#X263a; &#9731; &#128512;'), '\u263a \u263a \u2603 \u{1f600}');
  assert.equal(htmlUnescape('&eacute;&Eacute;&mdash;&hellip;&euro;&trade;&alpha;&rarr;'), 'éÉ—…€™α→');
  // Legacy names work without ';' and as the longest known prefix.
  assert.equal(htmlUnescape('&copy2024 &amp &ampfoo &notit;'), '©2024 & &foo ¬it;');
  // Numeric references to C1 controls are Windows-1252; invalid ones become U+FFFD or vanish.
  assert.equal(htmlUnescape('&#150;&#x80;&#0;&#xD800;&#1114112;&#x7f;&#1;'), '\u2013\u20ac\ufffd\ufffd\ufffd');
  // Unknown names and bare ampersands stay as written.
  assert.equal(htmlUnescape('&bogus; & &; &#; AT&T'), '&bogus; & &; &#; AT&T');
});

test("HTML unescaping knows all of HTML5's names, as Python does (values from Python 3 html.unescape)", () => {
  // Names beyond HTML 4, some of two code points; without the ';' only legacy names are read.
  assert.equal(
    htmlUnescape('&Abreve;&ac;&NotEqualTilde;&fjlig;&CounterClockwiseContourIntegral;&bne;&nGt;'),
    '\u0102\u223e\u2242\u0338fj\u2233=\u20e5\u226b\u20d2',
  );
  assert.equal(htmlUnescape('&Abreve &ac &lbrke;x'), '&Abreve &ac \u298bx');
  // A huge number is out of range (U+FFFD); noncharacters vanish; CR and C1 0x81 stand for themselves.
  assert.equal(htmlUnescape('&#99999999999999999999;&#x10FFFF;&#xFFFE;&#x1FFFF;&#xFDD0;&#13;&#x81;'), '\ufffd\r\u0081');
});

/** A fresh temporary folder holding `files` (name -> contents, or a file to copy), removed after `body`. */
function withFolder(files: Record<string, string | Buffer | { copy: string }>, body: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-tok-'));
  try {
    for (const [name, data] of Object.entries(files)) {
      if (typeof data === 'string' || Buffer.isBuffer(data)) writeFileSync(join(dir, name), data);
      else copyFileSync(data.copy, join(dir, name));
    }
    body(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const TEXT = 'a high quality photo of a red fox, 4k';
const GZ = 'bpe_simple_vocab_16e6.txt.gz';

test('a model folder with vocab.json + merges.txt uses them, before an OpenAI gz beside them', () => {
  const files = {
    'vocab.json': { copy: join(HF_DIR, 'vocab.json') },
    'merges.txt': { copy: join(HF_DIR, 'merges.txt') },
    [GZ]: 'not gzip',
  };
  withFolder(files, (dir) => assert.deepEqual(ClipTokenizer.fromFolder(dir).tokenize(TEXT), hf.tokenize(TEXT)));
});

test("a model folder with only OpenAI's gz uses that file, not the shipped one", () => {
  // merges 1 and 2 swapped: ids 512 and 513 trade places, which only this folder's file does
  const lines = gunzipSync(readFileSync(OPENAI_GZ)).toString('utf8').split('\n');
  [lines[1], lines[2]] = [lines[2]!, lines[1]!];
  withFolder({ [GZ]: gzipSync(lines.join('\n')) }, (dir) => {
    const tok = ClipTokenizer.fromFolder(dir);
    assert.equal(tok.decode([512]), shipped.decode([513]));
    assert.equal(tok.decode([513]), shipped.decode([512]));
  });
  withFolder({ [GZ]: 'not gzip' }, (dir) => {
    assert.throws(
      () => ClipTokenizer.fromFolder(dir),
      (err: Error) => err.message.includes(join(dir, GZ)),
    );
  });
});

test('a model folder without tokenizer files uses the vocabulary shipped with the package', () => {
  withFolder({ 'config.json': '{}' }, (dir) => {
    assert.deepEqual(ClipTokenizer.fromFolder(dir).tokenize(TEXT), openai.tokenize(TEXT));
  });
});

test('half a Hugging Face pair or a broken file is an error naming the file, never a fallback', () => {
  const hfMerges = { copy: join(HF_DIR, 'merges.txt') };
  const named =
    (file: string, what: RegExp) =>
    (err: Error): boolean =>
      err.message.includes(file) && what.test(err.message);
  withFolder({ 'vocab.json': { copy: join(HF_DIR, 'vocab.json') } }, (dir) => {
    assert.throws(() => ClipTokenizer.fromFolder(dir), named(join(dir, 'vocab.json'), /merges\.txt/));
  });
  // an OpenAI gz beside half a pair does not hide it
  withFolder({ 'merges.txt': hfMerges, [GZ]: { copy: OPENAI_GZ } }, (dir) => {
    assert.throws(() => ClipTokenizer.fromFolder(dir), named(join(dir, 'merges.txt'), /vocab\.json/));
  });
  withFolder({ 'vocab.json': '{"a": 1,', 'merges.txt': hfMerges }, (dir) => {
    assert.throws(() => ClipTokenizer.fromFolder(dir), named(join(dir, 'vocab.json'), /JSON/));
  });
  withFolder({ 'vocab.json': '{}', 'merges.txt': '#version: 0.2\n' }, (dir) => {
    assert.throws(() => ClipTokenizer.fromFolder(dir), named(join(dir, 'vocab.json'), /lacks/));
  });
  const missing = join(tmpdir(), 'promptiqa-tok-no-such-folder');
  assert.throws(() => ClipTokenizer.fromFolder(missing), named(missing, /no such folder/));
});

test('the shipped vocabulary is found from the module, whatever the working directory', () => {
  // A child in another folder, with no PROMPTIQA_SHARED, imports the tokenizer by its file URL.
  const tsx = import.meta.resolve('tsx');
  const module = new URL('../src/clip/tokenizer.ts', import.meta.url).href;
  withFolder({}, (empty) => {
    const code = `const { ClipTokenizer } = await import(${JSON.stringify(module)});
      const ids = [ClipTokenizer.default(), ClipTokenizer.fromFolder(${JSON.stringify(empty)})].map((t) => t.encode(${JSON.stringify(TEXT)}));
      process.stdout.write(JSON.stringify(ids));`;
    const env = { ...process.env };
    delete env.PROMPTIQA_SHARED;
    const out = execFileSync(process.execPath, ['--import', tsx, '--input-type=module', '-e', code], {
      cwd: tmpdir(),
      env,
      encoding: 'utf8',
    });
    assert.deepEqual(JSON.parse(out), [openai.encode(TEXT), openai.encode(TEXT)]);
  });
});

test("the scorer's backbone and embed() take a model folder's tokenizer the same way", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-tok-'));
  try {
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(HF_DIR, f), join(dir, f));
    // no tokenizer files: the shipped vocabulary
    assert.deepEqual((await embed({ model: dir, texts: [TEXT] })).input_ids, [openai.tokenize(TEXT)]);
    assert.deepEqual((await loadBackbone(dir)).tokenizer.tokenize(TEXT), openai.tokenize(TEXT));
    // half a pair: both refuse, naming the file (loadBackbone once fell back to another vocabulary)
    const other = mkdtempSync(join(tmpdir(), 'promptiqa-tok-'));
    try {
      for (const f of ['config.json', 'model.safetensors', 'vocab.json']) copyFileSync(join(HF_DIR, f), join(other, f));
      const named = (err: Error): boolean => err.message.includes(join(other, 'vocab.json')) && /merges\.txt/.test(err.message);
      await assert.rejects(embed({ model: other, texts: [TEXT] }), named);
      await assert.rejects(loadBackbone(other), named);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
