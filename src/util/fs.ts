import {
  accessSync,
  closeSync,
  constants as fsConstants,
  fstatSync,
  fsyncSync,
  openSync,
  readSync,
  renameSync,
  writeSync,
  mkdirSync,
  lstatSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  statfsSync,
  type Stats,
} from 'node:fs';
import { dirname, basename, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Writes a file atomically: the bytes go to a temporary file beside the target, are flushed to disk,
 * and the temporary file is renamed over the target. A reader never sees a half-written file, a process
 * killed midway leaves the old file intact, and a failure (a full disk, a folder in the way) leaves no
 * temporary file behind. Only a regular file (or nothing) is ever replaced: a link is followed and its target
 * replaced (the link stays), a character device or a FIFO (`/dev/null`, a named pipe) is written directly, and
 * anything else (a folder, a block device, a socket) is refused (see `outputTarget`).
 */
export function writeFileAtomic(path: string, data: string | Uint8Array | readonly Uint8Array[]): void {
  const parts = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  const target = outputTarget(path);
  if (target.kind === 'stream') {
    writeDirect(target, parts);
    return;
  }
  const file = target.path;
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    mkdirSync(dirname(file), { recursive: true });
    const fd = openSync(tmp, 'w');
    try {
      writeAll(fd, parts);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // the temporary file was never made (its folder could not be)
    }
    throw new OutputError(`cannot write ${path}: ${describeCreateError(err, dirname(file))}`, { cause: err });
  }
}

function writeAll(fd: number, parts: readonly Uint8Array[]): void {
  for (const part of parts) {
    let off = 0;
    while (off < part.length) off += writeSync(fd, part, off, part.length - off);
  }
}

/** Writes into a character device, a FIFO or an open descriptor as it is (no temporary file, no rename, no fsync, which they do not take). */
function writeDirect(target: OutputTarget & { kind: 'stream' }, parts: readonly Uint8Array[]): void {
  try {
    const out = openOutputStream(target);
    try {
      writeAll(out.fd, parts);
    } finally {
      out.close();
    }
  } catch (err) {
    throw new OutputError(`cannot write ${target.path}: ${describeFsError(err)}`, { cause: err });
  }
}

/**
 * Where an output named `path` goes. `file`: a regular file, or nothing yet, at `path` (the real path of the
 * target where `path` is a link), which is written atomically; `stream`: a character device or a FIFO, written
 * directly (`what` says which). A folder, a block device, a socket and a link that leads nowhere are refused.
 */
export type OutputTarget = { kind: 'file'; path: string } | { kind: 'stream'; path: string; what: string; fd?: number };

/**
 * Opens a `stream` output for writing: the descriptor it names where it is one of this process's (shared with
 * it, so that what is written lands where standard output's own writes do, and left open), else the path
 * opened for appending (so that a file the shell redirected to with `>` or `>>` keeps what came before).
 */
export function openOutputStream(target: OutputTarget & { kind: 'stream' }): { fd: number; close: () => void } {
  if (target.fd !== undefined) return { fd: target.fd, close: () => undefined };
  const fd = openSync(target.path, fsConstants.O_WRONLY | fsConstants.O_APPEND);
  return { fd, close: () => closeSync(fd) };
}

