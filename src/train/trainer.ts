/**
 * The training loop shared by every trainable method: batches from a seeded split, the method's
 * augmentation, its graph (loss, gradients and the optimiser's update in one ONNX Runtime run, the state kept
 * where the graph runs: resident.ts), the schedule, validation every epoch, early stopping, a JSONL log, and a resumable state written
 * atomically at every epoch's end. Every random choice derives from (seed, epoch, step), so a run killed
 * at any moment resumes from its last epoch and ends with the same numbers as an uninterrupted one.
 */
import type { Provider } from '../graph/runtime.js';
import { existsSync, mkdirSync, rmSync, appendFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { getMethod, loadBackbone } from '../methods/index.js';
import { type AuxiliaryTarget, type Method, type Options, enabledAuxiliary, parseOptions } from '../methods/method.js';
import { type BackboneSource, type MethodSetup, Scorer, TrainStep, setUp } from '../methods/graphs.js';
import { type ParamSet } from '../prompts/context.js';
import { type RuntimeOptions } from '../graph/runtime.js';
import { loadDataset, imagePath, type Dataset, type DatasetColumns } from '../data/datasets.js';
import { runSplit, resolveSplitSettings, describeSplit, roundSeed, type SplitSettings, type Split, type RunSplit } from '../data/splits.js';
import { findUnreadableImages, listUnreadable, type UnreadableImage } from '../data/check.js';
import { FIGURES, correlations, figuresOf, summarise } from '../eval/metrics.js';
import { linePlotSvg } from '../eval/plot.js';
import {
  optimizerFor,
  cosineWithWarmup,
  epochCosineWithWarmup,
  constantLr,
  type Optimizer,
  type Schedule,
  optimizerStateToSafetensors,
  optimizerStateFromSafetensors,
} from './optim.js';
import { saveCheckpoint, loadCheckpoint, type CheckpointMeta } from '../methods/checkpoint.js';
import { readSafetensors, writeSafetensors } from '../clip/safetensors.js';
import { READ_LIMITS, checkWritableFolder, readRegularText, writeFileAtomic } from '../util/fs.js';
import { checkRunSettings } from '../graph/settings.js';
import { withLock } from '../util/lock.js';
import { ResidentTraining } from './resident.js';
import { BatchSource, readUnreadable, sortedValues, writeUnreadable, type Batch } from './batches.js';
import { Rng } from '../util/rng.js';

/** `warning`: `message` says what, `warnings` lists the cases (dataset rows left out, unreadable images skipped). */
export interface TrainEvent {
  kind: 'start' | 'step' | 'epoch' | 'done' | 'warning';
  epoch?: number;
  step?: number;
  stepsPerEpoch?: number;
  loss?: number;
  val?: Record<string, number>;
  message?: string;
  warnings?: string[];
}

export interface TrainOptions extends DatasetColumns {
  method: string;
  model: string;
  dataset: string;
  root: string;
  labelFile?: string;
  target?: string;
  out: string;
  epochs?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
  limit?: number;
  splitBy?: 'image' | 'group' | 'official';
  ratios?: [number, number, number];
  selectOn?: 'val' | 'test';
  patience?: number;
  threads?: number;
  device?: Provider;
  /** the method's options (`key: value`, read by its schema; `epochs`, `batchSize`, `lr` and `patience` above override theirs) */
  methodOptions?: Record<string, unknown>;
  /** round r of a multi-round run: the split and the training use `roundSeed(seed, r)`; the `limit` subset stays that of `seed` */
  round?: number;
  onEvent?: (e: TrainEvent) => void;
  /**
   * Images that cannot be read are left out (and listed in the run's result.json and unreadable.json)
   * rather than refused. Every image is checked before the first step either way.
   */
  skipUnreadable?: boolean;
  /** read images outside `root` that the label file names (see `LoadOptions.allowOutsideRoot`) */
  allowOutsideRoot?: boolean;
  /** turn images as their EXIF orientation tag says (see `DecodeOptions.applyExifOrientation`); default false */
  applyExifOrientation?: boolean;
  /** for tests: stop (as if killed) after this many optimiser steps */
  stopAfterSteps?: number;
}

export interface TrainResult {
  out: string;
  checkpoint: string;
  bestEpoch: number;
  best: Record<string, number>;
  test?: Record<string, number>;
  epochs: number;
  selectOn: 'val' | 'test';
  split: SplitSettings;
  unreadable?: UnreadableImage[];
}

interface EpochRecord {
  epoch: number;
  loss: number;
  val: Record<string, number>;
  lr: number;
}

interface State {
  epoch: number; // epochs completed
  bestEpoch: number;
  bestScore: number;
  history: EpochRecord[];
  steps: number;
}

function makeSchedule(o: Options, stepsPerEpoch: number): Schedule {
  if (o.schedule !== 'cosine') return constantLr(o.lr);
  const warmupLr = o.warmupLr ? { warmupLr: o.warmupLr } : {};
  // a run shorter than the paper's warm-up (e.g. one epoch to try things) keeps at least one cosine step
  if (o.lrStep === 'epoch') {
    return epochCosineWithWarmup({
      baseLr: o.lr,
      epochs: o.epochs,
      stepsPerEpoch,
      warmupEpochs: Math.min(o.warmupEpochs, o.epochs - 1),
      ...warmupLr,
    });
  }
  const totalSteps = o.epochs * stepsPerEpoch;
  const warmupSteps = Math.min(o.warmupEpochs * stepsPerEpoch, totalSteps - 1);
  return cosineWithWarmup({ baseLr: o.lr, totalSteps, warmupSteps, ...warmupLr });
}

export async function train(opts: TrainOptions): Promise<TrainResult> {
  // everything that can be refused is refused before the run folder is made or locked
  if (typeof opts.out !== 'string' || opts.out.trim() === '') throw new TypeError('train: out (the folder for the run) is required');
  const method = getMethod(opts.method);
  if (!method.info.trainable) throw new Error(`${method.info.name} is zero-shot: there is nothing to train`);
  checkTrainOptions(opts);
  const methodOptions: Record<string, unknown> = { ...(opts.methodOptions ?? {}) };
  if (opts.epochs !== undefined) methodOptions.epochs = opts.epochs;
  if (opts.batchSize !== undefined) methodOptions.batchSize = opts.batchSize;
  if (opts.lr !== undefined) methodOptions.lr = opts.lr;
  if (opts.patience !== undefined) methodOptions.patience = opts.patience;
  const o = parseOptions(method, methodOptions);
  checkWritableFolder(opts.out);
  checkRunFolder(opts.out, 'run');
  // a second run on the same folder refuses at once
  return withLock(opts.out, 'folder', async () => {
    const run = await TrainingRun.prepare(opts, method, o);
    try {
      return await run.execute();
    } finally {
      await run.close();
    }
  });
}

/**
 * One training run, holding the lock on its folder: `prepare` checks and loads everything the run needs
 * (refusing before the first step what can be refused) and resumes a saved state; `execute` runs the
 * epochs (a step at a time, then the end of the epoch) and finishes with the test figures of the chosen epoch.
 */
class TrainingRun {
  private readonly steps = new Map<number, TrainStep>();
  /** the trained parameters and optimiser buffers where the graphs run, from the first step on */
  private resident: ResidentTraining | null = null;
  private readonly scorer: Scorer;
  private stepsThisRun = 0;

  private constructor(
    private readonly opts: TrainOptions,
    private readonly setup: MethodSetup,
    private readonly ds: Dataset,
    private readonly split: RunSplit,
    private readonly source: BatchSource,
    private readonly auxiliary: readonly AuxiliaryTarget[],
    private readonly run: {
      out: string;
      seed: number;
      selectOn: 'val' | 'test';
      selectIdx: number[];
      trainIdx: number[];
      batch: number;
      stepsPerEpoch: number;
      runtime: RuntimeOptions;
      backboneSource: BackboneSource;
      columns: DatasetColumns;
      unreadablePath: string;
      statePath: string;
      runKey: string;
    },
    private readonly schedule: Schedule,
    private readonly optimizer: Optimizer,
    private params: ParamSet,
    private readonly state: State,
    private readonly emit: (e: TrainEvent) => void,
  ) {
    this.scorer = new Scorer(setup, params, run.runtime, Math.min(8, run.batch));
  }

  static async prepare(opts: TrainOptions, method: Method, o: Options): Promise<TrainingRun> {
    const seed = roundSeed(opts.seed ?? 0, opts.round ?? 0);
    const out = resolve(opts.out);
    mkdirSync(out, { recursive: true });
    const emit = opts.onEvent ?? (() => undefined);

    const columns: DatasetColumns = { imageCol: opts.imageCol, mosCol: opts.mosCol, promptCol: opts.promptCol };
    const ds = loadDataset(opts.dataset, {
      root: opts.root,
      labelFile: opts.labelFile,
      target: opts.target,
      ...columns,
      allowOutsideRoot: opts.allowOutsideRoot,
    });
    if (ds.warnings?.length)
      emit({
        kind: 'warning',
        message: `${opts.dataset}: ${ds.warnings.length} label row problem(s); the rows were left out`,
        warnings: ds.warnings,
      });
    const split = runSplit(
      ds.items,
      resolveSplitSettings(ds.info, { by: opts.splitBy, ratios: opts.ratios, seed: opts.seed, round: opts.round, limit: opts.limit }),
    );
    const selectOn = opts.selectOn ?? (split.val.length ? 'val' : 'test');
    const selectIdx = selectOn === 'val' ? split.val : split.test;
    if (!split.train.length) throw new Error(`${opts.dataset}: the split leaves no training images`);
    const auxiliary = enabledAuxiliary(
      method,
      o,
      split.train.map((i) => ds.items[i]!),
    );
    checkAuxiliaryTargets(opts.dataset, method, auxiliary, ds, split.train);
    const unreadablePath = join(out, 'unreadable.json');
    const skipped = await checkRunImages(ds, split, unreadablePath, !!opts.skipUnreadable);
    if (skipped.size > 0) {
      const list = [...skipped.values()];
      emit({
        kind: 'warning',
        message: `left out ${list.length} unreadable image(s) (listed in ${unreadablePath})`,
        warnings: list.map((u) => `${u.file}: ${u.problem}`),
      });
      if (split.train.every((i) => skipped.has(i))) throw new Error(`${opts.dataset}: no training image can be read`);
    }

    const backbone = await loadBackbone(opts.model);
    if (!backbone.source) throw new Error(`${opts.model}: weights without a source cannot be recorded in a checkpoint`);
    const setup = setUp(method, o, backbone);
    const runtime: RuntimeOptions = { provider: opts.device, threads: opts.threads };
    // the images trained on: batches and drop-last count only those that can be read
    const trainIdx = split.train.filter((i) => !skipped.has(i));
    const batch = Math.min(o.batchSize, trainIdx.length);
    // Dassl drops the last partial batch (batch ≤ the training set here, so at least one step remains)
    const stepsPerEpoch = o.dropLast ? Math.floor(trainIdx.length / batch) : Math.ceil(trainIdx.length / batch);

    // the run's identity (the split's digests included): a state written by another configuration or dataset is not resumed
    const runKey = JSON.stringify({
      method: method.info.name,
      o,
      backbone: backbone.weights.id,
      dataset: opts.dataset,
      target: ds.target,
      split: split.record,
      batch,
      ...(Object.values(columns).some((c) => c !== undefined) ? { columns } : {}),
      // other pixels: a resume must not mix them (absent when false, so the runs made before it resume)
      ...(opts.applyExifOrientation ? { applyExifOrientation: true } : {}),
    });
    const statePath = join(out, 'state');
    const optimizer = optimizerFor(o);
    let params: ParamSet;
    let state: State;
    const resumed = loadState(statePath, runKey);
    if (resumed) {
      params = resumed.params;
      state = resumed.state;
      optimizer.load(resumed.optim);
      trimLog(join(out, 'train.jsonl'), state.epoch);
      emit({ kind: 'start', message: `resuming ${out} after epoch ${state.epoch}` });
    } else {
      params = setup.model.init(Rng.at(seed, 'init'));
      state = { epoch: 0, bestEpoch: -1, bestScore: -Infinity, history: [], steps: 0 };
      rmSync(join(out, 'train.jsonl'), { force: true });
      emit({
        kind: 'start',
        message: `training ${method.info.name} on ${trainIdx.length} images, validating on ${selectIdx.length} (${selectOn})`,
      });
    }
    const source = new BatchSource(
      ds,
      setup,
      auxiliary,
      runtime,
      skipped,
      {
        path: unreadablePath,
        skip: !!opts.skipUnreadable,
        emit,
        keptAt: () => `${out} at epoch ${state.epoch}`,
      },
      { applyExifOrientation: opts.applyExifOrientation ?? false },
    );
    return new TrainingRun(
      opts,
      setup,
      ds,
      split,
      source,
      auxiliary,
      {
        out,
        seed,
        selectOn,
        selectIdx,
        trainIdx,
        batch,
        stepsPerEpoch,
        runtime,
        backboneSource: backbone.source,
        columns,
        unreadablePath,
        statePath,
        runKey,
      },
      makeSchedule(o, stepsPerEpoch),
      optimizer,
      params,
      state,
      emit,
    );
  }

  async execute(): Promise<TrainResult> {
    const o = this.setup.options;
    const { state } = this;
    // a run that stopped early (patience) and is run again only finishes: its epochs are done
    const stoppedEarly = o.patience > 0 && state.epoch > 0 && state.epoch - state.bestEpoch >= o.patience;
    for (let epoch = state.epoch + 1; epoch <= o.epochs && !stoppedEarly; epoch++) {
      await this.runEpoch(epoch);
      if (o.patience > 0 && epoch - state.bestEpoch >= o.patience) break;
    }
    return this.finish();
  }

  private async runEpoch(epoch: number): Promise<void> {
    const { seed, trainIdx, batch, stepsPerEpoch } = this.run;
    const order = Rng.at(seed, 'order', epoch).shuffle([...trainIdx]);
    const parts = Array.from({ length: stepsPerEpoch }, (_, s) => order.slice(s * batch, (s + 1) * batch));
    let lossSum = 0;
    let imagesSeen = 0;
    const batches = this.source.epoch(
      parts,
      (s) => Rng.at(seed, 'step', epoch, s),
      (s) => `at epoch ${epoch}, step ${s}`,
    );
    for await (const { step: s, rng, got } of batches) {
      if (!got) continue; // every image of this batch is left out
      const done = await this.step(epoch, s, rng, got);
      lossSum += done.loss * done.images;
      imagesSeen += done.images;
    }
    if (imagesSeen === 0)
      throw new Error(
        `no image of epoch ${epoch} could be read (listed in ${this.run.unreadablePath}): the run is kept at epoch ${this.state.epoch}`,
      );
    await this.endEpoch(epoch, lossSum / imagesSeen);
  }

  /** One optimiser step on `got`, the batch of step `s` whose views were drawn with `rng` (which the step goes on drawing from). */
  private async step(epoch: number, s: number, rng: Rng, got: Batch): Promise<{ loss: number; images: number }> {
    const b = got.idx.length;
    let step = this.steps.get(b);
    if (!step) {
      const update = this.optimizer.update(this.setup.options.gradClip);
      step = await TrainStep.create(this.setup, this.params, b, this.auxiliary, this.run.runtime, update);
      this.steps.set(b, step);
    }
    this.resident ??= ResidentTraining.create(step, this.params, this.optimizer, this.run.runtime);
    // the step's place in the run, not the count of steps taken: a batch left out shifts no epoch boundary
    this.optimizer.lr = this.schedule.lrAt((epoch - 1) * this.run.stepsPerEpoch + s);
    const loss = await this.resident.step(step, got.batch, rng);
    if (!Number.isFinite(loss)) throw new Error(`training diverged: the loss is ${loss} at epoch ${epoch}, step ${s} (try a lower --lr)`);
    this.state.steps++;
    this.log({ kind: 'step', epoch, step: s, loss, lr: this.optimizer.lr });
    this.emit({ kind: 'step', epoch, step: s + 1, stepsPerEpoch: this.run.stepsPerEpoch, loss });
    this.stepsThisRun++;
    if (this.opts.stopAfterSteps !== undefined && this.stepsThisRun >= this.opts.stopAfterSteps)
      throw new Error('stopped (stopAfterSteps)');
    return { loss, images: b };
  }

  /** Validation, the best epoch's checkpoint, the saved state (the point a killed run resumes from) and the plot. */
  private async endEpoch(epoch: number, loss: number): Promise<void> {
    const { state } = this;
    // the parameters and optimiser buffers of the moment, back in host memory
    if (this.resident) this.params = (await this.resident.snapshot(this.params)).params;
    const { selectIdx, selectOn, out } = this.run;
    const val = selectIdx.length >= 4 ? await this.validate(selectIdx) : {};
    const rec: EpochRecord = { epoch, loss, val, lr: this.optimizer.lr };
    state.history.push(rec);
    state.epoch = epoch;
    const figure = Number.isFinite(val.srcc) ? val.srcc! : -rec.loss;
    if (figure > state.bestScore) {
      state.bestScore = figure;
      state.bestEpoch = epoch;
      saveCheckpoint(join(out, 'checkpoint'), this.params, this.meta(epoch, val));
    }
    this.log({ kind: 'epoch', ...rec });
    this.emit({ kind: 'epoch', epoch, loss: rec.loss, val });
    saveState(this.run.statePath, this.run.runKey, this.params, state, this.optimizer);
    const epochs = state.history.map((h) => h.epoch);
    writeFileAtomic(
      join(out, 'training.svg'),
      linePlotSvg({
        title: `${this.setup.method.info.name} on ${this.opts.dataset}`,
        xLabel: 'epoch',
        panels: [
          { yLabel: 'training loss', series: [{ name: 'training loss', x: epochs, y: state.history.map((h) => h.loss) }] },
          { yLabel: `${selectOn} SRCC`, series: [{ name: `${selectOn} SRCC`, x: epochs, y: state.history.map((h) => h.val.srcc ?? NaN) }] },
        ],
        mark: state.bestEpoch > 0 ? { x: state.bestEpoch, label: `chosen epoch ${state.bestEpoch} (on ${selectOn})` } : undefined,
      }),
    );
  }

  /** The test figures of the chosen epoch, in the checkpoint and result.json. */
  private async finish(): Promise<TrainResult> {
    const { state, split } = this;
    const { out, selectOn } = this.run;
    const best = loadCheckpoint(join(out, 'checkpoint')).params;
    this.params = best;
    const test = split.test.length >= 4 ? await this.validate(split.test) : undefined;
    const bestVal = state.history.find((h) => h.epoch === state.bestEpoch)?.val ?? {};
    saveCheckpoint(join(out, 'checkpoint'), best, {
      ...this.meta(state.bestEpoch, bestVal),
      metrics: { ...prefix(bestVal, selectOn), ...prefix(test ?? {}, 'test') },
    });
    const skipped = this.source.skipped;
    const unreadable = skipped.size > 0 ? sortedValues(skipped) : undefined;
    writeFileAtomic(
      join(out, 'result.json'),
      JSON.stringify(
        {
          bestEpoch: state.bestEpoch,
          selectOn,
          best: bestVal,
          test,
          history: state.history,
          protocol: this.protocol(),
          ...(unreadable ? { unreadable } : {}),
        },
        null,
        2,
      ) + '\n',
    );
    this.emit({ kind: 'done', epoch: state.bestEpoch, val: test ?? bestVal });
    return {
      out,
      checkpoint: join(out, 'checkpoint.json'),
      bestEpoch: state.bestEpoch,
      best: bestVal,
      test,
      epochs: state.epoch,
      selectOn,
      split: split.settings,
      ...(unreadable ? { unreadable } : {}),
    };
  }

  /**
   * The report's figures on the items `idx` that can be read, with the parameters of the moment. The images
   * are read and scored a part at a time; every part runs in graphs of one batch size, that of the whole list.
   */
  private async validate(idx: number[]): Promise<Record<string, number>> {
    this.scorer.setParams(this.params);
    const graphBatch = this.scorer.graphBatch(idx.filter((i) => !this.source.skipped.has(i)).length);
    // two graph batches a part: the next part decodes while this one is scored, and a whole number of graph
    // batches puts each view where it would be if all were scored at once
    const partSize = 2 * graphBatch;
    const pred: number[] = [];
    const mos: number[] = [];
    for await (const part of this.source.images(idx, partSize, 'while scoring')) {
      pred.push(...(await this.scorer.scoreImages(part.imgs, graphBatch)));
      for (const i of part.idx) mos.push(this.ds.items[i]!.mos);
    }
    if (pred.length < 4) return {};
    const c = correlations(pred, mos);
    return { ...figuresOf(c), n: c.n };
  }

  private log(rec: object): void {
    appendFileSync(join(this.run.out, 'train.jsonl'), JSON.stringify(rec) + '\n');
  }

  private protocol(): string {
    const { split, setup, opts } = this;
    return `${opts.dataset} (${this.ds.target}), ${describeSplit(split.settings)}; ${split.train.length}/${split.val.length}/${split.test.length} images; best epoch chosen on ${this.run.selectOn}; ${setup.options.epochs} epochs max, batch ${this.run.batch}`;
  }

  private meta(epoch: number, metrics: Record<string, number>): Omit<CheckpointMeta, 'format' | 'tensors'> {
    const { opts, ds, setup } = this;
    const { columns } = this.run;
    return {
      method: setup.method.info.name,
      options: { ...setup.options },
      backbone: { ...this.run.backboneSource, id: setup.backbone.weights.id },
      dataset: {
        name: opts.dataset,
        target: ds.target,
        ...(opts.labelFile !== undefined ? { labelFile: opts.labelFile } : {}),
        ...(Object.values(columns).some((c) => c !== undefined) ? { columns } : {}),
      },
      split: this.split.record,
      seed: this.run.seed,
      epoch,
      metrics,
    };
  }

  async close(): Promise<void> {
    this.resident?.dispose();
    for (const s of this.steps.values()) await s.release();
    this.steps.clear();
    await this.source.release();
    await this.scorer.close();
  }
}

/** Library callers get what the command line's parsers would have refused, before any work starts (the method's options are checked by its schema). */
function checkTrainOptions(opts: TrainOptions): void {
  const wholeAtLeast = (name: string, v: unknown, min: number): void => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)
      throw new RangeError(`train: ${name} must be a whole number ≥ ${min}, not ${String(v)}`);
  };
  if (opts.limit !== undefined) wholeAtLeast('limit', opts.limit, 1);
  if (opts.seed !== undefined) wholeAtLeast('seed', opts.seed, 0);
  const m: unknown = opts.methodOptions;
  if (m !== undefined && (typeof m !== 'object' || m === null || Array.isArray(m)))
    throw new TypeError(`train: methodOptions must be an object of the method's options; got ${JSON.stringify(m)}`);
  // the device (one of DEVICE_TYPES, its provider working here) and threads, as createMetric and the command line check
  // them (the batch size is a method option, which the method's schema checks)
  checkRunSettings('train', { device: opts.device, threads: opts.threads });
}

