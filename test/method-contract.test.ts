/**
 * The method contract: a method with an auxiliary target of its own is declared here, in the test, and
 * registered; the shared trainer, scorer and evaluator train and score it without knowing its target.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as G from '../src/graph/graph.js';
import { type AuxiliaryTarget, type Method, mse, parseOptions } from '../src/methods/method.js';
import { type CommonOptions, type Schema, commonSchema, spec } from '../src/methods/options.js';
import { createMetric, listMetrics, loadBackbone, registerMethod } from '../src/methods/index.js';
import { loadCheckpoint } from '../src/methods/checkpoint.js';
import { evaluate } from '../src/eval/evaluate.js';
import { train } from '../src/train/index.js';
import { normalInit } from '../src/prompts/context.js';
import { sharedDir } from './helpers/shared.js';
import { Rng } from '../src/util/rng.js';

const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');
const agiqa = join(sharedDir(), 'datasets', 'agiqa-3k');

interface ToyOptions extends CommonOptions {
  spreadWeight: number;
}

/** The spread of the raters' scores (the dataset's `std`), predicted by a second head. */
const spread: AuxiliaryTarget<ToyOptions> = {
  name: 'spread',
  size: 1,
  enabled: (o) => o.spreadWeight > 0,
  read: (item) => item.extra?.std,
  missing: { kind: 'refuse', why: 'its spread head learns from it (set --option spreadWeight=0)' },
  loss: (o, predicted, target) => G.mul(mse(predicted, target), o.spreadWeight),
};

const options: Schema<ToyOptions> = {
  ...commonSchema({ optimizer: 'adam', lr: 1e-2, batchSize: 4, epochs: 1 }),
  spreadWeight: spec.number(1, 'the weight of the spread loss', { min: 0 }),
};

const toy: Method<ToyOptions> = {
  info: {
    name: 'toy-spread',
    description: 'a test method: cosine to a learned anchor, and a spread head',
    lowerBetter: false,
    scoreRange: [-1, 1],
    trainable: true,
    defaultModel: 'none',
  },
  options,
  imageInput: 'features',
  auxiliary: [spread],
  target: (unit) => unit,
  build(o, { weights }) {
    const e = weights.config.embedDim;
    return {
      init: (rng) =>
        new Map([
          ['anchor', normalInit(rng, [1, e])],
          ['spread.w', normalInit(rng, [e, 1])],
          ['spread.b', normalInit(rng, [1])],
        ]),
      text: (ctx) => ({ anchor: G.l2Normalize(ctx.param('anchor')) }),
      forward(ctx, image, text) {
        const b = image.shape[0]!;
        const x = G.l2Normalize(image);
        const score = G.reshape(G.matmul(x, G.transposeLast(text.anchor!)), [b]);
        if (!ctx.auxiliary.has(spread.name)) return { score };
        return { score, auxiliary: { [spread.name]: G.reshape(G.linear(x, ctx.param('spread.w'), ctx.param('spread.b')), [b]) } };
      },
    };
  },
};

let tmp = '';
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'promptiqa-contract-'));
  registerMethod(toy);
});
after(() => rmSync(tmp, { recursive: true, force: true }));

/** The first `n` images of AGIQA-3K with their label rows. */
function agiqaCopy(n: number): string {
  const root = join(tmp, `agiqa-${n}`);
  mkdirSync(join(root, 'images'), { recursive: true });
  const lines = readFileSync(join(agiqa, 'data.csv'), 'utf8').trim().split('\n');
  writeFileSync(join(root, 'data.csv'), lines.slice(0, n + 1).join('\n') + '\n');
  for (const row of lines.slice(1, n + 1))
    copyFileSync(join(agiqa, 'images', row.split(',')[0]!), join(root, 'images', row.split(',')[0]!));
  return root;
}

