/**
 * Agreement between predicted quality scores and mean opinion scores (MOS), computed as scipy does:
 * SRCC (`scipy.stats.spearmanr`), KRCC (`scipy.stats.kendalltau`, tau-b), PLCC (`scipy.stats.pearsonr`),
 * and PLCC / RMSE after the 4-parameter logistic mapping fitted with `scipy.optimize.curve_fit`.
 *
 * Conventions, the same in every function here:
 * - `pred` and `mos` must have the same length (else an Error) and hold finite numbers (else an Error
 *   naming the index).
 * - The rank and linear correlations need n ≥ 3, the logistic fit n ≥ 4 (as many points as parameters,
 *   as curve_fit requires); fewer is a RangeError.
 * - Constant input (every value of `pred`, or of `mos`, equal) gives NaN, as scipy does: the correlation
 *   is undefined, but an evaluation that meets a collapsed model should report it rather than crash.
 *   `correlations` then gives NaN for every field but `n`. `fitLogistic4` alone throws on constant `pred`.
 */

export interface Correlations {
  n: number;
  srcc: number;
  krcc: number;
  /** Pearson correlation of the raw predictions. */
  plcc: number;
  /** Pearson correlation after the 4-parameter logistic mapping of the predictions. */
  plcc_logistic: number;
  /** RMSE between the logistically mapped predictions and MOS, in MOS units. */
  rmse: number;
}

/** The figures every report gives, in this order, with their labels: the one list of their names. */
export const FIGURES = [
  { key: 'srcc', label: 'SRCC' },
  { key: 'krcc', label: 'KRCC' },
  { key: 'plcc', label: 'PLCC' },
  { key: 'plcc_logistic', label: 'PLCC (logistic)' },
  { key: 'rmse', label: 'RMSE (logistic)' },
] as const satisfies ReadonlyArray<{ key: keyof Correlations; label: string }>;

export type Figure = (typeof FIGURES)[number]['key'];

/** The report's figures of a set of correlations, in FIGURES' order. */
export function figuresOf(c: Correlations): Record<Figure, number> {
  return Object.fromEntries(FIGURES.map(({ key }) => [key, c[key]])) as Record<Figure, number>;
}

type Values = ArrayLike<number>;

function checkPair(pred: Values, mos: Values, minN: number, what: string): void {
  if (pred.length !== mos.length) {
    throw new Error(`${what}: length mismatch, pred has ${pred.length} values and mos has ${mos.length}`);
  }
  if (pred.length < minN) throw new RangeError(`${what}: needs at least ${minN} points, got ${pred.length}`);
  for (let i = 0; i < pred.length; i++) {
    if (!Number.isFinite(pred[i])) throw new Error(`${what}: pred[${i}] is ${pred[i]}, not a finite number`);
    if (!Number.isFinite(mos[i])) throw new Error(`${what}: mos[${i}] is ${mos[i]}, not a finite number`);
  }
}

function isConstant(v: Values): boolean {
  for (let i = 1; i < v.length; i++) if (v[i] !== v[0]) return false;
  return true;
}

function mean(v: Values): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]!;
  return s / v.length;
}

/** Pearson correlation without input checks; NaN when either side has zero variance. */
function pearson(x: Values, y: Values): number {
  const mx = mean(x);
  const my = mean(y);
  let sxx = 0;
  let syy = 0;
  let sxy = 0;
  for (let i = 0; i < x.length; i++) {
    const dx = x[i]! - mx;
    const dy = y[i]! - my;
    sxx += dx * dx;
    syy += dy * dy;
    sxy += dx * dy;
  }
  if (sxx === 0 || syy === 0) return NaN;
  const r = sxy / Math.sqrt(sxx * syy);
  return Math.min(1, Math.max(-1, r));
}