/** What a training run writes in its folder (`train`): a folder holding one of these is a run's. */
const RUN_FILES = ['state.json', 'train.jsonl', 'checkpoint.json', 'result.json', 'unreadable.json'];
/** What a multi-round run writes in its folder (`trainRounds`), besides its round-N folders. */
const ROUNDS_FILES = ['rounds.json'];

/**
 * Refuses an --out folder that holds files but is not a run of this kind: one with other files and no run (a run
 * writes and deletes files there, state-epoch*.safetensors among them, and must not mix them with someone else's),
 * or the folder of a multi-round run given to a single run, or the other way round.
 */
function checkRunFolder(out: string, kind: 'run' | 'rounds'): void {
  let entries: string[];
  try {
    entries = readdirSync(out).filter((e) => e !== '.lock');
  } catch {
    return; // not there yet (or not a folder: checkWritableFolder says so)
  }
  if (entries.length === 0) return;
  const single = entries.some((e) => RUN_FILES.includes(e));
  const rounds = entries.some((e) => ROUNDS_FILES.includes(e) || /^round-\d+$/.test(e));
  if (kind === 'run' ? single : rounds) return;
  if (kind === 'run' && rounds)
    throw new Error(`${out}: the folder of a multi-round run (round-0, …): give the same --rounds to resume it, or another --out`);
  if (kind === 'rounds' && single)
    throw new Error(`${out}: the folder of a single training run: give it without --rounds to resume it, or another --out`);
  const shown = entries.sort().slice(0, 3).join(', ');
  throw new Error(
    `${out}: a folder that holds other files (${shown}${entries.length > 3 ? `, and ${entries.length - 3} more` : ''}) and no training run; give --out a new or empty folder, or the folder of the run to resume`,
  );
}

