/**
 * Preloaded (`--import`) into a child run by tests that must hold a run in the middle without timing: opening
 * the file named by PROMPTIQA_TEST_GATE (through `fs/promises`, as images are opened) waits until a file of the
 * same name plus `.go` exists. A FIFO can no longer serve as the gate: it is refused without being waited on.
 */
import fsp from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

const gate = process.env.PROMPTIQA_TEST_GATE;
if (gate) {
  const open = fsp.open.bind(fsp);
  fsp.open = async (path: Parameters<typeof fsp.open>[0], ...rest: [Parameters<typeof fsp.open>[1]?, Parameters<typeof fsp.open>[2]?]) => {
    if (String(path) === gate) while (!existsSync(`${gate}.go`)) await new Promise((r) => setTimeout(r, 20));
    return open(path, ...rest);
  };
  syncBuiltinESMExports();
}
