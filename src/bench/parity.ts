/**
 * Every method on two providers: the figures that tell whether a GPU provider computes what the CPU does. For
 * each method, its scores on a few images (the scorer's whole path: text graph, views, score graph, the views'
 * combination) and, for a trainable one, the loss and every gradient of one training step, on parameters drawn
 * from a seed and a batch drawn from another, so that two runs (two providers, two processes) see the same
 * inputs. `compareOutputs` gives the differences the GPU checks bound: scores absolute, the loss relative to
 * itself, each gradient tensor's largest difference relative to that tensor's largest magnitude. Training as the
 * trainer runs it (the optimiser's update in the graph, the state kept on the device) is checked by its losses over
 * a few steps: each after the first depends on the updates before it. Its parameters are not compared: Adam moves
 * a parameter whose gradient is about zero by about ±lr whatever the sign a rounding gave that gradient.
 */
import { type RuntimeOptions } from '../graph/runtime.js';
import { type RgbImage } from '../data/rgb.js';
import { type Method } from '../methods/method.js';
import { parseOptions } from '../methods/method.js';
import { type Backbone, type MethodSetup, type TrainBatch, Scorer, TrainStep, setUp } from '../methods/graphs.js';
import { optimizerFor } from '../train/optim.js';
import { ResidentTraining } from '../train/resident.js';
import { type ParamSet } from '../prompts/context.js';
import { Rng } from '../util/rng.js';

/** Scores within this of the CPU's (absolute): the CLIP parity bound of the reference tests. */
export const SCORE_BOUND = 1e-4;
/** The loss and each gradient tensor within this of the CPU's, relative (a gradient: to the tensor's largest magnitude). */
export const GRADIENT_BOUND = 1e-3;

export interface MethodOutputs {
  method: string;
  /** the backbone it ran on, as given */
  model: string;
  scores: number[];
  /** one training step (trainable methods): the loss and each trained parameter's gradient */
  step?: { loss: number; grads: Record<string, number[]> };
  /** a few steps with the update in the graph (trainable methods): their losses, and whether the state stayed in GPU buffers */
  resident?: { losses: number[]; onGpu: boolean };
}

/** Steps of the resident training check. */
const RESIDENT_STEPS = 3;

export interface ParityOptions {
  methods: readonly Method[];
  /** the backbone a method runs on */
  backbone: (method: Method) => Promise<Backbone>;
  images: readonly RgbImage[];
  runtime: RuntimeOptions;
  /** images per graph run and per training step (default 2) */
  batch?: number;
  /**
   * Multiplies every parameter value by this (for a negative control: parameters 1% off must give results that
   * differ beyond the bounds); default 1.
   */
  perturb?: number;
}

/** A training batch drawn from `seed`: random images (or frozen features), quality targets and every auxiliary target (one-hot where it has classes). */
export function randomTrainBatch(method: Method, b: Backbone, batch: number, seed: number): TrainBatch {
  const rng = new Rng(seed);
  const c = b.weights.config;
  const perImage = method.imageInput === 'features' ? c.embedDim : 3 * c.imageSize * c.imageSize;
  return {
    image: Float32Array.from({ length: batch * perImage }, () => rng.normal()),
    quality: Float32Array.from({ length: batch }, () => rng.uniform()),
    auxiliary: Object.fromEntries(
      (method.auxiliary ?? []).map((t) => {
        const values = new Float32Array(batch * t.size);
        for (let i = 0; i < batch; i++) {
          if (t.size === 1) values[i] = rng.uniform();
          else values[i * t.size + rng.int(t.size)] = 1;
        }
        return [t.name, { values, mask: new Float32Array(batch).fill(1) }];
      }),
    ),
  };
}

/** Each method's scores on `images` and, where it trains, one step's loss and gradients, on `runtime`'s provider. */
export async function methodOutputs(o: ParityOptions): Promise<MethodOutputs[]> {
  const batch = o.batch ?? 2;
  const out: MethodOutputs[] = [];
  for (const method of o.methods) {
    const backbone = await o.backbone(method);
    const setup = setUp(method, parseOptions(method, {}), backbone);
    const params: ParamSet = setup.model.init(new Rng(5));
    const perturb = o.perturb ?? 1;
    if (perturb !== 1) for (const [name, p] of params) params.set(name, { ...p, data: p.data.map((v) => v * perturb) });
    const scorer = new Scorer(setup, params, o.runtime, batch);
    const scores = await scorer.scoreImages(o.images);
    await scorer.close();
    const result: MethodOutputs = { method: method.info.name, model: backbone.model, scores };
    if (method.info.trainable) {
      const step = await TrainStep.create(setup, params, batch, method.auxiliary ?? [], o.runtime);
      // dropout masks are drawn in JavaScript from this seed: the same on every provider
      const r = await step.run(randomTrainBatch(method, backbone, batch, 9), params, new Rng(0));
      await step.release();
      result.step = { loss: r.loss, grads: Object.fromEntries(step.trained.map((n) => [n, Array.from(r.grads.get(n)!)])) };
      result.resident = await residentLosses(setup, params, randomTrainBatch(method, backbone, batch, 9), batch, o.runtime);
    }
    out.push(result);
  }
  return out;
}