/** Refuses, before the first step, training items that lack an auxiliary target the method cannot do without. */
function checkAuxiliaryTargets(
  dataset: string,
  method: Method,
  auxiliary: readonly AuxiliaryTarget[],
  ds: Dataset,
  train: readonly number[],
): void {
  for (const t of auxiliary) {
    if (t.missing.kind !== 'refuse') continue;
    const lacking = train.filter((i) => t.read(ds.items[i]!, ds.info) === undefined).map((i) => ds.items[i]!.image);
    if (lacking.length === 0) continue;
    const first = lacking.slice(0, 3).join(', ');
    throw new Error(
      `${dataset}: ${lacking.length} training image(s) have no ${t.name} score (${first}${lacking.length > 3 ? ', …' : ''}); ${method.info.name}: ${t.missing.why}`,
    );
  }
}

/**
 * Checks every image the run reads (training, validation and test sides) before the first step; files
 * that failed in an earlier run of this folder are decoded in full. Throws with the list, or with
 * `skip` returns them by item index; records them in `listPath` either way.
 */
async function checkRunImages(ds: Dataset, split: Split, listPath: string, skip: boolean): Promise<Map<number, UnreadableImage>> {
  const used = [...new Set([...split.train, ...split.val, ...split.test])].sort((a, b) => a - b);
  const files = used.map((i) => imagePath(ds, ds.items[i]!));
  const before = readUnreadable(listPath);
  const found = await findUnreadableImages(files, { decodeFully: new Set(before.map((u) => u.file)) });
  if (found.length === 0) {
    rmSync(listPath, { force: true });
    return new Map();
  }
  writeUnreadable(listPath, found);
  if (!skip) {
    throw new Error(
      `${found.length} of the ${files.length} images of this run cannot be read:\n${listUnreadable(found)}\n` +
        `Replace or remove ${found.length > 1 ? 'them' : 'it'}, or pass skipUnreadable (--skip-unreadable) to train without ${found.length > 1 ? 'them' : 'it'}` +
        `${found.length > 20 ? `; all are listed in ${listPath}` : ''}.`,
    );
  }
  const index = new Map(used.map((i, k) => [files[k]!, i]));
  return new Map(found.map((u) => [index.get(u.file)!, u]));
}

