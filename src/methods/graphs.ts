/**
 * A method's graphs and the step objects that run them: the text graph (image-independent features, once
 * per set of parameters), the score graph (pixels → score) behind `Scorer`, and the training graph
 * (inputs → loss and the gradient of every trainable parameter) behind `TrainStep`. The graphs' input and
 * output names are private to this file: callers hand over arrays and get arrays back.
 */
import { Graph, type Value, matmulFlops } from '../graph/graph.js';
import { gradients } from '../graph/grad.js';
import { CompiledGraph, DeviceTensor, SessionCache, type Feed, type RuntimeOptions } from '../graph/runtime.js';
import { checkBatchSize } from '../graph/settings.js';

export { MAX_BATCH, checkBatchSize } from '../graph/settings.js';
import { type SerializedModel, serialize } from '../graph/onnx.js';
import { WeightBank, visionEncoder, wholeImageRefusal } from '../clip/encoders.js';
import { type ClipWeights } from '../clip/weights.js';
import { type ClipTokenizer } from '../clip/tokenizer.js';
import { type BuildContext, type ParamSet, paramAccessor, paramFeeds, paramInput } from '../prompts/context.js';
import { type RgbImage } from '../data/rgb.js';
import { type Rng } from '../util/rng.js';
import { type CacheDir, cacheKey, cachePath, writeCacheEntry } from '../util/cache.js';
import { packageVersion } from '../util/version.js';
import { readSafetensors, safetensorsBytes } from '../clip/safetensors.js';
import { type HostTensor } from '../graph/tensor.js';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { type AuxiliaryTarget, type Method, type MethodModel, type Options, trainingLoss } from './method.js';
import { type View, type ViewRule, type WholeImageCheck, squareView, viewsByRule } from './views.js';

export interface Backbone {
  weights: ClipWeights;
  tokenizer: ClipTokenizer;
  /** what the user named: a folder or a hub repo id */
  model: string;
  /** where the weights were found, whatever the working directory: a hub repo at a commit, or an absolute folder (absent for weights made in memory) */
  source?: BackboneSource;
}

export type BackboneSource = { repo: string; revision: string } | { path: string };

/** A method with its options on one backbone, and the model (prompt learners) built once for them. */
export interface MethodSetup {
  method: Method;
  options: Options;
  backbone: Backbone;
  model: MethodModel;
}

export function setUp(method: Method, options: Options, backbone: Backbone): MethodSetup {
  return { method, options, backbone, model: method.build(options, backbone) };
}

const NAMES = {
  pixels: 'pixels',
  features: 'features',
  score: 'score',
  perView: 'per_view',
  loss: 'loss',
  text: (name: string) => `text:${name}`,
  target: (name: string) => `target:${name}`,
  mask: (name: string) => `mask:${name}`,
  grad: (param: string) => `grad:${param}`,
  scalars: 'optimizer:scalars',
  slot: (key: string) => `slot:${key}`,
  next: (key: string) => `next:${key}`,
};
const QUALITY = 'quality';

function context(
  g: Graph,
  b: Backbone,
  params: ParamSet,
  batch: number,
  training: boolean,
  auxiliary: ReadonlySet<string> = new Set(),
): BuildContext & { used: Map<string, Value> } {
  const { param, used } = paramAccessor(g, params);
  return { g, bank: new WeightBank(g), weights: b.weights, tokenizer: b.tokenizer, batch, training, auxiliary, param, used };
}

function imageShape(b: Backbone): number[] {
  return [3, b.weights.config.imageSize, b.weights.config.imageSize];
}

/** Image-independent features, one output per name the model's `text` returns. */
function textGraph(s: MethodSetup, params: ParamSet): Graph {
  // the text tower over fixed prompts is computed by a run, not folded into memory at load
  const g = new Graph(`${s.method.info.name}_text`, { foldConstants: false });
  const text = s.model.text(context(g, s.backbone, params, 0, false));
  for (const [k, v] of Object.entries(text)) g.output(NAMES.text(k), v);
  return g;
}

/**
 * pixels [B, 3, H, W] (the model's size unless the views are full images) and the text features → score [B].
 * `anySize`: the pixels' height and width are left open, `height` × `width` being the size it is built at.
 */
