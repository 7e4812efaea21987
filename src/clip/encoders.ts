/**
 * CLIP's vision and text transformers as graph-building functions, with the hooks where prompt learning
 * puts its tokens. Weights become frozen initializers; prompts are Values the caller makes (graph inputs
 * when they are trained, constants when they are fixed).
 */
import * as G from '../graph/graph.js';
import { type Value, type Graph } from '../graph/graph.js';
import { type ClipConfig, numPatches } from './config.js';
import { type ClipWeights, type LayerWeights } from './weights.js';
import { WeightBank } from './bank.js';
import { type ClipTokenizer } from './tokenizer.js';
import { type ResNetOptions, resizePositionalEmbedding, resnetEncoder } from './resnet.js';

export { WeightBank };

function block(
  bank: WeightBank,
  x: Value,
  w: LayerWeights,
  heads: number,
  eps: number,
  act: ClipConfig['activation'],
  mask: Value | null,
  name: string,
): Value {
  const [b, s, width] = x.shape as [number, number, number];
  const dh = width / heads;
  const mlp = w.fcB.length;
  const W = (k: string, d: Float32Array, shape: number[]): Value => bank.get(`${name}.${k}`, d, shape);

  const h = G.layerNorm(x, W('ln1.w', w.ln1[0], [width]), W('ln1.b', w.ln1[1], [width]), eps);
  const qkv = G.linear(h, W('qkv.w', w.qkvW, [width, 3 * width]), W('qkv.b', w.qkvB, [3 * width]));
  const heads4 = (i: number, perm: number[]): Value =>
    G.transpose(G.reshape(G.slice(qkv, 2, i * width, (i + 1) * width), [b, s, heads, dh]), perm);
  const q = G.mul(heads4(0, [0, 2, 1, 3]), 1 / Math.sqrt(dh)); // [b, h, s, dh], scaled before the product
  const kT = heads4(1, [0, 2, 3, 1]); // [b, h, dh, s]
  const v = heads4(2, [0, 2, 1, 3]);
  let scores = G.matmul(q, kT);
  if (mask) scores = G.add(scores, mask);
  const att = G.matmul(G.softmax(scores, -1), v);
  const merged = G.reshape(G.transpose(att, [0, 2, 1, 3]), [b, s, width]);
  const x1 = G.add(x, G.linear(merged, W('out.w', w.outW, [width, width]), W('out.b', w.outB, [width])));

  const h2 = G.layerNorm(x1, W('ln2.w', w.ln2[0], [width]), W('ln2.b', w.ln2[1], [width]), eps);
  const f = G.linear(h2, W('fc.w', w.fcW, [width, mlp]), W('fc.b', w.fcB, [mlp]));
  const a = act === 'gelu' ? G.gelu(f) : G.quickGelu(f);
  return G.add(x1, G.linear(a, W('proj.w', w.projW, [mlp, width]), W('proj.b', w.projB, [width])));
}

/** Broadcasts a prompt of [n, width] or [1|B, n, width] to the batch. */
function batchPrompt(p: Value, batch: number): Value {
  const p3 = p.rank === 2 ? G.reshape(p, [1, ...p.shape]) : p;
  return G.expand(p3, [batch, p3.shape[1]!, p3.shape[2]!]);
}

export interface VisionHooks extends ResNetOptions {
  /** n tokens appended after [CLS]+patches, after the positional embedding and before ln_pre: [n, width] or [B, n, width] */
  inputPrompts?: Value;
  /** deepPrompts[i] (i ≥ 1) replaces the last n tokens before block i; entries may be undefined */
  deepPrompts?: ReadonlyArray<Value | undefined>;
}

export interface EncoderOutput {
  /** projected embeddings [B, embed] (not normalised) */
  embeds: Value;
  /** hidden state after every block, [B, S, width] */
  hidden: Value[];
}

/**
 * The image tower on normalised pixels [B, 3, H, W], both with `hooks.positionalEmbedding` picking how the
 * positional embedding is used (default 'native'):
 * - the vision transformer: 'native' adds its own table and needs H = W = imageSize; 'none' adds none and
 *   'interpolated' adds pyiqa's resize of it to the token count (`pos_embedding` False / True of pyiqa's
 *   `clip_model`), both at any H, W ≥ patch, the remainder right and bottom dropped as the patch conv does;
 * - the ResNet (any H, W ≥ 32; the mode is its attention pool's, and `hidden` holds the stem's and the
 *   stages' outputs).
 */
