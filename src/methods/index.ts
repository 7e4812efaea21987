/**
 * The scoring API: `createMetric(name, {model, checkpoint, device})` returns an object that scores
 * paths, buffers or decoded images, singly or in batches. Images are always run in batches of one fixed
 * size (the last one padded), so an image gets the same score whatever batch it comes in.
 */
import type { Provider, RuntimeOptions } from '../graph/runtime.js';
import { checkRunSettings } from '../graph/settings.js';
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { type Method, type MethodInfo, type Options, parseOptions } from './method.js';
import { describeSchema, readOption, spec, withLegacyValues } from './options.js';
import { clipIqa, clipIqaPlus } from './clip-iqa.js';
import { tang } from './tang.js';
import { fu } from './fu.js';
import { mpIqe } from './mp-iqe.js';
import { liqe, liqeMix } from './liqe.js';
import { ImageRefusedError, type View } from './views.js';
import { type Backbone, type BackboneSource, type MethodSetup, Scorer, checkBatchSize, setUp } from './graphs.js';
import { type ParamSet } from '../prompts/context.js';
import { WeightError, loadClipWeights, refuseExtraTensors } from '../clip/weights.js';
import { checkArch, describeArch } from '../clip/arch.js';
import { ClipTokenizer } from '../clip/tokenizer.js';
import { openTensorFile } from '../clip/tensor-file.js';
import { resolveModel, type HubOptions } from '../clip/hub.js';
import {
  PRETRAINED,
  type PretrainedFile,
  type PretrainedMetric,
  checkPretrainedClip,
  describePretrained,
  findReleased,
  fetchPretrained,
  findPretrained,
  modelWayOut,
  withWayOut,
} from './pretrained.js';
import { decodeImage, ImageDecodeError, type DecodeOptions } from '../data/image.js';
import type { RgbImage } from '../data/rgb.js';
import { loadCheckpoint, describeBackbone, type CheckpointMeta } from './checkpoint.js';
import { Rng } from '../util/rng.js';
import { type CacheDir, resolveCacheDir } from '../util/cache.js';
import { fileDigest } from '../util/hash.js';

export type { MethodInfo, Method, MethodModel, AuxiliaryTarget, Predictions, Options } from './method.js';
export { Scorer, checkBatchSize, MAX_BATCH } from './graphs.js';
export { PRETRAINED, PYIQA_WEIGHTS_REPO, describePretrained, fetchPretrained, findPretrained } from './pretrained.js';
export type { PretrainedFile, PretrainedMetric } from './pretrained.js';

const registry: Method[] = [clipIqa, clipIqaPlus, tang, fu, mpIqe, liqe, liqeMix];

/** The registered methods, in the order `promptiqa methods` lists them. */
export const METHODS: readonly Method[] = registry;

/**
 * Adds a method to the registry: a method is its own file and this one line (or a call from a library
 * user's code). Its defaults and presets are checked now, so a bad declaration fails at start-up.
 */
export function registerMethod(method: Method): void {
  const name = method.info.name;
  if (!/^[a-z][a-z0-9+-]*$/.test(name)) throw new Error(`method name "${name}": use lower-case letters, digits, + and -`);
  if (registry.some((m) => m.info.name === name)) throw new Error(`a method named "${name}" is already registered`);
  parseOptions(method, {});
  for (const preset of Object.keys(method.presets ?? {})) parseOptions(method, { preset });
  registry.push(method);
}

export function getMethod(name: string): Method {
  const m = METHODS.find((x) => x.info.name === name);
  if (!m) throw new Error(`unknown method "${name}" (methods: ${METHODS.map((x) => x.info.name).join(', ')})`);
  return m;
}

/** A method as `promptiqa methods --json` lists it: what it is, its options (kind, default, what it takes) and its presets. */
export interface MethodDescription extends MethodInfo {
  options: ReturnType<typeof describeSchema>;
  presets: Array<{ name: string; description: string; options: Record<string, unknown> }>;
  /** what a released file given as its checkpoint holds, for methods that read one */
  released?: string;
}