function scoreGraph(
  s: MethodSetup,
  params: ParamSet,
  batch: number,
  textShapes: Record<string, number[]>,
  height: number,
  width: number,
  anySize = false,
): Graph {
  const g = new Graph(`${s.method.info.name}_score_b${batch}_${anySize ? 'any' : `${height}x${width}`}`);
  const ctx = context(g, s.backbone, params, batch, false);
  const pixels = g.input(NAMES.pixels, [batch, 3, height, width], 'float32', anySize ? [2, 3] : []);
  const text: Record<string, Value> = {};
  for (const [k, shape] of Object.entries(textShapes)) text[k] = g.input(NAMES.text(k), shape);
  const image =
    s.method.imageInput === 'features'
      ? visionEncoder(ctx.bank, s.backbone.weights, pixels, s.method.imageEncoder?.(s.options, s.backbone.weights)).embeds
      : pixels;
  const pred = s.model.forward(ctx, image, text);
  g.output(NAMES.score, pred.score);
  if (s.model.combineViews) {
    if (!pred.perView) throw new Error(`${s.method.info.name}: the model combines views but its forward returns no perView`);
    g.output(NAMES.perView, pred.perView);
  }
  return g;
}

/** A training batch as arrays. */
export interface TrainBatch {
  /** pixels [B, 3, S, S] or frozen image embeddings [B, E], as the method's `imageInput` says */
  image: Float32Array;
  /** the quality targets [B] (already mapped by the method's `target`) */
  quality: Float32Array;
  /** each auxiliary target the step was made with, by name: [B × size] values, and a 0/1 mask [B] for those that mask */
  auxiliary: Record<string, { values: Float32Array; mask?: Float32Array }>;
}

/** One trained parameter in the training graph, for an optimiser's update: its value, gradient and slots. */
export interface UpdateEntry {
  param: Value;
  grad: Value;
  /** the optimiser's buffers for it, in `GraphUpdate.slots` order */
  slots: readonly Value[];
}

/** An optimiser's update as graph operations (src/train/optim.ts makes them), applied in the training graph. */
export interface GraphUpdate {
  /** the buffers each parameter has (torch's names), in order */
  readonly slots: readonly string[];
  /** the length of the scalar vector fed at each step */
  readonly scalarCount: number;
  /** what decides the operations besides the shapes: a graph made for one key serves every step with it */
  readonly key: string;
  /** the new value of each parameter and of its slots */
  build(scalars: Value, entries: readonly UpdateEntry[]): Array<{ param: Value; slots: Value[] }>;
}

/**
 * Trained parameters and their optimiser buffers where the graph runs, by name: `param` and `param.slot`.
 * Fed to the next step as they are: on WebGPU they stay in GPU buffers between steps.
 */
export type DeviceState = Map<string, DeviceTensor>;

export interface StepResult {
  loss: number;
  /** the gradient of every parameter of the set given to `run` (zeros for those the loss does not reach) */
  grads: Map<string, Float32Array>;
}

/**
 * One training step's graph for a batch size: the image, the quality target and each auxiliary target in;
 * the loss and every trainable parameter's gradient out, in one ONNX Runtime run. Made with an optimiser's
 * `update`, the graph applies it too: the trained parameters and their optimiser buffers go in and their new
 * values come out in place of the gradients (`runUpdate`), so they can stay on the device between steps.
 */
export class TrainStep {
  private constructor(
    private readonly compiled: CompiledGraph,
    /** the parameters the loss reaches, in the graph's order */
    readonly trained: readonly string[],
    private readonly dropout: ReadonlyArray<{ name: string; p: number; size: number }>,
    private readonly auxiliary: readonly AuxiliaryTarget[],
    private readonly update: GraphUpdate | undefined,
    /** the step's matrix-product work (`matmulFlops` of its graph), for a benchmark's share of the machine's peak */
    readonly flops: number,
  ) {}

