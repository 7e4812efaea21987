/**
 * Training memory that does not grow with the dataset: the batch source holds at most two parts' decoded
 * images (the one in use and the one read ahead), keeps frozen features (an embedDim array per image), and
 * leaves nothing running when an epoch stops early; end to end, a run's peak RSS is the same on 200 images
 * and on 520.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import sharp from 'sharp';
import { BatchSource, type UnreadablePolicy } from '../src/train/batches.js';
import { getMethod, loadBackbone } from '../src/methods/index.js';
import { parseOptions } from '../src/methods/method.js';
import { setUp } from '../src/methods/graphs.js';
import { imagePath, loadDataset, type Dataset } from '../src/data/datasets.js';
import { Rng } from '../src/util/rng.js';
import { sharedDir } from './helpers/shared.js';

const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');
const agiqa = join(sharedDir(), 'datasets', 'agiqa-3k');

let tmp = '';
let ds: Dataset;
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => {
  unhandled.push(reason);
};
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'promptiqa-train-memory-'));
  ds = loadDataset('agiqa-3k', { root: agiqa });
  process.on('unhandledRejection', onUnhandled);
});
after(() => {
  process.off('unhandledRejection', onUnhandled);
  rmSync(tmp, { recursive: true, force: true });
});

let sources = 0;
/** A batch source for `method` with `options` on the tiny model, over `dataset`; warnings are collected in `warnings`. */
async function source(
  method: string,
  options: Record<string, unknown> = {},
  dataset = ds,
  skip = false,
): Promise<{ src: BatchSource; warnings: string[]; embedDim: number; listPath: string }> {
  const m = getMethod(method);
  const backbone = await loadBackbone(tiny);
  const setup = setUp(m, parseOptions(m, options), backbone);
  const warnings: string[] = [];
  const listPath = join(tmp, `unreadable-${sources++}.json`);
  const policy: UnreadablePolicy = {
    path: listPath,
    skip,
    emit: (e) => warnings.push(e.message),
    keptAt: () => 'the test',
  };
  const src = new BatchSource(dataset, setup, [], { threads: 1 }, new Map(), policy);
  return { src, warnings, embedDim: backbone.weights.config.embedDim, listPath };
}

/** Item indices 0…n-1 in the seeded order of an epoch, cut into batches of `batch`. */
function epochParts(n: number, batch: number, epoch: number): number[][] {
  const order = Rng.at(1, 'order', epoch).shuffle(Array.from({ length: n }, (_, i) => i));
  return Array.from({ length: Math.ceil(n / batch) }, (_, s) => order.slice(s * batch, (s + 1) * batch));
}

const rngAt = (epoch: number) => (s: number) => Rng.at(1, 'step', epoch, s);
const where = (s: number): string => `at step ${s}`;

test('an epoch of 96 images in batches of 8 holds at most two batches of decoded images at once, and none after', async () => {
  const { src } = await source('tang'); // random crops: every epoch decodes
  try {
    const parts = epochParts(96, 8, 1);
    const seen: number[][] = [];
    const heldAtYield: number[] = [];
    for await (const { step, rng, got } of src.epoch(parts, rngAt(1), where)) {
      assert.equal(step, seen.length);
      assert.ok(rng instanceof Rng);
      seen.push(got!.idx);
      heldAtYield.push(src.imagesHeld.now);
    }
    assert.deepEqual(seen, parts, 'the batches of the epoch, in its order');
    // while a batch trains, only the next one's images are held (decoding); the last has none after it
    assert.deepEqual(heldAtYield, [...Array<number>(11).fill(8), 0]);
    assert.ok(src.imagesHeld.peak <= 16, `peak ${src.imagesHeld.peak} decoded images held`);
    assert.ok(src.imagesHeld.peak > 8, 'the next batch decodes while this one is assembled');
    assert.equal(src.imagesHeld.now, 0);
  } finally {
    await src.release();
  }
});

test('frozen features (no augmentation) are computed once and kept, one embedDim array per image; later epochs decode nothing', async () => {
  const { src, embedDim } = await source('tang', { augment: 'none' });
  try {
    const features = new Map<number, Float32Array>();
    const collect = (got: { idx: number[]; batch: { image: Float32Array } }): void =>
      got.idx.forEach((i, j) => features.set(i, got.batch.image.slice(j * embedDim, (j + 1) * embedDim)));
    for await (const { got } of src.epoch(epochParts(40, 8, 1), rngAt(1), where)) {
      assert.equal(got!.batch.image.length, 8 * embedDim);
      collect(got!);
    }
    assert.deepEqual(src.featuresKept, { images: 40, floats: 40 * embedDim });
    const peak = src.imagesHeld.peak;
    const first = new Map(features);
    for await (const { got } of src.epoch(epochParts(40, 8, 2), rngAt(2), where)) {
      assert.equal(src.imagesHeld.now, 0, 'nothing decodes: the features are kept');
      collect(got!);
    }
    assert.equal(src.imagesHeld.peak, peak);
    assert.deepEqual(src.featuresKept, { images: 40, floats: 40 * embedDim }, 'the kept features do not grow with the epochs');
    assert.deepEqual(features, first, 'the second epoch reads the features the first computed');
  } finally {
    await src.release();
  }
});

