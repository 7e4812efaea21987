import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { train } from '../src/train/index.js';
import { evaluate, type EvalOptions } from '../src/eval/evaluate.js';
import { loadDataset } from '../src/data/datasets.js';
import { sampleIndices, splitDataset } from '../src/data/splits.js';
import { cli } from './helpers/cli.js';
import { correlations } from '../src/eval/metrics.js';
import { sharedDir } from './helpers/shared.js';

const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');
const root = join(sharedDir(), 'datasets', 'agiqa-3k');

test('end to end on AGIQA-3K: train two epochs on a small split, evaluate, check the report and the plot', async () => {
  const out = mkdtempSync(join(tmpdir(), 'promptiqa-e2e-'));
  const r = await train({
    method: 'clip-iqa+',
    model: tiny,
    dataset: 'agiqa-3k',
    root,
    out: join(out, 'run'),
    epochs: 2,
    limit: 80,
    batchSize: 16,
    seed: 11,
    threads: 1,
  });
  assert.equal(r.epochs, 2);
  const rep = await evaluate({
    method: 'clip-iqa+',
    checkpoint: r.checkpoint,
    dataset: 'agiqa-3k',
    root,
    split: 'test',
    limit: 80,
    seed: 11,
    out: join(out, 'eval'),
  });
  // the evaluation's test side is the training run's test side
  assert.equal(rep.n, r.test!.n);
  assert.ok(Math.abs(rep.metrics.srcc! - r.test!.srcc!) < 1e-12);
  const report = JSON.parse(readFileSync(rep.reportPath, 'utf8')) as { protocol: string; scores: Array<{ score: number; mos: number }> };
  assert.match(report.protocol, /split by group/);
  const again = correlations(
    report.scores.map((s) => s.score),
    report.scores.map((s) => s.mos),
  );
  assert.ok(Math.abs(again.srcc - rep.metrics.srcc!) < 1e-12);
  const svg = readFileSync(rep.plotPath, 'utf8');
  assert.equal((svg.match(/<circle/g) ?? []).length >= rep.n, true);
  assert.ok(svg.includes(`SRCC ${rep.metrics.srcc!.toFixed(4)}`));
  assert.ok(svg.includes(`PLCC ${rep.metrics.plcc!.toFixed(4)}`));
});

test('zero-shot clip-iqa evaluates on the whole (limited) dataset', async () => {
  const out = mkdtempSync(join(tmpdir(), 'promptiqa-eval-'));
  const rep = await evaluate({ method: 'clip-iqa', model: tiny, dataset: 'agiqa-3k', root, limit: 24, out });
  assert.equal(rep.n, 24);
  assert.deepEqual(rep.failed, []);
  assert.match(rep.protocol, /zero-shot/);
});

// One short training run shared by the protocol tests below: seed 3, a 60-image subset, shares 0.6/0.2/0.2.
let shortRun: Promise<{ dir: string; run: Awaited<ReturnType<typeof train>> }> | undefined;
function trainedOnce(): Promise<{ dir: string; run: Awaited<ReturnType<typeof train>> }> {
  shortRun ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'promptiqa-protocol-'));
    const run = await train({
      method: 'clip-iqa+',
      model: tiny,
      dataset: 'agiqa-3k',
      root,
      out: join(dir, 'run'),
      epochs: 1,
      limit: 60,
      seed: 3,
      ratios: [0.6, 0.2, 0.2],
      batchSize: 16,
      threads: 1,
    });
    return { dir, run };
  })();
  return shortRun;
}