/**
 * Keeps the log's records up to the resumed epoch: the steps of an interrupted epoch are run again after a
 * resume and must appear once. A torn last line (a kill mid-write) goes too.
 */
function trimLog(path: string, epoch: number): void {
  if (!existsSync(path)) return;
  const kept = readRegularText(path, 'training log', READ_LIMITS.labels)
    .split('\n')
    .filter((line) => {
      try {
        const rec = JSON.parse(line) as { epoch?: unknown };
        return typeof rec.epoch !== 'number' || rec.epoch <= epoch;
      } catch {
        return false;
      }
    });
  writeFileAtomic(path, kept.map((l) => l + '\n').join(''));
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

/**
 * The settings in which two run identities (`runKey`) differ, named as a user gives them: "epochs 3 ≠ 2" (now ≠ then).
 * The dataset's digests are said once, as its images or scores; the sides' sizes and digests, which follow from the
 * rest, only when nothing else differs.
 */
export function runKeyChanges(now: string, then: string): string[] {
  let a: unknown;
  let b: unknown;
  try {
    a = JSON.parse(now);
    b = JSON.parse(then);
  } catch {
    return [];
  }
  const flat = (v: unknown, path: string, out: Map<string, unknown>): Map<string, unknown> => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) flat(x, path ? `${path}.${k}` : k, out);
    } else out.set(path, v);
    return out;
  };
  const x = flat(a, '', new Map());
  const y = flat(b, '', new Map());
  const show = (v: unknown): string =>
    v === undefined ? 'unset' : Array.isArray(v) ? v.join(',') : typeof v === 'string' ? v : JSON.stringify(v);
  const named: Record<string, string> = {
    'split.by': 'split by',
    'split.ratios': 'ratios',
    'split.seed': 'seed',
    'split.round': 'round',
    'split.limit': 'limit',
    method: 'method',
    dataset: 'dataset',
    target: 'target',
    batch: 'batch',
  };
  const out: string[] = [];
  let images = false;
  let weights = false;
  let derived = false;
  for (const key of new Set([...x.keys(), ...y.keys()])) {
    const [p, q] = [x.get(key), y.get(key)];
    if (JSON.stringify(p) === JSON.stringify(q)) continue;
    if (key === 'batch' && x.get('o.batchSize') !== y.get('o.batchSize')) continue; // follows from batchSize
    if (key.startsWith('o.')) out.push(`${key.slice(2)} ${show(p)} ≠ ${show(q)}`);
    else if (named[key]) out.push(`${named[key]} ${show(p)} ≠ ${show(q)}`);
    else if (key === 'backbone') weights = true;
    else if (key.startsWith('split.dataset.')) images = true;
    else if (key.startsWith('split.'))
      derived = true; // the sides' sizes and digests follow from the rest
    else out.push(`${key} ${show(p)} ≠ ${show(q)}`);
  }
  if (weights) out.push('the model (other weights)');
  if (images) out.push("the dataset's images or scores");
  if (out.length === 0 && derived) out.push('the split');
  return out;
}

