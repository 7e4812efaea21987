/**
 * Checkpoints: the trained tensors only (safetensors) and a JSON description beside them (method, its
 * options, where the backbone came from and a hash of its weights, dataset, split, seed, epoch, metrics,
 * and the sha256 of the tensor file). Both are written atomically, tensors first, so the JSON never names
 * tensors that are not on disk; the tensors are checked against that sha256 whenever they are loaded.
 */
import { closeSync, existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../clip/safetensors.js';
import { type ParamSet } from '../prompts/context.js';
import type { BackboneSource } from './graphs.js';
import type { SplitRecord } from '../data/splits.js';
import type { DatasetColumns } from '../data/datasets.js';
import { openRegularFile, readRegularText, writeFileAtomic } from '../util/fs.js';
import { fileSha256Sync } from '../util/hash.js';

export const CHECKPOINT_FORMAT = 'promptiqa-checkpoint/2';

/** A description larger than this is not a checkpoint's (they are a few kilobytes): refuse before parsing. */
const MAX_META_BYTES = 16 << 20;

/** The backbone as a checkpoint records it: where it came from (not as typed) and the sha256 of its weights. */
export type CheckpointBackbone = BackboneSource & { id: string };

export interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  method: string;
  options: Record<string, unknown>;
  backbone: CheckpointBackbone;
  /** the training set: registry name, target, and the label file when one was given */
  dataset?: { name: string; target: string; labelFile?: string; columns?: DatasetColumns };
  /** the run's split settings and digests, so that `eval --split test` rebuilds exactly its test side */
  split?: SplitRecord;
  seed: number;
  epoch: number;
  metrics: Record<string, number>;
  /** the sha256 of the tensor file beside this description (`<base>.safetensors`) */
  tensors: { sha256: string };
}

/** `<dir>/checkpoint`, or the path without its .json / .safetensors extension. */
export function checkpointBase(path: string): string {
  if (existsSync(path) && statSync(path).isDirectory()) return join(path, 'checkpoint');
  return path.replace(/\.(json|safetensors)$/, '');
}

/** Why there is no checkpoint at `path`: it does not exist, it is the folder of several rounds (naming one), or it holds none. */
function missingCheckpoint(path: string, base: string): string {
  if (!existsSync(path) && !existsSync(`${base}.json`))
    return `${path}: does not exist (give the --out folder of \`promptiqa train\`, or the checkpoint.json it wrote)`;
  if (statSync(path).isDirectory()) {
    const rounds = readdirSync(path)
      .filter((e) => /^round-\d+$/.test(e) && existsSync(join(path, e, 'checkpoint.json')))
      .sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)));
    if (rounds.length > 0)
      return `${path}: the folder of a ${rounds.length}-round run, whose checkpoints are in its round folders (${rounds.length > 3 ? `${rounds.slice(0, 3).join(', ')}, …` : rounds.join(', ')}): give one of them, e.g. ${join(path, rounds[0]!)}`;
  }
  return `${path}: no checkpoint here (expected ${base}.json and ${base}.safetensors)`;
}

/** One line naming a recorded backbone: the repo at its commit, or the folder. */
export function describeBackbone(b: BackboneSource): string {
  return 'repo' in b ? `${b.repo} at revision ${b.revision}` : b.path;
}

export function saveCheckpoint(base: string, params: ParamSet, meta: Omit<CheckpointMeta, 'format' | 'tensors'>): void {
  const file = `${base}.safetensors`;
  writeSafetensors(file, Object.fromEntries(params), { format: CHECKPOINT_FORMAT, method: meta.method, epoch: String(meta.epoch) });
  const full: CheckpointMeta = { format: CHECKPOINT_FORMAT, ...meta, tensors: { sha256: fileSha256Sync(file) } };
  writeFileAtomic(`${base}.json`, JSON.stringify(full, null, 2) + '\n');
}

/** The JSON description of a checkpoint, without reading its tensors. */
export function loadCheckpointMeta(path: string): { base: string; meta: CheckpointMeta } {
  const base = checkpointBase(path);
  const json = `${base}.json`;
  if (!existsSync(json)) throw new Error(missingCheckpoint(path, base));
  // a regular file of at most MAX_META_BYTES (a FIFO or device is refused without blocking), else the error names it
  const text = readRegularText(json, 'checkpoint description', MAX_META_BYTES);
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(text) as CheckpointMeta;
  } catch (err) {
    throw new Error(`${json}: not a readable checkpoint description (${(err as Error).message})`);
  }
  if (typeof meta !== 'object' || meta === null) throw new Error(`${json}: not a promptiqa checkpoint description`);
  if ((meta.format as string) === 'promptiqa-checkpoint/1') {
    throw new Error(
      `${json}: written by an earlier promptiqa (format promptiqa-checkpoint/1), which recorded neither the tensors' hash nor the full split; train it again`,
    );
  }
  const format: unknown = meta.format;
  if (format !== CHECKPOINT_FORMAT)
    throw new Error(`${json}: not a promptiqa checkpoint (format ${JSON.stringify(format)}; expected ${CHECKPOINT_FORMAT})`);
  const problem = describeProblem(meta);
  if (problem) throw new Error(`${json}: ${problem}`);
  return { base, meta };
}

/** The description and the tensors, after checking the tensor file's sha256 against the description. */
export function loadCheckpoint(path: string): { base: string; meta: CheckpointMeta; params: ParamSet } {
  const { base, meta } = loadCheckpointMeta(path);
  const file = `${base}.safetensors`;
  if (!existsSync(file)) throw new Error(`${file}: missing (${base}.json names it as its tensors)`);
  closeSync(openRegularFile(file, 'checkpoint tensors').fd); // hashed whole next: a FIFO or device would never end
  const sha = fileSha256Sync(file);
  if (sha !== meta.tensors.sha256) {
    throw new Error(`${file}: corrupted or replaced: its sha256 is ${sha}, but ${base}.json records ${meta.tensors.sha256}`);
  }
  const { tensors, metadata } = readSafetensors(file);
  if (metadata.method !== meta.method || metadata.epoch !== String(meta.epoch)) {
    throw new Error(`${file} does not belong to ${base}.json (epoch ${metadata.epoch} vs ${meta.epoch})`);
  }
  return { base, meta, params: tensors };
}

/** What is missing or mistyped in a description that the loaders rely on, or undefined. */
function describeProblem(meta: CheckpointMeta): string | undefined {
  if (typeof meta.method !== 'string') return 'no method';
  if (typeof meta.options !== 'object' || meta.options === null) return 'no options';
  const b = meta.backbone as Partial<{ id: string; repo: string; revision: string; path: string }> | undefined;
  if (!b || typeof b.id !== 'string' || !(typeof b.path === 'string' || (typeof b.repo === 'string' && typeof b.revision === 'string'))) {
    return "no backbone (a repo and revision, or a path, and the weights' id)";
  }
  if (!meta.tensors || typeof meta.tensors.sha256 !== 'string') return 'no sha256 of its tensors';
  return undefined;
}
