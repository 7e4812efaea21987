/**
 * The options that several commands share, defined once so that each has the same name, argument and
 * help text everywhere, and the parsers that turn their strings into checked values. A parser throws
 * commander's InvalidArgumentError, which the command line reports as bad usage (exit 2).
 */
import { availableParallelism } from 'node:os';
import { InvalidArgumentError, Option } from 'commander';
import { type Device, DEVICES, DEVICE_TYPES, PROVIDERS, checkDeviceName } from '../graph/device.js';
import { MAX_BATCH, MAX_THREADS_PER_CORE, checkBatchSize, checkThreads } from '../graph/settings.js';
import type { OptionName } from '../util/option-names.js';
import { MAX_DECODE_THREADS, checkDecodeThreads } from '../methods/index.js';

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number ≥ 1.');
  return n;
}

export function parseNonNegativeInt(value: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('expected a whole number ≥ 0.');
  return n;
}

export function parseSeed(value: string): number {
  const n = parseNonNegativeInt(value);
  if (n > 0xffffffff) throw new InvalidArgumentError('expected a whole number in [0, 4294967295].');
  return n;
}

export function parsePositiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a number > 0.');
  return n;
}

/** "0.7,0.1,0.2": three non-negative shares of train, validation and test that sum to 1. */
export function parseRatios(value: string): [number, number, number] {
  const parts = value.split(',').map((s) => s.trim());
  const nums = parts.map(Number);
  if (parts.length !== 3 || parts.some((p) => p === '') || nums.some((x) => !Number.isFinite(x) || x < 0)) {
    throw new InvalidArgumentError('expected three non-negative numbers train,val,test such as 0.7,0.1,0.2.');
  }
  const sum = nums[0]! + nums[1]! + nums[2]!;
  if (Math.abs(sum - 1) > 1e-6) throw new InvalidArgumentError(`the three shares must sum to 1 (they sum to ${sum}).`);
  return nums as [number, number, number];
}

/**
 * `--device`: one of DEVICE_TYPES or auto. Whether it can work here is checked just before the command runs (by the
 * program's pre-action hook, which also resolves and says `auto`): a missing provider is a failure (exit 1), not bad
 * usage.
 */
export function parseDevice(value: string): Device {
  try {
    return checkDeviceName(value, '--device', true);
  } catch (err) {
    throw new InvalidArgumentError(`${(err as Error).message}.`);
  }
}

/** `--threads`: the library's check (`checkThreads`): refused above MAX_THREADS_PER_CORE × the cores; the warning above the cores is said before the command runs. */
export function parseThreads(value: string): number {
  const n = parsePositiveInt(value);
  try {
    return checkThreads(n, '--threads').threads;
  } catch (err) {
    throw new InvalidArgumentError(`${(err as Error).message}.`);
  }
}

/** `--decode-threads`: the library's check (`checkDecodeThreads`): 0 to MAX_DECODE_THREADS. */
export function parseDecodeThreads(value: string): number {
  const n = parseNonNegativeInt(value);
  try {
    return checkDecodeThreads(n, '--decode-threads');
  } catch (err) {
    throw new InvalidArgumentError(`${(err as Error).message}.`);
  }
}

/** `--batch`: the library's check (`checkBatchSize`): a whole number from 1 to MAX_BATCH. */
export function parseBatch(value: string): number {
  const n = parsePositiveInt(value);
  try {
    return checkBatchSize(n, '--batch');
  } catch (err) {
    throw new InvalidArgumentError(`${(err as Error).message}.`);
  }
}

/**
 * Collects repeated `--option key=value` into a record of the values as typed: the method's schema reads each by the
 * option's kind (`initPhrase=0.50` stays the text "0.50"; `nCtx=16` becomes the number 16), once.
 */
export function collectKeyValue(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError('expected key=value, e.g. --option nCtx=16.');
  const key = value.slice(0, eq).trim();
  if (key === '') throw new InvalidArgumentError('expected key=value with a non-empty key.');
  return { ...(previous ?? {}), [key]: value.slice(eq + 1) };
}

/** Collects a repeatable option into a list. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function defaultThreads(): number {
  return availableParallelism();
}

/**
 * `--option key=value`, kept under the library's name for the method options, `methodOptions`, so that the bag has
 * one name from the command line to the schema.
 */
class MethodOptionsOption extends Option {
  override attributeName(): string {
    return 'methodOptions';
  }
}