test('a method declared outside the library, with an auxiliary target of its own, trains, scores and evaluates', async () => {
  const root = agiqaCopy(16);
  const run = (name: string, spreadWeight: number) =>
    train({
      method: 'toy-spread',
      model: tiny,
      dataset: 'agiqa-3k',
      root,
      out: join(tmp, name),
      seed: 3,
      threads: 1,
      ratios: [0.5, 0.25, 0.25],
      methodOptions: { spreadWeight },
    });
  const backbone = await loadBackbone(tiny);
  const init = toy.build(parseOptions(toy, {}), backbone).init(Rng.at(3, 'init'));

  const on = await run('on', 1);
  const learnt = loadCheckpoint(join(on.out, 'checkpoint')).params;
  assert.notDeepEqual(learnt.get('spread.w')!.data, init.get('spread.w')!.data, 'the spread head learnt from the target it declared');
  assert.notDeepEqual(learnt.get('anchor')!.data, init.get('anchor')!.data);

  const off = await run('off', 0);
  const untouched = loadCheckpoint(join(off.out, 'checkpoint')).params;
  assert.deepEqual(untouched.get('spread.w')!.data, init.get('spread.w')!.data, 'with the target off, its head gets no gradient');

  // scoring reads the score alone; evaluation runs the shared protocol
  const metric = await createMetric('toy-spread', { checkpoint: on.checkpoint });
  const score = await metric.score(join(root, 'images', readdirSync(join(root, 'images'))[0]!));
  await metric.close();
  assert.ok(score >= -1 && score <= 1, `a cosine: ${score}`);
  const report = await evaluate({
    method: 'toy-spread',
    checkpoint: on.checkpoint,
    dataset: 'agiqa-3k',
    root,
    out: join(tmp, 'eval'),
    split: 'test',
    threads: 1,
  });
  assert.equal(report.n, 4);

  const listed = listMetrics().find((m) => m.name === 'toy-spread')!;
  assert.deepEqual(
    listed.options.find((x) => x.name === 'spreadWeight'),
    { name: 'spreadWeight', kind: 'number', default: 1, takes: 'a number ≥ 0', help: 'the weight of the spread loss' },
  );
});

test('items without a target the method cannot do without are refused before the first step, by name', async () => {
  const root = join(tmp, 'no-spread');
  mkdirSync(join(root, 'images'), { recursive: true });
  const rows = readFileSync(join(agiqa, 'data.csv'), 'utf8')
    .trim()
    .split('\n')
    .slice(1, 9)
    .map((r) => r.split(','));
  for (const r of rows) copyFileSync(join(agiqa, 'images', r[0]!), join(root, 'images', r[0]!));
  writeFileSync(join(root, 'labels.csv'), ['image,mos', ...rows.map((r) => `images/${r[0]},${r[5]}`)].join('\n') + '\n');
  const out = join(tmp, 'refused');
  await assert.rejects(
    train({ method: 'toy-spread', model: tiny, dataset: 'csv', root, labelFile: 'labels.csv', out, seed: 1, threads: 1 }),
    (err: Error) =>
      /csv: \d+ training image\(s\) have no spread score \(images\/.+\); toy-spread: its spread head learns from it \(set --option spreadWeight=0\)/.test(
        err.message,
      ),
  );
  assert.ok(!existsSync(join(out, 'train.jsonl')), 'no step was taken');
});

test("the shared trainer, scorer, graphs and evaluator name no method's auxiliary target", () => {
  for (const file of [
    'src/train/trainer.ts',
    'src/train/checks.ts',
    'src/train/state.ts',
    'src/train/rounds.ts',
    'src/methods/graphs.ts',
    'src/methods/registry.ts',
    'src/methods/load.ts',
    'src/methods/metric.ts',
    'src/methods/create.ts',
    'src/eval/evaluate.ts',
    'src/methods/method.ts',
  ]) {
    const code = readFileSync(join(import.meta.dirname, '..', file), 'utf8');
    for (const word of ['alignment', 'distortion', 'spread'])
      assert.ok(!new RegExp(`\\b${word}`, 'i').test(code), `${file} mentions "${word}"`);
  }
});

test('option schema: defaults, --option strings and JSON values read, a bad value refused by name', () => {
  const o = parseOptions(toy, {});
  assert.equal(o.spreadWeight, 1);
  assert.equal(o.lr, 1e-2, "the method's own default of a common option");
  assert.equal(parseOptions(toy, { spreadWeight: '0.5', dropLast: 'true', schedule: 'cosine' }).spreadWeight, 0.5);
  assert.equal(parseOptions(toy, { dropLast: true }).dropLast, true);
  assert.throws(() => parseOptions(toy, { spreadWeight: -1 }), /^Error: toy-spread: option spreadWeight = -1, must be a number ≥ 0$/);
  assert.throws(() => parseOptions(toy, { dropLast: 'yes' }), /toy-spread: option dropLast = "yes", must be true or false/);
  assert.throws(() => parseOptions(toy, { schedule: 'linear' }), /toy-spread: option schedule = "linear", must be one of cosine, constant/);
  assert.throws(() => parseOptions(toy, { lr: 0 }), /toy-spread: option lr = 0, must be a number > 0/);
  assert.throws(() => parseOptions(toy, { batchSize: '' }), /toy-spread: option batchSize = "", must be a whole number ≥ 1/);
  assert.throws(() => parseOptions(toy, { spreadWieght: 1 }), /toy-spread has no option "spreadWieght" \(options: .*spreadWeight/);
  assert.throws(() => registerMethod(toy), /a method named "toy-spread" is already registered/);
});
