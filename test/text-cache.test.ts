/**
 * Text features of fixed prompts kept in promptiqa's cache: written by the first metric, read by the next (so its
 * scores follow the entry), keyed by what they depend on, recomputed where the entry is damaged, bypassed with
 * `cache: false`; and the text tower of a weights file read only when the features are not in the cache.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readdirSync, rmSync, truncateSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMetric, metricFor } from '../src/methods/index.js';
import { clipIqa } from '../src/methods/clip-iqa.js';
import { setUp } from '../src/methods/graphs.js';
import { parseOptions } from '../src/methods/method.js';
import { loadClipWeights } from '../src/clip/weights.js';
import { ClipTokenizer } from '../src/clip/tokenizer.js';
import { readSafetensors, writeSafetensors } from '../src/clip/safetensors.js';
import { sharedDir } from './helpers/shared.js';

const ref = join(sharedDir(), 'reference');
const model = join(ref, 'tiny-rn', 'openai.safetensors');
const images = ['wide_640x480.png', 'tall_157x301.png'].map((f) => join(ref, 'images', f));

async function scores(name: string, opts: Parameters<typeof createMetric>[1]): Promise<number[]> {
  const m = await createMetric(name, { threads: 1, batchSize: 2, ...opts });
  try {
    return await m.scoreBatch(images);
  } finally {
    await m.close();
  }
}

const entries = (cache: string): string[] => {
  try {
    return readdirSync(join(cache, 'text')).map((f) => join(cache, 'text', f));
  } catch {
    return [];
  }
};

test('text features: written once, read back (the scores follow the entry), recomputed when damaged, bypassed without a cache', async (t) => {
  const cache = mkdtempSync(join(tmpdir(), 'promptiqa-text-cache-'));
  t.after(() => rmSync(cache, { recursive: true, force: true }));
  const want = await scores('clip-iqa', { model, cache: false });
  assert.deepEqual(entries(cache), []);
  assert.deepEqual(await scores('clip-iqa', { model, cache }), want, 'the first run computes them');
  const [entry, ...more] = entries(cache);
  assert.ok(entry && more.length === 0, 'one entry');
  assert.deepEqual(await scores('clip-iqa', { model, cache }), want);

  // an entry whose features are swapped within each antonym pair: read as it is, so every score becomes 1 − score
  const { tensors } = readSafetensors(entry);
  const [name, feats] = [...tensors][0]!;
  const width = feats.shape[feats.shape.length - 1]!;
  const swapped = new Float32Array(feats.data.length);
  for (let row = 0; row < feats.data.length / width; row++)
    swapped.set(feats.data.subarray((row ^ 1) * width, ((row ^ 1) + 1) * width), row * width);
  writeSafetensors(entry, { [name]: { shape: feats.shape, data: swapped } });
  const flipped = await scores('clip-iqa', { model, cache });
  flipped.forEach((s, i) => assert.ok(Math.abs(s - (1 - want[i]!)) < 1e-6, `image ${i}: ${s} against 1 − ${want[i]}`));
  assert.deepEqual(await scores('clip-iqa', { model, cache: false }), want, 'no cache: computed');

  // a damaged entry is computed again and replaced
  truncateSync(entry, 20);
  assert.deepEqual(await scores('clip-iqa', { model, cache }), want);
  assert.deepEqual(await scores('clip-iqa', { model, cache }), want);
  assert.equal(readSafetensors(entry).tensors.get(name)!.data.length, feats.data.length, 'rewritten whole');
});

test('text features: the key follows the options and the parameters', async (t) => {
  const cache = mkdtempSync(join(tmpdir(), 'promptiqa-text-cache-'));
  t.after(() => rmSync(cache, { recursive: true, force: true }));
  await scores('clip-iqa', { model, cache });
  await scores('clip-iqa', { model, cache, methodOptions: { pairs: 'good' } });
  assert.equal(entries(cache).length, 2, 'other prompts, another entry');
  // clip-iqa+ with two prompt files of the same shape but other values: their own features each
  const prompts = (f: string): string => join(ref, 'pyiqa', f);
  const shared = await scores('clip-iqa+', { model, cache, checkpoint: prompts('CLIP-IQA+_learned_prompts-tiny-rn.pth') });
  const csc = await scores('clip-iqa+', { model, cache, checkpoint: prompts('CLIP-IQA+_learned_prompts-tiny-rn-csc.pth') });
  assert.equal(entries(cache).length, 4);
  assert.notDeepEqual(shared, csc);
  assert.deepEqual(
    await scores('clip-iqa+', { model, cache, checkpoint: prompts('CLIP-IQA+_learned_prompts-tiny-rn.pth') }),
    shared,
    'read back',
  );
});

test('a weights file: the text tower is read only when needed, from the file as it was when the image tower was read', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-lazy-text-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'clip.safetensors');
  copyFileSync(model, file);
  const cache = join(dir, 'cache');
  const tokenizer = ClipTokenizer.default();
  const metric = async (cacheDir: string) => {
    const weights = await loadClipWeights(file, { cache: null });
    // the file changes after its image tower was read
    const later = new Date(Date.now() + 5000);
    utimesSync(file, later, later);
    const setup = setUp(clipIqa, parseOptions(clipIqa, {}), { weights, tokenizer, model: file });
    return metricFor(setup, new Map(), { threads: 1 }, 2, cacheDir);
  };
  const want = await scores('clip-iqa', { model, cache });
  // the text features are in the cache under the same weights' digest: the text tower is never read
  const warm = await metric(cache);
  assert.deepEqual(await warm.scoreBatch(images), want);
  await warm.close();
  // without them it must be read, and a changed file is refused rather than mixed with the image tower read before
  const cold = await metric(join(dir, 'empty-cache'));
  await assert.rejects(cold.scoreBatch(images), /clip\.safetensors: the file changed after its image tower was read/);
  await cold.close();
});
