import { closeSync, fsyncSync, openSync, readSync, renameSync, writeSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname, basename, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Writes a file atomically: the bytes go to a temporary file beside the target, are flushed to disk,
 * and the temporary file is renamed over the target. A reader never sees a half-written file, a process
 * killed midway leaves the old file intact, and a failure (a full disk, a folder in the way) leaves no
 * temporary file behind.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array | readonly Uint8Array[]): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    mkdirSync(dirname(path), { recursive: true });
    const fd = openSync(tmp, 'w');
    try {
      const parts = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
      for (const part of parts) {
        let off = 0;
        while (off < part.length) off += writeSync(fd, part, off, part.length - off);
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // the temporary file was never made (its folder could not be)
    }
    throw new OutputError(`cannot write ${path}: ${describeFsError(err)}`, { cause: err });
  }
}

/** A file-system error in words, for a message that already names the file: "permission denied", … */
export function describeFsError(err: unknown, path?: string): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'EACCES':
    case 'EPERM':
      return `permission denied${path ? ` (${path})` : ''}`;
    case 'EROFS':
      return `read-only file system${path ? ` (${path})` : ''}`;
    case 'ENOSPC':
      return 'no space left on the device';
    case 'ENOENT':
      return `no such file or folder${path ? ` (${path})` : ''}`;
    case 'EEXIST':
      // mkdir of a folder that is a file
      return e.syscall === 'mkdir' ? `a part of the path is a file, not a folder${path ? ` (${path})` : ''}` : e.message;
    case 'ENOTDIR':
      return `a part of the path is a file, not a folder${path ? ` (${path})` : ''}`;
    case 'EISDIR':
      return 'is a folder, not a file';
    case 'ELOOP':
      return 'a symbolic link loop';
    default:
      return e instanceof Error ? e.message : String(err);
  }
}

/** An output location that cannot be written. */
export class OutputError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OutputError';
  }
}

/** stat, or undefined where nothing is (a missing path, or one under a file). */
function statIfThere(p: string): ReturnType<typeof statSync> {
  try {
    return statSync(p, { throwIfNoEntry: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw new OutputError(`cannot write ${p}: ${describeFsError(err)}`, { cause: err });
  }
}

/**
 * The nearest folder at or above `path` that exists, checked to be a folder. Its missing descendants are
 * created later by the writer.
 */
function nearestFolder(target: string, path: string): string {
  let p = resolve(path);
  for (;;) {
    const st = statIfThere(p);
    if (st) {
      if (!st.isDirectory()) throw new OutputError(`cannot write ${target}: ${p} is a file, not a folder`);
      return p;
    }
    const up = dirname(p);
    if (up === p) throw new OutputError(`cannot write ${target}: no such folder ${p}`);
    p = up;
  }
}

/** Creates and removes a probe file in `dir`: the one sure test that files can be made there. */
function probeFolder(target: string, dir: string): void {
  const probe = join(dir, `.promptiqa-probe.${process.pid}.${randomBytes(4).toString('hex')}`);
  try {
    closeSync(openSync(probe, 'wx'));
  } catch (err) {
    throw new OutputError(`cannot write ${target}: ${describeFsError(err, dir)}`, { cause: err });
  }
  rmSync(probe, { force: true });
}

/**
 * Checks, before any long work, that the file `path` can be written (created, replaced atomically or
 * appended to) and leaves nothing behind: not a folder, every existing parent a folder, the nearest
 * existing parent writable, an existing file openable for writing.
 */
export function checkWritableFile(path: string): void {
  const st = statIfThere(path);
  if (st?.isDirectory()) throw new OutputError(`cannot write ${path}: it is a folder; give a file name`);
  probeFolder(path, nearestFolder(path, dirname(resolve(path))));
  if (st) {
    try {
      closeSync(openSync(path, 'r+'));
    } catch (err) {
      throw new OutputError(`cannot write ${path}: ${describeFsError(err)}`, { cause: err });
    }
  }
}

/** Checks, before any long work, that files can be written in the folder `dir` (created if missing); leaves nothing behind. */
export function checkWritableFolder(dir: string): void {
  const st = statIfThere(dir);
  if (st && !st.isDirectory()) throw new OutputError(`cannot write in ${dir}: it is a file, not a folder`);
  probeFolder(dir, nearestFolder(dir, dir));
}

/** The first `bytes` bytes of a file (fewer when it is shorter): enough to tell its format. */
export function readFileHead(path: string, bytes: number): Buffer {
  const head = Buffer.alloc(bytes);
  const fd = openSync(path, 'r');
  try {
    return head.subarray(0, readSync(fd, head, 0, bytes, 0));
  } finally {
    closeSync(fd);
  }
}
