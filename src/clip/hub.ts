/**
 * A small Hugging Face Hub client for model repositories.
 *
 * It writes the same cache as Python's huggingface_hub (`models--owner--name/{blobs,snapshots,refs}`), so a
 * model downloaded by either is found by the other. Downloads resume after a cut connection, files stored
 * with Git LFS are checked against their sha256, and a lock file per blob keeps two processes from writing
 * the same file at once.
 *
 * Why not `@huggingface/hub` (checked at 2.17.5): its per-file download names the snapshot after the file's
 * last commit rather than the revision's (and writes no refs/), so Python does not find the files; it needs
 * the hub's /api on top of /resolve/, and has no resume, sha256 check, lock, retries, HF_HUB_OFFLINE,
 * HF_ENDPOINT or HF_TOKEN.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, createWriteStream, mkdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import cliProgress from 'cli-progress';
import { writeFileAtomic } from '../util/fs.js';
import { fileSha256 } from '../util/hash.js';
import { withLockWaiting } from '../util/lock.js';
import { OPEN_CLIP_CONFIG } from './config.js';

export interface HubOptions {
  /** default `HF_ENDPOINT`, else https://huggingface.co */
  endpoint?: string;
  /** default `HF_HUB_CACHE`, else `$HF_HOME/hub` (HF_HOME defaults to ~/.cache/huggingface) */
  cacheDir?: string;
  /** default `HF_TOKEN`, else the token file `$HF_HOME/token` (`HF_TOKEN_PATH`); `''` sends no token */
  token?: string;
  /** use only the cache, never the network; default `HF_HUB_OFFLINE=1` */
  offline?: boolean;
  /** branch, tag or commit; default 'main' */
  revision?: string;
  /** show a progress bar while downloading (only when stderr is a TTY); default true unless HF_HUB_DISABLE_PROGRESS_BARS=1 */
  progress?: boolean;
  /** default the global fetch */
  fetchImpl?: typeof fetch;
  /**
   * Ask the server even when the cache has the files for a branch: picks up a branch that moved. Default
   * false: a cached branch is trusted, so a second run makes no request at all.
   */
  refresh?: boolean;
  /** retries after the first attempt on connection errors, HTTP 5xx and 429; default 5 */
  retries?: number;
  /** backoff before the first retry, doubled for each further one (at most 10 s); default 500 ms */
  retryDelayMs?: number;
}

/** HubOptions with every default filled in. */
export interface HubSettings {
  endpoint: string;
  cacheDir: string;
  token: string | undefined;
  offline: boolean;
  revision: string;
  progress: boolean;
  fetchImpl: typeof fetch;
  refresh: boolean;
  retries: number;
  retryDelayMs: number;
}

/**
 * The files a CLIP model needs, in the notation `downloadRepo` takes: `a|b` means the first of a and b that
 * the repository has, and a trailing `?` marks an optional entry (skipped when the repository lacks it).
 * Required: the Hugging Face config, the weights (HF layout, or open_clip's state dict where a repository
 * has only that), and the BPE tokenizer files. Optional: the tokenizer and preprocessor settings, for which
 * CLIP's defaults hold when absent.
 */
export const CLIP_MODEL_FILES: string[] = [
  'config.json',
  'model.safetensors|open_clip_model.safetensors',
  'vocab.json',
  'merges.txt',
  'tokenizer_config.json?',
  'preprocessor_config.json?',
  'special_tokens_map.json?',
];

/**
 * An error of the hub or of the cache. `code` is one of 'RepoNotFound', 'RevisionNotFound', 'EntryNotFound',
 * 'Unauthorized', 'Forbidden', 'GatedRepo', 'Offline', 'HashMismatch', 'SizeMismatch', 'Network',
 * 'ServerError', 'BadResponse', 'BadArgument'.
 */
export class HubError extends Error {
  readonly repo: string;
  readonly filename: string | undefined;
  readonly status: number | undefined;
  readonly code: string;
  /** worth another attempt (5xx, 429) */
  readonly retryable: boolean;

  constructor(
    message: string,
    details: { repo: string; filename?: string; status?: number; code: string; retryable?: boolean; cause?: unknown },
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'HubError';
    this.repo = details.repo;
    this.filename = details.filename;
    this.status = details.status;
    this.code = details.code;
    this.retryable = details.retryable ?? false;
  }
}

const COMMIT_RE = /^[0-9a-f]{40}$/;
const SHA256_RE = /^[0-9a-f]{64}$/;
const REPO_RE = /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/;
const HEAD_TIMEOUT_MS = 10_000;
const MAX_REDIRECTS = 10;

function envFlag(value: string | undefined): boolean {
  return ['1', 'on', 'yes', 'true'].includes((value ?? '').trim().toLowerCase());
}

function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? join(homedir(), path.slice(1)) : path;
}

function readTokenFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Fills in the defaults of `opts` from the environment, as huggingface_hub reads it. */
export function resolveHubOptions(opts: HubOptions = {}, env: NodeJS.ProcessEnv = process.env): HubSettings {
  const hfHome = expandHome(env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface'));
  const token =
    opts.token ?? env.HF_TOKEN ?? env.HUGGING_FACE_HUB_TOKEN ?? readTokenFile(expandHome(env.HF_TOKEN_PATH ?? join(hfHome, 'token')));
  return {
    endpoint: (opts.endpoint ?? env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    cacheDir: opts.cacheDir ?? expandHome(env.HF_HUB_CACHE ?? env.HUGGINGFACE_HUB_CACHE ?? join(hfHome, 'hub')),
    token: token?.trim() || undefined,
    offline: opts.offline ?? envFlag(env.HF_HUB_OFFLINE),
    revision: opts.revision ?? 'main',
    progress: opts.progress ?? !envFlag(env.HF_HUB_DISABLE_PROGRESS_BARS),
    fetchImpl: opts.fetchImpl ?? fetch,
    refresh: opts.refresh ?? false,
    retries: opts.retries ?? 5,
    retryDelayMs: opts.retryDelayMs ?? 500,
  };
}

/** Whether `s` has the form of a model repo id, `owner/name`. */
export function isRepoId(s: string): boolean {
  return REPO_RE.test(s) && !s.includes('..') && !s.includes('--');
}

/** The cache folder of a model repo: `<cacheDir>/models--owner--name`. */
export function repoCacheDir(cacheDir: string, repo: string): string {
  return join(cacheDir, `models--${repo.replace('/', '--')}`);
}

// ---------------------------------------------------------------------------------------------------------
// Arguments and the cache on disk

interface Ctx extends HubSettings {
  repo: string;
  /** the repo's cache folder */
  dir: string;
}

function context(repo: string, opts: HubOptions | undefined): Ctx {
  const settings = resolveHubOptions(opts);
  if (!isRepoId(repo)) throw new HubError(`invalid repo id '${repo}': expected 'owner/name'`, { repo, code: 'BadArgument' });
  // the revision names a file under refs/: refuse anything that could leave that folder
  checkRelativePath(repo, 'revision', settings.revision);
  return { ...settings, repo, dir: repoCacheDir(settings.cacheDir, repo) };
}

/** Refuses a path from the caller that would escape the cache folder it is joined to. */
function checkRelativePath(repo: string, what: string, path: string): void {
  const parts = path.split('/');
  if (path.includes('\\') || path.includes('\0') || parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw new HubError(`invalid ${what} '${path}' for ${repo}`, { repo, code: 'BadArgument' });
  }
}

interface FileSpec {
  /** alternatives: the first one the repository has is used */
  names: string[];
  required: boolean;
}

function parseFileSpec(repo: string, spec: string): FileSpec {
  const required = !spec.endsWith('?');
  const names = (required ? spec : spec.slice(0, -1)).split('|');
  for (const name of names) checkRelativePath(repo, 'file name', name);
  return { names, required };
}

function isFile(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
}

function sizeOf(path: string): number {
  return statSync(path, { throwIfNoEntry: false })?.size ?? 0;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The commit a revision stands for in the cache: a commit hash is its own; a branch or tag is read from refs/. */
function cachedCommit(ctx: Ctx, revision: string): string | undefined {
  if (COMMIT_RE.test(revision)) return revision;
  const commit = readText(join(ctx.dir, 'refs', revision))?.trim();
  return commit && COMMIT_RE.test(commit) ? commit : undefined;
}

/** Marks a file the hub said does not exist (a symbol, so that no path string can be mistaken for it). */
const ABSENT = Symbol('absent');

/** A file of a commit in the cache: its path, ABSENT when the hub said it does not exist, or undefined when unknown. */
function cachedFile(ctx: Ctx, commit: string, filename: string): string | typeof ABSENT | undefined {
  const pointer = join(ctx.dir, 'snapshots', commit, filename);
  if (isFile(pointer)) return pointer;
  if (isFile(join(ctx.dir, '.no_exist', commit, filename))) return ABSENT;
  return undefined;
}

function noteRef(ctx: Ctx, revision: string, commit: string): void {
  if (revision === commit || cachedCommit(ctx, revision) === commit) return;
  writeFileAtomic(join(ctx.dir, 'refs', revision), commit);
}

/** Points `snapshots/<commit>/<file>` at its blob: a relative symlink, or a copy where symlinks are refused. */
function linkBlob(pointer: string, blob: string): void {
  mkdirSync(dirname(pointer), { recursive: true });
  const tmp = `${pointer}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    symlinkSync(relative(dirname(pointer), blob), tmp);
  } catch {
    copyFileSync(blob, tmp);
  }
  // rename replaces a stale or broken pointer atomically, also when another process links it at the same time
  renameSync(tmp, pointer);
}

function offlineError(ctx: Ctx, missing: string[]): HubError {
  return new HubError(
    `offline mode (HF_HUB_OFFLINE): the cache at ${ctx.cacheDir} has no copy of ${ctx.repo} at revision '${ctx.revision}'` +
      ` (missing: ${missing.join(', ')}); download it once online`,
    { repo: ctx.repo, filename: missing[0], code: 'Offline' },
  );
}

// ---------------------------------------------------------------------------------------------------------
// HTTP

function resolveUrl(ctx: Ctx, revision: string, filename: string): string {
  const path = filename.split('/').map(encodeURIComponent).join('/');
  return `${ctx.endpoint}/${ctx.repo}/resolve/${encodeURIComponent(revision)}/${path}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function backoff(ctx: Ctx, failures: number): number {
  return Math.min(ctx.retryDelayMs * 2 ** failures, 10_000);
}

/**
 * Sends a request, following redirects by hand: the token goes only to the hub's own origin, never to the
 * CDN a file is redirected to. With `followAbsolute` false only relative redirects (a renamed repo) are
 * followed, and an absolute one (to the CDN) is returned: it carries the file's metadata.
 */
async function request(
  ctx: Ctx,
  url: string,
  method: 'HEAD' | 'GET',
  extra: Record<string, string>,
  followAbsolute: boolean,
  signal?: AbortSignal,
): Promise<Response> {
  const hubOrigin = new URL(ctx.endpoint).origin;
  for (let hops = 0; ; hops++) {
    // identity: a compressed body would not match Content-Length nor the sha256
    const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'promptiqa', ...extra };
    if (ctx.token && new URL(url).origin === hubOrigin) headers.authorization = `Bearer ${ctx.token}`;
    const res = await ctx.fetchImpl(url, { method, headers, redirect: 'manual', signal });
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) return res;
    const relativeRedirect = !/^[a-z][a-z0-9+.-]*:/i.test(location) && !location.startsWith('//');
    if (!followAbsolute && !relativeRedirect) return res;
    await res.body?.cancel();
    if (hops >= MAX_REDIRECTS) {
      throw new HubError(`too many redirects for ${url}`, { repo: ctx.repo, status: res.status, code: 'BadResponse' });
    }
    url = new URL(location, url).href;
  }
}

function httpError(ctx: Ctx, res: Response, filename: string, revision: string): HubError {
  const { repo, endpoint, token } = ctx;
  const code = res.headers.get('x-error-code') ?? '';
  const where = `${repo}/${filename}`;
  const tokenHint = token ? 'the token sent has no access to it' : 'if it is private or gated, set HF_TOKEN or pass a token';
  const fail = (message: string, errorCode: string, retryable = false) =>
    new HubError(message, { repo, filename, status: res.status, code: errorCode, retryable });
  if (code === 'RepoNotFound') return fail(`repository '${repo}' not found at ${endpoint} (${tokenHint})`, 'RepoNotFound');
  if (code === 'RevisionNotFound') return fail(`revision '${revision}' not found in ${repo}`, 'RevisionNotFound');
  if (code === 'GatedRepo') {
    return fail(
      `${repo} is gated: accept its conditions at ${endpoint}/${repo} with the account of your token (needed for ${filename})`,
      'GatedRepo',
    );
  }
  switch (res.status) {
    case 401:
      return fail(
        `unauthorized to download ${where}: ${token ? 'the token was rejected' : 'a token is needed: set HF_TOKEN or pass a token'}`,
        'Unauthorized',
      );
    case 403:
      return fail(`access to ${where} is forbidden (${tokenHint})`, 'Forbidden');
    case 404:
      return fail(`file '${filename}' not found in ${repo} at revision '${revision}'`, 'EntryNotFound');
    default:
      if (res.status === 429 || res.status >= 500) return fail(`${endpoint} answered HTTP ${res.status} for ${where}`, 'ServerError', true);
      return fail(`unexpected HTTP ${res.status} for ${where} from ${endpoint}`, 'BadResponse');
  }
}

/** The first `code` along an error's chain of causes (fetch wraps the socket's error in a TypeError). */
function errorCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e !== null && typeof e === 'object' && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** A failure of the connection (as fetch reports it), as opposed to one of this machine's files or of the hub's answer. */
function isNetworkError(err: unknown): boolean {
  if (err instanceof HubError) return err.code === 'Network';
  const name = (err as { name?: unknown } | null)?.name;
  const code = errorCode(err) ?? '';
  return (
    name === 'TypeError' ||
    name === 'TimeoutError' ||
    name === 'AbortError' ||
    code.startsWith('UND_ERR') ||
    TRANSIENT_CODES.has(code) ||
    PERMANENT_CODES.has(code)
  );
}

/** Socket errors that a retry within seconds cannot mend. */
const PERMANENT_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'ECONNREFUSED', 'ENETUNREACH', 'EHOSTUNREACH']);

