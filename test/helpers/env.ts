/**
 * Loaded before every test process (`--import` in package.json's test script): promptiqa's cache (file digests,
 * text features) goes to a folder of this test run, never to the user's, and starts empty, so no test reads what
 * an earlier run or another version left. The test runner makes it; its child processes inherit it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

if (process.env.PROMPTIQA_TEST_CACHE === undefined) {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-test-cache-'));
  process.env.PROMPTIQA_TEST_CACHE = dir;
  process.env.PROMPTIQA_CACHE = dir;
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
}
