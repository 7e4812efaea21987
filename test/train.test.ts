import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawn } from 'node:child_process';
import { train, type TrainOptions } from '../src/train/trainer.js';
import { createMetric } from '../src/methods/index.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { sharedDir } from '../src/util/fs.js';

const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');
const root = join(sharedDir(), 'datasets', 'agiqa-3k');
const tmp = (): string => mkdtempSync(join(tmpdir(), 'promptiqa-train-'));

function base(method: string, out: string, extra: Partial<TrainOptions> = {}): TrainOptions {
  return { method, model: tiny, dataset: 'agiqa-3k', root, out, epochs: 4, limit: 48, batchSize: 8, seed: 3, threads: 1, ...extra };
}

function tensorsOf(dir: string): Record<string, number[]> {
  const { params } = loadCheckpoint(dir);
  return Object.fromEntries([...params].map(([k, v]) => [k, Array.from(v.data)]));
}

function epochLosses(dir: string): number[] {
  return readFileSync(join(dir, 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.kind === 'epoch').map((r) => r.loss as number);
}

for (const method of ['clip-iqa+', 'tang', 'fu', 'mp-iqe']) {
  test(`${method}: trains on AGIQA-3K with the tiny model, writes a checkpoint and a log, and the loss goes down`, async () => {
    const out = tmp();
    const r = await train(base(method, out, { epochs: 4, lr: method === 'tang' ? 0.01 : method === 'clip-iqa+' ? 0.02 : 2e-3 }));
    assert.ok(existsSync(r.checkpoint));
    assert.ok(existsSync(join(out, 'checkpoint.safetensors')));
    assert.ok(existsSync(join(out, 'training.svg')));
    const losses = epochLosses(out);
    assert.equal(losses.length, 4);
    assert.ok(losses[3]! < losses[0]!, `${method}: epoch losses ${losses.join(', ')}`);
    const metric = await createMetric(method, { checkpoint: out });
    const s = await metric.score(join(sharedDir(), 'reference', 'images', 'AttnGAN_normal_000.jpg'));
    assert.ok(Number.isFinite(s));
    await metric.close();
  });
}

test('the same seed twice gives identical checkpoints', async () => {
  const a = tmp();
  const b = tmp();
  await train(base('mp-iqe', a, { epochs: 2 }));
  await train(base('mp-iqe', b, { epochs: 2 }));
  assert.deepEqual(tensorsOf(a), tensorsOf(b));
  const c = tmp();
  await train(base('mp-iqe', c, { epochs: 2, seed: 4 }));
  assert.notDeepEqual(tensorsOf(a), tensorsOf(c));
});

test('a run stopped midway resumes from its last epoch and ends as a straight run', async () => {
  const straight = tmp();
  await train(base('tang', straight));
  const broken = tmp();
  // 6 steps an epoch (48 × 0.7 ≈ 34 training images, batch 8): stop in the middle of epoch 3
  await assert.rejects(train(base('tang', broken, { stopAfterSteps: 14 })), /stopped/);
  await train(base('tang', broken));
  assert.deepEqual(tensorsOf(broken), tensorsOf(straight));
  assert.deepEqual(epochLosses(broken).slice(-2), epochLosses(straight).slice(-2));
});

test('kill -9 of a training process, then resume, gives the result of a straight run', async () => {
  const straight = tmp();
  await train(base('clip-iqa+', straight));
  const killed = tmp();
  const child = spawn(process.execPath, ['--import', 'tsx', join('test', 'helpers', 'train-child.ts'), killed, 'clip-iqa+'], { stdio: 'ignore' });
  // kill it as soon as its first epoch's state is on disk
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (existsSync(join(killed, 'state.json'))) {
        clearInterval(timer);
        child.kill('SIGKILL');
        resolve();
      }
    }, 5);
    child.on('exit', () => { clearInterval(timer); resolve(); });
    child.on('error', reject);
  });
  await new Promise((r) => child.on('exit', r));
  await train(base('clip-iqa+', killed));
  assert.deepEqual(tensorsOf(killed), tensorsOf(straight));
});

test('a checkpoint is refused on another backbone', async () => {
  const out = tmp();
  await train(base('clip-iqa+', out, { epochs: 1 }));
  await assert.rejects(createMetric('clip-iqa+', { checkpoint: out, model: join(sharedDir(), 'reference', 'tiny-vit-p16') }), /trained on backbone/);
});

test('a run shorter than the paper warm-up still trains (tang: one epoch, one warm-up epoch)', async () => {
  const out = tmp();
  const r = await train(base('tang', out, { epochs: 1, methodOptions: { lrStep: 'step' } }));
  assert.equal(r.epochs, 1);
  const steps = readFileSync(join(out, 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.kind === 'step');
  // warm-up at 1e-5, then the cosine from the base rate
  assert.equal(steps[0].lr, 1e-5);
  assert.ok(steps.at(-1).lr > 1e-5);
});

test('tang as Dassl: the rate moves once per epoch (warm-up, then cosine with T_max = epochs) and the last partial batch is dropped', async () => {
  const run = async (methodOptions: Record<string, unknown>) => {
    const out = tmp();
    let images = 0, perEpoch = 0;
    await train(base('tang', out, {
      epochs: 3, methodOptions,
      onEvent: (e) => {
        const m = /on (\d+) images/.exec(e.message ?? '');
        if (m) images = Number(m[1]);
        if (e.stepsPerEpoch) perEpoch = e.stepsPerEpoch;
      },
    }));
    const steps = readFileSync(join(out, 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.kind === 'step');
    return { images, perEpoch, steps: steps as Array<{ epoch: number; lr: number }> };
  };
  const dassl = await run({});
  assert.ok(dassl.images % 8 !== 0, `${dassl.images} training images: a partial batch must exist for this test to mean anything`);
  assert.equal(dassl.perEpoch, Math.floor(dassl.images / 8));
  assert.equal(dassl.steps.length, 3 * dassl.perEpoch);
  const rates = [1e-5, 0.002, 0.001 * (1 + Math.cos(Math.PI / 3))];
  for (const s of dassl.steps) assert.ok(Math.abs(s.lr - rates[s.epoch - 1]!) < 1e-15, `epoch ${s.epoch}: lr ${s.lr}`);

  const perStep = await run({ lrStep: 'step', dropLast: false });
  assert.equal(perStep.perEpoch, Math.ceil(perStep.images / 8));
  const lrs = perStep.steps.map((s) => s.lr);
  assert.ok(new Set(lrs.slice(perStep.perEpoch)).size === lrs.length - perStep.perEpoch, 'per step: a new rate at every step after the warm-up');
});
