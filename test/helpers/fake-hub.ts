/**
 * A Hugging Face hub on 127.0.0.1 for tests: it answers like huggingface.co. Small files come straight from
 * /resolve/ with their git sha1 as ETag; LFS files (.safetensors, .pt, .pth, .bin) get a 302 to a CDN (a
 * second server, so another origin) carrying X-Linked-Etag (the sha256) and X-Linked-Size; X-Repo-Commit and
 * X-Error-Code headers; Range requests. It has no /api, as some mirrors have none.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
/** the id git gives a blob: what the hub sends as the ETag of a file not stored with LFS */
export const gitSha1 = (b: Buffer): string => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
export const isLfs = (file: string): boolean => /\.(safetensors|pt|pth|bin)$/.test(file);
/** the ETag the hub gives a file: sha256 for LFS files, git's sha1 for the others */
export const etagOf = (file: string, body: Buffer): string => (isLfs(file) ? sha256(body) : gitSha1(body));

export interface FakeRepo {
  /** the commit every revision ('main' or this commit) resolves to */
  commit: string;
  files: ReadonlyMap<string, Buffer>;
}

export interface FakeHubOptions {
  /** a token every hub request must carry */
  token?: string;
  /** the first GET of this file is cut after `bytes` bytes */
  cutAfter?: { file: string; bytes: number };
  /** this file (in any repo) is always served with one byte changed, at the right length */
  corrupt?: string;
  /** answer Range requests with the whole file (200) */
  ignoreRange?: boolean;
  /** the first n hub requests get a 503 */
  failFirst?: number;
}

export interface Logged {
  server: 'hub' | 'cdn';
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
}

export interface FakeHub {
  endpoint: string;
  requests: Logged[];
  close(): Promise<void>;
}

export async function startHub(repos: Readonly<Record<string, FakeRepo>>, opts: FakeHubOptions = {}): Promise<FakeHub> {
  const requests: Logged[] = [];
  let cut = false;
  let failures = 0;

  const serveBody = (req: IncomingMessage, res: ServerResponse, file: string, source: Buffer, extra: Record<string, string>) => {
    let body = source;
    if (opts.corrupt === file) {
      body = Buffer.from(body);
      body[body.length >> 1]! ^= 0xff;
    }
    const range = opts.ignoreRange ? null : /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      const start = Number(range[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, {
        ...extra,
        'content-length': body.length - start,
        'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
      });
      body = body.subarray(start);
    } else {
      res.writeHead(200, { ...extra, 'content-length': body.length, 'accept-ranges': 'bytes' });
    }
    if (req.method === 'HEAD') {
      res.end();
    } else if (opts.cutAfter?.file === file && !cut) {
      cut = true;
      res.write(body.subarray(0, opts.cutAfter.bytes), () => res.destroy());
    } else {
      res.end(body);
    }
  };

  const hub = createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    requests.push({ server: 'hub', method: req.method!, path: url.pathname, headers: req.headers });
    if (opts.failFirst && failures < opts.failFirst) {
      failures++;
      res.writeHead(503).end();
      return;
    }
    if (opts.token && req.headers.authorization !== `Bearer ${opts.token}`) {
      res.writeHead(401, { 'x-error-message': 'Invalid credentials' }).end();
      return;
    }
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const repo = m ? repos[m[1]!] : undefined;
    if (!m || !repo) {
      res.writeHead(404, { 'x-error-code': 'RepoNotFound' }).end();
      return;
    }
    const revision = decodeURIComponent(m[2]!);
    const file = decodeURIComponent(m[3]!);
    if (revision !== 'main' && revision !== repo.commit) {
      res.writeHead(404, { 'x-error-code': 'RevisionNotFound' }).end();
      return;
    }
    const body = repo.files.get(file);
    if (!body) {
      res.writeHead(404, { 'x-error-code': 'EntryNotFound', 'x-repo-commit': repo.commit }).end();
      return;
    }
    const etag = etagOf(file, body);
    if (isLfs(file)) {
      res
        .writeHead(302, {
          location: `${cdnUrl}/${etag}?repo=${encodeURIComponent(m[1]!)}&file=${encodeURIComponent(file)}`,
          etag: `"${etag}"`,
          'x-linked-etag': `"${etag}"`,
          'x-linked-size': body.length,
          'x-repo-commit': repo.commit,
          'content-length': 0,
        })
        .end();
      return;
    }
    serveBody(req, res, file, body, { etag: `"${etag}"`, 'x-repo-commit': repo.commit });
  });

  const cdn = createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    requests.push({ server: 'cdn', method: req.method!, path: url.pathname, headers: req.headers });
    const file = url.searchParams.get('file') ?? '';
    const body = repos[url.searchParams.get('repo') ?? '']?.files.get(file);
    if (!body || url.pathname !== `/${etagOf(file, body)}`) {
      res.writeHead(404).end();
      return;
    }
    serveBody(req, res, file, body, { etag: `"cdn-${etagOf(file, body).slice(0, 8)}"` });
  });

  const listen = (s: typeof hub) =>
    new Promise<string>((ok) => s.listen(0, '127.0.0.1', () => ok(`http://127.0.0.1:${(s.address() as AddressInfo).port}`)));
  const cdnUrl = await listen(cdn);
  const endpoint = await listen(hub);
  const close = async () => {
    for (const s of [hub, cdn]) {
      s.closeAllConnections();
      await new Promise((ok) => s.close(ok));
    }
  };
  return { endpoint, requests, close };
}
