/**
 * The training loop shared by every trainable method: batches from a seeded split, the method's
 * augmentation, its graph (loss and gradients in one ONNX Runtime run), the optimiser and schedule in
 * TypeScript, validation every epoch, early stopping, a JSONL log, and a resumable state written
 * atomically at every epoch's end. Every random choice derives from (seed, epoch, step), so a run killed
 * at any moment resumes from its last epoch and ends with the same numbers as an uninterrupted one.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, appendFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { getMethod, loadBackbone, Scorer } from '../methods/index.js';
import { type Options, parseOptions } from '../methods/method.js';
import { trainGraph } from '../methods/graphs.js';
import { imageFeatureGraph } from '../clip/encoders.js';
import { trainView } from '../methods/views.js';
import { type ParamSet, PARAM_PREFIX } from '../prompts/context.js';
import { CompiledGraph, type RuntimeOptions } from '../graph/runtime.js';
import { loadDataset, imagePath, type Dataset } from '../data/datasets.js';
import { splitDataset, sampleIndices, type Split } from '../data/splits.js';
import { decodeImage, type RgbImage } from '../data/image.js';
import { correlations, summarise } from '../eval/metrics.js';
import { linePlotSvg } from '../eval/plot.js';
import { sgd, adam, adamw, clipGradNorm, cosineWithWarmup, constantLr, type Optimizer, type Schedule, optimizerStateToSafetensors, optimizerStateFromSafetensors } from './optim.js';
import { saveCheckpoint } from './checkpoint.js';
import { readSafetensors, writeSafetensors } from '../clip/safetensors.js';
import { checkWritableFolder, writeFileAtomic } from '../util/fs.js';
import { acquireLock, withLock } from '../util/lock.js';
import { Rng } from '../util/rng.js';

export interface TrainEvent { kind: 'start' | 'step' | 'epoch' | 'done'; epoch?: number; step?: number; stepsPerEpoch?: number; loss?: number; val?: Record<string, number>; message?: string }

export interface TrainOptions {
  method: string; model: string; dataset: string; root: string; labelFile?: string; target?: string; out: string;
  epochs?: number; batchSize?: number; lr?: number; seed?: number; limit?: number;
  splitBy?: 'image' | 'group' | 'official'; ratios?: [number, number, number]; selectOn?: 'val' | 'test';
  patience?: number; threads?: number; device?: 'cpu' | 'cuda'; methodOptions?: Record<string, unknown>;
  onEvent?: (e: TrainEvent) => void;
  /** for tests: stop (as if killed) after this many optimiser steps */
  stopAfterSteps?: number;
}

export interface TrainResult { out: string; checkpoint: string; bestEpoch: number; best: Record<string, number>; test?: Record<string, number>; epochs: number }

interface EpochRecord { epoch: number; loss: number; val: Record<string, number>; lr: number }

interface State {
  epoch: number; // epochs completed
  bestEpoch: number;
  bestScore: number;
  history: EpochRecord[];
  steps: number;
}

/** A seeded generator for one purpose at one point of the run, independent of what ran before. */
function rngAt(seed: number, ...labels: (string | number)[]): Rng {
  let h = (seed >>> 0) ^ 0x9e3779b9;
  for (const ch of labels.join('/')) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return new Rng(h);
}

function makeOptimizer(o: Options): Optimizer {
  switch (o.optimizer) {
    case 'sgd': return sgd({ lr: o.lr, momentum: o.momentum, weightDecay: o.weightDecay });
    case 'adamw': return adamw({ lr: o.lr, weightDecay: o.weightDecay });
    default: return adam({ lr: o.lr, weightDecay: o.weightDecay });
  }
}

function makeSchedule(o: Options, stepsPerEpoch: number): Schedule {
  if (o.schedule !== 'cosine') return constantLr(o.lr);
  const totalSteps = o.epochs * stepsPerEpoch;
  // a run shorter than the paper's warm-up (e.g. one epoch to try things) keeps at least one cosine step
  const warmupSteps = Math.min(o.warmupEpochs * stepsPerEpoch, totalSteps - 1);
  return cosineWithWarmup({ baseLr: o.lr, totalSteps, warmupSteps, ...(o.warmupLr ? { warmupLr: o.warmupLr } : {}) });
}

