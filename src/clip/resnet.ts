/**
 * OpenAI's ModifiedResNet image tower (clip/model.py) as a graph: a stem of three 3×3 convs and a 2×2
 * average pool, four stages of anti-aliased bottlenecks (the stride is an average pool before conv3 and
 * on the shortcut), and an attention pool whose query is the mean token. BatchNorm is folded into the
 * convs when the weights are loaded. Any input of at least 32×32 pixels runs; the attention pool's
 * positional embedding is handled in one of three ways (`PositionalEmbeddingMode`).
 */
import * as G from '../graph/graph.js';
import { type Value } from '../graph/graph.js';
import { type WeightBank } from './bank.js';
import { type ClipConfig } from './config.js';
import { type ConvBn, type ResNetWeights } from './weights.js';

/**
 * How the image tower uses its positional embedding (the ResNet's attention pool's, the ViT's token table):
 * - `native`: added as OpenAI's `encode_image` does; the input must be the native size (`imageSize`).
 * - `none`: not added at all, as pyiqa's `clip_model` with `pos_embedding=False` (CLIP-IQA, CLIP-IQA+).
 * - `interpolated`: resized to the input's token count as pyiqa does with `pos_embedding=True` (see
 *   `resizePositionalEmbedding`); at the native size it is the table itself.
 */
export type PositionalEmbeddingMode = 'native' | 'none' | 'interpolated';

export interface ResNetOptions {
  /** default 'native' */
  positionalEmbedding?: PositionalEmbeddingMode;
}

export interface ResNetOutput {
  /** projected embeddings [B, embed] (not normalised) */
  embeds: Value;
  /** the stem's and the four stages' outputs, NCHW */
  hidden: Value[];
}

/** PyTorch's cubic convolution kernel (a = −0.75), for |x| ≤ 1 and 1 < |x| < 2. */
const A = -0.75;
const cubicNear = (x: number): number => ((A + 2) * x - (A + 3)) * x * x + 1;
const cubicFar = (x: number): number => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;

/**
 * pyiqa's resize of a positional embedding [n, C] (the attention pool's or the ViT's) to [tokens, C]:
 * `F.interpolate(pe[None, None], size=(tokens, C), mode='bicubic')`, which treats the table as a
 * one-channel image. Along the channels nothing changes (same size); along the flattened token list
 * (mean or class token first, grid rows after one another) it is a 1-D cubic resampling with align_corners False
 * (source = (i + 0.5)·n/tokens − 0.5, not clamped), the border rows repeated. Computed in float64 and
 * rounded once; PyTorch computes in float32, a difference of a few ulp.
 */
export function resizePositionalEmbedding(pe: Float32Array, n: number, channels: number, tokens: number): Float32Array {
  if (pe.length !== n * channels) throw new Error(`positional embedding: ${pe.length} values are not [${n}, ${channels}]`);
  if (tokens === n) return pe;
  const out = new Float32Array(tokens * channels);
  const scale = n / tokens;
  const row = (i: number): number => Math.min(Math.max(i, 0), n - 1) * channels;
  for (let t = 0; t < tokens; t++) {
    const src = scale * (t + 0.5) - 0.5;
    const i0 = Math.floor(src);
    const f = src - i0;
    const w = [cubicFar(f + 1), cubicNear(f), cubicNear(1 - f), cubicFar(2 - f)];
    const rows = [row(i0 - 1), row(i0), row(i0 + 1), row(i0 + 2)];
    for (let ch = 0; ch < channels; ch++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += w[k]! * pe[rows[k]! + ch]!;
      out[t * channels + ch] = s;
    }
  }
  return out;
}

function convBn(bank: WeightBank, x: Value, w: ConvBn, name: string, padding: number, stride = 1): Value {
  const kernel = bank.get(`${name}.w`, w.kernel, w.shape);
  const bias = bank.get(`${name}.b`, w.bias, [w.shape[0]]);
  return G.conv2d(x, kernel, { stride, padding, bias });
}