  static async create(
    s: MethodSetup,
    params: ParamSet,
    batch: number,
    auxiliary: readonly AuxiliaryTarget[],
    runtime: RuntimeOptions,
    update?: GraphUpdate,
  ): Promise<TrainStep> {
    const g = new Graph(`${s.method.info.name}_train_b${batch}`);
    const ctx = context(g, s.backbone, params, batch, true, new Set(auxiliary.map((t) => t.name)));
    const image =
      s.method.imageInput === 'features'
        ? g.input(NAMES.features, [batch, s.backbone.weights.config.embedDim])
        : g.input(NAMES.pixels, [batch, ...imageShape(s.backbone)]);
    const quality = g.input(NAMES.target(QUALITY), [batch]);
    const aux = auxiliary.map((target) => ({
      target,
      value: g.input(NAMES.target(target.name), target.size === 1 ? [batch] : [batch, target.size]),
      ...(target.missing.kind === 'mask' ? { mask: g.input(NAMES.mask(target.name), [batch]) } : {}),
    }));
    const pred = s.model.forward(ctx, image, s.model.text(ctx));
    const loss = trainingLoss(s.options, pred, quality, aux);
    const trained = [...ctx.used.keys()];
    const grads = gradients(
      loss,
      trained.map((n) => ctx.used.get(n)!),
    );
    g.output(NAMES.loss, loss);
    const kept: string[] = [];
    if (update) {
      const scalars = g.input(NAMES.scalars, [update.scalarCount]);
      const entries = trained.map((n, i) => {
        const param = ctx.used.get(n)!;
        return { param, grad: grads[i]!, slots: update.slots.map((slot) => g.input(NAMES.slot(`${n}.${slot}`), param.shape)) };
      });
      update.build(scalars, entries).forEach((next, i) => {
        const n = trained[i]!;
        kept.push(NAMES.next(n), ...update.slots.map((slot) => NAMES.next(`${n}.${slot}`)));
        g.output(NAMES.next(n), next.param);
        next.slots.forEach((v, j) => g.output(NAMES.next(`${n}.${update.slots[j]!}`), v));
      });
    } else {
      trained.forEach((n, i) => g.output(NAMES.grad(n), grads[i]!));
    }
    const dropout = g.dropoutMasks.map((m) => ({ name: m.value.name, p: m.p, size: m.value.size }));
    return new TrainStep(await CompiledGraph.create(g, runtime, kept), trained, dropout, auxiliary, update, matmulFlops(g));
  }

  /** The names of the device state a step with the update reads and writes: each trained parameter, then its slots. */
  stateKeys(): string[] {
    const slots = this.update?.slots ?? [];
    return this.trained.flatMap((n) => [n, ...slots.map((slot) => `${n}.${slot}`)]);
  }

  /** The graph's feeds: the batch, fresh dropout masks drawn from `rng`, and the parameters' values. */
  private feeds(batch: TrainBatch, params: ParamSet, rng: Rng): Record<string, Feed> {
    return { ...this.batchFeeds(batch, rng), ...paramFeeds(this.compiled.inputs.keys(), params) };
  }

  /** The batch and fresh dropout masks drawn from `rng`. */
  private batchFeeds(batch: TrainBatch, rng: Rng): Record<string, Feed> {
    const feeds: Record<string, Feed> = {
      [this.compiled.inputs.has(NAMES.features) ? NAMES.features : NAMES.pixels]: batch.image,
      [NAMES.target(QUALITY)]: batch.quality,
    };
    for (const t of this.auxiliary) {
      const given = batch.auxiliary[t.name];
      if (!given) throw new Error(`the training batch lacks the auxiliary target "${t.name}"`);
      feeds[NAMES.target(t.name)] = given.values;
      if (t.missing.kind === 'mask') {
        if (!given.mask) throw new Error(`the training batch lacks the mask of the auxiliary target "${t.name}"`);
        feeds[NAMES.mask(t.name)] = given.mask;
      }
    }
    for (const d of this.dropout) {
      const m = new Float32Array(d.size);
      const keep = 1 / (1 - d.p);
      for (let j = 0; j < m.length; j++) m[j] = rng.uniform() < d.p ? 0 : keep;
      feeds[d.name] = m;
    }
    return feeds;
  }

  async run(batch: TrainBatch, params: ParamSet, rng: Rng): Promise<StepResult> {
    if (this.update) throw new Error('this training step applies an optimiser update: run it with runUpdate');
    const res = await this.compiled.run(this.feeds(batch, params, rng));
    const grads = new Map<string, Float32Array>();
    for (const [name, p] of params)
      grads.set(name, (res[NAMES.grad(name)]?.data as Float32Array | undefined) ?? new Float32Array(p.data.length));
    return { loss: Number(res[NAMES.loss]!.data[0]), grads };
  }

