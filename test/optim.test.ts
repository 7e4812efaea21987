import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  adam,
  adamw,
  constantLr,
  cosineWithWarmup,
  epochCosineWithWarmup,
  optimizerStateFromSafetensors,
  optimizerStateToSafetensors,
  sgd,
  type Optimizer,
  type OptimizerState,
  type Params,
} from '../src/train/optim.js';
import { readSafetensors, writeSafetensors } from '../src/clip/safetensors.js';

// A small problem: two named parameters, gradients of a weighted quadratic plus a wobble, so that the
// gradient depends on the current parameters and on the step.
const INIT: Record<string, number[]> = { 'encoder.w': [0.5, -1.25, 2.0, 0.0], 'head.b': [0.1] };
const TARGET: Record<string, number[]> = { 'encoder.w': [1.0, 0.5, -0.5, 0.25], 'head.b': [-0.3] };
const WEIGHT: Record<string, number[]> = { 'encoder.w': [1.0, 3.0, 0.5, 2.0], 'head.b': [4.0] };
const LRS = [0.1, 0.1, 0.05, 0.02, 0.01]; // changed between steps, as a schedule does

function gradOf(name: string, p: ArrayLike<number>, step: number): number[] {
  return Array.from(p, (v, i) => 2 * WEIGHT[name]![i]! * (v - TARGET[name]![i]!) + 0.1 * Math.sin(step + i));
}

function makeParams(): Params {
  return new Map(Object.entries(INIT).map(([k, v]) => [k, Float32Array.from(v)]));
}

function gradsFor(params: Params, step: number): Map<string, Float32Array> {
  return new Map([...params].map(([k, p]) => [k, Float32Array.from(gradOf(k, p, step))]));
}

/** Runs steps [from, to) with the learning rates above. */
async function run(opt: Optimizer, params: Params, from: number, to: number): Promise<void> {
  for (let t = from; t < to; t++) {
    opt.lr = LRS[t]!;
    await opt.step(params, gradsFor(params, t));
  }
}

/** Rounding after each operation: none (float64), or to float32 as torch's float32 kernels and our graphs do. */
type Rounding = (x: number) => number;
const F64: Rounding = (x) => x;
const F32: Rounding = Math.fround;

type Hyper = {
  lr?: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
};

/**
 * torch.optim.SGD's update for one parameter array, each operation rounded by `r` (scalars too, as fed):
 *   d = g + wd·p;  buf = d (first step) or μ·buf + (1 − τ)·d;  d = d + μ·buf (Nesterov) or buf;  p = p − lr·d
 */
function sgdReference(h: Hyper, steps: number, r: Rounding = F64): Record<string, number[]> {
  const mu = r(h.momentum ?? 0),
    damp = r(1 - (h.dampening ?? 0)),
    wd = r(h.weightDecay ?? 0);
  const out: Record<string, number[]> = {};
  for (const name of Object.keys(INIT)) {
    const p = INIT[name]!.map(r);
    let buf: number[] | null = null;
    for (let t = 0; t < steps; t++) {
      const lr = r(LRS[t]!);
      const g = gradOf(name, p, t).map(r);
      const d = wd ? g.map((gi, i) => r(gi + r(wd * p[i]!))) : g;
      let dir = d;
      if (mu !== 0) {
        buf = buf === null ? [...d] : buf.map((b, i) => r(r(mu * b) + r(damp * d[i]!)));
        dir = h.nesterov ? d.map((di, i) => r(di + r(mu * buf![i]!))) : buf;
      }
      for (let i = 0; i < p.length; i++) p[i] = r(p[i]! - r(lr * dir[i]!));
    }
    out[name] = p;
  }
  return out;
}

/**
 * torch.optim.Adam / AdamW for one parameter array (t counts from 1), each operation rounded by `r`; what torch
 * computes in Python (bias corrections, step size, 1 − lr·wd) is computed in float64 and rounded once, as fed:
 *   AdamW: p = p·(1 − lr·wd);  Adam: g = g + wd·p
 *   m = m + (1 − β1)·(g − m);  v = β2·v + (1 − β2)·g·g
 *   p = p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
 */
