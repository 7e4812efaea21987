/**
 * Where the command writes, and the small formatting helpers every command shares: tables, numbers,
 * JSON, and the two kinds of failure (bad usage, exit 2; anything else, exit 1).
 */

/** The command's view of the terminal. Tests pass their own to capture what is written. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** stderr is a terminal: progress bars may be drawn */
  stderrIsTTY: boolean;
  env: NodeJS.ProcessEnv;
}

export function processIo(): CliIo {
  return {
    stdout: (s) => void process.stdout.write(s),
    stderr: (s) => void process.stderr.write(s),
    stderrIsTTY: Boolean(process.stderr.isTTY),
    env: process.env,
  };
}

/** Bad usage: a wrong option value or a combination that cannot work. Exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A failure to report in one line, without a stack. Exit code 1 (or `exitCode`). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** Progress bars only on a terminal, never in CI, never with --quiet. */
export function wantsProgress(io: CliIo, quiet: boolean | undefined): boolean {
  const ci = io.env.CI;
  return io.stderrIsTTY && !quiet && !(ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false');
}

/** A number for a table: `digits` decimals, NaN and infinities spelt out. */
export function fmt(value: number | undefined, digits = 4): string {
  if (value === undefined) return '';
  if (Number.isNaN(value)) return 'NaN';
  if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return String(value);
  return value.toFixed(digits);
}

/** JSON on one line (NaN and infinities become null, as JSON has no such numbers). */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value) + '\n';
}

const NUMERIC = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^(NaN|-?inf)$/;

/**
 * A plain-text table: a header, a rule, and rows; numeric-looking cells are right-aligned.
 * Cells with line breaks are flattened to one line.
 */
export function formatTable(header: readonly string[], rows: ReadonlyArray<ReadonlyArray<string>>): string {
  const clean = (s: string): string => s.replace(/[\r\n\t]+/g, ' ');
  const body = rows.map((r) => r.map(clean));
  const widths = header.map((h, c) => Math.max(h.length, ...body.map((r) => (r[c] ?? '').length)));
  const numeric = header.map((_, c) => body.length > 0 && body.every((r) => (r[c] ?? '') === '' || NUMERIC.test(r[c] ?? '')));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, c) => (numeric[c] ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n') + '\n';
}

/** `key  value` lines, keys padded to one width. */
export function formatPairs(pairs: ReadonlyArray<readonly [string, string]>): string {
  const w = Math.max(0, ...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(w)}  ${v}`.trimEnd()).join('\n') + '\n';
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
