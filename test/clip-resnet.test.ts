import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../src/graph/graph.js';
import { CompiledGraph } from '../src/graph/runtime.js';
import { SafeTensorsFile, readSafetensors, writeSafetensors } from '../src/clip/safetensors.js';
import { loadClipWeights, randomClipWeights, type ClipWeights, type ConvBn } from '../src/clip/weights.js';
import { WeightBank, visionEncoder, textEncoder, tokenEmbeddings, eotOneHot } from '../src/clip/encoders.js';
import { type PositionalEmbeddingMode, resizePositionalEmbedding } from '../src/clip/resnet.js';
import { ARCHS, archConfig, resnetGrid, visionFlops, visionParamCount } from '../src/clip/config.js';
import { decodeImage } from '../src/data/image.js';
import { CLIP_MEAN, CLIP_STD, toTensor } from '../src/data/preprocess.js';
import { sharedDir } from './helpers/shared.js';

const ref = join(sharedDir(), 'reference');
const dir = join(ref, 'tiny-rn');
/** The fixture's bound for embeddings and intermediates (values reach about 10; float32 vs float64 differ by up to 4e-5). */
const TOL = 2e-4;

interface Meta {
  images: string[];
  decoded_rgb_sha256: Record<string, string>;
  texts: string[];
}
const meta = JSON.parse(readFileSync(join(dir, 'outputs.json'), 'utf8')) as Meta;
const outs = SafeTensorsFile.open(join(dir, 'outputs.safetensors'));
const weightsPromise = loadClipWeights(join(dir, 'openai.safetensors'));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Asserts `actual` equals the reference tensor `name` (or rows of it) within TOL; returns the error. */
function expectClose(name: string, actual: ArrayLike<number>, shape?: readonly number[], row?: number): number {
  const t = outs.readFloat32(name);
  let expected: ArrayLike<number> = t.data;
  if (row !== undefined) {
    const per = t.data.length / t.shape[0]!;
    expected = t.data.subarray(row * per, (row + 1) * per);
  } else if (shape) assert.deepEqual([...shape], t.shape, `${name} shape`);
  const err = maxAbsDiff(actual, expected);
  assert.ok(err < TOL, `${name}${row === undefined ? '' : `[${row}]`}: max abs error ${err}`);
  return err;
}

/** Runs the image tower on pixels [B, 3, H, W] with each positional-embedding mode; embeddings per mode, and the hidden states. */
async function runVision(
  weights: ClipWeights,
  pixels: Float32Array,
  shape: readonly number[],
  modes: readonly PositionalEmbeddingMode[],
): Promise<{ embeds: Record<string, Float32Array>; hidden: Array<{ data: Float32Array; shape: readonly number[] }> }> {
  const g = new Graph('rn');
  const bank = new WeightBank(g);
  const px = g.input('pixels', shape);
  modes.forEach((mode, i) => {
    const out = visionEncoder(bank, weights, px, { positionalEmbedding: mode });
    g.output(mode, out.embeds);
    if (i === 0) out.hidden.forEach((h, j) => g.output(`hidden_${j}`, h));
  });
  const compiled = await CompiledGraph.create(g);
  try {
    const res = await compiled.run({ pixels });
    const embeds: Record<string, Float32Array> = {};
    for (const m of modes) embeds[m] = res[m]!.data as Float32Array;
    const hidden = [0, 1, 2, 3, 4].map((j) => ({ data: res[`hidden_${j}`]!.data as Float32Array, shape: res[`hidden_${j}`]!.shape }));
    return { embeds, hidden };
  } finally {
    await compiled.release();
  }
}

const STAGES = ['stem', 'layer1', 'layer2', 'layer3', 'layer4'];

test('OpenAI ResNet weights: the configuration is inferred from the shapes as build_model does', async () => {
  const w = await weightsPromise;
  const c = w.config;
  assert.equal(w.vision.kind, 'resnet');
  assert.deepEqual(c.resnet?.layers, [2, 1, 1, 1]);
  assert.equal(c.visionWidth, 8);
  assert.equal(c.visionHeads, 4);
  assert.equal(c.imageSize, 224);
  assert.equal(c.embedDim, 64);
  assert.equal(c.textWidth, 64);
  assert.equal(c.textHeads, 1);
  assert.equal(c.textLayers, 2);
  assert.equal(w.logitScale, 3.21875);
});

