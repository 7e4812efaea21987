/**
 * Optimisers and learning-rate schedules for parameters held as named Float32Arrays and updated in
 * place. The update rules are PyTorch's (torch.optim.SGD, Adam, AdamW without amsgrad/maximize), so a
 * method's published hyper-parameters mean the same here. Arithmetic is done per element in float64 and
 * stored as float32 (parameters and state), so results agree with torch's float32 kernels to rounding.
 *
 * Conventions:
 * - Every parameter must have a gradient of the same length at every step, and every gradient a
 *   parameter (frozen weights are simply not passed in). The same set of parameters is expected at every
 *   step; state for a parameter that disappeared, or missing state for one that appeared, is an error.
 * - `state()` returns copies; `load()` copies in. Buffers are named `${param}.${slot}` with torch's slot
 *   names (`momentum_buffer`, `exp_avg`, `exp_avg_sq`). `step` counts the `step()` calls so far.
 * - `lr` may be changed between steps (a schedule sets it); `load()` restores it with the other
 *   hyper-parameters, as torch's `load_state_dict` restores the param groups.
 */

import type { HostTensor } from '../graph/tensor.js';

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
  step(params: Params, grads: Map<string, Float32Array>): void;
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

/**
 * What the concrete optimisers share: hyper-parameters as a record (so state and load are generic),
 * per-parameter buffers by slot, and the checks that buffers match the parameters.
 */
abstract class BaseOptimizer {
  abstract readonly kind: 'sgd' | 'adam' | 'adamw';
  protected steps = 0;
  /** slot → parameter name → buffer */
  protected readonly slots: Map<string, Map<string, Float32Array>>;

  protected constructor(
    protected hyper: Record<string, number>,
    slotNames: string[],
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

  protected abstract validate(hyper: Record<string, number>): void;

  /** Whether buffers exist once a step has been taken (SGD without momentum keeps none). */
  protected abstract keepsBuffers(): boolean;

  /** Checks that the stored buffers belong to exactly these parameters and have their lengths. */
  protected checkBuffers(params: Params): void {
    if (!this.keepsBuffers()) return;
    for (const [slot, buffers] of this.slots) {
      for (const [name, buf] of buffers) {
        const p = params.get(name);
        if (!p) throw new Error(`${this.kind}: state has "${name}.${slot}" but no such parameter was passed`);
        if (p.length !== buf.length) throw new Error(`${this.kind}: "${name}.${slot}" has ${buf.length} values, the parameter ${p.length}`);
      }
      if (this.steps > 0) {
        for (const name of params.keys()) {
          if (!buffers.has(name))
            throw new Error(`${this.kind}: no "${name}.${slot}" in the state after ${this.steps} steps (did the parameters change?)`);
        }
      }
    }
  }

  state(): OptimizerState {
    const buffers: Record<string, Float32Array> = {};
    for (const [slot, map] of this.slots) for (const [name, buf] of map) buffers[`${name}.${slot}`] = buf.slice();
    return { kind: this.kind, step: this.steps, hyper: { ...this.hyper }, buffers };
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
    const slots = new Map([...this.slots.keys()].map((s) => [s, new Map<string, Float32Array>()]));
    for (const [key, buf] of Object.entries(state.buffers)) {
      const dot = key.lastIndexOf('.');
      const slot = slots.get(key.slice(dot + 1));
      if (dot <= 0 || !slot)
        throw new Error(`${this.kind}: unexpected state buffer "${key}" (slots: ${[...slots.keys()].join(', ') || 'none'})`);
      if (!(buf instanceof Float32Array)) throw new Error(`${this.kind}: state buffer "${key}" is not a Float32Array`);
      slot.set(key.slice(0, dot), buf.slice());
    }
    this.hyper = hyper;
    this.steps = state.step;
    for (const [slot, map] of slots) this.slots.set(slot, map);
  }
}

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

  protected keepsBuffers(): boolean {
    return this.hyper.momentum !== 0;
  }

  step(params: Params, grads: Map<string, Float32Array>): void {
    checkGrads('sgd', params, grads);
    this.checkBuffers(params);
    const { lr, momentum, weightDecay, dampening, nesterov } = this.hyper;
    const buffers = this.slots.get('momentum_buffer')!;
    for (const [name, p] of params) {
      const g = grads.get(name)!;
      let buf = buffers.get(name);
      const first = buf === undefined;
      if (momentum !== 0 && !buf) buffers.set(name, (buf = new Float32Array(p.length)));
      for (let i = 0; i < p.length; i++) {
        let d = weightDecay ? g[i]! + weightDecay * p[i]! : g[i]!;
        if (buf) {
          // torch initialises the buffer to the first (decayed) gradient, undamped.
          buf[i] = first ? d : momentum! * buf[i]! + (1 - dampening!) * d;
          d = nesterov ? d + momentum! * buf[i]! : buf[i]!;
        }
        p[i] = p[i]! - lr! * d;
      }
    }
    this.steps++;
  }
}

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

  protected keepsBuffers(): boolean {
    return true;
  }

  step(params: Params, grads: Map<string, Float32Array>): void {
    checkGrads(this.kind, params, grads);
    this.checkBuffers(params);
    const { lr, beta1, beta2, eps, weightDecay } = this.hyper;
    const decoupled = this.kind === 'adamw';
    const t = this.steps + 1;
    const stepSize = lr! / (1 - beta1! ** t);
    const bc2Sqrt = Math.sqrt(1 - beta2! ** t);
    const decay = decoupled ? 1 - lr! * weightDecay! : 1;
    const l2 = decoupled ? 0 : weightDecay!;
    const expAvg = this.slots.get('exp_avg')!;
    const expAvgSq = this.slots.get('exp_avg_sq')!;
    for (const [name, p] of params) {
      const g = grads.get(name)!;
      let m = expAvg.get(name);
      let v = expAvgSq.get(name);
      if (!m || !v) {
        expAvg.set(name, (m = new Float32Array(p.length)));
        expAvgSq.set(name, (v = new Float32Array(p.length)));
      }
      for (let i = 0; i < p.length; i++) {
        // AdamW shrinks the weight before the update; Adam adds the L2 term to the gradient.
        if (decoupled) p[i] = p[i]! * decay;
        const gi = l2 ? g[i]! + l2 * p[i]! : g[i]!;
        m[i] = m[i]! + (1 - beta1!) * (gi - m[i]!);
        v[i] = beta2! * v[i]! + (1 - beta2!) * gi * gi;
        p[i] = p[i]! - (stepSize * m[i]!) / (Math.sqrt(v[i]!) / bc2Sqrt + eps!);
      }
    }
    this.steps++;
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

/**
 * Scales all gradients together so that their joint L2 norm is at most `maxNorm`, as
 * torch.nn.utils.clip_grad_norm_ (factor maxNorm / (norm + 1e-6), applied only when below 1). Returns the
 * norm before clipping. A non-finite norm is returned with the gradients untouched: the caller should
 * skip that step rather than apply NaNs.
 */
export function clipGradNorm(grads: Map<string, Float32Array>, maxNorm: number): number {
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) throw new Error(`clipGradNorm: maxNorm = ${maxNorm}, must be a positive number`);
  let sumSq = 0;
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) sumSq += g[i]! * g[i]!;
  const norm = Math.sqrt(sumSq);
  if (!Number.isFinite(norm)) return norm;
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] = g[i]! * coef;
  return norm;
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
