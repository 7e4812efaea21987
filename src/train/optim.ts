/**
 * Optimisers and learning-rate schedules. The update rules are PyTorch's (torch.optim.SGD, Adam, AdamW without
 * amsgrad/maximize), so a method's published hyper-parameters mean the same here, and they are written once, as
 * graph operations: the training graph applies them after the gradients, so parameters and optimiser state stay
 * where the graph runs (a GPU buffer on WebGPU) and a step moves only the batch in and the loss out. `step()` runs
 * the same operations on host arrays (for a caller holding its own gradients, and the tests).
 *
 * Arithmetic is float32, one rounding per operation in torch's order (its float32 kernels): what torch computes
 * in float64 (bias corrections, step size, 1 − lr·wd) is computed here in float64 too and fed as float32 scalars.
 * On the CPU the result is the same bit for bit whichever path runs it; a GPU's division and square root may
 * differ in the last bit, so a run resumed on another device is not bit-identical.
 *
 * Conventions:
 * - `step()`: every parameter must have a gradient of the same length at every step, and every gradient a
 *   parameter (frozen weights are simply not passed in). The same set of parameters is expected at every step;
 *   state for a parameter that disappeared, or missing state for one that appeared, is an error. In the training
 *   graph, a parameter the loss does not reach is left as it is, as torch skips a parameter without a gradient.
 * - `state()` returns copies; `load()` copies in. Buffers are named `${param}.${slot}` with torch's slot
 *   names (`momentum_buffer`, `exp_avg`, `exp_avg_sq`). `step` counts the steps taken so far.
 * - `lr` may be changed between steps (a schedule sets it); `load()` restores it with the other
 *   hyper-parameters, as torch's `load_state_dict` restores the param groups.
 */

import { Graph, type Value, add, div, greater, mul, reshape, sqrt, sub, where, slice, reduceSum } from '../graph/graph.js';
import { CompiledGraph } from '../graph/runtime.js';
import type { HostTensor } from '../graph/tensor.js';
import { type GraphUpdate, type UpdateEntry } from '../methods/graphs.js';
import { type CommonOptions } from '../methods/options.js';

export type Params = Map<string, Float32Array>;

export interface OptimizerState {
  kind: string;
  step: number;
  hyper: Record<string, number>;
  buffers: Record<string, Float32Array>;
}

export interface Optimizer {
  readonly kind: 'sgd' | 'adam' | 'adamw';
  lr: number;
  /** steps taken so far */
  readonly steps: number;
  /**
   * The update as graph operations, gradient clipping (torch's clip_grad_norm_, all gradients together, 0: off)
   * included, for the training graph. Its structure follows the hyper-parameters: make it after `load()`.
   */
  update(gradClip?: number): GraphUpdate;
  /** The scalars the next step's graph is fed (its step number and the learning rate of the moment). */
  scalars(): Float32Array;
  /** Counts a step taken by a graph that applied `update` (the caller holds the buffers meanwhile). */
  advance(): void;
  /** One step on host arrays, updated in place (runs the update's graph on the CPU). */
  step(params: Params, grads: Map<string, Float32Array>, gradClip?: number): Promise<void>;
  state(): OptimizerState;
  load(state: OptimizerState): void;
}

function checkGrads(kind: string, params: Params, grads: Map<string, Float32Array>): void {
  for (const [name, p] of params) {
    const g = grads.get(name);
    if (!g) throw new Error(`${kind}: no gradient for parameter "${name}"`);
    if (g.length !== p.length) throw new Error(`${kind}: gradient of "${name}" has ${g.length} values, the parameter ${p.length}`);
  }
  for (const name of grads.keys()) {
    if (!params.has(name)) throw new Error(`${kind}: gradient for "${name}", which is not among the parameters`);
  }
}

function checkHyper(kind: string, name: string, value: number, ok: (v: number) => boolean, rule: string): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || !ok(value)) throw new Error(`${kind}: ${name} = ${value}, must be ${rule}`);
}