  /**
   * One step with the optimiser's update: the loss, and the new device state (every key of `stateKeys`). `state`
   * is left as it was; `into`, a state of the same shapes in host memory, receives the new values (so that a
   * CPU run allocates nothing per step); without it, they are new tensors (GPU buffers on WebGPU).
   */
  async runUpdate(
    batch: TrainBatch,
    state: DeviceState,
    scalars: Float32Array,
    rng: Rng,
    into?: DeviceState,
  ): Promise<{ loss: number; next: DeviceState }> {
    if (!this.update) throw new Error('this training step was made without an optimiser update: run it with run');
    const feeds: Record<string, Feed | DeviceTensor> = { ...this.batchFeeds(batch, rng), [NAMES.scalars]: scalars };
    const outputs = [NAMES.loss];
    const fetch: Record<string, DeviceTensor> = {};
    const feed = (input: string, key: string): void => {
      const t = state.get(key);
      if (!t) throw new Error(`the training state lacks "${key}"`);
      feeds[input] = t;
      outputs.push(NAMES.next(key));
      const target = into?.get(key);
      if (target) fetch[NAMES.next(key)] = target;
    };
    for (const n of this.trained) {
      feed(paramInput(n), n);
      for (const slot of this.update.slots) feed(NAMES.slot(`${n}.${slot}`), `${n}.${slot}`);
    }
    const out = await this.compiled.runDevice(feeds, outputs, fetch);
    const next: DeviceState = new Map(this.stateKeys().map((key) => [key, out[NAMES.next(key)]!]));
    return { loss: Number(out[NAMES.loss]!.data[0]), next };
  }

  /** The loss alone (for gradient checks). */
  async loss(batch: TrainBatch, params: ParamSet, rng: Rng): Promise<number> {
    return Number((await this.compiled.run(this.feeds(batch, params, rng), [NAMES.loss]))[NAMES.loss]!.data[0]);
  }

  release(): Promise<void> {
    return this.compiled.release();
  }
}

/** The layout of a text-feature cache entry: a safetensors file of float32 tensors, by the names the model's `text` gives. */
const TEXT_CACHE_FORMAT = 'promptiqa-text-features/1';

/** An entry's features, or undefined where it cannot be read (then they are computed again). */
function readTextFeatures(path: string): Map<string, HostTensor> | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const { tensors } = readSafetensors(path);
    return tensors.size > 0 ? tensors : undefined;
  } catch {
    return undefined;
  }
}

/** sha256 of parameter values: names, shapes and bytes, in name order. */
function paramsDigest(params: ParamSet): string {
  const h = createHash('sha256');
  for (const name of [...params.keys()].sort()) {
    const p = params.get(name)!;
    h.update(`${name}[${p.shape.join(',')}]`);
    h.update(new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength));
  }
  return h.digest('hex');
}

/** Whether two serialised models are the same graph: the same model bytes and the same external data, byte for byte. */
function sameModel(a: SerializedModel, b: SerializedModel): boolean {
  if (Buffer.compare(a.bytes, b.bytes) !== 0 || a.externalData.length !== b.externalData.length) return false;
  return a.externalData.every((x, i) => {
    const y = b.externalData[i]!;
    const shared = x.data.buffer === y.data.buffer && x.data.byteOffset === y.data.byteOffset && x.data.byteLength === y.data.byteLength;
    return x.path === y.path && (shared || Buffer.compare(x.data, y.data) === 0);
  });
}

/**
 * Scores images with a method, its options and its parameters: the scoring step. Used by `createMetric`
 * and by the trainer's validation (with the parameters of the moment).
 */
export class Scorer {
  private readonly sessions: SessionCache;
  /**
   * Views of other sizes than the model's (full images): one graph with the image size left open, for every size
   * at which the graph built is the same (a model that reads any size: CLIP-IQA's ResNet without positional
   * embedding), else a graph per size, a few kept (a positional embedding resized to each size).
   */
  private readonly sizedSessions: SessionCache;
  private anySize: { graph: Promise<CompiledGraph>; model: SerializedModel; sizes: Set<string> } | undefined;
  private textFeeds: Promise<Record<string, Feed>> | null = null;
  private textShapes: Record<string, number[]> = {};
  /** runs one call at a time, so that a graph the size cache lets go is never running */
  private queue: Promise<unknown> = Promise.resolve();

  /**
   * `textCache`: where the text features of these parameters may be kept between runs (they depend only on the
   * method, its options, the weights, the tokenizer and the parameters); null: computed by every scorer.
   */
  constructor(
    readonly setup: MethodSetup,
    private params: ParamSet,
    runtime: RuntimeOptions,
    readonly batchSize = 8,
    private readonly textCache: CacheDir = null,
  ) {
    checkBatchSize(batchSize);
    const { method, options, backbone } = setup;
    if (options.testViews === 'full' && !method.views && !this.wholeImageCheck()) {
      throw new Error(
        `${method.info.name}: testViews=full reads whole images, which needs an image encoder that leaves its positional embedding out or resizes it (${method.imageEncoder ? 'positionalEmbedding=none or interpolated' : `${method.info.name} reads images at ${backbone.weights.config.imageSize} px only`}); use testViews=resize or sliding`,
      );
    }
    this.sessions = new SessionCache(runtime);
    this.sizedSessions = new SessionCache(runtime, 4);
  }

