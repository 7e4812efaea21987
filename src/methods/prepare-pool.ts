/**
 * The preparation pool: worker threads (piscina) that decode images and make their views (the exact resize and
 * normalisation, some 13 ms per 512-px image in JavaScript), so that the main thread only feeds the graph. Used
 * by a Metric's `score`, `scoreBatch` and `scoreFiles` when it has decoding threads (`decodeThreads`).
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { Piscina } from 'piscina';
import { ImageDecodeError, SharedExclusiveLock, type DecodeOptions } from '../data/image.js';
import type { RgbImage } from '../data/rgb.js';
import { ImageRefusedError, type View, type ViewRule } from './views.js';
import type { PrepareFailure, PrepareInput, PrepareResult, PrepareTask } from './prepare-worker.js';
import type { Provider } from '../graph/runtime.js';

/** The most decoding threads a metric takes. */
export const MAX_DECODE_THREADS = 64;

/**
 * Decoding threads by default: on the CPU, where ONNX Runtime's own threads take the cores, one per 8 cores, 1 to 2
 * (preparing an image costs a fraction of running it through the CLIP); on a GPU, whose graph waits on the
 * preparation, all cores but one, at most 8.
 */
export function defaultDecodeThreads(provider: Provider = 'cpu', cores = availableParallelism()): number {
  if (provider === 'cpu') return Math.min(2, Math.max(1, Math.floor(cores / 8)));
  return Math.min(8, Math.max(1, cores - 1));
}

/** `decodeThreads` checked: an integer from 0 (decode in the main thread) to MAX_DECODE_THREADS. */
export function checkDecodeThreads(n: unknown, what = 'decodeThreads'): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > MAX_DECODE_THREADS) {
    throw new RangeError(`${what} must be an integer from 0 (decode in the main thread) to ${MAX_DECODE_THREADS}, not ${String(n)}`);
  }
  return n;
}

/** The working folder at start, which a relative preload (`--import ./helper.ts`) was found from. */
const START_DIR = process.cwd();

/**
 * The worker module beside this one: compiled JavaScript in a build, TypeScript when this file runs from source
 * (through tsx, whose loader the workers then need too).
 */
function workerModule(): { filename: string; execArgv?: string[]; env?: NodeJS.ProcessEnv } {
  const here = import.meta.url;
  if (!/\.[cm]?ts$/.test(new URL(here).pathname)) return { filename: new URL('./prepare-worker.js', here).href };
  // a worker thread takes tsx's require hook but not its import hooks (Node 20): the worker module and the
  // TypeScript files preloaded with --import (a test's helpers) are required
  const execArgv: string[] = [];
  const given = process.execArgv;
  for (let i = 0; i < given.length; i++) {
    const a = given[i]!;
    const preload = a === '--import' ? given[++i] : a.startsWith('--import=') ? a.slice('--import='.length) : undefined;
    // tsx itself is the require hook added below; a relative path is from the folder the process started in
    const path = preload?.startsWith('.') ? resolve(START_DIR, preload) : preload;
    if (path === undefined) execArgv.push(a);
    else if (/^tsx(\/|$)/.test(path)) continue;
    else execArgv.push(/\.[cm]?ts$/.test(path) ? '--require' : '--import', path);
  }
  // preloads are required before anything is imported: tsx's require hook goes first
  execArgv.unshift('--require', createRequire(import.meta.url).resolve('tsx/cjs'));
  // no V8 coverage from these workers: their copies of the sources are tsx's CommonJS transform, which a coverage
  // tool (c8) would merge by URL with the main thread's ESM transform of the same files, garbling both
  const { NODE_V8_COVERAGE: _coverage, ...env } = process.env;
  return { filename: new URL('./prepare-worker.ts', here).href, execArgv, env };
}

/** What a prepared image is: its views (or, for `decodeOnly`, the decoded image), or the error that is its result. */
export type Prepared<T> = T | Error;

/**
 * A failure that is not the image's (making its views failed otherwise than by the method's refusal, or the pool
 * ended): the metric throws it, as it throws the same failure in the main thread.
 */
export class PrepareFault extends Error {}

function errorOf(f: PrepareFailure): Error {
  if (f.kind === 'decode') return new ImageDecodeError(f.file, f.problem);
  if (f.kind === 'refused') return new ImageRefusedError(f.message);
  return f.stage === 'decode' ? new Error(f.message) : new PrepareFault(f.message);
}

export class PreparePool {
  private pool: Piscina<PrepareTask, PrepareResult> | undefined;
  /**
   * libvips keeps one error buffer for the process: a failed decode is run again alone, with no other task in
   * the pool (as `decodeImage` does within a thread), so that its message is its own.
   */
  private readonly lock = new SharedExclusiveLock();

  /**
   * `rule`: how the scorer makes views, or null where the workers cannot (a method registered by the caller, with
   * views of its own): then they only decode.
   */
  constructor(
    readonly threads: number,
    private readonly rule: ViewRule | null,
    private readonly decode: DecodeOptions,
  ) {}

  private workers(): Piscina<PrepareTask, PrepareResult> {
    this.pool ??= new Piscina<PrepareTask, PrepareResult>({
      ...workerModule(),
      minThreads: this.threads,
      maxThreads: this.threads,
      // the task queue is the caller's: a batch and the one after it at most
      maxQueue: Infinity,
      idleTimeout: Infinity,
    });
    return this.pool;
  }

  /** A file, bytes or a decoded image → its views, or the error that is that image's result. */
  async views(input: PrepareInput): Promise<Prepared<View[]>> {
    const r = await this.run(input, this.rule);
    return 'views' in r ? r.views : 'image' in r ? new Error('internal: views asked, an image given') : r;
  }

  /** A file or bytes → the decoded image, or the error that is that image's result (for views made by the caller). */
  async image(input: PrepareInput): Promise<Prepared<RgbImage>> {
    const r = await this.run(input, null);
    return 'image' in r ? r.image : 'views' in r ? new Error('internal: an image asked, views given') : r;
  }

  get makesViews(): boolean {
    return this.rule !== null;
  }

  private async run(input: PrepareInput, rule: ViewRule | null): Promise<{ views: View[] } | { image: RgbImage } | Error> {
    const task: PrepareTask = { input, decode: this.decode, rule };
    const pool = this.workers();
    // a pool ended meanwhile (the metric closed) fails the task, which the caller finds closed
    const once = (): Promise<PrepareResult> =>
      pool.run(task).catch((err: unknown) => ({
        failure: { kind: 'other', stage: 'views', message: err instanceof Error ? err.message : String(err) },
      }));
    let r = await this.lock.shared(once);
    if ('failure' in r && r.failure.kind === 'decode') r = await this.lock.exclusive(once);
    return 'failure' in r ? errorOf(r.failure) : r;
  }

  /** Ends the worker threads (waiting for none of their tasks); the pool may not be used after. */
  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    if (pool) await pool.destroy();
  }
}