/** The scalar at `index` of the step's scalar vector, as a [1] value that broadcasts. */
function scalarAt(scalars: Value, index: number): Value {
  return slice(scalars, 0, index, index + 1);
}

/**
 * torch.nn.utils.clip_grad_norm_: all gradients scaled together by min(1, maxNorm / (‖g‖ + 1e-6)), the norm over
 * every gradient. A non-finite norm gives non-finite parameters, and the next step's loss says so.
 */
function clipGradients(entries: readonly UpdateEntry[], maxNorm: number): Value[] {
  const g = entries[0]!.grad.graph;
  let sumSq: Value | null = null;
  for (const e of entries) {
    const s = reduceSum(reshape(mul(e.grad, e.grad), [-1]), [0], true);
    sumSq = sumSq ? add(sumSq, s) : s;
  }
  const coef = div(g.scalar(maxNorm), add(sqrt(sumSq!), 1e-6));
  const clamped = where(greater(coef, 1), g.scalar(1), coef);
  return entries.map((e) => mul(e.grad, clamped));
}

/**
 * What the concrete optimisers share: hyper-parameters as a record (so state and load are generic),
 * per-parameter buffers by slot for the host `step`, the checks that buffers match the parameters, and the
 * host step that runs the update's graph.
 */
abstract class BaseOptimizer {
  abstract readonly kind: 'sgd' | 'adam' | 'adamw';
  protected stepsTaken = 0;
  /** slot → parameter name → buffer */
  protected readonly slots: Map<string, Map<string, Float32Array>>;
  /** the host step's graph, for one set of parameter shapes and one update structure */
  private hostGraph: { key: string; graph: Promise<CompiledGraph> } | null = null;

  protected constructor(
    protected hyper: Record<string, number>,
    private readonly slotNames: string[],
  ) {
    this.slots = new Map(slotNames.map((s) => [s, new Map<string, Float32Array>()]));
  }

  get lr(): number {
    return this.hyper.lr!;
  }

  set lr(value: number) {
    checkHyper(this.kind, 'lr', value, (v) => v >= 0, '≥ 0');
    this.hyper.lr = value;
  }

  get steps(): number {
    return this.stepsTaken;
  }

  protected abstract validate(hyper: Record<string, number>): void;

  /** The slots each parameter has under the current hyper-parameters (SGD without momentum keeps none). */
  protected abstract activeSlots(): string[];

  /** The update of one parameter: its new value and its slots' (in `activeSlots` order). */
  protected abstract updateOne(scalars: Value, e: UpdateEntry, grad: Value): { param: Value; slots: Value[] };

  /** What decides the update graph's structure, beyond the shapes. */
  protected abstract structure(): string;

  abstract scalars(): Float32Array;

  update(gradClip = 0): GraphUpdate {
    checkHyper(this.kind, 'gradClip', gradClip, (v) => v >= 0, '≥ 0 (0: off)');
    const slots = this.activeSlots();
    const count = this.scalars().length;
    return {
      slots,
      scalarCount: count,
      key: `${this.kind}|${this.structure()}|clip ${gradClip}`,
      build: (scalars, entries) => {
        const grads = gradClip > 0 ? clipGradients(entries, gradClip) : entries.map((e) => e.grad);
        return entries.map((e, i) => this.updateOne(scalars, e, grads[i]!));
      },
    };
  }

  advance(): void {
    this.stepsTaken++;
  }

