/**
 * A method's options as one typed schema: each option's kind, default, limits and help. The schema gives
 * the defaults, reads `--option key=value` (and the JSON values a checkpoint or a library caller gives),
 * refuses a bad value with a sentence that names the option and what it takes, and describes the options
 * for `promptiqa methods --json`.
 */
import { type WindowPlacement } from '../data/preprocess.js';

export interface NumberSpec {
  kind: 'number';
  default: number;
  help: string;
  integer?: boolean;
  min?: number;
  max?: number;
}
export interface BooleanSpec {
  kind: 'boolean';
  default: boolean;
  help: string;
}
export interface ChoiceSpec<T extends string = string> {
  kind: 'choice';
  default: T;
  help: string;
  choices: readonly T[];
  /** the value of a checkpoint that does not record this option: it was trained before the option existed */
  legacy?: T;
}
export interface TextSpec {
  kind: 'text';
  default: string;
  help: string;
}
export type AnySpec = NumberSpec | BooleanSpec | ChoiceSpec | TextSpec;

/** The spec an option of type T takes: a string-literal union is a choice, a plain string free text. */
export type OptionSpec<T> = [T] extends [number]
  ? NumberSpec
  : [T] extends [boolean]
    ? BooleanSpec
    : [T] extends [string]
      ? string extends T
        ? TextSpec
        : ChoiceSpec<T>
      : never;

export type Schema<O> = { readonly [K in keyof O]-?: OptionSpec<O[K]> };

/** Constructors that keep the literal types of choices. */
export const spec = {
  number: (def: number, help: string, limits: { min?: number; max?: number } = {}): NumberSpec => ({
    kind: 'number',
    default: def,
    help,
    ...limits,
  }),
  integer: (def: number, help: string, limits: { min?: number; max?: number } = {}): NumberSpec => ({
    kind: 'number',
    default: def,
    help,
    integer: true,
    ...limits,
  }),
  boolean: (def: boolean, help: string): BooleanSpec => ({ kind: 'boolean', default: def, help }),
  choice: <const T extends string>(
    choices: readonly T[],
    def: NoInfer<T>,
    help: string,
    more: { legacy?: NoInfer<T> } = {},
  ): ChoiceSpec<T> => ({
    kind: 'choice',
    default: def,
    help,
    choices,
    ...more,
  }),
  text: (def: string, help: string): TextSpec => ({ kind: 'text', default: def, help }),
};

/** Options every method has: training and image preparation (the paper's values as each method's defaults). */
export interface CommonOptions {
  optimizer: 'sgd' | 'adam' | 'adamw';
  lr: number;
  momentum: number;
  weightDecay: number;
  batchSize: number;
  epochs: number;
  schedule: 'cosine' | 'constant';
  warmupEpochs: number;
  warmupLr: number;
  lrStep: 'step' | 'epoch';
  dropLast: boolean;
  patience: number;
  gradClip: number;
  augment: 'random-resized-crop+flip' | 'crop+flip' | 'none';
  testViews: 'resize' | 'sliding' | 'full' | 'auto';
  stride: number;
  windows: WindowPlacement;
  normalize: 'clip' | 'imagenet';
  qualityLoss: 'mse' | 'l1' | 'plcc' | 'fidelity';
}

const COMMON_SCHEMA: Schema<CommonOptions> = {
  optimizer: spec.choice(['sgd', 'adam', 'adamw'], 'adam', 'the optimiser'),
  lr: spec.number(1e-4, 'the base learning rate', { min: Number.MIN_VALUE }),
  momentum: spec.number(0.9, "SGD's momentum", { min: 0, max: 1 }),
  weightDecay: spec.number(0, 'weight decay (decoupled for adamw, L2 for sgd and adam)', { min: 0 }),
  batchSize: spec.integer(32, 'training images per step', { min: 1 }),
  epochs: spec.integer(50, 'training epochs', { min: 1 }),
  schedule: spec.choice(['cosine', 'constant'], 'constant', "the learning rate's schedule: warm-up then cosine, or constant"),
  warmupEpochs: spec.integer(0, 'warm-up epochs at warmupLr before the cosine schedule', { min: 0 }),
  warmupLr: spec.number(0, 'the learning rate during warm-up', { min: 0 }),
  lrStep: spec.choice(
    ['step', 'epoch'],
    'step',
    'when the schedule moves: at every optimiser step (decaying to 0), or once per epoch as Dassl does',
  ),
  dropLast: spec.boolean(false, "drop the last partial batch of an epoch (Dassl's training loader does)"),
  patience: spec.integer(0, 'stop after this many epochs without a better validation figure (0: never)', { min: 0 }),
  gradClip: spec.number(0, "clip the gradient's norm to this (0: off)", { min: 0 }),
  augment: spec.choice(['random-resized-crop+flip', 'crop+flip', 'none'], 'none', 'training augmentation'),
  testViews: spec.choice(
    ['resize', 'sliding', 'full', 'auto'],
    'resize',
    'test views: one resized centre view, every crop of the unresized image at a stride, the whole image at full resolution (an image tower whose positional embedding is left out or resized), or auto: full where the method reads images so, else resize',
  ),
  stride: spec.integer(64, 'the stride of sliding test windows, in pixels', { min: 1 }),
  windows: spec.choice(
    ['unfold', 'edge-to-edge'],
    'unfold',
    "where sliding windows go: from the top-left corner at the stride (nn.Unfold, Fu's code) or spread edge to edge",
  ),
  normalize: spec.choice(['clip', 'imagenet'], 'clip', "the pixel normalisation: CLIP's or ImageNet's mean and std"),
  qualityLoss: spec.choice(
    ['mse', 'l1', 'plcc', 'fidelity'],
    'mse',
    'the quality loss: the papers use MSE; L1, PLCC and the fidelity ranking loss are offered',
  ),
};

