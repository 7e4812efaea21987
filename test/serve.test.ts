/**
 * The scoring service: the real server on a free loopback port, driven with node's fetch (and raw sockets for a
 * client that goes away). Scores are compared with createMetric's on the same files: equal, whatever the transport
 * and however concurrent requests were batched.
 */
import { pngClaiming } from './helpers/png.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { sharedDir } from './helpers/shared.js';
import { cliInChild, spawnCli } from './helpers/cli.js';
import { createMetric, type Metric } from '../src/methods/index.js';
import { createServer, bindingProblem, isLoopback, openApiDocument, type ServerOptions } from '../src/serve/index.js';

const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');
const agiqa = join(sharedDir(), 'datasets', 'agiqa-3k', 'images');
const IMAGES = Array.from({ length: 16 }, (_, i) => `AttnGAN_normal_${String(i).padStart(3, '0')}.jpg`);
// square views, so that images of several requests share a graph run (the whole-image default runs each alone)
const METHOD_OPTIONS = { testViews: 'resize' };

interface Scores {
  setup: string;
  scoreRange: [number, number];
  higherIsBetter: boolean;
  model: { name: string; id: string };
  results: Array<{ name?: string; file?: string; score?: number; error?: string }>;
}

let metric: Metric;
let expected: Map<string, number>;
let root: string;
const servers: FastifyInstance[] = [];

/** A server on a free loopback port with the shared metric (and any options), and its base URL. */
async function start(extra: Partial<ServerOptions> = {}): Promise<{ app: FastifyInstance; url: string }> {
  const app = await createServer({ setups: [{ name: 'clip-iqa', metric, batchSize: 4 }], root, ...extra });
  servers.push(app);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, url };
}

before(async () => {
  metric = await createMetric('clip-iqa', { model: tiny, methodOptions: METHOD_OPTIONS, threads: 1, batchSize: 4 });
  root = mkdtempSync(join(tmpdir(), 'promptiqa-serve-'));
  mkdirSync(join(root, 'img'));
  for (const f of IMAGES) copyFileSync(join(agiqa, f), join(root, 'img', f));
  expected = new Map();
  for await (const r of metric.scoreFiles(IMAGES.map((f) => join(root, 'img', f)))) {
    assert.ok('score' in r, JSON.stringify(r));
    expected.set(r.file.split('/').pop()!, r.score);
  }
});

after(async () => {
  for (const app of servers) await app.close();
  await metric.close();
});

