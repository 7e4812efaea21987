/**
 * The training loop shared by every trainable method: batches from a seeded split, the method's
 * augmentation, its graph (loss, gradients and the optimiser's update in one ONNX Runtime run, the state kept
 * where the graph runs: resident.ts), the schedule, validation every epoch, early stopping, a JSONL log, and a
 * resumable state written atomically at every epoch's end (state.ts). Every random choice derives from (seed, epoch,
 * step), so a run killed at any moment resumes from its last epoch and ends with the same numbers as an
 * uninterrupted one.
 */
import { mkdirSync, rmSync, appendFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { getMethod, loadBackbone } from '../methods/index.js';
import { type AuxiliaryTarget, type Method, type Options, enabledAuxiliary, parseOptions } from '../methods/method.js';
import { type BackboneSource, type MethodSetup, Scorer, TrainStep, setUp } from '../methods/graphs.js';
import { type ParamSet } from '../prompts/context.js';
import { type RuntimeOptions } from '../graph/runtime.js';
import { loadDataset, type Dataset, type DatasetColumns } from '../data/datasets.js';
import { runSplit, resolveSplitSettings, describeSplit, roundSeed, type RunSplit } from '../data/splits.js';
import { correlations, figuresOf } from '../eval/metrics.js';
import { linePlotSvg } from '../eval/plot.js';
import { optimizerFor, cosineWithWarmup, epochCosineWithWarmup, constantLr, type Optimizer, type Schedule } from './optim.js';
import { saveCheckpoint, loadCheckpoint, type CheckpointMeta } from '../methods/checkpoint.js';
import { checkWritableFolder, writeFileAtomic } from '../util/fs.js';
import { withLock } from '../util/lock.js';
import { ResidentTraining } from './resident.js';
import { BatchSource, sortedValues, type Batch } from './batches.js';
import { Rng } from '../util/rng.js';
import type { TrainEvent, TrainOptions, TrainResult } from './options.js';
import { checkAuxiliaryTargets, checkRunFolder, checkRunImages, checkTrainOptions } from './checks.js';
import { type EpochRecord, type State, loadState, saveState, trimLog } from './state.js';

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

/** A run's fixed settings, worked out by `TrainingRun.prepare`. */
interface RunSettings {
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
}

/** Everything a TrainingRun holds, by name. */
interface RunParts {
  opts: TrainOptions;
  setup: MethodSetup;
  ds: Dataset;
  split: RunSplit;
  source: BatchSource;
  auxiliary: readonly AuxiliaryTarget[];
  run: RunSettings;
  schedule: Schedule;
  optimizer: Optimizer;
  params: ParamSet;
  state: State;
  emit: (e: TrainEvent) => void;
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

  private readonly opts: TrainOptions;
  private readonly setup: MethodSetup;
  private readonly ds: Dataset;
  private readonly split: RunSplit;
  private readonly source: BatchSource;
  private readonly auxiliary: readonly AuxiliaryTarget[];
  private readonly run: RunSettings;
  private readonly schedule: Schedule;
  private readonly optimizer: Optimizer;
  private params: ParamSet;
  private readonly state: State;
  private readonly emit: (e: TrainEvent) => void;

  private constructor(parts: RunParts) {
    this.opts = parts.opts;
    this.setup = parts.setup;
    this.ds = parts.ds;
    this.split = parts.split;
    this.source = parts.source;
    this.auxiliary = parts.auxiliary;
    this.run = parts.run;
    this.schedule = parts.schedule;
    this.optimizer = parts.optimizer;
    this.params = parts.params;
    this.state = parts.state;
    this.emit = parts.emit;
    this.scorer = new Scorer(parts.setup, parts.params, parts.run.runtime, Math.min(8, parts.run.batch));
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
    return new TrainingRun({
      opts,
      setup,
      ds,
      split,
      source,
      auxiliary,
      run: {
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
      schedule: makeSchedule(o, stepsPerEpoch),
      optimizer,
      params,
      state,
      emit,
    });
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

function prefix(m: Record<string, number>, p: string): Record<string, number> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [`${p}_${k}`, v]));
}
