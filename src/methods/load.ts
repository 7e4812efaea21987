/**
 * Where a metric's parameters come from: one of promptiqa's checkpoints, a released file (pyiqa's, checked as
 * pyiqa's strict load checks it) or a pretrained set-up downloaded from the hub.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { type Method, type Options, parseOptions } from './method.js';
import { withLegacyValues } from './options.js';
import { type Backbone, type MethodSetup, setUp } from './graphs.js';
import { type ParamSet } from '../prompts/context.js';
import { WeightError, refuseExtraTensors } from '../clip/weights.js';
import { checkArch, describeArch } from '../clip/arch.js';
import { openTensorFile } from '../clip/tensor-file.js';
import { type PretrainedMetric, checkPretrainedClip, findReleased, fetchPretrained } from './pretrained.js';
import { loadCheckpoint, describeBackbone, type CheckpointMeta } from './checkpoint.js';
import { Rng } from '../util/rng.js';
import { resolveCacheDir } from '../util/cache.js';
import { fileDigest } from '../util/hash.js';
import { getMethod } from './registry.js';
import { loadBackbone, loadTokenizer } from './backbone.js';
import type { MetricOptions, MetricSource } from './metric.js';

/** A metric's parameters and set-up, and the checkpoint they came from. */
export interface Loaded {
  params: ParamSet;
  setup: MethodSetup;
  checkpoint?: MetricSource['checkpoint'];
}

/**
 * A checkpoint's parameters, options and backbone: the backbone it records unless `opts.model` overrides
 * it (the weights must be the same either way), and its tensors checked against the shapes its method
 * and options call for, so an option that changes them (e.g. nCtx) is refused by name.
 */
export async function fromCheckpoint(method: Method, checkpoint: string, opts: MetricOptions): Promise<Loaded> {
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
export function isReleasedFile(path: string): boolean {
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

/**
 * A pretrained metric: its files downloaded once (cached, checked), then the method built with pyiqa's
 * options (those given override them) on its CLIP and released file.
 */
export async function fromPretrained(p: PretrainedMetric, opts: MetricOptions): Promise<Loaded> {
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