export function listMetrics(): MethodDescription[] {
  return METHODS.map((m) => ({
    ...m.info,
    options: describeSchema(m.options),
    ...(m.released ? { released: m.released.describe } : {}),
    presets: Object.entries(m.presets ?? {}).map(([name, p]) => ({ name, description: p.description, options: { ...p.options } })),
  }));
}

const backbones = new Map<string, Promise<Backbone>>();

/**
 * Loads (once per process) a CLIP from a folder, a single weights file (safetensors, or PyTorch's .pt/.pth:
 * OpenAI's released files, state dicts) or a hub repo id (at `revision`, default main), and notes where it
 * was found: the absolute path, or the repo and the commit of its files. A single file is tokenised with
 * CLIP's own vocabulary (shipped with the package).
 */
export function loadBackbone(model: string, revision?: string, cache: CacheDir = resolveCacheDir(undefined)): Promise<Backbone> {
  const key = revision === undefined ? model : `${model}@${revision}`;
  let p = backbones.get(key);
  if (!p) {
    p = (async () => {
      const stat = statSync(model, { throwIfNoEntry: false });
      if (stat?.isFile() && revision === undefined) {
        const weights = await loadClipWeights(model, { cache });
        return { weights, tokenizer: ClipTokenizer.default(), model, source: { path: resolve(model) } };
      }
      const local = stat?.isDirectory() === true;
      const found = await resolveModel(model, revision === undefined ? undefined : { revision }).catch((err: unknown) => {
        throw withWayOut(err, modelWayOut(model));
      });
      const single = statSync(found).isFile();
      const tokenizer = ClipTokenizer.forModel(found); // before the weights: a broken file fails fast
      const weights = await loadClipWeights(found, { cache });
      // a hub download lives in snapshots/<commit>
      const source: BackboneSource = local
        ? { path: resolve(model) }
        : { repo: model, revision: basename(single ? dirname(found) : found) };
      return { weights, tokenizer, model, source };
    })();
    backbones.set(key, p);
    p.catch(() => backbones.delete(key));
  }
  return p;
}

/** The tokenizer of a model as `loadBackbone` would load it, without loading its weights. */
async function loadTokenizer(model: string): Promise<ClipTokenizer> {
  return ClipTokenizer.forModel(statSync(model, { throwIfNoEntry: false })?.isFile() ? model : await resolveModel(model));
}

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

/**
 * A checkpoint's parameters, options and backbone: the backbone it records unless `opts.model` overrides
 * it (the weights must be the same either way), and its tensors checked against the shapes its method
 * and options call for, so an option that changes them (e.g. nCtx) is refused by name.
 */