  /** Checks that the stored buffers belong to exactly these parameters and have their lengths. */
  protected checkBuffers(params: Params): void {
    const active = this.activeSlots();
    for (const [slot, buffers] of this.slots) {
      if (!active.includes(slot)) continue;
      for (const [name, buf] of buffers) {
        const p = params.get(name);
        if (!p) throw new Error(`${this.kind}: state has "${name}.${slot}" but no such parameter was passed`);
        if (p.length !== buf.length) throw new Error(`${this.kind}: "${name}.${slot}" has ${buf.length} values, the parameter ${p.length}`);
      }
      if (this.stepsTaken > 0) {
        for (const name of params.keys()) {
          if (!buffers.has(name))
            throw new Error(`${this.kind}: no "${name}.${slot}" in the state after ${this.stepsTaken} steps (did the parameters change?)`);
        }
      }
    }
  }

  async step(params: Params, grads: Map<string, Float32Array>, gradClip = 0): Promise<void> {
    checkGrads(this.kind, params, grads);
    this.checkBuffers(params);
    const update = this.update(gradClip);
    const names = [...params.keys()];
    const key = `${update.key}|${names.map((n) => `${n}:${params.get(n)!.length}`).join(',')}`;
    if (this.hostGraph?.key !== key) {
      const old = this.hostGraph;
      this.hostGraph = { key, graph: CompiledGraph.create(hostUpdateGraph(update, names, params)) };
      if (old) await (await old.graph).release();
    }
    const graph = await this.hostGraph.graph;
    const feeds: Record<string, Float32Array> = { scalars: this.scalars() };
    for (const [i, name] of names.entries()) {
      const p = params.get(name)!;
      feeds[`p${i}`] = p;
      feeds[`g${i}`] = grads.get(name)!;
      for (const [j, slot] of update.slots.entries()) {
        let buf = this.slots.get(slot)!.get(name);
        if (!buf) this.slots.get(slot)!.set(name, (buf = new Float32Array(p.length)));
        feeds[`s${i}_${j}`] = buf;
      }
    }
    const out = await graph.run(feeds);
    for (const [i, name] of names.entries()) {
      params.get(name)!.set(out[`p${i}'`]!.data as Float32Array);
      for (const [j, slot] of update.slots.entries())
        this.slots
          .get(slot)!
          .get(name)!
          .set(out[`s${i}_${j}'`]!.data as Float32Array);
    }
    this.stepsTaken++;
  }

  state(): OptimizerState {
    const buffers: Record<string, Float32Array> = {};
    for (const [slot, map] of this.slots) for (const [name, buf] of map) buffers[`${name}.${slot}`] = buf.slice();
    return { kind: this.kind, step: this.stepsTaken, hyper: { ...this.hyper }, buffers };
  }

  load(state: OptimizerState): void {
    if (state.kind !== this.kind) throw new Error(`${this.kind}: cannot load the state of a "${state.kind}" optimiser`);
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`${this.kind}: state step ${state.step} is not a count of steps`);
    const hyper: Record<string, number> = {};
    for (const key of Object.keys(this.hyper)) {
      const v = state.hyper[key];
      if (v === undefined) throw new Error(`${this.kind}: state lacks the hyper-parameter "${key}"`);
      hyper[key] = v;
    }
    this.validate(hyper);
    const slots = new Map(this.slotNames.map((s) => [s, new Map<string, Float32Array>()]));
    for (const [key, buf] of Object.entries(state.buffers)) {
      const dot = key.lastIndexOf('.');
      const slot = slots.get(key.slice(dot + 1));
      if (dot <= 0 || !slot)
        throw new Error(`${this.kind}: unexpected state buffer "${key}" (slots: ${[...slots.keys()].join(', ') || 'none'})`);
      if (!(buf instanceof Float32Array)) throw new Error(`${this.kind}: state buffer "${key}" is not a Float32Array`);
      slot.set(key.slice(0, dot), buf.slice());
    }
    this.hyper = hyper;
    this.stepsTaken = state.step;
    for (const [slot, map] of slots) this.slots.set(slot, map);
  }
}

