/**
 * The evaluation protocol: score a dataset (all of it, or the test side of a seeded split) with a
 * checkpoint or a zero-shot method, and write a JSON report and a scatter plot of predicted score
 * against MOS with the fitted logistic curve and the figures in the legend.
 *
 * With a checkpoint, `split: 'test'` is the test side of the training run's own split, rebuilt from what
 * the checkpoint records (unit, shares, seed, round, limit) and checked against its digest of the test
 * images; the split options given here are then not used (a note says so).
 */
import type { Provider } from '../graph/runtime.js';
import { checkRunSettings } from '../graph/settings.js';
import { join, resolve } from 'node:path';
import { createMetric, isReleasedFile } from '../methods/index.js';
import { loadCheckpointMeta, type CheckpointMeta } from '../methods/checkpoint.js';
import { loadDataset, imagePath, type Dataset, type DatasetColumns } from '../data/datasets.js';
import { runSplit, reproduceSplit, resolveSplitSettings, sampleIndices, describeSplit, type SplitUnit } from '../data/splits.js';
import { FIGURES, correlations, figuresOf, fitLogistic4 } from './metrics.js';
import { scatterPlotSvg } from './plot.js';
import { checkWritableFolder, writeFileAtomic } from '../util/fs.js';

export interface EvalOptions extends DatasetColumns {
  method: string;
  model?: string;
  checkpoint?: string;
  dataset: string;
  root: string;
  labelFile?: string;
  target?: string;
  /** every image (default), or the test side of the split: the checkpoint's own when there is one */
  split?: 'all' | 'test';
  /** the split and subset when there is no checkpoint to take them from */
  splitBy?: SplitUnit;
  ratios?: [number, number, number];
  seed?: number;
  limit?: number;
  /** folder for report.json and scatter.svg; checked before any work */
  out: string;
  threads?: number;
  device?: Provider;
  batchSize?: number;
  /** promptiqa's cache folder, or false for none (see `MetricOptions.cache`) */
  cache?: string | false;
  /** method options (e.g. testViews); with a checkpoint, one that changes its tensors' shapes is refused */
  methodOptions?: Record<string, unknown>;
  /** read images outside `root` that the label file names (see `LoadOptions.allowOutsideRoot`) */
  allowOutsideRoot?: boolean;
  /** turn images as their EXIF orientation tag says (see `DecodeOptions.applyExifOrientation`); default false */
  applyExifOrientation?: boolean;
  /** accept tensors a released file should not carry (see `MetricOptions.allowExtraTensors`) */
  allowExtraTensors?: boolean;
  onEvent?: (e: { done: number; total: number }) => void;
  /** Label rows left out while loading (`Dataset.warnings`), told before the work starts. */
  onWarning?: (message: string, cases: string[]) => void;
}

export interface EvalReport {
  protocol: string;
  method: string;
  dataset: string;
  n: number;
  failed: string[];
  metrics: Record<string, number>;
  /** what the caller should know: options not used, training images scored, figures unlike the training run's */
  notes: string[];
  scores: Array<{ file: string; mos: number; score: number }>;
  reportPath: string;
  plotPath: string;
}

