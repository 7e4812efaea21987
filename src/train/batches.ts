/**
 * The images a training run reads, a part at a time: the batches of an epoch and the images that validation
 * scores. A part's images decode (on libuv's threads) while the part before it is used, and are dropped once
 * it has been, so a run holds at most two parts' decoded images whatever the size of the dataset. Frozen
 * image features (a `'features'` method without augmentation) are computed once per image and kept: an
 * embedDim float array each. Images that fail to decode are left out or stop the run, as the run's options say.
 */
import { existsSync } from 'node:fs';
import { type AuxiliaryTarget } from '../methods/method.js';
import { type MethodSetup, type TrainBatch } from '../methods/graphs.js';
import { imageFeatureGraph } from '../clip/encoders.js';
import { trainView } from '../methods/views.js';
import { CompiledGraph, type RuntimeOptions } from '../graph/runtime.js';
import { imagePath, type Dataset } from '../data/datasets.js';
import { decodeImage, ImageDecodeError, type DecodeOptions } from '../data/image.js';
import type { RgbImage } from '../data/rgb.js';
import { listUnreadable, type UnreadableImage } from '../data/check.js';
import { READ_LIMITS, readRegularText, writeFileAtomic } from '../util/fs.js';
import { type Rng } from '../util/rng.js';

/** How a run treats an image that fails to decode: listed in `path`, then left out (`skip`, with a warning) or the run stops. */
export interface UnreadablePolicy {
  path: string;
  skip: boolean;
  emit: (e: { kind: 'warning'; message: string; warnings: string[] }) => void;
  /** where the run is kept, for the message that stops it */
  keptAt: () => string;
}

/** A training batch and the items it holds (those of its part that could be read). */
export interface Batch {
  idx: number[];
  batch: TrainBatch;
}

/**
 * A part being read: its items (those not left out when it started) and, once all are done, each one's
 * outcome. `settled` never rejects; an unexpected error is thrown where the part is used. `frozen`: every
 * item's features are kept, so nothing decodes.
 */
interface Part {
  idx: number[];
  frozen: boolean;
  settled: Promise<Array<PromiseSettledResult<RgbImage>>>;
}

/**
 * Batch assembly: the images of a batch decoded (the next batch's while this one trains), those that cannot
 * be read left out or refused, training views drawn (or frozen features computed once when nothing augments
 * them), and the quality and auxiliary targets read from the items.
 */
export class BatchSource {
  private readonly featureCache = new Map<number, Float32Array>();
  private readonly featureGraphs = new Map<number, CompiledGraph>();
  /** images of parts started and not yet done with (decoding, or decoded and in use) */
  private held = 0;
  private peakHeld = 0;

  constructor(
    private readonly ds: Dataset,
    private readonly setup: MethodSetup,
    private readonly auxiliary: readonly AuxiliaryTarget[],
    private readonly runtime: RuntimeOptions,
    /** images left out, by item index: found before the run, or failing to decode during it */
    readonly skipped: Map<number, UnreadableImage>,
    private readonly unreadable: UnreadablePolicy,
    /** how images are decoded (EXIF orientation) */
    private readonly decode: DecodeOptions = {},
  ) {}

  /** Decoded images held now (decoding, or decoded and not yet done with), and the most held at once so far. */
  get imagesHeld(): { now: number; peak: number } {
    return { now: this.held, peak: this.peakHeld };
  }

  /** The frozen features kept: how many images, and their floats in all. */
  get featuresKept(): { images: number; floats: number } {
    let floats = 0;
    for (const f of this.featureCache.values()) floats += f.length;
    return { images: this.featureCache.size, floats };
  }

  /** Without augmentation a frozen encoder's features of an image never change: each is computed once. */
  private get keepsFeatures(): boolean {
    return this.setup.method.imageInput === 'features' && this.setup.options.augment === 'none';
  }

  /** Starts reading the items `idx` not left out; `frozen` parts (every item's features kept) decode nothing. */
  private start(idx: readonly number[], useFeatures: boolean): Part {
    const keep = idx.filter((i) => !this.skipped.has(i));
    const frozen = useFeatures && this.keepsFeatures && keep.every((i) => this.featureCache.has(i));
    if (frozen) return { idx: keep, frozen, settled: Promise.resolve([]) };
    this.held += keep.length;
    this.peakHeld = Math.max(this.peakHeld, this.held);
    return {
      idx: keep,
      frozen,
      settled: Promise.allSettled(keep.map((i) => decodeImage(imagePath(this.ds, this.ds.items[i]!), this.decode))),
    };
  }

