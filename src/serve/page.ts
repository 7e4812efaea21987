/**
 * The page served at `/` (static files in the package's `page/` folder, no build step) and the read-only
 * endpoints it uses under `--root`:
 *
 * - `GET /v1/browse?path=DIR` the entries of a folder (folders, images, score outputs, eval and train runs);
 * - `GET /v1/file?path=FILE[&size=N]` an image (or a run's SVG figure), with its Content-Type; with `size`, a
 *   thumbnail of at most N×N pixels (WebP), so that a gallery of thousands of photos moves little;
 * - `GET /v1/output?path=FILE&offset=&limit=&sort=score|file|none` a `score` output (jsonl, csv or json) as
 *   records, a page at a time, with what made it (the jsonl's header line, or the csv/json's FILE.meta.json);
 * - `GET /v1/run?path=DIR` an eval run (report.json) or a train run (result.json, train.jsonl) and its figures.
 *
 * Every path is resolved after its links and must lie inside the root: anything else answers 403 and reads
 * nothing. Files are read as regular files under a size cap. Without a root these answer 404.
 */
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import sharp from 'sharp';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { DEFAULT_MAX_PIXELS } from '../data/image.js';
import { getMethod } from '../methods/index.js';
import { decodeCsvText, parseCsv } from '../util/csv.js';
import { READ_LIMITS, describeFsError, readRegularFile } from '../util/fs.js';

export interface PageOptions {
  /** the folder whose files (images, score outputs, eval and train runs) the page may open; none: nothing can be opened */
  root?: string;
}

/** The page's static files: `page/` at the package's top, two levels above this module in src/ and in dist/. */
export const PAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'page');

/**
 * The page loads nothing from another host and runs no inline script: its own files, its API, the images it
 * is given (blob: URLs of dropped files) and nothing else.
 */
const PAGE_CSP =
  "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/** The largest image (or figure) sent to the page. */
const MAX_IMAGE_BYTES = 64 << 20;
/** The most entries a folder listing shows. */
const MAX_ENTRIES = 10000;
/** The most records one page of an output holds. */
const MAX_PAGE = 5000;

const IMAGE_TYPES: Readonly<Record<string, string>> = {
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.webp': 'image/webp',
  '.gif': 'image/gif',
  '.bmp': 'image/bmp',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
  '.svg': 'image/svg+xml',
};
const OUTPUT_EXTENSIONS = ['.jsonl', '.csv', '.json'];
const RUN_FILES = ['report.json', 'result.json', 'train.jsonl'];

/** An answer other than 200, with the message the page shows. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A file or folder under the root: its real path and its path relative to the root (as the page names it). */
interface Located {
  abs: string;
  rel: string;
}

/** One record of a score output, as the page gets it; `path` (relative to the root) where the image lies under it. */
export interface OutputRecord {
  i: number;
  file: string;
  path?: string;
  score?: number;
  error?: string;
  mos?: number;
}

interface ParsedOutput {
  header: Record<string, unknown> | null;
  records: OutputRecord[];
  problems: string[];
}

