/**
 * The software WebGPU adapter for tests: Mesa's lavapipe and the Vulkan loader that `scripts/software-vulkan.sh DIR`
 * puts into DIR, named by `PROMPTIQA_SOFTWARE_VULKAN=DIR` (`.ci/run` sets it up). The dynamic loader reads
 * LD_LIBRARY_PATH when a process starts, so the WebGPU work of a test runs in a child process started with that
 * environment (`runChild`): the test process itself keeps the machine's own devices, none on CI.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';

export const SOFTWARE_VULKAN_VAR = 'PROMPTIQA_SOFTWARE_VULKAN';

/** The repository's root and `src/`, for the imports of a snippet (`runChild({ code })`), which runs from a temporary file. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SRC = join(ROOT, 'src');
const SELF = fileURLToPath(import.meta.url);

const HOW = `run \`scripts/software-vulkan.sh .cache/software-vulkan\` (Debian 12; it downloads Mesa's lavapipe into that folder, nothing system-wide) and set ${SOFTWARE_VULKAN_VAR}=$PWD/.cache/software-vulkan`;

/**
 * The variables a child process needs to find the software adapter in `dir` (default: `PROMPTIQA_SOFTWARE_VULKAN`),
 * or null when none is named. A folder the script has not finished is an error saying so.
 */
export function softwareVulkanEnv(dir = process.env[SOFTWARE_VULKAN_VAR]): { LD_LIBRARY_PATH: string; VK_DRIVER_FILES: string } | null {
  if (!dir) return null;
  const manifest = resolve(dir, 'lvp.json');
  if (!existsSync(manifest)) throw new Error(`${SOFTWARE_VULKAN_VAR}=${dir}: no lvp.json there; ${HOW}`);
  const driver = (JSON.parse(readFileSync(manifest, 'utf8')) as { ICD?: { library_path?: string } }).ICD?.library_path;
  if (!driver || !existsSync(driver)) throw new Error(`${manifest}: its driver ${driver ?? '(none named)'} is not there; ${HOW}`);
  return {
    LD_LIBRARY_PATH: [dirname(driver), process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'),
    VK_DRIVER_FILES: manifest,
  };
}

/**
 * For a test that needs the software adapter: the child environment, or null after skipping the test with how to
 * set it up. Under CI=true a missing adapter fails the test instead: `.ci/run` should have set it up.
 */
export function softwareWebgpu(t: TestContext): { LD_LIBRARY_PATH: string; VK_DRIVER_FILES: string } | null {
  const env = softwareVulkanEnv();
  if (env) return env;
  if (process.env.CI === 'true') {
    assert.fail(
      `${SOFTWARE_VULKAN_VAR} is not set: .ci/run sets up the software WebGPU adapter with scripts/software-vulkan.sh and exports it`,
    );
  }
  t.skip(`no software WebGPU adapter: ${HOW}`);
  return null;
}

const MARK = '@@promptiqa-child-result ';

/** In a child started by `runChild`: hands `value` (JSON) back to the test. */
export function reply(value: unknown): void {
  process.stdout.write(`\n${MARK}${JSON.stringify(value)}\n`);
}

export interface ChildRun<T> {
  /** what the child handed back with `reply` (undefined if it did not) */
  result: T | undefined;
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a file (TS or JS, with `args`) or a TS snippet (written to a temporary file; import from `${SRC}/…` and
 * `reply` from `${SELF}`, both available as the constants SRC and HELPER in the snippet) in a child process with
 * `node --import tsx`, its environment extended by `env`, and returns what it replied. The child's stderr is kept,
 * not shown (Dawn writes a few warnings there on the software adapter).
 */
export async function runChild<T>(
  what: { file: string; args?: readonly string[] } | { code: string },
  env: Readonly<Record<string, string>>,
  timeoutMs = 600_000,
): Promise<ChildRun<T>> {
  let tmp: string | undefined;
  let file: string;
  let args: readonly string[] = [];
  if ('code' in what) {
    tmp = mkdtempSync(join(tmpdir(), 'promptiqa-child-'));
    file = join(tmp, 'snippet.mts');
    writeFileSync(file, `const SRC = ${JSON.stringify(SRC)};\nconst HELPER = ${JSON.stringify(SELF)};\nvoid SRC, HELPER;\n${what.code}\n`);
  } else {
    file = what.file;
    args = what.args ?? [];
  }
  try {
    return await new Promise<ChildRun<T>>((done, failed) => {
      const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], {
        cwd: ROOT,
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: timeoutMs,
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', failed);
      child.on('close', (code) => {
        const line = stdout.split('\n').findLast((l) => l.startsWith(MARK));
        done({ result: line === undefined ? undefined : (JSON.parse(line.slice(MARK.length)) as T), code, stdout, stderr });
      });
    });
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}

/** `runChild` for a child that must succeed and reply: its result, else an error with its status and stderr's end. */
export async function childResult<T>(
  what: { file: string; args?: readonly string[] } | { code: string },
  env: Readonly<Record<string, string>>,
  timeoutMs?: number,
): Promise<{ result: T; stderr: string }> {
  const r = await runChild<T>(what, env, timeoutMs);
  if (r.code !== 0 || r.result === undefined) {
    throw new Error(`the child process ended with status ${String(r.code)} without a result:\n${r.stderr.slice(-3000)}`);
  }
  return { result: r.result, stderr: r.stderr };
}