async function fromCheckpoint(method: Method, checkpoint: string, opts: MetricOptions): Promise<Loaded> {
  if (isReleasedFile(checkpoint)) return fromReleasedFile(method, checkpoint, opts);
  const { base, meta, params } = loadCheckpoint(checkpoint);
  if (meta.method !== method.info.name)
    throw new Error(`${checkpoint}: a checkpoint of method "${meta.method}", not "${method.info.name}"`);
  const recorded = describeBackbone(meta.backbone);
  let backbone: Backbone;
  if (opts.model !== undefined) {
    backbone = await loadBackbone(opts.model, undefined, resolveCacheDir(opts.cache));
  } else {
    try {
      backbone = await loadBackbone(
        'repo' in meta.backbone ? meta.backbone.repo : meta.backbone.path,
        'repo' in meta.backbone ? meta.backbone.revision : undefined,
        resolveCacheDir(opts.cache),
      );
    } catch (err) {
      throw new Error(
        `${checkpoint}: cannot load the backbone recorded in ${base}.json (${recorded}): ${(err as Error).message}; --model (the \`model\` option) overrides it with another copy of the same weights (${meta.backbone.id})`,
      );
    }
  }
  if (backbone.weights.id !== meta.backbone.id) {
    throw new Error(
      `${checkpoint} was trained on backbone ${recorded} (${meta.backbone.id.slice(0, 19)}…), not on ${backbone.model} (${backbone.weights.id.slice(0, 19)}…): refusing to score with mismatched weights`,
    );
  }
  // a preset names a whole set-up, which the checkpoint's own recorded options would silently override
  if (opts.methodOptions && 'preset' in opts.methodOptions)
    throw new Error(`${checkpoint}: option preset sets up training; a checkpoint keeps the options it was trained with (in ${base}.json)`);
  let options: Options;
  try {
    options = parseOptions(method, { ...withLegacyValues(method.options, meta.options), ...(opts.methodOptions ?? {}) });
  } catch (err) {
    throw new Error(`${checkpoint}: ${(err as Error).message} (with the options recorded in ${base}.json)`, { cause: err });
  }
  const setup = setUp(method, options, backbone);
  // the options given, as the schema read them (the command line gives text): compared with those recorded
  const asRead = Object.fromEntries(
    Object.keys(opts.methodOptions ?? {}).map((k) => [k, (options as unknown as Record<string, unknown>)[k]]),
  );
  checkTensors(checkpoint, meta, params, setup.model.init(new Rng(0)), asRead);
  return { params, setup, checkpoint: { path: resolve(checkpoint), sha256: meta.tensors.sha256 } };
}

/** A weights file that is not one of promptiqa's checkpoints (which are a .json beside a .safetensors). */
function isReleasedFile(path: string): boolean {
  if (statSync(path, { throwIfNoEntry: false })?.isFile() !== true) return false;
  if (/\.(pt|pth|bin|ckpt)$/i.test(path)) return true;
  return /\.safetensors$/i.test(path) && !existsSync(path.replace(/\.safetensors$/i, '.json'));
}

/**
 * A released file as the checkpoint: a whole CLIP that becomes the backbone (with `--model`'s tokenizer, if
 * given), or the method's learned parameters on the backbone `--model` names (default the method's).
 */
async function fromReleasedFile(method: Method, file: string, opts: MetricOptions): Promise<Loaded> {
  const released = method.released;
  if (!released) {
    throw new Error(
      `${file}: not a promptiqa checkpoint (a folder, or checkpoint.json beside checkpoint.safetensors), and ${method.info.name} reads no released file`,
    );
  }
  const methodOptions = opts.methodOptions ?? {};
  if (released.holds === 'backbone') {
    const weights = await loadBackbone(file, undefined, resolveCacheDir(opts.cache));
    if (!opts.allowExtraTensors)
      refuseExtraTensors(file, weights.weights.extraTensors, `the CLIP it holds (${describeArch(weights.weights.config)})`);
    const tokenizer = opts.model !== undefined ? await loadTokenizer(opts.model) : weights.tokenizer;
    try {
      const setup = setUp(method, parseOptions(method, methodOptions), { ...weights, tokenizer });
      return { params: setup.model.init(new Rng(0)), setup, checkpoint: await releasedIdentity(file, opts) };
    } catch (err) {
      // the method's check of the CLIP it runs on (LIQE's ViT-B/32), about this file
      if (err instanceof WeightError) throw new WeightError(`${file}: ${err.message}`, { cause: err });
      throw err;
    }
  }
  const backbone = await loadBackbone(opts.model ?? method.info.defaultModel, undefined, resolveCacheDir(opts.cache));
  // a file under the name of one of pyiqa's released files is for the CLIP that set-up names (its RN50 prompts fit
  // a ViT-B/32's text width, but pyiqa never runs them there)
  const known = findReleased(method.info.name, basename(file));
  if (known) checkArch(backbone.weights.config, known.arch, `pyiqa's ${known.pyiqa} (${known.released})`, file);
  const tensors = openTensorFile(file);
  let read: ReturnType<typeof released.read>;
  try {
    read = released.read(tensors, backbone.weights);
  } finally {
    tensors.close();
  }
  if (!opts.allowExtraTensors) refuseExtraTensors(file, read.unexpected, released.describe);
  const setup = setUp(method, parseOptions(method, { ...read.options, ...methodOptions }), backbone);
  const expected = setup.model.init(new Rng(0));
  for (const [k, want] of expected) {
    const have = read.params.get(k);
    if (!have || have.shape.join(',') !== want.shape.join(',')) {
      throw new Error(
        `${file}: ${released.describe}: tensor "${k}" is ${have ? `[${have.shape.join(', ')}]` : 'missing'} where [${want.shape.join(', ')}] is expected with these options`,
      );
    }
  }
  return { params: read.params, setup, checkpoint: await releasedIdentity(file, opts) };
}

