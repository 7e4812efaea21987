/**
 * CLIP embeddings of texts and images, as the reference's `encode_text` / `encode_image` give them:
 * the projected features, not normalised. Texts are tokenised with the model folder's tokenizer (`ClipTokenizer.fromFolder`),
 * images decoded and preprocessed as CLIP does (short side to the model's input size, bicubic, centre
 * crop, CLIP mean/std).
 */
import { resolveModel, type HubOptions } from './hub.js';
import { ClipTokenizer } from './tokenizer.js';
import { loadClipWeights, type ClipWeights } from './weights.js';
import { WeightBank, textEncoder, tokenEmbeddings, eotOneHot, imageFeatureGraph } from './encoders.js';
import { Graph } from '../graph/graph.js';
import { CompiledGraph, type RuntimeOptions } from '../graph/runtime.js';
import { checkBatchSize } from '../graph/settings.js';
import { decodeImage } from '../data/image.js';
import { clipPreprocess } from '../data/preprocess.js';

export interface EmbedOptions {
  /** a model folder or a Hugging Face repo id */
  model: string;
  texts?: readonly string[];
  /** image files (or encoded image bytes) */
  images?: ReadonlyArray<string | Uint8Array>;
  /** images per run of the vision encoder; default 8 */
  batchSize?: number;
  runtime?: RuntimeOptions;
  hub?: HubOptions;
  /** called after each batch of images */
  onImages?: (done: number, total: number) => void;
}

export interface EmbedResult {
  /** the token ids of each text, `contextLength` (77) of them, zero-padded after end-of-text */
  input_ids: number[][];
  /** [texts, embedDim], not normalised */
  text_embeds: number[][];
  /** [images, embedDim], not normalised */
  image_embeds: number[][];
}

function rows(data: ArrayLike<number>, n: number, width: number): number[][] {
  return Array.from({ length: n }, (_, i) => Array.from({ length: width }, (_, j) => data[i * width + j]!));
}

/** Text embeddings of already tokenised ids [n, contextLength]. */
export async function embedTokenIds(
  weights: ClipWeights,
  ids: ArrayLike<number>,
  n: number,
  eot: number,
  runtime: RuntimeOptions = {},
): Promise<Float32Array> {
  const c = weights.config;
  const g = new Graph('embed_text');
  const bank = new WeightBank(g);
  const tok = g.input('tokens', [n, c.contextLength, c.textWidth]);
  const eotIn = g.input('eot', [n, c.contextLength]);
  g.output('text_embeds', textEncoder(bank, weights, tok, eotIn).embeds);
  const compiled = await CompiledGraph.create(g, runtime);
  try {
    const res = await compiled.run({ tokens: tokenEmbeddings(weights, ids, n), eot: eotOneHot(ids, n, eot) });
    return res.text_embeds!.data as Float32Array;
  } finally {
    await compiled.release();
  }
}

/**
 * Image embeddings of `count` images whose preprocessed pixels [3, size, size] `load(i)` gives,
 * `batchSize` images per run (so only one batch of pixels is held at a time).
 */
export async function embedPixels(
  weights: ClipWeights,
  count: number,
  load: (i: number) => Promise<Float32Array>,
  batchSize: number,
  runtime: RuntimeOptions = {},
  onBatch?: (done: number) => void,
): Promise<Float32Array> {
  const c = weights.config;
  const per = 3 * c.imageSize * c.imageSize;
  const out = new Float32Array(count * c.embedDim);
  const graphs = new Map<number, CompiledGraph>();
  try {
    for (let start = 0; start < count; start += batchSize) {
      const b = Math.min(batchSize, count - start);
      let compiled = graphs.get(b);
      if (!compiled) {
        compiled = await CompiledGraph.create(imageFeatureGraph(weights, b, `embed_image_${b}`), runtime);
        graphs.set(b, compiled);
      }
      const feed = new Float32Array(b * per);
      for (let i = 0; i < b; i++) {
        const px = await load(start + i);
        if (px.length !== per) throw new Error(`image ${start + i + 1}: expected ${per} preprocessed values, got ${px.length}`);
        feed.set(px, i * per);
      }
      const res = await compiled.run({ pixels: feed });
      out.set(res.features!.data as Float32Array, start * c.embedDim);
      onBatch?.(start + b);
    }
  } finally {
    for (const g of graphs.values()) await g.release();
  }
  return out;
}

/** Embeddings of `texts` and `images` under one model, in the order given. */
export async function embed(opts: EmbedOptions): Promise<EmbedResult> {
  const texts = opts.texts ?? [];
  const images = opts.images ?? [];
  const batchSize = checkBatchSize(opts.batchSize ?? 8, 'embed: batchSize');
  const dir = await resolveModel(opts.model, opts.hub);
  const weights = await loadClipWeights(dir);
  const c = weights.config;
  const result: EmbedResult = { input_ids: [], text_embeds: [], image_embeds: [] };

  if (texts.length > 0) {
    if (weights.text.layers.length === 0) throw new Error(`${opts.model}: these weights have no text encoder`);
    // a repo in open_clip's layout resolves to its weights file: CLIP's own vocabulary tokenises it
    const tokenizer = ClipTokenizer.forModel(dir);
    const ids = tokenizer.tokenizeBatch(texts, c.contextLength);
    result.input_ids = rows(ids, texts.length, c.contextLength);
    result.text_embeds = rows(await embedTokenIds(weights, ids, texts.length, tokenizer.eot, opts.runtime), texts.length, c.embedDim);
  }

  if (images.length > 0) {
    const load = async (i: number): Promise<Float32Array> => {
      const image = images[i]!;
      // a file that cannot be decoded is an ImageDecodeError naming it
      const rgb = await decodeImage(image, typeof image === 'string' ? {} : { name: `image ${i + 1}` });
      return clipPreprocess(rgb, c.imageSize);
    };
    const embeds = await embedPixels(weights, images.length, load, batchSize, opts.runtime, (done) => opts.onImages?.(done, images.length));
    result.image_embeds = rows(embeds, images.length, c.embedDim);
  }
  return result;
}
