/**
 * Batching across requests: the images of concurrent requests wait together for at most `waitMs` (or until a
 * batch is full), then go through the metric's `scoreBatch` as one batch. Scores are batch-invariant (an image
 * gets the same score whatever batch it is in), so how requests happen to be grouped never changes an answer.
 * The queue is bounded: a request whose images do not fit is refused at once (`QueueFullError`, a 503), and
 * a request that goes away (its client disconnected, its time ran out) takes its waiting images out.
 */
import type { Metric } from '../methods/metric.js';
import { ImageDecodeError } from '../data/image.js';
import { ImageRefusedError } from '../methods/views.js';

/** One image's outcome: its score, or why it has none (a sentence for the client, no stack, no server path). */
export type ImageOutcome = { score: number } | { error: string };

export class QueueFullError extends Error {
  constructor(readonly depth: number) {
    super(`the server is busy (${depth} image(s) waiting); try again shortly`);
    this.name = 'QueueFullError';
  }
}

/** A request stopped waiting (client gone, time out): its images that had not started are dropped. */
export class CancelledError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'CancelledError';
  }
}

interface Job {
  bytes: Uint8Array;
  enqueued: number;
  done: (outcome: ImageOutcome) => void;
  fail: (err: Error) => void;
  taken: boolean;
}

export interface BatcherOptions {
  /** images per scoreBatch call (the metric's batch size) */
  batchSize: number;
  /** how long the first waiting image waits for others before a partial batch runs */
  waitMs: number;
  /** images waiting (not yet in a running batch) at most; beyond, a request is refused */
  maxQueue: number;
  /** batches at once: 2 lets one decode while the other runs the graph */
  maxInFlight?: number;
  /** told each batch's size when it starts, and the queue depth whenever it changes */
  onBatch?: (size: number) => void;
  onDepth?: (depth: number) => void;
  /** told of an error no image can be blamed for (logged by the server; the client gets a plain sentence) */
  onInternalError?: (err: unknown) => void;
}

/** The sentence a client gets for an image that failed. */
export function imageProblem(err: unknown): string | undefined {
  if (err instanceof ImageDecodeError) return err.problem;
  if (err instanceof ImageRefusedError) return err.message;
  return undefined;
}

export class Batcher {
  private pending: Job[] = [];
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly maxInFlight: number;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly metric: Metric,
    private readonly opts: BatcherOptions,
  ) {
    this.maxInFlight = opts.maxInFlight ?? 2;
  }

  /** Images waiting to start. */
  get depth(): number {
    return this.pending.length;
  }

  /** Whether `n` more images fit in the queue now. */
  fits(n: number): boolean {
    return this.pending.length + n <= this.opts.maxQueue;
  }

  /**
   * Scores `images` among the batches, all or none admitted: throws QueueFullError when they do not fit. `signal`
   * aborting takes out those not yet started (the promise then rejects with CancelledError).
   */
  score(images: readonly Uint8Array[], signal?: AbortSignal): Promise<ImageOutcome[]> {
    if (images.length === 0) return Promise.resolve([]);
    if (!this.fits(images.length)) throw new QueueFullError(this.pending.length);
    if (signal?.aborted) return Promise.reject(new CancelledError(String(signal.reason)));
    const now = performance.now();
    const jobs: Job[] = [];
    const all = Promise.all(
      images.map(
        (bytes) =>
          new Promise<ImageOutcome>((done, fail) => {
            jobs.push({ bytes, enqueued: now, done, fail, taken: false });
          }),
      ),
    );
    this.pending.push(...jobs);
    this.opts.onDepth?.(this.pending.length);
    if (signal) {
      const onAbort = (): void => {
        const mine = new Set(jobs.filter((j) => !j.taken));
        if (mine.size === 0) return;
        this.pending = this.pending.filter((j) => !mine.has(j));
        this.opts.onDepth?.(this.pending.length);
        const why = new CancelledError(signal.reason instanceof Error ? signal.reason.message : String(signal.reason));
        for (const j of mine) j.fail(why);
        this.pump();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      void all.then(
        () => signal.removeEventListener('abort', onAbort),
        () => signal.removeEventListener('abort', onAbort),
      );
    }
    this.pump();
    return all;
  }

  /** Resolves once nothing waits and no batch runs. */
  idle(): Promise<void> {
    if (this.running === 0 && this.pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Starts what may start: a full batch at once; a partial one when its oldest image has waited waitMs and no batch
   * is running (behind a running batch it would only wait for the graph, so it waits to fill instead).
   */
  private pump(): void {
    while (this.running < this.maxInFlight && this.pending.length > 0) {
      const waited = performance.now() - this.pending[0]!.enqueued;
      if (this.pending.length < this.opts.batchSize && (waited < this.opts.waitMs || this.running > 0)) {
        if (this.running === 0) this.arm(this.opts.waitMs - waited);
        return;
      }
      const jobs = this.pending.splice(0, this.opts.batchSize);
      for (const j of jobs) j.taken = true;
      this.opts.onDepth?.(this.pending.length);
      this.running++;
      void this.run(jobs).finally(() => {
        this.running--;
        this.pump();
        if (this.running === 0 && this.pending.length === 0) {
          const waiters = this.idleWaiters;
          this.idleWaiters = [];
          for (const w of waiters) w();
        }
      });
    }
    if (this.pending.length === 0 && this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  private arm(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.pump();
      },
      Math.max(0, Math.ceil(ms)),
    );
  }

  /**
   * One batch. Should it fail (an image that decodes wrongly past the header check, one the method refuses), each
   * image is scored alone, so that the failure is that image's alone (the scores are the same either way).
   */
  private async run(jobs: Job[]): Promise<void> {
    this.opts.onBatch?.(jobs.length);
    try {
      const scores = await this.metric.scoreBatch(jobs.map((j) => j.bytes));
      jobs.forEach((j, i) => j.done({ score: scores[i]! }));
      return;
    } catch (err) {
      if (jobs.length === 1) {
        this.settleFailed(jobs[0]!, err);
        return;
      }
    }
    for (const j of jobs) {
      try {
        j.done({ score: await this.metric.score(j.bytes) });
      } catch (err) {
        this.settleFailed(j, err);
      }
    }
  }

  private settleFailed(job: Job, err: unknown): void {
    const problem = imageProblem(err);
    if (problem !== undefined) {
      job.done({ error: problem });
      return;
    }
    this.opts.onInternalError?.(err);
    job.done({ error: 'scoring failed on the server (see its log)' });
  }
}
