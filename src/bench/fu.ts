/**
 * One training step of the `fu` method (both prompt learners, both vision passes, both text encoders,
 * loss, gradients and the Adam update in one graph, the state kept where it runs, as the trainer does) on
 * full-size random weights, for the benchmark.
 */
import { type ClipWeights } from '../clip/weights.js';
import { type ClipConfig, textFlops, visionFlops } from '../clip/config.js';
import { ClipTokenizer } from '../clip/tokenizer.js';
import { type RuntimeOptions } from '../graph/runtime.js';
import { getMethod } from '../methods/index.js';
import { fu } from '../methods/fu.js';
import { enabledAuxiliary, parseOptions } from '../methods/method.js';
import { TrainStep, setUp } from '../methods/graphs.js';
import { adam } from '../train/optim.js';
import { ResidentTraining } from '../train/resident.js';
import { Rng } from '../util/rng.js';
import { timeIt } from './timing.js';
import { warmupRuns, withPlacement } from './profile.js';
import { type PlacementDetail } from '../graph/placement.js';

/** The class prompts of each of Fu's two text encoders: "good/bad photo", "aligned/misaligned photo". */
const FU_CLASSES = 2;

/**
 * Multiply-accumulates ×2 of one Fu training step on `batch` images (matrix products only, as `visionFlops`), a
 * backward to activations counted as one more forward, as the `train` mode counts it (the frozen weights get no
 * gradient):
 * - two vision passes per image (the auxiliary's prompts, the target's fused ones), each with `nVisual` prompt
 *   tokens, forward + backward: 2 × 2 × visionFlops(c, nVisual);
 * - once per step, whatever the batch: both text encoders on their class prompts, forward + backward to the deep
 *   text prompts: 2 × FU_CLASSES × 2 × textFlops(c);
 * - the target's `depth` fusion Linears (2W → W on `nVisual` tokens): forward, and backward to both their weights
 *   and their inputs, three products each.
 * Not counted: the logits (image · text features), normalisations, softmax, losses and Adam (element-wise or tiny).
 */
export function fuStepFlops(c: ClipConfig, batch: number, o: { nVisual: number; depth: number }): number {
  const w = c.visionWidth;
  const vision = 2 * 2 * visionFlops(c, o.nVisual);
  const text = 2 * FU_CLASSES * 2 * textFlops(c);
  const fusion = o.depth * 3 * (2 * o.nVisual * 2 * w * w);
  return batch * vision + text + fusion;
}

/** Fu's default prompt shapes, which `benchFu` trains. */
export function fuDefaults(): { nVisual: number; depth: number } {
  const { nVisual, depth } = parseOptions(fu, {});
  return { nVisual, depth };
}

export async function benchFu(
  weights: ClipWeights,
  opts: {
    batch: number;
    warmup: number;
    iters: number;
    runtime: RuntimeOptions;
    /** profile the first (untimed) run of each graph of the step to tell which provider ran its nodes */
    placement?: boolean;
  },
): Promise<{ fu_train_img_s: number; fu_gflop_s: number; fu_s: number[]; placement_fu?: PlacementDetail }> {
  const method = getMethod('fu');
  const o = parseOptions(method, {});
  const setup = setUp(method, o, { weights, tokenizer: ClipTokenizer.default(), model: 'random' });
  const rng = new Rng(2);
  const params = setup.model.init(rng);
  // the alignment task is on by default: both vision passes and both text encoders
  const auxiliary = enabledAuxiliary(method, o, []);
  const c = weights.config;
  const random = (n: number, draw: () => number): Float32Array => Float32Array.from({ length: n }, draw);
  const batch = {
    image: random(opts.batch * 3 * c.imageSize * c.imageSize, () => rng.normal()),
    quality: random(opts.batch, () => rng.uniform()),
    auxiliary: Object.fromEntries(
      auxiliary.map((t) => [
        t.name,
        { values: random(opts.batch * t.size, () => rng.uniform()), mask: new Float32Array(opts.batch).fill(1) },
      ]),
    ),
  };
  const placement = opts.placement ?? false;
  let flops = 0;
  const { result: t, placement: where } = await withPlacement(placement, opts.runtime, async (runtime) => {
    const optimizer = adam({ lr: o.lr });
    const step = await TrainStep.create(setup, params, opts.batch, auxiliary, runtime, optimizer.update(o.gradClip));
    flops = step.flops;
    const resident = ResidentTraining.create(step, params, optimizer, runtime);
    try {
      return await timeIt(
        async () => {
          await resident.step(step, batch, rng);
        },
        warmupRuns(opts.warmup, placement),
        opts.iters,
      );
    } finally {
      resident.dispose();
      await step.release();
    }
  });
  return {
    fu_train_img_s: opts.batch / t.median,
    // the work this graph does: its text encoders stop at the prompts' last end-of-text (see textEncoder), where
    // the peer's, as the authors', run all 77 positions (fuStepFlops)
    fu_gflop_s: flops / t.median / 1e9,
    fu_s: t.seconds,
    ...(where ? { placement_fu: where } : {}),
  };
}
