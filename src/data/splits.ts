/**
 * Seeded train / validation / test splits of a dataset's items.
 *
 * - `by: 'image'`: every item is its own unit.
 * - `by: 'group'`: whole groups (generation prompt, reference image) go to one side, so no prompt or
 *   scene is seen in training and tested on.
 * - `by: 'official'`: the dataset's own split column (KonIQ-10k); seed and ratios are ignored.
 *
 * How the cut is made: the units (sorted by group id with a plain code-unit comparison, never a
 * locale-dependent one) are shuffled with `Rng(seed)` and laid end to end in that order, each as long as
 * its item count; a unit goes to train, val or test according to where its midpoint falls against the
 * cumulative ratios × item count. The cut is by items, not by group count, so the sides hold the
 * requested share of images even when groups differ in size, and each side is off by at most half of
 * the largest group at each boundary (the val side, with two boundaries, by at most one group). The
 * result depends only on the group ids, their sizes and the seed, so it is the same on every platform.
 */
import { createHash } from 'node:crypto';
import { Rng } from '../util/rng.js';
import type { DatasetInfo, DatasetItem } from './datasets.js';

export interface SplitSpec {
  seed: number;
  /** Train / val / test shares, non-negative, summing to 1: e.g. [0.7, 0.1, 0.2] or [0.8, 0, 0.2]. */
  ratios: [number, number, number];
  by: 'image' | 'group' | 'official';
}

/** Item indices of each side, sorted ascending. */
export interface Split {
  train: number[];
  val: number[];
  test: number[];
}

