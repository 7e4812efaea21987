/**
 * `createMetric(name, {model, checkpoint, device})`: everything it is given checked before any file is read,
 * then the metric from a pretrained set-up, a checkpoint or a method's initial parameters.
 */
import { checkRunSettings } from '../graph/settings.js';
import { parseOptions } from './method.js';
import { readOption, spec } from './options.js';
import { type MethodSetup, setUp } from './graphs.js';
import { type ParamSet } from '../prompts/context.js';
import { Rng } from '../util/rng.js';
import { resolveCacheDir } from '../util/cache.js';
import { resolveMethodName } from './registry.js';
import { loadBackbone } from './backbone.js';
import { fromCheckpoint, fromPretrained } from './load.js';
import { checkDecodeThreads, defaultDecodeThreads } from './prepare-pool.js';
import { type Metric, type MetricOptions, type MetricSource, describeValue, metricFor } from './metric.js';

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
    opts.decodeThreads ?? defaultDecodeThreads(settings.provider),
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
  'decodeThreads',
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
  for (const k of ['allowExtraTensors', 'applyExifOrientation'] as const) {
    const v: unknown = opts[k];
    if (v !== undefined && typeof v !== 'boolean')
      throw new TypeError(`createMetric: option ${k} must be true or false; got ${describeValue(v)}`);
  }
  for (const k of ['onWarning', 'onFile'] as const) {
    if (opts[k] !== undefined && typeof opts[k] !== 'function') throw new TypeError(`createMetric: option ${k} must be a function`);
  }
  if (opts.decodeThreads !== undefined) checkDecodeThreads(opts.decodeThreads, 'createMetric: option decodeThreads');
  const settings = checkRunSettings('createMetric', opts);
  for (const w of settings.warnings) opts.onWarning?.(w);
  if (settings.note) opts.onWarning?.(`device ${settings.provider}: ${settings.note}`);
  return settings;
}