test('the images validation scores come a part at a time, in order, at most two parts held', async () => {
  const { src } = await source('tang');
  const idx = Array.from({ length: 45 }, (_, i) => 2 * i);
  const got: number[] = [];
  let most = 0;
  for await (const part of src.images(idx, 8, 'while scoring')) {
    assert.ok(part.idx.length <= 8);
    assert.equal(part.imgs.length, part.idx.length);
    most = Math.max(most, src.imagesHeld.now);
    got.push(...part.idx);
  }
  assert.deepEqual(got, idx);
  assert.ok(src.imagesHeld.peak <= 16 && most <= 16, `peak ${src.imagesHeld.peak}`);
  assert.equal(src.imagesHeld.now, 0);
});

/** A copy of the dataset whose item `victim` is a PNG with intact header and end but damaged pixel data. */
async function withDamaged(victim: number): Promise<{ dataset: Dataset; file: string }> {
  const png = Buffer.from(await sharp(imagePath(ds, ds.items[victim]!)).png().toBuffer());
  for (let i = png.length >> 1; i < (png.length >> 1) + 64; i++) png[i] = png[i]! ^ 0x5a;
  const file = join(tmp, `damaged-${victim}.png`);
  writeFileSync(file, png);
  return { dataset: { ...ds, items: ds.items.map((it, i) => (i === victim ? { ...it, image: file } : it)) }, file };
}

test('an epoch stopped early (the caller leaves, or an image fails to decode) waits for its read-ahead and leaves no rejection', async () => {
  const parts = epochParts(48, 8, 1);
  {
    const { src } = await source('tang');
    for await (const { step } of src.epoch(parts, rngAt(1), where)) {
      if (step === 1) break; // as a stopped run leaves the loop
    }
    assert.equal(src.imagesHeld.now, 0, 'the part read ahead was waited for');
    await src.release();
  }
  // an image of the third batch fails while the second trains; without skipUnreadable the epoch stops there
  const { dataset, file } = await withDamaged(parts[2]![3]!);
  {
    const { src } = await source('tang', {}, dataset);
    const steps: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const { step } of src.epoch(parts, rngAt(1), where)) steps.push(step);
      })(),
      (e: Error) => e.message.includes(file) && /could not be decoded at step 2/.test(e.message) && /kept in the test/.test(e.message),
    );
    assert.deepEqual(steps, [0, 1]);
    assert.equal(src.imagesHeld.now, 0);
    assert.ok(src.skipped.has(parts[2]![3]!));
    await src.release();
  }
  {
    const { src, warnings } = await source('tang', {}, dataset, true);
    const sizes: number[] = [];
    for await (const { got } of src.epoch(parts, rngAt(1), where)) sizes.push(got!.idx.length);
    assert.deepEqual(sizes, [8, 8, 7, 8, 8, 8], 'left out of its batch');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /left out 1 image\(s\) that could not be decoded at step 2/);
    await src.release();
  }
  // validation: every failure is listed once all parts are read, and no part is handed out after one
  {
    const { src, listPath } = await source('tang', {}, dataset);
    const idx = parts.flat().sort((a, b) => a - b);
    const at = idx.indexOf(parts[2]![3]!);
    const handed: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const part of src.images(idx, 8, 'while scoring')) handed.push(...part.idx);
      })(),
      (e: Error) => e.message.includes(file) && /1 image\(s\) could not be decoded while scoring/.test(e.message),
    );
    assert.deepEqual(handed, idx.slice(0, at - (at % 8)), 'the parts before the failing one, nothing after');
    assert.equal(src.imagesHeld.now, 0);
    await src.release();
    const list = JSON.parse(readFileSync(listPath, 'utf8')) as Array<{ file: string }>;
    assert.deepEqual(
      list.map((u) => u.file),
      [file],
    );
  }
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(unhandled, []);
});

/** Peak RSS of a child process that trains tang on `limit` AGIQA-3K images for one epoch on the tiny ViT-B/16 stand-in. */
function peakRss(limit: number): Promise<number> {
  const out = join(tmp, `rss-${limit}`);
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join('test', 'helpers', 'train-rss-child.ts'), out, String(limit)],
      { maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`));
        else resolve((JSON.parse(stdout.trim().split('\n').at(-1)!) as { maxRssKb: number }).maxRssKb * 1024);
      },
    );
  });
}

test('end to end: peak RSS of tang on 520 images is within 150 MB of that on 200 (keeping every decoded image costs about 300 MB more)', async () => {
  // 320 more 512×512 images hold 320 × 786 kB ≈ 250 MB if every decoded image is kept (measured: 294 MB more when
  // they were). Below about 100 images a run does not reach its plateau: fewer steps, smaller graphs.
  const [small, large] = await Promise.all([peakRss(200), peakRss(520)]);
  const mb = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MB`;
  assert.ok(large - small < 150 * 2 ** 20, `peak RSS ${mb(small)} at 200 images, ${mb(large)} at 520`);
});
