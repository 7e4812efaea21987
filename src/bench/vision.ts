/**
 * The engine benchmark: full-size CLIP image encoders with random weights, timed forward and
 * forward+backward (gradient with respect to deep visual prompts at every layer).
 */
import * as G from '../graph/graph.js';
import { Graph } from '../graph/graph.js';
import { gradients } from '../graph/grad.js';
import { CompiledGraph, type RuntimeOptions } from '../graph/runtime.js';
import { type ClipConfig, visionFlops } from '../clip/config.js';
import { type ClipWeights } from '../clip/weights.js';
import { WeightBank, visionEncoder, imageFeatureGraph } from '../clip/encoders.js';
import { normalInit } from '../prompts/context.js';
import { Rng } from '../util/rng.js';
import { timeIt } from './timing.js';
import { warmupRuns, withPlacement } from './profile.js';
import { type PlacementDetail } from '../graph/placement.js';

/**
 * Forward + backward to deep visual prompts (n tokens at the input and at every later layer), with a
 * CLIP-IQA-like loss: softmax over cosine logits against two fixed text features, MSE to targets. A
 * ResNet takes no prompt tokens: its backward goes to the pixels (through every conv and pool).
 */
export function trainGraph(weights: ClipWeights, batch: number, nPrompts: number): Graph {
  const c = weights.config;
  const g = new Graph('bench_train');
  const px = g.input('pixels', [batch, 3, c.imageSize, c.imageSize]);
  const target = g.input('target', [batch]);
  const prompts = benchPrompts(c).map((_, i) => g.input(`prompt_${i}`, [nPrompts, c.visionWidth]));
  const hooks = c.resnet ? {} : { inputPrompts: prompts[0], deepPrompts: prompts };
  const { embeds } = visionEncoder(new WeightBank(g), weights, px, hooks);
  const rng = new Rng(7);
  const text = g.constant(normalInit(rng, [2 * c.embedDim], 1).data, [2, c.embedDim]);
  const logits = G.mul(G.matmul(G.l2Normalize(embeds), G.transposeLast(G.l2Normalize(text))), 100);
  const p = G.reshape(G.slice(G.softmax(logits, -1), 1, 0, 1), [batch]);
  const d = G.sub(p, target);
  const loss = G.meanAll(G.mul(d, d));
  const grads = gradients(loss, c.resnet ? [px] : prompts);
  g.output('loss', loss);
  grads.forEach((gr, i) => g.output(`grad_${i}`, gr));
  return g;
}

/** One prompt set per transformer layer; none for a ResNet. */
function benchPrompts(c: ClipConfig): number[] {
  return Array.from({ length: c.resnet ? 0 : c.visionLayers }, (_, i) => i);
}

export interface VisionBenchResult {
  forward_img_s: number;
  train_img_s: number;
  forward_gflop_s: number;
  train_gflop_s: number;
  forward_s: number[];
  train_s: number[];
  /** where ONNX Runtime ran each graph's nodes (with `placement`) */
  placement_forward: PlacementDetail;
  placement_train: PlacementDetail;
}

export async function benchVision(
  weights: ClipWeights,
  opts: {
    batch: number;
    prompts: number;
    warmup: number;
    iters: number;
    runtime: RuntimeOptions;
    modes: Set<string>;
    /** profile each graph's first (untimed) run to tell which provider ran its nodes */
    placement?: boolean;
  },
): Promise<Partial<VisionBenchResult>> {
  const c: ClipConfig = weights.config;
  const rng = new Rng(1);
  const pixels = normalInit(rng, [opts.batch * 3 * c.imageSize * c.imageSize], 1).data;
  const placement = opts.placement ?? false;
  const warmup = warmupRuns(opts.warmup, placement);
  const out: Partial<VisionBenchResult> = {};
  if (opts.modes.has('forward')) {
    const { result: t, placement: where } = await withPlacement(placement, opts.runtime, async (runtime) => {
      const fwd = await CompiledGraph.create(imageFeatureGraph(weights, opts.batch, 'bench_forward'), runtime);
      try {
        return await timeIt(() => fwd.run({ pixels }), warmup, opts.iters);
      } finally {
        await fwd.release();
      }
    });
    out.forward_img_s = opts.batch / t.median;
    out.forward_gflop_s = (visionFlops(c) * opts.batch) / t.median / 1e9;
    out.forward_s = t.seconds;
    if (where) out.placement_forward = where;
  }
  if (opts.modes.has('train')) {
    const feeds: Record<string, Float32Array> = { pixels, target: Float32Array.from({ length: opts.batch }, () => rng.uniform()) };
    for (let i = 0; i < benchPrompts(c).length; i++) feeds[`prompt_${i}`] = normalInit(rng, [opts.prompts * c.visionWidth]).data;
    const { result: t, placement: where } = await withPlacement(placement, opts.runtime, async (runtime) => {
      const train = await CompiledGraph.create(trainGraph(weights, opts.batch, opts.prompts), runtime);
      try {
        return await timeIt(() => train.run(feeds), warmup, opts.iters);
      } finally {
        await train.release();
      }
    });
    out.train_img_s = opts.batch / t.median;
    // backward to activations only is about one more forward: report the forward-equivalent work ×2
    out.train_gflop_s = (2 * visionFlops(c, opts.prompts) * opts.batch) / t.median / 1e9;
    out.train_s = t.seconds;
    if (where) out.placement_train = where;
  }
  return out;
}