/** The host step's graph: p_i, g_i and slot s_i_j in, their new values out as p_i' and s_i_j'. */
function hostUpdateGraph(update: GraphUpdate, names: readonly string[], params: Params): Graph {
  const g = new Graph('optimizer_step');
  const scalars = g.input('scalars', [update.scalarCount]);
  const entries = names.map((name, i) => {
    const n = params.get(name)!.length;
    return {
      param: g.input(`p${i}`, [n]),
      grad: g.input(`g${i}`, [n]),
      slots: update.slots.map((_, j) => g.input(`s${i}_${j}`, [n])),
    };
  });
  update.build(scalars, entries).forEach((next, i) => {
    g.output(`p${i}'`, next.param);
    next.slots.forEach((v, j) => g.output(`s${i}_${j}'`, v));
  });
  return g;
}

/** SGD's scalars, in this order. */
const SGD_SCALARS = ['lr', 'momentum', 'oneMinusDampening', 'weightDecay', 'first'] as const;

class Sgd extends BaseOptimizer implements Optimizer {
  readonly kind = 'sgd';

  constructor(hyper: Record<string, number>) {
    super(hyper, ['momentum_buffer']);
    this.validate(hyper);
  }

  protected validate(h: Record<string, number>): void {
    checkHyper('sgd', 'lr', h.lr!, (v) => v >= 0, '≥ 0');
    checkHyper('sgd', 'momentum', h.momentum!, (v) => v >= 0, '≥ 0');
    checkHyper('sgd', 'weightDecay', h.weightDecay!, (v) => v >= 0, '≥ 0');
    checkHyper('sgd', 'dampening', h.dampening!, () => true, 'a number');
    checkHyper('sgd', 'nesterov', h.nesterov!, (v) => v === 0 || v === 1, '0 or 1');
    // As torch: Nesterov momentum is defined only with momentum and without dampening.
    if (h.nesterov && (h.momentum! <= 0 || h.dampening !== 0)) throw new Error('sgd: nesterov needs momentum > 0 and dampening = 0');
  }

  protected activeSlots(): string[] {
    return this.hyper.momentum !== 0 ? ['momentum_buffer'] : [];
  }

  protected structure(): string {
    const h = this.hyper;
    return `momentum ${h.momentum !== 0} nesterov ${h.nesterov} decay ${h.weightDecay !== 0}`;
  }

  scalars(): Float32Array {
    const h = this.hyper;
    const v: Record<(typeof SGD_SCALARS)[number], number> = {
      lr: h.lr!,
      momentum: h.momentum!,
      oneMinusDampening: 1 - h.dampening!,
      weightDecay: h.weightDecay!,
      first: this.stepsTaken === 0 ? 1 : 0,
    };
    return Float32Array.from(SGD_SCALARS, (k) => v[k]);
  }

  protected updateOne(s: Value, e: UpdateEntry, grad: Value): { param: Value; slots: Value[] } {
    const at = (k: (typeof SGD_SCALARS)[number]): Value => scalarAt(s, SGD_SCALARS.indexOf(k));
    const h = this.hyper;
    // torch: d = g + wd·p; buf = d at the first step (undamped), else μ·buf + (1 − τ)·d; d = d + μ·buf (Nesterov) or buf
    let d = h.weightDecay !== 0 ? add(grad, mul(at('weightDecay'), e.param)) : grad;
    const slots: Value[] = [];
    if (h.momentum !== 0) {
      const later = add(mul(at('momentum'), e.slots[0]!), mul(at('oneMinusDampening'), d));
      const buf = where(greater(at('first'), 0.5), d, later);
      slots.push(buf);
      d = h.nesterov ? add(d, mul(at('momentum'), buf)) : buf;
    }
    return { param: sub(e.param, mul(at('lr'), d)), slots };
  }
}

/** Adam's scalars, in this order. */
const ADAM_SCALARS = ['stepSize', 'bc2Sqrt', 'oneMinusBeta1', 'beta2', 'oneMinusBeta2', 'eps', 'weightDecay', 'decay'] as const;

