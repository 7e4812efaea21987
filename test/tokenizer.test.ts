import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipTokenizer, cleanText, eotIndex, htmlUnescape } from '../src/clip/tokenizer.js';
import { SafeTensorsFile } from '../src/clip/safetensors.js';
import { sharedDir } from '../src/util/fs.js';

const HF_DIR = join(sharedDir(), 'reference', 'tiny-vit-p32');
const OPENAI_GZ = join(sharedDir(), 'clip', 'bpe_simple_vocab_16e6.txt.gz');

// Loading takes a few hundred milliseconds, so each source is loaded once for the whole file.
const openai = ClipTokenizer.fromOpenAIBpe(OPENAI_GZ);
const hf = ClipTokenizer.fromFolder(HF_DIR);
const SOURCES = [['OpenAI gz', openai], ['Hugging Face folder', hf]] as const;

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

test('default() and fromFolder() on the OpenAI folder read the shared gz', () => {
  const viaFolder = ClipTokenizer.fromFolder(join(sharedDir(), 'clip'));
  const viaDefault = ClipTokenizer.default();
  const text = 'a high quality photo of a red fox, 4k';
  assert.deepEqual(viaFolder.tokenize(text), openai.tokenize(text));
  assert.deepEqual(viaDefault.tokenize(text), openai.tokenize(text));
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
  assert.equal(htmlUnescape('&amp; &lt; &gt; &quot; &#39; &apos;'), '& < > " \' \'');
  assert.equal(htmlUnescape('&#x263A; &#X263a; &#9731; &#128512;'), '\u263a \u263a \u2603 \u{1f600}');
  assert.equal(htmlUnescape('&eacute;&Eacute;&mdash;&hellip;&euro;&trade;&alpha;&rarr;'), 'éÉ—…€™α→');
  // Legacy names work without ';' and as the longest known prefix.
  assert.equal(htmlUnescape('&copy2024 &amp &ampfoo &notit;'), '©2024 & &foo ¬it;');
  // Numeric references to C1 controls are Windows-1252; invalid ones become U+FFFD or vanish.
  assert.equal(htmlUnescape('&#150;&#x80;&#0;&#xD800;&#1114112;&#x7f;&#1;'), '\u2013\u20ac\ufffd\ufffd\ufffd');
  // Unknown names and bare ampersands stay as written.
  assert.equal(htmlUnescape('&bogus; & &; &#; AT&T'), '&bogus; & &; &#; AT&T');
});

test('HTML unescaping knows all of HTML5\'s names, as Python does (values from Python 3 html.unescape)', () => {
  // Names beyond HTML 4, some of two code points; without the ';' only legacy names are read.
  assert.equal(
    htmlUnescape('&Abreve;&ac;&NotEqualTilde;&fjlig;&CounterClockwiseContourIntegral;&bne;&nGt;'),
    '\u0102\u223e\u2242\u0338fj\u2233=\u20e5\u226b\u20d2',
  );
  assert.equal(htmlUnescape('&Abreve &ac &lbrke;x'), '&Abreve &ac \u298bx');
  // A huge number is out of range (U+FFFD); noncharacters vanish; CR and C1 0x81 stand for themselves.
  assert.equal(htmlUnescape('&#99999999999999999999;&#x10FFFF;&#xFFFE;&#x1FFFF;&#xFDD0;&#13;&#x81;'), '\ufffd\r\u0081');
});

test('a folder without tokenizer files gives an error that names it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-tok-'));
  try {
    assert.throws(() => ClipTokenizer.fromFolder(dir), (err: Error) => err.message.includes(dir) && /vocab\.json/.test(err.message));
    writeFileSync(join(dir, 'vocab.json'), '{}');
    assert.throws(() => ClipTokenizer.fromFolder(dir), (err: Error) => err.message.includes(dir) && /merges\.txt/.test(err.message));
    const missing = join(dir, 'nope');
    assert.throws(() => ClipTokenizer.fromFolder(missing), (err: Error) => err.message.includes(missing));
    writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\n');
    assert.throws(() => ClipTokenizer.fromFolder(dir), /lacks/);
    writeFileSync(join(dir, 'bad.gz'), 'not gzip');
    assert.throws(() => ClipTokenizer.fromOpenAIBpe(join(dir, 'bad.gz')), (err: Error) => err.message.includes('bad.gz'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