function loadState(base: string, runKey: string): { params: ParamSet; state: State; optim: ReturnType<Optimizer['state']> } | null {
  if (!existsSync(`${base}.json`)) return null;
  let saved: { runKey: string; state: State; tensors: string };
  try {
    saved = JSON.parse(readRegularText(`${base}.json`, "run's saved state", READ_LIMITS.json)) as typeof saved;
  } catch (err) {
    throw new Error(`${base}.json: the run's saved state cannot be read (${(err as Error).message}); delete it to start the run again`);
  }
  if (saved.runKey !== runKey) {
    const changes = runKeyChanges(runKey, saved.runKey);
    throw new Error(
      `${base}.json belongs to a run with other settings${changes.length ? ` (now ≠ then: ${changes.join(', ')})` : ''}: give that run's settings to resume it, or use another --out (or delete the folder to start over)`,
    );
  }
  const { tensors, metadata } = readSafetensors(saved.tensors);
  const params: ParamSet = new Map();
  for (const [k, v] of tensors) if (k.startsWith('param.')) params.set(k.slice('param.'.length), v);
  return { params, state: saved.state, optim: optimizerStateFromSafetensors(tensors, metadata) };
}

/**
 * The whole protocol: N rounds with split seeds seed, seed+1, … (the `limit` subset, if any, is the same
 * in every round); mean, median and std of the test figures.
 */