/**
 * Socket errors that another attempt can mend: a connection cut or timed out on its way. A name that does
 * not resolve (ENOTFOUND, EAI_AGAIN: no network, or no DNS), a refused connection (nothing listens there),
 * an unreachable network, a port fetch will not use and a certificate that does not verify stay as they are
 * for the seconds the retries would take: they fail at once.
 */
const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE']);

/** An error worth another attempt: the connection was cut or timed out, or the server had a hiccup (5xx, 429). */
function isRetryable(err: unknown): boolean {
  if (err instanceof HubError) return err.retryable;
  const e = err as { name?: string; message?: string };
  const code = errorCode(err) ?? '';
  // undici's own socket errors and timeouts (UND_ERR_SOCKET, UND_ERR_CONNECT_TIMEOUT, …) are cuts and waits;
  // a body cut short is a TypeError 'terminated'
  return (
    e.name === 'TimeoutError' ||
    e.name === 'AbortError' ||
    (e.name === 'TypeError' && e.message === 'terminated') ||
    code.startsWith('UND_ERR') ||
    TRANSIENT_CODES.has(code)
  );
}

/** What went wrong with the connection, in words. */
function describeNetworkError(ctx: Ctx, err: unknown): string {
  const code = errorCode(err);
  let cause: unknown = err;
  while ((cause as { cause?: unknown }).cause !== undefined) cause = (cause as { cause?: unknown }).cause;
  const detail = cause instanceof Error ? cause.message : String(cause);
  const host = new URL(ctx.endpoint).host;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN')
    return `the name ${new URL(ctx.endpoint).hostname} does not resolve (${code}: no network, or no DNS)`;
  if (code === 'ECONNREFUSED') return `${host} refused the connection (ECONNREFUSED: nothing listens there)`;
  return code && !detail.includes(code) ? `${detail} (${code})` : detail;
}