export function splitDataset(items: readonly DatasetItem[], spec: SplitSpec): Split {
  if (spec.by === 'official') return officialSplit(items);
  checkSpec(spec);

  let units: number[][];
  if (spec.by === 'group') {
    const byGroup = new Map<string, number[]>();
    items.forEach((item, i) => {
      const members = byGroup.get(item.group);
      if (members) members.push(i);
      else byGroup.set(item.group, [i]);
    });
    const ids = [...byGroup.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    units = ids.map((id) => byGroup.get(id)!);
  } else if (spec.by === 'image') {
    units = items.map((_, i) => [i]);
  } else {
    throw new Error(`splitDataset: unknown split unit ${JSON.stringify(spec.by)}; expected 'image', 'group' or 'official'`);
  }
  new Rng(spec.seed).shuffle(units);

  const n = items.length;
  const trainEnd = spec.ratios[0] * n;
  const valEnd = (spec.ratios[0] + spec.ratios[1]) * n;
  const split: Split = { train: [], val: [], test: [] };
  let start = 0;
  for (const unit of units) {
    const mid = start + unit.length / 2;
    const side = mid < trainEnd ? split.train : mid < valEnd ? split.val : split.test;
    side.push(...unit);
    start += unit.length;
  }
  for (const side of [split.train, split.val, split.test]) side.sort((a, b) => a - b);
  return split;
}

/**
 * The seed that splits round `round` of a run seeded `seed` (and trains it: initialisation, order, augmentation):
 * seed + round. The one place this is written.
 */
export function roundSeed(seed: number, round: number): number {
  return seed + round;
}

/** `rounds` splits; round r uses seed `roundSeed(spec.seed, r)`. */
export function splitRounds(items: readonly DatasetItem[], spec: SplitSpec, rounds: number): Split[] {
  if (!Number.isInteger(rounds) || rounds < 1) throw new RangeError(`splitRounds: rounds must be a positive integer, got ${rounds}`);
  return Array.from({ length: rounds }, (_, r) => splitDataset(items, { ...spec, seed: roundSeed(spec.seed, r) }));
}

function checkSpec(spec: SplitSpec): void {
  // Rng keeps 32 bits of the seed: a fractional or huge seed would silently alias another one.
  if (!Number.isInteger(spec.seed) || spec.seed < 0 || spec.seed > 0xffffffff) {
    throw new RangeError(`split seed must be an integer in [0, 2^32), got ${spec.seed}`);
  }
  const r = spec.ratios;
  if (r.length !== 3 || r.some((x) => !Number.isFinite(x) || x < 0)) {
    throw new RangeError(`split ratios must be three non-negative numbers (train, val, test), got [${r.join(', ')}]`);
  }
  const sum = r[0] + r[1] + r[2];
  if (Math.abs(sum - 1) > 1e-6) throw new RangeError(`split ratios must sum to 1, got [${r.join(', ')}] (sum ${sum})`);
}

function officialSplit(items: readonly DatasetItem[]): Split {
  const split: Split = { train: [], val: [], test: [] };
  items.forEach((item, i) => {
    if (item.split === undefined) {
      throw new Error(
        `official split: item ${i} (${item.image}) has no split; this dataset has no official split, use by 'group' or 'image'`,
      );
    }
    const side = item.split === 'train' ? split.train : item.split === 'val' ? split.val : item.split === 'test' ? split.test : undefined;
    if (!side)
      throw new Error(`official split: item ${i} (${item.image}) has split ${JSON.stringify(item.split)}; expected train, val or test`);
    side.push(i);
  });
  return split;
}

/**
 * A seeded subset of `limit` item indices (sorted), for quick runs on part of a dataset. Training and
 * evaluation both use it, so `--limit N --seed S` names the same images in both.
 */
export function sampleIndices(count: number, limit: number | undefined, seed: number): number[] {
  const all = Array.from({ length: count }, (_, i) => i);
  if (!limit || limit >= count) return all;
  return new Rng((seed ^ 0x5eed) >>> 0)
    .shuffle(all)
    .slice(0, limit)
    .sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------------
// A run's split: everything that decides which images a run trains, validates and tests on.

export type SplitUnit = SplitSpec['by'];

/** The protocol's default shares when none are given. */
export const DEFAULT_RATIOS: readonly [number, number, number] = [0.7, 0.1, 0.2];

/** Everything that, with the dataset's items, defines a run's split. */
export interface SplitSettings {
  by: SplitUnit;
  ratios: [number, number, number];
  /** the run's seed: it draws the `limit` subset, the same for every round */
  seed: number;
  /** round r of a multi-round run splits with seed + r */
  round: number;
  /** a seeded subset of this many items is split instead of the whole dataset; null: every item */
  limit: number | null;
}

/** What a checkpoint records of its split: the settings, and digests to check a rebuild against. */
export interface SplitRecord extends SplitSettings {
  /** the dataset as loaded: item count and sha256 of its (image, score) list */
  dataset: { items: number; sha256: string };
  train: number;
  val: number;
  /** the test side: image count and sha256 of its (image, score) list */
  test: { n: number; sha256: string };
}

/** A run's split as indices into the dataset's items (each side sorted), with its settings and record. */
export interface RunSplit extends Split {
  settings: SplitSettings;
  record: SplitRecord;
}

/** A run's split settings: what is given, the rest by the protocol's defaults (the dataset's own unit). */
export function resolveSplitSettings(info: Pick<DatasetInfo, 'groupBy'>, given: Partial<SplitSettings> = {}): SplitSettings {
  return {
    by: given.by ?? (info.groupBy === 'image' ? 'image' : 'group'),
    ratios: given.ratios ?? [...DEFAULT_RATIOS],
    seed: given.seed ?? 0,
    round: given.round ?? 0,
    limit: given.limit ?? null,
  };
}

/** The one way a run's split is computed from its items and settings: training and evaluation both use it. */
export function runSplit(items: readonly DatasetItem[], settings: SplitSettings): RunSplit {
  if (!Number.isInteger(settings.round) || settings.round < 0)
    throw new RangeError(`split round must be a whole number ≥ 0, got ${settings.round}`);
  if (settings.limit !== null && (!Number.isInteger(settings.limit) || settings.limit < 1)) {
    throw new RangeError(`split limit must be a whole number ≥ 1 or null, got ${settings.limit}`);
  }
  const pool = sampleIndices(items.length, settings.limit ?? undefined, settings.seed);
  const local = splitDataset(
    pool.map((i) => items[i]!),
    { by: settings.by, ratios: settings.ratios, seed: roundSeed(settings.seed, settings.round) },
  );
  const toItems = (side: number[]): number[] => side.map((i) => pool[i]!);
  const split: Split = { train: toItems(local.train), val: toItems(local.val), test: toItems(local.test) };
  const record: SplitRecord = {
    ...settings,
    ratios: [...settings.ratios],
    dataset: { items: items.length, sha256: itemsDigest(items) },
    train: split.train.length,
    val: split.val.length,
    test: { n: split.test.length, sha256: itemsDigest(items, split.test) },
  };
  return { ...split, settings, record };
}

/**
 * The split a checkpoint records, rebuilt from the dataset's items; refuses, naming the difference,
 * when the items are not those the run was split from (so its test side would be other images).
 */
export function reproduceSplit(items: readonly DatasetItem[], record: SplitRecord): RunSplit {
  const { by, ratios, seed, round, limit } = record;
  const again = runSplit(items, { by, ratios, seed, round, limit });
  if (again.record.test.sha256 === record.test.sha256) return again;
  const was = record.dataset;
  const now = again.record.dataset;
  let why: string;
  if (now.items !== was.items) why = `the dataset has ${now.items} images where the training run's had ${was.items}`;
  else if (now.sha256 !== was.sha256)
    why = `the dataset has the same number of images (${now.items}) as the training run's, but other image names or scores`;
  else
    why = "the dataset is the same as the training run's, but the split comes out differently (a checkpoint of another promptiqa version?)";
  throw new Error(
    `the test side cannot be rebuilt: ${why}; the run's test side was ${record.test.n} images (sha256 ${record.test.sha256.slice(0, 12)}…), the rebuilt one is ${again.record.test.n} (sha256 ${again.record.test.sha256.slice(0, 12)}…)`,
  );
}

/** sha256 of the (image, score) list of some items (all by default), in order: one line per item. */
export function itemsDigest(items: readonly DatasetItem[], indices?: readonly number[]): string {
  const h = createHash('sha256');
  const add = (it: DatasetItem): void => {
    h.update(`${it.image}\t${it.mos}\n`);
  };
  if (indices) for (const i of indices) add(items[i]!);
  else for (const it of items) add(it);
  return h.digest('hex');
}

/** One line for protocols and notes: "split by group 0.6/0.2/0.2, seed 3 (round 1: split seed 4), a 60-image subset". */
export function describeSplit(s: SplitSettings): string {
  const round = s.round ? ` (round ${s.round}: split seed ${roundSeed(s.seed, s.round)})` : '';
  const limit = s.limit !== null ? `, a seeded subset of ${s.limit} images` : '';
  return s.by === 'official'
    ? `the dataset's official split${limit}`
    : `split by ${s.by} ${s.ratios.join('/')}, seed ${s.seed}${round}${limit}`;
}
