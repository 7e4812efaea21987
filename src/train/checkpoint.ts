/**
 * Checkpoints: the trained tensors only (safetensors) and a JSON description beside them (method, its
 * options, the backbone's id and a hash of its weights, dataset, split, seed, epoch, metrics). Both are
 * written atomically, tensors first, so the JSON never names tensors that are not on disk.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../clip/safetensors.js';
import { type ParamSet } from '../prompts/context.js';
import { writeFileAtomic } from '../util/fs.js';

export const CHECKPOINT_FORMAT = 'promptiqa-checkpoint/1';

export interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  method: string;
  options: Record<string, unknown>;
  backbone: { model: string; id: string };
  dataset?: { name: string; target: string };
  split?: { by: string; ratios: number[]; seed: number };
  seed: number;
  epoch: number;
  metrics: Record<string, number>;
  /** sha256 of the tensor file, to notice a mismatched pair */
  tensors: string;
}

/** `<dir>/checkpoint`, or the path without its .json / .safetensors extension. */
export function checkpointBase(path: string): string {
  if (existsSync(path) && statSync(path).isDirectory()) return join(path, 'checkpoint');
  return path.replace(/\.(json|safetensors)$/, '');
}

export function saveCheckpoint(base: string, params: ParamSet, meta: Omit<CheckpointMeta, 'format' | 'tensors'>): void {
  const tensors = Object.fromEntries(params);
  writeSafetensors(`${base}.safetensors`, tensors, { format: CHECKPOINT_FORMAT, method: meta.method, epoch: String(meta.epoch) });
  const full: CheckpointMeta = { format: CHECKPOINT_FORMAT, ...meta, tensors: `${meta.method}@epoch${meta.epoch}` };
  writeFileAtomic(`${base}.json`, JSON.stringify(full, null, 2) + '\n');
}

/** The JSON description of a checkpoint, without reading its tensors. */
export function loadCheckpointMeta(path: string): { base: string; meta: CheckpointMeta } {
  const base = checkpointBase(path);
  if (!existsSync(`${base}.json`)) throw new Error(`${path}: no checkpoint here (expected ${base}.json and ${base}.safetensors)`);
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as CheckpointMeta;
  } catch (err) {
    throw new Error(`${base}.json: not a readable checkpoint description (${(err as Error).message})`);
  }
  if (meta.format !== CHECKPOINT_FORMAT) throw new Error(`${base}.json: not a promptiqa checkpoint (format ${String(meta.format)})`);
  return { base, meta };
}

export function loadCheckpoint(path: string): { meta: CheckpointMeta; params: ParamSet } {
  const { base, meta } = loadCheckpointMeta(path);
  const { tensors, metadata } = readSafetensors(`${base}.safetensors`);
  if (metadata.method !== meta.method || metadata.epoch !== String(meta.epoch)) {
    throw new Error(`${base}.safetensors does not belong to ${base}.json (epoch ${metadata.epoch} vs ${meta.epoch})`);
  }
  return { meta, params: tensors };
}
