/**
 * The Metric object: a method set up on its backbone with its parameters, scoring paths, buffers or decoded
 * images, singly or in batches. Images are always run in batches of one fixed size (the last one padded), so an
 * image gets the same score whatever batch it comes in.
 */
import type { Provider, RuntimeOptions } from '../graph/runtime.js';
import { type MethodInfo } from './method.js';
import { ImageRefusedError, type View } from './views.js';
import { type MethodSetup, Scorer, checkBatchSize } from './graphs.js';
import { type ParamSet } from '../prompts/context.js';
import { type HubOptions } from '../clip/hub.js';
import { type PretrainedFile } from './pretrained.js';
import { decodeImage, ImageDecodeError, type DecodeOptions } from '../data/image.js';
import type { RgbImage } from '../data/rgb.js';
import { type CacheDir } from '../util/cache.js';
import { PrepareFault, PreparePool, checkDecodeThreads } from './prepare-pool.js';
import type { PrepareInput } from './prepare-worker.js';
import { BUILTIN_METHODS } from './registry.js';

export interface MetricOptions {
  model?: string;
  checkpoint?: string;
  /** one of DEVICE_TYPES (default cpu); one whose provider cannot work here is refused by createMetric */
  device?: Provider;
  /** CPU threads, 1 to MAX_THREADS_PER_CORE × the cores (default: all cores); more than the cores is warned of (onWarning) */
  threads?: number;
  /** images per batch, 1 to MAX_BATCH (default 8) */
  batchSize?: number;
  /**
   * the method's options (`key: value`, read by its schema: a value may be given as typed on the command line,
   * `'16'` for 16); with a checkpoint, only those that do not change its tensors; `allowUntrained: true` scores a
   * trainable method with its initial parameters
   */
  methodOptions?: Record<string, unknown>;
  /** told what is allowed but unwise (e.g. more threads than cores); the library prints nothing */
  onWarning?: (message: string) => void;
  /** where a pretrained metric's files are downloaded from and cached (default: the HF_* environment) */
  hub?: HubOptions;
  /** told where each file of a pretrained metric came from (repo, commit, local path); the library prints nothing */
  onFile?: (file: PretrainedFile) => void;
  /**
   * accept tensors that a released file (given as the checkpoint, or a pretrained metric's files) should not
   * carry, for a custom file made to carry them; by default they are refused by name, as pyiqa's strict load
   * refuses them (the command's --allow-extra-tensors)
   */
  allowExtraTensors?: boolean;
  /**
   * where digests of weight files and text features of fixed prompts are kept between runs: a folder, or false for
   * none (the command's --no-cache); default PROMPTIQA_CACHE, else $XDG_CACHE_HOME/promptiqa, else ~/.cache/promptiqa
   */
  cache?: string | false;
  /**
   * Turn image files and bytes as their EXIF orientation tag says. Default false: the pixels as stored, as PIL's
   * `Image.open(...).convert('RGB')` reads them in pyiqa and the methods' own code (see `DecodeOptions`).
   */
  applyExifOrientation?: boolean;
  /**
   * Worker threads that decode images and make their views (resize, crop, normalise) while the graph runs, 0 to 64:
   * 0 does it in the main thread. Default `defaultDecodeThreads(device)`: on the CPU 1 (2 from 16 cores), on a GPU
   * all cores but one, at most 8. Scores are the same either way, bit for bit.
   */
  decodeThreads?: number;
}

export type ImageInput = string | Uint8Array | RgbImage;
export type ScoreResult = { file: string; score: number } | { file: string; error: string };

/**
 * What makes a metric's scores what they are, as an output records it: two runs whose sources differ do not
 * belong in one file (a resumed output is checked against it).
 */
export interface MetricSource {
  method: string;
  /** pyiqa's pretrained set-up, by name, where the metric is one */
  pretrained?: string;
  /** the checkpoint: promptiqa's (the sha256 of its tensors) or a released file (its sha256) */
  checkpoint?: { path: string; sha256: string };
  /** the CLIP, as named, and the identity of its weights (their sha256) */
  model: { name: string; id: string };
  /** every option of the method, defaults included */
  options: Record<string, unknown>;
  scoreRange: [number, number];
  /** present (true) where images are turned by their EXIF orientation before scoring (not pyiqa's default) */
  applyExifOrientation?: true;
}

