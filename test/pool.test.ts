/**
 * The preparation pool (src/methods/prepare-pool.ts): images decoded and made into views in worker threads give
 * the same scores as in the main thread, bit for bit, for a ViT method with whole-image views (CLIP-IQA), one with
 * views of its own (LIQE's windows), a ResNet method, and a caller's own method the workers do not know; a
 * failure is that image's error, named as in the main thread; the command ends with its workers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createMetric,
  loadBackbone,
  metricFor,
  type Method,
  type Metric,
  type MetricOptions,
  type ScoreResult,
} from '../src/methods/index.js';
import { liqe } from '../src/methods/liqe.js';
import { parseOptions } from '../src/methods/method.js';
import { setUp } from '../src/methods/graphs.js';
import { ImageDecodeError } from '../src/data/image.js';
import { ImageRefusedError } from '../src/methods/views.js';
import { sharedDir } from './helpers/shared.js';
import { cli, cliInChild } from './helpers/cli.js';

const ref = join(sharedDir(), 'reference');
const images = join(ref, 'images');
const vit = join(ref, 'tiny-vit-p32');
const rn = join(ref, 'tiny-rn');
const names = [
  'AttnGAN_normal_000.jpg',
  'grey_640x480.png',
  'midjourney_normal_105.jpg',
  'palette_157x301.png',
  'sd1.5_lowstep_050.jpg',
  'tall_157x301.png',
  'wide_640x480.png',
];

async function withMetric<T>(method: string, opts: MetricOptions, fn: (m: Metric) => Promise<T>): Promise<T> {
  const m = await createMetric(method, { threads: 1, batchSize: 4, ...opts });
  try {
    return await fn(m);
  } finally {
    await m.close();
  }
}

async function collect(m: Metric, files: readonly string[]): Promise<ScoreResult[]> {
  const out: ScoreResult[] = [];
  for await (const r of m.scoreFiles(files)) out.push(r);
  return out;
}

const dir = mkdtempSync(join(tmpdir(), 'promptiqa-pool-'));
const corrupt = join(dir, 'corrupt.jpg');
writeFileSync(corrupt, Buffer.concat([readFileSync(join(images, names[0]!)).subarray(0, 400), Buffer.alloc(64, 7)]));
const missing = join(dir, 'missing.png');
const files = [...names.map((n) => join(images, n)), corrupt, missing];
test.after(() => rmSync(dir, { recursive: true, force: true }));

const cases: Array<[string, string, MetricOptions]> = [
  ['clip-iqa on a ViT (whole images)', 'clip-iqa', { model: vit }],
  ['liqe windows on a ViT (views of its own)', 'liqe', { model: vit }],
  ['clip-iqa on a ResNet', 'clip-iqa', { model: rn }],
];

for (const [what, method, opts] of cases) {
  test(`scoreFiles: ${what}: the pool's scores and errors are the main thread's, bit for bit`, async () => {
    const main = await withMetric(method, { ...opts, decodeThreads: 0 }, (m) => collect(m, files));
    const pooled = await withMetric(method, { ...opts, decodeThreads: 2 }, (m) => collect(m, files));
    assert.deepEqual(pooled, main);
    const scored = main.filter((r) => 'score' in r).length;
    assert.ok(scored >= 5, `${scored} scored: ${JSON.stringify(main)}`);
    assert.ok(main.some((r) => r.file === corrupt && 'error' in r));
    assert.deepEqual(
      main.find((r) => r.file === missing),
      { file: missing, error: 'no such file' },
    );
  });
}

test("a caller's own method with views of its own: the workers decode, its views are made in the main thread, the same scores", async () => {
  // the workers' registry has promptiqa's methods only: this copy of LIQE under another name is not among them
  const own = { ...liqe, info: { ...liqe.info, name: 'my-windows' } } as Method;
  const setup = setUp(own, parseOptions(own, {}), await loadBackbone(vit));
  const params = setup.model.init(undefined as never);
  const run = async (decodeThreads: number): Promise<ScoreResult[]> => {
    const m = metricFor(setup, params, { provider: 'cpu', threads: 1 }, 4, null, {}, {}, decodeThreads);
    try {
      return await collect(m, files);
    } finally {
      await m.close();
    }
  };
  const main = await run(0);
  assert.deepEqual(await run(2), main);
  assert.ok(main.filter((r) => 'score' in r).length >= 5);
});

test('scoreBatch and score on bytes: the same float32 scores with and without the pool', async () => {
  const bytes = names.map((n) => new Uint8Array(readFileSync(join(images, n))));
  const run = (decodeThreads: number): Promise<number[][]> =>
    withMetric('clip-iqa', { model: vit, decodeThreads }, async (m) => [await m.scoreBatch(bytes), [await m.score(bytes[2]!)]]);
  const [main, pooled] = [await run(0), await run(1)];
  assert.deepEqual(pooled, main);
  // the caller's bytes are copied to the worker, not moved away from it
  assert.ok(bytes.every((b) => b.byteLength > 0));
});

test('scoreBatch with the pool: a bad image throws its error as the main thread does', async () => {
  const good = new Uint8Array(readFileSync(join(images, names[0]!)));
  const bad = new Uint8Array(readFileSync(corrupt));
  await withMetric('clip-iqa', { model: vit, decodeThreads: 1 }, async (m) => {
    await assert.rejects(m.scoreBatch([good, bad]), (err: unknown) => err instanceof ImageDecodeError && err.file === '<buffer>');
    await assert.rejects(m.scoreBatch([join(images, names[0]!), missing]), (err: unknown) => {
      assert.ok(err instanceof ImageDecodeError);
      assert.equal(err.message, `${missing}: no such file`);
      return true;
    });
  });
  // an image LIQE cannot window (smaller than 224 on a side) is refused with the method's reason
  const small = { width: 100, height: 300, data: new Uint8Array(100 * 300 * 3).fill(90) };
  const reason = async (decodeThreads: number): Promise<string> =>
    withMetric('liqe', { model: vit, decodeThreads }, async (m) => {
      try {
        await m.scoreBatch([small]);
      } catch (err) {
        assert.ok(err instanceof ImageRefusedError, String(err));
        return err.message;
      }
      throw new Error('not refused');
    });
  assert.equal(await reason(1), await reason(0));
});

test('decodeThreads is checked before anything is read', async () => {
  for (const bad of [-1, 1.5, 65, '2']) {
    await assert.rejects(
      createMetric('clip-iqa', { model: join(dir, 'nothing-here'), decodeThreads: bad as number }),
      /decodeThreads must be an integer from 0/,
    );
  }
});

test('the score command with the pool ends when it is done (no worker left holding the process), scoring as without it', async () => {
  const score = async (threads: string): Promise<ScoreResult[]> => {
    const { code, out, err } = await cliInChild([
      'score',
      ...files.slice(0, 3),
      '--method',
      'clip-iqa',
      '--model',
      vit,
      '--format',
      'json',
      '--quiet',
      '--decode-threads',
      threads,
    ]);
    assert.equal(code, 0, err);
    return JSON.parse(out) as ScoreResult[];
  };
  const pooled = await score('2');
  assert.equal(pooled.length, 3);
  assert.deepEqual(pooled, await score('0'));
  const bad = await cli('score', files[0]!, '--method', 'clip-iqa', '--model', vit, '--decode-threads', '65');
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--decode-threads must be an integer from 0 \(decode in the main thread\) to 64, not 65/);
});

test('built: the compiled command scores with its worker module (dist/methods/prepare-worker.js), as the source does without the pool', async () => {
  // a build of this checkout in a folder of its own (package.json, bin, dist; node_modules linked)
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const built = join(dir, 'built');
  mkdirSync(join(built, 'bin'), { recursive: true });
  copyFileSync(join(root, 'package.json'), join(built, 'package.json'));
  copyFileSync(join(root, 'bin', 'promptiqa.js'), join(built, 'bin', 'promptiqa.js'));
  symlinkSync(join(root, 'node_modules'), join(built, 'node_modules'));
  execFileSync(process.execPath, [
    join(root, 'node_modules', 'typescript', 'bin', 'tsc'),
    '-p',
    join(root, 'tsconfig.build.json'),
    '--outDir',
    join(built, 'dist'),
  ]);
  const some = files.slice(0, 4);
  // the child has no tsx and no preloads: what the installed command runs
  const { code, out, err } = await cliInChild(
    ['score', ...some, '--method', 'liqe', '--model', vit, '--format', 'json', '--quiet', '--decode-threads', '2'],
    { entry: join(built, 'bin', 'promptiqa.js') },
  );
  assert.equal(code, 0, err);
  const want = await withMetric('liqe', { model: vit, decodeThreads: 0, batchSize: 8 }, (m) => collect(m, some));
  assert.deepEqual(JSON.parse(out), JSON.parse(JSON.stringify(want)));
});
