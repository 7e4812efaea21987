/** Checks of names given on the command line, so that a typo is bad usage (exit 2) with the choices listed. */
import { listDatasets } from '../../data/datasets.js';
import { UsageError } from '../io.js';

/** For scoring and evaluation: a method's name, or (without --model/--checkpoint) a pretrained set-up's. */
export async function checkMethodName(name: string, given: { model?: string; checkpoint?: string }): Promise<void> {
  const { resolveMethodName } = await import('../../methods/index.js');
  try {
    resolveMethodName(name, given);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** A method's name (to train, or to list its options). */
export async function checkMethod(name: string, need?: 'trainable'): Promise<{ defaultModel: string }> {
  const { listMetrics } = await import('../../methods/index.js');
  const all = listMetrics();
  const info = all.find((m) => m.name === name);
  if (!info) throw new UsageError(`unknown method '${name}'; choose from ${all.map((m) => m.name).join(', ')}`);
  if (need === 'trainable' && !info.trainable) {
    throw new UsageError(`method '${name}' is zero-shot: there is nothing to train; score or evaluate it directly`);
  }
  return info;
}

export function checkDataset(name: string): void {
  const all = listDatasets();
  if (!all.some((d) => d.name === name.toLowerCase())) {
    throw new UsageError(`unknown dataset '${name}'; choose from ${all.map((d) => d.name).join(', ')}`);
  }
}
