/**
 * Assembles a method's graphs: the text graph (image-independent features, once per model), the score
 * graph (pixels → score), the frozen feature graph (pixels → embeddings, for 'features' methods) and
 * the training graph (inputs → loss and the gradient of every trainable parameter).
 */
import { Graph, type Value } from '../graph/graph.js';
import { gradients } from '../graph/grad.js';
import { WeightBank, visionEncoder } from '../clip/encoders.js';
import { type ClipWeights } from '../clip/weights.js';
import { type ClipTokenizer } from '../clip/tokenizer.js';
import { type BuildContext, type ParamSet, paramAccessor } from '../prompts/context.js';
import { type Method, type Options, type Targets } from './method.js';

export interface Backbone {
  weights: ClipWeights;
  tokenizer: ClipTokenizer;
  /** what the user named: a folder or a hub repo id */
  model: string;
  /** where the weights were found, whatever the working directory: a hub repo at a commit, or an absolute folder (absent for weights made in memory) */
  source?: BackboneSource;
}

export type BackboneSource = { repo: string; revision: string } | { path: string };

function context(g: Graph, b: Backbone, params: ParamSet, batch: number, training: boolean): BuildContext {
  const { param } = paramAccessor(g, params);
  return { g, bank: new WeightBank(g), weights: b.weights, tokenizer: b.tokenizer, batch, training, param };
}

function imageSize(b: Backbone): number[] {
  return [3, b.weights.config.imageSize, b.weights.config.imageSize];
}

/** Image-independent features: outputs `text:<name>`. */
export function textGraph(method: Method, o: Options, b: Backbone, params: ParamSet): Graph {
  const g = new Graph(`${method.info.name}_text`);
  const text = method.text(context(g, b, params, 0, false), o);
  for (const [k, v] of Object.entries(text)) g.output(`text:${k}`, v);
  return g;
}

/** pixels [B, 3, S, S] (+ `text:<name>` inputs) → score [B]. */
export function scoreGraph(method: Method, o: Options, b: Backbone, params: ParamSet, batch: number, textShapes: Record<string, number[]>): Graph {
  const g = new Graph(`${method.info.name}_score_b${batch}`);
  const ctx = context(g, b, params, batch, false);
  const pixels = g.input('pixels', [batch, ...imageSize(b)]);
  const text: Record<string, Value> = {};
  for (const [k, shape] of Object.entries(textShapes)) text[k] = g.input(`text:${k}`, shape);
  const image = method.imageInput === 'features' ? visionEncoder(ctx.bank, b.weights, pixels).embeds : pixels;
  g.output('score', method.forward(ctx, o, image, text).score);
  return g;
}

export interface TrainGraphInfo {
  graph: Graph;
  /** parameters that have a gradient output `grad:<name>` */
  trained: string[];
  /** dropout mask inputs to fill */
  dropout: Array<{ name: string; p: number; size: number }>;
}

/**
 * The training graph: image input ('pixels' or 'features'), targets `target:quality` (and
 * `target:alignment`, `target:distortion` + `target:distortion_mask` when asked), outputs `loss`,
 * `score` and `grad:<param>`.
 */
export function trainGraph(method: Method, o: Options, b: Backbone, params: ParamSet, batch: number, opts: { alignment: boolean; distortion: boolean }): TrainGraphInfo {
  const g = new Graph(`${method.info.name}_train_b${batch}`);
  const acc = paramAccessor(g, params);
  const ctx: BuildContext = { g, bank: new WeightBank(g), weights: b.weights, tokenizer: b.tokenizer, batch, training: true, param: acc.param };
  const image = method.imageInput === 'features'
    ? g.input('features', [batch, b.weights.config.embedDim])
    : g.input('pixels', [batch, ...imageSize(b)]);
  const targets: Targets = { quality: g.input('target:quality', [batch]) };
  if (opts.alignment) targets.alignment = g.input('target:alignment', [batch]);
  if (opts.distortion && method.distortionClasses) {
    targets.distortion = { onehot: g.input('target:distortion', [batch, method.distortionClasses.length]), mask: g.input('target:distortion_mask', [batch]) };
  }
  const text = method.text(ctx, o);
  const pred = method.forward(ctx, o, image, text);
  const loss = method.loss(ctx, o, pred, targets);
  const trained = [...acc.used.keys()];
  const grads = gradients(loss, trained.map((n) => acc.used.get(n)!));
  g.output('loss', loss);
  g.output('score', pred.score);
  trained.forEach((n, i) => g.output(`grad:${n}`, grads[i]!));
  return { graph: g, trained, dropout: g.dropoutMasks.map((m) => ({ name: m.value.name, p: m.p, size: m.value.size })) };
}