export interface Metric {
  readonly info: MethodInfo;
  readonly source: MetricSource;
  score(input: ImageInput): Promise<number>;
  scoreBatch(inputs: readonly ImageInput[]): Promise<number[]>;
  scoreFiles(files: readonly string[]): AsyncGenerator<ScoreResult>;
  close(): Promise<void>;
}

export function describeValue(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (typeof v === 'string') return v === '' ? 'an empty string' : 'a string';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? `an object with keys ${Object.keys(v).slice(0, 5).join(', ') || '(none)'}` : `a ${typeof v}`;
}

/** Checks what the library was given, so that a wrong value fails with a sentence, not deep in ONNX Runtime. */
function checkInput(input: unknown, where: string): asserts input is ImageInput {
  if (typeof input === 'string' && input !== '') return;
  if (input instanceof Uint8Array) return;
  const img = input as Partial<RgbImage> | null | undefined;
  if (
    img &&
    typeof img === 'object' &&
    Number.isSafeInteger(img.width) &&
    Number.isSafeInteger(img.height) &&
    img.width! > 0 &&
    img.height! > 0 &&
    img.data instanceof Uint8Array
  ) {
    if (img.data.length !== img.width! * img.height! * 3) {
      throw new TypeError(
        `${where}: a decoded image of ${img.width}x${img.height} needs ${img.width! * img.height! * 3} bytes of RGB data, not ${img.data.length}`,
      );
    }
    return;
  }
  throw new TypeError(
    `${where}: expected an image file path, its bytes (Uint8Array) or a decoded image {width, height, data}; got ${describeValue(input)}`,
  );
}

async function toImage(input: ImageInput, decode: DecodeOptions = {}): Promise<RgbImage> {
  if (typeof input === 'string' || input instanceof Uint8Array) return decodeImage(input, decode);
  return input;
}

const isDecoded = (input: ImageInput): input is RgbImage => typeof input !== 'string' && !(input instanceof Uint8Array);

/** An input as the preparation pool takes it (bytes and images are copied to the worker: the caller keeps them). */
function poolInput(input: ImageInput): PrepareInput {
  if (typeof input === 'string') return { path: input };
  if (input instanceof Uint8Array) return { bytes: input };
  return { image: input };
}

/** The problem without the file name, which a ScoreResult gives beside it. */
function problemOf(err: unknown): string {
  if (err instanceof ImageDecodeError) return err.problem;
  return err instanceof Error ? err.message : String(err);
}

/**
 * The metric of a method set up on a backbone with its parameters: what `createMetric` returns once it has
 * found them (and what a benchmark builds on random weights, to time the same scoring).
 */