test('tiny ResNet CLIP at 224: stem, stages, attention pool and embeddings of all images equal OpenAI and pyiqa', async () => {
  const w = await weightsPromise;
  const pixels = SafeTensorsFile.open(join(ref, 'preprocess.safetensors')).readFloat32('pixel_values');
  const { embeds, hidden } = await runVision(w, pixels.data, pixels.shape, ['native', 'none', 'interpolated']);
  const n = pixels.shape[0]!;
  expectClose('image_embeds_224', embeds.native!, [n, 64]);
  expectClose('image_embeds_224_pyiqa_nopos', embeds.none!, [n, 64]);
  // at the native size pyiqa's resized embedding is the table itself
  assert.deepEqual(embeds.interpolated, embeds.native);
  expectClose('i224.attnpool_openai', embeds.native!.subarray(0, 64));
  expectClose('i224.attnpool_nopos', embeds.none!.subarray(0, 64));
  STAGES.forEach((s, j) => {
    const h = hidden[j]!;
    const per = h.data.length / n;
    expectClose(`i224.${s}`, h.data.subarray(0, per), [1, ...h.shape.slice(1)]);
  });
  // negative control: leaving the positional embedding out moves the embeddings far beyond the tolerance
  assert.ok(maxAbsDiff(embeds.none!, embeds.native!) > 50 * TOL, 'the positional embedding matters at this tolerance');
});

test('tiny ResNet CLIP text tower equals the reference', async () => {
  const w = await weightsPromise;
  const c = w.config;
  const ids = outs.readInts('text_input_ids');
  const nTxt = ids.shape[0]!;
  const g = new Graph('rn-text');
  const bank = new WeightBank(g);
  const tok = g.input('tokens', [nTxt, c.contextLength, c.textWidth]);
  const eot = g.input('eot', [nTxt, c.contextLength]);
  const txt = textEncoder(bank, w, tok, eot);
  g.output('text_embeds', txt.embeds);
  txt.hidden.forEach((h, i) => g.output(`text_block_${i}`, h));
  const compiled = await CompiledGraph.create(g);
  try {
    const res = await compiled.run({ tokens: tokenEmbeddings(w, ids.data, nTxt), eot: eotOneHot(ids.data, nTxt, 49407) });
    for (const [name, t] of Object.entries(res)) expectClose(name, t.data as Float32Array, t.shape);
  } finally {
    await compiled.release();
  }
});

test("pyiqa's bicubic resize of the positional embedding: a 1-D resampling of the flattened token list", async () => {
  const w = await weightsPromise;
  assert.equal(w.vision.kind, 'resnet');
  if (w.vision.kind !== 'resnet') return;
  const pe = w.vision.attnpool.positionalEmbedding;
  for (const [name, h, wd] of [
    ['full_tall', 301, 157],
    ['full_wide', 480, 640],
  ] as const) {
    const [gh, gw] = resnetGrid(h, wd);
    const tokens = gh * gw + 1;
    const resized = resizePositionalEmbedding(pe, 50, 256, tokens);
    expectClose(`${name}.attnpool_pos_resized`, resized, [tokens, 256]);
    // negative control: align_corners=True sampling (a plausible mistake) is off by far more than the tolerance
    const aligned = new Float32Array(tokens * 256);
    for (let t = 0; t < tokens; t++) {
      const src = (t * 49) / (tokens - 1);
      const i = Math.min(Math.floor(src), 48);
      const f = src - i;
      for (let ch = 0; ch < 256; ch++) aligned[t * 256 + ch] = (1 - f) * pe[i * 256 + ch]! + f * pe[(i + 1) * 256 + ch]!;
    }
    assert.ok(maxAbsDiff(aligned, outs.readFloat32(`${name}.attnpool_pos_resized`).data) > 10 * TOL, `${name}: the control differs`);
  }
  assert.equal(resizePositionalEmbedding(pe, 50, 256, 50), pe);
});

test('tiny ResNet CLIP at full resolution (pyiqa): every image, odd sizes, with and without the resized positional embedding', async () => {
  const w = await weightsPromise;
  for (const [row, file] of meta.images.entries()) {
    const img = await decodeImage(join(ref, 'images', file));
    assert.equal(createHash('sha256').update(img.data).digest('hex'), meta.decoded_rgb_sha256[file], `${file}: decoded RGB`);
    const pixels = toTensor(img, CLIP_MEAN, CLIP_STD);
    const { embeds, hidden } = await runVision(w, pixels, [1, 3, img.height, img.width], ['none', 'interpolated']);
    expectClose('image_embeds_full_nopos', embeds.none!, undefined, row);
    expectClose('image_embeds_full_pos', embeds.interpolated!, undefined, row);
    if (file === 'tall_157x301.png') {
      STAGES.forEach((s, j) => expectClose(`full_tall.${s}`, hidden[j]!.data, hidden[j]!.shape));
      expectClose('full_tall.attnpool_nopos', embeds.none!, [1, 64]);
      expectClose('full_tall.attnpool_pos', embeds.interpolated!, [1, 64]);
    }
    if (file === 'wide_640x480.png') {
      expectClose('full_wide.layer4', hidden[4]!.data, hidden[4]!.shape);
      expectClose('full_wide.attnpool_nopos', embeds.none!, [1, 64]);
      expectClose('full_wide.attnpool_pos', embeds.interpolated!, [1, 64]);
    }
  }
});

