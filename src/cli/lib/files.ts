/**
 * The file work of `promptiqa score`: folders expanded to image files, and the JSON-lines output that a
 * later run resumes.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync, readdirSync, realpathSync, statSync, truncateSync } from 'node:fs';
import { extname, join, resolve } from 'node:path';
import { CliError } from '../io.js';

export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.gif', '.bmp'];

export function isImageName(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(extname(name).toLowerCase());
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Image files under `dir`, recursively, sorted; hidden entries (".name") are skipped, symlinked folders followed once. */
export function listImagesUnder(dir: string): string[] {
  const found: string[] = [];
  const seen = new Set<string>();
  const walk = (d: string): void => {
    let real: string;
    try {
      real = realpathSync(d);
    } catch {
      return;
    }
    if (seen.has(real)) return; // a symlink loop
    seen.add(real);
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch (err) {
      throw new CliError(`${d}: cannot list the folder (${(err as Error).message})`);
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        const st = statSync(p, { throwIfNoEntry: false });
        isDir = st?.isDirectory() ?? false;
        isFile = st?.isFile() ?? false;
      }
      if (isDir) walk(p);
      else if (isFile && isImageName(e.name)) found.push(p);
    }
  };
  walk(dir);
  return found.sort(byCodeUnits);
}

/**
 * The image files that the arguments name: a file as given, a folder as its image files (recursively,
 * sorted). A path that does not exist is an error; a file listed twice is scored once. `empty` lists the
 * folders that held no image.
 */
export function expandInputs(args: readonly string[]): { files: string[]; empty: string[] } {
  const files: string[] = [];
  const empty: string[] = [];
  const seen = new Set<string>();
  const add = (f: string): void => {
    const key = resolve(f);
    if (seen.has(key)) return;
    seen.add(key);
    files.push(f);
  };
  for (const arg of args) {
    const st = statSync(arg, { throwIfNoEntry: false });
    if (!st) throw new CliError(`${arg}: no such file or folder`);
    if (st.isDirectory()) {
      const found = listImagesUnder(arg);
      if (found.length === 0) empty.push(arg);
      found.forEach(add);
    } else {
      add(arg);
    }
  }
  return { files, empty };
}

/** A record of the score output. */
export type ScoreRecord = { file: string; score: number } | { file: string; error: string };

/**
 * Reads a JSON-lines score file that an earlier run wrote, for resuming: the files it holds (as
 * absolute paths) and how many records. A torn last line (a run killed mid-write) is cut off the file
 * so that appending continues on a clean line. A damaged line elsewhere is an error, as is a file that
 * is not such an output.
 */
export function prepareResume(path: string): { done: Set<string>; records: number; dropped: boolean } {
  const done = new Set<string>();
  if (!existsSync(path)) return { done, records: 0, dropped: false };
  const fd = openSync(path, 'r');
  let buf: Buffer;
  try {
    const size = fstatSync(fd).size;
    buf = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, buf, off, size - off, off);
      if (n === 0) break;
      off += n;
    }
  } finally {
    closeSync(fd);
  }
  let pos = 0;
  let keep = 0; // bytes of complete, valid records
  let line = 0;
  let records = 0;
  let dropped = false;
  while (pos < buf.length) {
    const nl = buf.indexOf(0x0a, pos);
    line++;
    if (nl < 0) {
      dropped = true; // no newline: the last write was cut short
      break;
    }
    const text = buf.subarray(pos, nl).toString('utf8').trim();
    const next = nl + 1;
    if (text !== '') {
      let rec: unknown;
      try {
        rec = JSON.parse(text);
      } catch {
        rec = undefined;
      }
      const file = (rec as { file?: unknown } | undefined)?.file;
      if (typeof file !== 'string') {
        if (next >= buf.length) {
          dropped = true;
          break;
        }
        throw new CliError(`${path}:${line}: not a score record ({"file": ..., "score" or "error": ...}); is --output the right file?`);
      }
      done.add(resolve(file));
      records++;
    }
    keep = next;
    pos = next;
  }
  if (keep < buf.length) truncateSync(path, keep);
  return { done, records, dropped };
}
