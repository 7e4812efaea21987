/**
 * One training step of the `fu` method (both prompt learners, both vision passes, both text encoders,
 * loss, gradients and the Adam update in one graph, the state kept where it runs, as the trainer does) on
 * full-size random weights, for the benchmark.
 */
import { type ClipWeights } from '../clip/weights.js';
import { ClipTokenizer } from '../clip/tokenizer.js';
import { type RuntimeOptions } from '../graph/runtime.js';
import { getMethod } from '../methods/index.js';
import { enabledAuxiliary, parseOptions } from '../methods/method.js';
import { TrainStep, setUp } from '../methods/graphs.js';
import { adam } from '../train/optim.js';
import { ResidentTraining } from '../train/resident.js';
import { Rng } from '../util/rng.js';
import { timeIt } from './timing.js';
import { warmupRuns, withPlacement } from './profile.js';
import { type PlacementDetail } from '../graph/placement.js';

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
): Promise<{ fu_train_img_s: number; fu_s: number[]; placement_fu?: PlacementDetail }> {
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
  const { result: t, placement: where } = await withPlacement(placement, opts.runtime, async (runtime) => {
    const optimizer = adam({ lr: o.lr });
    const step = await TrainStep.create(setup, params, opts.batch, auxiliary, runtime, optimizer.update(o.gradClip));
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
  return { fu_train_img_s: opts.batch / t.median, fu_s: t.seconds, ...(where ? { placement_fu: where } : {}) };
}