function giveUp(ctx: Ctx, filename: string, err: unknown, attempts: number): unknown {
  if (err instanceof HubError || !isNetworkError(err)) return err;
  return new HubError(
    `could not download ${ctx.repo}/${filename} from ${ctx.endpoint}${attempts > 1 ? ` after ${attempts} attempts` : ''}: ${describeNetworkError(ctx, err)}`,
    { repo: ctx.repo, filename, code: 'Network', cause: err },
  );
}

/** Network errors already told whether the cache could stand in (one sentence, however many callers it passes). */
const advised = new WeakSet<HubError>();

/**
 * Runs `fn`; a network failure gets one sentence on the cache: where the cache has what was asked for,
 * HF_HUB_OFFLINE=1 uses it; where it has not, that is said, and HF_HUB_OFFLINE (which could not help) is not.
 */
async function adviseOnCache<T>(ctx: Ctx, cacheCanServe: () => boolean, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof HubError) || err.code !== 'Network' || advised.has(err)) throw err;
    const advice = cacheCanServe()
      ? `; the cache at ${ctx.cacheDir} has a copy: set HF_HUB_OFFLINE=1 to use it without the network`
      : `; the cache at ${ctx.cacheDir} has no copy of ${ctx.repo} at revision '${ctx.revision}'`;
    const wrapped = new HubError(`${err.message}${advice}`, { repo: err.repo, filename: err.filename, code: 'Network', cause: err.cause });
    advised.add(wrapped);
    throw wrapped;
  }
}

async function withRetries<T>(ctx: Ctx, filename: string, fn: () => Promise<T>): Promise<T> {
  for (let failures = 0; ; failures++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err) || failures >= ctx.retries) throw giveUp(ctx, filename, err, failures + 1);
      await sleep(backoff(ctx, failures));
    }
  }
}

