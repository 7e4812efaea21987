/**
 * Exclusive locks on outputs, so that two runs never write the same file or run folder at once. A lock
 * is a small JSON file naming its holder (pid, host, start, command). A second run refuses at once and
 * names the holder. A lock whose holder died (kill -9, power cut) does not block forever: on the same
 * host a lock whose pid is gone is taken over; from another host (a shared disk) a lock that the holder
 * has not touched for LOCK_STALE_MS is, as the holder touches it every LOCK_HEARTBEAT_MS.
 */
import {
  closeSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  utimesSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { describeFsError } from './fs.js';

const LOCK_HEARTBEAT_MS = 60_000;
const LOCK_STALE_MS = 5 * LOCK_HEARTBEAT_MS;

/** Who holds a lock, as written in its file. */
export interface LockHolder {
  pid: number;
  host: string;
  since: string;
  command: string;
  /** tells this holding apart from an earlier one of the same process */
  id: string;
}

/** The lock is held by a live run. */
export class LockedError extends Error {
  constructor(
    readonly target: string,
    readonly lockPath: string,
    readonly holder: LockHolder | undefined,
  ) {
    const who = holder
      ? `process ${holder.pid} on ${holder.host}, since ${holder.since}${holder.command ? `: ${holder.command}` : ''}`
      : 'another process';
    super(`${target} is in use by another run (${who}); wait for it to end, or delete ${lockPath} if that run is gone`);
    this.name = 'LockedError';
  }
}

export interface Lock {
  /** the lock file */
  readonly path: string;
  /** Removes the lock file if it is still this holder's; safe to call twice. */
  release(): void;
}

/**
 * The lock file of an output: `FILE.lock` beside a file, `.lock` inside a run folder; through the real
 * path of the folder where it exists, so that two spellings of one output (a link, `..`) share one lock.
 */
export function lockPathFor(target: string, kind: 'file' | 'folder'): string {
  const dir = kind === 'folder' ? resolve(target) : dirname(resolve(target));
  let real = dir;
  try {
    real = realpathSync(dir);
  } catch {
    // not there yet: the writer creates it
  }
  return kind === 'folder' ? join(real, '.lock') : join(real, `${basename(target)}.lock`);
}

const held = new Set<{ path: string; text: string }>();
let exitHookInstalled = false;

/** On process.exit (not on kill -9, which the stale check covers) the locks still held are removed. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const h of held) removeIfMine(h.path, h.text);
  });
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function removeIfMine(path: string, text: string): void {
  if (readText(path) === text) rmSync(path, { force: true });
}

/** The folders the lock made, from `folder` up to `top`, where a refused run left them empty. */
function removeEmptyFolders(folder: string, top: string): void {
  for (let dir = folder; ; dir = dirname(dir)) {
    try {
      rmdirSync(dir);
    } catch {
      return; // not empty (the run wrote something) or already gone
    }
    if (dir === top || dirname(dir) === dir) return;
  }
}

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseHolder(text: string): LockHolder | undefined {
  try {
    const h = JSON.parse(text) as Partial<LockHolder>;
    if (typeof h.pid === 'number' && typeof h.host === 'string') {
      return { pid: h.pid, host: h.host, since: String(h.since ?? '?'), command: String(h.command ?? ''), id: String(h.id ?? '') };
    }
  } catch {
    // not a lock this code wrote: only its age tells
  }
  return undefined;
}

function isStale(holder: LockHolder | undefined, mtimeMs: number, path: string): boolean {
  // a live holder touches its lock every LOCK_HEARTBEAT_MS: an old one is stale whoever it names (a reused pid too)
  if (Date.now() - mtimeMs > LOCK_STALE_MS) return true;
  if (!holder || holder.host !== hostname()) return false;
  // this process's pid on a lock it does not hold: written by an earlier process that had the same pid
  if (holder.pid === process.pid) return ![...held].some((h) => h.path === path);
  return !pidAlive(holder.pid);
}

/**
 * Takes the exclusive lock on `target` (an output file or a run folder, which is created) or throws
 * `LockedError` naming the live holder. The lock file is written whole before it appears (a hard link
 * of a finished temporary file), so a reader never sees a half-written holder.
 */
export function acquireLock(target: string, kind: 'file' | 'folder'): Lock {
  const folder = kind === 'folder' ? resolve(target) : dirname(resolve(target));
  let created: string | undefined;
  const makeFolder = (): void => {
    try {
      created = mkdirSync(folder, { recursive: true }) ?? created;
    } catch (err) {
      throw new Error(`cannot lock ${target}: ${describeFsError(err, folder)}`, { cause: err });
    }
  };
  makeFolder();
  const path = lockPathFor(target, kind);
  const holder: LockHolder = {
    pid: process.pid,
    host: hostname(),
    since: new Date().toISOString(),
    command: process.argv.slice(1).join(' ').slice(0, 300),
    id: randomBytes(8).toString('hex'),
  };
  const text = JSON.stringify(holder) + '\n';
  const tmp = `${path}.${process.pid}.${holder.id}.tmp`;
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        const fd = openSync(tmp, 'wx');
        try {
          writeSync(fd, text);
        } finally {
          closeSync(fd);
        }
        break;
      } catch (err) {
        // another process's release removed the (empty) folder it had made between our mkdir and this open: make it again
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 5) {
          makeFolder();
          continue;
        }
        throw new Error(`cannot lock ${target}: ${describeFsError(err, dirname(path))}`, { cause: err });
      }
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        linkSync(tmp, path);
        const entry = { path, text };
        held.add(entry);
        installExitHook();
        const heartbeat = setInterval(() => {
          try {
            const now = new Date();
            utimesSync(path, now, now);
          } catch {
            // at worst another host takes the lock over as stale
          }
        }, LOCK_HEARTBEAT_MS);
        heartbeat.unref();
        return {
          path,
          release: () => {
            clearInterval(heartbeat);
            held.delete(entry);
            removeIfMine(path, text);
            if (created !== undefined) removeEmptyFolders(folder, created);
          },
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
          throw new Error(`cannot lock ${target}: ${describeFsError(err, path)}`, { cause: err });
      }
      const other = readText(path);
      const st = statSync(path, { throwIfNoEntry: false });
      if (other === undefined || !st) continue; // released meanwhile
      const owner = parseHolder(other);
      if (!isStale(owner, st.mtimeMs, path)) throw new LockedError(target, path, owner);
      takeOverStale(path, other);
    }
    throw new LockedError(target, path, parseHolder(readText(path) ?? ''));
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Removes a stale lock, unless another run replaced it meanwhile: it is first renamed aside (atomic), then
 * compared with what was judged stale; a fresh lock renamed aside by mistake is linked back.
 */
