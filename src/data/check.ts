/**
 * The check of a set of image files before long work (training) starts, so that one unreadable file is
 * named in the first seconds rather than after an epoch, and all of them at once.
 */
import { decodeImage, ImageDecodeError, readImageHeader, type DecodeOptions } from './image.js';

export interface UnreadableImage {
  file: string;
  /** What is wrong, without the file name. */
  problem: string;
}

export interface CheckImagesOptions extends Pick<DecodeOptions, 'maxPixels'> {
  /** Files to decode in full rather than by header: e.g. those that failed in an earlier run. */
  decodeFully?: ReadonlySet<string>;
  /** Files read at once. Default 8. */
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * The files that cannot be read, in the order given. Each is checked by its header and end marker
 * (`readImageHeader`: this finds missing, empty, truncated, non-image and oversized files in about a
 * millisecond each); corrupt data inside a file is only found by decoding it, which `decodeFully` asks for.
 */
export async function findUnreadableImages(files: readonly string[], opts: CheckImagesOptions = {}): Promise<UnreadableImage[]> {
  const concurrency = Math.max(1, Math.floor(opts.concurrency ?? 8));
  const problems = new Array<string | undefined>(files.length);
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < files.length; i = next++) {
      const file = files[i]!;
      try {
        if (opts.decodeFully?.has(file)) await decodeImage(file, { maxPixels: opts.maxPixels });
        else await readImageHeader(file, { maxPixels: opts.maxPixels });
      } catch (err) {
        problems[i] = err instanceof ImageDecodeError ? err.problem : String(err);
      }
      opts.onProgress?.(++done, files.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, files.length) }, worker));
  return files.flatMap((file, i) => (problems[i] === undefined ? [] : [{ file, problem: problems[i] }]));
}

/** `file: problem` lines, indented, the first `max` of them and a count of the rest. */
export function listUnreadable(list: readonly UnreadableImage[], max = 20): string {
  const lines = list.slice(0, max).map((u) => `  ${u.file}: ${u.problem}`);
  if (list.length > max) lines.push(`  ... and ${list.length - max} more`);
  return lines.join('\n');
}
