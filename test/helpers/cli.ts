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
