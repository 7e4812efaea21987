/**
 * How graphs run, as a user gives it: the device, the CPU threads and the batch size, checked in one place, which
 * the library (`createMetric`, `evaluate`, `train`) and the command line's parsers both call, so that a value one
 * refuses the other refuses too, with the same words.
 */
import { availableParallelism } from 'node:os';
import { type Provider, DeviceUnavailableError, checkDeviceName, resolveDevice } from './device.js';

/**
 * The most images scored at once. Beyond this a batch only costs memory (4096 images of 224² px are 2.4 GB of pixels
 * alone), and a typo such as --batch 100000 would exhaust it.
 */
export const MAX_BATCH = 4096;

/** Threads beyond this many per core are refused: they only wait for each other (1000 threads on 2 cores took 80× longer than 2). */
export const MAX_THREADS_PER_CORE = 4;

const shown = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v)));

/** Refuses a batch size that is not a whole number in [1, MAX_BATCH], naming it. */
export function checkBatchSize(batchSize: unknown, what = 'batch size'): number {
  if (typeof batchSize !== 'number' || !Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > MAX_BATCH) {
    throw new RangeError(
      `${what} ${shown(batchSize)} is not a whole number from 1 to ${MAX_BATCH}${typeof batchSize === 'number' && batchSize > MAX_BATCH ? ' (images scored at once; more only costs memory)' : ''}`,
    );
  }
  return batchSize;
}

/**
 * A thread count: a whole number from 1 to MAX_THREADS_PER_CORE × the cores here (refused above it), with a warning
 * above the core count (the threads then share cores, and ONNX Runtime's wait for each other at every parallel step).
 */
export function checkThreads(threads: unknown, what = 'threads', cores = availableParallelism()): { threads: number; warning?: string } {
  const max = MAX_THREADS_PER_CORE * cores;
  if (typeof threads !== 'number' || !Number.isSafeInteger(threads) || threads < 1 || threads > max) {
    const above = typeof threads === 'number' && threads > max;
    throw new RangeError(
      `${what} ${shown(threads)} is not a whole number from 1 to ${max}${above ? ` (${MAX_THREADS_PER_CORE} × the ${cores} core(s) here: more threads only wait for each other)` : ''}`,
    );
  }
  return threads > cores
    ? {
        threads,
        warning: `${what} ${threads} is more than the ${cores} core(s) here: the threads share cores and wait for each other, which is slower than ${cores}`,
      }
    : { threads };
}

/**
 * The settings a library function was given for running its graphs, checked before any work: the device (a name of
 * DEVICE_TYPES whose provider works here), the threads and the batch size. `where` names the function in errors.
 */
export function checkRunSettings(
  where: string,
  given: { device?: unknown; threads?: unknown; batchSize?: unknown },
): { provider: Provider; threads?: number; batchSize?: number; warnings: string[]; note?: string } {
  const warnings: string[] = [];
  const provider = given.device === undefined ? 'cpu' : (checkDeviceName(given.device, `${where}: device`, false) as Provider);
  let note: string | undefined;
  if (provider !== 'cpu') {
    try {
      note = resolveDevice(provider).note;
    } catch (err) {
      if (err instanceof DeviceUnavailableError) throw new DeviceUnavailableError(`${where}: device ${provider}: ${err.message}`);
      throw err;
    }
  }
  let threads: number | undefined;
  if (given.threads !== undefined) {
    const t = checkThreads(given.threads, `${where}: threads`);
    threads = t.threads;
    if (t.warning) warnings.push(t.warning);
  }
  const batchSize = given.batchSize === undefined ? undefined : checkBatchSize(given.batchSize, `${where}: batchSize`);
  return {
    provider,
    ...(threads !== undefined ? { threads } : {}),
    ...(batchSize !== undefined ? { batchSize } : {}),
    warnings,
    ...(note ? { note } : {}),
  };
}