  /** Done with a part: its images are no longer held. */
  private done(part: Part): void {
    if (!part.frozen) this.held -= part.idx.length;
  }

  /**
   * The items of `part` that could be read, with their images, in order; those that could not are recorded
   * as left out and returned as `failed`. An error other than a decoding failure is thrown.
   */
  private readable(
    part: Part,
    settled: Array<PromiseSettledResult<RgbImage>>,
  ): { idx: number[]; imgs: RgbImage[]; failed: UnreadableImage[] } {
    const got = { idx: [] as number[], imgs: [] as RgbImage[], failed: [] as UnreadableImage[] };
    settled.forEach((r, j) => {
      const i = part.idx[j]!;
      if (r.status === 'fulfilled') {
        got.idx.push(i);
        got.imgs.push(r.value);
      } else if (r.reason instanceof ImageDecodeError) {
        const u = { file: r.reason.file, problem: r.reason.problem };
        this.skipped.set(i, u);
        got.failed.push(u);
      } else {
        throw r.reason;
      }
    });
    return got;
  }

  /**
   * Images that the check before the run passed but that fail to decode now (`where`): listed, then left out
   * with skipUnreadable; without, they stop the run, whose state of the last finished epoch stays for a
   * rerun (which then refuses the file before its first step).
   */
  private report(failed: readonly UnreadableImage[], where: string): void {
    if (failed.length === 0) return;
    writeUnreadable(this.unreadable.path, sortedValues(this.skipped));
    if (!this.unreadable.skip) {
      throw new Error(
        `${failed.length} image(s) could not be decoded ${where}:\n${listUnreadable(failed)}\n` +
          `The run is kept in ${this.unreadable.keptAt()}: run it again with skipUnreadable (--skip-unreadable) to leave ` +
          `${failed.length > 1 ? 'them' : 'it'} out and resume, or replace the file${failed.length > 1 ? 's' : ''}.`,
      );
    }
    this.unreadable.emit({
      kind: 'warning',
      message: `left out ${failed.length} image(s) that could not be decoded ${where}`,
      warnings: failed.map((u) => `${u.file}: ${u.problem}`),
    });
  }

  /**
   * The batches of an epoch in order: `parts[s]`, its views drawn with `rngAt(s)` (handed on for the step),
   * null when none of its images can be read. Part s+1 decodes while batch s is assembled and trained; a
   * part's images are dropped once its batch is assembled. A generator left early (an error, a stopped run)
   * first waits for the part being read ahead, so nothing of the epoch is left running.
   */
  async *epoch(
    parts: ReadonlyArray<readonly number[]>,
    rngAt: (s: number) => Rng,
    where: (s: number) => string,
  ): AsyncGenerator<{ step: number; rng: Rng; got: Batch | null }> {
    let ahead: Part | null = null;
    try {
      for (let s = 0; s < parts.length; s++) {
        const rng = rngAt(s);
        let part: Part | null = ahead ?? this.start(parts[s]!, true);
        ahead = null;
        const got = await this.use(part, (settled) => {
          ahead = s + 1 < parts.length ? this.start(parts[s + 1]!, true) : null;
          return this.assemble(part!, settled, rng, where(s));
        });
        // the part's images are not held while its batch trains
        part = null;
        yield { step: s, rng, got };
      }
    } finally {
      if (ahead) await this.use(ahead, () => undefined);
    }
  }

  /** Calls `fn` with the outcome of each of the part's images, then is done with the part. */
  private async use<T>(part: Part, fn: (settled: Array<PromiseSettledResult<RgbImage>>) => T | Promise<T>): Promise<T> {
    try {
      return await fn(await part.settled);
    } finally {
      this.done(part);
    }
  }

  /**
   * The images of the items `idx` that can be read, in order, `size` at a time (the next part decoding while
   * this one is used). Failures (`where`) are reported once every part has been read, all together: left out
   * with skipUnreadable, else no part is handed out after the first failure and the run stops at the end.
   */
  async *images(idx: readonly number[], size: number, where: string): AsyncGenerator<{ idx: number[]; imgs: RgbImage[] }> {
    const keep = idx.filter((i) => !this.skipped.has(i));
    const parts: number[][] = [];
    for (let k = 0; k < keep.length; k += size) parts.push(keep.slice(k, k + size));
    const failed: UnreadableImage[] = [];
    let ahead: Part | null = null;
    try {
      for (let s = 0; s < parts.length; s++) {
        const part = ahead ?? this.start(parts[s]!, false);
        ahead = null;
        try {
          const settled = await part.settled;
          ahead = s + 1 < parts.length ? this.start(parts[s + 1]!, false) : null;
          const got = this.readable(part, settled);
          failed.push(...got.failed);
          // the images are held while the caller uses them
          if (got.idx.length > 0 && (failed.length === 0 || this.unreadable.skip)) yield { idx: got.idx, imgs: got.imgs };
        } finally {
          this.done(part);
        }
      }
    } finally {
      if (ahead) await this.use(ahead, () => undefined);
    }
    this.report(failed, where);
  }