/** 1-based ranks, ties given the average of the ranks they span (scipy.stats.rankdata 'average'). */
function averageRanks(v: Values): Float64Array {
  const n = v.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => v[a]! - v[b]!);
  const ranks = new Float64Array(n);
  let start = 0;
  while (start < n) {
    let end = start + 1;
    while (end < n && v[order[end]!] === v[order[start]!]) end++;
    const rank = (start + 1 + end) / 2; // mean of start+1 … end
    for (let k = start; k < end; k++) ranks[order[k]!] = rank;
    start = end;
  }
  return ranks;
}

/** Spearman rank correlation (average ranks for ties), as scipy.stats.spearmanr. */
export function srcc(pred: Values, mos: Values): number {
  checkPair(pred, mos, 3, 'srcc');
  if (isConstant(pred) || isConstant(mos)) return NaN;
  return pearson(averageRanks(pred), averageRanks(mos));
}

/** Pearson linear correlation, as scipy.stats.pearsonr. */
export function plcc(pred: Values, mos: Values): number {
  checkPair(pred, mos, 3, 'plcc');
  return pearson(pred, mos);
}

/** Number of tied pairs among runs of equal values in an already sorted sequence. */
function tiedPairs(sorted: Values): number {
  let ties = 0;
  let run = 1;
  for (let i = 1; i <= sorted.length; i++) {
    if (i < sorted.length && sorted[i] === sorted[i - 1]) {
      run++;
    } else {
      ties += (run * (run - 1)) / 2;
      run = 1;
    }
  }
  return ties;
}

/**
 * Sorts `a` in place (merge sort) and returns the number of pairs i < j with a[i] > a[j] strictly:
 * equal values are not inversions, so pairs tied in y are not counted as discordant.
 */
function countInversions(a: Float64Array): number {
  const buf = new Float64Array(a.length);
  let inversions = 0;
  for (let width = 1; width < a.length; width *= 2) {
    for (let lo = 0; lo < a.length - width; lo += 2 * width) {
      const mid = lo + width;
      const hi = Math.min(lo + 2 * width, a.length);
      let i = lo;
      let j = mid;
      let k = lo;
      while (i < mid && j < hi) {
        if (a[i]! <= a[j]!) {
          buf[k++] = a[i++]!;
        } else {
          inversions += mid - i; // a[j] is smaller than every remaining element on the left
          buf[k++] = a[j++]!;
        }
      }
      while (i < mid) buf[k++] = a[i++]!;
      while (j < hi) buf[k++] = a[j++]!;
      a.set(buf.subarray(lo, hi), lo);
    }
  }
  return inversions;
}

/**
 * Kendall's tau-b, as scipy.stats.kendalltau, in O(n log n) (Knight's algorithm): sort by (pred, mos),
 * count the discordant pairs as the inversions of mos in that order, and the ties from runs.
 */
export function krcc(pred: Values, mos: Values): number {
  checkPair(pred, mos, 3, 'krcc');
  const n = pred.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => pred[a]! - pred[b]! || mos[a]! - mos[b]!);
  const x = Float64Array.from(order, (i) => pred[i]!);
  const y = Float64Array.from(order, (i) => mos[i]!);

  // Pairs tied in both: runs of equal (x, y), which are adjacent after the lexicographic sort.
  let jointTies = 0;
  let run = 1;
  for (let i = 1; i <= n; i++) {
    if (i < n && x[i] === x[i - 1] && y[i] === y[i - 1]) {
      run++;
    } else {
      jointTies += (run * (run - 1)) / 2;
      run = 1;
    }
  }
  const xTies = tiedPairs(x);
  const discordant = countInversions(y); // leaves y sorted
  const yTies = tiedPairs(y);

  const total = (n * (n - 1)) / 2;
  if (xTies === total || yTies === total) return NaN;
  const concordantMinusDiscordant = total - xTies - yTies + jointTies - 2 * discordant;
  const tau = concordantMinusDiscordant / Math.sqrt(total - xTies) / Math.sqrt(total - yTies);
  return Math.min(1, Math.max(-1, tau));
}