/** A metric's parameters and set-up, and the checkpoint they came from. */
interface Loaded {
  params: ParamSet;
  setup: MethodSetup;
  checkpoint?: MetricSource['checkpoint'];
}

async function releasedIdentity(file: string, opts: MetricOptions): Promise<MetricSource['checkpoint']> {
  return { path: resolve(file), sha256: await fileDigest(file, resolveCacheDir(opts.cache)) };
}

/** Refuses a checkpoint whose tensors are not those the method, with these options, reads; `methodOptions`: those given, as read. */
function checkTensors(
  checkpoint: string,
  meta: CheckpointMeta,
  params: ParamSet,
  expected: ParamSet,
  methodOptions: Record<string, unknown>,
): void {
  const problems: string[] = [];
  for (const [k, want] of expected) {
    const have = params.get(k);
    if (!have) problems.push(`tensor "${k}" is missing`);
    else if (have.shape.join(',') !== want.shape.join(','))
      problems.push(`tensor "${k}" is [${have.shape.join(', ')}] where [${want.shape.join(', ')}] is expected`);
  }
  for (const k of params.keys()) if (!expected.has(k)) problems.push(`tensor "${k}" is not one the method reads`);
  if (!problems.length) return;
  const changed = Object.entries(methodOptions).filter(([k, v]) => JSON.stringify(v) !== JSON.stringify(meta.options[k]));
  const why = changed.length
    ? `the options given (${changed.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}) differ from those it was trained with (${changed.map(([k]) => `${k}=${JSON.stringify(meta.options[k])}`).join(', ')}); drop them`
    : 'it does not fit this version of the method';
  throw new Error(
    `${checkpoint}: ${problems.slice(0, 3).join('; ')}${problems.length > 3 ? ` (and ${problems.length - 3} more)` : ''}: ${why}`,
  );
}