/** Unit-scaled, higher-is-better MOS. */
function unitMos(ds: Dataset, mos: number): number {
  const [lo, hi] = ds.info.mosRange;
  const u = (mos - lo) / (hi - lo);
  return ds.info.higherIsBetter ? u : 1 - u;
}

/** Trains holding the lock on `opts.out` for the whole run: a second run on the same folder refuses at once. */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  checkWritableFolder(opts.out);
  return withLock(opts.out, 'folder', () => trainLocked(opts));
}

async function trainLocked(opts: TrainOptions): Promise<TrainResult> {
  const method = getMethod(opts.method);
  if (!method.info.trainable) throw new Error(`${method.info.name} is zero-shot: there is nothing to train`);
  const overrides: Record<string, unknown> = { ...(opts.methodOptions ?? {}) };
  if (opts.epochs !== undefined) overrides.epochs = opts.epochs;
  if (opts.batchSize !== undefined) overrides.batchSize = opts.batchSize;
  if (opts.lr !== undefined) overrides.lr = opts.lr;
  if (opts.patience !== undefined) overrides.patience = opts.patience;
  const o = parseOptions(method, overrides);
  const seed = opts.seed ?? 0;
  const out = resolve(opts.out);
  mkdirSync(out, { recursive: true });
  const emit = opts.onEvent ?? (() => undefined);

  const ds = loadDataset(opts.dataset, { root: opts.root, labelFile: opts.labelFile, target: opts.target });
  const items = sampleIndices(ds.items.length, opts.limit, seed);
  const sub = items.map((i) => ds.items[i]!);
  const splitSpec = { seed, ratios: opts.ratios ?? [0.7, 0.1, 0.2] as [number, number, number], by: opts.splitBy ?? (ds.info.groupBy === 'image' ? 'image' : 'group') } as const;
  const local = splitDataset(sub, splitSpec);
  const split: Split = { train: local.train.map((i) => items[i]!), val: local.val.map((i) => items[i]!), test: local.test.map((i) => items[i]!) };
  const selectOn = opts.selectOn ?? (split.val.length ? 'val' : 'test');
  const selectIdx = selectOn === 'val' ? split.val : split.test;
  if (!split.train.length) throw new Error(`${opts.dataset}: the split leaves no training images`);

  const backbone = await loadBackbone(opts.model);
  const runtime: RuntimeOptions = { provider: opts.device, threads: opts.threads };
  const batch = Math.min(o.batchSize, split.train.length);
  const stepsPerEpoch = Math.ceil(split.train.length / batch);
  const schedule = makeSchedule(o, stepsPerEpoch);
  const optimizer = makeOptimizer(o);
  const alignment = !!method.usesAlignment?.(o);
  const distortion = !!method.distortionClasses && split.train.some((i) => ds.items[i]!.distortion);

  // the run's identity: a state written by another configuration is not resumed
  const runKey = JSON.stringify({ method: method.info.name, o, backbone: backbone.weights.id, dataset: opts.dataset, target: ds.target, split: splitSpec, limit: opts.limit ?? 0, batch });
  const statePath = join(out, 'state');
  let params: ParamSet;
  let state: State;
  const resumed = loadState(statePath, runKey);
  if (resumed) {
    params = resumed.params;
    state = resumed.state;
    optimizer.load(resumed.optim);
    emit({ kind: 'start', message: `resuming ${out} after epoch ${state.epoch}` });
  } else {
    params = method.init(backbone.weights, backbone.tokenizer, o, rngAt(seed, 'init'));
    state = { epoch: 0, bestEpoch: -1, bestScore: -Infinity, history: [], steps: 0 };
    rmSync(join(out, 'train.jsonl'), { force: true });
    emit({ kind: 'start', message: `training ${method.info.name} on ${split.train.length} images, validating on ${selectIdx.length} (${selectOn})` });
  }

  const scorer = new Scorer(method, o, backbone, params, runtime, Math.min(8, batch));
  const graphs = new Map<number, { compiled: CompiledGraph; info: ReturnType<typeof trainGraph> }>();
  const graphFor = async (b: number) => {
    let gr = graphs.get(b);
    if (!gr) {
      const info = trainGraph(method, o, backbone, params, b, { alignment, distortion });
      gr = { compiled: await CompiledGraph.create(info.graph, runtime), info };
      graphs.set(b, gr);
    }
    return gr;
  };
  const features = new Map<number, CompiledGraph>();
  const featureCache = new Map<number, Float32Array>();
  const decoded = new Map<number, RgbImage>();
  const load = async (i: number): Promise<RgbImage> => {
    let img = decoded.get(i);
    if (!img) {
      img = await decodeImage(imagePath(ds, ds.items[i]!));
      if (decoded.size < 4096) decoded.set(i, img);
    }
    return img;
  };
  const size = backbone.weights.config.imageSize;
  const log = (rec: object): void => appendFileSync(join(out, 'train.jsonl'), JSON.stringify(rec) + '\n');

  const validate = async (idx: number[]): Promise<Record<string, number>> => {
    scorer.setParams(params);
    const imgs = await Promise.all(idx.map(load));
    const pred = await scorer.scoreImages(imgs);
    const mos = idx.map((i) => ds.items[i]!.mos);
    const c = correlations(pred, mos);
    return { srcc: c.srcc, plcc: c.plcc, krcc: c.krcc, plcc_logistic: c.plcc_logistic, rmse: c.rmse, n: c.n };
  };

  let stepsThisRun = 0;
  for (let epoch = state.epoch + 1; epoch <= o.epochs; epoch++) {
    const order = rngAt(seed, 'order', epoch).shuffle([...split.train]);
    let lossSum = 0;
    for (let s = 0; s < stepsPerEpoch; s++) {
      const idx = order.slice(s * batch, (s + 1) * batch);
      const b = idx.length;
      const rng = rngAt(seed, 'step', epoch, s);
      // frozen features: without augmentation an image's features never change, so each is computed once
      const cached = method.imageInput === 'features' && o.augment === 'none' && idx.every((i) => featureCache.has(i));
      const per = 3 * size * size;
      const pixels = new Float32Array(cached ? 0 : b * per);
      if (!cached) {
        const imgs = await Promise.all(idx.map(load));
        imgs.forEach((img, j) => pixels.set(trainView(img, o, size, rng), j * per));
      }
      const { compiled, info } = await graphFor(b);
      const feeds: Record<string, Float32Array> = {};
      if (method.imageInput === 'features') {
        const e = backbone.weights.config.embedDim;
        if (cached) {
          feeds.features = new Float32Array(b * e);
          idx.forEach((i, j) => feeds.features!.set(featureCache.get(i)!, j * e));
        } else {
          let fg = features.get(b);
          if (!fg) { fg = await CompiledGraph.create(imageFeatureGraph(backbone.weights, b), runtime); features.set(b, fg); }
          feeds.features = (await fg.run({ pixels })).features!.data as Float32Array;
          if (o.augment === 'none') idx.forEach((i, j) => featureCache.set(i, feeds.features!.slice(j * e, (j + 1) * e)));
        }
      } else {
        feeds.pixels = pixels;
      }
      feeds['target:quality'] = Float32Array.from(idx, (i) => method.target(unitMos(ds, ds.items[i]!.mos), ds.info.mosRange));
      if (alignment) {
        feeds['target:alignment'] = Float32Array.from(idx, (i) => {
          const it = ds.items[i]!;
          const a = it.extra?.alignment ?? it.extra?.correspondence;
          if (a === undefined) throw new Error(`${opts.dataset}: ${it.image} has no alignment score, which ${method.info.name}'s auxiliary task needs (set --option alignWeight=0)`);
          const [lo, hi] = ds.info.mosRange;
          return (a - lo) / (hi - lo);
        });
      }
      if (distortion) {
        const k = method.distortionClasses!.length;
        const onehot = new Float32Array(b * k);
        const mask = new Float32Array(b);
        idx.forEach((i, j) => {
          const d = ds.items[i]!.distortion;
          if (d) { onehot[j * k + method.distortionClass!(d)] = 1; mask[j] = 1; }
        });
        feeds['target:distortion'] = onehot;
        feeds['target:distortion_mask'] = mask;
      }
      for (const d of info.dropout) {
        const m = new Float32Array(d.size);
        const keep = 1 / (1 - d.p);
        for (let j = 0; j < m.length; j++) m[j] = rng.uniform() < d.p ? 0 : keep;
        feeds[d.name] = m;
      }
      for (const name of compiled.inputs.keys()) {
        if (name.startsWith(PARAM_PREFIX)) feeds[name] = params.get(name.slice(PARAM_PREFIX.length))!.data;
      }
      const res = await compiled.run(feeds);
      const loss = Number(res.loss!.data[0]);
      if (!Number.isFinite(loss)) throw new Error(`training diverged: the loss is ${loss} at epoch ${epoch}, step ${s} (try a lower --lr)`);
      const grads = new Map<string, Float32Array>();
      for (const [name, p] of params) grads.set(name, (res[`grad:${name}`]?.data as Float32Array | undefined) ?? new Float32Array(p.data.length));
      if (o.gradClip > 0) clipGradNorm(grads, o.gradClip);
      optimizer.lr = schedule.lrAt(state.steps);
      optimizer.step(new Map([...params].map(([k, v]) => [k, v.data])), grads);
      state.steps++;
      lossSum += loss * b;
      log({ kind: 'step', epoch, step: s, loss, lr: optimizer.lr });
      emit({ kind: 'step', epoch, step: s + 1, stepsPerEpoch, loss });
      stepsThisRun++;
      if (opts.stopAfterSteps !== undefined && stepsThisRun >= opts.stopAfterSteps) {
        await closeAll();
        throw new Error('stopped (stopAfterSteps)');
      }
    }
    const val = selectIdx.length >= 4 ? await validate(selectIdx) : {};
    const rec: EpochRecord = { epoch, loss: lossSum / split.train.length, val, lr: optimizer.lr };
    state.history.push(rec);
    state.epoch = epoch;
    const figure = Number.isFinite(val.srcc) ? val.srcc! : -rec.loss;
    if (figure > state.bestScore) {
      state.bestScore = figure;
      state.bestEpoch = epoch;
      saveCheckpoint(join(out, 'checkpoint'), params, meta(epoch, val));
    }
    log({ kind: 'epoch', ...rec });
    emit({ kind: 'epoch', epoch, loss: rec.loss, val });
    saveState(statePath, runKey, params, state, optimizer);
    writeFileAtomic(join(out, 'training.svg'), linePlotSvg({
      title: `${method.info.name} on ${opts.dataset}`, xLabel: 'epoch',
      series: [
        { name: 'training loss', x: state.history.map((h) => h.epoch), y: state.history.map((h) => h.loss), axis: 'left' },
        { name: `${selectOn} SRCC`, x: state.history.map((h) => h.epoch), y: state.history.map((h) => h.val.srcc ?? NaN), axis: 'right' },
      ],
      yLabel: 'loss', y2Label: 'SRCC',
    }));
    if (o.patience > 0 && epoch - state.bestEpoch >= o.patience) break;
  }

  // the test figures of the selected epoch
  const best = readSafetensors(join(out, 'checkpoint.safetensors')).tensors;
  params = best;
  const test = split.test.length >= 4 ? await validate(split.test) : undefined;
  const bestVal = state.history.find((h) => h.epoch === state.bestEpoch)?.val ?? {};
  saveCheckpoint(join(out, 'checkpoint'), best, { ...meta(state.bestEpoch, bestVal), metrics: { ...prefix(bestVal, selectOn), ...prefix(test ?? {}, 'test') } });
  writeFileAtomic(join(out, 'result.json'), JSON.stringify({ bestEpoch: state.bestEpoch, selectOn, best: bestVal, test, history: state.history, protocol: protocol() }, null, 2) + '\n');
  await closeAll();
  emit({ kind: 'done', epoch: state.bestEpoch, val: test ?? bestVal });
  return { out, checkpoint: join(out, 'checkpoint.json'), bestEpoch: state.bestEpoch, best: bestVal, test, epochs: state.epoch };

  function protocol(): string {
    return `${opts.dataset} (${ds.target}), split by ${splitSpec.by} ${splitSpec.ratios.join('/')} seed ${seed}${opts.limit ? `, limited to ${opts.limit} images` : ''}; best epoch chosen on ${selectOn}; ${o.epochs} epochs max, batch ${batch}`;
  }
  function meta(epoch: number, metrics: Record<string, number>) {
    return {
      method: method.info.name, options: o, backbone: { model: opts.model, id: backbone.weights.id },
      dataset: { name: opts.dataset, target: ds.target }, split: { by: splitSpec.by, ratios: [...splitSpec.ratios], seed }, seed, epoch, metrics,
    };
  }
  async function closeAll(): Promise<void> {
    for (const g of graphs.values()) await g.compiled.release();
    for (const g of features.values()) await g.release();
    await scorer.close();
  }
}

