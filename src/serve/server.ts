/**
 * `createServer(opts)`: the scoring service as a Fastify instance, for `promptiqa serve` and for embedding.
 *
 * Routes: POST /v1/score (a raw image body, multipart with several files, or JSON naming files under `root`),
 * GET /v1/setups, /healthz, /readyz, /metrics (Prometheus), /openapi.json (described in `openapi.ts`); then the
 * page's (`registerPage`). Concurrent requests' images are scored together in the metric's batches
 * (`batcher.ts`). Limits: the body size (413), the images per request (413), the pixels of an image (the
 * decompression-bomb guard: that image's error), a bounded queue (503 with Retry-After), a time limit per
 * request (503). Safety: with a token, the API (/v1/…) and /metrics need `Authorization: Bearer <token>`
 * (a route marked `config: { public: true }` excepted); the page's shipped files, /openapi.json, /healthz and
 * /readyz are open; without a token, only requests that reach a loopback address are answered; CORS only for the origin given; errors never carry a stack.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { open, realpath, stat } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { isIP } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import multipart from '@fastify/multipart';
import type { Metric, MetricOptions } from '../methods/metric.js';
import { createMetric } from '../methods/create.js';
import { DEFAULT_MAX_PIXELS, readImageHeader } from '../data/image.js';
import { describeFsError, formatBytes, notReadableInput } from '../util/fs.js';
import { Batcher, CancelledError, QueueFullError, imageProblem, type ImageOutcome } from './batcher.js';
import { createServeMetrics, type ServeMetrics } from './metrics.js';
import { openApiDocument } from './openapi.js';
import { registerPage } from './page.js';

/** A set-up to load: a method (or pretrained set-up) name, as `createMetric` takes it. */
export interface SetupSpec {
  /** the name requests use (default: `method`) */
  name?: string;
  method: string;
  model?: string;
  checkpoint?: string;
  methodOptions?: Record<string, unknown>;
}

/** A metric made by the caller, served under `name`; the caller closes it (the server does not). */
export interface MetricSetup {
  name: string;
  metric: Metric;
  /** images per batch (default 8, the metric's default) */
  batchSize?: number;
}

export interface ServeLimits {
  /** the largest request body, and the largest file read under root (default 32 MiB) */
  maxBodyBytes?: number;
  /** images in one request at most (default 64) */
  maxImages?: number;
  /** images waiting for a batch, per set-up, at most; beyond, 503 (default 256) */
  maxQueue?: number;
  /** a request not answered in this time gets 503 (default 60 s); also the time to receive a request */
  timeoutMs?: number;
  /** bytes of images held by requests being scored, at most; beyond, 503 (default 512 MiB) */
  maxQueueBytes?: number;
  /** how long an image waits for others to fill a batch (default 5 ms) */
  batchWaitMs?: number;
  /** the pixels of an image at most: a larger one (a decompression bomb) is that image's error (default 100e6) */
  maxPixels?: number;
}

export interface ServerOptions {
  /** the set-ups, the first the default; specs are loaded with `metricOptions` */
  setups: ReadonlyArray<SetupSpec | MetricSetup>;
  /** createMetric's options for every spec in `setups` (device, threads, batchSize, cache, …) */
  metricOptions?: Omit<MetricOptions, 'model' | 'checkpoint' | 'methodOptions'>;
  /** the folder whose files JSON requests may name (and the page may open); none: no file can be named */
  root?: string;
  /** the bearer token requests must carry; without one, only loopback addresses are answered */
  token?: string;
  /** an origin allowed to call the API from a browser (CORS); none: no CORS headers */
  cors?: string;
  limits?: ServeLimits;
  /** Fastify's logger (default none) */
  logger?: FastifyServerOptions['logger'];
  /** told of server-side failures (the client gets a sentence, never a stack) */
  onError?: (err: unknown) => void;
}

export const SERVE_DEFAULTS = {
  maxBodyBytes: 32 * 1024 * 1024,
  maxImages: 64,
  maxQueue: 256,
  maxQueueBytes: 512 * 1024 * 1024,
  timeoutMs: 60_000,
  batchWaitMs: 5,
  maxPixels: DEFAULT_MAX_PIXELS,
} as const satisfies Required<ServeLimits>;

interface LoadedSetup {
  name: string;
  metric: Metric;
  owned: boolean;
  batcher: Batcher;
}

