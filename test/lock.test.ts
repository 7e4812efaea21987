import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, mkdirSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { acquireLock, LockedError, lockPathFor } from '../src/util/lock.js';
import { checkWritableFile, checkWritableFolder, writeFileAtomic } from '../src/util/fs.js';
import { train, trainRounds } from '../src/train/index.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'promptiqa-lock-'));
}

test('a lock refuses a second holder at once, naming the first, and is gone after release', () => {
  const dir = tempDir();
  try {
    const target = join(dir, 'scores.jsonl');
    const lock = acquireLock(target, 'file');
    assert.equal(lock.path, lockPathFor(target, 'file'));
    assert.ok(lock.path.endsWith('scores.jsonl.lock'));
    assert.ok(existsSync(lock.path));
    assert.throws(
      () => acquireLock(target, 'file'),
      (err: unknown) => {
        assert.ok(err instanceof LockedError);
        assert.equal(err.holder?.pid, process.pid);
        assert.match(err.message, new RegExp(`scores\\.jsonl is in use by another run \\(process ${process.pid} on `));
        return true;
      },
    );
    // another spelling of the same output (through a link to its folder) meets the same lock
    symlinkSync(dir, join(dir, 'via-link'));
    assert.throws(() => acquireLock(join(dir, 'via-link', 'scores.jsonl'), 'file'), LockedError);
    rmSync(join(dir, 'via-link'));
    lock.release();
    lock.release();
    assert.deepEqual(readdirSync(dir), [], 'no lock or temporary file left');
    acquireLock(target, 'file').release();

    const run = join(dir, 'run');
    const folderLock = acquireLock(run, 'folder');
    assert.equal(folderLock.path, lockPathFor(run, 'folder'));
    assert.throws(() => acquireLock(run, 'folder'), LockedError);
    folderLock.release();
    assert.ok(!existsSync(run), 'the folder the lock made, left empty, goes with it');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a lock left by a process killed with kill -9 is taken over; a live one is not', async () => {
  const dir = tempDir();
  try {
    const target = join(dir, 'scores.jsonl');
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./helpers/lock-child.ts', import.meta.url)), target], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const [first] = (await once(child.stdout, 'data')) as [Buffer];
    assert.equal(first.toString().trim(), 'locked');
    assert.throws(
      () => acquireLock(target, 'file'),
      (err: unknown) => err instanceof LockedError && err.holder?.pid === child.pid,
    );
    child.kill('SIGKILL');
    await once(child, 'exit');
    assert.ok(existsSync(`${target}.lock`), 'kill -9 leaves the lock file');
    const lock = acquireLock(target, 'file');
    lock.release();
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("another host's lock holds while it is touched and is taken over when it goes stale", () => {
  const dir = tempDir();
  try {
    const target = join(dir, 'out.csv');
    const path = `${target}.lock`;
    writeFileSync(
      path,
      JSON.stringify({ pid: 1, host: 'elsewhere.invalid', since: '2026-01-01T00:00:00Z', command: 'promptiqa score', id: 'x' }),
    );
    assert.throws(() => acquireLock(target, 'file'), /process 1 on elsewhere\.invalid/);
    const old = new Date(Date.now() - 3600_000);
    utimesSync(path, old, old);
    acquireLock(target, 'file').release();
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('output checks: a folder, a path under a file and an unwritable folder fail with the reason, leaving nothing', () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'file.txt');
    writeFileSync(file, 'x');
    assert.throws(() => checkWritableFile(dir), new RegExp(`cannot write ${dir}: it is a folder; give a file name`));
    assert.throws(() => checkWritableFile(join(file, 'sub', 'out.jsonl')), new RegExp(`${file} is a file, not a folder`));
    assert.throws(() => checkWritableFolder(join(file, 'run')), new RegExp(`${file} is a file, not a folder`));
    assert.throws(() => checkWritableFolder(file), /it is a file, not a folder/);
    checkWritableFile(join(dir, 'new', 'deeper', 'out.jsonl'));
    checkWritableFile(file);
    checkWritableFolder(join(dir, 'run'));
    if (process.platform === 'linux' && existsSync('/sys/kernel')) {
      // sysfs refuses new files even to root, where chmod would not
      assert.throws(
        () => checkWritableFile('/sys/promptiqa-out.jsonl'),
        /cannot write \/sys\/promptiqa-out\.jsonl: (permission denied|read-only)/,
      );
    }
    if (process.getuid?.() !== 0) {
      const ro = join(dir, 'ro');
      mkdirSync(ro, { mode: 0o555 });
      assert.throws(() => checkWritableFile(join(ro, 'out.jsonl')), /permission denied/);
    }
    assert.deepEqual(readdirSync(dir).sort(), ['file.txt', ...(process.getuid?.() !== 0 ? ['ro'] : [])], 'nothing left behind');

    // an atomic write that cannot rename (a folder in the way) leaves no temporary file
    mkdirSync(join(dir, 'taken'));
    assert.throws(() => writeFileAtomic(join(dir, 'taken'), 'data'), new RegExp(`cannot write ${join(dir, 'taken')}: `));
    // one whose folder cannot be made names the file too
    assert.throws(
      () => writeFileAtomic(join(dir, 'file.txt', 'x.json'), 'data'),
      /cannot write .*file\.txt.x\.json: a part of the path is a file, not a folder/,
    );
    assert.deepEqual(readdirSync(dir).sort(), ['file.txt', ...(process.getuid?.() !== 0 ? ['ro'] : []), 'taken']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train holds the lock on its --out: a second train on the same folder refuses at once, naming the first', async () => {
  const dir = tempDir();
  try {
    const out = join(dir, 'run');
    const held = acquireLock(out, 'folder'); // as a first train would
    // the dataset root does not exist: refusing on the lock must come before anything is read
    await assert.rejects(
      train({ method: 'tang', model: join(dir, 'no-model'), dataset: 'agiqa-3k', root: join(dir, 'no-root'), out }),
      (err: unknown) => err instanceof LockedError && err.holder?.pid === process.pid && /run is in use by another run/.test(err.message),
    );
    await assert.rejects(
      trainRounds({ method: 'tang', model: join(dir, 'no-model'), dataset: 'agiqa-3k', root: join(dir, 'no-root'), out, rounds: 2 }),
      LockedError,
    );
    held.release();
    // without the lock the same call gets as far as the dataset
    await assert.rejects(
      train({ method: 'tang', model: join(dir, 'no-model'), dataset: 'agiqa-3k', root: join(dir, 'no-root'), out }),
      (err: unknown) => !(err instanceof LockedError),
    );
    assert.ok(!existsSync(out), 'the failed run released its lock and left no empty folder');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a lock naming a reused pid, or one nobody has touched for long, is taken over; one held here is not', () => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-lock-'));
  try {
    const target = join(dir, 'out.jsonl');
    const path = lockPathFor(target, 'file');
    const write = (pid: number, ageMs = 0): void => {
      writeFileSync(path, JSON.stringify({ pid, host: hostname(), since: 'earlier', command: 'promptiqa score', id: 'x' }) + '\n');
      const t = new Date(Date.now() - ageMs);
      utimesSync(path, t, t);
    };
    // this process's pid, written by an earlier process that had it (a restarted container): not a holder
    write(process.pid);
    acquireLock(target, 'file').release();
    // a live pid (this machine's init) whose lock has had no heartbeat for an hour: the pid was reused
    write(1, 3_600_000);
    acquireLock(target, 'file').release();
    // a fresh lock of a live process is respected, and so is one this process holds
    write(1);
    assert.throws(() => acquireLock(target, 'file'), LockedError);
    rmSync(path);
    const mine = acquireLock(target, 'file');
    assert.throws(() => acquireLock(target, 'file'), LockedError);
    mine.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a run refused after taking its lock leaves no folder the lock made', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-lock-'));
  try {
    const out = join(dir, 'a', 'b', 'run');
    // the column options belong to csv datasets: refused once the run holds its folder
    await assert.rejects(
      train({ method: 'tang', model: 'unused', dataset: 'agiqa-3k', root: dir, out, mosCol: 'x', epochs: 1 }),
      /mosCol chooses the columns of the generic 'csv' dataset/, // the library's name for it (the command names --mos-col)
    );
    assert.deepEqual(readdirSync(dir), [], 'the folders a, a/b and a/b/run are gone');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("locks taken and released in turn by several processes: a release's removal of an empty folder fails no other", async () => {
  // the hub's download locks live in .locks/<repo>/, made by whoever locks first and removed by its release when empty;
  // another process between its mkdir and its lock file found the folder gone (ENOENT). Before the fix, 3 processes
  // of 400 turns failed this way about one run in two.
  const dir = tempDir();
  try {
    const target = join(dir, '.locks', 'models--a--b', 'etag');
    const child = fileURLToPath(new URL('./helpers/lock-churn-child.ts', import.meta.url));
    const runs = [0, 1, 2, 3].map(() => {
      const p = spawn(process.execPath, ['--import', 'tsx', child, target, '400'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (out += d.toString()));
      return once(p, 'exit').then(([code]) => ({ code: code as number | null, out }));
    });
    for (const r of await Promise.all(runs)) assert.equal(r.code, 0, r.out);
    assert.ok(!existsSync(lockPathFor(target, 'file')), 'no lock is left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