export async function evaluate(opts: EvalOptions): Promise<EvalReport> {
  checkOptions(opts);
  const out = resolve(opts.out);
  checkWritableFolder(out);
  // a released file (pyiqa's LIQE, CLIP-IQA+ prompts) records no training run: it is evaluated as a zero-shot method is
  const ckpt = opts.checkpoint !== undefined && !isReleasedFile(opts.checkpoint) ? loadCheckpointMeta(opts.checkpoint).meta : undefined;
  const trainedOn = ckpt?.dataset?.name === opts.dataset ? ckpt.dataset : undefined;
  const split = opts.split ?? 'all';
  if (split === 'test' && ckpt) {
    if (!ckpt.dataset || !ckpt.split)
      throw new Error(
        `${opts.checkpoint}: the checkpoint records no training split, so it has no test side to evaluate on; use split 'all'`,
      );
    if (!trainedOn)
      throw new Error(
        `${opts.checkpoint}: trained on ${ckpt.dataset.name}, so ${opts.dataset} has no test side of its split; evaluate on ${ckpt.dataset.name}, or on every image of ${opts.dataset} (split 'all')`,
      );
    if (opts.target !== undefined && opts.target !== ckpt.dataset.target) {
      throw new Error(
        `${opts.checkpoint}: trained on the ${ckpt.dataset.target} scores of ${opts.dataset}; its test side has no ${opts.target} figures to reproduce (use split 'all' for another target)`,
      );
    }
  }
  // the training run's label file, columns and target, unless others are given
  const ds = loadDataset(opts.dataset, {
    root: opts.root,
    labelFile: opts.labelFile ?? trainedOn?.labelFile,
    target: opts.target ?? trainedOn?.target,
    imageCol: opts.imageCol ?? trainedOn?.columns?.imageCol,
    mosCol: opts.mosCol ?? trainedOn?.columns?.mosCol,
    promptCol: opts.promptCol ?? trainedOn?.columns?.promptCol,
    allowOutsideRoot: opts.allowOutsideRoot,
  });
  if (ds.warnings?.length)
    opts.onWarning?.(`${opts.dataset}: ${ds.warnings.length} label row problem(s); the rows were left out`, ds.warnings);
  const notes: string[] = [];
  const { idx, splitNote } = pickImages(opts, ds, split, ckpt, notes);

  const metric = await createMetric(opts.method, {
    model: opts.model,
    checkpoint: opts.checkpoint,
    threads: opts.threads,
    device: opts.device,
    batchSize: opts.batchSize,
    methodOptions: opts.methodOptions,
    cache: opts.cache,
    applyExifOrientation: opts.applyExifOrientation,
    allowExtraTensors: opts.allowExtraTensors,
  });
  const files = idx.map((i) => imagePath(ds, ds.items[i]!));
  const pred: number[] = [];
  const mos: number[] = [];
  const failed: string[] = [];
  const rows: Array<{ file: string; mos: number; score: number }> = [];
  let done = 0;
  let k = 0;
  try {
    for await (const r of metric.scoreFiles(files)) {
      const item = ds.items[idx[k++]!]!;
      if ('error' in r) failed.push(`${r.file}: ${r.error}`);
      else {
        pred.push(r.score);
        mos.push(item.mos);
        rows.push({ file: item.image, mos: item.mos, score: r.score });
      }
      opts.onEvent?.({ done: ++done, total: files.length });
    }
  } finally {
    await metric.close();
  }
  if (pred.length < 4)
    throw new Error(`${opts.dataset}: only ${pred.length} images could be scored; at least 4 are needed for the figures`);
  const c = correlations(pred, mos);
  const metrics = figuresOf(c);
  if (split === 'test' && ckpt && failed.length === 0) {
    const trained = ckpt.metrics.test_srcc;
    if (trained !== undefined && Math.abs(trained - c.srcc) > 1e-6)
      notes.push(`the test SRCC ${c.srcc} differs from the ${trained} that training reported (other batch size, device or options?)`);
  }
  const protocol = `${opts.method}${opts.checkpoint ? ` (checkpoint ${opts.checkpoint})` : ' (zero-shot)'} on ${opts.dataset} (${ds.target}), ${splitNote}; one score per image (the method's test views averaged); PLCC raw and after a 4-parameter logistic fit`;
  const reportPath = join(out, 'report.json');
  const plotPath = join(out, 'scatter.svg');
  let fit: ((x: number) => number) | undefined;
  try {
    fit = fitLogistic4(pred, mos).predict;
  } catch {
    fit = undefined;
  }
  writeFileAtomic(
    plotPath,
    scatterPlotSvg({
      pred,
      mos,
      title: `${opts.method} on ${opts.dataset}`,
      xLabel: 'predicted score',
      yLabel: `MOS (${ds.target})`,
      fit,
      legend: [`n ${c.n}`, ...FIGURES.map(({ key, label }) => `${label} ${c[key].toFixed(4)}`)],
    }),
  );
  const report = { protocol, method: opts.method, dataset: opts.dataset, target: ds.target, n: c.n, metrics, notes, failed, scores: rows };
  writeFileAtomic(reportPath, JSON.stringify(report, null, 2) + '\n');
  return { protocol, method: opts.method, dataset: opts.dataset, n: c.n, failed, metrics, notes, scores: rows, reportPath, plotPath };
}