/** The ResNet tower on normalised pixels [B, 3, H, W], H and W ≥ 32. */
export function resnetEncoder(
  bank: WeightBank,
  c: ClipConfig,
  vw: ResNetWeights,
  pixels: Value,
  options: ResNetOptions = {},
): ResNetOutput {
  const mode = options.positionalEmbedding ?? 'native';
  if (pixels.rank !== 4 || pixels.shape[1] !== 3)
    throw new G.GraphError(`ResNet encoder: pixels must be [B, 3, H, W], got ${G.formatShape(pixels.shape)}`);
  const [, , h, w] = pixels.shape as [number, number, number, number];
  if (h < 32 || w < 32) throw new G.GraphError(`ResNet encoder: images must be at least 32×32 pixels, got ${w}×${h}`);
  if (mode === 'native' && (h !== c.imageSize || w !== c.imageSize)) {
    throw new G.GraphError(
      `ResNet encoder: the native positional embedding needs ${c.imageSize}×${c.imageSize} pixels, got ${w}×${h} (use 'interpolated' or 'none')`,
    );
  }
  const hidden: Value[] = [];
  let x = pixels;
  vw.stem.forEach((cb, i) => (x = G.relu(convBn(bank, x, cb, `visual.stem${i}`, 1, i === 0 ? 2 : 1))));
  x = G.avgPool2d(x, 2);
  hidden.push(x);
  vw.stages.forEach((blocks, s) =>
    blocks.forEach((bw, i) => {
      const name = `visual.layer${s + 1}.${i}`;
      let out = G.relu(convBn(bank, x, bw.conv1, `${name}.conv1`, 0));
      out = G.relu(convBn(bank, out, bw.conv2, `${name}.conv2`, 1));
      out = convBn(bank, G.avgPool2d(out, bw.stride), bw.conv3, `${name}.conv3`, 0);
      const shortcut = bw.downsample ? convBn(bank, G.avgPool2d(x, bw.stride), bw.downsample, `${name}.down`, 0) : x;
      x = G.relu(G.add(out, shortcut));
      if (i === blocks.length - 1) hidden.push(x);
    }),
  );
  return { embeds: attentionPool(bank, c, vw, x, mode), hidden };
}

/**
 * OpenAI's AttentionPool2d: tokens = [mean of the grid, grid in row-major order] (+ positional embedding),
 * multi-head attention with the mean token as the only query, then the output projection.
 */
function attentionPool(bank: WeightBank, c: ClipConfig, vw: ResNetWeights, x: Value, mode: PositionalEmbeddingMode): Value {
  const [b, e, gh, gw] = x.shape as [number, number, number, number];
  const ap = vw.attnpool;
  const W = (k: string, d: Float32Array, shape: number[]): Value => bank.get(`visual.attnpool.${k}`, d, shape);
  // -1 where the grid's size goes: without a positional embedding the graph then takes any image size
  const grid = G.transpose(G.reshape(x, [b, e, -1]), [0, 2, 1]);
  let tokens = G.concat([G.reduceMean(grid, [1], true), grid], 1);
  const s = gh * gw + 1;
  if (mode !== 'none') {
    const native = (c.imageSize / 32) ** 2 + 1;
    const pe = mode === 'native' ? ap.positionalEmbedding : resizePositionalEmbedding(ap.positionalEmbedding, native, e, s);
    tokens = G.add(tokens, W('pos', pe, [s, e]));
  }
  const heads = c.visionHeads;
  const dh = e / heads;
  const q = G.linear(G.slice(tokens, 1, 0, 1), W('q.w', ap.qW, [e, e]), W('q.b', ap.qB, [e]));
  const kv = G.linear(tokens, W('kv.w', ap.kvW, [e, 2 * e]), W('kv.b', ap.kvB, [2 * e]));
  const split = (v: Value, perm: number[]): Value => G.transpose(G.reshape(v, [b, -1, heads, dh]), perm);
  const qh = G.mul(split(q, [0, 2, 1, 3]), 1 / Math.sqrt(dh)); // [b, h, 1, dh]
  const kT = split(G.slice(kv, 2, 0, e), [0, 2, 3, 1]); // [b, h, dh, s]
  const v = split(G.slice(kv, 2, e, 2 * e), [0, 2, 1, 3]); // [b, h, s, dh]
  const att = G.matmul(G.softmax(G.matmul(qh, kT), -1), v); // [b, h, 1, dh]
  const merged = G.reshape(G.transpose(att, [0, 2, 1, 3]), [b, e]);
  return G.linear(merged, W('out.w', ap.outW, [e, c.embedDim]), W('out.b', ap.outB, [c.embedDim]));
}
