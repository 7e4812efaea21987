/**
 * A run's resumable state: the parameters, the optimiser's buffers and the epochs so far, written atomically at
 * every epoch's end under the run's identity (its key); a state written by another configuration is not resumed,
 * and the settings that differ are named.
 */
import { existsSync, rmSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { type ParamSet } from '../prompts/context.js';
import { type Optimizer, optimizerStateToSafetensors, optimizerStateFromSafetensors } from './optim.js';
import { readSafetensors, writeSafetensors } from '../clip/safetensors.js';
import { READ_LIMITS, readRegularText, writeFileAtomic } from '../util/fs.js';

export interface EpochRecord {
  epoch: number;
  loss: number;
  val: Record<string, number>;
  lr: number;
}

export interface State {
  epoch: number; // epochs completed
  bestEpoch: number;
  bestScore: number;
  history: EpochRecord[];
  steps: number;
}

export function saveState(base: string, runKey: string, params: ParamSet, state: State, optimizer: Optimizer): void {
  const { tensors, metadata } = optimizerStateToSafetensors(optimizer.state());
  const all = { ...Object.fromEntries([...params].map(([k, v]) => [`param.${k}`, v])), ...tensors };
  // the tensors file carries its epoch; the JSON written after it names that epoch
  const file = `${base}-epoch${state.epoch}.safetensors`;
  writeSafetensors(file, all, metadata);
  writeFileAtomic(`${base}.json`, JSON.stringify({ runKey, state, tensors: file }) + '\n');
  const dir = join(base, '..');
  for (const f of readdirSync(dir)) {
    const full = join(dir, f);
    if (f.startsWith('state-epoch') && full !== file) rmSync(full, { force: true });
  }
}

/**
 * The settings in which two run identities (`runKey`) differ, named as a user gives them: "epochs 3 ≠ 2" (now ≠ then).
 * The dataset's digests are said once, as its images or scores; the sides' sizes and digests, which follow from the
 * rest, only when nothing else differs.
 */
export function runKeyChanges(now: string, then: string): string[] {
  let a: unknown;
  let b: unknown;
  try {
    a = JSON.parse(now);
    b = JSON.parse(then);
  } catch {
    return [];
  }
  const flat = (v: unknown, path: string, out: Map<string, unknown>): Map<string, unknown> => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) flat(x, path ? `${path}.${k}` : k, out);
    } else out.set(path, v);
    return out;
  };
  const x = flat(a, '', new Map());
  const y = flat(b, '', new Map());
  const show = (v: unknown): string =>
    v === undefined ? 'unset' : Array.isArray(v) ? v.join(',') : typeof v === 'string' ? v : JSON.stringify(v);
  const named: Record<string, string> = {
    'split.by': 'split by',
    'split.ratios': 'ratios',
    'split.seed': 'seed',
    'split.round': 'round',
    'split.limit': 'limit',
    method: 'method',
    dataset: 'dataset',
    target: 'target',
    batch: 'batch',
  };
  const out: string[] = [];
  let images = false;
  let weights = false;
  let derived = false;
  for (const key of new Set([...x.keys(), ...y.keys()])) {
    const [p, q] = [x.get(key), y.get(key)];
    if (JSON.stringify(p) === JSON.stringify(q)) continue;
    if (key === 'batch' && x.get('o.batchSize') !== y.get('o.batchSize')) continue; // follows from batchSize
    if (key.startsWith('o.')) out.push(`${key.slice(2)} ${show(p)} ≠ ${show(q)}`);
    else if (named[key]) out.push(`${named[key]} ${show(p)} ≠ ${show(q)}`);
    else if (key === 'backbone') weights = true;
    else if (key.startsWith('split.dataset.')) images = true;
    else if (key.startsWith('split.'))
      derived = true; // the sides' sizes and digests follow from the rest
    else out.push(`${key} ${show(p)} ≠ ${show(q)}`);
  }
  if (weights) out.push('the model (other weights)');
  if (images) out.push("the dataset's images or scores");
  if (out.length === 0 && derived) out.push('the split');
  return out;
}

export function loadState(base: string, runKey: string): { params: ParamSet; state: State; optim: ReturnType<Optimizer['state']> } | null {
  if (!existsSync(`${base}.json`)) return null;
  let saved: { runKey: string; state: State; tensors: string };
  try {
    saved = JSON.parse(readRegularText(`${base}.json`, "run's saved state", READ_LIMITS.json)) as typeof saved;
  } catch (err) {
    throw new Error(`${base}.json: the run's saved state cannot be read (${(err as Error).message}); delete it to start the run again`);
  }
  if (saved.runKey !== runKey) {
    const changes = runKeyChanges(runKey, saved.runKey);
    throw new Error(
      `${base}.json belongs to a run with other settings${changes.length ? ` (now ≠ then: ${changes.join(', ')})` : ''}: give that run's settings to resume it, or use another --out (or delete the folder to start over)`,
    );
  }
  const { tensors, metadata } = readSafetensors(saved.tensors);
  const params: ParamSet = new Map();
  for (const [k, v] of tensors) if (k.startsWith('param.')) params.set(k.slice('param.'.length), v);
  return { params, state: saved.state, optim: optimizerStateFromSafetensors(tensors, metadata) };
}

/**
 * Keeps the log's records up to the resumed epoch: the steps of an interrupted epoch are run again after a
 * resume and must appear once. A torn last line (a kill mid-write) goes too.
 */
export function trimLog(path: string, epoch: number): void {
  if (!existsSync(path)) return;
  const kept = readRegularText(path, 'training log', READ_LIMITS.labels)
    .split('\n')
    .filter((line) => {
      try {
        const rec = JSON.parse(line) as { epoch?: unknown };
        return typeof rec.epoch !== 'number' || rec.epoch <= epoch;
      } catch {
        return false;
      }
    });
  writeFileAtomic(path, kept.map((l) => l + '\n').join(''));
}