function adamReference(h: Hyper, decoupled: boolean, steps: number, r: Rounding = F64): Record<string, number[]> {
  const [b1, b2] = h.betas ?? [0.9, 0.999];
  const eps = r(h.eps ?? 1e-8);
  const wd = h.weightDecay ?? (decoupled ? 0.01 : 0);
  const out: Record<string, number[]> = {};
  for (const name of Object.keys(INIT)) {
    const p = INIT[name]!.map(r);
    const m = p.map(() => 0);
    const v = p.map(() => 0);
    for (let s = 0; s < steps; s++) {
      const lr = LRS[s]!;
      const t = s + 1;
      const stepSize = r(lr / (1 - b1 ** t));
      const bc2Sqrt = r(Math.sqrt(1 - b2 ** t));
      const g = gradOf(name, p, s).map(r);
      for (let i = 0; i < p.length; i++) {
        if (decoupled && wd) p[i] = r(p[i]! * r(1 - lr * wd));
        else if (wd) g[i] = r(g[i]! + r(r(wd) * p[i]!));
        m[i] = r(m[i]! + r(r(1 - b1) * r(g[i]! - m[i]!)));
        v[i] = r(r(r(b2) * v[i]!) + r(r(r(1 - b2) * g[i]!) * g[i]!));
        p[i] = r(p[i]! - r(r(stepSize * m[i]!) / r(r(r(Math.sqrt(v[i]!)) / bc2Sqrt) + eps)));
      }
    }
    out[name] = p;
  }
  return out;
}

const CASES: Array<{ label: string; make: () => Optimizer; reference: (steps: number, r?: Rounding) => Record<string, number[]> }> = [
  { label: 'sgd', make: () => sgd({ lr: 1 }), reference: (n, r) => sgdReference({}, n, r) },
  {
    label: 'sgd momentum 0.9, wd 5e-4 (Tang)',
    make: () => sgd({ lr: 1, momentum: 0.9, weightDecay: 5e-4 }),
    reference: (n, r) => sgdReference({ momentum: 0.9, weightDecay: 5e-4 }, n, r),
  },
  {
    label: 'sgd nesterov, wd 1e-2',
    make: () => sgd({ lr: 1, momentum: 0.9, nesterov: true, weightDecay: 1e-2 }),
    reference: (n, r) => sgdReference({ momentum: 0.9, nesterov: true, weightDecay: 1e-2 }, n, r),
  },
  {
    label: 'sgd momentum 0.5, dampening 0.3',
    make: () => sgd({ lr: 1, momentum: 0.5, dampening: 0.3 }),
    reference: (n, r) => sgdReference({ momentum: 0.5, dampening: 0.3 }, n, r),
  },
  { label: 'adam defaults', make: () => adam({ lr: 1 }), reference: (n, r) => adamReference({}, false, n, r) },
  {
    label: 'adam L2 0.1, betas (0.8, 0.99), eps 1e-6',
    make: () => adam({ lr: 1, weightDecay: 0.1, betas: [0.8, 0.99], eps: 1e-6 }),
    reference: (n, r) => adamReference({ weightDecay: 0.1, betas: [0.8, 0.99], eps: 1e-6 }, false, n, r),
  },
  { label: 'adamw defaults (wd 0.01)', make: () => adamw({ lr: 1 }), reference: (n, r) => adamReference({}, true, n, r) },
  {
    label: 'adamw wd 0.5',
    make: () => adamw({ lr: 1, weightDecay: 0.5 }),
    reference: (n, r) => adamReference({ weightDecay: 0.5 }, true, n, r),
  },
];

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function assertBitwiseEqual(a: Params, b: Params, what: string): void {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [k, v] of a) assert.deepEqual(bytesOf(v), bytesOf(b.get(k)!), `${what}: ${k}`);
}