class Adam extends BaseOptimizer implements Optimizer {
  constructor(
    readonly kind: 'adam' | 'adamw',
    hyper: Record<string, number>,
  ) {
    super(hyper, ['exp_avg', 'exp_avg_sq']);
    this.validate(hyper);
  }

  protected validate(h: Record<string, number>): void {
    checkHyper(this.kind, 'lr', h.lr!, (v) => v >= 0, '≥ 0');
    checkHyper(this.kind, 'beta1', h.beta1!, (v) => v >= 0 && v < 1, 'in [0, 1)');
    checkHyper(this.kind, 'beta2', h.beta2!, (v) => v >= 0 && v < 1, 'in [0, 1)');
    checkHyper(this.kind, 'eps', h.eps!, (v) => v >= 0, '≥ 0');
    checkHyper(this.kind, 'weightDecay', h.weightDecay!, (v) => v >= 0, '≥ 0');
  }

  protected activeSlots(): string[] {
    return ['exp_avg', 'exp_avg_sq'];
  }

  protected structure(): string {
    return `decay ${this.hyper.weightDecay !== 0}`;
  }

  scalars(): Float32Array {
    const { lr, beta1, beta2, eps, weightDecay } = this.hyper;
    const t = this.stepsTaken + 1;
    // computed in float64, as torch computes them in Python
    const v: Record<(typeof ADAM_SCALARS)[number], number> = {
      stepSize: lr! / (1 - beta1! ** t),
      bc2Sqrt: Math.sqrt(1 - beta2! ** t),
      oneMinusBeta1: 1 - beta1!,
      beta2: beta2!,
      oneMinusBeta2: 1 - beta2!,
      eps: eps!,
      weightDecay: weightDecay!,
      decay: 1 - lr! * weightDecay!,
    };
    return Float32Array.from(ADAM_SCALARS, (k) => v[k]);
  }

  protected updateOne(s: Value, e: UpdateEntry, grad: Value): { param: Value; slots: Value[] } {
    const at = (k: (typeof ADAM_SCALARS)[number]): Value => scalarAt(s, ADAM_SCALARS.indexOf(k));
    const decays = this.hyper.weightDecay !== 0;
    // AdamW shrinks the weight before the update; Adam adds the L2 term to the gradient.
    const p = decays && this.kind === 'adamw' ? mul(e.param, at('decay')) : e.param;
    const g = decays && this.kind === 'adam' ? add(grad, mul(at('weightDecay'), e.param)) : grad;
    const [m0, v0] = e.slots as [Value, Value];
    // torch: exp_avg.lerp_(g, 1 − β1); exp_avg_sq.mul_(β2).addcmul_(g, g, value=1 − β2)
    const m = add(m0, mul(at('oneMinusBeta1'), sub(g, m0)));
    const v = add(mul(at('beta2'), v0), mul(mul(at('oneMinusBeta2'), g), g));
    // denom = √v / √(1 − β2^t) + ε; param.addcdiv_(m, denom, value=−step_size)
    const denom = add(div(sqrt(v), at('bc2Sqrt')), at('eps'));
    return { param: sub(p, div(mul(at('stepSize'), m), denom)), slots: [m, v] };
  }
}

/** torch.optim.SGD: weight decay added to the gradient, momentum buffer initialised to the first gradient. */
export function sgd(opts: { lr: number; momentum?: number; weightDecay?: number; nesterov?: boolean; dampening?: number }): Optimizer {
  return new Sgd({
    lr: opts.lr,
    momentum: opts.momentum ?? 0,
    dampening: opts.dampening ?? 0,
    weightDecay: opts.weightDecay ?? 0,
    nesterov: opts.nesterov ? 1 : 0,
  });
}

/** torch.optim.Adam: weight decay as an L2 term added to the gradient. Defaults betas (0.9, 0.999), eps 1e-8. */
export function adam(opts: { lr: number; betas?: [number, number]; eps?: number; weightDecay?: number }): Optimizer {
  return new Adam('adam', {
    lr: opts.lr,
    beta1: opts.betas?.[0] ?? 0.9,
    beta2: opts.betas?.[1] ?? 0.999,
    eps: opts.eps ?? 1e-8,
    weightDecay: opts.weightDecay ?? 0,
  });
}