describe('POST /v1/score', () => {
  let url: string;
  before(async () => {
    ({ url } = await start());
  });

  test('a raw body, multipart and JSON give the scores createMetric gives on the same files', async () => {
    const bytes = readFileSync(join(root, 'img', IMAGES[0]!));
    const raw = await fetch(`${url}/v1/score?name=${IMAGES[0]}`, {
      method: 'POST',
      body: bytes,
      headers: { 'content-type': 'image/jpeg' },
    });
    assert.equal(raw.status, 200);
    const r = (await raw.json()) as Scores;
    assert.equal(r.setup, 'clip-iqa');
    assert.deepEqual(r.scoreRange, [0, 1]);
    assert.equal(r.higherIsBetter, true);
    assert.equal(r.model.id, metric.source.model.id);
    assert.deepEqual(r.results, [{ name: IMAGES[0], score: expected.get(IMAGES[0]!) }]);

    const form = new FormData();
    for (const f of IMAGES.slice(0, 5)) form.append('file', new Blob([readFileSync(join(root, 'img', f))]), f);
    const mp = (await (await fetch(`${url}/v1/score`, { method: 'POST', body: form })).json()) as Scores;
    assert.deepEqual(
      mp.results,
      IMAGES.slice(0, 5).map((f) => ({ name: f, score: expected.get(f) })),
    );

    const files = IMAGES.slice(3, 9).map((f) => `img/${f}`);
    const js = await fetch(`${url}/v1/score`, {
      method: 'POST',
      body: JSON.stringify({ files, setup: 'clip-iqa' }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(js.status, 200);
    assert.deepEqual(
      ((await js.json()) as Scores).results,
      files.map((f) => ({ file: f, score: expected.get(f.slice(4)) })),
    );
  });

  test('16 concurrent clients sending one image each get the scores of createMetric', async () => {
    const answers = await Promise.all(
      IMAGES.map(async (f) => {
        const res = await fetch(`${url}/v1/score?name=${f}`, {
          method: 'POST',
          body: readFileSync(join(root, 'img', f)),
          headers: { 'content-type': 'application/octet-stream' },
        });
        assert.equal(res.status, 200);
        return (await res.json()) as Scores;
      }),
    );
    for (const [i, a] of answers.entries()) assert.deepEqual(a.results, [{ name: IMAGES[i], score: expected.get(IMAGES[i]!) }]);
    // they went through in shared batches: fewer batches than requests
    const text = await (await fetch(`${url}/metrics`)).text();
    const count = Number(/promptiqa_batch_size_count\{setup="clip-iqa"\} (\d+)/.exec(text)?.[1]);
    const sum = Number(/promptiqa_batch_size_sum\{setup="clip-iqa"\} (\d+)/.exec(text)?.[1]);
    assert.ok(sum > count, `batches of more than one image (${sum} images in ${count} batches)`);
  });

  test('../ and links out of the root are refused with 403, reading nothing; a missing file is its own error', async () => {
    const outside = mkdtempSync(join(tmpdir(), 'promptiqa-outside-'));
    copyFileSync(join(agiqa, IMAGES[0]!), join(outside, 'secret.jpg'));
    symlinkSync(join(outside, 'secret.jpg'), join(root, 'link.jpg'));
    symlinkSync(outside, join(root, 'dirlink'));
    const post = (files: string[]): Promise<Response> =>
      fetch(`${url}/v1/score`, { method: 'POST', body: JSON.stringify({ files }), headers: { 'content-type': 'application/json' } });
    for (const bad of [
      ['../x.jpg'],
      [`img/${IMAGES[0]}`, '../../etc/passwd'],
      [join(outside, 'secret.jpg')],
      ['link.jpg'],
      ['dirlink/secret.jpg'],
    ]) {
      const res = await post(bad);
      assert.equal(res.status, 403, bad.join(','));
      const body = (await res.json()) as { error: string };
      assert.ok(!('results' in body));
    }
    const res = await post(['img/none.jpg', `img/${IMAGES[1]}`]);
    assert.equal(res.status, 200);
    assert.deepEqual(((await res.json()) as Scores).results, [
      { file: 'img/none.jpg', error: 'no such file' },
      { file: `img/${IMAGES[1]}`, score: expected.get(IMAGES[1]!) },
    ]);
  });

  test('a decompression bomb and a file that is no image are their own errors; the server keeps answering', async () => {
    const form = new FormData();
    form.append('file', new Blob([pngClaiming(100000, 100000)]), 'bomb.png');
    form.append('file', new Blob([Buffer.from('not an image at all')]), 'text.jpg');
    form.append('file', new Blob([readFileSync(join(root, 'img', IMAGES[2]!))]), IMAGES[2]);
    const res = await fetch(`${url}/v1/score`, { method: 'POST', body: form });
    assert.equal(res.status, 200);
    const { results } = (await res.json()) as Scores;
    assert.equal(results[0]!.name, 'bomb.png');
    assert.match(results[0]!.error!, /decompression bomb/);
    assert.equal(results[1]!.name, 'text.jpg');
    assert.ok(results[1]!.error);
    assert.deepEqual(results[2], { name: IMAGES[2], score: expected.get(IMAGES[2]!) });
    const again = await fetch(`${url}/v1/score`, {
      method: 'POST',
      body: pngClaiming(100000, 100000),
      headers: { 'content-type': 'image/png' },
    });
    assert.equal(again.status, 200);
    assert.match(((await again.json()) as Scores).results[0]!.error!, /decompression bomb/);
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
  });

  test('bad requests: an unknown set-up, an empty body, another content type; errors carry no stack', async () => {
    const unknown = await fetch(`${url}/v1/score?setup=nope`, {
      method: 'POST',
      body: Buffer.from('x'),
      headers: { 'content-type': 'image/png' },
    });
    assert.equal(unknown.status, 400);
    assert.match(((await unknown.json()) as { error: string }).error, /no set-up nope; loaded: clip-iqa/);
    const text = await fetch(`${url}/v1/score`, { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' } });
    assert.equal(text.status, 415);
    const badJson = await fetch(`${url}/v1/score`, {
      method: 'POST',
      body: '{"files": [',
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(badJson.status, 400);
    const noFiles = await fetch(`${url}/v1/score`, {
      method: 'POST',
      body: '{"files": [3]}',
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(noFiles.status, 400);
    for (const r of [unknown, text, badJson, noFiles]) assert.ok(!JSON.stringify(r).includes('    at '));
    assert.equal((await fetch(`${url}/nothing-here`)).status, 404);
  });
});

describe('an image the method refuses', () => {
  test('is its own error; the images batched with it are scored as createMetric scores them', async () => {
    // whole images (the default): a side under one patch is refused by the method, past the header check
    const whole = await createMetric('clip-iqa', { model: tiny, threads: 1, batchSize: 4 });
    try {
      const app = await createServer({ setups: [{ name: 'whole', metric: whole, batchSize: 4 }], limits: { batchWaitMs: 200 } });
      servers.push(app);
      const url = await app.listen({ port: 0, host: '127.0.0.1' });
      const small = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 9, g: 99, b: 199 } } })
        .png()
        .toBuffer();
      const good = IMAGES.slice(0, 2).map((f) => join(root, 'img', f));
      const want: number[] = [];
      for await (const r of whole.scoreFiles(good)) want.push((r as { score: number }).score);
      const form = new FormData();
      form.append('file', new Blob([readFileSync(good[0]!)]), 'a.jpg');
      form.append('file', new Blob([small]), 'small.png');
      form.append('file', new Blob([readFileSync(good[1]!)]), 'b.jpg');
      const res = await fetch(`${url}/v1/score`, { method: 'POST', body: form });
      assert.equal(res.status, 200);
      const { results } = (await res.json()) as Scores;
      assert.deepEqual(results[0], { name: 'a.jpg', score: want[0] });
      assert.equal(results[1]!.name, 'small.png');
      assert.match(results[1]!.error!, /8×8 pixels: scoring the whole image needs at least/);
      assert.deepEqual(results[2], { name: 'b.jpg', score: want[1] });
    } finally {
      await whole.close();
    }
  });
});

describe('limits', () => {
  test('a body over the limit is 413, as are too many images; the server keeps answering', async () => {
    const { url } = await start({ limits: { maxBodyBytes: 10_000, maxImages: 2 } });
    const big = await fetch(`${url}/v1/score`, { method: 'POST', body: Buffer.alloc(20_000), headers: { 'content-type': 'image/jpeg' } });
    assert.equal(big.status, 413);
    const form = new FormData();
    form.append('file', new Blob([Buffer.alloc(20_000)]), 'big.jpg');
    assert.equal((await fetch(`${url}/v1/score`, { method: 'POST', body: form })).status, 413);
    const three = await fetch(`${url}/v1/score`, {
      method: 'POST',
      body: JSON.stringify({ files: ['a', 'b', 'c'] }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(three.status, 413);
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
  });

  test('a full queue answers 503 with Retry-After', async () => {
    const { url } = await start({ limits: { maxQueue: 2, batchWaitMs: 200 } });
    const body = readFileSync(join(root, 'img', IMAGES[0]!));
    const form = new FormData();
    for (let i = 0; i < 3; i++) form.append('file', new Blob([body]), `${i}.jpg`);
    const res = await fetch(`${url}/v1/score`, { method: 'POST', body: form });
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '1');
  });

  test('a request not answered in time is 503, its image taken out of the queue; bytes held are bounded too', async () => {
    const { url } = await start({ limits: { timeoutMs: 100, batchWaitMs: 2000 } });
    const body = readFileSync(join(root, 'img', IMAGES[0]!));
    const res = await fetch(`${url}/v1/score`, { method: 'POST', body, headers: { 'content-type': 'image/jpeg' } });
    assert.equal(res.status, 503);
    assert.match(((await res.json()) as { error: string }).error, /not answered in time/);
    assert.match(await (await fetch(`${url}/metrics`)).text(), /promptiqa_queue_depth\{setup="clip-iqa"\} 0/);

    const { url: small } = await start({ limits: { maxQueueBytes: body.length - 1 } });
    const full = await fetch(`${small}/v1/score`, { method: 'POST', body, headers: { 'content-type': 'image/jpeg' } });
    assert.equal(full.status, 503);
    assert.equal(full.headers.get('retry-after'), '1');
    await assert.rejects(createServer({ setups: [{ name: 'x', metric }], root: join(root, 'img', IMAGES[0]!) }), /not a folder/);
    await assert.rejects(createServer({ setups: [{ name: 'x', metric }], root: join(root, 'nowhere') }), /root .*nowhere/);
  });

  test('a client that disconnects mid-upload, or while its image waits, leaves the server serving', async () => {
    const { app, url } = await start({ limits: { batchWaitMs: 300 } });
    const { port } = new URL(url);
    // half a body, then gone
    const sock = connect(Number(port), '127.0.0.1');
    await once(sock, 'connect');
    sock.write(`POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n`);
    sock.write(Buffer.alloc(30_000));
    await new Promise((r) => setTimeout(r, 50));
    sock.destroy();
    // a whole request whose client leaves while its image waits for a batch
    const body = readFileSync(join(root, 'img', IMAGES[3]!));
    const waiting = connect(Number(port), '127.0.0.1');
    await once(waiting, 'connect');
    waiting.write(`POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: ${body.length}\r\n\r\n`);
    waiting.write(body);
    await new Promise((r) => setTimeout(r, 100));
    waiting.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const res = await fetch(`${url}/v1/score`, { method: 'POST', body, headers: { 'content-type': 'image/jpeg' } });
    assert.equal(res.status, 200);
    assert.deepEqual(((await res.json()) as Scores).results, [{ name: 'image', score: expected.get(IMAGES[3]!) }]);
    const metricsText = await (await fetch(`${url}/metrics`)).text();
    assert.match(metricsText, /promptiqa_queue_depth\{setup="clip-iqa"\} 0/);
    const counts = app.promptiqa.counts();
    // both clients that left are counted as such; every other request was answered
    assert.equal(counts.abandoned, 2, JSON.stringify(counts));
    assert.equal(counts.received, counts.answered + counts.abandoned, JSON.stringify(counts));
  });
});

describe('safety', () => {
  test('with a token: none or a wrong one is 401 on the API and the metrics; the probes and the description stay open', async () => {
    const { url } = await start({ token: 'a-long-secret' });
    const body = readFileSync(join(root, 'img', IMAGES[0]!));
    const post = (auth?: string): Promise<Response> =>
      fetch(`${url}/v1/score`, {
        method: 'POST',
        body,
        headers: { 'content-type': 'image/jpeg', ...(auth ? { authorization: auth } : {}) },
      });
    const none = await post();
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('www-authenticate'), 'Bearer');
    assert.equal((await post('Bearer wrong-token')).status, 401);
    assert.equal((await post('Basic a-long-secret')).status, 401);
    assert.equal((await fetch(`${url}/metrics`)).status, 401);
    assert.equal((await fetch(`${url}/v1/setups`)).status, 401);
    // the same route spelt otherwise is guarded the same
    for (const path of ['/%761/setups', '/v1/setups/', '/v1//setups', '/metrics?x=1'])
      assert.ok([401, 404].includes((await fetch(`${url}${path}`)).status), path);
    const ok = await post('Bearer a-long-secret');
    assert.equal(ok.status, 200);
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
    assert.equal((await fetch(`${url}/readyz`)).status, 200);
    assert.equal((await fetch(`${url}/openapi.json`)).status, 200);
  });

  test('a token is needed off loopback; CORS headers only for the origin given', async () => {
    assert.equal(bindingProblem('127.0.0.1', undefined), undefined);
    assert.equal(bindingProblem('::1', undefined), undefined);
    assert.equal(bindingProblem('localhost', undefined), undefined);
    assert.match(bindingProblem('0.0.0.0', undefined)!, /give a token/);
    assert.match(bindingProblem('192.168.1.4', '')!, /give a token/);
    assert.equal(bindingProblem('0.0.0.0', 'a-long-secret'), undefined);
    assert.ok(isLoopback('::ffff:127.0.0.1') && !isLoopback('10.0.0.1'));

    const { url: plain } = await start();
    const res = await fetch(`${plain}/v1/setups`, { headers: { origin: 'http://example.test' } });
    assert.equal(res.headers.get('access-control-allow-origin'), null);
    const { url } = await start({ cors: 'http://example.test', token: 'a-long-secret' });
    const pre = await fetch(`${url}/v1/score`, {
      method: 'OPTIONS',
      headers: { origin: 'http://example.test', 'access-control-request-method': 'POST' },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), 'http://example.test');
    const other = await fetch(`${url}/healthz`, { headers: { origin: 'http://elsewhere.test' } });
    assert.equal(other.headers.get('access-control-allow-origin'), null);
  });
});

describe('describing itself', () => {
  test('setups, readyz, metrics, and an OpenAPI description that covers every route', async () => {
    const { app, url } = await start();
    const setups = (await (await fetch(`${url}/v1/setups`)).json()) as { default: string; setups: Array<Record<string, unknown>> };
    assert.equal(setups.default, 'clip-iqa');
    assert.deepEqual(setups.setups[0], {
      setup: 'clip-iqa',
      method: 'clip-iqa',
      scoreRange: [0, 1],
      higherIsBetter: true,
      model: metric.source.model,
      default: true,
    });
    assert.deepEqual(await (await fetch(`${url}/readyz`)).json(), { ready: true, setups: ['clip-iqa'] });

    await fetch(`${url}/v1/score`, {
      method: 'POST',
      body: readFileSync(join(root, 'img', IMAGES[0]!)),
      headers: { 'content-type': 'image/jpeg' },
    });
    const metrics = await fetch(`${url}/metrics`);
    assert.match(metrics.headers.get('content-type')!, /text\/plain/);
    const text = await metrics.text();
    for (const name of [
      'promptiqa_requests_total',
      'promptiqa_images_total',
      'promptiqa_batch_size',
      'promptiqa_queue_depth',
      'promptiqa_request_duration_seconds',
    ])
      assert.ok(text.includes(`# TYPE ${name}`), name);
    assert.match(text, /promptiqa_requests_total\{route="\/v1\/score",method="POST",status="200"\} 1/);
    assert.match(text, /promptiqa_images_total\{setup="clip-iqa",outcome="ok"\} 1/);

    const doc = (await (await fetch(`${url}/openapi.json`)).json()) as { openapi: string; paths: Record<string, Record<string, unknown>> };
    assert.deepEqual(doc, JSON.parse(JSON.stringify(openApiDocument())));
    assert.match(doc.openapi, /^3\./);
    assert.ok(app.promptiqa.apiRoutes.length >= 6);
    for (const r of app.promptiqa.apiRoutes) assert.ok(doc.paths[r.url]?.[r.method.toLowerCase()], `${r.method} ${r.url} is described`);
  });
});

describe('promptiqa serve', () => {
  test('SIGTERM while a request is in flight: it is answered, then the process exits 0', async () => {
    const child = spawnCli(
      [
        'serve',
        '--method',
        'clip-iqa',
        '--model',
        tiny,
        '--option',
        'testViews=resize',
        '--threads',
        '1',
        '--port',
        '0',
        '--batch-wait',
        '500',
      ],
      { env: { ...process.env, PROMPTIQA_TOKEN: '' } },
    );
    let err = '';
    child.stderr.setEncoding('utf8');
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (s: string) => {
        err += s;
        const m = /listening on (http:\/\/\S+)/.exec(err);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${err}`)));
    });
    const exited = once(child, 'exit');
    // the image waits 500 ms for a batch: the signal arrives while it is in flight
    const pending = fetch(`${url}/v1/score`, {
      method: 'POST',
      body: readFileSync(join(root, 'img', IMAGES[4]!)),
      headers: { 'content-type': 'image/jpeg' },
    });
    await new Promise((r) => setTimeout(r, 150));
    child.kill('SIGTERM');
    const res = await pending;
    assert.equal(res.status, 200);
    assert.deepEqual(((await res.json()) as Scores).results, [{ name: 'image', score: expected.get(IMAGES[4]!) }]);
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0, err);
    assert.match(err, /SIGTERM: closing/);
    assert.match(err, /closed: 1 request\(s\) received, 1 answered, 0 abandoned/);
  });

  test('refuses to bind off loopback without a token', async () => {
    const { code, err } = await cliInChild(['serve', '--method', 'clip-iqa', '--model', tiny, '--host', '0.0.0.0'], {
      env: { ...process.env, PROMPTIQA_TOKEN: '' },
    });
    assert.equal(code, 2);
    assert.match(err, /--host 0\.0\.0\.0 answers other machines: give a token/);
  });
});
