/**
 * The ViT image tower at any image size, as pyiqa's `clip_model` runs it: without a positional embedding
 * (`pos_embedding=False`, mode 'none') or with the table resized to the token count (`True`,
 * 'interpolated'), the remainder at the right and bottom dropped by the patch conv's floor.
 *
 * test/fixtures/pyiqa-vit-full.json holds pyiqa's `encode_image` of the shared tiny ViT (reference/tiny-vit-p32,
 * patch 32) on two shared images at full resolution. It was made by running pyiqa's own
 * pyiqa/archs/clip_model.py (chaofengc/IQA-PyTorch 01ae427f9afd66842031d3a7cb694dcad5b5cbb8: `build_model`,
 * then `encode_image(x, pos_embedding)`) with torch 1.13 on CPU in float32, on the PNGs read with PIL,
 * `to_tensor` and CLIP's mean and std; `build_model`'s fp16 conversion of the weights was skipped, since
 * these tiny float32 weights are not fp16-exact and the point is the arithmetic (released OpenAI weights
 * are fp16 already).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Graph } from '../src/graph/graph.js';
import { CompiledGraph } from '../src/graph/runtime.js';
import { loadClipWeights, type ClipWeights } from '../src/clip/weights.js';
import { archConfig } from '../src/clip/config.js';
import { MAX_WHOLE_IMAGE_ATTENTION_BYTES, WeightBank, visionEncoder, wholeImageRefusal } from '../src/clip/encoders.js';
import { type PositionalEmbeddingMode } from '../src/clip/resnet.js';
import { decodeImage } from '../src/data/image.js';
import { CLIP_MEAN, CLIP_STD, crop, toTensor } from '../src/data/preprocess.js';
import { type RgbImage } from '../src/data/rgb.js';
import { getMethod, loadBackbone, Scorer } from '../src/methods/index.js';
import { parseOptions } from '../src/methods/method.js';
import { setUp } from '../src/methods/graphs.js';
import { ImageRefusedError } from '../src/methods/views.js';
import { sharedDir } from './helpers/shared.js';
import { Rng } from '../src/util/rng.js';

const ref = join(sharedDir(), 'reference');
/** The shared fixtures' bound for embeddings (values reach about 2.5; float32 against float64 differs by a few 1e-5). */
const TOL = 2e-4;

interface Fixture {
  images: Record<string, { nopos: number[]; pos: number[] }>;
}
const fixture = JSON.parse(readFileSync(new URL('fixtures/pyiqa-vit-full.json', import.meta.url), 'utf8')) as Fixture;
const weightsPromise = loadClipWeights(join(ref, 'tiny-vit-p32', 'openai.safetensors'));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Embeddings [embed] of one image in each mode. */
async function embed(
  weights: ClipWeights,
  img: RgbImage,
  modes: readonly PositionalEmbeddingMode[],
): Promise<Record<string, Float32Array>> {
  const g = new Graph('vit');
  const bank = new WeightBank(g);
  const px = g.input('pixels', [1, 3, img.height, img.width]);
  for (const mode of modes) g.output(mode, visionEncoder(bank, weights, px, { positionalEmbedding: mode }).embeds);
  const compiled = await CompiledGraph.create(g);
  try {
    const res = await compiled.run({ pixels: toTensor(img, CLIP_MEAN, CLIP_STD) });
    return Object.fromEntries(modes.map((m) => [m, res[m]!.data as Float32Array]));
  } finally {
    await compiled.release();
  }
}

for (const file of Object.keys(fixture.images)) {
  test(`ViT at full resolution matches pyiqa's clip_model (pos_embedding False and True): ${file}`, async (t) => {
    const weights = await weightsPromise;
    const img = await decodeImage(join(ref, 'images', file));
    const expected = fixture.images[file]!;
    const got = await embed(weights, img, ['none', 'interpolated']);
    const errNone = maxAbsDiff(got.none!, expected.nopos);
    const errPos = maxAbsDiff(got.interpolated!, expected.pos);
    assert.ok(errNone < TOL, `pos_embedding False: max abs error ${errNone}`);
    assert.ok(errPos < TOL, `pos_embedding True: max abs error ${errPos}`);

    t.diagnostic(`${file}: max abs error ${errNone.toExponential(2)} (none), ${errPos.toExponential(2)} (interpolated)`);

    // negative controls: the other mode, and the remainder dropped at the left and top instead, are far off
    assert.ok(maxAbsDiff(got.none!, expected.pos) > 100 * TOL, 'no positional embedding against pyiqa with one');
    assert.ok(maxAbsDiff(got.interpolated!, expected.nopos) > 100 * TOL, 'a positional embedding against pyiqa without');
    const p = weights.config.patchSize;
    const [w, h] = [img.width - (img.width % p), img.height - (img.height % p)];
    if (w === img.width && h === img.height) return; // whole patches (640×480): no remainder to drop
    const shifted = await embed(weights, crop(img, img.width - w, img.height - h, w, h), ['none', 'interpolated']);
    assert.ok(maxAbsDiff(shifted.none!, expected.nopos) > 10 * TOL, 'remainder dropped at the top-left (none)');
    assert.ok(maxAbsDiff(shifted.interpolated!, expected.pos) > 10 * TOL, 'remainder dropped at the top-left (interpolated)');
    // cropping first to whole patches changes nothing: the encoder drops the same pixels
    const cropped = await embed(weights, crop(img, 0, 0, w, h), ['none', 'interpolated']);
    assert.equal(maxAbsDiff(cropped.none!, got.none!), 0);
    assert.equal(maxAbsDiff(cropped.interpolated!, got.interpolated!), 0);
  });
}