export async function registerPage(app: FastifyInstance, opts: PageOptions): Promise<void> {
  await app.register(fastifyStatic, {
    root: PAGE_DIR,
    prefix: '/',
    index: 'index.html',
    wildcard: false,
    setHeaders: (res) => {
      res.setHeader('Content-Security-Policy', PAGE_CSP);
      res.setHeader('X-Content-Type-Options', 'nosniff');
      res.setHeader('Referrer-Policy', 'no-referrer');
    },
  });

  const root = opts.root === undefined ? undefined : resolve(opts.root);
  let rootReal: string | undefined;
  if (root !== undefined) {
    try {
      rootReal = realpathSync(root);
    } catch (err) {
      throw new Error(`--root ${root}: ${describeFsError(err)}`);
    }
    if (!statSync(rootReal).isDirectory()) throw new Error(`--root ${root}: it is not a folder`);
  }
  /** Parsed outputs, kept while the file is unchanged, so that paging does not read it again. */
  const cache = new Map<string, { key: string; parsed: ParsedOutput }>();

  const locate = (given: unknown, what: string): Located => {
    if (rootReal === undefined || root === undefined)
      throw new HttpError(404, `no --root was given to the server: the page cannot open ${what}s (start it with --root DIR)`);
    if (typeof given !== 'string' || given.includes('\0')) throw new HttpError(400, `give the ${what} as ?path=, relative to --root`);
    const lexical = isAbsolute(given) ? resolve(given) : resolve(rootReal, given);
    if (!inside(lexical, rootReal) && !inside(lexical, root)) throw new HttpError(403, `${given}: outside --root`);
    let abs: string;
    try {
      abs = realpathSync(lexical);
    } catch (err) {
      throw new HttpError(404, `${given || '.'}: ${describeFsError(err)}`);
    }
    if (!inside(abs, rootReal)) throw new HttpError(403, `${given}: leads outside --root (through a link)`);
    return { abs, rel: relative(rootReal, abs).split(sep).join('/') };
  };
  /** Reads a regular file under its cap; a message names the file as the page does, never the server's paths. */
  const read = (at: Located, what: string, cap: number): Buffer => {
    try {
      return readRegularFile(at.abs, what, cap);
    } catch (err) {
      throw new HttpError(422, ((err as Error).message ?? String(err)).split(at.abs).join(at.rel || '.'));
    }
  };
  const answer = (reply: FastifyReply, err: unknown): FastifyReply => {
    if (err instanceof HttpError) return reply.code(err.status).send({ error: err.message });
    app.log.error(err);
    return reply.code(500).send({ error: 'internal error (see the server log)' });
  };

  app.get('/v1/browse', async (req, reply) => {
    try {
      const q = req.query as Record<string, unknown>;
      const at = locate(q.path ?? '', 'folder');
      if (!statSync(at.abs).isDirectory()) throw new HttpError(400, `${at.rel}: not a folder`);
      let names: string[];
      try {
        names = readdirSync(at.abs).filter((n) => !n.startsWith('.'));
      } catch (err) {
        throw new HttpError(422, `${at.rel || '.'}: ${describeFsError(err)}`);
      }
      names.sort();
      const truncated = names.length > MAX_ENTRIES;
      const entries = names.slice(0, MAX_ENTRIES).map((name) => describeEntry(at.abs, name, at.rel));
      return { path: at.rel, parent: at.rel === '' ? null : parentOf(at.rel), entries, truncated };
    } catch (err) {
      return answer(reply, err);
    }
  });

  app.get('/v1/file', async (req, reply) => {
    try {
      const at = locate((req.query as Record<string, unknown>).path, 'image');
      const type = IMAGE_TYPES[extname(at.abs).toLowerCase()];
      if (type === undefined) throw new HttpError(415, `${at.rel}: not an image (${Object.keys(IMAGE_TYPES).join(' ')})`);
      const q = req.query as Record<string, unknown>;
      const size = q.size === undefined ? undefined : intParam(q.size, 'size', 0, 16, 2048);
      let body = read(at, 'image', MAX_IMAGE_BYTES);
      let sent = type;
      if (size !== undefined && type !== 'image/svg+xml') {
        try {
          // turned by its EXIF orientation, as a viewer shows it; the pixel guard of decoding applies
          body = await sharp(body, { limitInputPixels: DEFAULT_MAX_PIXELS })
            .rotate()
            .resize(size, size, { fit: 'inside', withoutEnlargement: true })
            .webp({ quality: 80 })
            .toBuffer();
          sent = 'image/webp';
        } catch (err) {
          throw new HttpError(422, `${at.rel}: cannot decode the image (${(err as Error).message})`);
        }
      }
      reply.header('Content-Type', sent).header('X-Content-Type-Options', 'nosniff').header('Cache-Control', 'private, max-age=60');
      // an SVG opened on its own runs no script and loads nothing
      if (type === 'image/svg+xml') reply.header('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'; sandbox");
      return reply.send(body);
    } catch (err) {
      return answer(reply, err);
    }
  });

  app.get('/v1/output', async (req, reply) => {
    try {
      const q = req.query as Record<string, unknown>;
      const at = locate(q.path, 'score output');
      const offset = intParam(q.offset, 'offset', 0, 0, Number.MAX_SAFE_INTEGER);
      const limit = intParam(q.limit, 'limit', 500, 1, MAX_PAGE);
      const sort = q.sort ?? 'score';
      if (sort !== 'score' && sort !== 'file' && sort !== 'none') throw new HttpError(400, 'sort is one of score, file, none');
      const st = statSync(at.abs);
      const key = `${st.size}:${st.mtimeMs}:${st.ino}`;
      let parsed = cache.get(at.abs)?.key === key ? cache.get(at.abs)!.parsed : undefined;
      if (parsed === undefined) {
        parsed = parseOutput(at, read(at, 'score output', READ_LIMITS.labels), (p) => sidecar(p), rootReal!, root!);
        cache.set(at.abs, { key, parsed });
        if (cache.size > 8) cache.delete(cache.keys().next().value!);
      }
      const { header, records, problems } = parsed;
      const method = typeof header?.method === 'string' ? header.method : undefined;
      const higherIsBetter = method === undefined ? true : lowerBetterOf(method) !== true;
      const range = Array.isArray(header?.scoreRange) ? (header.scoreRange as [number, number]) : undefined;
      let ordered = records;
      if (sort === 'file') ordered = [...records].sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.i - b.i));
      if (sort === 'score') {
        const dir = higherIsBetter ? -1 : 1;
        ordered = [...records].sort((a, b) => {
          if (a.score === undefined || b.score === undefined)
            return (a.score === undefined ? 1 : 0) - (b.score === undefined ? 1 : 0) || a.i - b.i;
          return dir * (a.score - b.score) || a.i - b.i;
        });
      }
      return {
        path: at.rel,
        header,
        setup: describeSetup(header),
        scoreRange: range ?? null,
        higherIsBetter,
        total: records.length,
        scored: records.filter((r) => r.score !== undefined).length,
        failed: records.filter((r) => r.error !== undefined).length,
        problems: problems.slice(0, 20),
        offset,
        limit,
        sort,
        records: ordered.slice(offset, offset + limit),
      };
    } catch (err) {
      return answer(reply, err);
    }
  });

  /** What made a csv or json output, from FILE.meta.json beside it (inside the root); null when there is none. */
  const sidecar = (at: Located): Record<string, unknown> | null => {
    try {
      const side = locate(`${at.rel}.meta.json`, 'file');
      return JSON.parse(read(side, 'score output metadata', READ_LIMITS.json).toString('utf8')) as Record<string, unknown>;
    } catch {
      return null; // none, outside the root, unreadable or not JSON: the output is shown without it
    }
  };

  app.get('/v1/run', async (req, reply) => {
    try {
      let at = locate((req.query as Record<string, unknown>).path, 'run');
      if (!statSync(at.abs).isDirectory()) at = locate(parentOf(at.rel), 'run');
      const readJson = (name: string): unknown => {
        const f = join(at.abs, name);
        if (!existsSync(f)) return undefined;
        const file = locate(joinRel(at.rel, name), 'file');
        const text = read(file, name, READ_LIMITS.json).toString('utf8');
        try {
          return JSON.parse(text) as unknown;
        } catch (err) {
          throw new HttpError(422, `${file.rel}: not JSON (${(err as Error).message})`);
        }
      };
      const figures = ['scatter.svg', 'training.svg'].filter((n) => existsSync(join(at.abs, n))).map((n) => joinRel(at.rel, n));
      const report = readJson('report.json');
      if (report !== undefined) return { kind: 'eval', path: at.rel, report, figures };
      const result = readJson('result.json');
      const logFile = join(at.abs, 'train.jsonl');
      let log: unknown[] = [];
      if (existsSync(logFile)) {
        const file = locate(joinRel(at.rel, 'train.jsonl'), 'file');
        log = read(file, 'training log', READ_LIMITS.labels)
          .toString('utf8')
          .split('\n')
          .flatMap((line) => {
            try {
              const rec = JSON.parse(line) as { kind?: string };
              return rec.kind === 'epoch' ? [rec] : []; // the steps are too many to send; the epochs make the curves
            } catch {
              return [];
            }
          });
      }
      if (result === undefined && log.length === 0)
        throw new HttpError(404, `${at.rel || '.'}: not an eval run (report.json) or a train run (result.json, train.jsonl)`);
      return { kind: 'train', path: at.rel, result: result ?? null, epochs: log, figures };
    } catch (err) {
      return answer(reply, err);
    }
  });
}

