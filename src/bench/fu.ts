/**
 * One training step of the `fu` method (both prompt learners, both vision passes, both text encoders,
 * loss, gradients and the Adam update) on full-size random weights, for the benchmark.
 */
import { type ClipWeights } from '../clip/weights.js';
import { ClipTokenizer } from '../clip/tokenizer.js';
import { CompiledGraph, type RuntimeOptions } from '../graph/runtime.js';
import { getMethod } from '../methods/index.js';
import { parseOptions } from '../methods/method.js';
import { trainGraph } from '../methods/graphs.js';
import { PARAM_PREFIX } from '../prompts/context.js';
import { adam } from '../train/optim.js';
import { Rng } from '../util/rng.js';
import { timeIt } from './timing.js';

export async function benchFu(weights: ClipWeights, opts: { batch: number; warmup: number; iters: number; runtime: RuntimeOptions }): Promise<{ fu_train_img_s: number; fu_s: number[] }> {
  const method = getMethod('fu');
  const o = parseOptions(method, {});
  const backbone = { weights, tokenizer: ClipTokenizer.default(), model: 'random' };
  const rng = new Rng(2);
  const params = method.init(weights, backbone.tokenizer, o, rng);
  const info = trainGraph(method, o, backbone, params, opts.batch, { alignment: true, distortion: false });
  const compiled = await CompiledGraph.create(info.graph, opts.runtime);
  const c = weights.config;
  const feeds: Record<string, Float32Array> = {
    pixels: Float32Array.from({ length: opts.batch * 3 * c.imageSize * c.imageSize }, () => rng.normal()),
    'target:quality': Float32Array.from({ length: opts.batch }, () => rng.uniform()),
    'target:alignment': Float32Array.from({ length: opts.batch }, () => rng.uniform()),
  };
  const optimizer = adam({ lr: Number(o.lr) });
  const data = new Map([...params].map(([k, v]) => [k, v.data]));
  const step = async (): Promise<void> => {
    for (const name of compiled.inputs.keys()) if (name.startsWith(PARAM_PREFIX)) feeds[name] = data.get(name.slice(PARAM_PREFIX.length))!;
    const res = await compiled.run(feeds);
    const grads = new Map([...data].map(([k, v]) => [k, (res[`grad:${k}`]?.data as Float32Array | undefined) ?? new Float32Array(v.length)]));
    optimizer.step(data, grads);
  };
  const t = await timeIt(step, opts.warmup, opts.iters);
  await compiled.release();
  return { fu_train_img_s: opts.batch / t.median, fu_s: t.seconds };
}
