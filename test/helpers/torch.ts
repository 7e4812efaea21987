/**
 * The Python with torch that the tests of the PyTorch peer run (`scripts/bench_torch.py`, `scripts/blas_core.py`), found
 * as `promptiqa bench` finds it. CI installs one (`apt-get install python3-torch libopenblas0-pthread`, checked by
 * `.ci/run`), so under CI=true a missing one fails the test instead of skipping it.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { findTorchPython } from '../../src/cli/lib/torch.js';

let found: { python: string; version: string } | undefined | null = null;

export function torchPython(t: TestContext): { python: string; version: string } | null {
  if (found === null) found = findTorchPython();
  if (found) return found;
  if (process.env.CI === 'true')
    assert.fail('no Python with torch (python3, /usr/bin/python3): CI installs python3-torch and libopenblas0-pthread');
  t.skip('no Python with torch here (python3, /usr/bin/python3): apt-get install python3-torch libopenblas0-pthread');
  return null;
}
