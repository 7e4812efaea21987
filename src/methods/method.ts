/**
 * The method contract. A method declares its options (one typed schema), its auxiliary training targets,
 * how a dataset score becomes its target, and `build`: for one set of options and one CLIP, the model
 * (its prompt learners, made once) that initialises the trainable parameters and builds the graph from
 * image to score. The training loop, the scorer and the evaluation protocol are shared; they read these
 * declarations and know no method's targets by name.
 */
import * as G from '../graph/graph.js';
import { type Value } from '../graph/graph.js';
import { type ClipWeights } from '../clip/weights.js';
import { type ClipTokenizer } from '../clip/tokenizer.js';
import { type TensorFile } from '../clip/tensor-file.js';
import { type ResNetOptions } from '../clip/resnet.js';
import { type BuildContext, type ParamSet } from '../prompts/context.js';
import { type Rng } from '../util/rng.js';
import { type DatasetInfo, type DatasetItem } from '../data/datasets.js';
import { type RgbImage } from '../data/rgb.js';
import { type CommonOptions, type Schema, readOptions } from './options.js';
import { type View } from './views.js';

export type { CommonOptions } from './options.js';

export interface MethodInfo {
  name: string;
  description: string;
  lowerBetter: boolean;
  scoreRange: [number, number];
  trainable: boolean;
  /** the backbone the paper uses, as a hub repo id */
  defaultModel: string;
}

/** What a model's forward returns for a batch of images. */
export interface Predictions {
  /** the quality score [B] */
  score: Value;
  /** one prediction per auxiliary target the graph was asked for (`ctx.auxiliary`), by the target's name */
  auxiliary?: Record<string, Value>;
  /** per-view values [B, K] for the model's `combineViews` (e.g. logits, which some methods average over views) */
  perView?: Value;
}

/**
 * A second thing a method learns from besides quality (e.g. how well an image matches its prompt, or the
 * kind of degradation it shows): read from each training item, fed to the training graph, and compared to the model's prediction
 * of the same name by its own loss term, added to the quality loss.
 */
export interface AuxiliaryTarget<O extends CommonOptions = CommonOptions> {
  /** the key of the model's prediction in `Predictions.auxiliary` */
  name: string;
  /** values per image: 1 for a score, K for a one-hot class */
  size: number;
  /** whether a run uses it, from its options and its training items (e.g. a weight above 0 and items that have it) */
  enabled(o: O, train: readonly DatasetItem[]): boolean;
  /** the item's target (`size` values), or undefined when it has none */
  read(item: DatasetItem, info: DatasetInfo): number | Float32Array | undefined;
  /**
   * An item without it: 'mask' leaves the item out of this term (the loss gets a 0/1 mask [B]); 'refuse'
   * stops the run before its first step, saying `why` the method needs it.
   */
  missing: { kind: 'mask' } | { kind: 'refuse'; why: string };
  /** the term added to the quality loss */
  loss(o: O, predicted: Value, target: Value, mask: Value | undefined): Value;
}

/** A method for one set of options and one CLIP. */
export interface MethodModel {
  /** the trainable parameters, initialised */
  init(rng: Rng): ParamSet;
  /**
   * The image-independent part (text features from the prompts), computed once per training step and
   * once per model when scoring. Returns named values; `forward` receives them (as graph inputs when scoring).
   */
  text(ctx: BuildContext): Record<string, Value>;
  /** `image` is pixels [B, 3, S, S] or frozen image embeddings [B, E] as `imageInput` says */
  forward(ctx: BuildContext, image: Value, text: Record<string, Value>): Predictions;
  /**
   * An image's score from the `perView` rows of its views, where the mean of the view scores is not it
   * (LIQE averages logits before its softmax). Without it the scorer averages the scores.
   */
  combineViews?(perView: readonly Float32Array[]): number;
}

