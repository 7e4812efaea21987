import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../src/graph/graph.js';
import { CompiledGraph } from '../src/graph/runtime.js';
import { SafeTensorsFile, toFloat32 } from '../src/clip/safetensors.js';
import { loadClipWeights, transpose2d, type ClipWeights } from '../src/clip/weights.js';
import {
  WeightBank,
  visionEncoder,
  textEncoder,
  tokenEmbeddings,
  eotOneHot,
  encodeTexts,
  textLength,
  cutSequences,
} from '../src/clip/encoders.js';
import { ClipTokenizer } from '../src/clip/tokenizer.js';
import { sharedDir } from './helpers/shared.js';

const ref = join(sharedDir(), 'reference');
/** The bound: embeddings and every block's hidden state within 1e-4 absolute. */
const TOL = 1e-4;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function checkModel(label: string, weights: ClipWeights, outputsPath: string): Promise<void> {
  const outs = SafeTensorsFile.open(outputsPath);
  const pixels = SafeTensorsFile.open(join(ref, 'preprocess.safetensors')).readFloat32('pixel_values');
  const c = weights.config;
  const nImg = pixels.shape[0]!;
  const ids = outs.readInts('input_ids');
  const nTxt = ids.shape[0]!;

  const g = new Graph('parity');
  const bank = new WeightBank(g);
  const px = g.input('pixels', pixels.shape);
  const tok = g.input('tokens', [nTxt, c.contextLength, c.textWidth]);
  const eot = g.input('eot', [nTxt, c.contextLength]);
  const vis = visionEncoder(bank, weights, px);
  const txt = textEncoder(bank, weights, tok, eot);
  g.output('image_embeds', vis.embeds);
  g.output('text_embeds', txt.embeds);
  vis.hidden.forEach((h, i) => g.output(`vision_block_${i}`, h));
  txt.hidden.forEach((h, i) => g.output(`text_block_${i}`, h));
  const compiled = await CompiledGraph.create(g);
  const res = await compiled.run({
    pixels: pixels.data,
    tokens: tokenEmbeddings(weights, ids.data, nTxt),
    eot: eotOneHot(ids.data, nTxt, 49407),
  });
  for (const name of Object.keys(res)) {
    const expected = outs.readFloat32(name);
    assert.deepEqual(res[name]!.shape, expected.shape, `${label} ${name} shape`);
    const err = maxAbsDiff(res[name]!.data as Float32Array, expected.data);
    assert.ok(err < TOL, `${label} ${name}: max abs error ${err}`);
  }
  // the logits too, from the embeddings
  const li = outs.readFloat32('logits_per_image');
  const ie = res.image_embeds!.data as Float32Array;
  const te = res.text_embeds!.data as Float32Array;
  const d = c.embedDim;
  const norm = (a: Float32Array, r: number): number => Math.hypot(...a.subarray(r * d, (r + 1) * d));
  for (let i = 0; i < nImg; i++)
    for (let j = 0; j < nTxt; j++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += ie[i * d + k]! * te[j * d + k]!;
      const logit = (Math.exp(weights.logitScale) * dot) / (norm(ie, i) * norm(te, j));
      assert.ok(Math.abs(logit - li.data[i * nTxt + j]!) < 1e-3, `${label} logit ${i},${j}`);
    }
  await compiled.release();
}

test('tiny-vit-p32, Hugging Face layout, equals the reference', async () => {
  const w = await loadClipWeights(join(ref, 'tiny-vit-p32'));
  assert.equal(w.layout, 'hf');
  await checkModel('p32/hf', w, join(ref, 'tiny-vit-p32', 'outputs.safetensors'));
});

test('tiny-vit-p32, OpenAI layout (config inferred from shapes), equals the reference', async () => {
  const w = await loadClipWeights(join(ref, 'tiny-vit-p32', 'openai.safetensors'));
  assert.equal(w.layout, 'openai');
  assert.equal(w.config.visionHeads, 2);
  assert.equal(w.config.textHeads, 1);
  await checkModel('p32/openai', w, join(ref, 'tiny-vit-p32', 'outputs.safetensors'));
});

test('tiny-vit-p16, Hugging Face layout, equals the reference', async () => {
  const w = await loadClipWeights(join(ref, 'tiny-vit-p16'));
  assert.equal(w.config.visionLayers, 3);
  await checkModel('p16/hf', w, join(ref, 'tiny-vit-p16', 'outputs.safetensors'));
});