/** The logistic used for PLCC after mapping: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2. */
function logistic4(p: readonly number[], x: number): number {
  return (p[0]! - p[1]!) * sigmoid((x - p[2]!) / Math.abs(p[3]!)) + p[1]!;
}

function sigmoid(z: number): number {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

/** Solves the 4×4 system m·x = b by Gaussian elimination with partial pivoting; null when singular. */
function solve4(m: number[][], b: number[]): number[] | null {
  const a = m.map((row, i) => [...row, b[i]!]);
  for (let col = 0; col < 4; col++) {
    let pivot = col;
    for (let r = col + 1; r < 4; r++) if (Math.abs(a[r]![col]!) > Math.abs(a[pivot]![col]!)) pivot = r;
    if (!(Math.abs(a[pivot]![col]!) > 0)) return null;
    [a[col], a[pivot]] = [a[pivot]!, a[col]!];
    for (let r = col + 1; r < 4; r++) {
      const f = a[r]![col]! / a[col]![col]!;
      for (let c = col; c < 5; c++) a[r]![c]! -= f * a[col]![c]!;
    }
  }
  const x = [0, 0, 0, 0];
  for (let r = 3; r >= 0; r--) {
    let s = a[r]![4]!;
    for (let c = r + 1; c < 4; c++) s -= a[r]![c]! * x[c]!;
    x[r] = s / a[r]![r]!;
  }
  return x.every(Number.isFinite) ? x : null;
}

/** scipy's default ftol / xtol for curve_fit's Levenberg–Marquardt. */
const TOL = 1.49012e-8;

/**
 * Fits mos ≈ (b1 - b2) / (1 + exp(-(pred - b3) / |b4|)) + b2 by least squares with Levenberg–Marquardt,
 * started, as the usual IQA evaluation code calls scipy's curve_fit, from
 * p0 = [max(mos), min(mos), mean(pred), std(pred) / 4] (population std). The damping is scaled by the
 * largest column norms of the Jacobian seen so far, as MINPACK does, so it is invariant to the units of
 * the scores. The problem is non-convex: a fit can end in another local optimum than scipy's, so expect
 * agreement to about 1e-3 in the resulting correlation, not bit for bit.
 */
export function fitLogistic4(pred: Values, mos: Values): { params: [number, number, number, number]; predict: (x: number) => number } {
  checkPair(pred, mos, 4, 'fitLogistic4');
  if (isConstant(pred)) throw new Error('fitLogistic4: pred is constant, the logistic cannot be fitted');
  const n = pred.length;
  const x = Float64Array.from(pred);
  const y = Float64Array.from(mos);

  const mx = mean(x);
  let varX = 0;
  for (let i = 0; i < n; i++) varX += (x[i]! - mx) ** 2;
  let yMax = -Infinity;
  let yMin = Infinity;
  for (const v of y) {
    yMax = Math.max(yMax, v);
    yMin = Math.min(yMin, v);
  }
  let p = [yMax, yMin, mx, Math.sqrt(varX / n) / 4];

  const cost = (q: number[]): number => {
    let s = 0;
    for (let i = 0; i < n; i++) s += (y[i]! - logistic4(q, x[i]!)) ** 2;
    return s;
  };

  let c = cost(p);
  let lambda = 1e-3;
  const scale = [0, 0, 0, 0];
  for (let iter = 0; iter < 1000; iter++) {
    // Normal equations JᵀJ·δ = Jᵀr from the analytic Jacobian of the model.
    const jtj = [0, 1, 2, 3].map(() => [0, 0, 0, 0]);
    const jtr = [0, 0, 0, 0];
    const a = Math.abs(p[3]!);
    const sign = p[3]! < 0 ? -1 : 1;
    const span = p[0]! - p[1]!;
    for (let i = 0; i < n; i++) {
      const z = (x[i]! - p[2]!) / a;
      const s = sigmoid(z);
      const ds = span * s * (1 - s);
      const row = [s, 1 - s, -ds / a, (-ds * z * sign) / a];
      const r = y[i]! - (span * s + p[1]!);
      for (let j = 0; j < 4; j++) {
        jtr[j]! += row[j]! * r;
        for (let k = 0; k <= j; k++) jtj[j]![k]! += row[j]! * row[k]!;
      }
    }
    for (let j = 0; j < 4; j++) for (let k = j + 1; k < 4; k++) jtj[j]![k] = jtj[k]![j]!;
    for (let j = 0; j < 4; j++) scale[j] = Math.max(scale[j]!, jtj[j]![j]!) || 1;

    let accepted = false;
    let converged = false;
    while (lambda < 1e20) {
      const damped = jtj.map((row, j) => row.map((v, k) => (j === k ? v + lambda * scale[j]! : v)));
      const step = solve4(damped, jtr);
      if (step) {
        const q = p.map((v, j) => v + step[j]!);
        const cq = cost(q);
        if (Number.isFinite(cq) && cq <= c && q[3] !== 0) {
          const stepNorm = Math.hypot(...step.map((d, j) => d * Math.sqrt(scale[j]!)));
          const paramNorm = Math.hypot(...p.map((v, j) => v * Math.sqrt(scale[j]!)));
          converged = c - cq <= TOL * c || stepNorm <= TOL * paramNorm;
          p = q;
          c = cq;
          lambda = Math.max(lambda / 10, 1e-15);
          accepted = true;
          break;
        }
      }
      lambda *= 10;
    }
    if (!accepted || converged || c === 0) break;
  }

  const params = p as [number, number, number, number];
  return { params, predict: (v: number) => logistic4(params, v) };
}

/** SRCC, KRCC, PLCC raw and after the logistic mapping, and the RMSE after the mapping. Needs n ≥ 4. */
export function correlations(pred: Values, mos: Values): Correlations {
  checkPair(pred, mos, 4, 'correlations');
  const n = pred.length;
  if (isConstant(pred) || isConstant(mos)) {
    return { n, srcc: NaN, krcc: NaN, plcc: NaN, plcc_logistic: NaN, rmse: NaN };
  }
  const fit = fitLogistic4(pred, mos);
  const mapped = Float64Array.from({ length: n }, (_, i) => fit.predict(pred[i]!));
  let se = 0;
  for (let i = 0; i < n; i++) se += (mapped[i]! - mos[i]!) ** 2;
  return {
    n,
    srcc: srcc(pred, mos),
    krcc: krcc(pred, mos),
    plcc: plcc(pred, mos),
    plcc_logistic: pearson(mapped, mos),
    rmse: Math.sqrt(se / n),
  };
}

/**
 * Summary of repeated measurements (e.g. SRCC over evaluation rounds). `std` is the sample standard
 * deviation (ddof = 1), so it is NaN for a single value. Any NaN among the values makes every statistic
 * NaN (a failed round must not vanish from the mean); an empty list is an error.
 */
export function summarise(values: number[]): { mean: number; median: number; std: number; min: number; max: number; n: number } {
  const n = values.length;
  if (n === 0) throw new RangeError('summarise: no values');
  if (values.some((v) => Number.isNaN(v))) return { mean: NaN, median: NaN, std: NaN, min: NaN, max: NaN, n };
  const sorted = [...values].sort((a, b) => a - b);
  const m = mean(values);
  let ss = 0;
  for (const v of values) ss += (v - m) ** 2;
  const mid = Math.floor(n / 2);
  return {
    mean: m,
    median: n % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2,
    std: n > 1 ? Math.sqrt(ss / (n - 1)) : NaN,
    min: sorted[0]!,
    max: sorted[n - 1]!,
    n,
  };
}