for (const c of CASES) {
  test(`${c.label}: trajectory is torch's float32 recurrence bit for bit, and the float64 one to 1e-6, over 5 steps`, async () => {
    const opt = c.make();
    const params = makeParams();
    for (let t = 0; t < 5; t++) {
      await run(opt, params, t, t + 1);
      const ref = c.reference(t + 1, F32);
      const ref64 = c.reference(t + 1);
      for (const [name, p] of params) {
        assert.deepEqual([...p], ref[name], `step ${t + 1} ${name}: float32 recurrence`);
        p.forEach((v, i) => assert.ok(Math.abs(v - ref64[name]![i]!) < 1e-6, `step ${t + 1} ${name}[${i}]: ${v} vs ${ref64[name]![i]}`));
      }
    }
    assert.equal(opt.state().step, 5);
  });

  test(`${c.label}: state round trip (object, JSON, safetensors) resumes bit for bit`, async () => {
    const straight = makeParams();
    const optStraight = c.make();
    await run(optStraight, straight, 0, 5);

    const params = makeParams();
    const opt = c.make();
    await run(opt, params, 0, 3);
    const saved = opt.state();

    const asJson = JSON.stringify({
      ...saved,
      buffers: Object.fromEntries(Object.entries(saved.buffers).map(([k, v]) => [k, Array.from(v)])),
    });
    const parsed = JSON.parse(asJson) as Omit<OptimizerState, 'buffers'> & { buffers: Record<string, number[]> };
    const fromJson: OptimizerState = {
      ...parsed,
      buffers: Object.fromEntries(Object.entries(parsed.buffers).map(([k, v]) => [k, Float32Array.from(v)])),
    };

    const dir = mkdtempSync(join(tmpdir(), 'promptiqa-optim-'));
    let fromFile: OptimizerState;
    let paramsFromFile: Params;
    try {
      // Parameters and optimiser state side by side in one checkpoint file.
      const file = join(dir, 'ckpt.safetensors');
      const { tensors, metadata } = optimizerStateToSafetensors(saved);
      for (const [k, v] of params) tensors[`param.${k}`] = { shape: [v.length], data: v };
      writeSafetensors(file, tensors, metadata);
      const back = readSafetensors(file);
      fromFile = optimizerStateFromSafetensors(back.tensors, back.metadata);
      paramsFromFile = new Map([...params.keys()].map((k) => [k, back.tensors.get(`param.${k}`)!.data]));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }

    for (const [form, state, p] of [
      ['object', saved, params],
      ['JSON', fromJson, params],
      ['safetensors', fromFile, paramsFromFile],
    ] as const) {
      const resumedParams = new Map([...p].map(([k, v]) => [k, v.slice()]));
      const resumed = c.make();
      resumed.lr = 123; // load() restores the saved learning rate
      resumed.load(state);
      assert.equal(resumed.lr, LRS[2]);
      await run(resumed, resumedParams, 3, 5);
      assertBitwiseEqual(resumedParams, straight, form);
      const a = resumed.state();
      const b = optStraight.state();
      assert.equal(a.step, 5);
      assert.deepEqual(a.hyper, b.hyper);
      assert.deepEqual(Object.keys(a.buffers).sort(), Object.keys(b.buffers).sort());
      for (const k of Object.keys(a.buffers)) assert.deepEqual(bytesOf(a.buffers[k]!), bytesOf(b.buffers[k]!), `${form}: buffer ${k}`);
    }
  });
}

test('hand-computed values: SGD momentum on a constant gradient, Adam steps of size lr', async () => {
  // buf: 1, 1.9, 2.71 → p: 1 − 0.1, − 0.19, − 0.271
  const p = new Map([['x', Float32Array.of(1)]]);
  const g = new Map([['x', Float32Array.of(1)]]);
  const opt = sgd({ lr: 0.1, momentum: 0.9 });
  const expected = [0.9, 0.71, 0.439];
  for (const e of expected) {
    await opt.step(p, g);
    assert.ok(Math.abs(p.get('x')![0]! - e) < 1e-6);
  }
  assert.ok(Math.abs(opt.state().buffers['x.momentum_buffer']![0]! - 2.71) < 1e-6);
  // With a constant gradient the bias-corrected moments are g and g², so each step moves by lr·g/(|g| + ε).
  const q = new Map([['x', Float32Array.of(0)]]);
  const a = adam({ lr: 0.01 });
  for (let t = 1; t <= 4; t++) {
    await a.step(q, new Map([['x', Float32Array.of(-2)]]));
    assert.ok(Math.abs(q.get('x')![0]! - t * 0.01 * (2 / (2 + 1e-8))) < 1e-7);
  }
});