describe('a Hugging Face config.json that cannot be used is named with its problem', () => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-hfcfg-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  copyFileSync(join(ref, 'tiny-vit-p32', 'model.safetensors'), join(dir, 'model.safetensors'));
  const cases: Array<[string, string, RegExp]> = [
    ['not JSON', '{"text_config": ', /config\.json: not valid JSON/],
    ['not an object', '[1, 2]', /config\.json: expected a JSON object/],
    ['a section that is not an object', '{"vision_config": 3}', /config\.json: vision_config must be an object/],
    [
      'a layer count that is a string',
      '{"text_config": {"num_hidden_layers": "2"}}',
      /config\.json: text_config\.num_hidden_layers must be a positive integer, got "2"/,
    ],
    ['an activation that is not a string', '{"text_config": {"hidden_act": 1}}', /config\.json: text_config\.hidden_act must be a string/],
  ];
  for (const [what, text, message] of cases) {
    test(what, async () => {
      writeFileSync(join(dir, 'config.json'), text);
      await assert.rejects(loadClipWeights(dir), message);
    });
  }
});

test('transpose2d: every shape, tiles that do not fit included, equals the plain transpose', () => {
  for (const [rows, cols] of [
    [1, 1],
    [3, 5],
    [64, 64],
    [65, 130],
    [200, 7],
  ] as const) {
    const a = Float32Array.from({ length: rows * cols }, (_, i) => i * 0.5 - 3);
    const t = transpose2d(a, rows, cols);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) assert.equal(t[c * rows + r], a[r * cols + c], `[${rows}, ${cols}] at ${r}, ${c}`);
  }
});

test('toFloat32: float32 bytes as they are (own buffer or a slice of one), float16 by table at any alignment', () => {
  const values = [0, -0, 1, -2.5, 65504, 6.103515625e-5, 5.960464477539063e-8, Infinity, -Infinity];
  const f32 = Buffer.from(new Float32Array(values).buffer);
  assert.deepEqual([...toFloat32(f32, 'F32', 'x')], values);
  const inBigger = Buffer.concat([Buffer.alloc(3), f32]).subarray(3);
  assert.deepEqual([...toFloat32(inBigger, 'F32', 'x')], values);
  const bits = [0x0000, 0x8000, 0x3c00, 0xc100, 0x7bff, 0x0400, 0x0001, 0x7c00, 0xfc00];
  const f16 = Buffer.alloc(bits.length * 2);
  bits.forEach((b, i) => f16.writeUInt16LE(b, i * 2));
  assert.deepEqual([...toFloat32(f16, 'F16', 'x')], values);
  const odd = Buffer.concat([Buffer.alloc(1), f16]).subarray(1);
  assert.deepEqual([...toFloat32(odd, 'F16', 'x')], values);
  const nan = Buffer.alloc(2);
  nan.writeUInt16LE(0x7e00);
  assert.ok(Number.isNaN(toFloat32(nan, 'F16', 'x')[0]));
});

test('fixed texts are encoded up to their last end-of-text only, with the features of the whole context', async () => {
  const weights = await loadClipWeights(join(ref, 'tiny-vit-p32', 'openai.safetensors'), { cache: null });
  const tokenizer = ClipTokenizer.default();
  const texts = ['Good photo.', 'a photo of a still_life with jpeg2000 compression artifacts, which is of perfect quality', 'x'];
  const ids = tokenizer.tokenizeBatch(texts, 77);
  const len = textLength(ids, texts.length, tokenizer.eot);
  assert.equal(len, ids.subarray(77, 154).indexOf(tokenizer.eot) + 1, 'the longest text decides');
  assert.ok(len < 30);
  assert.deepEqual([...cutSequences(ids, 3, len).subarray(len, 2 * len)], [...ids.subarray(77, 77 + len)]);

  const cut = new Graph('cut');
  cut.output('f', encodeTexts(new WeightBank(cut), weights, tokenizer, texts));
  assert.ok(
    cut.initializers.some((i) => i.value.shape.join() === `3,${len},${weights.config.textWidth}`),
    'the token embeddings stop at the last end-of-text',
  );
  const whole = new Graph('whole');
  const tokens = whole.constant(tokenEmbeddings(weights, ids, 3), [3, 77, weights.config.textWidth]);
  const eot = whole.constant(eotOneHot(ids, 3, tokenizer.eot), [3, 77]);
  whole.output('f', textEncoder(new WeightBank(whole), weights, tokens, eot).embeds);
  const [a, b] = await Promise.all([cut, whole].map(async (g) => (await (await CompiledGraph.create(g)).run({})).f!.data as Float32Array));
  assert.ok(maxAbsDiff(a!, b!) < 1e-6, `max |diff| ${maxAbsDiff(a!, b!)}`);
});
