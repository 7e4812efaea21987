/**
 * What a training run is given and what it reports: `TrainOptions`, its events and its result.
 */
import type { Provider } from '../graph/runtime.js';
import { type DatasetColumns } from '../data/datasets.js';
import { type SplitSettings } from '../data/splits.js';
import { type UnreadableImage } from '../data/check.js';

/** `warning`: `message` says what, `warnings` lists the cases (dataset rows left out, unreadable images skipped). */
export interface TrainEvent {
  kind: 'start' | 'step' | 'epoch' | 'done' | 'warning';
  epoch?: number;
  step?: number;
  stepsPerEpoch?: number;
  loss?: number;
  val?: Record<string, number>;
  message?: string;
  warnings?: string[];
}

export interface TrainOptions extends DatasetColumns {
  method: string;
  model: string;
  dataset: string;
  root: string;
  labelFile?: string;
  target?: string;
  out: string;
  epochs?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
  limit?: number;
  splitBy?: 'image' | 'group' | 'official';
  ratios?: [number, number, number];
  selectOn?: 'val' | 'test';
  patience?: number;
  threads?: number;
  device?: Provider;
  /** the method's options (`key: value`, read by its schema; `epochs`, `batchSize`, `lr` and `patience` above override theirs) */
  methodOptions?: Record<string, unknown>;
  /** round r of a multi-round run: the split and the training use `roundSeed(seed, r)`; the `limit` subset stays that of `seed` */
  round?: number;
  onEvent?: (e: TrainEvent) => void;
  /**
   * Images that cannot be read are left out (and listed in the run's result.json and unreadable.json)
   * rather than refused. Every image is checked before the first step either way.
   */
  skipUnreadable?: boolean;
  /** read images outside `root` that the label file names (see `LoadOptions.allowOutsideRoot`) */
  allowOutsideRoot?: boolean;
  /** turn images as their EXIF orientation tag says (see `DecodeOptions.applyExifOrientation`); default false */
  applyExifOrientation?: boolean;
  /** for tests: stop (as if killed) after this many optimiser steps */
  stopAfterSteps?: number;
}

export interface TrainResult {
  out: string;
  checkpoint: string;
  bestEpoch: number;
  best: Record<string, number>;
  test?: Record<string, number>;
  epochs: number;
  selectOn: 'val' | 'test';
  split: SplitSettings;
  unreadable?: UnreadableImage[];
}