function prefix(m: Record<string, number>, p: string): Record<string, number> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [`${p}_${k}`, v]));
}

function saveState(base: string, runKey: string, params: ParamSet, state: State, optimizer: Optimizer): void {
  const { tensors, metadata } = optimizerStateToSafetensors(optimizer.state());
  const all = { ...Object.fromEntries([...params].map(([k, v]) => [`param.${k}`, v])), ...tensors };
  // the tensors file carries its epoch; the JSON written after it names that epoch
  const file = `${base}-epoch${state.epoch}.safetensors`;
  writeSafetensors(file, all, metadata);
  writeFileAtomic(`${base}.json`, JSON.stringify({ runKey, state, tensors: file }) + '\n');
  const dir = join(base, '..');
  for (const f of readdirSync(dir)) {
    const full = join(dir, f);
    if (f.startsWith('state-epoch') && full !== file) rmSync(full, { force: true });
  }
}

function loadState(base: string, runKey: string): { params: ParamSet; state: State; optim: ReturnType<Optimizer['state']> } | null {
  if (!existsSync(`${base}.json`)) return null;
  const saved = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as { runKey: string; state: State; tensors: string };
  if (saved.runKey !== runKey) throw new Error(`${base}.json belongs to a run with other settings; use another --out or delete it`);
  const { tensors, metadata } = readSafetensors(saved.tensors);
  const params: ParamSet = new Map();
  for (const [k, v] of tensors) if (k.startsWith('param.')) params.set(k.slice('param.'.length), v);
  return { params, state: saved.state, optim: optimizerStateFromSafetensors(tensors, metadata) };
}