export function visionEncoder(bank: WeightBank, weights: ClipWeights, pixels: Value, hooks: VisionHooks = {}): EncoderOutput {
  const c = weights.config;
  const vw = weights.vision;
  if (vw.kind === 'resnet') {
    if (hooks.inputPrompts || hooks.deepPrompts?.some((p) => p))
      throw new G.GraphError('visual prompt tokens need a ViT image tower, not a ResNet');
    return resnetEncoder(bank, c, vw, pixels, hooks);
  }
  const mode = hooks.positionalEmbedding ?? 'native';
  const width = c.visionWidth;
  const p = c.patchSize;
  if (pixels.rank !== 4 || pixels.shape[1] !== 3)
    throw new G.GraphError(`vision encoder: pixels must be [B, 3, H, W], got ${G.formatShape(pixels.shape)}`);
  const [b, , h, w] = pixels.shape as [number, number, number, number];
  if (mode === 'native' && (h !== c.imageSize || w !== c.imageSize)) {
    throw new G.GraphError(
      `vision encoder: the native positional embedding needs pixels [B, 3, ${c.imageSize}, ${c.imageSize}], got ${G.formatShape(pixels.shape)} (use 'interpolated' or 'none')`,
    );
  }
  if (h < p || w < p) throw new G.GraphError(`vision encoder: images must be at least ${p}×${p} pixels (one patch), got ${w}×${h}`);
  // the patch conv (stride = kernel) leaves out what does not fill a whole patch
  const gh = Math.floor(h / p);
  const gw = Math.floor(w / p);
  const cropped = G.slice(G.slice(pixels, 2, 0, gh * p), 3, 0, gw * p);
  const W = (k: string, d: Float32Array, shape: number[]): Value => bank.get(`visual.${k}`, d, shape);
  // the patch-embedding conv (stride = kernel) as patches times a matrix: differentiable and as fast
  const patchWT = W('patch.w', vw.patchW, [width, 3 * p * p]);
  const patches = G.matmul(G.patchify(cropped, p), G.transposeLast(patchWT));
  const cls = G.expand(G.reshape(W('cls', vw.classEmbedding, [width]), [1, 1, width]), [b, 1, width]);
  let x = G.concat([cls, patches], 1);
  if (mode !== 'none') {
    const tokens = gh * gw + 1;
    const pe = resizePositionalEmbedding(vw.positionalEmbedding, numPatches(c) + 1, width, tokens);
    x = G.add(x, W('pos', pe, [tokens, width]));
  }
  if (hooks.inputPrompts) x = G.concat([x, batchPrompt(hooks.inputPrompts, b)], 1);
  x = G.layerNorm(x, W('ln_pre.w', vw.lnPre[0], [width]), W('ln_pre.b', vw.lnPre[1], [width]), c.layerNormEps);
  const hidden: Value[] = [];
  vw.layers.forEach((lw, i) => {
    const deep = i > 0 ? hooks.deepPrompts?.[i] : undefined;
    if (deep) {
      const np = deep.shape[deep.rank - 2]!;
      x = G.concat([G.slice(x, 1, 0, x.shape[1]! - np), batchPrompt(deep, b)], 1);
    }
    x = block(bank, x, lw, c.visionHeads, c.layerNormEps, c.activation, null, `visual.${i}`);
    hidden.push(x);
  });
  const clsOut = G.reshape(G.slice(x, 1, 0, 1), [b, width]);
  const pooled = G.layerNorm(clsOut, W('ln_post.w', vw.lnPost[0], [width]), W('ln_post.b', vw.lnPost[1], [width]), c.layerNormEps);
  return { embeds: G.matmul(pooled, W('proj', vw.projection, [width, c.embedDim])), hidden };
}

/**
 * The most bytes one activation of a whole image may take (float32): a ViT layer's attention scores (every
 * head), a ResNet's widest feature map. Beyond it the image is refused, not the memory exhausted.
 */
export const MAX_WHOLE_IMAGE_ATTENTION_BYTES = 2 ** 31;

/**
 * Why the image tower cannot read a whole image of width × height pixels (with a positional embedding that
 * is left out or resized), or undefined where it can: a side under 32 pixels (ResNet) or one patch (ViT), or
 * a ViT's attention over so many tokens that its scores outgrow MAX_WHOLE_IMAGE_ATTENTION_BYTES (they grow
 * with the square of the pixels), or a ResNet's feature maps outgrowing it (the stem's and each stage's
 * output hold about stem width × pixels floats / 4: width × pixels bytes).
 */
