import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, relative } from 'node:path';
import { mkdtempSync, readFileSync, existsSync, writeFileSync, mkdirSync, readdirSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawn } from 'node:child_process';
import { runKeyChanges, train, trainRounds, type TrainOptions } from '../src/train/index.js';
import { createMetric } from '../src/methods/index.js';
import { loadCheckpoint, loadCheckpointMeta, type CheckpointMeta } from '../src/methods/checkpoint.js';
import { type SplitRecord } from '../src/data/splits.js';
import { sharedDir } from './helpers/shared.js';

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

interface LogRecord {
  kind: 'step' | 'epoch';
  epoch: number;
  step?: number;
  loss: number;
  lr: number;
}

function logRecords(dir: string): LogRecord[] {
  return readFileSync(join(dir, 'train.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as LogRecord);
}

function epochLosses(dir: string): number[] {
  return logRecords(dir)
    .filter((r) => r.kind === 'epoch')
    .map((r) => r.loss);
}

/** The checkpoint's JSON as written (the backbone's fields may be edited to test a moved backbone). */
function checkpointJson(dir: string): CheckpointMeta & { backbone: { path?: string; repo?: string; revision?: string; id: string } } {
  return JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8')) as ReturnType<typeof checkpointJson>;
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
  const child = spawn(process.execPath, ['--import', 'tsx', join('test', 'helpers', 'train-child.ts'), killed, 'clip-iqa+'], {
    stdio: 'ignore',
  });
  // kill it as soon as its first epoch's state is on disk
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (existsSync(join(killed, 'state.json'))) {
        clearInterval(timer);
        child.kill('SIGKILL');
        resolve();
      }
    }, 5);
    child.on('exit', () => {
      clearInterval(timer);
      resolve();
    });
    child.on('error', reject);
  });
  await new Promise((r) => child.on('exit', r));
  await train(base('clip-iqa+', killed));
  assert.deepEqual(tensorsOf(killed), tensorsOf(straight));
});

test('a checkpoint is refused on another backbone', async () => {
  const out = tmp();
  await train(base('clip-iqa+', out, { epochs: 1 }));
  await assert.rejects(
    createMetric('clip-iqa+', { checkpoint: out, model: join(sharedDir(), 'reference', 'tiny-vit-p16') }),
    /trained on backbone/,
  );
});

test('a run shorter than the paper warm-up still trains (tang: one epoch, one warm-up epoch)', async () => {
  const out = tmp();
  const r = await train(base('tang', out, { epochs: 1, methodOptions: { lrStep: 'step' } }));
  assert.equal(r.epochs, 1);
  const steps = logRecords(out).filter((x) => x.kind === 'step');
  // warm-up at 1e-5, then the cosine from the base rate
  assert.equal(steps[0]!.lr, 1e-5);
  assert.ok(steps.at(-1)!.lr > 1e-5);
});

test('a checkpoint tensor corrupted in place (same size) is refused on load', async () => {
  const out = tmp();
  await train(base('tang', out, { epochs: 1 }));
  const file = join(out, 'checkpoint.safetensors');
  const bytes = readFileSync(file);
  // flip bytes of the last tensor's data: the header, and so the shapes, stay valid
  for (let i = bytes.length - 8; i < bytes.length; i++) bytes[i] = bytes[i]! ^ 0x5a;
  writeFileSync(file, bytes);
  await assert.rejects(
    createMetric('tang', { checkpoint: out }),
    /checkpoint\.safetensors: corrupted or replaced: its sha256 is [0-9a-f]{64}, but .*checkpoint\.json records/,
  );
  assert.throws(() => loadCheckpoint(out), /corrupted or replaced/);
});

test('a checkpoint records where its backbone is, not the path as typed, and says so when it is gone', async () => {
  const out = tmp();
  // --model as typed, relative to the working directory
  await train(base('clip-iqa+', out, { epochs: 1, model: relative(process.cwd(), tiny) }));
  const meta = checkpointJson(out);
  assert.equal(meta.backbone.path, tiny);
  assert.match(meta.backbone.id, /^sha256:[0-9a-f]{64}$/);
  const cwd = process.cwd();
  process.chdir(tmp());
  try {
    const metric = await createMetric('clip-iqa+', { checkpoint: out });
    await metric.close();
  } finally {
    process.chdir(cwd);
  }
  // the recorded folder is gone: the message says where the path came from and that --model overrides it
  meta.backbone.path = join(tmp(), 'moved-away');
  writeFileSync(join(out, 'checkpoint.json'), JSON.stringify(meta));
  await assert.rejects(
    createMetric('clip-iqa+', { checkpoint: out }),
    /cannot load the backbone recorded in .*checkpoint\.json \(.*moved-away\).*--model .*overrides it/,
  );
  const metric = await createMetric('clip-iqa+', { checkpoint: out, model: tiny });
  await metric.close();
});

