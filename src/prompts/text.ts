/**
 * Text prompt learners (CoOp and its deep variant): the prompt "X X … X {class}." is tokenised and the
 * embeddings of the n X tokens are replaced by learnable vectors, shared by all classes or one set per
 * class, initialised N(0, 0.02) or from the token embeddings of a phrase such as "a photo of a".
 * Deep text prompts replace token positions 1…n at text layers 1…depth-1. With the class in the middle
 * (CLIP-IQA+'s layout), the class tokens move between the two halves of the context:
 * [SOT] ctx[0:n/2] {class tokens} ctx[n/2:n] [EOT]; the end-of-text position, and so the feature read, is
 * that of the "X … X {class}." tokenisation.
 */
import * as G from '../graph/graph.js';
import { type Value } from '../graph/graph.js';
import { textEncoder, tokenEmbeddings, eotOneHot, textLength, cutSequences } from '../clip/encoders.js';
import { type ClipWeights } from '../clip/weights.js';
import { type ClipTokenizer } from '../clip/tokenizer.js';
import { type BuildContext, type ParamSet, normalInit } from './context.js';
import { type Rng } from '../util/rng.js';

export interface TextPromptSpec {
  /** parameter name prefix, e.g. 'quality' */
  name: string;
  classes: readonly string[];
  /** learnable context tokens; ignored when `initPhrase` is set (n = the phrase's token count) */
  nCtx: number;
  /** initialise the context from this phrase's token embeddings */
  initPhrase?: string;
  /** one context per class instead of one shared */
  perClass?: boolean;
  /** deep text prompts at layers 1…depth-1 (0 or 1: none) */
  deepDepth?: number;
  /** where the class tokens go: after the context (CoOp), or between its two halves (CLIP-IQA+) */
  classAt?: 'end' | 'middle';
}

export class TextPrompts {
  readonly nCtx: number;
  /** token positions per prompt: up to the last end-of-text */
  private readonly length: number;
  /** [classes, length] */
  private readonly ids: Int32Array;
  private embedsOf: Float32Array | undefined;
  /** the end-of-text token's id */
  private readonly eot: number;

  constructor(
    readonly spec: TextPromptSpec,
    private readonly weights: ClipWeights,
    tokenizer: ClipTokenizer,
  ) {
    const c = weights.config;
    this.nCtx = spec.initPhrase ? tokenizer.encode(spec.initPhrase).length : spec.nCtx;
    const prefix = spec.initPhrase ?? Array.from({ length: this.nCtx }, () => 'X').join(' ');
    const ids = tokenizer.tokenizeBatch(
      spec.classes.map((cls) => `${prefix} ${cls}.`),
      c.contextLength,
    );
    // cut after the last end-of-text: the later positions never reach a feature (see textEncoder)
    this.length = textLength(ids, spec.classes.length, tokenizer.eot);
    this.ids = cutSequences(ids, spec.classes.length, this.length);
    this.eot = tokenizer.eot;
  }

  /** The prompts' token embeddings, looked up when first needed: text features from the cache never need the text tower. */
  private get embeds(): Float32Array {
    return (this.embedsOf ??= tokenEmbeddings(this.weights, this.ids, this.spec.classes.length));
  }

  get deepLayers(): number[] {
    const d = Math.min(this.spec.deepDepth ?? 0, this.weights.config.textLayers);
    return Array.from({ length: Math.max(0, d - 1) }, (_, i) => i + 1);
  }

  /** Initial values of this learner's parameters. */
  init(rng: Rng): ParamSet {
    const w = this.weights.config.textWidth;
    const n = this.nCtx;
    const nCls = this.spec.classes.length;
    const out: ParamSet = new Map();
    let ctx;
    if (this.spec.initPhrase) {
      // the phrase's own token embeddings: positions 1…n of the first class's prompt
      const one = this.embeds.slice(w, (1 + n) * w);
      ctx = this.spec.perClass
        ? { shape: [nCls, n, w], data: Float32Array.from({ length: nCls * n * w }, (_, i) => one[i % (n * w)]!) }
        : { shape: [n, w], data: one };
    } else {
      ctx = normalInit(rng, this.spec.perClass ? [nCls, n, w] : [n, w]);
    }
    out.set(`${this.spec.name}.ctx`, ctx);
    for (const layer of this.deepLayers) out.set(`${this.spec.name}.deep_${layer}`, normalInit(rng, [n, w]));
    return out;
  }

  /** Text embeddings [classes, embed] (not normalised). */
  build(ctx: BuildContext): Value {
    const c = this.weights.config;
    const w = c.textWidth;
    const n = this.nCtx;
    const nCls = this.spec.classes.length;
    const all = ctx.g.constant(this.embeds, [nCls, this.length, w]);
    const learned = ctx.param(`${this.spec.name}.ctx`);
    const ctx3 = learned.rank === 2 ? G.expand(G.reshape(learned, [1, n, w]), [nCls, n, w]) : learned;
    const tokens =
      this.spec.classAt === 'middle'
        ? this.classInMiddle(all, ctx3)
        : G.concat([G.slice(all, 1, 0, 1), ctx3, G.slice(all, 1, 1 + n, this.length)], 1);
    const eot = ctx.g.constant(eotOneHot(this.ids, nCls, this.eot), [nCls, this.length]);
    const deep: (Value | undefined)[] = [];
    for (const layer of this.deepLayers) deep[layer] = ctx.param(`${this.spec.name}.deep_${layer}`);
    return textEncoder(ctx.bank, this.weights, tokens, eot, { deepPrompts: deep }).embeds;
  }

  /**
   * [SOT] ctx[0:n/2] {class} ctx[n/2:n] {rest}. The class is every token between the X tokens and the
   * end of text (CLIP-IQA+'s "Good photo.." is 3: good, photo, ..); the classes must all have as many, so
   * that one slice serves them all.
   */
  private classInMiddle(all: Value, ctx3: Value): Value {
    const n = this.nCtx;
    const len = this.length;
    const nCls = this.spec.classes.length;
    const eotAt = Array.from({ length: nCls }, (_, i) => this.ids.subarray(i * len, (i + 1) * len).indexOf(this.eot));
    const classLen = eotAt[0]! - 1 - n;
    if (eotAt.some((e) => e - 1 - n !== classLen)) {
      throw new Error(
        `${this.spec.name}: the classes ${this.spec.classes.map((c) => `"${c}"`).join(', ')} have different token counts; a class in the middle needs one count`,
      );
    }
    const half = Math.floor(n / 2);
    return G.concat(
      [
        G.slice(all, 1, 0, 1),
        G.slice(ctx3, 1, 0, half),
        G.slice(all, 1, 1 + n, 1 + n + classLen),
        G.slice(ctx3, 1, half, n),
        G.slice(all, 1, 1 + n + classLen, len),
      ],
      1,
    );
  }
}
