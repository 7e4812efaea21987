/**
 * What a training run refuses before its first step: bad options, a folder that is not a run's (or is another
 * kind of run's), items without an auxiliary target the method needs, images that cannot be read.
 */
import { rmSync, readdirSync } from 'node:fs';
import { type AuxiliaryTarget, type Method } from '../methods/method.js';
import { imagePath, type Dataset } from '../data/datasets.js';
import { type Split } from '../data/splits.js';
import { findUnreadableImages, listUnreadable, type UnreadableImage } from '../data/check.js';
import { checkRunSettings } from '../graph/settings.js';
import { readUnreadable, writeUnreadable } from './batches.js';
import type { TrainOptions } from './options.js';

/** Library callers get what the command line's parsers would have refused, before any work starts (the method's options are checked by its schema). */
export function checkTrainOptions(opts: TrainOptions): void {
  const wholeAtLeast = (name: string, v: unknown, min: number): void => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)
      throw new RangeError(`train: ${name} must be a whole number ≥ ${min}, not ${String(v)}`);
  };
  if (opts.limit !== undefined) wholeAtLeast('limit', opts.limit, 1);
  if (opts.seed !== undefined) wholeAtLeast('seed', opts.seed, 0);
  const m: unknown = opts.methodOptions;
  if (m !== undefined && (typeof m !== 'object' || m === null || Array.isArray(m)))
    throw new TypeError(`train: methodOptions must be an object of the method's options; got ${JSON.stringify(m)}`);
  // the device (one of DEVICE_TYPES, its provider working here) and threads, as createMetric and the command line check
  // them (the batch size is a method option, which the method's schema checks)
  checkRunSettings('train', { device: opts.device, threads: opts.threads });
}

/** What a training run writes in its folder (`train`): a folder holding one of these is a run's. */
const RUN_FILES = ['state.json', 'train.jsonl', 'checkpoint.json', 'result.json', 'unreadable.json'];
/** What a multi-round run writes in its folder (`trainRounds`), besides its round-N folders. */
const ROUNDS_FILES = ['rounds.json'];

/**
 * Refuses an --out folder that holds files but is not a run of this kind: one with other files and no run (a run
 * writes and deletes files there, state-epoch*.safetensors among them, and must not mix them with someone else's),
 * or the folder of a multi-round run given to a single run, or the other way round.
 */
export function checkRunFolder(out: string, kind: 'run' | 'rounds'): void {
  let entries: string[];
  try {
    entries = readdirSync(out).filter((e) => e !== '.lock');
  } catch {
    return; // not there yet (or not a folder: checkWritableFolder says so)
  }
  if (entries.length === 0) return;
  const single = entries.some((e) => RUN_FILES.includes(e));
  const rounds = entries.some((e) => ROUNDS_FILES.includes(e) || /^round-\d+$/.test(e));
  if (kind === 'run' ? single : rounds) return;
  if (kind === 'run' && rounds)
    throw new Error(`${out}: the folder of a multi-round run (round-0, …): give the same --rounds to resume it, or another --out`);
  if (kind === 'rounds' && single)
    throw new Error(`${out}: the folder of a single training run: give it without --rounds to resume it, or another --out`);
  const shown = entries.sort().slice(0, 3).join(', ');
  throw new Error(
    `${out}: a folder that holds other files (${shown}${entries.length > 3 ? `, and ${entries.length - 3} more` : ''}) and no training run; give --out a new or empty folder, or the folder of the run to resume`,
  );
}

/** Refuses, before the first step, training items that lack an auxiliary target the method cannot do without. */
export function checkAuxiliaryTargets(
  dataset: string,
  method: Method,
  auxiliary: readonly AuxiliaryTarget[],
  ds: Dataset,
  train: readonly number[],
): void {
  for (const t of auxiliary) {
    if (t.missing.kind !== 'refuse') continue;
    const lacking = train.filter((i) => t.read(ds.items[i]!, ds.info) === undefined).map((i) => ds.items[i]!.image);
    if (lacking.length === 0) continue;
    const first = lacking.slice(0, 3).join(', ');
    throw new Error(
      `${dataset}: ${lacking.length} training image(s) have no ${t.name} score (${first}${lacking.length > 3 ? ', …' : ''}); ${method.info.name}: ${t.missing.why}`,
    );
  }
}

/**
 * Checks every image the run reads (training, validation and test sides) before the first step; files
 * that failed in an earlier run of this folder are decoded in full. Throws with the list, or with
 * `skip` returns them by item index; records them in `listPath` either way.
 */
export async function checkRunImages(ds: Dataset, split: Split, listPath: string, skip: boolean): Promise<Map<number, UnreadableImage>> {
  const used = [...new Set([...split.train, ...split.val, ...split.test])].sort((a, b) => a - b);
  const files = used.map((i) => imagePath(ds, ds.items[i]!));
  const before = readUnreadable(listPath);
  const found = await findUnreadableImages(files, { decodeFully: new Set(before.map((u) => u.file)) });
  if (found.length === 0) {
    rmSync(listPath, { force: true });
    return new Map();
  }
  writeUnreadable(listPath, found);
  if (!skip) {
    throw new Error(
      `${found.length} of the ${files.length} images of this run cannot be read:\n${listUnreadable(found)}\n` +
        `Replace or remove ${found.length > 1 ? 'them' : 'it'}, or pass skipUnreadable (--skip-unreadable) to train without ${found.length > 1 ? 'them' : 'it'}` +
        `${found.length > 20 ? `; all are listed in ${listPath}` : ''}.`,
    );
  }
  const index = new Map(used.map((i, k) => [files[k]!, i]));
  return new Map(found.map((u) => [index.get(u.file)!, u]));
}