function normalizeEtag(etag: string | null): string | undefined {
  return (
    etag
      ?.trim()
      .replace(/^W\//, '')
      .replace(/^"(.*)"$/, '$1') || undefined
  );
}

function parseSize(value: string | null): number | undefined {
  return value !== null && /^\d+$/.test(value.trim()) ? Number(value) : undefined;
}

interface FileMeta {
  commit: string;
  /** sha256 of an LFS file, git blob sha1 of a small one: names the blob in the cache */
  etag: string;
  size: number | undefined;
}

type HeadResult = { found: true; meta: FileMeta } | { found: false; commit: string | undefined; error: HubError };

/** Asks the hub which commit a revision is at, and the etag and size of a file there. */
async function headFile(ctx: Ctx, filename: string, revision: string): Promise<HeadResult> {
  const url = resolveUrl(ctx, revision, filename);
  return withRetries(ctx, filename, async () => {
    const res = await request(ctx, url, 'HEAD', {}, false, AbortSignal.timeout(HEAD_TIMEOUT_MS));
    await res.body?.cancel();
    const rawCommit = res.headers.get('x-repo-commit')?.trim();
    const commit = rawCommit && COMMIT_RE.test(rawCommit) ? rawCommit : undefined;
    if (res.status >= 400) {
      const error = httpError(ctx, res, filename, revision);
      if (error.code === 'EntryNotFound') return { found: false, commit, error };
      throw error;
    }
    // on a redirect to the CDN, Content-Length is the redirect's own: the file's size is in X-Linked-Size
    const etag = normalizeEtag(res.headers.get('x-linked-etag') ?? res.headers.get('etag'));
    const size = parseSize(res.headers.get('x-linked-size') ?? (res.status < 300 ? res.headers.get('content-length') : null));
    // the etag names a file in blobs/: take only plain names from the network
    if (!commit || !etag || !/^[\w-][\w.-]*$/.test(etag)) {
      throw new HubError(
        `${ctx.endpoint} sent no usable X-Repo-Commit/ETag for ${ctx.repo}/${filename}; is HF_ENDPOINT a Hugging Face hub?`,
        { repo: ctx.repo, filename, status: res.status, code: 'BadResponse' },
      );
    }
    return { found: true, meta: { commit, etag, size } };
  });
}

// ---------------------------------------------------------------------------------------------------------
// Lock files

// ---------------------------------------------------------------------------------------------------------
// Downloads

function progressBar(ctx: Ctx, filename: string, total: number | undefined): cliProgress.SingleBar | undefined {
  if (!ctx.progress || !process.stderr.isTTY || total === undefined) return undefined;
  const mb = (v: number) => (v / 1e6).toFixed(1);
  return new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${filename} [{bar}] {percentage}% | {value}/{total} MB | {eta_formatted}`,
      formatValue: (v, _opts, type) => (type === 'value' || type === 'total' ? mb(v) : String(v)),
      hideCursor: true,
    },
    cliProgress.Presets.legacy,
  );
}

/**
 * Downloads one file into `<blob>.incomplete`, resuming from what is already there, then checks its size
 * and sha256 and renames it to `blob`. The caller holds the blob's lock.
 */
async function downloadBlob(ctx: Ctx, filename: string, meta: FileMeta, blob: string): Promise<void> {
  const part = `${blob}.incomplete`;
  mkdirSync(dirname(blob), { recursive: true });
  const bar = progressBar(ctx, filename, meta.size);
  let expected = meta.size;
  try {
    bar?.start(meta.size!, 0);
    // failures count attempts that brought no new byte, so a long download over a flaky line still ends
    for (let failures = 0; ;) {
      let offset = isFile(part) ? sizeOf(part) : -1; // -1: nothing yet, as opposed to an empty start
      if (expected !== undefined && offset > expected) {
        rmSync(part, { force: true });
        offset = -1;
      }
      if (expected !== undefined && offset === expected) break; // complete from an earlier run: verify below
      const before = Math.max(offset, 0);
      let error: unknown;
      try {
        expected = await transfer(ctx, filename, meta.commit, part, before, expected, bar);
        const got = sizeOf(part);
        if (expected === undefined || got === expected) break;
        if (got > expected) {
          rmSync(part, { force: true });
          throw new HubError(`${ctx.repo}/${filename}: received ${got} bytes, more than its size ${expected}`, {
            repo: ctx.repo,
            filename,
            code: 'SizeMismatch',
          });
        }
        // fewer bytes than announced, yet no error: the connection was closed early; resume
        error = new HubError(`${ctx.repo}/${filename}: connection closed after ${got} of ${expected} bytes`, {
          repo: ctx.repo,
          filename,
          code: 'Network',
          retryable: true,
        });
      } catch (err) {
        error = err;
      }
      const progressed = sizeOf(part) > before;
      if (!isRetryable(error) || (!progressed && failures >= ctx.retries)) throw giveUp(ctx, filename, error, failures + 1);
      if (!progressed) failures++;
      await sleep(backoff(ctx, failures));
    }
  } finally {
    bar?.stop();
  }
  if (SHA256_RE.test(meta.etag)) {
    const actual = await fileSha256(part);
    if (actual !== meta.etag) {
      rmSync(part, { force: true });
      throw new HubError(
        `${ctx.repo}/${filename} is corrupt: its sha256 is ${actual}, the hub says ${meta.etag}. The download was deleted; run again`,
        { repo: ctx.repo, filename, code: 'HashMismatch' },
      );
    }
  }
  renameSync(part, blob);
}

/** One GET of the file into `part`, from byte `offset` on; returns the file's full size when known. */
async function transfer(
  ctx: Ctx,
  filename: string,
  commit: string,
  part: string,
  offset: number,
  expected: number | undefined,
  bar: cliProgress.SingleBar | undefined,
): Promise<number | undefined> {
  // the commit, not the branch: a branch that moves during the download cannot mix two versions
  const url = resolveUrl(ctx, commit, filename);
  const res = await request(ctx, url, 'GET', offset > 0 ? { range: `bytes=${offset}-` } : {}, true);
  if (res.status === 416) {
    // the range no longer fits what the server has: start over
    await res.body?.cancel();
    rmSync(part, { force: true });
    throw new HubError(`range not satisfiable for ${ctx.repo}/${filename}`, {
      repo: ctx.repo,
      filename,
      status: 416,
      code: 'ServerError',
      retryable: true,
    });
  }
  if (res.status !== 200 && res.status !== 206) {
    await res.body?.cancel();
    throw httpError(ctx, res, filename, commit);
  }
  const range = /^bytes (\d+)-\d+\/(\d+|\*)/.exec(res.headers.get('content-range') ?? '');
  const resumed = res.status === 206 && range !== null && Number(range[1]) === offset;
  if (res.status === 206 && !resumed) {
    await res.body?.cancel();
    rmSync(part, { force: true });
    throw new HubError(`bad Content-Range for ${ctx.repo}/${filename}`, {
      repo: ctx.repo,
      filename,
      status: 206,
      code: 'ServerError',
      retryable: true,
    });
  }
  const start = resumed ? offset : 0; // a 200 to a Range request sends the whole file: start over
  const length = parseSize(res.headers.get('content-length'));
  const total = expected ?? (resumed && range[2] !== '*' ? Number(range[2]) : length === undefined ? undefined : start + length);
  let done = start;
  bar?.update(done);
  const body: ReadableStream<Uint8Array> = res.body ?? new ReadableStream<Uint8Array>();
  await pipeline(
    async function* () {
      for await (const chunk of body) {
        done += chunk.length;
        bar?.update(done);
        yield chunk;
      }
    },
    createWriteStream(part, { flags: resumed ? 'a' : 'w' }),
  );
  return total;
}

interface Fetched {
  /** the file in the snapshot folder; undefined when the repository does not have it */
  path: string | undefined;
  commit: string | undefined;
}

/**
 * Gets one file into the cache. With `useCache`, a file (or a known absence) recorded for the revision's
 * cached commit is returned without a request. A missing file throws unless `optional`.
 */
async function fetchFile(ctx: Ctx, filename: string, revision: string, useCache: boolean, optional: boolean): Promise<Fetched> {
  if (useCache || ctx.offline) {
    const commit = cachedCommit(ctx, revision);
    const hit = commit ? cachedFile(ctx, commit, filename) : undefined;
    if (hit === ABSENT && optional) return { path: undefined, commit };
    if (hit === ABSENT) {
      throw new HubError(`file '${filename}' not found in ${ctx.repo} at revision '${revision}'`, {
        repo: ctx.repo,
        filename,
        status: 404,
        code: 'EntryNotFound',
      });
    }
    if (hit) return { path: hit, commit };
    if (ctx.offline) throw offlineError(ctx, [filename]);
  }

  const head = await headFile(ctx, filename, revision);
  if (!head.found) {
    if (head.commit) {
      // remember the absence, as huggingface_hub does, so the next run does not ask again
      noteRef(ctx, revision, head.commit);
      writeFileAtomic(join(ctx.dir, '.no_exist', head.commit, filename), '');
    }
    if (optional) return { path: undefined, commit: head.commit };
    throw head.error;
  }

  const { meta } = head;
  noteRef(ctx, revision, meta.commit);
  const pointer = join(ctx.dir, 'snapshots', meta.commit, filename);
  if (isFile(pointer)) return { path: pointer, commit: meta.commit };
  const blob = join(ctx.dir, 'blobs', meta.etag);
  if (!isFile(blob)) {
    // the lock file is <etag>.lock under .locks/, where Python's huggingface_hub keeps its own
    await withLockWaiting(join(ctx.cacheDir, '.locks', basename(ctx.dir), meta.etag), 'file', async () => {
      // another process may have finished it while this one waited for the lock
      if (!isFile(blob)) await downloadBlob(ctx, filename, meta, blob);
    });
  }
  linkBlob(pointer, blob);
  return { path: pointer, commit: meta.commit };
}

// ---------------------------------------------------------------------------------------------------------
// Public API

/**
 * Downloads one file of a model repo into the cache (or finds it there) and returns its path in the
 * snapshot folder. A missing file is an error.
 */
export async function downloadFile(repo: string, filename: string, opts?: HubOptions): Promise<string> {
  const ctx = context(repo, opts);
  checkRelativePath(repo, 'file name', filename);
  const cached = (): boolean => {
    const commit = cachedCommit(ctx, ctx.revision);
    return commit !== undefined && typeof cachedFile(ctx, commit, filename) === 'string';
  };
  const { path } = await adviseOnCache(ctx, cached, () => fetchFile(ctx, filename, ctx.revision, !ctx.refresh, false));
  return path!;
}

/**
 * Downloads files of a model repo into the cache and returns the snapshot folder `snapshots/<commit>`.
 * `files` uses the notation of CLIP_MODEL_FILES (`a|b` alternatives, `name?` optional); plain names are
 * required. All files come from the one commit the revision is at when the first file is asked for.
 */
export async function downloadRepo(repo: string, files: string[] = CLIP_MODEL_FILES, opts?: HubOptions): Promise<string> {
  const ctx = context(repo, opts);
  const specs = files.map((f) => parseFileSpec(repo, f));
  return adviseOnCache(
    ctx,
    () => cachedSnapshot({ ...ctx, offline: true }, specs).snapshot !== undefined,
    () => fetchRepo(ctx, specs),
  );
}

async function fetchRepo(ctx: Ctx, specs: FileSpec[]): Promise<string> {
  const { repo } = ctx;

  if (!ctx.refresh || ctx.offline) {
    const cached = cachedSnapshot(ctx, specs);
    if (cached.snapshot) return cached.snapshot;
    if (ctx.offline) throw offlineError(ctx, cached.missing);
  }

  // the first request pins the commit; every later file is asked for at that commit, which the cache can answer
  let commit = COMMIT_RE.test(ctx.revision) ? ctx.revision : undefined;
  for (const spec of specs) {
    let found = false;
    for (const name of spec.names) {
      const fetched = await fetchFile(ctx, name, commit ?? ctx.revision, commit !== undefined, true);
      commit ??= fetched.commit;
      if (fetched.path) {
        found = true;
        break;
      }
    }
    if (!found && spec.required) {
      const what = spec.names.length > 1 ? `none of ${spec.names.join(', ')} found` : `file '${spec.names[0]}' not found`;
      throw new HubError(`${what} in ${repo} at revision '${ctx.revision}'`, {
        repo,
        filename: spec.names[0],
        status: 404,
        code: 'EntryNotFound',
      });
    }
  }
  if (!commit) {
    throw new HubError(`${ctx.endpoint} did not tell which commit '${ctx.revision}' of ${repo} is`, { repo, code: 'BadResponse' });
  }
  const snapshot = join(ctx.dir, 'snapshots', commit);
  mkdirSync(snapshot, { recursive: true });
  return snapshot;
}

/**
 * The cached snapshot of the revision if it can stand in for `specs`: every required entry present; every
 * optional one present or, unless offline, recorded as absent (offline, an unknown optional file is skipped).
 */
function cachedSnapshot(ctx: Ctx, specs: FileSpec[]): { snapshot?: string; missing: string[] } {
  const commit = cachedCommit(ctx, ctx.revision);
  const missing: string[] = [];
  for (const spec of specs) {
    const hits = commit ? spec.names.map((name) => cachedFile(ctx, commit, name)) : [];
    if (hits.some((h) => h !== undefined && h !== ABSENT)) continue;
    if (!spec.required && (ctx.offline || (hits.length > 0 && hits.every((h) => h === ABSENT)))) continue;
    missing.push(spec.names.join('|'));
  }
  return { snapshot: commit && missing.length === 0 ? join(ctx.dir, 'snapshots', commit) : undefined, missing };
}

/**
 * The files of a repository that carries CLIP only as open_clip does (timm's CLIP repos, e.g.
 * `timm/resnet50_clip.openai`, beside timm's own config.json and image-tower weights): the state dict with
 * OpenAI's tensor names, and open_clip's config (optional: without it the shapes give the architecture and
 * OpenAI's QuickGELU and 64-wide heads are assumed; with it, `loadClipWeights` reads it, see applyOpenClipConfig).
 * The tokenizer is CLIP's own vocabulary, which promptiqa ships.
 */
export const OPEN_CLIP_MODEL_FILES: string[] = ['open_clip_model.safetensors|open_clip_pytorch_model.bin', `${OPEN_CLIP_CONFIG}?`];

/**
 * Whether a repository's config.json is a transformers CLIP config. Another library's config.json (timm's
 * has `architecture` and `pretrained_cfg`) means the repository's CLIP, if any, is in open_clip's files. A
 * file that is not JSON counts as a CLIP config, so that reading it fails later with an error naming it.
 */
function isTransformersClipConfig(path: string): boolean {
  let config: unknown;
  try {
    config = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return true;
  }
  const c = config as { model_type?: unknown; architectures?: unknown } | null;
  return c?.model_type === 'clip' || (Array.isArray(c?.architectures) && c.architectures.includes('CLIPModel'));
}

/** The open_clip weights file of a snapshot: safetensors where there is one, else the PyTorch pickle. */
function openClipWeights(snapshot: string): string {
  const names = OPEN_CLIP_MODEL_FILES[0]!.split('|');
  return join(snapshot, names.find((n) => isFile(join(snapshot, n))) ?? names[0]!);
}

/**
 * The weights file of a local model folder, chosen as resolveModel chooses in a downloaded snapshot: where
 * config.json is not a transformers CLIP config (timm's, beside its image-tower `model.safetensors`) and
 * open_clip's weights are there, those; otherwise `model.safetensors` (Hugging Face layout), else open_clip's.
 * Undefined when the folder has none of these.
 */
export function modelFolderWeights(dir: string): string | undefined {
  const exists = (name: string): boolean => statSync(join(dir, name), { throwIfNoEntry: false }) !== undefined;
  const openClip = OPEN_CLIP_MODEL_FILES[0]!.split('|').find(exists);
  const config = join(dir, 'config.json');
  if (openClip && isFile(config) && !isTransformersClipConfig(config)) return join(dir, openClip);
  if (exists('model.safetensors')) return join(dir, 'model.safetensors');
  return openClip && join(dir, openClip);
}

/**
 * A model for `repoOrDir`: an existing local folder is returned as is (it wins over a repo id of the same
 * name); otherwise `owner/name` is a Hugging Face repo, downloaded into the cache. A repository whose
 * config.json is a transformers CLIP config gives its snapshot folder with CLIP_MODEL_FILES; one without
 * (no config.json, or another library's) gives the path of its open_clip weights file (OPEN_CLIP_MODEL_FILES),
 * to be tokenised with CLIP's own vocabulary. The choice is made from the files alone, without the hub's
 * /api, which mirrors may lack.
 */
export async function resolveModel(repoOrDir: string, opts?: HubOptions): Promise<string> {
  const stat = statSync(repoOrDir, { throwIfNoEntry: false });
  if (stat?.isDirectory()) return repoOrDir;
  if (stat) throw new Error(`${repoOrDir} is a file; expected a model folder or a Hugging Face repo id 'owner/name'`);
  if (!isRepoId(repoOrDir)) throw new Error(`no model folder ${repoOrDir}, and it is not a Hugging Face repo id 'owner/name'`);
  const ctx = context(repoOrDir, opts);
  const hfSpecs = CLIP_MODEL_FILES.map((f) => parseFileSpec(repoOrDir, f));
  const openClipSpecs = OPEN_CLIP_MODEL_FILES.map((f) => parseFileSpec(repoOrDir, f));

  // offline, the cache serves the first layout it has whole
  const fromCache = (c: Ctx): string | undefined => {
    const hf = cachedSnapshot(c, hfSpecs);
    if (hf.snapshot && isTransformersClipConfig(join(hf.snapshot, 'config.json'))) return hf.snapshot;
    const openClip = cachedSnapshot(c, openClipSpecs);
    return openClip.snapshot ? openClipWeights(openClip.snapshot) : undefined;
  };
  if (!ctx.refresh || ctx.offline) {
    const cached = fromCache(ctx);
    if (cached) return cached;
    if (ctx.offline) {
      const hf = cachedSnapshot(ctx, hfSpecs);
      const openClip = cachedSnapshot(ctx, openClipSpecs);
      throw new HubError(
        `offline mode (HF_HUB_OFFLINE): the cache at ${ctx.cacheDir} has no copy of ${repoOrDir} at revision '${ctx.revision}'` +
          ` (missing: ${hf.missing.join(', ')}; or, for open_clip's layout, ${openClip.missing.join(', ')}); download it once online`,
        { repo: repoOrDir, filename: hf.missing[0] ?? openClip.missing[0], code: 'Offline' },
      );
    }
  }
  return adviseOnCache(
    ctx,
    () => fromCache({ ...ctx, offline: true }) !== undefined,
    () => fetchModel(ctx, hfSpecs, openClipSpecs),
  );
}

