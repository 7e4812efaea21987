/**
 * Central finite-difference checks of the graph's gradient rules. A check builds a graph from inputs
 * of given shapes, reduces its output to a scalar with fixed random weights (so every output element
 * matters), differentiates, and compares each input's gradient with (f(x+h) - f(x-h)) / 2h.
 */
import { Graph, type Value, type DType, mul, sumAll } from '../../src/graph/graph.js';
import { gradients } from '../../src/graph/grad.js';
import { CompiledGraph } from '../../src/graph/runtime.js';
import { Rng } from '../../src/util/rng.js';

export interface GradCheckResult {
  maxAbsErr: number;
  maxRelErr: number;
  worst: string;
}

export interface GradCheckOptions {
  dtype?: 'float64' | 'float32';
  seed?: number;
  h?: number;
  /** custom initial values per input (default: normal) */
  init?: Record<string, (rng: Rng, n: number) => number[]>;
  /** check only these inputs (default: all) */
  wrt?: string[];
}

type Arr = Float64Array | Float32Array;

export async function gradCheck(
  shapes: Record<string, number[]>,
  build: (g: Graph, inputs: Record<string, Value>) => Value,
  opts: GradCheckOptions = {},
): Promise<GradCheckResult> {
  const dtype: DType = opts.dtype ?? 'float64';
  const rng = new Rng(opts.seed ?? 1);
  const g = new Graph('gradcheck');
  const inputs: Record<string, Value> = {};
  for (const [name, shape] of Object.entries(shapes)) inputs[name] = g.input(name, shape, dtype);
  const out = build(g, inputs);
  const mix = Array.from({ length: out.size }, () => rng.normal());
  const r = g.constant(dtype === 'float64' ? Float64Array.from(mix) : Float32Array.from(mix), out.shape, dtype);
  const loss = sumAll(mul(out, r));
  const wrtNames = opts.wrt ?? Object.keys(shapes);
  const grads = gradients(
    loss,
    wrtNames.map((n) => inputs[n]!),
  );
  g.output('loss', loss);
  wrtNames.forEach((n, i) => g.output(`grad_${n}`, grads[i]!));
  const compiled = await CompiledGraph.create(g);

  const make = (n: number, vals: number[]): Arr => (dtype === 'float64' ? Float64Array.from(vals) : Float32Array.from(vals));
  const feeds: Record<string, Arr> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const init = opts.init?.[name];
    feeds[name] = make(n, init ? init(rng, n) : Array.from({ length: n }, () => rng.normal()));
  }
  const res = await compiled.run(feeds);
  const h = opts.h ?? (dtype === 'float64' ? 1e-6 : 1e-2);
  let maxAbsErr = 0;
  let maxRelErr = 0;
  let worst = '';
  for (const name of wrtNames) {
    const analytic = res[`grad_${name}`]!.data as Arr;
    const x = feeds[name]!;
    for (let i = 0; i < x.length; i++) {
      const orig = x[i]!;
      x[i] = orig + h;
      const fp = Number((await compiled.run(feeds, ['loss'])).loss!.data[0]);
      x[i] = orig - h;
      const fm = Number((await compiled.run(feeds, ['loss'])).loss!.data[0]);
      x[i] = orig;
      const numeric = (fp - fm) / (2 * h);
      const a = Number(analytic[i]);
      const abs = Math.abs(a - numeric);
      const rel = abs / Math.max(1, Math.abs(numeric), Math.abs(a));
      if (abs > maxAbsErr) {
        maxAbsErr = abs;
        worst = `${name}[${i}]: analytic ${a}, numeric ${numeric}`;
      }
      maxRelErr = Math.max(maxRelErr, rel);
    }
  }
  await compiled.release();
  return { maxAbsErr, maxRelErr, worst };
}