test("eval --split test reproduces train's test figures exactly, whatever seed, limit and split options it gets", async () => {
  const { dir, run } = await trainedOnce();
  const ds = loadDataset('agiqa-3k', { root });
  // the run's images, from the primitives: a seeded 60-image subset, split by generation prompt
  const pool = sampleIndices(ds.items.length, 60, 3);
  const sides = splitDataset(
    pool.map((i) => ds.items[i]!),
    { by: 'group', ratios: [0.6, 0.2, 0.2], seed: 3 },
  );
  const seen = new Set([...sides.train, ...sides.val].map((i) => ds.items[pool[i]!]!.image));
  const seenPrompts = new Set([...sides.train, ...sides.val].map((i) => ds.items[pool[i]!]!.group));
  const groupOf = new Map(ds.items.map((it) => [it.image, it.group]));
  const variants: Array<Partial<EvalOptions>> = [
    {},
    { seed: 0 },
    { limit: 200 },
    { seed: 7, limit: 30, ratios: [0.8, 0.1, 0.1], splitBy: 'image' },
  ];
  for (const [v, extra] of variants.entries()) {
    const rep = await evaluate({
      method: 'clip-iqa+',
      checkpoint: run.checkpoint,
      dataset: 'agiqa-3k',
      root,
      split: 'test',
      out: join(dir, `eval-${v}`),
      ...extra,
    });
    assert.equal(rep.n, run.test!.n, `variant ${v}`);
    for (const k of ['srcc', 'krcc', 'plcc', 'plcc_logistic', 'rmse']) assert.equal(rep.metrics[k], run.test![k], `variant ${v}: ${k}`);
    // no training or validation image, nor one of their generation prompts, among those scored
    assert.deepEqual(
      rep.scores.filter((s) => seen.has(s.file) || seenPrompts.has(groupOf.get(s.file)!)),
      [],
      `variant ${v}`,
    );
    assert.match(rep.protocol, /seed 3, a seeded subset of 60 images/);
    if (Object.keys(extra).length) assert.match(rep.notes.join('\n'), /not used: .*the test side is the training run's/);
    else assert.deepEqual(rep.notes, []);
  }
});

test('eval --split test refuses, naming the difference, when the dataset is not the one the run was split from', async () => {
  const { dir, run } = await trainedOnce();
  const lines = readFileSync(join(root, 'data.csv'), 'utf8').trim().split('\n');
  const fewer = join(dir, 'fewer.csv');
  writeFileSync(fewer, [lines[0], ...lines.slice(2)].join('\n') + '\n');
  await assert.rejects(
    evaluate({
      method: 'clip-iqa+',
      checkpoint: run.checkpoint,
      dataset: 'agiqa-3k',
      root,
      labelFile: fewer,
      split: 'test',
      out: join(dir, 'eval-fewer'),
    }),
    /the dataset has 2981 images where the training run's had 2982/,
  );
});

test('eval on every image notes how many of them trained the checkpoint', async () => {
  const { dir, run } = await trainedOnce();
  const rep = await evaluate({
    method: 'clip-iqa+',
    checkpoint: run.checkpoint,
    dataset: 'agiqa-3k',
    root,
    limit: 60,
    seed: 3,
    out: join(dir, 'eval-all'),
  });
  // 60 images, 48 of them in the 0.6 + 0.2 training and validation shares
  assert.match(rep.notes.join('\n'), /(4[0-9]|5[0-9]) of the 60 images scored were used to train or validate/);
});

test('evaluate() checks its options and the output folder before any work', async () => {
  const { dir, run } = await trainedOnce();
  const given = { method: 'clip-iqa+', checkpoint: run.checkpoint, dataset: 'agiqa-3k', root, split: 'test' } as const;
  await assert.rejects(
    evaluate(given as unknown as EvalOptions),
    /evaluate: option out \(the folder for report.json and scatter.svg\) is required/,
  );
  await assert.rejects(
    evaluate({ ...given, out: join(dir, 'x'), split: 'train' } as unknown as EvalOptions),
    /evaluate: option split must be one of all, test/,
  );
  await assert.rejects(evaluate({ ...given, out: join(dir, 'x'), limit: 0 }), /evaluate: option limit must be a whole number ≥ 1/);
  // an output folder that cannot be made (under a file): refused before a single image is scored
  const file = join(dir, 'a-file');
  writeFileSync(file, '');
  let events = 0;
  await assert.rejects(
    evaluate({
      ...given,
      out: join(file, 'eval'),
      onEvent: () => {
        events++;
      },
    }),
    /cannot write .*a-file[/\\]eval: .*a-file is a file, not a folder/,
  );
  assert.equal(events, 0);
});

test("eval refuses a method option that changes the checkpoint's tensors, naming the checkpoint and the option", async () => {
  const { dir, run } = await trainedOnce();
  await assert.rejects(
    evaluate({
      method: 'clip-iqa+',
      checkpoint: run.checkpoint,
      dataset: 'agiqa-3k',
      root,
      split: 'test',
      methodOptions: { nCtx: 2 },
      out: join(dir, 'eval-nctx'),
    }),
    (err: Error) =>
      err.message.includes(run.checkpoint) &&
      /is \[16, \d+\] where \[2, \d+\] is expected/.test(err.message) &&
      /nCtx=2.*nCtx=16/.test(err.message),
  );
  // options that leave the tensors alone are fine
  const rep = await evaluate({
    method: 'clip-iqa+',
    checkpoint: run.checkpoint,
    dataset: 'agiqa-3k',
    root,
    split: 'test',
    methodOptions: { testViews: 'resize' },
    batchSize: 4,
    out: join(dir, 'eval-views'),
  });
  assert.equal(rep.n, run.test!.n);
});

test('promptiqa eval: --batch, --option and --format csv|json, and --limit says it draws a seeded subset', async () => {
  const { dir, run } = await trainedOnce();
  const csv = await cli(
    'eval',
    '--method',
    'clip-iqa+',
    '--checkpoint',
    run.checkpoint,
    '--dataset',
    'agiqa-3k',
    '--root',
    root,
    '--split',
    'test',
    '--batch',
    '4',
    '--option',
    'testViews=resize',
    '--format',
    'csv',
    '--out',
    join(dir, 'cli-csv'),
    '--quiet',
  );
  assert.equal(csv.code, 0, csv.err);
  const rows = csv.out.trim().split('\n');
  assert.equal(rows[0], 'file,mos,score');
  assert.equal(rows.length - 1, run.test!.n);
  const json = await cli(
    'eval',
    '--method',
    'clip-iqa+',
    '--checkpoint',
    run.checkpoint,
    '--dataset',
    'agiqa-3k',
    '--root',
    root,
    '--split',
    'test',
    '--seed',
    '9',
    '--format',
    'json',
    '--out',
    join(dir, 'cli-json'),
  );
  assert.equal(json.code, 0, json.err);
  const rep = JSON.parse(json.out) as { metrics: Record<string, number> };
  assert.equal(rep.metrics.srcc, run.test!.srcc);
  assert.match(json.err, /not used: seed 9/);
  const bad = await cli(
    'eval',
    '--method',
    'clip-iqa+',
    '--checkpoint',
    run.checkpoint,
    '--dataset',
    'agiqa-3k',
    '--root',
    root,
    '--split',
    'test',
    '--option',
    'nCtx=2',
    '--out',
    join(dir, 'cli-bad'),
  );
  assert.equal(bad.code, 1);
  assert.match(bad.err, /nCtx=2/);
  const help = await cli('eval', '--help');
  assert.match(help.out, /--limit <n> +a seeded subset of n items/);
});
