/**
 * The ceiling of the benchmark's figures: ONNX Runtime's own float32 MatMul rate on this machine, with the
 * runtime options (provider, threads) of the timed modes. A mode's GFLOP/s over it is how close that mode comes
 * to what the engine's matrix products can do here.
 */
import * as G from '../graph/graph.js';
import { Graph } from '../graph/graph.js';
import { CompiledGraph, type RuntimeOptions } from '../graph/runtime.js';
import { Rng } from '../util/rng.js';
import { timeIt } from './timing.js';

/**
 * Square sizes tried; the best is the peak. Which size MLAS runs fastest depends on the caches and the thread
 * count (and a GPU wants larger ones), so one size could understate the ceiling; 2048 is where the issue's
 * OpenBLAS comparison was made, 1024 fits the caches of small machines better.
 */
export const PEAK_SIZES: readonly number[] = [1024, 2048];

/** The operations of one timed run, whatever the size: two 2048³ products, so that every run is long enough to time. */
export const PEAK_WORK = 2 * 2 * 2048 ** 3;

/** Products per run at size n for `work` operations per run. */
export function peakProducts(n: number, work = PEAK_WORK): number {
  return Math.max(1, Math.round(work / (2 * n ** 3)));
}

/**
 * `products` chained n×n products, as a model's layers run them: an activation times a weight. The weight W (random,
 * N(0, 1/n), so that a chain neither grows nor shrinks much) is a constant of the graph, which ONNX Runtime packs
 * once at load as it packs a model's weights; the activation starts from the graph input, the vector x, as
 * X = x·uᵀ (u a fixed unit vector), so nothing is constant for ONNX Runtime to fold and a GPU gets n floats, not
 * n², per run; then X ← X·W. X stays x times the row uᵀ·Wᵏ: the output, the sum of X, is (Σx)·Σ(uᵀ·Wᵏ), which a
 * test checks against the same chain on vectors.
 */
export function peakGraph(n: number, products: number): Graph {
  const g = new Graph(`bench_peak_${n}`);
  const { u, w } = peakOperands(n);
  const x = g.input('x', [n, 1]);
  let c = G.matmul(x, g.constant(u, [1, n]));
  const weight = g.weight('w', [n, n], w);
  for (let i = 0; i < products; i++) c = G.matmul(c, weight);
  g.output('sum', G.sumAll(c));
  return g;
}

/** The fixed unit vector u and weight W of `peakGraph` at size n (seeded). */
export function peakOperands(n: number): { u: Float32Array; w: Float32Array } {
  const rng = new Rng(n);
  const u = unitVector(n, rng);
  const scale = 1 / Math.sqrt(n);
  const w = Float32Array.from({ length: n * n }, () => rng.normal() * scale);
  return { u, w };
}

/** A random unit vector of n entries (random values, not a pattern: a GPU's clocks can depend on the data). */
export function unitVector(n: number, rng: Rng): Float32Array {
  const x = Float32Array.from({ length: n }, () => rng.normal());
  const norm = Math.sqrt(x.reduce((s, v) => s + v * v, 0));
  return x.map((v) => v / norm);
}

export interface PeakResult {
  /** the best GFLOP/s over the sizes */
  gflop_s: number;
  /** the size that gave it */
  size: number;
  /** GFLOP/s by size */
  by_size: Record<string, number>;
}

/**
 * Times the chain of `peakProducts(n, work)` products at each size (after `warmup` untimed runs, the fastest of `iters`)
 * and returns the best rate. Only the n³ products are counted, not the first outer product or the sum (n² each).
 */
export async function matmulPeak(
  runtime: RuntimeOptions,
  opts: { warmup: number; iters: number; sizes?: readonly number[]; work?: number },
): Promise<PeakResult> {
  const rng = new Rng(3);
  const bySize: Record<string, number> = {};
  let best: { gflop_s: number; size: number } | undefined;
  for (const n of opts.sizes ?? PEAK_SIZES) {
    const products = peakProducts(n, opts.work);
    const x = unitVector(n, rng);
    const graph = await CompiledGraph.create(peakGraph(n, products), runtime);
    try {
      const t = await timeIt(() => graph.run({ x }), Math.max(1, opts.warmup), opts.iters);
      // a ceiling: the fastest run (a mode's figure is its median)
      const gflop_s = (products * 2 * n ** 3) / Math.min(...t.seconds) / 1e9;
      bySize[String(n)] = gflop_s;
      if (!best || gflop_s > best.gflop_s) best = { gflop_s, size: n };
    } finally {
      await graph.release();
    }
  }
  if (!best) throw new Error('matmulPeak: no sizes to time');
  return { ...best, by_size: bySize };
}
