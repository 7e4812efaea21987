/**
 * The file work of `promptiqa score`: folders expanded to image files,
 * and the JSON-lines output that a later run resumes.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync, readdirSync, realpathSync, statSync, truncateSync } from 'node:fs';
import { extname, join, resolve } from 'node:path';
import { describeFsError, writeFileAtomic } from '../../util/fs.js';
import { CliError } from '../io.js';

export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.gif', '.bmp'];

export function isImageName(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(extname(name).toLowerCase());
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A path that cannot be scored, with the problem (without the path). */
export interface InputFailure {
  file: string;
  error: string;
}

/**
 * The one name of a file for matching (resume, duplicates, dataset labels): its real path with links
 * resolved, or the absolute path when it does not exist.
 */
export function canonicalPath(p: string): string {
  try {
    return realpathSync.native(p);
  } catch {
    return resolve(p);
  }
}

/**
 * Image files under `dir`, recursively, sorted; hidden entries (".name") are skipped, symlinked folders
 * followed once. A folder that cannot be listed and an image-named link that leads nowhere (missing
 * target, a loop) are returned in `failed`; the walk goes on.
 */
export function listImagesUnder(dir: string): { files: string[]; failed: InputFailure[] } {
  const found: string[] = [];
  const failed: InputFailure[] = [];
  const seen = new Set<string>();
  const walk = (d: string): void => {
    let real: string;
    try {
      real = realpathSync(d);
    } catch (err) {
      failed.push({ file: d, error: `cannot open the folder: ${describeFsError(err)}` });
      return;
    }
    if (seen.has(real)) return; // a symlink loop
    seen.add(real);
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch (err) {
      failed.push({ file: d, error: `cannot list the folder: ${describeFsError(err)}` });
      return;
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        let st;
        try {
          st = statSync(p, { throwIfNoEntry: false });
        } catch (err) {
          if (isImageName(e.name)) failed.push({ file: p, error: describeFsError(err) });
          continue;
        }
        if (!st && isImageName(e.name)) failed.push({ file: p, error: 'a link to a file that does not exist' });
        isDir = st?.isDirectory() ?? false;
        isFile = st?.isFile() ?? false;
      }
      if (isDir) walk(p);
      else if (isFile && isImageName(e.name)) found.push(p);
    }
  };
  walk(dir);
  return { files: found.sort(byCodeUnits), failed: failed.sort((a, b) => byCodeUnits(a.file, b.file)) };
}

/**
 * The image files that the arguments name: a file as given, a folder as its image files (recursively,
 * sorted). A file listed twice is scored once. A path that does not exist or cannot be read is returned
 * in `failed` (the run reports it and goes on); `empty` lists the folders that held no image.
 */
export function expandInputs(args: readonly string[]): { files: string[]; empty: string[]; failed: InputFailure[] } {
  const files: string[] = [];
  const empty: string[] = [];
  const failed: InputFailure[] = [];
  const seen = new Set<string>();
  const add = (f: string): void => {
    const key = canonicalPath(f);
    if (seen.has(key)) return;
    seen.add(key);
    files.push(f);
  };
  for (const arg of args) {
    let st;
    try {
      st = statSync(arg, { throwIfNoEntry: false });
    } catch (err) {
      failed.push({ file: arg, error: describeFsError(err) });
      continue;
    }
    if (!st) {
      failed.push({ file: arg, error: 'no such file or folder' });
    } else if (st.isDirectory()) {
      const found = listImagesUnder(arg);
      if (found.files.length === 0 && found.failed.length === 0) empty.push(arg);
      found.files.forEach(add);
      failed.push(...found.failed);
    } else {
      add(arg);
    }
  }
  return { files, empty, failed };
}

/** A record of the score output; `mos` when the images are a dataset's. */
export type ScoreRecord = ({ file: string; score: number } | { file: string; error: string }) & { mos?: number };

/** What an earlier run's JSON-lines output holds. */
export interface ResumeState {
  /** files whose records are kept (canonical paths): not to be scored again */
  done: Set<string>;
  /** records kept */
  records: number;
  /** a torn last line was cut off */
  dropped: boolean;
  /** records of failed files taken out to be tried again (`retryFailed`) */
  retried: number;
}

/** A line longer than this is not a score record (and would not be held in memory). */
const MAX_RECORD_BYTES = 1 << 20;
const READ_CHUNK = 1 << 20;

/**
 * Reads a JSON-lines score file that an earlier run wrote, for resuming: the files it holds and how
 * many records. Recorded paths are matched as real paths (relative ones as seen from here), so a run
 * resumed from another folder finds them. A torn last line (a run killed mid-write) is cut off so that
 * appending continues on a clean line. With `retryFailed` the records of failed files are taken out (the
 * file is rewritten atomically) so that they are scored again. A damaged line elsewhere is an error, as
 * is a file that is not such an output. The file is read in chunks: memory stays bounded whatever it is.
 */
export function prepareResume(path: string, opts: { retryFailed?: boolean } = {}): ResumeState {
  const done = new Set<string>();
  const state: ResumeState = { done, records: 0, dropped: false, retried: 0 };
  if (!existsSync(path)) return state;
  const notRecord = (line: number): CliError =>
    new CliError(`${path}:${line}: not a score record ({"file": ..., "score" or "error": ...}); is --output the right file?`);
  const kept: string[] = []; // lines kept when failed records are taken out
  let keep = 0; // bytes of complete, valid records
  let line = 0;
  let carry = Buffer.alloc(0);
  let fileOffset = 0; // of carry[0]
  let pendingBad = 0; // a line that did not parse; fine only if it turns out to be the torn last line
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const chunk = Buffer.alloc(READ_CHUNK);
    let readAt = 0;
    for (;;) {
      const n = readAt < size ? readSync(fd, chunk, 0, Math.min(READ_CHUNK, size - readAt), readAt) : 0;
      readAt += n;
      const buf = carry.length ? Buffer.concat([carry, chunk.subarray(0, n)]) : Buffer.from(chunk.subarray(0, n));
      let pos = 0;
      for (;;) {
        const nl = buf.indexOf(0x0a, pos);
        if (nl < 0) break;
        if (pendingBad) throw notRecord(pendingBad);
        line++;
        const raw = buf.subarray(pos, nl).toString('utf8');
        const text = raw.trim();
        const end = fileOffset + nl + 1;
        if (text !== '') {
          let rec: { file?: unknown; error?: unknown } | undefined;
          try {
            rec = JSON.parse(text) as typeof rec;
          } catch {
            rec = undefined;
          }
          if (typeof rec?.file !== 'string') {
            pendingBad = line; // an error unless nothing follows it
          } else if (opts.retryFailed && rec.error !== undefined) {
            state.retried++;
          } else {
            done.add(canonicalPath(rec.file));
            state.records++;
            if (opts.retryFailed) kept.push(raw);
          }
        }
        if (!pendingBad) keep = end;
        pos = nl + 1;
      }
      carry = buf.subarray(pos);
      fileOffset += pos;
      if (carry.length > MAX_RECORD_BYTES) throw notRecord(line + 1);
      if (n === 0) break;
    }
  } finally {
    closeSync(fd);
  }
  state.dropped = pendingBad > 0 || carry.length > 0;
  if (state.retried > 0) writeFileAtomic(path, kept.map((l) => l + '\n').join(''));
  else if (state.dropped) truncateSync(path, keep);
  return state;
}
