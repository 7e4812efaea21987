/**
 * Training state that stays where the graph runs: the trained parameters and the optimiser's buffers are device
 * tensors fed from one step's outputs to the next step's inputs, and the update is part of the training graph
 * (`TrainStep` made with `Optimizer.update`). A step moves the batch in and the loss out; the state comes back
 * to host memory only when asked (`snapshot`: at an epoch's end, for validation, the checkpoint and the saved
 * state). On the CPU, two sets of host arrays take turns as a step's inputs and outputs, so a step allocates
 * nothing; on WebGPU the outputs are new GPU buffers and the previous ones are freed.
 */
import { DeviceTensor, download, type RuntimeOptions } from '../graph/runtime.js';
import { type DeviceState, type TrainBatch, type TrainStep } from '../methods/graphs.js';
import { type ParamSet } from '../prompts/context.js';
import { type Rng } from '../util/rng.js';
import { type Optimizer, type OptimizerState } from './optim.js';

export class ResidentTraining {
  /** the host arrays the next CPU step writes into (null on a GPU provider) */
  private spare: DeviceState | null;

  private constructor(
    private readonly optimizer: Optimizer,
    private readonly runtime: RuntimeOptions,
    private state: DeviceState,
    private readonly shapes: ReadonlyMap<string, number[]>,
  ) {
    const onHost = (runtime.provider ?? 'cpu') === 'cpu';
    this.spare = onHost ? new Map([...shapes].map(([k, shape]) => [k, DeviceTensor.host(new Float32Array(size(shape)), shape)])) : null;
  }

  /**
   * The state of `step`'s trained parameters (copied from `params`) and their optimiser buffers (copied from the
   * optimiser's state; zeros before the first step, as torch starts them).
   */
  static create(step: TrainStep, params: ParamSet, optimizer: Optimizer, runtime: RuntimeOptions): ResidentTraining {
    const buffers = optimizer.state().buffers;
    const state: DeviceState = new Map();
    const shapes = new Map<string, number[]>();
    for (const key of step.stateKeys()) {
      const param = params.get(key);
      const dot = key.lastIndexOf('.');
      const shape = param?.shape ?? params.get(key.slice(0, dot))?.shape;
      if (!shape) throw new Error(`no parameter for the training state "${key}"`);
      const saved = param ? undefined : buffers[key];
      if (!param && !saved && optimizer.steps > 0)
        throw new Error(`${optimizer.kind}: no "${key}" in the state after ${optimizer.steps} steps (did the parameters change?)`);
      if (saved && saved.length !== size(shape))
        throw new Error(`the optimiser buffer "${key}" has ${saved.length} values, its parameter ${size(shape)}`);
      const data = param ? param.data.slice() : (saved?.slice() ?? new Float32Array(size(shape)));
      state.set(key, DeviceTensor.host(data, shape));
      shapes.set(key, [...shape]);
    }
    return new ResidentTraining(optimizer, runtime, state, shapes);
  }

  /**
   * One optimiser step with the optimiser's learning rate of the moment; returns the loss. A step whose loss is
   * not finite is not taken: the state stays as it was, and the caller decides what to do.
   */
  async step(step: TrainStep, batch: TrainBatch, rng: Rng): Promise<number> {
    const { loss, next } = await step.runUpdate(batch, this.state, this.optimizer.scalars(), rng, this.spare ?? undefined);
    if (!Number.isFinite(loss)) {
      if (!this.spare) for (const t of next.values()) t.dispose();
      return loss;
    }
    if (this.spare) this.spare = this.state;
    else for (const t of this.state.values()) t.dispose();
    this.state = next;
    this.optimizer.advance();
    return loss;
  }

  /**
   * The parameters (those in `params` that were not trained kept as they are) and the optimiser's state, in host
   * memory; the optimiser is loaded with that state too.
   */
  async snapshot(params: ParamSet): Promise<{ params: ParamSet; optim: OptimizerState }> {
    const values = await download(this.state, this.runtime);
    const out: ParamSet = new Map(params);
    const base = this.optimizer.state();
    const buffers: Record<string, Float32Array> = { ...base.buffers };
    for (const [key, data] of values) {
      if (params.has(key)) out.set(key, { shape: [...this.shapes.get(key)!], data });
      else buffers[key] = data;
    }
    const optim = { ...base, buffers };
    this.optimizer.load(optim);
    return { params: out, optim };
  }

  /** Whether the state is in GPU buffers (after a step on WebGPU). */
  get onGpu(): boolean {
    return [...this.state.values()].some((t) => t.onGpu);
  }

  /** Frees GPU buffers now (host arrays go with the collector). */
  dispose(): void {
    for (const t of this.state.values()) t.dispose();
  }
}

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
