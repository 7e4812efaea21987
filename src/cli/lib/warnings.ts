/** Warnings on stderr: a headline, the first few cases and how many more, so a long list stays readable. */

const SHOWN = 5;

/** Lines for `note`: `warning: <message>`, then up to five cases indented, then a count of the rest. */
export function warningLines(message: string, cases: readonly string[] = []): string[] {
  const lines = [`warning: ${message}`, ...cases.slice(0, SHOWN).map((c) => `  ${c}`)];
  if (cases.length > SHOWN) lines.push(`  ... and ${cases.length - SHOWN} more`);
  return lines;
}