function takeOverStale(path: string, staleText: string): void {
  const aside = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.stale`;
  try {
    renameSync(path, aside);
  } catch {
    return; // gone already
  }
  try {
    if (readText(aside) !== staleText) {
      try {
        linkSync(aside, path);
      } catch {
        // yet another run holds it now; the next attempt reads that one
      }
    }
  } finally {
    rmSync(aside, { force: true });
  }
}

/** Runs `fn` holding the lock on `target`; refuses at once while another live run holds it. */
export async function withLock<T>(target: string, kind: 'file' | 'folder', fn: () => Promise<T>): Promise<T> {
  return holding(acquireLock(target, kind), fn);
}

/**
 * Runs `fn` holding the lock on `target`, waiting (polling every `pollMs`) while another live run holds
 * it: for work that one run does for all, such as a shared download.
 */
export async function withLockWaiting<T>(target: string, kind: 'file' | 'folder', fn: () => Promise<T>, pollMs = 100): Promise<T> {
  for (;;) {
    let lock: Lock;
    try {
      lock = acquireLock(target, kind);
    } catch (err) {
      if (!(err instanceof LockedError)) throw err;
      await new Promise((done) => setTimeout(done, pollMs));
      continue;
    }
    return holding(lock, fn);
  }
}

async function holding<T>(lock: Lock, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } finally {
    lock.release();
  }
}