  /** The batch of the items of `part` that can be read, its views drawn with `rng`; null when none can. */
  private async assemble(part: Part, settled: Array<PromiseSettledResult<RgbImage>>, rng: Rng, where: string): Promise<Batch | null> {
    const { method, options: o, backbone } = this.setup;
    // the features kept only grow and the items left out only grow, so a part frozen when it started still is
    const cached = part.frozen;
    let idx = part.idx.filter((i) => !this.skipped.has(i));
    let imgs: RgbImage[] = [];
    if (!cached) {
      const got = this.readable(part, settled);
      this.report(got.failed, where);
      ({ idx, imgs } = got);
    }
    if (idx.length === 0) return null;
    const b = idx.length;
    const size = backbone.weights.config.imageSize;
    const per = 3 * size * size;
    const pixels = new Float32Array(cached ? 0 : b * per);
    imgs.forEach((img, j) => pixels.set(trainView(img, o, size, rng), j * per));
    let image: Float32Array = pixels;
    if (method.imageInput === 'features') {
      const e = backbone.weights.config.embedDim;
      if (cached) {
        image = new Float32Array(b * e);
        idx.forEach((i, j) => image.set(this.featureCache.get(i)!, j * e));
      } else {
        let fg = this.featureGraphs.get(b);
        if (!fg) {
          fg = await CompiledGraph.create(
            imageFeatureGraph(backbone.weights, b, `features_b${b}`, method.imageEncoder?.(o, backbone.weights)),
            this.runtime,
          );
          this.featureGraphs.set(b, fg);
        }
        image = (await fg.run({ pixels })).features!.data as Float32Array;
        if (this.keepsFeatures) idx.forEach((i, j) => this.featureCache.set(i, image.slice(j * e, (j + 1) * e)));
      }
    }
    const quality = Float32Array.from(idx, (i) => method.target(unitMos(this.ds, this.ds.items[i]!.mos), this.ds.info.mosRange));
    const auxiliary: TrainBatch['auxiliary'] = {};
    for (const t of this.auxiliary) {
      const values = new Float32Array(b * t.size);
      const mask = new Float32Array(b);
      idx.forEach((i, j) => {
        const v = t.read(this.ds.items[i]!, this.ds.info);
        if (v === undefined) return;
        if (typeof v === 'number') values[j] = v;
        else values.set(v, j * t.size);
        mask[j] = 1;
      });
      auxiliary[t.name] = { values, ...(t.missing.kind === 'mask' ? { mask } : {}) };
    }
    return { idx, batch: { image, quality, auxiliary } };
  }

  async release(): Promise<void> {
    for (const g of this.featureGraphs.values()) await g.release();
    this.featureGraphs.clear();
  }
}

/** Unit-scaled, higher-is-better MOS. */
function unitMos(ds: Dataset, mos: number): number {
  const [lo, hi] = ds.info.mosRange;
  const u = (mos - lo) / (hi - lo);
  return ds.info.higherIsBetter ? u : 1 - u;
}

/** The run's list of images that could not be read (unreadable.json); empty when there is none or it is damaged. */
export function readUnreadable(path: string): UnreadableImage[] {
  if (!existsSync(path)) return [];
  try {
    // a regular file within the cap of label lists: a FIFO or a device there is not waited on or read
    const list = JSON.parse(readRegularText(path, 'list of unreadable images', READ_LIMITS.labels)) as unknown;
    return Array.isArray(list) ? list.filter((u): u is UnreadableImage => typeof (u as UnreadableImage | null)?.file === 'string') : [];
  } catch {
    return []; // a damaged list only loses the hint of which files to decode in full
  }
}

export function writeUnreadable(path: string, list: UnreadableImage[]): void {
  writeFileAtomic(path, JSON.stringify(list, null, 2) + '\n');
}

/** A map's values in the order of its keys: the same list however the failures were found. */
export function sortedValues<T>(m: Map<number, T>): T[] {
  return [...m.entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v);
}