export function wholeImageRefusal(c: ClipConfig, width: number, height: number): string | undefined {
  const min = c.resnet ? 32 : c.patchSize;
  if (width < min || height < min) return `scoring the whole image needs at least ${min}×${min} pixels`;
  const gib = (b: number): string => `${(b / 2 ** 30).toFixed(1)} GiB`;
  if (c.resnet) {
    const bytes = c.visionWidth * width * height;
    if (bytes <= MAX_WHOLE_IMAGE_ATTENTION_BYTES) return undefined;
    return `the whole image's feature maps would take ${gib(bytes)} each, over the ${gib(MAX_WHOLE_IMAGE_ATTENTION_BYTES)} allowed (testViews=resize scores one view)`;
  }
  const tokens = Math.floor(width / c.patchSize) * Math.floor(height / c.patchSize) + 1;
  const bytes = c.visionHeads * tokens * tokens * 4;
  if (bytes <= MAX_WHOLE_IMAGE_ATTENTION_BYTES) return undefined;
  return `the whole image is ${tokens} tokens for the ViT, attention scores of ${gib(bytes)} per layer, over the ${gib(MAX_WHOLE_IMAGE_ATTENTION_BYTES)} allowed (testViews=resize scores one view)`;
}

export interface TextHooks {
  /** deepPrompts[i] (i ≥ 1) replaces token positions 1…n before block i: [n, width] or [N, n, width] */
  deepPrompts?: ReadonlyArray<Value | undefined>;
}

/** The causal attention mask: 0 on and below the diagonal, a large negative number above. */
function causalMask(g: Graph, s: number): Value {
  const m = new Float32Array(s * s);
  for (let i = 0; i < s; i++) for (let j = i + 1; j < s; j++) m[i * s + j] = -1e9;
  return g.constant(m, [s, s]);
}

/**
 * The text transformer on token embeddings [N, S, width] (looked up on the host with `tokenEmbeddings`, with
 * learned context vectors already in place), S at most the context length. `eotOneHot` [N, S] selects each
 * sequence's end-of-text position, where the text feature is read. The attention is causal, so the positions
 * after the last end-of-text never reach a feature: callers that only need the features give the sequences cut
 * there (`textLength`), which is the same computation on a fraction of the positions.
 */
export function textEncoder(
  bank: WeightBank,
  weights: ClipWeights,
  tokenEmbeds: Value,
  eotOneHot: Value,
  hooks: TextHooks = {},
): EncoderOutput {
  const c = weights.config;
  const tw = weights.text;
  const width = c.textWidth;
  const [nSeq, s] = tokenEmbeds.shape as [number, number];
  if (s > c.contextLength) throw new G.GraphError(`text encoder: ${s} token positions, but the context holds ${c.contextLength}`);
  const W = (k: string, d: Float32Array, shape: number[]): Value => bank.get(`text.${k}`, d, shape);
  let x = G.add(tokenEmbeds, G.slice(W('pos', tw.positionalEmbedding, [c.contextLength, width]), 0, 0, s));
  const mask = causalMask(bank.graph, s);
  const hidden: Value[] = [];
  tw.layers.forEach((lw, i) => {
    const deep = i > 0 ? hooks.deepPrompts?.[i] : undefined;
    if (deep) {
      const np = deep.shape[deep.rank - 2]!;
      x = G.concat([G.slice(x, 1, 0, 1), batchPrompt(deep, nSeq), G.slice(x, 1, 1 + np, s)], 1);
    }
    x = block(bank, x, lw, c.textHeads, c.layerNormEps, c.activation, mask, `text.${i}`);
    hidden.push(x);
  });
  x = G.layerNorm(x, W('ln_final.w', tw.lnFinal[0], [width]), W('ln_final.b', tw.lnFinal[1], [width]), c.layerNormEps);
  // features at the end-of-text token: a one-hot weighted sum over positions
  const atEot = G.reduceSum(G.mul(x, G.reshape(eotOneHot, [nSeq, s, 1])), [1], false);
  return { embeds: G.matmul(atEot, W('proj', tw.projection, [width, c.embedDim])), hidden };
}

/**
 * The positions of token sequences [N, context] that reach their features: up to the last end-of-text among them
 * (each sequence's feature is read at its first). Sequences cut there (`cutSequences`) give the same features.
 */
