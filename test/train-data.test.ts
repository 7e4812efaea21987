/** Training on real folders: unreadable images, the log after a resume, options checked up front, csv columns. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { train, type TrainOptions } from '../src/train/index.js';
import { readUnreadable } from '../src/train/batches.js';
import { loadDataset } from '../src/data/datasets.js';
import { splitDataset } from '../src/data/splits.js';
import { decodeImage, readImageHeader } from '../src/data/image.js';
import { sharedDir } from './helpers/shared.js';
import { cli } from './helpers/cli.js';

const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');
const agiqa = join(sharedDir(), 'datasets', 'agiqa-3k');

let tmp = '';
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'promptiqa-train-data-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

let folders = 0;
/** A copy of the first `n` rows of AGIQA-3K (label file and images) in a fresh folder. */
function agiqaCopy(n: number): { root: string; names: string[] } {
  const root = join(tmp, `agiqa-${folders++}`);
  mkdirSync(join(root, 'images'), { recursive: true });
  const lines = readFileSync(join(agiqa, 'data.csv'), 'utf8').trim().split('\n');
  const rows = lines.slice(1, n + 1);
  writeFileSync(join(root, 'data.csv'), [lines[0], ...rows].join('\n') + '\n');
  const names = rows.map((r) => r.split(',')[0]!);
  for (const name of names) copyFileSync(join(agiqa, 'images', name), join(root, 'images', name));
  return { root, names };
}

function truncate(file: string): void {
  const bytes = readFileSync(file);
  writeFileSync(file, bytes.subarray(0, bytes.length >> 1));
}

const base = (root: string, out: string, extra: Partial<TrainOptions> = {}): TrainOptions => ({
  method: 'clip-iqa+',
  model: tiny,
  dataset: 'agiqa-3k',
  root,
  out,
  epochs: 1,
  batchSize: 4,
  seed: 1,
  threads: 1,
  ...extra,
});