/** The losses of a few steps as the trainer takes them (its optimiser, the update in the graph, the state on the device). */
async function residentLosses(
  setup: MethodSetup,
  params: ParamSet,
  data: TrainBatch,
  batch: number,
  runtime: RuntimeOptions,
): Promise<{ losses: number[]; onGpu: boolean }> {
  const optimizer = optimizerFor(setup.options);
  const step = await TrainStep.create(
    setup,
    params,
    batch,
    setup.method.auxiliary ?? [],
    runtime,
    optimizer.update(setup.options.gradClip),
  );
  const resident = ResidentTraining.create(step, params, optimizer, runtime);
  try {
    const losses: number[] = [];
    for (let k = 0; k < RESIDENT_STEPS; k++) losses.push(await resident.step(step, data, new Rng(k)));
    return { losses, onGpu: resident.onGpu };
  } finally {
    resident.dispose();
    await step.release();
  }
}

export interface MethodDifference {
  method: string;
  /** the largest absolute difference of a score */
  score: number;
  /** |loss − loss₀| / |loss₀| */
  loss?: number;
  /** the largest over the trained tensors of max|g − g₀| / max|g₀| */
  gradient?: number;
  /** the tensor where that is */
  worstGradient?: string;
  /** the largest |loss − loss₀| / |loss₀| over the resident training steps */
  residentLoss?: number;
  /** whether any score, loss or gradient value differs at all (the two runs did not compute bit for bit the same) */
  anyDifference: boolean;
}

/** How far `b` is from `a` (the reference, e.g. the CPU), method by method, in the terms of the bounds. */
export function compareOutputs(a: readonly MethodOutputs[], b: readonly MethodOutputs[]): MethodDifference[] {
  return a.map((x) => {
    const y = b.find((m) => m.method === x.method);
    if (!y) throw new Error(`compareOutputs: ${x.method} is missing from the second run`);
    if (y.scores.length !== x.scores.length)
      throw new Error(`compareOutputs: ${x.method} has ${x.scores.length} scores, then ${y.scores.length}`);
    let any = false;
    let score = 0;
    x.scores.forEach((s, i) => {
      const d = Math.abs(s - y.scores[i]!);
      any ||= s !== y.scores[i];
      score = Math.max(score, Number.isNaN(d) ? Infinity : d);
    });
    const diff: MethodDifference = { method: x.method, score, anyDifference: any };
    if (x.step) {
      if (!y.step) throw new Error(`compareOutputs: ${x.method} has no training step in the second run`);
      diff.loss = Math.abs(x.step.loss - y.step.loss) / Math.abs(x.step.loss);
      if (!Number.isFinite(diff.loss)) diff.loss = x.step.loss === y.step.loss ? 0 : Infinity;
      any ||= x.step.loss !== y.step.loss;
      diff.gradient = 0;
      for (const [name, g] of Object.entries(x.step.grads)) {
        const h = y.step.grads[name];
        if (!h || h.length !== g.length)
          throw new Error(`compareOutputs: ${x.method}: the gradient of ${name} differs in size or is missing`);
        let scale = 0;
        let worst = 0;
        g.forEach((v, i) => {
          scale = Math.max(scale, Math.abs(v));
          const d = Math.abs(v - h[i]!);
          worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
          any ||= v !== h[i];
        });
        const rel = scale > 0 ? worst / scale : worst > 0 ? Infinity : 0;
        if (rel >= diff.gradient) {
          diff.gradient = rel;
          diff.worstGradient = name;
        }
      }
      if (x.resident) {
        if (!y.resident || y.resident.losses.length !== x.resident.losses.length)
          throw new Error(`compareOutputs: ${x.method}: the resident training steps differ in number or are missing`);
        diff.residentLoss = Math.max(
          ...x.resident.losses.map((l, i) => {
            const d = Math.abs(l - y.resident!.losses[i]!) / Math.abs(l);
            return Number.isNaN(d) ? Infinity : d;
          }),
        );
      }
      diff.anyDifference = any;
    }
    return diff;
  });
}

/** Whether a difference is within the bounds. */
export function withinBounds(d: MethodDifference): boolean {
  return (
    d.score <= SCORE_BOUND &&
    (d.loss ?? 0) <= GRADIENT_BOUND &&
    (d.gradient ?? 0) <= GRADIENT_BOUND &&
    (d.residentLoss ?? 0) <= GRADIENT_BOUND
  );
}