/** The shared options. Each call makes a fresh Option (commander keeps state on them). */
export const opt = {
  model: (): Option =>
    new Option(
      '--model <dir|file|repo>',
      "CLIP weights: a local model folder, a single weights file (OpenAI's released .pt such as RN50.pt, a PyTorch state dict .pt/.pth/.bin, or .safetensors in OpenAI/open_clip names), or a Hugging Face repo id such as openai/clip-vit-base-patch32 (downloaded into the Hugging Face cache on first use; HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE are honoured)",
    ),
  checkpoint: (): Option =>
    new Option(
      '--checkpoint <path>',
      'trained parameters written by `promptiqa train`: its --out folder (with --rounds, one of its round-N folders), or the checkpoint file it prints',
    ),
  method: (): Option => new Option('--method <name>', 'quality method, one of `promptiqa methods` (e.g. clip-iqa)'),
  dataset: (): Option => new Option('--dataset <name>', 'dataset, one of `promptiqa datasets` (e.g. agiqa-3k), or csv for any label file'),
  root: (): Option => new Option('--root <dir>', 'dataset folder holding the label file and the images'),
  labelFile: (): Option =>
    new Option('--label-file <file>', "label file, relative to --root or absolute (default: the dataset's usual file)"),
  target: (): Option =>
    new Option('--target <name>', "score to learn or compare with: quality (default) or another of the dataset's targets (e.g. alignment)"),
  device: (): Option =>
    new Option(
      '--device <device>',
      `where ONNX Runtime computes: ${PROVIDERS.map((p) => DEVICE_TYPES[p].help).join('; ')}; or auto (cuda, else webgpu, else cpu)`,
    )
      .choices(DEVICES)
      .argParser(parseDevice)
      .default('cpu'),
  threads: (): Option =>
    new Option(
      '--threads <n>',
      `CPU threads for ONNX Runtime (default: all cores; more than the cores is slower and warned of, more than ${MAX_THREADS_PER_CORE} per core refused)`,
    ).argParser(parseThreads),
  batch: (dflt?: number): Option => {
    const o = new Option(
      '--batch <n>',
      dflt === undefined ? `images per batch, at most ${MAX_BATCH} (default: the method's)` : `images per batch, at most ${MAX_BATCH}`,
    ).argParser(parseBatch);
    return dflt === undefined ? o : o.default(dflt);
  },
  seed: (dflt?: number): Option => {
    const o = new Option('--seed <n>', 'random seed (splits, initialisation, shuffling); the same seed gives the same run').argParser(
      parseSeed,
    );
    return dflt === undefined ? o : o.default(dflt);
  },
  noCache: (): Option =>
    new Option(
      '--no-cache',
      "neither read nor write promptiqa's cache (digests of weight files, text features of fixed prompts; kept in PROMPTIQA_CACHE, else $XDG_CACHE_HOME/promptiqa, else ~/.cache/promptiqa)",
    ),
  allowExtraTensors: (): Option =>
    new Option(
      '--allow-extra-tensors',
      "accept tensors that a released file (--checkpoint, or a pretrained metric's files) should not carry, for a custom file made to carry them (by default they are refused by name, as pyiqa's strict load refuses them)",
    ),
  json: (): Option => new Option('--json', 'print one JSON object on stdout instead of a table'),
  format: (choices: string[], dflt: string): Option => new Option('--format <format>', 'output format').choices(choices).default(dflt),
  output: (): Option =>
    new Option(
      '--output <file>',
      'write the results to this file instead of stdout (- is stdout; a character device or FIFO is written as it is)',
    ),
  quiet: (): Option =>
    new Option(
      '-q, --quiet',
      'no progress bars or notes on stderr (errors are still reported); bars are drawn only when stderr is a terminal and CI is unset',
    ),
  ratios: (): Option =>
    new Option('--ratios <train,val,test>', "split shares summing to 1, e.g. 0.7,0.1,0.2 (default: the protocol's)").argParser(parseRatios),
  splitBy: (): Option =>
    new Option(
      '--split-by <unit>',
      "split unit: image, group (generation prompt or reference image: nothing seen in training is tested on), official (the dataset's own split)",
    ).choices(['image', 'group', 'official']),
  imageCol: (): Option => new Option('--image-col <name>', '--dataset csv: column of image paths, relative to --root (default: image)'),
  // one option for metrics (a CSV of scores) and train/eval (the label file of --dataset csv)
  mosCol: (what = '--dataset csv: column of mean opinion scores in the label file (default mos)'): Option =>
    new Option('--mos-col <name>', what),
  promptCol: (): Option =>
    new Option('--prompt-col <name>', '--dataset csv: column of generation prompts; images are then grouped by prompt'),
  limit: (): Option =>
    new Option(
      '--limit <n>',
      'a seeded subset of n items (drawn with --seed; the same --seed and --limit give the same images), for quick trials',
    ).argParser(parsePositiveInt),
  out: (): Option => new Option('--out <dir>', 'folder for the run: checkpoints, reports, plots').makeOptionMandatory(),
  allowOutsideRoot: (): Option =>
    new Option(
      '--allow-outside-root',
      'read images that the label file places outside --root (../ paths, absolute paths elsewhere); refused by default',
    ),
  exifOrientation: (): Option =>
    new Option(
      '--exif-orientation',
      "turn images as their EXIF orientation tag says (default: the pixels as stored, as PIL, pyiqa and the methods' authors read them)",
    ),
  decodeThreads: (): Option =>
    new Option(
      '--decode-threads <n>',
      `worker threads that decode images and resize them while the model runs, 0 to ${MAX_DECODE_THREADS}; 0: in the main thread (default: 1 on the CPU, 2 from 16 cores; on a GPU all cores but one, at most 8)`,
    ).argParser(parseDecodeThreads),
  methodOption: (): Option =>
    new MethodOptionsOption(
      '--option <key=value>',
      "a method parameter (repeatable), read by the method's own schema as the option's kind (a number, true/false, a choice or text); see `promptiqa methods <name>`",
    ).argParser(collectKeyValue),
};

/** The library's options by the flags that set them, for messages that name them (`namesOptions`). */
const FLAGS: Record<string, (() => Option) | undefined> = {
  root: opt.root,
  labelFile: opt.labelFile,
  target: opt.target,
  imageCol: opt.imageCol,
  mosCol: opt.mosCol,
  promptCol: opt.promptCol,
  allowOutsideRoot: opt.allowOutsideRoot,
  applyExifOrientation: opt.exifOrientation,
  decodeThreads: opt.decodeThreads,
};

/** A library option as the command line names it: its flag, or undefined where no flag sets it (or sets that value). */
export const flagName: OptionName = (option, value) => {
  const flag = Object.hasOwn(FLAGS, option) ? FLAGS[option]?.() : undefined;
  if (flag === undefined || (value !== undefined && flag.isBoolean() && value !== !flag.negate)) return undefined;
  return flag.long;
};
