import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The folder of shared test data (reference outputs, datasets, models): `PROMPTIQA_SHARED`, else `shared`
 * beside the checkout. Found from this file, not the working directory, so a test may run from anywhere.
 * Tests and tools only: library code never reads it.
 */
export function sharedDir(): string {
  return resolve(process.env.PROMPTIQA_SHARED ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'shared'));
}