const logRecords = (out: string): Array<{ kind: string; epoch: number; step?: number }> =>
  readFileSync(join(out, 'train.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { kind: string; epoch: number; step?: number });

test('a dataset copy with one truncated image: train refuses before the first step naming it; with --skip-unreadable it finishes and records it', async () => {
  const { root, names } = agiqaCopy(12);
  const bad = join(root, 'images', names[5]!);
  truncate(bad);
  const args = [
    'train',
    '--method',
    'clip-iqa+',
    '--model',
    tiny,
    '--dataset',
    'agiqa-3k',
    '--root',
    root,
    '--epochs',
    '1',
    '--batch',
    '4',
    '--threads',
    '1',
  ];

  const refused = join(tmp, 'refused');
  const r = await cli(...args, '--out', refused);
  assert.equal(r.code, 1, r.err);
  assert.ok(r.err.includes(`${bad}: truncated`), r.err);
  assert.match(r.err, /1 of the 12 images of this run cannot be read/);
  assert.match(r.err, /--skip-unreadable/);
  assert.ok(!existsSync(join(refused, 'train.jsonl')), 'no step was taken');
  assert.ok(!existsSync(join(refused, 'state.json')));
  assert.ok(!existsSync(join(refused, 'result.json')));

  const skipped = join(tmp, 'skipped');
  const s = await cli(...args, '--out', skipped, '--skip-unreadable');
  assert.equal(s.code, 0, s.err);
  assert.match(s.err, /warning: left out 1 unreadable image/);
  assert.match(s.out, /left out +1 unreadable image\(s\), listed in result\.json/);
  assert.ok(s.err.includes(bad), s.err);
  const result = JSON.parse(readFileSync(join(skipped, 'result.json'), 'utf8')) as {
    unreadable?: Array<{ file: string; problem: string }>;
  };
  assert.equal(result.unreadable?.length, 1);
  assert.equal(result.unreadable[0]!.file, bad);
  assert.match(result.unreadable[0]!.problem, /truncated/);
});

/** The bytes of a PNG of `file` whose header and end are intact but whose pixel data is damaged: only a full decode finds it. */
async function corruptedInside(file: string): Promise<Buffer> {
  const png = Buffer.from(await sharp(file).png().toBuffer());
  for (let i = png.length >> 1; i < (png.length >> 1) + 64; i++) png[i] = png[i]! ^ 0x5a;
  return png;
}

test('an image that fails to decode after the check (a test image, read last) stops the run but keeps it; a rerun refuses it up front, and with skipUnreadable resumes and finishes', async () => {
  const { root } = agiqaCopy(24);
  const ds = loadDataset('agiqa-3k', { root });
  const split = splitDataset(ds.items, { seed: 1, ratios: [0.5, 0.25, 0.25], by: 'group' });
  assert.ok(split.test.length >= 4, 'the test side is scored');
  const victim = join(root, ds.items[split.test[0]!]!.image);
  const out = join(tmp, 'midrun');
  const opts = base(root, out, { epochs: 2, ratios: [0.5, 0.25, 0.25] });

  // damaged once training has ended, before the test side is read
  const damaged = await corruptedInside(victim);
  await assert.rejects(
    train({
      ...opts,
      onEvent: (e) => {
        if (e.kind === 'epoch' && e.epoch === 2) writeFileSync(victim, damaged);
      },
    }),
    (e: Error) => e.message.includes(victim) && /could not be decoded/.test(e.message) && /kept in .* at epoch 2/.test(e.message),
  );
  await readImageHeader(victim); // the header check alone passes it
  await assert.rejects(decodeImage(victim));
  assert.ok(existsSync(join(out, 'state.json')), 'the run is kept');
  assert.ok(!existsSync(join(out, 'result.json')));

  await assert.rejects(train(opts), (e: Error) => e.message.includes(victim) && /cannot be read/.test(e.message));

  const events: string[] = [];
  const r = await train({ ...opts, skipUnreadable: true, onEvent: (e) => events.push(e.kind === 'start' ? (e.message ?? '') : e.kind) });
  assert.ok(
    events.some((m) => /resuming .* after epoch 2/.test(m)),
    events.join(', '),
  );
  assert.ok(!events.includes('step'), 'resumed after the last epoch: nothing trained again');
  assert.deepEqual(
    r.unreadable?.map((u) => u.file),
    [victim],
  );
  const result = JSON.parse(readFileSync(join(out, 'result.json'), 'utf8')) as { unreadable: Array<{ file: string }>; history: unknown[] };
  assert.deepEqual(
    result.unreadable.map((u) => u.file),
    [victim],
  );
  assert.equal(result.history.length, 2);
});

test('after a resume, train.jsonl holds each step once, as a straight run does, and no torn line', async () => {
  const opts = (out: string): TrainOptions => ({ ...base(agiqa, out, { epochs: 2, limit: 24, batchSize: 4 }), method: 'tang' });
  const straight = join(tmp, 'log-straight');
  await train(opts(straight));
  const broken = join(tmp, 'log-broken');
  // 24 × 0.7 ≈ 17 training images, 5 steps an epoch: stop in the middle of epoch 2
  await assert.rejects(train({ ...opts(broken), stopAfterSteps: 7 }), /stopped/);
  appendFileSync(join(broken, 'train.jsonl'), '{"kind":"step","epo'); // a kill in the middle of a write
  await train(opts(broken));
  const key = (r: { kind: string; epoch: number; step?: number }): string => `${r.kind} ${r.epoch} ${r.step ?? ''}`;
  const keys = logRecords(broken).map(key);
  assert.equal(new Set(keys).size, keys.length, `repeated records: ${keys.join(', ')}`);
  assert.deepEqual(keys, logRecords(straight).map(key));
});

test('library train(): bad batchSize, epochs, lr, limit or a missing out are clear errors before any work', async () => {
  const out = join(tmp, 'never');
  const cases: Array<[Partial<TrainOptions>, RegExp]> = [
    [{ batchSize: 0 }, /: option batchSize = 0, must be a whole number ≥ 1$/],
    [{ batchSize: -4 }, /: option batchSize = -4, must be a whole number ≥ 1$/],
    [{ epochs: 0 }, /: option epochs = 0, must be a whole number ≥ 1$/],
    [{ epochs: 1.5 }, /: option epochs = 1.5, must be a whole number ≥ 1$/],
    [{ epochs: undefined, methodOptions: { epochs: 0 } }, /: option epochs = 0, must be a whole number ≥ 1$/],
    [{ lr: 0 }, /: option lr = 0, must be a number > 0$/],
    [{ methodOptions: { nCtx: 'many' } }, /: option nCtx = "many", must be a whole number ≥ 1$/],
    [{ limit: 0 }, /train: limit must be a whole number ≥ 1, not 0/],
    [{ out: undefined }, /train: out \(the folder for the run\) is required/],
  ];
  for (const [extra, pattern] of cases) {
    await assert.rejects(train({ ...base(agiqa, out), ...extra }), pattern, JSON.stringify(extra));
  }
  assert.ok(!existsSync(out), 'nothing was written');
});

test('--image-col, --mos-col, --prompt-col choose the columns of a csv dataset in train and eval; dropped label rows are warned about', async () => {
  const { root, names } = agiqaCopy(12);
  const mos = readFileSync(join(root, 'data.csv'), 'utf8')
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => l.split(',')[5]!);
  const rows = names.map((n, i) => `images/${n},${mos[i]},prompt ${i % 6}`);
  rows.push(`images/${names[0]},4.9,prompt 0`); // listed again with another score: both rows are left out
  writeFileSync(join(root, 'scores.csv'), ['file,score,text', ...rows].join('\n') + '\n');
  const dataset = [
    '--dataset',
    'csv',
    '--root',
    root,
    '--label-file',
    'scores.csv',
    '--image-col',
    'file',
    '--mos-col',
    'score',
    '--prompt-col',
    'text',
  ];

  const t = await cli(
    'train',
    '--method',
    'clip-iqa+',
    '--model',
    tiny,
    ...dataset,
    '--epochs',
    '1',
    '--batch',
    '4',
    '--threads',
    '1',
    '--out',
    join(tmp, 'csv-train'),
    '--json',
  );
  assert.equal(t.code, 0, t.err);
  assert.match(
    t.err,
    /warning: csv: 1 label row problem\(s\); the rows were left out\n {2}.*scores\.csv: images\/AttnGAN_normal_000\.jpg is listed 2 times/,
  );

  const e = await cli(
    'eval',
    '--method',
    'clip-iqa',
    '--model',
    tiny,
    ...dataset,
    '--threads',
    '1',
    '--out',
    join(tmp, 'csv-eval'),
    '--json',
  );
  assert.equal(e.code, 0, e.err);
  assert.match(e.err, /warning: csv: 1 label row problem/);
  assert.equal((JSON.parse(e.out) as { n: number }).n, 11);

  const wrong = await cli(
    'eval',
    '--method',
    'clip-iqa',
    '--model',
    tiny,
    '--dataset',
    'agiqa-3k',
    '--root',
    root,
    '--mos-col',
    'mos',
    '--out',
    join(tmp, 'x'),
  );
  assert.equal(wrong.code, 1);
  assert.match(wrong.err, /agiqa-3k: --mos-col chooses the columns of the generic 'csv' dataset/);
  assert.doesNotMatch(wrong.err, /mosCol/);
});

test(
  "a run's list of unreadable images that is a FIFO or a device is not waited on or read",
  { skip: process.platform === 'win32', timeout: 20_000 },
  () => {
    const dir = join(tmp, 'unreadable-list');
    mkdirSync(dir, { recursive: true });
    const fifo = join(dir, 'unreadable.json');
    execFileSync('mkfifo', [fifo]);
    assert.deepEqual(readUnreadable(fifo), []);
    const zero = join(dir, 'zero.json');
    symlinkSync('/dev/zero', zero);
    assert.deepEqual(readUnreadable(zero), []);
    const list = join(dir, 'list.json');
    writeFileSync(list, JSON.stringify([{ file: 'a.png', problem: 'truncated' }]));
    assert.deepEqual(readUnreadable(list), [{ file: 'a.png', problem: 'truncated' }]);
  },
);