export function metricFor(
  setup: MethodSetup,
  params: ParamSet,
  runtime: RuntimeOptions,
  batch = 8,
  textCache: CacheDir = null,
  from: Pick<MetricSource, 'pretrained' | 'checkpoint'> = {},
  decode: DecodeOptions = {},
  decodeThreads = 0,
): Metric {
  checkBatchSize(batch);
  checkDecodeThreads(decodeThreads);
  const { method } = setup;
  const scorer = new Scorer(setup, params, runtime, batch, textCache);
  // workers make the views with the method's rule where they know the method (a caller's own method with views of
  // its own is not in their registry: they decode, the views are made here)
  const known = !method.views || BUILTIN_METHODS.includes(method);
  const pool = decodeThreads > 0 ? new PreparePool(decodeThreads, known ? scorer.viewRule() : null, decode) : undefined;
  /** An image's views, or the error that is its result (a decode failure, an image the method refuses). */
  const prepare = async (input: ImageInput): Promise<View[] | Error> => {
    const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));
    if (pool?.makesViews) return pool.views(poolInput(input));
    try {
      const img = pool && !isDecoded(input) ? await pool.image(poolInput(input)) : await toImage(input, decode);
      if (img instanceof Error) return img;
      return scorer.viewsOf(img);
    } catch (err) {
      return err instanceof ImageRefusedError || err instanceof ImageDecodeError
        ? err
        : new PrepareFault(asError(err).message, { cause: err });
    }
  };
  /** Every image's views, or the first failure (by position) thrown, as decoding and `scoreImages` throw it. */
  const prepareAll = async (inputs: readonly ImageInput[]): Promise<View[][]> => {
    const views = await Promise.all(inputs.map(prepare));
    const failed = views.find((v): v is Error => v instanceof Error);
    if (failed) throw failed;
    return views as View[][];
  };
  const source: MetricSource = {
    method: method.info.name,
    ...from,
    model: { name: setup.backbone.model, id: setup.backbone.weights.id },
    options: { ...setup.options },
    scoreRange: [...method.info.scoreRange],
    ...(decode.applyExifOrientation ? { applyExifOrientation: true as const } : {}),
  };
  let closed = false;
  const checkOpen = (where: string): void => {
    if (closed) throw new Error(`${where}: this metric was closed (close() frees its sessions); make another with createMetric`);
  };
  return {
    info: { ...method.info },
    source,
    async score(input) {
      checkOpen('score');
      checkInput(input, 'score');
      if (!pool) return (await scorer.scoreImages([await toImage(input, decode)]))[0]!;
      return (await scorer.scoreViewSets(await prepareAll([input])))[0]!;
    },
    async scoreBatch(inputs) {
      checkOpen('scoreBatch');
      if (!Array.isArray(inputs)) throw new TypeError(`scoreBatch: expected an array of images; got ${describeValue(inputs)}`);
      inputs.forEach((x, i) => checkInput(x, `scoreBatch: image ${i}`));
      if (!pool) return scorer.scoreImages(await Promise.all(inputs.map((x: ImageInput) => toImage(x, decode))));
      const views = await prepareAll(inputs);
      checkOpen('scoreBatch');
      return scorer.scoreViewSets(views);
    },
    async *scoreFiles(files: readonly string[]) {
      checkOpen('scoreFiles');
      // a library caller may pass anything; checked as unknown so the check does not widen the type
      const given: unknown = files;
      if (!Array.isArray(given)) throw new TypeError(`scoreFiles: expected an array of file paths; got ${describeValue(files)}`);
      files.forEach((f, i) => {
        if (typeof f !== 'string' || f === '') throw new TypeError(`scoreFiles: file ${i}: expected a path; got ${describeValue(f)}`);
      });
      // one graph for every part, sized to the files there are
      const graphBatch = scorer.graphBatch(Math.min(batch, files.length));
      // decoding runs on libuv's threads, or the pool's: the next part is prepared while this one is scored (a
      // failure is that file's result); with the pool, the views are made there too
      const decodeAll = (chunk: readonly string[]): Promise<Array<RgbImage | View[] | Error>> =>
        Promise.all(
          chunk.map((f) =>
            pool ? prepare(f) : decodeImage(f, decode).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))),
          ),
        );
      let next = decodeAll(files.slice(0, batch));
      for (let i = 0; i < files.length; i += batch) {
        const chunk = files.slice(i, i + batch);
        const decoded = await next;
        checkOpen('scoreFiles');
        if (i + batch < files.length) next = decodeAll(files.slice(i + batch, i + 2 * batch));
        // a fault in making views is thrown, as in the main thread (only the method's refusal is the image's error)
        const fault = decoded.find((d) => d instanceof PrepareFault);
        if (fault) throw fault;
        // an image the method refuses (e.g. too small for its windows) is that image's error, as a decode failure is
        const views = decoded.map((d) => {
          if (d instanceof Error || Array.isArray(d)) return d;
          try {
            return scorer.viewsOf(d);
          } catch (err) {
            if (err instanceof ImageRefusedError) return err;
            throw err;
          }
        });
        const ok = views.filter((v): v is View[] => !(v instanceof Error));
        const scores = ok.length ? await scorer.scoreViewSets(ok, graphBatch) : [];
        let k = 0;
        for (let j = 0; j < chunk.length; j++) {
          const d = views[j]!;
          if (d instanceof Error) yield { file: chunk[j]!, error: problemOf(d) };
          else yield { file: chunk[j]!, score: scores[k++]! };
        }
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await pool?.close();
      await scorer.close();
    },
  };
}
