/**
 * A method is a declaration: its options with the paper's settings as defaults, its trainable
 * parameters, the graph from image to score, its loss, and how it wants images prepared. The training
 * loop, the scorer and the evaluation protocol are shared and read these declarations.
 */
import * as G from '../graph/graph.js';
import { type Value } from '../graph/graph.js';
import { type ClipWeights } from '../clip/weights.js';
import { type ClipTokenizer } from '../clip/tokenizer.js';
import { type BuildContext, type ParamSet } from '../prompts/context.js';
import { type Rng } from '../util/rng.js';
import { type WindowPlacement } from '../data/preprocess.js';

export interface MethodInfo {
  name: string;
  description: string;
  lowerBetter: boolean;
  scoreRange: [number, number];
  trainable: boolean;
  /** the backbone the paper uses, as a hub repo id */
  defaultModel: string;
}

/** Options every method has: training and image preparation (the paper's values as defaults). */
export interface CommonOptions {
  optimizer: 'sgd' | 'adam' | 'adamw';
  lr: number;
  momentum: number;
  weightDecay: number;
  batchSize: number;
  epochs: number;
  /** warm-up epochs at `warmupLr` before the cosine schedule; schedule 'constant' ignores both */
  schedule: 'cosine' | 'constant';
  warmupEpochs: number;
  warmupLr: number;
  /** when the schedule moves: at every optimiser step (decaying to 0), or once per epoch as Dassl does */
  lrStep: 'step' | 'epoch';
  /** drop the last partial batch of an epoch (Dassl's training loader does) */
  dropLast: boolean;
  /** stop after this many epochs without a better validation figure (0: never) */
  patience: number;
  /** clip the gradient norm (0: off) */
  gradClip: number;
  /** training augmentation */
  augment: 'random-resized-crop+flip' | 'crop+flip' | 'none';
  /** test views: one resized centre view, or every crop of the unresized image at a stride */
  testViews: 'resize' | 'sliding';
  stride: number;
  /** where sliding windows go: from the top-left corner at `stride` (nn.Unfold, Fu's code) or spread edge to edge */
  windows: WindowPlacement;
  normalize: 'clip' | 'imagenet';
  /** the quality loss: the papers use MSE; L1, PLCC and the fidelity ranking loss are offered */
  qualityLoss: 'mse' | 'l1' | 'plcc' | 'fidelity';
}

export type Options = CommonOptions & Record<string, unknown>;

/** What a method's forward returns per image. */
export interface Predictions {
  /** the quality score [B] */
  score: Value;
  /** Fu's alignment score [B] */
  alignment?: Value;
  /** MP-IQE's distortion-class probabilities [B, K] */
  distortionProbs?: Value;
}

/** Targets fed to the training graph: quality scaled as the method wants, and optional alignment. */
export interface Targets {
  quality: Value;
  alignment?: Value;
  /** one-hot distortion class [B, K] and a 0/1 mask [B] of the images that have one (MP-IQE) */
  distortion?: { onehot: Value; mask: Value };
}

export interface Method {
  info: MethodInfo;
  defaults: Options;
  /**
   * 'pixels': the image goes through the encoder inside the method's graph (prompts inside the encoder);
   * 'features': the method reads frozen image embeddings, which can be computed once and cached.
   */
  imageInput: 'pixels' | 'features';
  /** the targets the loss needs besides quality */
  usesAlignment?: (o: Options) => boolean;
  /** distortion classes the method can learn from, and how a dataset's distortion name maps to one */
  distortionClasses?: readonly string[];
  distortionClass?: (name: string) => number;
  init(weights: ClipWeights, tokenizer: ClipTokenizer, o: Options, rng: Rng): ParamSet;
  /**
   * The image-independent part (text features from the prompts), computed once per training step and
   * once per model when scoring. Returns named values; `forward` receives them (as graph inputs when
   * scoring).
   */
  text(ctx: BuildContext, o: Options): Record<string, Value>;
  forward(ctx: BuildContext, o: Options, image: Value, text: Record<string, Value>): Predictions;
  loss(ctx: BuildContext, o: Options, pred: Predictions, targets: Targets): Value;
  /** maps a dataset MOS (higher = better, scaled to [0, 1]) to the training target */
  target(unit: number, range: [number, number]): number;
  /** named option sets (e.g. the authors' published set-ups), chosen with the option `preset=NAME` */
  presets?: Record<string, { description: string; options: Record<string, unknown> }>;
  /** checks the options together, with an error naming the option, before any work starts */
  validate?(o: Options): void;
}

export const COMMON_DEFAULTS: CommonOptions = {
  optimizer: 'adam', lr: 1e-4, momentum: 0.9, weightDecay: 0, batchSize: 32, epochs: 50, schedule: 'constant',
  warmupEpochs: 0, warmupLr: 0, lrStep: 'step', dropLast: false, patience: 0, gradClip: 0, augment: 'none', testViews: 'resize', stride: 64, windows: 'unfold', normalize: 'clip',
  qualityLoss: 'mse',
};