export function outputTarget(path: string): OutputTarget {
  const fail = (why: string, cause?: unknown): never => {
    throw new OutputError(`cannot write ${path}: ${why}`, cause === undefined ? undefined : { cause });
  };
  let link: ReturnType<typeof lstatSync>;
  try {
    link = lstatSync(path, { throwIfNoEntry: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return { kind: 'file', path };
    return fail(describeFsError(err), err);
  }
  if (!link) return { kind: 'file', path };
  // /dev/stdout and its kind name a descriptor this process already has open (a terminal, a pipe, the file the
  // shell redirected to): written through, never replaced, whatever it leads to
  const open = OPEN_DESCRIPTOR.exec(resolve(path));
  if (open) {
    const [, std, devFd, pid, procFd] = open;
    const mine = pid === undefined || pid === 'self' || pid === String(process.pid);
    const fd = std === 'stdout' ? 1 : std === 'stderr' ? 2 : mine ? Number(devFd ?? procFd) : undefined;
    return { kind: 'stream', path, what: 'an open descriptor', ...(fd === undefined ? {} : { fd }) };
  }
  let st: ReturnType<typeof statSync> = link;
  if (link.isSymbolicLink()) {
    try {
      st = statSync(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        let to = '?';
        try {
          to = readlinkSync(path);
        } catch {
          // gone meanwhile
        }
        return fail(`it is a link to ${to}, which does not exist`, err);
      }
      return fail(describeFsError(err), err);
    }
  }
  if (st.isDirectory()) return fail('it is a folder; give a file name');
  if (st.isCharacterDevice() || st.isFIFO()) return { kind: 'stream', path, what: describeKind(st) };
  if (!st.isFile()) return fail(`it is ${describeKind(st)}; an output is written into a regular file, a character device or a FIFO`);
  if (!link.isSymbolicLink()) return { kind: 'file', path };
  try {
    return { kind: 'file', path: realpathSync.native(path) };
  } catch (err) {
    return fail(`cannot follow the link: ${describeFsError(err)}`, err);
  }
}

/** The names of this process's open descriptors: /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N. */
const OPEN_DESCRIPTOR = /^\/(?:dev\/(?:(stdout|stderr)|fd\/(\d+))|proc\/(self|\d+)\/fd\/(\d+))$/;

/** Names of the kernel's own file systems, by statfs magic, where files cannot be created. */
const KERNEL_FILE_SYSTEMS: ReadonlyMap<number, string> = new Map([
  [0x9fa0, "procfs, the kernel's view of processes and settings"],
  [0x62656572, "sysfs, the kernel's view of devices"],
  [0x64626720, 'debugfs'],
  [0x73636673, 'securityfs'],
  [0x63677270, 'cgroupfs'],
]);

function isFolder(p: string): boolean {
  try {
    return statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
  } catch {
    return false;
  }
}

/**
 * Why a file could not be made in `dir`: the file-system error in words, except that "no such file" for a folder
 * that exists is the kernel's way of saying that it makes no new files there (/proc).
 */
function describeCreateError(err: unknown, dir: string): string {
  if ((err as NodeJS.ErrnoException)?.code === 'ENOENT' && isFolder(dir)) {
    let fs = '';
    try {
      const name = KERNEL_FILE_SYSTEMS.get(Number(statfsSync(dir).type));
      if (name) fs = ` (${name})`;
    } catch {
      // no statfs: the sentence stands without the name
    }
    return `files cannot be created in ${dir}${fs}`;
  }
  return describeFsError(err, dir);
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
    throw new OutputError(`cannot write ${target}: ${describeCreateError(err, dir)}`, { cause: err });
  }
  rmSync(probe, { force: true });
}

/**
 * Checks, before any long work, that the file `path` can be written (created, replaced atomically or
 * appended to) and leaves nothing behind: not a folder, every existing parent a folder, the nearest
 * existing parent writable, an existing file openable for writing. A character device or a FIFO is checked
 * for write permission only (opening one can block or act). Returns where the output goes (`outputTarget`).
 */
export function checkWritableFile(path: string): OutputTarget {
  const target = outputTarget(path);
  if (target.kind === 'stream') {
    try {
      accessSync(path, fsConstants.W_OK);
    } catch (err) {
      throw new OutputError(`cannot write ${path}: ${describeFsError(err)}`, { cause: err });
    }
    return target;
  }
  const file = target.path;
  const st = statIfThere(file);
  probeFolder(path, nearestFolder(path, dirname(resolve(file))));
  if (st) {
    try {
      closeSync(openSync(file, 'r+'));
    } catch (err) {
      throw new OutputError(`cannot write ${path}: ${describeFsError(err)}`, { cause: err });
    }
  }
  return target;
}

/** Checks, before any long work, that files can be written in the folder `dir` (created if missing); leaves nothing behind. */
export function checkWritableFolder(dir: string): void {
  const st = statIfThere(dir);
  if (st && !st.isDirectory())
    throw new OutputError(`cannot write in ${dir}: it is ${st.isFile() ? 'a file' : describeKind(st)}, not a folder`);
  probeFolder(dir, nearestFolder(dir, dir));
}

/** The first `bytes` bytes of a file (fewer when it is shorter): enough to tell its format. */
export function readFileHead(path: string, bytes: number, what = 'file'): Buffer {
  const head = Buffer.alloc(bytes);
  const { fd } = openRegularFile(path, what);
  try {
    return head.subarray(0, readSync(fd, head, 0, bytes, 0));
  } finally {
    closeSync(fd);
  }
}

/** What a file that is not a regular file is, in words: "a FIFO", "a character device", … */
export function describeKind(st: Pick<Stats, 'isDirectory' | 'isFIFO' | 'isCharacterDevice' | 'isBlockDevice' | 'isSocket'>): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** A file that cannot be read as the input it was given as: not a regular file, too large, unreadable. */
export class InputFileError extends Error {
  constructor(
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'InputFileError';
  }
}

/** The size caps of the files promptiqa reads, by kind: a file above its cap is refused before it is read. */
export const READ_LIMITS = {
  /** label files (CSV, JSON lists) and score outputs (csv, jsonl) */
  labels: 1 << 30,
  /** small JSON files: configs, checkpoint metadata, tokenizer vocabularies */
  json: 256 << 20,
} as const;

/** Sizes for messages: "1.5 GB", "347 bytes". */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} bytes`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB', 'EB'];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/**
 * Why a file with these stats cannot be read as an input of at most `maxBytes` ("it is a FIFO (named pipe), not a
 * regular file", "it is 2.1 GB, more than …"), or undefined when it can. For callers that open the file themselves
 * (asynchronously, with O_NONBLOCK, as `openRegularFile` does).
 */
export function notReadableInput(st: Stats, maxBytes: number): string | undefined {
  if (!st.isFile()) return `it is ${describeKind(st)}, not a regular file`;
  if (st.size > maxBytes) return `it is ${formatBytes(st.size)}, more than the ${formatBytes(maxBytes)} such a file may be`;
  return undefined;
}

/**
 * Opens `path` for reading, checked to be a regular file (a link is followed to its target) of at most
 * `maxBytes`: a FIFO, a device or a folder is refused before anything is read, and never blocks (the file is
 * opened non-blocking). Returns the descriptor, which the caller closes, and the size.
 */
export function openRegularFile(path: string, what: string, maxBytes = Number.MAX_SAFE_INTEGER): { fd: number; size: number } {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw new InputFileError(path, `cannot read ${what} ${path}: ${describeFsError(err)}`, { cause: err });
  }
  try {
    const st = fstatSync(fd);
    const problem = notReadableInput(st, maxBytes);
    if (problem !== undefined) throw new InputFileError(path, `cannot read ${what} ${path}: ${problem}`);
    return { fd, size: st.size };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** The whole of a regular file of at most `maxBytes` (see `openRegularFile`), for `what` ("label file", …) in messages. */
export function readRegularFile(path: string, what: string, maxBytes: number): Buffer {
  const { fd, size } = openRegularFile(path, what, maxBytes);
  try {
    const buf = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, buf, off, size - off, off);
      if (n === 0) break; // truncated while being read: what is there
      off += n;
    }
    return off === size ? buf : buf.subarray(0, off);
  } catch (err) {
    if (err instanceof InputFileError) throw err;
    throw new InputFileError(path, `cannot read ${what} ${path}: ${describeFsError(err)}`, { cause: err });
  } finally {
    closeSync(fd);
  }
}

/** `readRegularFile` as UTF-8 text. */
export function readRegularText(path: string, what: string, maxBytes: number): string {
  return readRegularFile(path, what, maxBytes).toString('utf8');
}