  /** New parameter values (e.g. after a training epoch): the text features are recomputed. */
  setParams(params: ParamSet): void {
    this.params = params;
    this.textFeeds = null;
  }

  private text(): Promise<Record<string, Feed>> {
    this.textFeeds ??= (async () => {
      const entry = this.textCache === null ? undefined : cachePath(this.textCache, 'text', this.textKey(), '.safetensors');
      const cached = entry === undefined ? undefined : readTextFeatures(entry);
      const features = cached ?? (await this.computeText());
      // a missing or unreadable entry is written (again)
      if (entry !== undefined && cached === undefined) writeCacheEntry(entry, safetensorsBytes(Object.fromEntries(features)));
      const feeds: Record<string, Feed> = {};
      this.textShapes = {};
      for (const [k, v] of features) {
        feeds[NAMES.text(k)] = v.data;
        this.textShapes[k] = v.shape;
      }
      return feeds;
    })();
    return this.textFeeds;
  }

  /** The text features by the names the model's `text` gives them, from a run of the text graph. */
  private async computeText(): Promise<Map<string, HostTensor>> {
    // parameters are inputs: one compiled text graph serves every new set of values
    const graph = await this.sessions.get('text', () => textGraph(this.setup, this.params));
    const out = await graph.run(paramFeeds(graph.inputs.keys(), this.params));
    return new Map(
      Object.entries(out).map(([k, v]) => [k.slice(NAMES.text('').length), { shape: v.shape, data: v.data as Float32Array }] as const),
    );
  }

  /** Names everything the text features are computed from: the code (promptiqa's version), method, options, weights, tokenizer, parameters. */
  private textKey(): string {
    const { method, options, backbone } = this.setup;
    return cacheKey({
      format: TEXT_CACHE_FORMAT,
      promptiqa: packageVersion(),
      method: method.info.name,
      options,
      weights: backbone.weights.id,
      tokenizer: backbone.tokenizer.id,
      params: paramsDigest(this.params),
    });
  }

  /**
   * Scores view tensors [3, S, S] in fixed-size batches (the last padded with zeros) of `batch` views:
   * by default `graphBatch(views.length)`. A caller scoring a long list in parts gives one `batch` for all.
   */
  async scoreViews(views: readonly Float32Array[], batch?: number): Promise<number[]> {
    const size = this.setup.backbone.weights.config.imageSize;
    return (
      await this.runViews(
        views.map((v) => squareView(v, size)),
        NAMES.score,
        batch,
      )
    ).map((r) => r[0]!);
  }