/** The common options that take one of a few words, checked when options are parsed. */
const CHOICES: Partial<Record<keyof CommonOptions, readonly string[]>> = {
  windows: ['unfold', 'edge-to-edge'],
  lrStep: ['step', 'epoch'],
};

/** Softmax over (exp(logit_scale) · cosine) against class texts: [B, C] probabilities. */
export function classProbs(weights: ClipWeights, image: Value, text: Value): Value {
  const logits = G.mul(G.matmul(G.l2Normalize(image), G.transposeLast(G.l2Normalize(text))), Math.exp(weights.logitScale));
  return G.softmax(logits, -1);
}

/** The probability of the first class: [B]. */
export function firstClass(probs: Value): Value {
  return G.reshape(G.slice(probs, 1, 0, 1), [probs.shape[0]!]);
}

export function mse(a: Value, b: Value): Value {
  const d = G.sub(a, b);
  return G.meanAll(G.mul(d, d));
}

export function l1(a: Value, b: Value): Value {
  return G.meanAll(G.abs(G.sub(a, b)));
}

/** 1 - Pearson correlation of a batch, as a loss (needs batch ≥ 2). */
export function plccLoss(a: Value, b: Value): Value {
  const ca = G.sub(a, G.reduceMean(a, [0], true));
  const cb = G.sub(b, G.reduceMean(b, [0], true));
  const num = G.sumAll(G.mul(ca, cb));
  const den = G.sqrt(G.add(G.mul(G.sumAll(G.mul(ca, ca)), G.sumAll(G.mul(cb, cb))), 1e-8));
  return G.sub(a.graph.scalar(1, a.dtype), G.div(num, den));
}

/**
 * The fidelity ranking loss over every pair in a batch: p = Φ((a_i − a_j)/√2) against the target order
 * p* (1, 0.5, 0), loss = 1 − √(p p*) − √((1−p)(1−p*)). Φ is approximated with a logistic, as LIQE does.
 */
export function fidelityLoss(a: Value, b: Value): Value {
  const n = a.shape[0]!;
  const col = (v: Value): Value => G.reshape(v, [n, 1]);
  const row = (v: Value): Value => G.reshape(v, [1, n]);
  const p = G.sigmoid(G.mul(G.sub(col(a), row(a)), 1.702 / Math.SQRT2));
  const diff = G.sub(col(b), row(b));
  const target = G.add(G.mul(G.sign(diff), 0.5), 0.5);
  const eps = 1e-8;
  const one = a.graph.scalar(1, a.dtype);
  const f = G.sub(G.sub(one, G.sqrt(G.add(G.mul(p, target), eps))), G.sqrt(G.add(G.mul(G.sub(one, p), G.sub(one, target)), eps)));
  return G.meanAll(f);
}

/** The quality loss the options name, between predictions and targets [B]. */
export function qualityLoss(o: Options, pred: Value, target: Value): Value {
  switch (o.qualityLoss) {
    case 'mse': return mse(pred, target);
    case 'l1': return l1(pred, target);
    case 'plcc': return plccLoss(pred, target);
    case 'fidelity': return fidelityLoss(pred, target);
    default: throw new Error(`unknown qualityLoss "${String(o.qualityLoss)}" (mse, l1, plcc, fidelity)`);
  }
}

/** Options from `key=value` strings: numbers and booleans parsed, unknown keys refused, `preset=NAME` expanded, then validated. */
export function parseOptions(method: Method, pairs: Record<string, unknown>): Options {
  const out: Options = { ...method.defaults };
  // a preset's values first, so that options given beside it override them
  const { preset, ...rest } = pairs;
  if (preset !== undefined) {
    const found = method.presets?.[String(preset)];
    if (!found) throw new Error(`${method.info.name} has no preset "${String(preset)}" (presets: ${Object.keys(method.presets ?? {}).join(', ') || 'none'})`);
    Object.assign(out, found.options);
  }
  for (const [k, v] of Object.entries(rest)) {
    if (!(k in method.defaults)) throw new Error(`${method.info.name} has no option "${k}" (options: ${Object.keys(method.defaults).join(', ')})`);
    const def = method.defaults[k];
    if (typeof v !== 'string') { out[k] = v; continue; }
    if (typeof def === 'number') {
      const n = Number(v);
      if (!Number.isFinite(n)) throw new Error(`${method.info.name}: option ${k} must be a number, got "${v}"`);
      out[k] = n;
    } else if (typeof def === 'boolean') {
      if (v !== 'true' && v !== 'false') throw new Error(`${method.info.name}: option ${k} must be true or false, got "${v}"`);
      out[k] = v === 'true';
    } else if (Array.isArray(def)) {
      out[k] = v.split('|');
    } else {
      out[k] = v;
    }
  }
  for (const [k, allowed] of Object.entries(CHOICES)) {
    if (!allowed.includes(String(out[k]))) throw new Error(`${method.info.name}: option ${k} = "${String(out[k])}", must be one of ${allowed.join(', ')}`);
  }
  method.validate?.(out);
  return out;
}
