/**
 * The one sha256-of-a-file helper: both variants give the digest of the whole file (across chunk
 * boundaries, and for an empty file), fail on a missing file, and no other file under src/ defines its own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileDigest, fileSha256, fileSha256Sync } from '../src/util/hash.js';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'src');

test('fileSha256 and fileSha256Sync: the digest of the whole file, whatever its size', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-hash-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // empty, one byte, and sizes around the 64 KiB stream chunk and the 1 MiB sync chunk
  for (const size of [0, 1, (64 << 10) + 3, (1 << 20) - 1, (1 << 20) + 7, 3 * (1 << 20)]) {
    const bytes = Buffer.alloc(size);
    for (let i = 0; i < size; i++) bytes[i] = (i * 31 + (i >> 8)) & 0xff;
    const file = join(dir, `f${size}.bin`);
    writeFileSync(file, bytes);
    const want = createHash('sha256').update(bytes).digest('hex');
    assert.equal(await fileSha256(file), want, `streamed, ${size} bytes`);
    assert.equal(fileSha256Sync(file), want, `sync, ${size} bytes`);
  }
});

test('fileSha256 and fileSha256Sync: a missing file is an ENOENT error', async () => {
  const missing = join(tmpdir(), 'promptiqa-hash-no-such-file', 'x.bin');
  await assert.rejects(fileSha256(missing), { code: 'ENOENT' });
  assert.throws(() => fileSha256Sync(missing), { code: 'ENOENT' });
});

/** Names of functions that look like a file hasher (sha256 and file in the name), with their lines. */
function fileHashersIn(text: string): { name: string; line: number }[] {
  const found: { name: string; line: number }[] = [];
  const def = /function\s+([\w$]+)|(?:const|let)\s+([\w$]+)\s*=\s*(?:async\s*)?(?:function|\([^)]*\)\s*=>|[\w$]+\s*=>)/g;
  for (const m of text.matchAll(def)) {
    const name = (m[1] ?? m[2])!;
    if (/sha256/i.test(name) && /file/i.test(name)) found.push({ name, line: text.slice(0, m.index).split('\n').length });
  }
  return found;
}

test('one place for file hashes: no file under src/ but util/hash.ts defines its own', () => {
  // the check itself, on made-up sources
  assert.deepEqual(fileHashersIn('async function sha256File(p) {}\nconst x = 1;'), [{ name: 'sha256File', line: 1 }]);
  assert.deepEqual(fileHashersIn('const x = 1;\nexport function fileSha256Sync(p) {}'), [{ name: 'fileSha256Sync', line: 2 }]);
  assert.deepEqual(fileHashersIn('const hashFileSha256 = async (p) => p;'), [{ name: 'hashFileSha256', line: 1 }]);
  assert.deepEqual(fileHashersIn('const sha256OfFile = meta.sha256;'), []);
  assert.deepEqual(fileHashersIn("import { fileSha256 } from '../util/hash.js';\nconst id = await fileSha256(f);"), []);

  const offenders: string[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) {
        const rel = relative(SRC, p).split(sep).join('/');
        if (rel === 'util/hash.ts') continue;
        for (const f of fileHashersIn(readFileSync(p, 'utf8'))) offenders.push(`src/${rel}:${f.line}: ${f.name}`);
      }
    }
  };
  walk(SRC);
  assert.deepEqual(offenders, [], 'use fileSha256 / fileSha256Sync from src/util/hash.ts');
});

test('fileDigest: a digest recorded for the same file is reused, a changed file is hashed again, no cache hashes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-digest-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cache = join(dir, 'cache');
  const file = join(dir, 'weights.bin');
  writeFileSync(file, 'first');
  const first = createHash('sha256').update('first').digest('hex');
  assert.equal(await fileDigest(file, cache), first);
  // the entry is trusted while the file's identity holds: a planted digest comes back without the file being read
  const [entry] = readdirSync(join(cache, 'digests'));
  const path = join(cache, 'digests', entry!);
  const planted = 'f'.repeat(64);
  writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), sha256: planted }));
  assert.equal(await fileDigest(file, cache), planted);
  assert.equal(await fileDigest(file, null), first, 'no cache: hashed');
  // any change of the file (here its size, times and content) is a miss: hashed and recorded again
  writeFileSync(file, 'second, longer');
  const second = createHash('sha256').update('second, longer').digest('hex');
  assert.equal(await fileDigest(file, cache), second);
  assert.equal(await fileDigest(file, cache), second);
  // a damaged entry is a miss too
  writeFileSync(path, '{not json');
  assert.equal(await fileDigest(file, cache), second);
  // an unwritable cache (a file where its folder would be) only means no entry is kept
  const blocked = join(dir, 'blocked');
  writeFileSync(blocked, '');
  assert.equal(await fileDigest(file, blocked), second);
});

test("fileDigest: a Hugging Face cache's LFS blob is named by its sha256, which is taken without reading it", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-digest-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const name = 'a'.repeat(64);
  const blob = join(dir, 'models--openai--clip', 'blobs', name);
  mkdirSync(dirname(blob), { recursive: true });
  writeFileSync(blob, 'not what the name says');
  const snapshot = join(dir, 'models--openai--clip', 'snapshots', 'c0ffee', 'model.safetensors');
  mkdirSync(dirname(snapshot), { recursive: true });
  symlinkSync(join('..', '..', 'blobs', name), snapshot);
  assert.equal(await fileDigest(snapshot, null), name, 'through the snapshot link');
  // outside a hub cache's layout, a 64-hex name is just a name
  const plain = join(dir, 'blobs', name);
  mkdirSync(dirname(plain), { recursive: true });
  writeFileSync(plain, 'x');
  assert.equal(await fileDigest(plain, null), createHash('sha256').update('x').digest('hex'));
});