/** The network half of resolveModel: which layout the repository has, then its files, all at one commit. */
async function fetchModel(ctx: Ctx, hfSpecs: FileSpec[], openClipSpecs: FileSpec[]): Promise<string> {
  const { repo } = ctx;
  // which layout the repository has: its config.json says (the request also pins the commit for the rest)
  const first = await fetchRepo(ctx, [parseFileSpec(repo, 'config.json?')]);
  const pinned: Ctx = { ...ctx, revision: basename(first) };
  const config = join(first, 'config.json');
  if (isFile(config) && isTransformersClipConfig(config)) return fetchRepo(pinned, hfSpecs);
  try {
    return openClipWeights(await fetchRepo(pinned, openClipSpecs));
  } catch (err) {
    if (!(err instanceof HubError) || err.code !== 'EntryNotFound' || err.filename !== openClipSpecs[0]!.names[0]) throw err;
    throw new HubError(
      `${repo} has no CLIP that promptiqa reads: ${isFile(config) ? 'its config.json is not a transformers CLIP config' : 'no config.json'}` +
        ` (Hugging Face layout), and none of ${openClipSpecs[0]!.names.join(', ')} (open_clip's) at revision '${ctx.revision}'`,
      { repo, filename: isFile(config) ? openClipSpecs[0]!.names[0] : 'config.json', status: 404, code: 'EntryNotFound' },
    );
  }
}