test('the ResNet refuses inputs it cannot take, by name', async () => {
  const w = await weightsPromise;
  const g = new Graph('bad');
  const bank = new WeightBank(g);
  assert.throws(
    () => visionEncoder(bank, w, g.input('a', [1, 3, 256, 224])),
    /native positional embedding needs 224×224 pixels, got 224×256/,
  );
  assert.throws(() => visionEncoder(bank, w, g.input('b', [1, 3, 31, 64]), { positionalEmbedding: 'none' }), /at least 32×32 pixels/);
  assert.throws(
    () => visionEncoder(bank, w, g.input('c', [1, 3, 224, 224]), { inputPrompts: g.input('p', [2, 8]) }),
    /visual prompt tokens need a ViT/,
  );
});

test("the ResNet archs have OpenAI's image towers: parameter counts of clip/model.py's ModifiedResNet", () => {
  // sum(p.numel() for p in model.visual.parameters()) of OpenAI's released models (BatchNorm scale and shift included)
  const expected: Record<string, number> = {
    rn50: 38_316_896,
    rn101: 56_259_936,
    rn50x4: 87_137_080,
    rn50x16: 167_328_912,
    rn50x64: 420_380_352,
    'vit-b-32': 87_849_216,
  };
  for (const [arch, n] of Object.entries(expected)) assert.equal(visionParamCount(archConfig(arch)), n, arch);
  assert.ok(Object.keys(ARCHS).every((a) => a in expected || a.startsWith('vit')));
  // random weights hold the same numbers: a folded conv keeps one of BatchNorm's two per-channel values
  const w = randomClipWeights(archConfig('rn50'), 0, { text: false });
  assert.equal(w.vision.kind, 'resnet');
  if (w.vision.kind !== 'resnet') return;
  const convs: ConvBn[] = [
    ...w.vision.stem,
    ...w.vision.stages.flat().flatMap((b) => [b.conv1, b.conv2, b.conv3, ...(b.downsample ? [b.downsample] : [])]),
  ];
  const a = w.vision.attnpool;
  const held =
    convs.reduce((t, cb) => t + cb.kernel.length + 2 * cb.bias.length, 0) +
    [a.positionalEmbedding, a.qW, a.qB, a.kvW, a.kvB, a.outW, a.outB].reduce((t, x) => t + x.length, 0);
  assert.equal(held, expected.rn50);
  // the benchmark's work figure: the convs' 2·MACs as forward hooks on OpenAI's RN50 count them, plus the attention pool
  const [e, s] = [2048, 50];
  assert.equal(visionFlops(archConfig('rn50')), 10_734_452_736 + 2 * e * e + 2 * s * e * 2 * e + 2 * 2 * s * e + 2 * e * 1024);
});

test('random RN50 weights run at a non-square size and give finite embeddings', async () => {
  const w = randomClipWeights(archConfig('rn50'), 1, { text: false });
  const [h, wd] = [96, 64];
  const pixels = Float32Array.from({ length: 3 * h * wd }, (_, i) => Math.sin(i * 0.37));
  const { embeds, hidden } = await runVision(w, pixels, [1, 3, h, wd], ['none', 'interpolated']);
  assert.deepEqual(
    hidden.map((x) => x.shape),
    [
      [1, 64, 24, 16],
      [1, 256, 24, 16],
      [1, 512, 12, 8],
      [1, 1024, 6, 4],
      [1, 2048, 3, 2],
    ],
  );
  for (const e of Object.values(embeds)) {
    assert.equal(e.length, 1024);
    assert.ok(e.every(Number.isFinite) && e.some((x) => x !== 0));
  }
});

test("a ResNet state dict that does not fit OpenAI's ModifiedResNet is refused with the tensor named", async () => {
  const { tensors } = readSafetensors(join(dir, 'openai.safetensors'));
  const tmp = mkdtempSync(join(tmpdir(), 'promptiqa-rn-'));
  let written = 0;
  try {
    const write = (edit: (t: Map<string, { shape: number[]; data: Float32Array }>) => void): string => {
      const copy = new Map(tensors);
      edit(copy);
      const path = join(tmp, `w${written++}.safetensors`);
      writeSafetensors(path, Object.fromEntries(copy));
      return path;
    };
    const noDown = write((t) =>
      ['0.weight', '1.weight', '1.bias', '1.running_mean', '1.running_var'].forEach((k) => t.delete(`visual.layer2.0.downsample.${k}`)),
    );
    await assert.rejects(loadClipWeights(noDown), /visual\.layer2\.0 lacks a downsample branch/);
    const badPe = write((t) => t.set('visual.attnpool.positional_embedding', { shape: [51, 256], data: new Float32Array(51 * 256) }));
    await assert.rejects(loadClipWeights(badPe), /positional_embedding has 51 rows, not 1 \+ a square grid/);
    const noVar = write((t) => t.delete('visual.layer3.0.bn2.running_var'));
    await assert.rejects(loadClipWeights(noVar), /missing tensor "visual\.layer3\.0\.bn2\.running_var"/);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
