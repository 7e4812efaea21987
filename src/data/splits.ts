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
import { Rng } from '../util/rng.js';
import type { DatasetItem } from './datasets.js';

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

/** `rounds` splits; round r uses seed `spec.seed + r`. */
export function splitRounds(items: readonly DatasetItem[], spec: SplitSpec, rounds: number): Split[] {
  if (!Number.isInteger(rounds) || rounds < 1) throw new RangeError(`splitRounds: rounds must be a positive integer, got ${rounds}`);
  return Array.from({ length: rounds }, (_, r) => splitDataset(items, { ...spec, seed: spec.seed + r }));
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
      throw new Error(`official split: item ${i} (${item.image}) has no split; this dataset has no official split, use by 'group' or 'image'`);
    }
    const side = item.split === 'train' ? split.train : item.split === 'val' ? split.val : item.split === 'test' ? split.test : undefined;
    if (!side) throw new Error(`official split: item ${i} (${item.image}) has split ${JSON.stringify(item.split)}; expected train, val or test`);
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
  return new Rng((seed ^ 0x5eed) >>> 0).shuffle(all).slice(0, limit).sort((a, b) => a - b);
}
