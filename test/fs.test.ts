import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputFileError, formatBytes, readFileHead, readRegularFile, readRegularText } from '../src/util/fs.js';

test('readRegularFile reads a regular file whole, through a link', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-fs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'a.csv'), 'x,y\n1,2\n');
  symlinkSync(join(dir, 'a.csv'), join(dir, 'link.csv'));
  assert.equal(readRegularText(join(dir, 'a.csv'), 'label file', 100), 'x,y\n1,2\n');
  assert.equal(readRegularText(join(dir, 'link.csv'), 'label file', 100), 'x,y\n1,2\n');
  assert.deepEqual([...readFileHead(join(dir, 'a.csv'), 3)], [...Buffer.from('x,y')]);
});

test('readRegularFile refuses devices, FIFOs, folders and files over the cap, naming the file and what it is', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-fs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const refused = (path: string, re: RegExp, cap = 1 << 20) =>
    assert.throws(
      () => readRegularFile(path, 'label file', cap),
      (e: unknown) => e instanceof InputFileError && e.path === path && e.message.includes(`label file ${path}`) && re.test(e.message),
    );
  refused('/dev/zero', /character device/);
  symlinkSync('/dev/zero', join(dir, 'zero.jpg'));
  refused(join(dir, 'zero.jpg'), /character device/);
  refused(dir, /a folder/);
  refused(join(dir, 'missing.csv'), /no such file/);
  // a FIFO with no writer: refused at once instead of blocking the process forever
  execFileSync('mkfifo', [join(dir, 'pipe.csv')]);
  refused(join(dir, 'pipe.csv'), /FIFO/);
  assert.throws(() => readFileHead(join(dir, 'pipe.csv'), 8), /FIFO/);
  writeFileSync(join(dir, 'big.csv'), Buffer.alloc(2000));
  refused(join(dir, 'big.csv'), /2\.0 kB, more than the 1\.0 kB/, 1000);
  assert.equal(readRegularFile(join(dir, 'big.csv'), 'label file', 2000).length, 2000);
});

test('formatBytes', () => {
  assert.equal(formatBytes(347), '347 bytes');
  assert.equal(formatBytes(1_500_000_000), '1.5 GB');
  assert.equal(formatBytes(2 ** 60), '1.2 EB');
});
