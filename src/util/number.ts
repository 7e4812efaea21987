/** Numbers as label files and score tables write them. */

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * A finite number written in decimal (`3`, `-0.5`, `.5`, `1e-3`), else undefined. Stricter than `Number()`,
 * which also takes `0x1`, `0b1`, `Infinity` and the empty string, and than the pattern alone, which lets
 * `1e400` through as Infinity.
 */
export function parseDecimal(text: string): number | undefined {
  const s = text.trim();
  if (!DECIMAL.test(s)) return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}