test("rounds.json names the split unit the rounds used (the dataset's own), and rounds share the limit subset", async () => {
  const dir = tmp();
  // a CSV label file: its items are split by image
  const lines = readFileSync(join(root, 'data.csv'), 'utf8')
    .trim()
    .split('\n')
    .slice(1, 41)
    .map((l) => l.split(','));
  const labels = join(dir, 'labels.csv');
  writeFileSync(labels, ['image,mos', ...lines.map((c) => `images/${c[0]},${c[5]}`)].join('\n') + '\n');
  const res = await trainRounds({
    ...base('tang', join(dir, 'runs'), { epochs: 1, limit: 30, seed: 5 }),
    dataset: 'csv',
    labelFile: labels,
    rounds: 2,
  });
  const rounds = JSON.parse(readFileSync(join(dir, 'runs', 'rounds.json'), 'utf8')) as { protocol: string; split: { by: string } };
  assert.match(rounds.protocol, /split by image 0\.7\/0\.1\/0\.2, split seeds 5…6, the same seeded subset of 30 images/);
  assert.equal(rounds.split.by, 'image');
  const sides = res.rounds.map((r) => (JSON.parse(readFileSync(r.checkpoint, 'utf8')) as { split: SplitRecord }).split);
  assert.deepEqual(
    sides.map((s) => [s.seed, s.round, s.limit]),
    [
      [5, 0, 30],
      [5, 1, 30],
    ],
  );
  assert.equal(sides[0]!.train + sides[0]!.val + sides[0]!.test.n, 30);
  assert.notEqual(sides[0]!.test.sha256, sides[1]!.test.sha256);
});

