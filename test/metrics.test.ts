import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { correlations, fitLogistic4, krcc, plcc, srcc, summarise } from '../src/eval/metrics.js';
import { sharedDir } from './helpers/shared.js';
import { readColumns } from '../src/cli/commands/metrics.js';
import { Rng } from '../src/util/rng.js';

interface RefCase {
  kind: string;
  pred: number[];
  mos: number[];
  srcc: number;
  krcc: number;
  plcc_raw: number;
  plcc_logistic: number;
  rmse_logistic: number;
}

const reference = JSON.parse(readFileSync(join(sharedDir(), 'reference', 'metrics.json'), 'utf8')) as { cases: RefCase[] };

function close(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} differs from ${expected} by more than ${tol}`);
}

/** Kendall tau-b straight from its definition, O(n²), to check the O(n log n) version against. */
function kendallBruteForce(x: number[], y: number[]): number {
  let concordant = 0;
  let discordant = 0;
  let tiedXOnly = 0;
  let tiedYOnly = 0;
  for (let i = 0; i < x.length; i++) {
    for (let j = i + 1; j < x.length; j++) {
      const dx = Math.sign(x[i]! - x[j]!);
      const dy = Math.sign(y[i]! - y[j]!);
      if (dx === 0 && dy === 0) continue;
      if (dx === 0) tiedXOnly++;
      else if (dy === 0) tiedYOnly++;
      else if (dx === dy) concordant++;
      else discordant++;
    }
  }
  return (concordant - discordant) / Math.sqrt((concordant + discordant + tiedXOnly) * (concordant + discordant + tiedYOnly));
}

for (const c of reference.cases) {
  test(`matches scipy on the reference case "${c.kind}" (n = ${c.pred.length})`, () => {
    close(srcc(c.pred, c.mos), c.srcc, 1e-9, 'srcc');
    close(krcc(c.pred, c.mos), c.krcc, 1e-9, 'krcc');
    close(plcc(c.pred, c.mos), c.plcc_raw, 1e-9, 'plcc');
    const r = correlations(c.pred, c.mos);
    assert.equal(r.n, c.pred.length);
    close(r.srcc, c.srcc, 1e-9, 'correlations.srcc');
    close(r.krcc, c.krcc, 1e-9, 'correlations.krcc');
    close(r.plcc, c.plcc_raw, 1e-9, 'correlations.plcc');
    // The logistic fit is non-convex; the reference note allows about 1e-3.
    close(r.plcc_logistic, c.plcc_logistic, 1e-3, 'plcc_logistic');
    close(r.rmse, c.rmse_logistic, 1e-3, 'rmse');
  });
}

test('ties: average ranks for Spearman, tau-b for Kendall (values from scipy 1.17)', () => {
  const x = [1, 2, 2, 3, 3, 3, 4];
  const y = [1, 3, 2, 2, 4, 4, 5];
  close(srcc(x, y), 0.8289098281887928, 1e-12, 'srcc');
  close(krcc(x, y), 0.7789808377045201, 1e-12, 'krcc');
  close(plcc(x, y), 0.8453303101943841, 1e-12, 'plcc');
  close(krcc(x, y), kendallBruteForce(x, y), 1e-12, 'krcc vs definition');
  // Perfectly monotone with ties on both sides in the same places.
  close(srcc([1, 1, 2, 3], [5, 5, 6, 9]), 1, 1e-15, 'monotone srcc');
  close(krcc([1, 1, 2, 3], [5, 5, 6, 9]), 1, 1e-15, 'monotone krcc');
  close(krcc([3, 2, 1], [1, 2, 3]), -1, 1e-15, 'reversed');
});

test('Kendall tau-b agrees with its O(n²) definition on random data with many ties', () => {
  const rng = new Rng(7);
  for (const [n, levels] of [
    [50, 3],
    [400, 8],
    [1500, 40],
    [300, 1000],
  ] as const) {
    const x = Array.from({ length: n }, () => rng.int(levels));
    const y = x.map((v) => Math.round(v * 0.5 + rng.normal() * levels * 0.3));
    close(krcc(x, y), kendallBruteForce(x, y), 1e-12, `n=${n}`);
  }
});

test('Kendall on 10,000 points (the O(n log n) merge counting) equals the pairwise count', () => {
  const rng = new Rng(3);
  const x = Array.from({ length: 10_000 }, () => rng.normal());
  const y = x.map((v) => v + rng.normal());
  const tau = krcc(x, y);
  assert.ok(tau > 0.4 && tau < 0.6, `tau ${tau}`);
  close(tau, kendallBruteForce(x, y), 1e-12, 'n=10000');
});

test('constant input gives NaN (as scipy), and fitLogistic4 refuses a constant pred', () => {
  const flat = [2, 2, 2, 2, 2];
  const v = [1, 2, 3, 4, 5];
  for (const f of [srcc, krcc, plcc]) {
    assert.ok(Number.isNaN(f(flat, v)), `${f.name}(constant, v)`);
    assert.ok(Number.isNaN(f(v, flat)), `${f.name}(v, constant)`);
  }
  const r = correlations(flat, v);
  assert.equal(r.n, 5);
  for (const key of ['srcc', 'krcc', 'plcc', 'plcc_logistic', 'rmse'] as const) assert.ok(Number.isNaN(r[key]), key);
  assert.throws(() => fitLogistic4(flat, v), /pred is constant/);
});

test('input errors: length mismatch, too few points, non-finite values', () => {
  assert.throws(() => srcc([1, 2, 3], [1, 2]), /length mismatch, pred has 3 values and mos has 2/);
  assert.throws(() => correlations([1, 2, 3, 4], [1, 2, 3]), /length mismatch/);
  for (const f of [srcc, krcc, plcc]) {
    assert.throws(() => f([1, 2], [1, 2]), RangeError);
    assert.throws(() => f([], []), RangeError);
    assert.ok(Number.isFinite(f([1, 2, 3], [1, 3, 2])), `${f.name} with n = 3`);
  }
  // Four parameters need at least four points.
  assert.throws(() => correlations([1, 2, 3], [1, 3, 2]), RangeError);
  assert.throws(() => fitLogistic4([1, 2, 3], [1, 3, 2]), RangeError);
  assert.throws(() => plcc([1, NaN, 3], [1, 2, 3]), /pred\[1\] is NaN/);
  assert.throws(() => srcc([1, 2, 3], [1, Infinity, 3]), /mos\[1\] is Infinity/);
});

test('accepts typed arrays', () => {
  const x = Float32Array.from([0.1, 0.5, 0.3, 0.9, 0.7]);
  const y = Float64Array.from([1, 3, 2, 5, 4]);
  close(srcc(x, y), 1, 1e-15, 'srcc');
  close(krcc(x, y), 1, 1e-15, 'krcc');
  close(plcc(x, y), plcc(Array.from(x), Array.from(y)), 0, 'plcc');
});

test('fitLogistic4 recovers the parameters of noiseless logistic data', () => {
  const truth = [4.5, 0.5, 0.4, 0.08];
  const x = Array.from({ length: 60 }, (_, i) => i / 59);
  const y = x.map((v) => (truth[0]! - truth[1]!) / (1 + Math.exp(-(v - truth[2]!) / truth[3]!)) + truth[1]!);
  const fit = fitLogistic4(x, y);
  const [b1, b2, b3, b4] = fit.params;
  close(b1, truth[0]!, 1e-6, 'b1');
  close(b2, truth[1]!, 1e-6, 'b2');
  close(b3, truth[2]!, 1e-6, 'b3');
  close(Math.abs(b4), truth[3]!, 1e-6, '|b4|');
  close(fit.predict(0.4), 2.5, 1e-6, 'predict at the midpoint');
});

test('summarise: mean, median, sample std (ddof = 1), range', () => {
  const s = summarise([4, 1, 3, 2]);
  assert.deepEqual({ ...s, std: 0 }, { mean: 2.5, median: 2.5, std: 0, min: 1, max: 4, n: 4 });
  close(s.std, Math.sqrt(5 / 3), 1e-15, 'std');
  assert.equal(summarise([5, 1, 3]).median, 3);
  const one = summarise([0.8]);
  assert.equal(one.mean, 0.8);
  assert.ok(Number.isNaN(one.std), 'sample std of one value is undefined');
  assert.ok(Number.isNaN(summarise([1, NaN, 3]).mean));
  assert.throws(() => summarise([]), RangeError);
});

test('metrics CSV columns take finite decimals only: 0x1, 1e400, Infinity are refused naming the row', () => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-metrics-'));
  try {
    const csv = join(dir, 'scores.csv');
    writeFileSync(csv, 'score,mos\n1,2\n.5,3e0\n-2,+4\n');
    assert.deepEqual(readColumns(csv, 'score', 'mos'), { pred: [1, 0.5, -2], mos: [2, 3, 4], skipped: 0 });
    for (const bad of ['0x1', '1e400', 'Infinity', '0b1']) {
      writeFileSync(csv, `score,mos\n1,2\n${bad},3\n`);
      assert.throws(() => readColumns(csv, 'score', 'mos'), new RegExp(`data row 2: column 'score' is '${bad}', not a number`), bad);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