/** What the server exposes about itself (`app.promptiqa`). */
export interface ServeState {
  /** the set-ups by name, the default first */
  setups: ReadonlyArray<{ name: string; metric: Metric }>;
  /** the routes this module registered (method and URL), which the OpenAPI description must cover */
  apiRoutes: ReadonlyArray<{ method: string; url: string }>;
  metrics: ServeMetrics;
  /** requests received so far, answered, and abandoned by their client before an answer */
  counts(): { received: number; answered: number; abandoned: number };
}

declare module 'fastify' {
  interface FastifyInstance {
    promptiqa: ServeState;
  }
  interface FastifyContextConfig {
    /** answered without the token (health probes, the page's static shell) */
    public?: boolean;
  }
}

/** An answer with a status, for the error handler: its message is for the client. */
class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** Whether an address or host name is loopback only (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (h.startsWith('::ffff:')) return isLoopback(h.slice(7));
  return h === '::1';
}

/** The problem with serving on `host` with (or without) a token, or undefined: a token is needed off loopback. */
export function bindingProblem(host: string, token: string | undefined): string | undefined {
  if (token && token.length < 8) return 'the token must have at least 8 characters';
  if (!isLoopback(host) && !token)
    return `--host ${host} answers other machines: give a token (--token or PROMPTIQA_TOKEN) that requests must carry`;
  return undefined;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

type Item = { key: 'name' | 'file'; label: string; bytes?: Uint8Array; error?: string };

export async function createServer(opts: ServerOptions): Promise<FastifyInstance> {
  if (!opts || !Array.isArray(opts.setups) || opts.setups.length === 0) throw new TypeError('createServer: give at least one set-up');
  const limits = { ...SERVE_DEFAULTS, ...(opts.limits ?? {}) };
  const problem = opts.token !== undefined ? bindingProblem('127.0.0.1', opts.token) : undefined;
  if (problem) throw new TypeError(`createServer: ${problem}`);
  const rootReal = opts.root !== undefined ? await rootFolder(opts.root) : undefined;
  const metrics = createServeMetrics();
  const onError = opts.onError ?? ((): void => undefined);

  // the metrics, loaded before the server answers (readyz is true from the first request on)
  const loaded: LoadedSetup[] = [];
  const closeOwned = async (): Promise<void> => {
    await Promise.all(loaded.filter((s) => s.owned).map((s) => s.metric.close()));
  };
  try {
    for (const s of opts.setups as ReadonlyArray<SetupSpec & Partial<MetricSetup>>) {
      const given = s.metric !== undefined;
      const name = s.name ?? s.method;
      if (loaded.some((x) => x.name === name))
        throw new TypeError(`createServer: two set-ups are named ${name}; name them apart (SetupSpec.name)`);
      const metric =
        s.metric ??
        (await createMetric(s.method, {
          ...(opts.metricOptions ?? {}),
          model: s.model,
          checkpoint: s.checkpoint,
          methodOptions: s.methodOptions,
        }));
      const batchSize = given ? (s.batchSize ?? 8) : (opts.metricOptions?.batchSize ?? 8);
      const batcher = new Batcher(metric, {
        batchSize,
        waitMs: limits.batchWaitMs,
        maxQueue: limits.maxQueue,
        onBatch: (n) => metrics.batchSize.observe({ setup: name }, n),
        onDepth: (d) => metrics.queueDepth.set({ setup: name }, d),
        onInternalError: onError,
      });
      metrics.queueDepth.set({ setup: name }, 0);
      loaded.push({ name, metric, owned: !given, batcher });
    }
  } catch (err) {
    await closeOwned();
    throw err;
  }
  const byName = new Map(loaded.map((s) => [s.name, s]));
  const setupInfo = (s: LoadedSetup): Record<string, unknown> => ({
    setup: s.name,
    method: s.metric.source.method,
    scoreRange: s.metric.source.scoreRange,
    higherIsBetter: !s.metric.info.lowerBetter,
    model: { name: s.metric.source.model.name, id: s.metric.source.model.id },
  });

  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: limits.maxBodyBytes,
    requestTimeout: limits.timeoutMs,
    return503OnClosing: true,
  });
  const apiRoutes: Array<{ method: string; url: string }> = [];
  let collecting = true;
  app.addHook('onRoute', (r) => {
    if (!collecting) return;
    for (const m of [r.method].flat()) if (m !== 'HEAD') apiRoutes.push({ method: m, url: r.url });
  });
  const counts = { received: 0, answered: 0, abandoned: 0 };
  const state: ServeState = {
    setups: loaded.map((s) => ({ name: s.name, metric: s.metric })),
    apiRoutes,
    metrics,
    counts: () => ({ ...counts }),
  };
  app.decorate('promptiqa', state);
  // every request received ends answered (its answer written whole) or abandoned (its connection gone first)
  app.addHook('onRequest', (_request, reply, done) => {
    counts.received++;
    reply.raw.once('close', () => {
      if (reply.raw.writableFinished) counts.answered++;
      else counts.abandoned++;
    });
    done();
  });

  // errors: a sentence and a status, never a stack; a server-side failure is logged and answered 500
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _request, reply) => {
    if (err instanceof HttpError) {
      void reply.code(err.statusCode).headers(err.headers).send({ error: err.message });
      return;
    }
    const status = err.statusCode;
    if (status !== undefined && status >= 400 && status < 500) {
      void reply.code(status).send({ error: clientMessage(err, limits.maxBodyBytes) });
      return;
    }
    onError(err);
    void reply.code(500).send({ error: 'internal error (see the server log)' });
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: `no route ${request.method} ${request.url.split('?')[0]}` });
  });

  // CORS only for the origin asked for; a preflight is answered here, before the token is asked for
  if (opts.cors !== undefined) {
    const origin = opts.cors;
    app.addHook('onRequest', async (request, reply) => {
      if (request.headers.origin !== origin && origin !== '*') return;
      void reply.header('Access-Control-Allow-Origin', origin).header('Vary', 'Origin');
      if (request.method === 'OPTIONS' && request.headers['access-control-request-method']) {
        await reply
          .code(204)
          .header('Access-Control-Allow-Methods', 'GET, POST, OPTIONS')
          .header('Access-Control-Allow-Headers', 'Authorization, Content-Type')
          .header('Access-Control-Max-Age', '600')
          .send();
      }
    });
  }

  // the token: compared in constant time; without one, a request that reached a non-loopback address is refused
  const want = opts.token ? digest(opts.token) : undefined;
  app.addHook('onRequest', (request, _reply, done) => {
    done(authProblem(request));
  });
  function authProblem(request: FastifyRequest): HttpError | undefined {
    if (request.routeOptions.config?.public) return undefined;
    if (want === undefined) {
      const local = request.socket?.localAddress;
      if (local !== undefined && !isLoopback(local))
        return new HttpError(403, 'this server has no token, so it answers on a loopback address only');
      return undefined;
    }
    // the API and the metrics; the page's own shipped files, the description and the probes are open
    // by the route matched, not the URL as sent (which may spell the same path otherwise: %761 for v1)
    const route = request.routeOptions.url;
    if (route === undefined || (!route.startsWith('/v1/') && route !== '/metrics')) return undefined;
    const m = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
    if (m && timingSafeEqual(digest(m[1]!.trim()), want)) return undefined;
    return new HttpError(401, m ? 'wrong token' : 'this server needs Authorization: Bearer <token>', { 'WWW-Authenticate': 'Bearer' });
  }

  // requests by route and status, and their latency
  app.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.requests.inc({ route, method: request.method, status: String(reply.statusCode) });
    metrics.latency.observe({ route }, reply.elapsedTime / 1000);
    done();
  });

  let closing = false;
  let heldBytes = 0;
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });
  // an answer given while closing ends its connection, so that a keep-alive client does not hold the close up
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) void reply.header('Connection', 'close');
    done(null, payload);
  });
  // after the server has stopped accepting and answered what it had: the batches finish, then the sessions close
  app.addHook('onClose', async () => {
    await Promise.all(loaded.map((s) => s.batcher.idle()));
    await closeOwned();
  });

  await app.register(multipart, {
    limits: { fileSize: limits.maxBodyBytes, files: limits.maxImages, fields: 16, fieldSize: 1024, parts: limits.maxImages + 16 },
  });
  // text is no image: a text/plain body is 415, as any other type the route does not take
  app.removeContentTypeParser('text/plain');
  for (const type of ['application/octet-stream', /^image\//])
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: limits.maxBodyBytes }, (_r, body, done) => done(null, body));

  app.get('/healthz', { config: { public: true } }, (_request, reply) => reply.send({ ok: true }));
  app.get('/readyz', { config: { public: true } }, (_request, reply) =>
    closing ? reply.code(503).send({ ready: false, error: 'closing' }) : reply.send({ ready: true, setups: loaded.map((s) => s.name) }),
  );
  app.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  const openapi = openApiDocument();
  app.get('/openapi.json', (_request, reply) => reply.send(openapi));
  app.get('/v1/setups', (_request, reply) =>
    reply.send({ default: loaded[0]!.name, setups: loaded.map((s, i) => ({ ...setupInfo(s), default: i === 0 })) }),
  );

  app.post('/v1/score', async (request, reply) => {
    const query = (request.query ?? {}) as Record<string, unknown>;
    let setupName = typeof query.setup === 'string' ? query.setup : undefined;
    const items: Item[] = [];
    const tooMany = (): HttpError => new HttpError(413, `at most ${limits.maxImages} images per request`);

    if (request.isMultipart()) {
      let total = 0;
      for await (const part of request.parts()) {
        if (part.type === 'field') {
          if (part.fieldname === 'setup' && typeof part.value === 'string') setupName = part.value;
          continue;
        }
        if (items.length >= limits.maxImages) throw tooMany();
        const bytes = await part.toBuffer();
        total += bytes.length;
        if (total > limits.maxBodyBytes) throw new HttpError(413, `the body is over ${formatBytes(limits.maxBodyBytes)}`);
        items.push({ key: 'name', label: part.filename || part.fieldname, bytes });
      }
      if (items.length === 0) throw new HttpError(400, 'the multipart body has no file');
    } else if (Buffer.isBuffer(request.body)) {
      if (request.body.length === 0) throw new HttpError(400, 'the body is empty: send an image');
      items.push({ key: 'name', label: typeof query.name === 'string' ? query.name : 'image', bytes: request.body });
    } else if (request.body !== null && typeof request.body === 'object' && !Array.isArray(request.body)) {
      const body = request.body as { files?: unknown; setup?: unknown };
      if (body.setup !== undefined) {
        if (typeof body.setup !== 'string') throw new HttpError(400, 'setup must be a string');
        setupName = body.setup;
      }
      if (!Array.isArray(body.files) || body.files.length === 0 || body.files.some((f) => typeof f !== 'string' || f === ''))
        throw new HttpError(400, 'expected {"files": ["path under the root", …], "setup"?: "name"}');
      if (body.files.length > limits.maxImages) throw tooMany();
      const setup = pickSetup(byName, setupName, loaded[0]!);
      const resolved = await resolveUnderRoot(rootReal, body.files as string[]);
      // every file is inside the root: now they are read (a missing or unreadable one is that file's error)
      for (const r of resolved) items.push(await readItem(r, limits.maxBodyBytes));
      return answer(setup, items, reply);
    } else {
      throw new HttpError(400, 'send an image as the body, images as multipart/form-data, or JSON {"files": [...]}');
    }
    return answer(pickSetup(byName, setupName, loaded[0]!), items, reply);
  });

  /** Scores the items among the batches and answers; a client gone or a request out of time takes its images out. */
  async function answer(setup: LoadedSetup, items: Item[], reply: FastifyReply): Promise<unknown> {
    const controller = new AbortController();
    const onClose = (): void => {
      if (!reply.raw.writableFinished) controller.abort(new Error('the client went away'));
    };
    reply.raw.once('close', onClose);
    const timer = setTimeout(() => controller.abort(new Error('timed out')), limits.timeoutMs);
    try {
      // the header first: a decompression bomb or a file that is no image never reaches a batch
      await Promise.all(
        items.map(async (it) => {
          if (it.bytes === undefined) return;
          try {
            await readImageHeader(it.bytes, { maxPixels: limits.maxPixels });
          } catch (err) {
            it.error = imageProblem(err) ?? 'not a readable image';
            it.bytes = undefined;
          }
        }),
      );
      const todo = items.filter((it) => it.bytes !== undefined);
      const bytes = todo.reduce((n, it) => n + it.bytes!.length, 0);
      if (heldBytes + bytes > limits.maxQueueBytes)
        throw new HttpError(503, `the server is busy (${formatBytes(heldBytes)} of images being scored); try again shortly`, {
          'Retry-After': '1',
        });
      let outcomes: ImageOutcome[];
      heldBytes += bytes;
      try {
        outcomes = await setup.batcher.score(
          todo.map((it) => it.bytes!),
          controller.signal,
        );
      } catch (err) {
        if (err instanceof QueueFullError) throw new HttpError(503, err.message, { 'Retry-After': '1' });
        if (err instanceof CancelledError) throw new HttpError(503, `not answered in time (${err.message})`, { 'Retry-After': '1' });
        throw err;
      } finally {
        heldBytes -= bytes;
      }
      todo.forEach((it, i) => {
        const o = outcomes[i]!;
        if ('score' in o) it.bytes = undefined;
        Object.assign(it, o);
      });
      const results = items.map((it) =>
        it.error !== undefined ? { [it.key]: it.label, error: it.error } : { [it.key]: it.label, score: (it as { score?: number }).score },
      );
      const failed = results.filter((r) => 'error' in r).length;
      if (results.length - failed > 0) metrics.images.inc({ setup: setup.name, outcome: 'ok' }, results.length - failed);
      if (failed > 0) metrics.images.inc({ setup: setup.name, outcome: 'error' }, failed);
      return { ...setupInfo(setup), results };
    } finally {
      clearTimeout(timer);
      reply.raw.off('close', onClose);
    }
  }

  collecting = false;
  try {
    await registerPage(app, { root: opts.root });
  } catch (err) {
    // the sessions loaded above are not left open by a server that never started
    await closeOwned();
    throw err;
  }
  return app;
}

