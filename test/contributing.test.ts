/**
 * CONTRIBUTING.md names real files and symbols: every `src/…` or `test/…` path it names exists, and every
 * "`Symbol` in `file`" (or "`Symbol` (`file`)") it states is declared in that file. A rename that leaves
 * the guide behind fails here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** What a guide's text claims about the tree, and which of those claims `read` (path → text or undefined) contradicts. */
function staleClaims(guide: string, read: (path: string) => string | undefined): string[] {
  const problems: string[] = [];
  for (const [, path] of guide.matchAll(/`((?:src|test)\/[^`<>]*)`/g)) {
    if (read(path!) === undefined) problems.push(`${path}: no such file or folder`);
  }
  for (const [, symbol, path] of guide.matchAll(/`([A-Za-z_$][\w$]*)`(?: in | \()`((?:src|test)\/[^`<>]*)`/g)) {
    const text = read(path!);
    if (text !== undefined && !new RegExp(`\\b(?:const|let|function|class|interface|type)\\s+${symbol}\\b`).test(text)) {
      problems.push(`${symbol} is not declared in ${path}`);
    }
  }
  return problems;
}

const readInTree = (path: string): string | undefined => {
  const p = join(ROOT, path);
  if (!existsSync(p)) return undefined;
  return path.endsWith('/') ? '' : readFileSync(p, 'utf8');
};

test('the check finds a missing file and a symbol declared elsewhere', () => {
  const files: Record<string, string> = { 'src/a.ts': 'export const METHODS = [];\n' };
  const read = (p: string): string | undefined => files[p];
  assert.deepEqual(staleClaims('`METHODS` in `src/a.ts`; `Method` (`src/a.ts`); see `src/b.ts`, `src/<name>.ts`.', read), [
    'src/b.ts: no such file or folder',
    'Method is not declared in src/a.ts',
  ]);
  assert.deepEqual(staleClaims('`METHODS` in `src/a.ts`', read), []);
});

test('CONTRIBUTING.md names files and symbols that exist', () => {
  const guide = readFileSync(join(ROOT, 'CONTRIBUTING.md'), 'utf8');
  // the guide does name files and symbols, so the check below has something to check
  assert.ok([...guide.matchAll(/`(?:src|test)\//g)].length >= 10);
  assert.deepEqual(staleClaims(guide, readInTree), []);
});
