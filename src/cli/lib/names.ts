/** Checks of names given on the command line, so that a typo is bad usage (exit 2) with the choices listed. */
import { listDatasets } from '../../data/datasets.js';
import { UsageError } from '../io.js';

/** A method's name, or (for scoring and evaluation) the name of a pretrained set-up, which stands for its method. */
export async function checkMethod(name: string, need?: 'trainable'): Promise<{ defaultModel: string }> {
  const { listMetrics, findPretrained, PRETRAINED } = await import('../../methods/index.js');
  const all = listMetrics();
  const pretrained = need === undefined ? findPretrained(name) : undefined;
  const info = all.find((m) => m.name === (pretrained?.method ?? name));
  if (!info) {
    const names = need === undefined ? [...new Set([...all.map((m) => m.name), ...PRETRAINED.map((p) => p.name)])] : all.map((m) => m.name);
    throw new UsageError(`unknown method '${name}'; choose from ${names.join(', ')}`);
  }
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