export function textLength(ids: ArrayLike<number>, nSeq: number, eot: number): number {
  const s = ids.length / nSeq;
  let len = 1;
  for (let r = 0; r < nSeq; r++) {
    let k = 0;
    while (k < s && ids[r * s + k] !== eot) k++;
    len = Math.max(len, Math.min(k + 1, s));
  }
  return len;
}

/** The first `len` positions of each of N token sequences [N, S]: [N, len]. */
export function cutSequences(ids: Int32Array, nSeq: number, len: number): Int32Array {
  const s = ids.length / nSeq;
  if (len === s) return ids;
  const out = new Int32Array(nSeq * len);
  for (let r = 0; r < nSeq; r++) out.set(ids.subarray(r * s, r * s + len), r * len);
  return out;
}

/** Looks token ids up in the embedding table on the host: [N, S, width]. */
export function tokenEmbeddings(weights: ClipWeights, ids: ArrayLike<number>, nSeq: number): Float32Array {
  const width = weights.config.textWidth;
  const table = weights.text.tokenEmbedding;
  const out = new Float32Array(ids.length * width);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= weights.config.vocabSize)
      throw new Error(`token id ${id} is outside the vocabulary of ${weights.config.vocabSize}`);
    out.set(table.subarray(id * width, (id + 1) * width), i * width);
  }
  if (ids.length % nSeq !== 0) throw new Error('token ids do not divide into sequences');
  return out;
}

/** One-hot [N, context] rows marking each sequence's first end-of-text token. */
export function eotOneHot(ids: ArrayLike<number>, nSeq: number, eot: number): Float32Array {
  const s = ids.length / nSeq;
  const out = new Float32Array(ids.length);
  for (let r = 0; r < nSeq; r++) {
    let k = -1;
    for (let j = 0; j < s; j++)
      if (ids[r * s + j] === eot) {
        k = j;
        break;
      }
    if (k < 0) throw new Error(`token sequence ${r} has no end-of-text token`);
    out[r * s + k] = 1;
  }
  return out;
}

/** A graph from pixels [B, 3, S, S] to image embeddings [B, embed] (output `features`). */
export function imageFeatureGraph(weights: ClipWeights, batch: number, name = `features_b${batch}`, options: ResNetOptions = {}): Graph {
  const c = weights.config;
  const g = new G.Graph(name);
  const pixels = g.input('pixels', [batch, 3, c.imageSize, c.imageSize]);
  g.output('features', visionEncoder(new WeightBank(g), weights, pixels, options).embeds);
  return g;
}

/** Cosine-similarity logits scaled by exp(logit_scale): [B, C]. */
export function similarityLogits(imageEmbeds: Value, textEmbeds: Value, logitScale: number): Value {
  const i = G.l2Normalize(imageEmbeds);
  const t = G.l2Normalize(textEmbeds);
  return G.mul(G.matmul(i, G.transposeLast(t)), Math.exp(logitScale));
}

/**
 * Texts the text tower takes at once in `encodeTexts`. Each chunk is its own chain of nodes, built one after the
 * other, so ONNX Runtime runs them in turn and frees a chunk's activations before the next: the peak is one
 * chunk's (about 2.5 MB a text at width 512), not the whole list's (LIQE-mix's 495 texts would need gigabytes).
 */
export const TEXT_CHUNK = 64;

/** Fixed texts through the text tower (no learned context): their embeddings [texts, embed], not normalised. */
export function encodeTexts(bank: WeightBank, weights: ClipWeights, tokenizer: ClipTokenizer, texts: readonly string[]): Value {
  const c = weights.config;
  const chunks: Value[] = [];
  for (let i = 0; i < texts.length; i += TEXT_CHUNK) {
    const part = texts.slice(i, i + TEXT_CHUNK);
    const full = tokenizer.tokenizeBatch(part, c.contextLength);
    const len = textLength(full, part.length, tokenizer.eot);
    const ids = cutSequences(full, part.length, len);
    const tokens = bank.graph.constant(tokenEmbeddings(weights, ids, part.length), [part.length, len, c.textWidth]);
    const eot = bank.graph.constant(eotOneHot(ids, part.length, tokenizer.eot), [part.length, len]);
    chunks.push(textEncoder(bank, weights, tokens, eot).embeds);
  }
  return chunks.length === 1 ? chunks[0]! : G.concat(chunks, 0);
}