/** The whole protocol: N rounds with split seeds seed, seed+1, …; mean, median and std of the test figures. */
export async function trainRounds(opts: TrainOptions & { rounds: number }): Promise<{ rounds: TrainResult[]; summary: Record<string, { mean: number; median: number; std: number }>; protocol: string }> {
  checkWritableFolder(opts.out);
  const lock = acquireLock(opts.out, 'folder');
  try {
    return await trainRoundsLocked(opts);
  } finally {
    lock.release();
  }
}

async function trainRoundsLocked(opts: TrainOptions & { rounds: number }): ReturnType<typeof trainRounds> {
  const rounds: TrainResult[] = [];
  for (let r = 0; r < opts.rounds; r++) {
    rounds.push(await train({ ...opts, seed: (opts.seed ?? 0) + r, out: join(opts.out, `round-${r}`) }));
  }
  const summary: Record<string, { mean: number; median: number; std: number }> = {};
  for (const k of ['srcc', 'plcc', 'krcc', 'plcc_logistic', 'rmse']) {
    const vals = rounds.map((r) => r.test?.[k]).filter((v): v is number => v !== undefined);
    if (vals.length) {
      const s = summarise(vals);
      summary[k] = { mean: s.mean, median: s.median, std: s.std };
    }
  }
  const protocol = `${opts.rounds} rounds of ${opts.method} on ${opts.dataset}, split by ${opts.splitBy ?? 'group'} ${(opts.ratios ?? [0.7, 0.1, 0.2]).join('/')}, seeds ${opts.seed ?? 0}…${(opts.seed ?? 0) + opts.rounds - 1}; test figures of the epoch chosen on ${opts.selectOn ?? 'val'}; std with ddof=1`;
  writeFileAtomic(join(opts.out, 'rounds.json'), JSON.stringify({ protocol, summary, rounds: rounds.map((r) => ({ out: r.out, bestEpoch: r.bestEpoch, test: r.test })) }, null, 2) + '\n');
  return { rounds, summary, protocol };
}

