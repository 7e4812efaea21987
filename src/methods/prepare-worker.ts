/**
 * The worker thread of the preparation pool (src/methods/prepare-pool.ts): decodes an image (a file it reads, or
 * bytes) and makes its views with the scorer's rule (`viewsByRule`), the same code the main thread runs, so the
 * views are the same bit for bit. The views' buffers are moved back, not copied. A failure is returned as data
 * (which error, with the file and the problem), for the main thread to raise it as the error it is.
 */
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { decodeImage, ImageDecodeError, type DecodeOptions } from '../data/image.js';
import type { RgbImage } from '../data/rgb.js';
import { getMethod } from './registry.js';
import { ImageRefusedError, type View, type ViewRule, viewsByRule } from './views.js';

export type PrepareInput = { path: string } | { bytes: Uint8Array } | { image: RgbImage };

export interface PrepareTask {
  input: PrepareInput;
  decode: DecodeOptions;
  /** how to make the views; null: decode only (the main thread makes them, for a method this thread does not know) */
  rule: ViewRule | null;
}

export type PrepareFailure =
  | { kind: 'decode'; file: string; problem: string }
  | { kind: 'refused'; message: string }
  /** anything else: in decoding, that image's error as any decoding failure is; in making views, a fault thrown */
  | { kind: 'other'; stage: 'decode' | 'views'; message: string };

export type PrepareResult = { views: View[] } | { image: RgbImage } | { failure: PrepareFailure };

function failureOf(err: unknown, stage: 'decode' | 'views'): PrepareFailure {
  if (err instanceof ImageDecodeError) return { kind: 'decode', file: err.file, problem: err.problem };
  if (err instanceof ImageRefusedError) return { kind: 'refused', message: err.message };
  return { kind: 'other', stage, message: err instanceof Error ? err.message : String(err) };
}

/** The result with its buffers listed for moving (each once; a buffer views share is moved once and stays shared). */
function moved(result: PrepareResult, arrays: ArrayBufferView[]): unknown {
  const buffers = [...new Set(arrays.map((a) => a.buffer))].filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);
  return move({ [transferableSymbol]: buffers, [valueSymbol]: result });
}

export default async function prepare(task: PrepareTask): Promise<unknown> {
  const { input } = task;
  let image: RgbImage;
  try {
    image = 'image' in input ? input.image : await decodeImage('path' in input ? input.path : input.bytes, task.decode);
  } catch (err) {
    return { failure: failureOf(err, 'decode') };
  }
  if (task.rule === null) return moved({ image }, [image.data]);
  try {
    const rule = task.rule;
    const views = viewsByRule(rule, image, rule.ownViews ? (...a) => getMethod(rule.method).views!(...a) : undefined);
    return moved(
      { views },
      views.map((v) => v.data),
    );
  } catch (err) {
    return { failure: failureOf(err, 'views') };
  }
}