export interface Method<O extends CommonOptions = CommonOptions> {
  info: MethodInfo;
  options: Schema<O>;
  /** named option sets (e.g. the authors' published set-ups), chosen with the option `preset=NAME` */
  presets?: Record<string, { description: string; options: Partial<O> }>;
  /** checks the options together, with an error naming the option, before any work starts (each alone is checked by the schema) */
  validate?(o: O): void;
  /**
   * 'pixels': the image goes through the encoder inside the method's graph (prompts inside the encoder);
   * 'features': the method reads frozen image embeddings, which can be computed once and cached.
   */
  imageInput: 'pixels' | 'features';
  /** how the frozen image encoder reads images, for a 'features' method (e.g. a ResNet's positional embedding) */
  imageEncoder?(o: O, clip: ClipWeights): ResNetOptions;
  auxiliary?: readonly AuxiliaryTarget<O>[];
  /**
   * The views an image is scored on ([3, S, S] tensors), where the method has its own rule instead of the
   * common test views; throws `ImageRefusedError` (src/methods/views.ts) for an image it cannot score.
   */
  views?(img: RgbImage, o: O, size: number): View[];
  /**
   * What a released file of the method's authors (or pyiqa's) holds, when it is given as the checkpoint:
   * a whole fine-tuned CLIP that replaces the backbone (LIQE), or the learned parameters, read from the
   * file with the options they imply (CLIP-IQA+'s prompts).
   */
  released?: ReleasedFile<O>;
  /** maps a dataset MOS (higher = better, scaled to [0, 1]) to the training target */
  target(unit: number, range: [number, number]): number;
  build(o: O, clip: { weights: ClipWeights; tokenizer: ClipTokenizer }): MethodModel;
}

export type ReleasedFile<O extends CommonOptions = CommonOptions> =
  | { holds: 'backbone'; describe: string }
  | {
      holds: 'parameters';
      describe: string;
      /**
       * the parameters, and the options they need; errors name `file.path`. `unexpected`: the file's tensors
       * that the released file does not have (by their names in the file), refused unless allowed
       */
      read(file: TensorFile, clip: ClipWeights): { params: ParamSet; options: Partial<O>; unexpected?: string[] };
    };

/** The options of some method: the common ones typed, the method's own read by the method itself. */
export type Options = CommonOptions;

/** Options from `key: value` pairs (strings from the command line, or JSON values), `preset=NAME` expanded, then validated together. */
export function parseOptions<O extends CommonOptions>(method: Method<O>, given: Readonly<Record<string, unknown>>): O {
  const o = readOptions(method.info.name, method.options, given, method.presets);
  method.validate?.(o);
  return o;
}

/** The auxiliary targets a run with these options and training items uses. */
export function enabledAuxiliary<O extends CommonOptions>(method: Method<O>, o: O, train: readonly DatasetItem[]): AuxiliaryTarget<O>[] {
  return (method.auxiliary ?? []).filter((t) => t.enabled(o, train));
}

/** The training loss: the quality loss the options name, plus each auxiliary target's term. */
export function trainingLoss(
  o: CommonOptions,
  pred: Predictions,
  quality: Value,
  auxiliary: ReadonlyArray<{ target: AuxiliaryTarget; value: Value; mask?: Value }>,
): Value {
  let loss = qualityLoss(o, pred.score, quality);
  for (const { target, value, mask } of auxiliary) {
    const p = pred.auxiliary?.[target.name];
    if (!p) throw new Error(`the model predicted no "${target.name}", which its auxiliary target needs`);
    loss = G.add(loss, target.loss(o, p, value, mask));
  }
  return loss;
}

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
export function qualityLoss(o: CommonOptions, pred: Value, target: Value): Value {
  switch (o.qualityLoss) {
    case 'mse':
      return mse(pred, target);
    case 'l1':
      return l1(pred, target);
    case 'plcc':
      return plccLoss(pred, target);
    case 'fidelity':
      return fidelityLoss(pred, target);
    default:
      throw new Error(`unknown qualityLoss "${String(o.qualityLoss)}" (mse, l1, plcc, fidelity)`);
  }
}