/** The root folder, links resolved; one that is not a folder is refused by name. */
async function rootFolder(root: string): Promise<string> {
  let real: string;
  try {
    real = await realpath(root);
  } catch (err) {
    throw new Error(`root ${root}: ${describeFsError(err)}`, { cause: err });
  }
  if (!(await stat(real)).isDirectory()) throw new Error(`root ${root}: not a folder`);
  return real;
}

function pickSetup(byName: ReadonlyMap<string, LoadedSetup>, name: string | undefined, dflt: LoadedSetup): LoadedSetup {
  if (name === undefined || name === '') return dflt;
  const s = byName.get(name);
  if (!s) throw new HttpError(400, `no set-up ${name}; loaded: ${[...byName.keys()].join(', ')}`);
  return s;
}

type Resolved = { file: string; real?: string; error?: string };

/**
 * The files a JSON request names, each resolved (links followed) and checked to be inside the root before any is
 * read: one outside (`../`, an absolute path elsewhere, a link out) is a 403 for the whole request. A path that
 * does not exist is that file's error.
 */
async function resolveUnderRoot(rootReal: string | undefined, files: readonly string[]): Promise<Resolved[]> {
  if (rootReal === undefined) throw new HttpError(403, 'this server was started without a root folder: no file may be named');
  const inside = (p: string): boolean => {
    const rel = relative(rootReal, p);
    return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
  };
  const out: Resolved[] = [];
  for (const file of files) {
    if (file.includes('\0')) throw new HttpError(400, 'a file name holds a NUL byte');
    const lexical = resolve(rootReal, file);
    if (!inside(lexical)) throw new HttpError(403, `${file} is outside the root folder`);
    let real: string;
    try {
      real = await realpath(lexical);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      out.push({ file, error: code === 'ENOENT' ? 'no such file' : `cannot resolve it (${code ?? 'error'})` });
      continue;
    }
    if (!inside(real)) throw new HttpError(403, `${file} leads outside the root folder`);
    out.push({ file, real });
  }
  return out;
}

/** A file under the root, read whole: only a regular file of at most maxBytes, opened without blocking. */
async function readItem(r: Resolved, maxBytes: number): Promise<Item> {
  if (r.real === undefined) return { key: 'file', label: r.file, error: r.error };
  let fh;
  try {
    fh = await open(r.real, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    return { key: 'file', label: r.file, error: `cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  try {
    const problem = notReadableInput(await fh.stat(), maxBytes);
    if (problem !== undefined) return { key: 'file', label: r.file, error: problem };
    return { key: 'file', label: r.file, bytes: await fh.readFile() };
  } catch (err) {
    return { key: 'file', label: r.file, error: `cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  } finally {
    await fh.close();
  }
}

/** A 4xx from Fastify or a plugin, told plainly. */
function clientMessage(err: Error & { code?: string; statusCode?: number }, maxBody: number): string {
  if (err.statusCode === 413) return `the body or a file is over ${formatBytes(maxBody)}`;
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
    return 'unsupported content type: send an image (image/* or application/octet-stream), multipart/form-data or JSON';
  return err.message;
}
