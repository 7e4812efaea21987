/**
 * The file work of `promptiqa score`: folders expanded to image files,
 * and the JSON-lines output that a later run resumes.
 */
import { type Stats, closeSync, existsSync, readSync, readdirSync, realpathSync, statSync, truncateSync } from 'node:fs';
import { extname, join, resolve } from 'node:path';
import {
  InputFileError,
  READ_LIMITS,
  describeFsError,
  describeKind,
  openRegularFile,
  readFileHead,
  writeFileAtomic,
} from '../../util/fs.js';
import { packageVersion } from '../../util/version.js';
import type { MetricSource } from '../../methods/index.js';
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

/** Why a path that is not a regular file or a folder (a FIFO, a device, a socket) is not read as an image. */
function notAnImageFile(st: Stats): string {
  return `it is ${describeKind(st)}, not a regular file: skipped`;
}

/**
 * Image files under `dir`, recursively, sorted; hidden entries (".name") are skipped, symlinked folders
 * followed once. A folder that cannot be listed, an image-named link that leads nowhere (missing
 * target, a loop) and an image-named entry that is a FIFO, a device or a socket (itself or through a link: it
 * is never opened, as reading one may never end) are returned in `failed`; the walk goes on.
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
      let special = !isDir && !isFile && !e.isSymbolicLink();
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
        special = st !== undefined && !isDir && !isFile;
      }
      if (isDir) walk(p);
      else if (isFile && isImageName(e.name)) found.push(p);
      else if (special && isImageName(e.name)) {
        let why = 'not a regular file: skipped';
        try {
          why = notAnImageFile(statSync(p));
        } catch {
          // gone meanwhile: the general words
        }
        failed.push({ file: p, error: why });
      }
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
    } else if (!st.isFile()) {
      // a FIFO or a device (/dev/zero, a link to it) is never opened: reading one may never end
      failed.push({ file: arg, error: notAnImageFile(st) });
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
 * What made a score output, as it records it: the first line of a jsonl output, and `FILE.meta.json` beside a
 * csv, json or table output (so that the file itself stays a plain table for any reader). It is told from a
 * score record by having no `file`.
 */
export const SCORES_FORMAT = 'promptiqa-scores/1';
export type OutputHeader = { format: typeof SCORES_FORMAT; version: string } & MetricSource;

export function outputHeader(source: MetricSource): OutputHeader {
  return { format: SCORES_FORMAT, version: packageVersion(), ...source };
}

/** The file beside a csv, json or table output that records what made it. */
export function sidecarPath(output: string): string {
  return `${output}.meta.json`;
}

/** A line of a jsonl output that is its header (see `OutputHeader`). */
export function isHeaderLine(rec: unknown): rec is OutputHeader {
  return typeof rec === 'object' && rec !== null && (rec as { format?: unknown }).format === SCORES_FORMAT && !('file' in rec);
}

/**
 * What a jsonl output says made it: `empty` where there is no file, nothing in it, or only a torn first line (a
 * run killed at once), `header` with it, `unrecorded` where it holds records without a header (an earlier
 * promptiqa, another tool).
 */
export function readOutputHeader(path: string): { state: 'empty' } | { state: 'header'; header: OutputHeader } | { state: 'unrecorded' } {
  if (!existsSync(path)) return { state: 'empty' };
  const head = readFileHead(path, MAX_RECORD_BYTES, 'score output');
  const nl = head.indexOf(0x0a);
  if (head.toString('utf8').trim() === '') return { state: 'empty' };
  const first = (nl < 0 ? head : head.subarray(0, nl)).toString('utf8').trim();
  let rec: unknown;
  try {
    rec = JSON.parse(first);
  } catch {
    if (nl < 0) return { state: 'empty' }; // a torn first line, which the resume cuts off
  }
  return isHeaderLine(rec) ? { state: 'header', header: rec } : { state: 'unrecorded' };
}

/** How the source recorded in an output differs from this run's, one phrase per difference ("method: ..."). */
export function sourceDifferences(recorded: MetricSource, current: MetricSource): string[] {
  // compared as written (JSON), so that a value JSON cannot hold (Infinity) compares as it reads back
  const there = JSON.parse(JSON.stringify(recorded)) as MetricSource;
  const now = JSON.parse(JSON.stringify(current)) as MetricSource;
  const show = (v: unknown): string => (v === undefined ? 'not set' : typeof v === 'string' ? v : JSON.stringify(v));
  const out: string[] = [];
  const differ = (what: string, a: unknown, b: unknown, showA = show(a), showB = show(b)): void => {
    if (JSON.stringify(a) !== JSON.stringify(b)) out.push(`${what} ${showA} there, ${showB} now`);
  };
  differ('method', there.method, now.method);
  differ('pretrained set-up', there.pretrained, now.pretrained, there.pretrained ?? 'none', now.pretrained ?? 'none');
  const ck = (c: MetricSource['checkpoint']): string => (c ? `${c.path} (sha256 ${c.sha256.slice(0, 12)}…)` : 'none');
  differ('checkpoint', there.checkpoint?.sha256, now.checkpoint?.sha256, ck(there.checkpoint), ck(now.checkpoint));
  const model = (m: MetricSource['model'] | undefined): string => (m ? `${m.name} (${m.id.slice(0, 19)}…)` : 'none');
  differ('model', there.model?.id, now.model?.id, model(there.model), model(now.model));
  // another method's options are another list: the method says it
  const a = there.options ?? {};
  const b = now.options ?? {};
  if (there.method === now.method)
    for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) differ(`option ${k}`, a[k], b[k]);
  differ('score range', there.scoreRange, now.scoreRange);
  const exif = (on: true | undefined): string => (on ? 'turned by EXIF orientation' : 'as stored');
  differ('images', there.applyExifOrientation, now.applyExifOrientation, exif(there.applyExifOrientation), exif(now.applyExifOrientation));
  return out;
}

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
  let opened: { fd: number; size: number };
  try {
    opened = openRegularFile(path, 'score output', READ_LIMITS.labels);
  } catch (err) {
    throw err instanceof InputFileError ? new CliError(err.message) : err;
  }
  const { fd, size } = opened;
  try {
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
          if (line === 1 && isHeaderLine(rec)) {
            if (opts.retryFailed) kept.push(raw);
          } else if (typeof rec?.file !== 'string') {
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