function describeValue(v: unknown): string {
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

/** The problem without the file name, which a ScoreResult gives beside it. */
function problemOf(err: unknown): string {
  if (err instanceof ImageDecodeError) return err.problem;
  return err instanceof Error ? err.message : String(err);
}

/**
 * A pretrained metric: its files downloaded once (cached, checked), then the method built with pyiqa's
 * options (those given override them) on its CLIP and released file.
 */
async function fromPretrained(p: PretrainedMetric, opts: MetricOptions): Promise<Loaded> {
  const method = getMethod(p.method);
  const files = await fetchPretrained(p, opts.hub, opts.onFile);
  // allowUntrained only matters without weights, and a pretrained metric has them
  const { allowUntrained: _unused, ...rest } = opts.methodOptions ?? {};
  const methodOptions = { ...p.options, ...rest };
  if (files.clip !== undefined) {
    // the set-up's CLIP, as pyiqa loads it: of the architecture it names, and strictly
    const clip = await loadBackbone(files.clip, undefined, resolveCacheDir(opts.cache));
    checkPretrainedClip(p, clip.weights, files.clip, opts.allowExtraTensors === true);
  }
  if (files.released !== undefined) return fromReleasedFile(method, files.released, { ...opts, model: files.clip, methodOptions });
  const setup = setUp(method, parseOptions(method, methodOptions), await loadBackbone(files.clip!, undefined, resolveCacheDir(opts.cache)));
  return { params: setup.model.init(new Rng(0)), setup };
}

/**
 * What a name given as the method stands for: with neither a model nor a checkpoint, pyiqa's pretrained
 * set-up of that name where there is one; else the method of that name. An unknown name is refused with the
 * choices, a pretrained set-up's own name given with a model or checkpoint with the method to use instead.
 */
export function resolveMethodName(
  name: string,
  given: { model?: string; checkpoint?: string } = {},
): { method: Method; pretrained?: PretrainedMetric } {
  const pretrained = findPretrained(name);
  if (pretrained && given.model === undefined && !given.checkpoint) return { method: getMethod(pretrained.method), pretrained };
  if (pretrained && !METHODS.some((m) => m.info.name === name)) {
    throw new Error(
      `"${name}" is pyiqa's pretrained ${pretrained.method} (${describePretrained(pretrained)}): use it without a model or checkpoint, or use method "${pretrained.method}" with them`,
    );
  }
  try {
    return { method: getMethod(name) };
  } catch (err) {
    throw new Error(`${(err as Error).message}; pretrained (without a model or checkpoint): ${PRETRAINED.map((p) => p.name).join(', ')}`, {
      cause: err,
    });
  }
}

/**
 * A metric by name. With neither `model` nor `checkpoint`, a name in the pretrained registry (PRETRAINED:
 * clip-iqa, clip-iqa+, liqe, …) downloads pyiqa's set-up once and caches it; otherwise the method runs on
 * `model` (default its `defaultModel`) or a checkpoint, ours or a released file.
 */
export async function createMetric(name: string, opts: MetricOptions = {}): Promise<Metric> {
  const settings = checkMetricOptions(opts);
  const { method, pretrained } = resolveMethodName(name, opts);
  const batch = settings.batchSize ?? 8;
  let params: ParamSet;
  let setup: MethodSetup;
  let checkpoint: MetricSource['checkpoint'];
  if (pretrained) {
    ({ params, setup, checkpoint } = await fromPretrained(pretrained, opts));
  } else if (opts.checkpoint) {
    ({ params, setup, checkpoint } = await fromCheckpoint(method, opts.checkpoint, opts));
  } else {
    const allowUntrained = readOption('createMetric', ALLOW_UNTRAINED, 'allowUntrained', opts.methodOptions?.allowUntrained ?? false);
    if (method.info.trainable && !allowUntrained) {
      throw new Error(`${name} needs a trained checkpoint (--checkpoint); train one with \`promptiqa train --method ${name}\``);
    }
    const { allowUntrained: _unused, ...rest } = opts.methodOptions ?? {};
    const options = parseOptions(method, rest);
    setup = setUp(method, options, await loadBackbone(opts.model ?? method.info.defaultModel, undefined, resolveCacheDir(opts.cache)));
    params = setup.model.init(new Rng(0));
  }
  const source = { ...(pretrained ? { pretrained: pretrained.name } : {}), ...(checkpoint ? { checkpoint } : {}) };
  const decode = { applyExifOrientation: opts.applyExifOrientation ?? false };
  return metricFor(
    setup,
    params,
    { provider: settings.provider, threads: settings.threads },
    batch,
    resolveCacheDir(opts.cache),
    source,
    decode,
  );
}

/** `methodOptions.allowUntrained`, read as the schema reads a boolean (the command line gives "true"/"false"). */
const ALLOW_UNTRAINED = spec.boolean(false, 'score a trainable method with its initial parameters');

/** The names createMetric takes, and what a likely slip stands for. */
const METRIC_OPTIONS: ReadonlyArray<keyof MetricOptions> = [
  'model',
  'checkpoint',
  'device',
  'threads',
  'batchSize',
  'methodOptions',
  'allowExtraTensors',
  'applyExifOrientation',
  'onWarning',
  'hub',
  'onFile',
  'cache',
];
const METRIC_OPTION_SLIPS: Readonly<Record<string, keyof MetricOptions>> = {
  batch: 'batchSize',
  options: 'methodOptions',
  provider: 'device',
};

/**
 * Everything createMetric is given, checked before any file is read: unknown names (a slip such as `batch` for
 * `batchSize` would be ignored), the types, and the device, threads and batch size by the checks the command line's
 * parsers use (`checkRunSettings`: a device whose provider cannot work here is refused now, not at the first score).
 */
function checkMetricOptions(opts: MetricOptions): ReturnType<typeof checkRunSettings> {
  const o = opts as unknown;
  if (typeof o !== 'object' || o === null || Array.isArray(o))
    throw new TypeError(`createMetric: expected an options object { model, checkpoint, device, ... }; got ${describeValue(o)}`);
  for (const k of Object.keys(opts)) {
    if ((METRIC_OPTIONS as readonly string[]).includes(k)) continue;
    const slip = METRIC_OPTION_SLIPS[k];
    throw new TypeError(
      `createMetric: unknown option ${k}${slip ? ` (did you mean ${slip}?)` : ''}; the options are ${METRIC_OPTIONS.join(', ')}`,
    );
  }
  for (const k of ['model', 'checkpoint'] as const) {
    const v: unknown = opts[k];
    if (v !== undefined && (typeof v !== 'string' || v === ''))
      throw new TypeError(`createMetric: option ${k} must be a non-empty string; got ${describeValue(v)}`);
  }
  const m: unknown = opts.methodOptions;
  if (m !== undefined && (typeof m !== 'object' || m === null || Array.isArray(m)))
    throw new TypeError(`createMetric: option methodOptions must be an object of the method's options; got ${describeValue(m)}`);
  for (const k of ['onWarning', 'onFile'] as const) {
    if (opts[k] !== undefined && typeof opts[k] !== 'function') throw new TypeError(`createMetric: option ${k} must be a function`);
  }
  const settings = checkRunSettings('createMetric', opts);
  for (const w of settings.warnings) opts.onWarning?.(w);
  if (settings.note) opts.onWarning?.(`device ${settings.provider}: ${settings.note}`);
  return settings;
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
): Metric {
  checkBatchSize(batch);
  const { method } = setup;
  const scorer = new Scorer(setup, params, runtime, batch, textCache);
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
      return (await scorer.scoreImages([await toImage(input, decode)]))[0]!;
    },
    async scoreBatch(inputs) {
      checkOpen('scoreBatch');
      if (!Array.isArray(inputs)) throw new TypeError(`scoreBatch: expected an array of images; got ${describeValue(inputs)}`);
      inputs.forEach((x, i) => checkInput(x, `scoreBatch: image ${i}`));
      return scorer.scoreImages(await Promise.all(inputs.map((x: ImageInput) => toImage(x, decode))));
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
      // decoding runs on libuv's threads: the next part decodes while this one is scored (a failure is that file's result)
      const decodeAll = (chunk: readonly string[]): Promise<Array<RgbImage | Error>> =>
        Promise.all(
          chunk.map((f) => decodeImage(f, decode).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))))),
        );
      let next = decodeAll(files.slice(0, batch));
      for (let i = 0; i < files.length; i += batch) {
        const chunk = files.slice(i, i + batch);
        const decoded = await next;
        checkOpen('scoreFiles');
        if (i + batch < files.length) next = decodeAll(files.slice(i + batch, i + 2 * batch));
        // an image the method refuses (e.g. too small for its windows) is that image's error, as a decode failure is
        const views = decoded.map((d) => {
          if (d instanceof Error) return d;
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
      await scorer.close();
    },
  };
}