/** torch.optim.AdamW: decoupled weight decay (default 0.01), p ← p·(1 − lr·wd) before the Adam update. */
export function adamw(opts: { lr: number; betas?: [number, number]; eps?: number; weightDecay?: number }): Optimizer {
  return new Adam('adamw', {
    lr: opts.lr,
    beta1: opts.betas?.[0] ?? 0.9,
    beta2: opts.betas?.[1] ?? 0.999,
    eps: opts.eps ?? 1e-8,
    weightDecay: opts.weightDecay ?? 0.01,
  });
}

/** The optimiser a method's options name, with their learning rate, momentum and weight decay. */
export function optimizerFor(o: Pick<CommonOptions, 'optimizer' | 'lr' | 'momentum' | 'weightDecay'>): Optimizer {
  switch (o.optimizer) {
    case 'sgd':
      return sgd({ lr: o.lr, momentum: o.momentum, weightDecay: o.weightDecay });
    case 'adamw':
      return adamw({ lr: o.lr, weightDecay: o.weightDecay });
    default:
      return adam({ lr: o.lr, weightDecay: o.weightDecay });
  }
}

/**
 * Optimiser state as safetensors tensors plus string metadata (to write with `writeSafetensors`, maybe
 * beside the parameters in one file): buffers become 1-D F32 tensors named `${prefix}${buffer}`, and
 * kind, step and hyper-parameters go as JSON under the metadata key `${prefix}state`.
 */
export function optimizerStateToSafetensors(
  state: OptimizerState,
  prefix = 'optim.',
): { tensors: Record<string, HostTensor>; metadata: Record<string, string> } {
  const tensors: Record<string, HostTensor> = {};
  for (const [name, data] of Object.entries(state.buffers)) tensors[prefix + name] = { shape: [data.length], data };
  return { tensors, metadata: { [`${prefix}state`]: JSON.stringify({ kind: state.kind, step: state.step, hyper: state.hyper }) } };
}

/** The inverse of `optimizerStateToSafetensors`, from what `readSafetensors` returns. */
export function optimizerStateFromSafetensors(
  tensors: ReadonlyMap<string, HostTensor>,
  metadata: Record<string, string>,
  prefix = 'optim.',
): OptimizerState {
  const json = metadata[`${prefix}state`];
  if (json === undefined) throw new Error(`no optimiser state: metadata key "${prefix}state" is missing`);
  const head = JSON.parse(json) as { kind: string; step: number; hyper: Record<string, number> };
  const buffers: Record<string, Float32Array> = {};
  for (const [name, t] of tensors) if (name.startsWith(prefix)) buffers[name.slice(prefix.length)] = t.data;
  return { kind: head.kind, step: head.step, hyper: head.hyper, buffers };
}

export interface Schedule {
  /** Learning rate for the optimiser step with this 0-based index. */
  lrAt(step: number): number;
}

/**
 * Warm-up, then cosine decay from `baseLr` at step `warmupSteps` towards `minLr` at step `totalSteps`
 * (half a cosine period over totalSteps − warmupSteps; steps past the end stay at minLr).
 * During warm-up (steps 0 … warmupSteps − 1) the rate is the constant `warmupLr` when given (Tang:
 * one epoch at 1e-5), else a linear ramp baseLr·(step + 1)/(warmupSteps + 1) that never wastes a step
 * at zero and meets the cosine at baseLr.
 */