function inside(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

function joinRel(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

function intParam(v: unknown, name: string, dflt: number, lo: number, hi: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo || n > hi) throw new HttpError(400, `${name} is a whole number from ${lo} to ${hi}`);
  return n;
}

function lowerBetterOf(method: string): boolean | undefined {
  try {
    return getMethod(method).info.lowerBetter;
  } catch {
    return undefined;
  }
}

/** "clip-iqa (pretrained clipiqa+, openai/clip-vit-base-patch32)": what the page names an output's set-up by. */
function describeSetup(header: Record<string, unknown> | null): string | null {
  if (header === null || typeof header.method !== 'string') return null;
  const model = (header.model as { name?: unknown } | undefined)?.name;
  const checkpoint = (header.checkpoint as { path?: unknown } | undefined)?.path;
  const parts = [
    typeof header.pretrained === 'string' ? `pretrained ${header.pretrained}` : '',
    typeof checkpoint === 'string' ? `checkpoint ${basename(checkpoint)}` : '',
    typeof model === 'string' ? model : '',
  ].filter((x) => x !== '');
  return parts.length ? `${header.method} (${parts.join(', ')})` : header.method;
}

function describeEntry(dir: string, name: string, rel: string): { name: string; path: string; kind: string; size?: number } {
  const path = joinRel(rel, name);
  let st;
  try {
    st = statSync(join(dir, name));
  } catch (err) {
    return { name, path, kind: `unreadable (${describeFsError(err)})` };
  }
  if (st.isDirectory()) {
    const run = RUN_FILES.some((f) => existsSync(join(dir, name, f)));
    return { name, path, kind: run ? 'run' : 'folder' };
  }
  if (!st.isFile()) return { name, path, kind: 'other' };
  const ext = extname(name).toLowerCase();
  const kind =
    name.endsWith('.meta.json') || RUN_FILES.includes(name)
      ? 'file'
      : IMAGE_TYPES[ext] !== undefined
        ? 'image'
        : OUTPUT_EXTENSIONS.includes(ext)
          ? 'output'
          : 'file';
  return { name, path, kind, size: st.size };
}

/**
 * A score output's records: jsonl (a header line `{"format":"promptiqa-scores/…"}` without `file`, then one
 * record a line; a torn or foreign line is noted, not fatal), csv (`file,score[,mos],error`) or json (a list).
 * Each record's image is found as written (absolute), else beside the output, else under the root.
 */
function parseOutput(
  at: Located,
  bytes: Buffer,
  sidecar: (at: Located) => Record<string, unknown> | null,
  rootReal: string,
  root: string,
): ParsedOutput {
  const ext = extname(at.abs).toLowerCase();
  const problems: string[] = [];
  let header: Record<string, unknown> | null = null;
  const raw: Array<Record<string, unknown>> = [];
  if (ext === '.jsonl') {
    const lines = bytes.toString('utf8').split('\n');
    lines.forEach((line, n) => {
      if (line.trim() === '') return;
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch {
        problems.push(`line ${n + 1}: not JSON${n === lines.length - 1 ? ' (a torn last line)' : ''}`);
        return;
      }
      if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) problems.push(`line ${n + 1}: not a record`);
      else if (!('file' in rec) && typeof (rec as { format?: unknown }).format === 'string') {
        if (raw.length === 0 && header === null) header = rec as Record<string, unknown>;
      } else raw.push(rec as Record<string, unknown>);
    });
  } else if (ext === '.csv') {
    let csv;
    try {
      csv = parseCsv(decodeCsvText(bytes, at.rel), at.rel);
    } catch (err) {
      throw new HttpError(422, (err as Error).message.split(at.abs).join(at.rel));
    }
    const col = (name: string): number => csv.header.indexOf(name);
    const [f, s, e, m] = [col('file'), col('score'), col('error'), col('mos')];
    if (f < 0 || (s < 0 && e < 0)) throw new HttpError(422, `${at.rel}: not a score output (its header has no file and score columns)`);
    for (const row of csv.rows) {
      const rec: Record<string, unknown> = { file: row[f] };
      if (s >= 0 && row[s] !== '' && row[s] !== undefined) rec.score = Number(row[s]);
      if (e >= 0 && row[e]) rec.error = row[e];
      if (m >= 0 && row[m] !== '' && row[m] !== undefined) rec.mos = Number(row[m]);
      raw.push(rec);
    }
    header = sidecar(at);
  } else if (ext === '.json') {
    let list: unknown;
    try {
      list = JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      throw new HttpError(422, `${at.rel}: not JSON (${(err as Error).message})`);
    }
    if (!Array.isArray(list)) throw new HttpError(422, `${at.rel}: not a score output (a JSON list of records)`);
    for (const rec of list) if (typeof rec === 'object' && rec !== null) raw.push(rec as Record<string, unknown>);
    header = sidecar(at);
  } else throw new HttpError(415, `${at.rel}: not a score output (.jsonl, .csv or .json)`);

  const outDir = dirname(at.abs);
  const records: OutputRecord[] = [];
  for (const rec of raw) {
    if (typeof rec.file !== 'string') {
      problems.push(`a record without a file: ${JSON.stringify(rec).slice(0, 80)}`);
      continue;
    }
    const r: OutputRecord = { i: records.length, file: rec.file };
    if (typeof rec.score === 'number' && Number.isFinite(rec.score)) r.score = rec.score;
    else if (typeof rec.error === 'string') r.error = rec.error;
    else r.error = `no score in the output (${JSON.stringify(rec.score ?? null)})`;
    if (typeof rec.mos === 'number' && Number.isFinite(rec.mos)) r.mos = rec.mos;
    const path = underRoot(rec.file, outDir, rootReal, root);
    if (path !== undefined) r.path = path;
    records.push(r);
  }
  if (records.length === 0 && raw.length === 0 && header === null && problems.length > 0)
    throw new HttpError(422, `${at.rel}: not a score output (${problems[0]})`);
  return { header, records, problems };
}

/** A record's image relative to the root, where it lies (by name; /v1/file checks links) under it. */
function underRoot(file: string, outDir: string, rootReal: string, root: string): string | undefined {
  const candidates = isAbsolute(file) ? [file] : [resolve(outDir, file), resolve(rootReal, file)];
  const found = candidates.find((c) => existsSync(c)) ?? candidates[0]!;
  for (const base of [rootReal, root]) if (inside(found, base)) return relative(base, found).split(sep).join('/');
  return undefined;
}
