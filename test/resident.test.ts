import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { METHODS, loadBackbone } from '../src/methods/index.js';
import { parseOptions } from '../src/methods/method.js';
import { type MethodSetup, type TrainBatch, TrainStep, setUp } from '../src/methods/graphs.js';
import { type ParamSet } from '../src/prompts/context.js';
import { optimizerFor } from '../src/train/optim.js';
import { ResidentTraining } from '../src/train/resident.js';
import { Rng } from '../src/util/rng.js';
import { sharedDir } from './helpers/shared.js';
import { randomTrainBatch } from '../src/bench/parity.js';

const tinyP32 = join(sharedDir(), 'reference', 'tiny-vit-p32');
const LRS = [0.05, 0.02, 0.01];
const bytes = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const copy = (p: ParamSet): ParamSet => new Map([...p].map(([k, v]) => [k, { shape: [...v.shape], data: v.data.slice() }]));

/**
 * Three steps two ways on the CPU: the gradients out of the training graph then the optimiser's host step, and
 * the update inside the training graph with the state kept between steps. Same parameters, same buffers, bit for bit.
 */
async function bothWays(name: string, options: Record<string, unknown>): Promise<{ trained: string[]; moved: number }> {
  const method = METHODS.find((m) => m.info.name === name)!;
  const backbone = await loadBackbone(tinyP32);
  const o = parseOptions(method, options);
  const setup = setUp(method, o, backbone);
  const init = setup.model.init(new Rng(5));
  const auxiliary = method.auxiliary ?? [];
  const batches = LRS.map((_, k) => randomTrainBatch(method, backbone, 2, 20 + k));

  const host = copy(init);
  const hostOpt = optimizerFor(o);
  const gradStep = await TrainStep.create(setup, host, 2, auxiliary, { threads: 1 });
  const trained = new Map(gradStep.trained.map((n) => [n, host.get(n)!.data]));
  for (const [k, lr] of LRS.entries()) {
    const { grads } = await gradStep.run(batches[k]!, host, new Rng(k));
    hostOpt.lr = lr;
    await hostOpt.step(trained, new Map([...trained.keys()].map((n) => [n, grads.get(n)!])), o.gradClip);
  }
  await gradStep.release();

  const deviceOpt = optimizerFor(o);
  const fused = await TrainStep.create(setup, init, 2, auxiliary, { threads: 1 }, deviceOpt.update(o.gradClip));
  const resident = ResidentTraining.create(fused, init, deviceOpt, { threads: 1 });
  for (const [k, lr] of LRS.entries()) {
    deviceOpt.lr = lr;
    assert.ok(Number.isFinite(await resident.step(fused, batches[k]!, new Rng(k))));
  }
  const { params, optim } = await resident.snapshot(init);
  await fused.release();

  assert.deepEqual([...params.keys()], [...init.keys()], 'every parameter, in order');
  let moved = 0;
  for (const [n, p] of params) {
    assert.ok(bytes(p.data).equals(bytes(host.get(n)!.data)), `${name}: parameter ${n}`);
    if (!bytes(p.data).equals(bytes(init.get(n)!.data))) moved++;
    else assert.ok(!gradStep.trained.includes(n), `${name}: ${n} was trained but did not move`);
  }
  const hostState = hostOpt.state();
  assert.equal(optim.step, LRS.length);
  assert.deepEqual(Object.keys(optim.buffers).sort(), Object.keys(hostState.buffers).sort());
  for (const [k, buf] of Object.entries(optim.buffers)) assert.ok(bytes(buf).equals(bytes(hostState.buffers[k]!)), `${name}: buffer ${k}`);
  return { trained: [...gradStep.trained], moved };
}

for (const method of METHODS.filter((m) => m.info.trainable)) {
  test(`${method.info.name}: the update in the training graph, state kept between steps, equals gradients + host step bit for bit`, async () => {
    const { trained, moved } = await bothWays(method.info.name, {});
    assert.ok(trained.length > 0 && moved > 0);
  });
}

test('with gradient clipping (fu, adam; tang, sgd with momentum and L2) the two ways still agree bit for bit', async () => {
  await bothWays('fu', { gradClip: 1e-3 });
  await bothWays('tang', { gradClip: 1e-3, weightDecay: 0.01, dropout: 0.3 });
});

/** Tang (SGD with momentum) on the tiny ViT: its set-up, initial parameters, and a batch of 2. */
async function tang(): Promise<{ setup: MethodSetup; init: ParamSet; batch: TrainBatch }> {
  const method = METHODS.find((m) => m.info.name === 'tang')!;
  const backbone = await loadBackbone(tinyP32);
  const setup = setUp(method, parseOptions(method, {}), backbone);
  return { setup, init: setup.model.init(new Rng(5)), batch: randomTrainBatch(method, backbone, 2, 1) };
}

test('a step whose loss is not finite is not taken: the state and the step count stay', async () => {
  const { setup, init, batch: good } = await tang();
  const opt = optimizerFor(setup.options);
  const step = await TrainStep.create(setup, init, 2, [], { threads: 1 }, opt.update());
  const resident = ResidentTraining.create(step, init, opt, { threads: 1 });
  await resident.step(step, good, new Rng(0));
  const before = await resident.snapshot(init);
  const bad = { ...good, quality: Float32Array.of(NaN, 0) };
  assert.ok(Number.isNaN(await resident.step(step, bad, new Rng(1))));
  const after = await resident.snapshot(init);
  assert.equal(after.optim.step, 1);
  for (const [n, p] of after.params) assert.ok(bytes(p.data).equals(bytes(before.params.get(n)!.data)), n);
  // and the next good step goes on from there
  assert.ok(Number.isFinite(await resident.step(step, good, new Rng(2))));
  assert.equal((await resident.snapshot(init)).optim.step, 2);
  await step.release();
});

test('the two kinds of training step refuse each other’s run', async () => {
  const { setup, init, batch } = await tang();
  const plain = await TrainStep.create(setup, init, 2, [], { threads: 1 });
  await assert.rejects(() => plain.runUpdate(batch, new Map(), new Float32Array(5), new Rng(0)), /made without an optimiser update/);
  const fused = await TrainStep.create(setup, init, 2, [], { threads: 1 }, optimizerFor(setup.options).update());
  await assert.rejects(() => fused.run(batch, init, new Rng(0)), /applies an optimiser update/);
  await assert.rejects(() => fused.runUpdate(batch, new Map(), new Float32Array(5), new Rng(0)), /the training state lacks/);
  await plain.release();
  await fused.release();
});

test("a resumed optimiser state that lacks a trained parameter's buffer is refused, naming it", async () => {
  const { setup, init, batch } = await tang();
  const opt = optimizerFor(setup.options);
  const step = await TrainStep.create(setup, init, 2, [], { threads: 1 }, opt.update());
  const first = ResidentTraining.create(step, init, opt, { threads: 1 });
  await first.step(step, batch, new Rng(0));
  const { optim } = await first.snapshot(init);
  const [dropped] = Object.keys(optim.buffers);
  const resumed = optimizerFor(setup.options);
  resumed.load({ ...optim, buffers: Object.fromEntries(Object.entries(optim.buffers).filter(([k]) => k !== dropped)) });
  assert.throws(
    () => ResidentTraining.create(step, init, resumed, { threads: 1 }),
    new RegExp(`no "${dropped!.replace(/\./g, '\\.')}" in the state after 1 steps`),
  );
  await step.release();
});