/** The item indices to score and how they were chosen; notes what the caller asked for but is not used. */
function pickImages(
  opts: EvalOptions,
  ds: Dataset,
  split: 'all' | 'test',
  ckpt: CheckpointMeta | undefined,
  notes: string[],
): { idx: number[]; splitNote: string } {
  const record = ckpt?.dataset?.name === opts.dataset ? ckpt.split : undefined;
  if (split === 'test' && record) {
    let rebuilt;
    try {
      rebuilt = reproduceSplit(ds.items, record);
    } catch (err) {
      throw new Error(`${opts.checkpoint}: ${ds.info.name} at ${ds.root}: ${(err as Error).message}`);
    }
    const ignored = [
      opts.seed !== undefined && opts.seed !== record.seed ? `seed ${opts.seed}` : '',
      opts.limit !== undefined && opts.limit !== record.limit ? `limit ${opts.limit}` : '',
      opts.ratios !== undefined && opts.ratios.join() !== record.ratios.join() ? `ratios ${opts.ratios.join(',')}` : '',
      opts.splitBy !== undefined && opts.splitBy !== record.by ? `split by ${opts.splitBy}` : '',
    ].filter((x) => x !== '');
    if (ignored.length)
      notes.push(
        `not used: ${ignored.join(', ')}; the test side is the training run's, rebuilt from the checkpoint (${describeSplit(rebuilt.settings)})`,
      );
    return {
      idx: rebuilt.test,
      splitNote: `the test side (${rebuilt.test.length} images, the same as training's) of the training run's ${describeSplit(rebuilt.settings)}`,
    };
  }
  if (split === 'test') {
    const settings = resolveSplitSettings(ds.info, { by: opts.splitBy, ratios: opts.ratios, seed: opts.seed, limit: opts.limit });
    return { idx: runSplit(ds.items, settings).test, splitNote: `the test side of a ${describeSplit(settings)}` };
  }
  const idx = sampleIndices(ds.items.length, opts.limit, opts.seed ?? 0);
  if (record) {
    // scoring the images a checkpoint learnt from says little about it: say how many there are
    try {
      const trained = reproduceSplit(ds.items, record);
      const seen = new Set([...trained.train, ...trained.val]);
      const n = idx.filter((i) => seen.has(i)).length;
      if (n > 0)
        notes.push(
          `${n} of the ${idx.length} images scored were used to train or validate this checkpoint; split 'test' gives held-out figures`,
        );
    } catch {
      // another version of the dataset: which images trained the checkpoint is not known
    }
  }
  return { idx, splitNote: opts.limit ? `a seeded subset of ${opts.limit} images (seed ${opts.seed ?? 0})` : 'every image' };
}

/** Library callers get a clear message instead of a TypeError deep inside. */
function checkOptions(opts: EvalOptions): void {
  const o = opts as unknown as Record<string, unknown> | null | undefined;
  if (typeof o !== 'object' || o === null) throw new TypeError('evaluate: expected an options object { method, dataset, root, out, ... }');
  const need = {
    method: 'the method name',
    dataset: 'the dataset name',
    root: 'the dataset folder',
    out: 'the folder for report.json and scatter.svg',
  };
  for (const [k, what] of Object.entries(need)) {
    if (typeof o[k] !== 'string' || o[k] === '')
      throw new TypeError(`evaluate: option ${k} (${what}) is required and must be a non-empty string; got ${JSON.stringify(o[k])}`);
  }
  for (const k of ['model', 'checkpoint', 'labelFile', 'target', 'imageCol', 'mosCol', 'promptCol']) {
    if (o[k] !== undefined && (typeof o[k] !== 'string' || o[k] === ''))
      throw new TypeError(`evaluate: option ${k} must be a non-empty string; got ${JSON.stringify(o[k])}`);
  }
  const oneOf = (k: string, choices: readonly string[]): void => {
    if (o[k] !== undefined && !choices.includes(o[k] as string))
      throw new TypeError(`evaluate: option ${k} must be one of ${choices.join(', ')}; got ${JSON.stringify(o[k])}`);
  };
  oneOf('split', ['all', 'test']);
  oneOf('splitBy', ['image', 'group', 'official']);
  for (const [k, min] of [
    ['seed', 0],
    ['limit', 1],
  ] as const) {
    const v = o[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min))
      throw new TypeError(`evaluate: option ${k} must be a whole number ≥ ${min}; got ${JSON.stringify(v)}`);
  }
  const r = o.ratios;
  if (r !== undefined && (!Array.isArray(r) || r.length !== 3 || r.some((x) => typeof x !== 'number' || !Number.isFinite(x) || x < 0))) {
    throw new TypeError(`evaluate: option ratios must be three non-negative numbers [train, val, test]; got ${JSON.stringify(r)}`);
  }
  if (
    o.methodOptions !== undefined &&
    (typeof o.methodOptions !== 'object' || o.methodOptions === null || Array.isArray(o.methodOptions))
  ) {
    throw new TypeError(`evaluate: option methodOptions must be an object of method parameters; got ${JSON.stringify(o.methodOptions)}`);
  }
  if (o.onEvent !== undefined && typeof o.onEvent !== 'function') throw new TypeError('evaluate: option onEvent must be a function');
  // the device (one of DEVICE_TYPES, its provider working here), threads and batch size, as createMetric and the command line check them
  checkRunSettings('evaluate', o);
}
