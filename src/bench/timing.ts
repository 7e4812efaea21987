/** Timing of benchmark runs, shared by both engines' figures (no runtime imports: the CLI loads it eagerly). */
import { summarise } from '../eval/metrics.js';

export interface TimedRun {
  seconds: number[];
  median: number;
}

/** The median of a non-empty list (the statistics of the evaluation, which load nothing else). */
export function median(values: readonly number[]): number {
  return summarise([...values]).median;
}

/** Images per second of timed runs: the slowest, median and fastest run (one place for both engines). */
export interface RateSummary {
  min: number;
  median: number;
  max: number;
}

export function rateSummary(batch: number, seconds: readonly number[]): RateSummary {
  if (seconds.length === 0) throw new Error('rateSummary: no timed runs');
  return { min: batch / Math.max(...seconds), median: batch / median(seconds), max: batch / Math.min(...seconds) };
}

export async function timeIt(fn: () => Promise<unknown>, warmup: number, iters: number): Promise<TimedRun> {
  for (let i = 0; i < warmup; i++) await fn();
  const seconds: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    seconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { seconds, median: median(seconds) };
}