export function cosineWithWarmup(opts: {
  baseLr: number;
  totalSteps: number;
  warmupSteps?: number;
  warmupLr?: number;
  minLr?: number;
}): Schedule {
  const { baseLr, totalSteps, warmupSteps = 0, warmupLr, minLr = 0 } = opts;
  const what = 'cosineWithWarmup';
  checkHyper(what, 'baseLr', baseLr, (v) => v >= 0, '≥ 0');
  checkHyper(what, 'totalSteps', totalSteps, (v) => Number.isInteger(v) && v > 0, 'a positive integer');
  checkHyper(what, 'warmupSteps', warmupSteps, (v) => Number.isInteger(v) && v >= 0 && v < totalSteps, `an integer in [0, totalSteps)`);
  if (warmupLr !== undefined) checkHyper(what, 'warmupLr', warmupLr, (v) => v >= 0, '≥ 0');
  checkHyper(what, 'minLr', minLr, (v) => v >= 0 && v <= baseLr, 'in [0, baseLr]');
  return {
    lrAt(step: number): number {
      if (!(step >= 0)) throw new RangeError(`${what}: step ${step} is negative`);
      if (step < warmupSteps) return warmupLr ?? (baseLr * (step + 1)) / (warmupSteps + 1);
      const progress = Math.min(1, (step - warmupSteps) / (totalSteps - warmupSteps));
      return minLr + (baseLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
    },
  };
}

/**
 * Dassl's schedule (CoOp, and Tang's code built on it): the rate changes once per epoch, at the epoch's end.
 * Epochs 0 … warmupEpochs − 1 run at the constant `warmupLr` (ConstantWarmupScheduler), or without one at
 * baseLr·(e + 1)/(warmupEpochs + 1); then CosineAnnealingLR(T_max = epochs) counts from 0 again (Dassl's
 * WARMUP_RECOUNT), so epoch e runs at minLr + (baseLr − minLr)·(1 + cos(π·(e − warmupEpochs)/epochs))/2 and the
 * last epoch stays above minLr. `lrAt` takes the optimiser step, of which there are `stepsPerEpoch` per epoch.
 */
export function epochCosineWithWarmup(opts: {
  baseLr: number;
  epochs: number;
  stepsPerEpoch: number;
  warmupEpochs?: number;
  warmupLr?: number;
  minLr?: number;
}): Schedule {
  const { baseLr, epochs, stepsPerEpoch, warmupEpochs = 0, warmupLr, minLr = 0 } = opts;
  const what = 'epochCosineWithWarmup';
  checkHyper(what, 'baseLr', baseLr, (v) => v >= 0, '≥ 0');
  checkHyper(what, 'epochs', epochs, (v) => Number.isInteger(v) && v > 0, 'a positive integer');
  checkHyper(what, 'stepsPerEpoch', stepsPerEpoch, (v) => Number.isInteger(v) && v > 0, 'a positive integer');
  checkHyper(what, 'warmupEpochs', warmupEpochs, (v) => Number.isInteger(v) && v >= 0 && v < epochs, 'an integer in [0, epochs)');
  if (warmupLr !== undefined) checkHyper(what, 'warmupLr', warmupLr, (v) => v >= 0, '≥ 0');
  checkHyper(what, 'minLr', minLr, (v) => v >= 0 && v <= baseLr, 'in [0, baseLr]');
  return {
    lrAt(step: number): number {
      if (!(step >= 0)) throw new RangeError(`${what}: step ${step} is negative`);
      const epoch = Math.floor(step / stepsPerEpoch);
      if (epoch < warmupEpochs) return warmupLr ?? (baseLr * (epoch + 1)) / (warmupEpochs + 1);
      // past the last epoch the rate stays where the cosine ends, rather than rising again as torch's would
      const t = Math.min(epoch - warmupEpochs, epochs);
      return minLr + (baseLr - minLr) * 0.5 * (1 + Math.cos((Math.PI * t) / epochs));
    },
  };
}

export function constantLr(lr: number): Schedule {
  checkHyper('constantLr', 'lr', lr, (v) => v >= 0, '≥ 0');
  return { lrAt: () => lr };
}
