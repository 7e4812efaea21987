import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { train } from '../src/train/trainer.js';
import { evaluate } from '../src/eval/evaluate.js';
import { correlations } from '../src/eval/metrics.js';
import { sharedDir } from '../src/util/fs.js';

const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');
const root = join(sharedDir(), 'datasets', 'agiqa-3k');

test('end to end on AGIQA-3K: train two epochs on a small split, evaluate, check the report and the plot', async () => {
  const out = mkdtempSync(join(tmpdir(), 'promptiqa-e2e-'));
  const r = await train({ method: 'clip-iqa+', model: tiny, dataset: 'agiqa-3k', root, out: join(out, 'run'), epochs: 2, limit: 80, batchSize: 16, seed: 11, threads: 1 });
  assert.equal(r.epochs, 2);
  const rep = await evaluate({ method: 'clip-iqa+', checkpoint: r.checkpoint, dataset: 'agiqa-3k', root, split: 'test', limit: 80, seed: 11, out: join(out, 'eval') });
  // the evaluation's test side is the training run's test side
  assert.equal(rep.n, r.test!.n);
  assert.ok(Math.abs(rep.metrics.srcc! - r.test!.srcc!) < 1e-12);
  const report = JSON.parse(readFileSync(rep.reportPath, 'utf8'));
  assert.match(report.protocol, /split by group/);
  const again = correlations(report.scores.map((s: { score: number }) => s.score), report.scores.map((s: { mos: number }) => s.mos));
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