/** The common options with a method's own defaults (the paper's settings). */
export function commonSchema(defaults: Partial<CommonOptions> = {}): Schema<CommonOptions> {
  return withDefaults(COMMON_SCHEMA, defaults);
}

/** A schema whose defaults are replaced by `defaults`, each checked against its option's spec. */
export function withDefaults<O>(schema: Schema<O>, defaults: Partial<O>): Schema<O> {
  const out = { ...schema } as Record<string, AnySpec>;
  for (const [k, v] of Object.entries(defaults)) {
    const s = out[k];
    if (!s) throw new Error(`no option "${k}" to give a default`);
    out[k] = { ...s, default: readValue(s, k, v) } as AnySpec;
  }
  return out as Schema<O>;
}

export function schemaDefaults<O>(schema: Schema<O>): O {
  return Object.fromEntries(Object.entries(schema).map(([k, s]) => [k, (s as AnySpec).default])) as O;
}

/** What one option takes, in words: for errors and help. */
export function describeSpec(s: AnySpec): string {
  switch (s.kind) {
    case 'number': {
      const what = s.integer ? 'a whole number' : 'a number';
      if (s.min !== undefined && s.max !== undefined) return `${what} from ${s.min} to ${s.max}`;
      if (s.min !== undefined) return s.min === Number.MIN_VALUE ? `${what} > 0` : `${what} ≥ ${s.min}`;
      return s.max !== undefined ? `${what} ≤ ${s.max}` : what;
    }
    case 'boolean':
      return 'true or false';
    case 'choice':
      return `one of ${s.choices.join(', ')}`;
    case 'text':
      return 'text';
  }
}

class OptionValueError extends Error {}

/**
 * One option's value from what a caller gave: a string as typed on the command line (`--option key=value`, read
 * here only, by the option's kind), or a JSON value (a number, a boolean) from a library caller or a checkpoint.
 * Throws OptionValueError saying what it takes.
 */
function readValue(s: AnySpec, key: string, v: unknown): unknown {
  const bad = (): never => {
    throw new OptionValueError(
      `option ${key} = ${typeof v === 'string' ? `"${v}"` : (JSON.stringify(v) ?? String(v))}, must be ${describeSpec(s)}`,
    );
  };
  switch (s.kind) {
    case 'number': {
      const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
      if (
        !Number.isFinite(n) ||
        (s.integer && !Number.isInteger(n)) ||
        (s.min !== undefined && n < s.min) ||
        (s.max !== undefined && n > s.max)
      )
        bad();
      return n;
    }
    case 'boolean':
      if (typeof v === 'boolean') return v;
      if (v === 'true' || v === 'false') return v === 'true';
      return bad();
    case 'choice':
      if (typeof v === 'string' && s.choices.includes(v)) return v;
      return bad();
    case 'text':
      // the command line gives text as typed; a library caller or an old checkpoint may give a number
      if (typeof v === 'string') return v;
      if (typeof v === 'number' || typeof v === 'boolean') return String(v);
      return bad();
  }
}

/** One value read by its spec as `readOptions` reads it (a string as typed on the command line, or a JSON value); an Error naming `owner` and the option. */
export function readOption(owner: string, s: AnySpec, key: string, v: unknown): unknown {
  try {
    return readValue(s, key, v);
  } catch (err) {
    if (err instanceof OptionValueError) throw new Error(`${owner}: ${err.message}`);
    throw err;
  }
}

/**
 * Options from a schema and what was given: unknown keys refused by name, `preset=NAME` expanded first
 * (options beside it override it), each value read and checked against its spec.
 */
export function readOptions<O>(
  owner: string,
  schema: Schema<O>,
  given: Readonly<Record<string, unknown>>,
  presets: Readonly<Record<string, { options: Partial<O> }>> = {},
): O {
  const out = schemaDefaults(schema) as Record<string, unknown>;
  const { preset, ...rest } = given;
  const values: Record<string, unknown> = {};
  if (preset !== undefined) {
    const found = typeof preset === 'string' ? presets[preset] : undefined;
    if (!found) throw new Error(`${owner} has no preset ${JSON.stringify(preset)} (presets: ${Object.keys(presets).join(', ') || 'none'})`);
    Object.assign(values, found.options);
  }
  Object.assign(values, rest);
  const specs = schema as Record<string, AnySpec>;
  for (const [k, v] of Object.entries(values)) {
    const s = specs[k];
    if (!s) throw new Error(`${owner} has no option "${k}" (options: ${Object.keys(specs).join(', ')})`);
    out[k] = readOption(owner, s, k, v);
  }
  return out as O;
}

/** The schema as data: for `promptiqa methods --json` and help text. */
export function describeSchema<O>(
  schema: Schema<O>,
): Array<{ name: string; kind: AnySpec['kind']; default: unknown; takes: string; help: string; choices?: readonly string[] }> {
  return Object.entries(schema).map(([name, raw]) => {
    const s = raw as AnySpec;
    return {
      name,
      kind: s.kind,
      default: s.default,
      takes: describeSpec(s),
      help: s.help,
      ...(s.kind === 'choice' ? { choices: s.choices } : {}),
    };
  });
}

/**
 * The options a checkpoint recorded, with the legacy value of each option it does not record (it was
 * trained before that option existed, when the method computed what the legacy value names).
 */
export function withLegacyValues<O>(schema: Schema<O>, recorded: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out = { ...recorded };
  for (const [k, raw] of Object.entries(schema)) {
    const s = raw as AnySpec;
    if (!(k in out) && s.kind === 'choice' && s.legacy !== undefined) out[k] = s.legacy;
  }
  return out;
}
