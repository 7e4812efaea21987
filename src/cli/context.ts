import type { Command } from 'commander';
import type { CliIo } from './io.js';

/** What every command gets: where to write. */
export interface Ctx {
  io: CliIo;
}

/** Adds one command to the program. */
export type Register = (program: Command, ctx: Ctx) => void;

/** Help text after the options: "Examples:" and the lines given, indented. */
export function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => (l === '' ? '' : `  ${l}`)).join('\n')}\n`;
}
