/**
 * The evaluation protocol: score a dataset (all of it, or the test side of a seeded split) with a
 * checkpoint or a zero-shot method, and write a JSON report and a scatter plot of predicted score
 * against MOS with the fitted logistic curve and the figures in the legend.
 */
import { join, resolve } from 'node:path';
import { mkdirSync } from 'node:fs';
import { createMetric } from '../methods/index.js';
import { loadCheckpointMeta } from '../train/checkpoint.js';
import { loadDataset, imagePath, type DatasetColumns } from '../data/datasets.js';
import { splitDataset, sampleIndices } from '../data/splits.js';
import { correlations, fitLogistic4 } from './metrics.js';
import { scatterPlotSvg } from './plot.js';
import { writeFileAtomic } from '../util/fs.js';

export interface EvalOptions extends DatasetColumns {
  method: string; model?: string; checkpoint?: string; dataset: string; root: string; labelFile?: string; target?: string;
  split?: 'all' | 'test'; splitBy?: 'image' | 'group' | 'official'; ratios?: [number, number, number]; seed?: number; limit?: number;
  out: string; threads?: number; device?: 'cpu' | 'cuda'; batchSize?: number;
  onEvent?: (e: { done: number; total: number }) => void;
  /** Label rows left out while loading (`Dataset.warnings`), told before the work starts. */
  onWarning?: (message: string, cases: string[]) => void;
}

export interface EvalReport { protocol: string; method: string; dataset: string; n: number; failed: string[]; metrics: Record<string, number>; reportPath: string; plotPath: string }

export async function evaluate(opts: EvalOptions): Promise<EvalReport> {
  const ds = loadDataset(opts.dataset, { root: opts.root, labelFile: opts.labelFile, target: opts.target, imageCol: opts.imageCol, mosCol: opts.mosCol, promptCol: opts.promptCol });
  if (ds.warnings?.length) opts.onWarning?.(`${opts.dataset}: ${ds.warnings.length} label row problem(s); the rows were left out`, ds.warnings);
  const seed = opts.seed ?? 0;
  let idx = sampleIndices(ds.items.length, opts.limit, seed);
  let splitNote = 'every image';
  if ((opts.split ?? 'all') === 'test') {
    // the same split as training: by default the checkpoint's own split settings
    const meta = opts.checkpoint ? loadCheckpointMeta(opts.checkpoint).meta : undefined;
    const by = opts.splitBy ?? (meta?.split?.by as 'image' | 'group' | 'official' | undefined) ?? (ds.info.groupBy === 'image' ? 'image' : 'group');
    const ratios = opts.ratios ?? (meta?.split?.ratios as [number, number, number] | undefined) ?? [0.7, 0.1, 0.2];
    const s = opts.seed ?? meta?.split?.seed ?? 0;
    const sub = idx.map((i) => ds.items[i]!);
    idx = splitDataset(sub, { seed: s, ratios, by }).test.map((i) => idx[i]!);
    splitNote = `the test side of a split by ${by} ${ratios.join('/')} with seed ${s}`;
  }
  const metric = await createMetric(opts.method, { model: opts.model, checkpoint: opts.checkpoint, threads: opts.threads, device: opts.device, batchSize: opts.batchSize });
  const files = idx.map((i) => imagePath(ds, ds.items[i]!));
  const pred: number[] = [];
  const mos: number[] = [];
  const failed: string[] = [];
  const rows: Array<{ file: string; mos: number; score: number }> = [];
  let done = 0;
  let k = 0;
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
  await metric.close();
  if (pred.length < 4) throw new Error(`${opts.dataset}: only ${pred.length} images could be scored; at least 4 are needed for the figures`);
  const c = correlations(pred, mos);
  const metrics = { srcc: c.srcc, krcc: c.krcc, plcc: c.plcc, plcc_logistic: c.plcc_logistic, rmse: c.rmse };
  const protocol = `${opts.method}${opts.checkpoint ? ` (checkpoint ${opts.checkpoint})` : ' (zero-shot)'} on ${opts.dataset} (${ds.target}), ${splitNote}${opts.limit ? `, limited to ${opts.limit} images` : ''}; one score per image (the method's test views averaged); PLCC raw and after a 4-parameter logistic fit`;
  const out = resolve(opts.out);
  mkdirSync(out, { recursive: true });
  const reportPath = join(out, 'report.json');
  const plotPath = join(out, 'scatter.svg');
  let fit: ((x: number) => number) | undefined;
  try {
    fit = fitLogistic4(pred, mos).predict;
  } catch {
    fit = undefined;
  }
  writeFileAtomic(plotPath, scatterPlotSvg({
    pred, mos, title: `${opts.method} on ${opts.dataset}`, xLabel: 'predicted score', yLabel: `MOS (${ds.target})`, fit,
    legend: [`n ${c.n}`, `SRCC ${c.srcc.toFixed(4)}`, `KRCC ${c.krcc.toFixed(4)}`, `PLCC ${c.plcc.toFixed(4)}`, `PLCC (logistic) ${c.plcc_logistic.toFixed(4)}`, `RMSE ${c.rmse.toFixed(4)}`],
  }));
  const report = { protocol, method: opts.method, dataset: opts.dataset, target: ds.target, n: c.n, metrics, failed, scores: rows };
  writeFileAtomic(reportPath, JSON.stringify(report, null, 2) + '\n');
  return { protocol, method: opts.method, dataset: opts.dataset, n: c.n, failed, metrics, reportPath, plotPath };
}
