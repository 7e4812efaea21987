/** The benchmark's node placement: each timed graph's first run is profiled to tell which provider ran its nodes. */
import { PlacementRecorder, type PlacementDetail } from '../graph/placement.js';
import { type RuntimeOptions } from '../graph/runtime.js';

/**
 * Runs `bench` with runtime options whose sessions profile their first run (when `on`), and returns what it
 * returned with the placement of every session it made. The profiled run must be an untimed one: callers
 * make at least one warm-up run (`warmupRuns`).
 */
export async function withPlacement<T>(
  on: boolean,
  runtime: RuntimeOptions,
  bench: (runtime: RuntimeOptions) => Promise<T>,
): Promise<{ result: T; placement?: PlacementDetail }> {
  if (!on) return { result: await bench(runtime) };
  const recorder = new PlacementRecorder();
  try {
    const result = await bench(recorder.runtime(runtime));
    return { result, placement: recorder.read() };
  } finally {
    recorder.dispose();
  }
}

/** Warm-up runs when placement is profiled: at least the one profiled run, which is never timed. */
export function warmupRuns(warmup: number, placement: boolean): number {
  return placement ? Math.max(warmup, 1) : warmup;
}