  /**
   * One output's row per view. Views of the model's size run in fixed-size batches of `batch` (default
   * `graphBatch` of their count), the last padded with zeros, so a view gets the same result whatever batch
   * it comes in; a view of another size (a full image) runs alone in a graph of its size.
   */
  private runViews(views: readonly View[], output: string, batch?: number): Promise<Float32Array[]> {
    const run = this.queue.then(async () => {
      if (views.length === 0) return [];
      const text = await this.text();
      const size = this.setup.backbone.weights.config.imageSize;
      const rows: Float32Array[] = new Array<Float32Array>(views.length);
      const square = views.flatMap((v, i) => (v.height === size && v.width === size ? [i] : []));
      if (square.length > 0) {
        const b = batch ?? this.graphBatch(square.length);
        const graph = await this.sessions.get(`score|${b}`, () => scoreGraph(this.setup, this.params, b, this.textShapes, size, size));
        await this.runGraph(graph, b, square, views, text, output, rows);
      }
      for (let i = 0; i < views.length; i++) {
        const { height, width } = views[i]!;
        if (height === size && width === size) continue;
        await this.runGraph(await this.graphForSize(height, width), 1, [i], views, text, output, rows);
      }
      return rows;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * The graph for one view of this size: the open-size graph where the graph built at this size serialises the same
   * (it is then the same computation), else one of this size.
   */
  private async graphForSize(height: number, width: number): Promise<CompiledGraph> {
    const key = `${height}x${width}`;
    if (this.anySize?.sizes.has(key)) return this.anySize.graph;
    const open = scoreGraph(this.setup, this.params, 1, this.textShapes, height, width, true);
    if (!this.anySize) {
      const graph = CompiledGraph.create(open, this.sessions.options);
      this.anySize = { graph, model: serialize(open), sizes: new Set([key]) };
      graph.catch(() => (this.anySize = undefined));
      return graph;
    }
    if (sameModel(serialize(open), this.anySize.model)) {
      this.anySize.sizes.add(key);
      return this.anySize.graph;
    }
    return this.sizedSessions.get(`score|1|${key}`, () => scoreGraph(this.setup, this.params, 1, this.textShapes, height, width));
  }

  /** Runs the views `which` (all of one size) through `graph` in batches of `b`, writing `rows[which[j]]`. */
  private async runGraph(
    graph: CompiledGraph,
    b: number,
    which: readonly number[],
    views: readonly View[],
    text: Record<string, Feed>,
    output: string,
    rows: Float32Array[],
  ): Promise<void> {
    const { height, width } = views[which[0]!]!;
    const per = 3 * height * width;
    const pixels = new Float32Array(b * per);
    const params = paramFeeds(graph.inputs.keys(), this.params);
    for (let i = 0; i < which.length; i += b) {
      pixels.fill(0);
      const chunk = which.slice(i, i + b);
      chunk.forEach((v, j) => pixels.set(views[v]!.data, j * per));
      const out = await graph.run({ [NAMES.pixels]: { shape: [b, 3, height, width], data: pixels }, ...text, ...params });
      const o = out[output]!.data as Float32Array;
      const k = o.length / b;
      chunk.forEach((v, j) => (rows[v] = o.slice(j * k, (j + 1) * k)));
    }
  }

  /**
   * The graph batch for n views: the batch size, or the power of two that holds n when that is smaller,
   * so memory goes to at most twice the views there are and a few graph sizes serve every call.
   */
  graphBatch(n: number): number {
    let b = 1;
    while (b < n && b < this.batchSize) b *= 2;
    return Math.min(b, this.batchSize);
  }

  /** The views an image is scored on: the method's own rule, else the common test views. Throws `ImageRefusedError` for an image the method refuses. */
  viewsOf(img: RgbImage): View[] {
    const { method } = this.setup;
    return viewsByRule(this.viewRule(), img, method.views?.bind(method));
  }

  /** How `viewsOf` makes an image's views, as plain data (for a worker thread that makes them alike). */
  viewRule(): ViewRule {
    const { method, options, backbone } = this.setup;
    const c = backbone.weights.config;
    return {
      method: method.info.name,
      options,
      size: c.imageSize,
      ...(this.wholeImageCheck() ? { whole: c } : {}),
      ownViews: method.views !== undefined,
    };
  }

  /** Where the image is read whole: a frozen encoder that leaves its positional embedding out or resizes it ('native' is the default). */
  private wholeImageCheck(): WholeImageCheck | undefined {
    const { method, options, backbone } = this.setup;
    const encoder = method.imageInput === 'features' ? method.imageEncoder?.(options, backbone.weights) : undefined;
    const c = backbone.weights.config;
    return (encoder?.positionalEmbedding ?? 'native') !== 'native' ? (w, h) => wholeImageRefusal(c, w, h) : undefined;
  }

  /** Scores decoded images: each image's score is the mean over its views, or the model's `combineViews` of them. */
  async scoreImages(images: readonly RgbImage[], batch?: number): Promise<number[]> {
    return this.scoreViewSets(
      images.map((img) => this.viewsOf(img)),
      batch,
    );
  }

  /** Scores images given as their views (`viewsOf`), one list per image. */
  async scoreViewSets(views: ReadonlyArray<readonly View[]>, batch?: number): Promise<number[]> {
    const combine = this.setup.model.combineViews?.bind(this.setup.model);
    const flat = await this.runViews(views.flat(), combine ? NAMES.perView : NAMES.score, batch);
    let k = 0;
    return views.map((v) => {
      const rows = flat.slice(k, (k += v.length));
      if (combine) return combine(rows);
      let sum = 0;
      for (const r of rows) sum += r[0]!;
      return sum / v.length;
    });
  }

  async close(): Promise<void> {
    await this.queue;
    await this.sessions.clear();
    await this.sizedSessions.clear();
    const any = this.anySize;
    this.anySize = undefined;
    if (any) await (await any.graph.catch(() => undefined))?.release();
  }
}