test('a checkpoint of a hub model records the repo and the commit of its files, and loads that commit', async () => {
  const cache = tmp();
  const commit = 'a'.repeat(40);
  const snapshot = join(cache, 'models--test-owner--tiny-clip', 'snapshots', commit);
  mkdirSync(snapshot, { recursive: true });
  for (const f of readdirSync(tiny)) copyFileSync(join(tiny, f), join(snapshot, f));
  mkdirSync(join(cache, 'models--test-owner--tiny-clip', 'refs'));
  writeFileSync(join(cache, 'models--test-owner--tiny-clip', 'refs', 'main'), commit);
  const saved = { cache: process.env.HF_HUB_CACHE, offline: process.env.HF_HUB_OFFLINE };
  process.env.HF_HUB_CACHE = cache;
  process.env.HF_HUB_OFFLINE = '1';
  try {
    const out = tmp();
    await train(base('clip-iqa+', out, { epochs: 1, model: 'test-owner/tiny-clip' }));
    const meta = checkpointJson(out);
    assert.deepEqual(
      { repo: meta.backbone.repo, revision: meta.backbone.revision, path: meta.backbone.path },
      { repo: 'test-owner/tiny-clip', revision: commit, path: undefined },
    );
    // main moves on to a commit this cache does not hold: the checkpoint still loads the commit it was trained on
    writeFileSync(join(cache, 'models--test-owner--tiny-clip', 'refs', 'main'), 'b'.repeat(40));
    const metric = await createMetric('clip-iqa+', { checkpoint: out });
    await metric.close();
  } finally {
    for (const [k, v] of [
      ['HF_HUB_CACHE', saved.cache],
      ['HF_HUB_OFFLINE', saved.offline],
    ] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
});

test('tang as Dassl: the rate moves once per epoch (warm-up, then cosine with T_max = epochs) and the last partial batch is dropped', async () => {
  const run = async (methodOptions: Record<string, unknown>) => {
    const out = tmp();
    let images = 0,
      perEpoch = 0;
    await train(
      base('tang', out, {
        epochs: 3,
        methodOptions,
        onEvent: (e) => {
          const m = /on (\d+) images/.exec(e.message ?? '');
          if (m) images = Number(m[1]);
          if (e.stepsPerEpoch) perEpoch = e.stepsPerEpoch;
        },
      }),
    );
    const steps = logRecords(out).filter((x) => x.kind === 'step');
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
  assert.ok(
    new Set(lrs.slice(perStep.perEpoch)).size === lrs.length - perStep.perEpoch,
    'per step: a new rate at every step after the warm-up',
  );
});

test("a clip-iqa+ checkpoint that records no layout was trained with CoOp's, and scores so", async () => {
  const out = tmp();
  await train(base('clip-iqa+', out, { epochs: 1, limit: 16, methodOptions: { layout: 'coop' } }));
  const image = join(sharedDir(), 'reference', 'images', 'wide_640x480.png');
  const scoreWith = async (edit: (options: Record<string, unknown>) => void): Promise<number> => {
    const meta = checkpointJson(out);
    edit(meta.options);
    writeFileSync(join(out, 'checkpoint.json'), JSON.stringify(meta));
    const metric = await createMetric('clip-iqa+', { checkpoint: out });
    try {
      return await metric.score(image);
    } finally {
      await metric.close();
    }
  };
  const coop = await scoreWith(() => undefined);
  const unrecorded = await scoreWith((o) => delete o.layout);
  const pyiqa = await scoreWith((o) => (o.layout = 'pyiqa'));
  assert.equal(unrecorded, coop);
  assert.ok(Math.abs(pyiqa - coop) > 1e-4, `the layout changes the score: ${pyiqa} vs ${coop}`);
});

test('prompt methods train on a ResNet CLIP too (clip-iqa+, tang); methods with visual prompts refuse one by name', async () => {
  const rn = join(sharedDir(), 'reference', 'tiny-rn', 'openai.safetensors');
  for (const method of ['clip-iqa+', 'tang']) {
    const out = tmp();
    const r = await train(base(method, out, { model: rn, epochs: 1, limit: 24 }));
    assert.ok(r.test && Number.isFinite(r.test.srcc), `${method}: ${JSON.stringify(r.test)}`);
    const metric = await createMetric(method, { checkpoint: out });
    try {
      assert.ok(Number.isFinite(await metric.score(join(sharedDir(), 'reference', 'images', 'tall_157x301.png'))));
    } finally {
      await metric.close();
    }
  }
  await assert.rejects(
    train(base('fu', tmp(), { model: rn, epochs: 1, limit: 24 })),
    /visual prompt tokens need a ViT image tower, not a ResNet/,
  );
});

test('a rerun with other settings is refused naming them (epochs 2 ≠ 1); an --out folder with other files is refused', async () => {
  const out = tmp();
  const opts = base('tang', out, { epochs: 1, limit: 16, batchSize: 8 });
  await train(opts);
  await assert.rejects(train({ ...opts, epochs: 2 }), (err: Error) => {
    assert.match(err.message, /state\.json belongs to a run with other settings \(now ≠ then: epochs 2 ≠ 1\): give that run's settings/);
    return true;
  });
  await assert.rejects(train({ ...opts, seed: 4, lr: 0.5 }), /now ≠ then: lr 0\.5 ≠ 0\.0\d+, seed 4 ≠ 3\)/);
  await assert.rejects(train({ ...opts, batchSize: 4 }), /now ≠ then: batchSize 4 ≠ 8\)/);
  // the same settings resume (here: only finish)
  assert.equal((await train(opts)).bestEpoch, 1);

  assert.deepEqual(
    runKeyChanges(
      JSON.stringify({
        method: 'tang',
        o: { epochs: 3, nCtx: 4 },
        backbone: 'a',
        split: { by: 'group', dataset: { sha256: 'x' }, test: { n: 1 } },
      }),
      JSON.stringify({
        method: 'tang',
        o: { epochs: 2, nCtx: 4 },
        backbone: 'b',
        split: { by: 'image', dataset: { sha256: 'y' }, test: { n: 2 } },
      }),
    ),
    ['epochs 3 ≠ 2', 'split by group ≠ image', 'the model (other weights)', "the dataset's images or scores"],
  );

  // a folder that holds other files, and no run, is not written into
  const photos = tmp();
  writeFileSync(join(photos, 'holiday.jpg'), 'x');
  await assert.rejects(
    train(base('tang', photos, { epochs: 1, limit: 16 })),
    new RegExp(
      `^Error: ${photos.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: a folder that holds other files \\(holiday\\.jpg\\) and no training run; give --out a new or empty folder`,
    ),
  );
  await assert.rejects(trainRounds({ ...base('tang', photos, { epochs: 1, limit: 16 }), rounds: 2 }), /holds other files \(holiday\.jpg\)/);
  assert.deepEqual(readdirSync(photos), ['holiday.jpg'], 'nothing written there');
  // a single run's folder is not a multi-round run's, nor the other way round
  await assert.rejects(trainRounds({ ...opts, rounds: 2 }), /: the folder of a single training run: give it without --rounds to resume it/);
  const rounds = tmp();
  mkdirSync(join(rounds, 'round-0'));
  await assert.rejects(
    train(base('tang', rounds, { epochs: 1, limit: 16 })),
    /: the folder of a multi-round run \(round-0, …\): give the same --rounds/,
  );
  assert.deepEqual(readdirSync(rounds), ['round-0']);
});

test('a checkpoint that is not there says so; the folder of a multi-round run points to its round folders', () => {
  const dir = tmp();
  const missing = join(dir, 'nope');
  assert.throws(() => loadCheckpointMeta(missing), new RegExp(`^Error: ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: does not exist`));
  const rounds = join(dir, 'rounds');
  for (const r of [0, 1, 10, 2]) {
    mkdirSync(join(rounds, `round-${r}`), { recursive: true });
    writeFileSync(join(rounds, `round-${r}`, 'checkpoint.json'), '{}');
  }
  writeFileSync(join(rounds, 'rounds.json'), '{}');
  assert.throws(
    () => loadCheckpointMeta(rounds),
    (err: Error) =>
      err.message ===
      `${rounds}: the folder of a 4-round run, whose checkpoints are in its round folders (round-0, round-1, round-2, …): give one of them, e.g. ${join(rounds, 'round-0')}`,
  );
  const empty = join(dir, 'empty');
  mkdirSync(empty);
  assert.throws(() => loadCheckpointMeta(empty), /empty: no checkpoint here \(expected/);
});