export async function trainRounds(
  opts: TrainOptions & { rounds: number },
): Promise<{ rounds: TrainResult[]; summary: Record<string, { mean: number; median: number; std: number }>; protocol: string }> {
  if (!Number.isSafeInteger(opts.rounds) || opts.rounds < 1)
    throw new RangeError(`trainRounds: rounds must be a whole number ≥ 1, not ${String(opts.rounds)}`);
  if (typeof opts.out !== 'string' || opts.out.trim() === '') throw new TypeError('train: out (the folder for the run) is required');
  checkTrainOptions(opts);
  checkWritableFolder(opts.out);
  checkRunFolder(opts.out, 'rounds');
  return withLock(opts.out, 'folder', () => trainRoundsLocked(opts));
}

async function trainRoundsLocked(opts: TrainOptions & { rounds: number }): ReturnType<typeof trainRounds> {
  const rounds: TrainResult[] = [];
  for (let r = 0; r < opts.rounds; r++) {
    rounds.push(await train({ ...opts, round: r, out: join(opts.out, `round-${r}`) }));
  }
  const summary: Record<string, { mean: number; median: number; std: number }> = {};
  for (const { key: k } of FIGURES) {
    const vals = rounds.map((r) => r.test?.[k]).filter((v): v is number => v !== undefined);
    if (vals.length) {
      const s = summarise(vals);
      summary[k] = { mean: s.mean, median: s.median, std: s.std };
    }
  }
  // the settings the rounds actually used (the dataset's own split unit, the default shares), not the options as given
  const first = rounds[0]!;
  const s = first.split;
  const limit = s.limit !== null ? `, the same seeded subset of ${s.limit} images in each` : '';
  const protocol = `${opts.rounds} rounds of ${opts.method} on ${opts.dataset}, split by ${s.by} ${s.ratios.join('/')}, split seeds ${s.seed}…${roundSeed(s.seed, opts.rounds - 1)}${limit}; test figures of the epoch chosen on ${first.selectOn}; std with ddof=1`;
  writeFileAtomic(
    join(opts.out, 'rounds.json'),
    JSON.stringify(
      {
        protocol,
        split: { by: s.by, ratios: s.ratios, seed: s.seed, limit: s.limit },
        summary,
        rounds: rounds.map((r) => ({ out: r.out, round: r.split.round, bestEpoch: r.bestEpoch, test: r.test })),
      },
      null,
      2,
    ) + '\n',
  );
  return { rounds, summary, protocol };
}