test("ViT: 'interpolated' at the native size is the native table; 'native' refuses other sizes, every mode an image under one patch", async () => {
  const weights = await weightsPromise;
  const s = weights.config.imageSize;
  const img: RgbImage = { width: s, height: s, data: new Uint8Array(s * s * 3).map((_, i) => (i * 37) % 251) };
  const got = await embed(weights, img, ['native', 'interpolated', 'none']);
  assert.equal(maxAbsDiff(got.native!, got.interpolated!), 0);
  assert.ok(maxAbsDiff(got.native!, got.none!) > 100 * TOL);

  const g = new Graph('vit');
  const bank = new WeightBank(g);
  assert.throws(
    () => visionEncoder(bank, weights, g.input('a', [1, 3, s, s + 32]), { positionalEmbedding: 'native' }),
    /native positional embedding needs pixels \[B, 3, 224, 224\]/,
  );
  assert.throws(() => visionEncoder(bank, weights, g.input('b', [1, 3, s, s + 32])), /native positional embedding/);
  for (const mode of ['none', 'interpolated'] as const) {
    assert.throws(
      () => visionEncoder(bank, weights, g.input(`c${mode}`, [1, 3, 31, 64]), { positionalEmbedding: mode }),
      /at least 32×32 pixels/,
    );
  }
});

test("clip-iqa and clip-iqa+ on a ViT read images as pyiqa does: the whole image unless the positional embedding is OpenAI's", async () => {
  const backbone = await loadBackbone(join(ref, 'tiny-vit-p32'));
  const img = await decodeImage(join(ref, 'images', 'tall_157x301.png'));
  const sizes = (name: string, options: Record<string, string>): string[] => {
    const method = getMethod(name);
    const scorer = new Scorer(setUp(method, parseOptions(method, options), backbone), new Map(), {});
    return scorer.viewsOf(img).map((v) => `${v.width}x${v.height}`);
  };
  for (const name of ['clip-iqa', 'clip-iqa+']) {
    assert.deepEqual(sizes(name, {}), ['157x301'], `${name}: pyiqa's default, no positional embedding`);
    assert.deepEqual(sizes(name, { positionalEmbedding: 'interpolated' }), ['157x301']);
    assert.deepEqual(sizes(name, { positionalEmbedding: 'native' }), ['224x224'], `${name}: OpenAI's table needs the native size`);
    assert.deepEqual(sizes(name, { testViews: 'resize' }), ['224x224']);
  }
  // a method without a say on the encoder keeps OpenAI's table, so 'auto' resizes
  assert.deepEqual(sizes('tang', { testViews: 'auto' }), ['224x224']);

  // an image under one patch on a side cannot be read whole: that image is refused, not the batch
  const method = getMethod('clip-iqa');
  const scorer = new Scorer(setUp(method, parseOptions(method, {}), backbone), new Map(), {});
  const small: RgbImage = { width: 40, height: 31, data: new Uint8Array(40 * 31 * 3) };
  assert.throws(
    () => scorer.viewsOf(small),
    (e) => e instanceof ImageRefusedError && /40×31 pixels: .* at least 32×32/.test(e.message),
  );
  assert.equal(scorer.viewsOf({ ...small, height: 32, data: new Uint8Array(40 * 32 * 3) }).length, 1);
  // nor one whose attention scores would outgrow the limit (they grow with the square of the pixels)
  const c = backbone.weights.config;
  const side = (tokens: number): number => c.patchSize * Math.ceil(Math.sqrt(tokens));
  const limit = Math.floor(Math.sqrt(MAX_WHOLE_IMAGE_ATTENTION_BYTES / (4 * c.visionHeads)));
  assert.equal(wholeImageRefusal(c, side(limit / 2), side(limit / 2)), undefined);
  assert.match(
    wholeImageRefusal(c, side(limit), side(limit))!,
    /tokens for the ViT, attention scores of 2\.0 GiB per layer, over the 2\.0 GiB allowed/,
  );
  // a ResNet's feature maps hold about stem width × pixels bytes: RN50 (width 64) reads 5,792 px square, not 5,800
  const rn50 = archConfig('rn50');
  assert.equal(wholeImageRefusal(rn50, 5792, 5792), undefined);
  assert.match(wholeImageRefusal(rn50, 5800, 5800)!, /feature maps would take 2\.0 GiB each, over the 2\.0 GiB allowed/);
});

test('testViews=full where the image tower reads its own size only is refused when the scorer is made, naming the option', async () => {
  const backbone = await loadBackbone(join(sharedDir(), 'reference', 'tiny-vit-p32'));
  const clipIqa = getMethod('clip-iqa');
  assert.throws(
    () => new Scorer(setUp(clipIqa, parseOptions(clipIqa, { testViews: 'full', positionalEmbedding: 'native' }), backbone), new Map(), {}),
    /clip-iqa: testViews=full reads whole images, .*positionalEmbedding=none or interpolated.*use testViews=resize or sliding/,
  );
  const tang = getMethod('tang');
  const setup = setUp(tang, parseOptions(tang, { testViews: 'full' }), backbone);
  assert.throws(
    () => new Scorer(setup, setup.model.init(new Rng(0)), {}),
    /tang: testViews=full reads whole images, .*tang reads images at 224 px only/,
  );
});
