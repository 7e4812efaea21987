/**
 * The compiler settings that the code is written against stay on in both configurations (the one `npm run
 * typecheck` reads and the one `npm run build` reads, `extends` resolved): without them `tsc` would still
 * pass, and the checks they buy would be lost silently.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Options that must be true: index access yields `T | undefined`, so an index out of range is handled. */
const REQUIRED = ['strict', 'noUncheckedIndexedAccess', 'noImplicitOverride', 'noFallthroughCasesInSwitch'] as const;

function resolvedOptions(file: string): ts.CompilerOptions {
  const parsed = ts.getParsedCommandLineOfConfigFile(
    join(ROOT, file),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => {
        throw new Error(`${file}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
      },
    },
  );
  assert.ok(parsed, `${file} could not be read`);
  return parsed.options;
}

for (const file of ['tsconfig.json', 'tsconfig.build.json']) {
  test(`${file} keeps ${REQUIRED.join(', ')} on`, () => {
    const options = resolvedOptions(file);
    for (const name of REQUIRED) assert.equal(options[name], true, `${file}: compilerOptions.${name} is not true`);
  });
}
