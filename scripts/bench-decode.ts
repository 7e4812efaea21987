/**
 * `score`'s work on a folder with the preparation pool (decoding and views in worker threads) against without it
 * (decoding on libuv's threads, views in the main thread, as before the pool): a full-size CLIP of random weights
 * (real shapes) per architecture, CLIP-IQA, the files scored through `metricFor` as `score` scores them
 * (`scoreFiles`), the two metrics taking turns, with the same ONNX Runtime threads. Prints img/s of both and checks
 * that their scores are equal, bit for bit.
 *
 *   node --import tsx scripts/bench-decode.ts DIR [--images 512] [--arch vit-b-32,rn50] [--threads 2]
 *       [--decode-threads 1] [--batch 8] [--views resize] [--rounds 1]
 *
 * A figure, not a test: the speed depends on the machine and on what else runs on it.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { archConfig } from '../src/clip/config.js';
import { randomClipWeights } from '../src/clip/weights.js';
import { ClipTokenizer } from '../src/clip/tokenizer.js';
import { getMethod, metricFor, type Metric } from '../src/methods/index.js';
import { parseOptions } from '../src/methods/method.js';
import { setUp } from '../src/methods/graphs.js';
import { Rng } from '../src/util/rng.js';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    images: { type: 'string', default: '512' },
    arch: { type: 'string', default: 'vit-b-32,rn50' },
    threads: { type: 'string', default: '2' },
    'decode-threads': { type: 'string', default: '1' },
    batch: { type: 'string', default: '8' },
    views: { type: 'string', default: 'resize' },
    rounds: { type: 'string', default: '1' },
  },
});
const dir = positionals[0];
if (!dir) throw new Error('usage: bench-decode.ts DIR (a folder of images, e.g. AGIQA-3K/images)');
const count = Number(args.images);
const files = readdirSync(dir)
  .filter((f) => /\.(jpe?g|png|bmp|webp)$/i.test(f))
  .sort()
  .slice(0, count)
  .map((f) => join(dir, f));
const threads = Number(args.threads);
const batch = Number(args.batch);
const pooledThreads = Number(args['decode-threads']);

async function scoreAll(metric: Metric, list: readonly string[]): Promise<{ scores: number[]; seconds: number }> {
  const scores: number[] = [];
  const t0 = process.hrtime.bigint();
  for await (const r of metric.scoreFiles(list)) {
    if ('error' in r) throw new Error(`${r.file}: ${r.error}`);
    scores.push(r.score);
  }
  return { scores, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

console.log(
  `${files.length} images from ${dir}; clip-iqa (testViews=${args.views}), random full-size weights; ONNX Runtime threads ${threads}, batch ${batch}; pool: ${pooledThreads} decoding thread(s)`,
);
for (const arch of args.arch.split(',')) {
  const method = getMethod('clip-iqa');
  const setup = setUp(method, parseOptions(method, { testViews: args.views }), {
    weights: randomClipWeights(archConfig(arch), 1, { text: true }),
    tokenizer: ClipTokenizer.default(),
    model: `random ${arch}`,
  });
  const params = setup.model.init(new Rng(0));
  const runtime = { provider: 'cpu' as const, threads };
  const metrics = {
    main: metricFor(setup, params, runtime, batch, null, {}, {}, 0),
    pool: metricFor(setup, params, runtime, batch, null, {}, {}, pooledThreads),
  };
  try {
    // graphs compiled and workers started before the clock runs
    for (const m of Object.values(metrics)) await scoreAll(m, files.slice(0, batch));
    const seconds = { main: 0, pool: 0 };
    const scores: Record<string, number[]> = {};
    for (let round = 0; round < Number(args.rounds); round++) {
      for (const which of ['main', 'pool'] as const) {
        const r = await scoreAll(metrics[which], files);
        seconds[which] += r.seconds;
        scores[which] = r.scores;
      }
    }
    const rate = (s: number): string => ((files.length * Number(args.rounds)) / s).toFixed(2);
    const same = scores.main!.every((s, i) => s === scores.pool![i]);
    console.log(
      `${arch}: without the pool ${rate(seconds.main)} img/s, with the pool ${rate(seconds.pool)} img/s (×${(seconds.main / seconds.pool).toFixed(2)}); scores ${same ? 'bit-identical' : 'DIFFER'}`,
    );
    if (!same) process.exitCode = 1;
  } finally {
    for (const m of Object.values(metrics)) await m.close();
  }
}
