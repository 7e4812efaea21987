/**
 * The registry of methods: a method is its own file and one line here (or a `registerMethod` call from a
 * library user's code); names given on the command line or to `createMetric` are resolved against it and
 * pyiqa's pretrained set-ups.
 */
import { type Method, type MethodInfo, parseOptions } from './method.js';
import { describeSchema } from './options.js';
import { clipIqa, clipIqaPlus } from './clip-iqa.js';
import { tang } from './tang.js';
import { fu } from './fu.js';
import { mpIqe } from './mp-iqe.js';
import { liqe, liqeMix } from './liqe.js';
import { PRETRAINED, type PretrainedMetric, describePretrained, findPretrained } from './pretrained.js';

/** The methods promptiqa ships (a worker thread's registry has these, not those a caller registers). */
export const BUILTIN_METHODS: readonly Method[] = Object.freeze([clipIqa, clipIqaPlus, tang, fu, mpIqe, liqe, liqeMix]);

const registry: Method[] = [...BUILTIN_METHODS];

/** The registered methods, in the order `promptiqa methods` lists them. */
export const METHODS: readonly Method[] = registry;

/**
 * Adds a method to the registry: a method is its own file and this one line (or a call from a library
 * user's code). Its defaults and presets are checked now, so a bad declaration fails at start-up.
 */
export function registerMethod(method: Method): void {
  const name = method.info.name;
  if (!/^[a-z][a-z0-9+-]*$/.test(name)) throw new Error(`method name "${name}": use lower-case letters, digits, + and -`);
  if (registry.some((m) => m.info.name === name)) throw new Error(`a method named "${name}" is already registered`);
  parseOptions(method, {});
  for (const preset of Object.keys(method.presets ?? {})) parseOptions(method, { preset });
  registry.push(method);
}

export function getMethod(name: string): Method {
  const m = METHODS.find((x) => x.info.name === name);
  if (!m) throw new Error(`unknown method "${name}" (methods: ${METHODS.map((x) => x.info.name).join(', ')})`);
  return m;
}

/** A method as `promptiqa methods --json` lists it: what it is, its options (kind, default, what it takes) and its presets. */
export interface MethodDescription extends MethodInfo {
  options: ReturnType<typeof describeSchema>;
  presets: Array<{ name: string; description: string; options: Record<string, unknown> }>;
  /** what a released file given as its checkpoint holds, for methods that read one */
  released?: string;
}

export function listMetrics(): MethodDescription[] {
  return METHODS.map((m) => ({
    ...m.info,
    options: describeSchema(m.options),
    ...(m.released ? { released: m.released.describe } : {}),
    presets: Object.entries(m.presets ?? {}).map(([name, p]) => ({ name, description: p.description, options: { ...p.options } })),
  }));
}

/**
 * What a name given as the method stands for: with neither a model nor a checkpoint, pyiqa's pretrained
 * set-up of that name where there is one; else the method of that name. An unknown name is refused with the
 * choices, a pretrained set-up's own name given with a model or checkpoint with the method to use instead.
 */
export function resolveMethodName(
  name: string,
  given: { model?: string; checkpoint?: string } = {},
): { method: Method; pretrained?: PretrainedMetric } {
  const pretrained = findPretrained(name);
  if (pretrained && given.model === undefined && !given.checkpoint) return { method: getMethod(pretrained.method), pretrained };
  if (pretrained && !METHODS.some((m) => m.info.name === name)) {
    throw new Error(
      `"${name}" is pyiqa's pretrained ${pretrained.method} (${describePretrained(pretrained)}): use it without a model or checkpoint, or use method "${pretrained.method}" with them`,
    );
  }
  try {
    return { method: getMethod(name) };
  } catch (err) {
    throw new Error(`${(err as Error).message}; pretrained (without a model or checkpoint): ${PRETRAINED.map((p) => p.name).join(', ')}`, {
      cause: err,
    });
  }
}
