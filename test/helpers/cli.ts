import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { main, type CliIo } from '../../src/cli/main.js';

/** Runs the command line in-process, capturing what it writes. */
export async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIo = {
    stdout: (s) => {
      out += s;
    },
    stderr: (s) => {
      err += s;
    },
    stderrIsTTY: false,
    env: {},
  };
  const code = await main(['node', 'promptiqa', ...args], io);
  return { code, out, err };
}

/**
 * Starts the command line in a child process: node with tsx, then `preload` modules (`--import`), then the command
 * (`test/helpers/cli-child.ts`, or `entry` such as a built `bin/promptiqa.js`); its standard output and error piped.
 */
export function spawnCli(
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; preload?: readonly string[]; entry?: string } = {},
): ChildProcessByStdio<null, Readable, Readable> {
  const node = opts.entry
    ? [opts.entry]
    : [
        '--import',
        'tsx',
        ...(opts.preload ?? []).flatMap((p) => ['--import', p]),
        fileURLToPath(new URL('./cli-child.ts', import.meta.url)),
      ];
  return spawn(process.execPath, [...node, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
}

/** What a child's standard output and error said, and how it ended (its exit code; null when a signal ended it). */
export async function collectChild(
  child: ChildProcessByStdio<null, Readable, Readable>,
): Promise<{ code: number | null; out: string; err: string }> {
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, out, err };
}

/** Runs the command line in a child process (see `spawnCli`) to its end. */
export function cliInChild(
  args: readonly string[],
  opts: Parameters<typeof spawnCli>[1] = {},
): Promise<{ code: number | null; out: string; err: string }> {
  return collectChild(spawnCli(args, opts));
}
