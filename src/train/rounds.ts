/**
 * Multi-round training: the same run repeated with `roundSeed(seed, r)` (another split and another start each
 * round), each round in its own folder, and the rounds' test figures summarised.
 */
import { join } from 'node:path';
import { roundSeed } from '../data/splits.js';
import { FIGURES, summarise } from '../eval/metrics.js';
import { checkWritableFolder, writeFileAtomic } from '../util/fs.js';
import { withLock } from '../util/lock.js';
import type { TrainOptions, TrainResult } from './options.js';
import { checkRunFolder, checkTrainOptions } from './checks.js';
import { train } from './trainer.js';

/**
 * The whole protocol: N rounds with split seeds seed, seed+1, … (the `limit` subset, if any, is the same
 * in every round); mean, median and std of the test figures.
 */
export async function trainRounds(
  opts: TrainOptions & { rounds: number },
): Promise<{ rounds: TrainResult[]; summary: Record<string, { mean: number; median: number; std: number }>; protocol: string }> {
  if (!Number.isSafeInteger(opts.rounds) || opts.rounds < 1)
    throw new RangeError(`trainRounds: rounds must be a whole number ≥ 1, not ${String(opts.rounds)}`);
  if (typeof opts.out !== 'string' || opts.out.trim() === '') throw new TypeError('train: out (the folder for the run) is required');
  checkTrainOptions(opts);
  checkWritableFolder(opts.out);
  checkRunFolder(opts.out, 'rounds');
  return withLock(opts.out, 'folder', () => trainRoundsLocked(opts));
}

async function trainRoundsLocked(opts: TrainOptions & { rounds: number }): ReturnType<typeof trainRounds> {
  const rounds: TrainResult[] = [];
  for (let r = 0; r < opts.rounds; r++) {
    rounds.push(await train({ ...opts, round: r, out: join(opts.out, `round-${r}`) }));
  }
  const summary: Record<string, { mean: number; median: number; std: number }> = {};
  for (const { key: k } of FIGURES) {
    const vals = rounds.map((r) => r.test?.[k]).filter((v): v is number => v !== undefined);
    if (vals.length) {
      const s = summarise(vals);
      summary[k] = { mean: s.mean, median: s.median, std: s.std };
    }
  }
  // the settings the rounds actually used (the dataset's own split unit, the default shares), not the options as given
  const first = rounds[0]!;
  const s = first.split;
  const limit = s.limit !== null ? `, the same seeded subset of ${s.limit} images in each` : '';
  const protocol = `${opts.rounds} rounds of ${opts.method} on ${opts.dataset}, split by ${s.by} ${s.ratios.join('/')}, split seeds ${s.seed}…${roundSeed(s.seed, opts.rounds - 1)}${limit}; test figures of the epoch chosen on ${first.selectOn}; std with ddof=1`;
  writeFileAtomic(
    join(opts.out, 'rounds.json'),
    JSON.stringify(
      {
        protocol,
        split: { by: s.by, ratios: s.ratios, seed: s.seed, limit: s.limit },
        summary,
        rounds: rounds.map((r) => ({ out: r.out, round: r.split.round, bestEpoch: r.bestEpoch, test: r.test })),
      },
      null,
      2,
    ) + '\n',
  );
  return { rounds, summary, protocol };
}
