/** Timing of benchmark runs, shared by both engines' figures (no runtime imports: the CLI loads it eagerly). */

export interface TimedRun {
  seconds: number[];
  median: number;
}

/** The median of a non-empty list. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
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