test('state() returns a copy and names buffers `${param}.${slot}`', async () => {
  const params = makeParams();
  const opt = adam({ lr: 0.01 });
  await run(opt, params, 0, 1);
  const s = opt.state();
  assert.deepEqual(Object.keys(s.buffers).sort(), ['encoder.w.exp_avg', 'encoder.w.exp_avg_sq', 'head.b.exp_avg', 'head.b.exp_avg_sq']);
  assert.deepEqual(s.hyper, { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
  const before = s.buffers['head.b.exp_avg']!.slice();
  await run(opt, params, 1, 2);
  assert.deepEqual(s.buffers['head.b.exp_avg'], before);
  assert.deepEqual(sgd({ lr: 0.1 }).state(), {
    kind: 'sgd',
    step: 0,
    hyper: { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: 0 },
    buffers: {},
  });
});

test('errors: missing, extra or mis-sized gradients; wrong state; bad hyper-parameters', async () => {
  const params = makeParams();
  const opt = sgd({ lr: 0.1, momentum: 0.9 });
  const grads = gradsFor(params, 0);
  grads.delete('head.b');
  await assert.rejects(() => opt.step(params, grads), /no gradient for parameter "head.b"/);
  const extra = gradsFor(params, 0);
  extra.set('other', Float32Array.of(1));
  await assert.rejects(() => opt.step(params, extra), /gradient for "other", which is not among the parameters/);
  const short = gradsFor(params, 0);
  short.set('encoder.w', Float32Array.of(1));
  await assert.rejects(() => opt.step(params, short), /gradient of "encoder.w" has 1 values, the parameter 4/);
  assert.deepEqual([...params.get('encoder.w')!], INIT['encoder.w'], 'a refused step changes nothing');

  await run(opt, params, 0, 1);
  const fewer = new Map([['encoder.w', params.get('encoder.w')!]]);
  await assert.rejects(() => opt.step(fewer, gradsFor(fewer, 1)), /state has "head.b.momentum_buffer" but no such parameter/);
  const more = new Map([...params, ['new', Float32Array.of(0)]]);
  const moreGrads = new Map([...gradsFor(params, 1), ['new', Float32Array.of(1)]]);
  await assert.rejects(() => opt.step(more, moreGrads), /no "new.momentum_buffer" in the state after 1 steps/);

  assert.throws(() => adam({ lr: 0.1 }).load(opt.state()), /cannot load the state of a "sgd" optimiser/);
  const s = opt.state();
  assert.throws(
    () => sgd({ lr: 0.1 }).load({ ...s, buffers: { ...s.buffers, 'x.exp_avg': Float32Array.of(0) } }),
    /unexpected state buffer "x.exp_avg"/,
  );
  assert.throws(() => sgd({ lr: 0.1 }).load({ ...s, hyper: { lr: 0.1 } }), /lacks the hyper-parameter "momentum"/);
  assert.throws(() => sgd({ lr: 0.1, nesterov: true }), /nesterov needs momentum > 0/);
  assert.throws(() => adam({ lr: 0.1, betas: [1, 0.999] }), /beta1 = 1, must be in \[0, 1\)/);
  assert.throws(() => adamw({ lr: -1 }), /lr = -1/);
  assert.throws(() => {
    opt.lr = NaN;
  }, /lr = NaN/);
});

test('gradient clipping: all gradients scaled together by min(1, maxNorm / (norm + 1e-6)), as torch', async () => {
  // SGD with lr 1 and no momentum moves each parameter by its (clipped) gradient
  const stepWith = async (grads: Record<string, number[]>, maxNorm: number): Promise<number[]> => {
    const params = new Map(Object.entries(grads).map(([k, g]) => [k, new Float32Array(g.length)]));
    await sgd({ lr: 1 }).step(params, new Map(Object.entries(grads).map(([k, g]) => [k, Float32Array.from(g)])), maxNorm);
    return [...params.values()].flatMap((p) => [...p].map((v) => 0 - v));
  };
  assert.deepEqual(await stepWith({ a: [3, 0], b: [4] }, 10), [3, 0, 4], 'below the limit: untouched');
  const coef = Math.fround(1 / Math.fround(5 + 1e-6));
  assert.deepEqual(await stepWith({ a: [3, 0], b: [4] }, 1), [Math.fround(3 * coef), 0, Math.fround(4 * coef)]);
  assert.ok(
    (await stepWith({ a: [1, Infinity] }, 1)).some((v) => !Number.isFinite(v)),
    'a non-finite norm shows in the parameters',
  );
  await assert.rejects(
    () => sgd({ lr: 1 }).step(new Map([['a', Float32Array.of(0)]]), new Map([['a', Float32Array.of(1)]]), -1),
    /gradClip = -1, must be ≥ 0/,
  );
});

test('cosineWithWarmup: constant warm-up (Tang), cosine from baseLr to minLr', () => {
  // Tang: 100 epochs, one warm-up epoch at 1e-5, lr 0.002 (steps counted in epochs here).
  const tang = cosineWithWarmup({ baseLr: 0.002, totalSteps: 100, warmupSteps: 1, warmupLr: 1e-5 });
  assert.equal(tang.lrAt(0), 1e-5);
  assert.equal(tang.lrAt(1), 0.002);
  assert.ok(Math.abs(tang.lrAt(50.5) - 0.001) < 1e-15, 'half-way through the cosine');
  assert.ok(Math.abs(tang.lrAt(99) - 0.002 * 0.5 * (1 + Math.cos((Math.PI * 98) / 99))) < 1e-15);
  assert.ok(Math.abs(tang.lrAt(100)) < 1e-18);
  assert.ok(Math.abs(tang.lrAt(500)) < 1e-18, 'past the end: minLr');
  for (let s = 2; s <= 100; s++) assert.ok(tang.lrAt(s) <= tang.lrAt(s - 1), `non-increasing at ${s}`);

  const withMin = cosineWithWarmup({ baseLr: 1, totalSteps: 10, minLr: 0.1 });
  assert.equal(withMin.lrAt(0), 1);
  assert.ok(Math.abs(withMin.lrAt(5) - 0.55) < 1e-15);
  assert.ok(Math.abs(withMin.lrAt(10) - 0.1) < 1e-15);

  const ramp = cosineWithWarmup({ baseLr: 1, totalSteps: 20, warmupSteps: 4 });
  assert.deepEqual(
    [0, 1, 2, 3, 4].map((s) => ramp.lrAt(s)),
    [0.2, 0.4, 0.6, 0.8, 1],
  );

  assert.throws(() => tang.lrAt(-1), RangeError);
  assert.throws(() => cosineWithWarmup({ baseLr: 1, totalSteps: 10, warmupSteps: 10 }), /warmupSteps = 10/);
  assert.throws(() => cosineWithWarmup({ baseLr: 1, totalSteps: 0 }), /totalSteps = 0/);
  assert.throws(() => cosineWithWarmup({ baseLr: 1, totalSteps: 10, minLr: 2 }), /minLr = 2/);
  assert.equal(constantLr(3e-4).lrAt(12345), 3e-4);
});

/**
 * Dassl's build_lr_scheduler as torch 1.13 runs it, one scheduler.step() at each epoch's end:
 * CosineAnnealingLR(T_max = epochs) in its recursive (chainable) form, wrapped by ConstantWarmupScheduler
 * with WARMUP_RECOUNT (the cosine counts its own epochs from the end of the warm-up). Returns the rate each
 * epoch trains at.
 */
function dasslEpochRates(baseLr: number, epochs: number, warmupEpochs: number, consLr: number): number[] {
  let lr = baseLr; // CosineAnnealingLR's constructor step leaves the base rate in the optimiser
  let cosineEpoch = 0;
  let warmupEpoch = -1;
  const warmupStep = (): void => {
    if (warmupEpoch >= warmupEpochs) {
      // the successor's step: torch's recursive cosine from the rate in the optimiser
      cosineEpoch++;
      lr = ((1 + Math.cos((Math.PI * cosineEpoch) / epochs)) / (1 + Math.cos((Math.PI * (cosineEpoch - 1)) / epochs))) * lr;
    } else {
      warmupEpoch++;
      // the warm-up's get_lr: its constant, or the successor's last rate once the warm-up is over
      lr = warmupEpoch >= warmupEpochs ? baseLr : consLr;
    }
  };
  if (warmupEpochs > 0) warmupStep(); // the wrapper's constructor step
  const rates: number[] = [];
  for (let e = 0; e < epochs; e++) {
    rates.push(lr);
    if (warmupEpochs > 0) warmupStep();
    else {
      cosineEpoch++;
      lr = ((1 + Math.cos((Math.PI * cosineEpoch) / epochs)) / (1 + Math.cos((Math.PI * (cosineEpoch - 1)) / epochs))) * lr;
    }
  }
  return rates;
}

test('epochCosineWithWarmup: the rate of every step is the rate Dassl gives its epoch (Tang: 100 epochs, one at 1e-5)', () => {
  for (const [epochs, warmupEpochs, stepsPerEpoch] of [
    [100, 1, 7],
    [10, 2, 3],
    [5, 0, 4],
    [1, 0, 2],
  ] as const) {
    const expected = dasslEpochRates(0.002, epochs, warmupEpochs, 1e-5);
    const s = epochCosineWithWarmup({ baseLr: 0.002, epochs, stepsPerEpoch, warmupEpochs, warmupLr: 1e-5 });
    for (let step = 0; step < epochs * stepsPerEpoch; step++) {
      const want = expected[Math.floor(step / stepsPerEpoch)]!;
      assert.ok(
        Math.abs(s.lrAt(step) - want) <= 1e-12 * want,
        `${epochs} epochs, warm-up ${warmupEpochs}: step ${step} at ${s.lrAt(step)}, Dassl ${want}`,
      );
    }
  }
  // by hand, Tang: epoch 0 at 1e-5, epoch 1 at the base rate, then the cosine with T_max = 100, never 0
  const tang = epochCosineWithWarmup({ baseLr: 0.002, epochs: 100, stepsPerEpoch: 10, warmupEpochs: 1, warmupLr: 1e-5 });
  assert.equal(tang.lrAt(9), 1e-5);
  assert.equal(tang.lrAt(10), 0.002);
  assert.equal(tang.lrAt(19), 0.002);
  assert.ok(Math.abs(tang.lrAt(20) - 0.001 * (1 + Math.cos(Math.PI / 100))) < 1e-15);
  assert.ok(Math.abs(tang.lrAt(999) - 0.001 * (1 + Math.cos((98 * Math.PI) / 100))) < 1e-15, 'the last epoch stays above 0');
  assert.ok(tang.lrAt(999) > 1e-6);
  // without a warm-up rate: a ramp to the base rate
  const ramp = epochCosineWithWarmup({ baseLr: 1, epochs: 10, stepsPerEpoch: 1, warmupEpochs: 3 });
  assert.deepEqual(
    [0, 1, 2, 3].map((e) => ramp.lrAt(e)),
    [0.25, 0.5, 0.75, 1],
  );
  assert.throws(() => epochCosineWithWarmup({ baseLr: 1, epochs: 10, stepsPerEpoch: 0 }), /stepsPerEpoch = 0/);
  assert.throws(() => epochCosineWithWarmup({ baseLr: 1, epochs: 2, stepsPerEpoch: 1, warmupEpochs: 2 }), /warmupEpochs = 2/);
  assert.throws(() => tang.lrAt(-1), RangeError);
});
