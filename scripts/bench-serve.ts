/**
 * The service under load, against `score` on the same images, model and threads, in one run (a benchmark, not a
 * test): `score`'s throughput (createMetric + scoreFiles, as the command runs it, load time excluded); then
 * `promptiqa serve` in a child process under autocannon, `--connections` clients (32) sending one image per
 * request for `--duration` seconds (30): throughput, its ratio to score's, p50/p99 latency and any error answer;
 * then the same load again with SIGTERM sent halfway: every request the server accepted must be answered and the
 * process must exit 0.
 *
 *   node --import tsx scripts/bench-serve.ts --images DIR --method clip-iqa --model MODEL [--option k=v] \
 *     [--threads 2] [--batch 8] [--limit 256] [--connections 32] [--duration 30]
 */
import { createRequire } from 'node:module';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

interface CannonResult {
  requests: { average: number; total: number; sent: number };
  latency: { p50: number; p99: number; average: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
  statusCodeStats: Record<string, { count: number }>;
  duration: number;
}
interface CannonRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer;
}
interface CannonOptions {
  url: string;
  connections: number;
  duration: number;
  timeout?: number;
  requests: Array<{ method: string; path: string; setupRequest: (req: CannonRequest) => CannonRequest }>;
}
type Cannon = (opts: CannonOptions) => Promise<CannonResult> & { on(event: 'reqError', f: (err: NodeJS.ErrnoException) => void): void };

const require = createRequire(import.meta.url);
const autocannon = require('autocannon') as Cannon;

// the child: the command line itself
if (process.argv[2] === '--cli') {
  const { main } = await import('../src/cli/main.js');
  process.exitCode = await main(['node', 'promptiqa', ...process.argv.slice(3)]);
} else {
  await bench();
}

async function bench(): Promise<void> {
  const { values } = parseArgs({
    options: {
      images: { type: 'string' },
      method: { type: 'string', default: 'clip-iqa' },
      model: { type: 'string' },
      option: { type: 'string', multiple: true, default: [] },
      threads: { type: 'string', default: '2' },
      batch: { type: 'string', default: '8' },
      limit: { type: 'string', default: '256' },
      connections: { type: 'string', default: '32' },
      duration: { type: 'string', default: '30' },
    },
  });
  if (!values.images) throw new Error('give --images DIR');
  const threads = Number(values.threads);
  const batch = Number(values.batch);
  const files = readdirSync(values.images)
    .filter((f) => /\.(jpe?g|png|webp)$/i.test(f))
    .sort()
    .slice(0, Number(values.limit))
    .map((f) => join(values.images!, f));
  const bodies = files.map((f) => readFileSync(f));
  const methodOptions = Object.fromEntries(values.option.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  console.log(`${files.length} images, ${values.method} on ${values.model ?? 'its default model'}, threads ${threads}, batch ${batch}`);

  // score: createMetric and scoreFiles, as `promptiqa score` runs them (a first pass warms the graph up)
  // timed before and after the service (the mean is the reference), so that a change in the machine's load shows
  const { createMetric } = await import('../src/methods/index.js');
  const timeScore = async (): Promise<number> => {
    const metric = await createMetric(values.method, { model: values.model, methodOptions, threads, batchSize: batch });
    try {
      for await (const _ of metric.scoreFiles(files.slice(0, batch))) void _;
      const t0 = performance.now();
      let scored = 0;
      for await (const r of metric.scoreFiles(files)) if ('score' in r) scored++;
      const rate = scored / ((performance.now() - t0) / 1000);
      console.log(`score: ${scored} images at ${rate.toFixed(2)} img/s`);
      return rate;
    } finally {
      await metric.close();
    }
  };
  const scoreBefore = await timeScore();

  const load = (url: string, duration: number): ReturnType<Cannon> => {
    let k = 0;
    return autocannon({
      url,
      connections: Number(values.connections),
      duration,
      timeout: 120,
      requests: [
        {
          method: 'POST',
          path: '/v1/score',
          setupRequest: (req) => ({ ...req, headers: { 'content-type': 'application/octet-stream' }, body: bodies[k++ % bodies.length]! }),
        },
      ],
    });
  };

  const serveArgs = [
    'serve',
    '--method',
    values.method,
    ...(values.model ? ['--model', values.model] : []),
    ...values.option.flatMap((o) => ['--option', o]),
    '--threads',
    String(threads),
    '--batch',
    String(batch),
    '--port',
    '0',
    '--max-queue',
    '1024',
  ];
  const startServer = async (): Promise<{ url: string; exited: Promise<unknown[]>; kill: () => void; stderr: () => string }> => {
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--cli', ...serveArgs], {
      stdio: ['ignore', 'inherit', 'pipe'],
    });
    let err = '';
    child.stderr.setEncoding('utf8');
    const exited = once(child, 'exit');
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (s: string) => {
        err += s;
        const m = /listening on (http:\/\/\S+)/.exec(err);
        if (m) resolve(m[1]!);
      });
      void exited.then(() => reject(new Error(`serve exited: ${err}`)));
    });
    return { url, exited, kill: () => child.kill('SIGTERM'), stderr: () => err };
  };

  // the service under load; a short warm-up first, so that the graph is built before the timed run
  const server = await startServer();
  await load(server.url, 3);
  const r = await load(server.url, Number(values.duration));
  const rate = r.requests.total / r.duration;
  const scoreRate = (scoreBefore + (await timeScore())) / 2;
  console.log(
    `serve: ${r.requests.total} requests in ${r.duration.toFixed(1)} s, ${rate.toFixed(2)} img/s (${(rate / scoreRate).toFixed(2)}× score's mean ${scoreRate.toFixed(2)}), ` +
      `latency p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms; 2xx ${r['2xx']}, non-2xx ${r.non2xx}, errors ${r.errors}, timeouts ${r.timeouts}`,
  );
  const batches = await (await fetch(`${server.url}/metrics`)).text();
  const count = Number(/promptiqa_batch_size_count\{[^}]*\} (\d+)/.exec(batches)?.[1]);
  const sum = Number(/promptiqa_batch_size_sum\{[^}]*\} (\d+)/.exec(batches)?.[1]);
  console.log(`batches: ${count}, mean size ${(sum / count).toFixed(2)}`);

  // SIGTERM halfway through a load: what was accepted is answered, then exit 0
  const during = load(server.url, 10);
  const why = new Map<string, number>();
  during.on('reqError', (err) => why.set(err.code ?? err.message, (why.get(err.code ?? err.message) ?? 0) + 1));
  setTimeout(server.kill, 5000);
  const d = await during;
  const [code] = await server.exited;
  console.log(
    `SIGTERM under load: exit ${String(code)}; ${d.requests.total} answered (${Object.entries(d.statusCodeStats)
      .map(([s, c]) => `${s}: ${c.count}`)
      .join(
        ', ',
      )}), connection errors ${d.errors} (${[...why].map(([k, n]) => `${k}: ${n}`).join(', ') || 'none'}), timeouts ${d.timeouts}`,
  );
  console.log(`the server said: ${/closed: .*/.exec(server.stderr())?.[0] ?? '(nothing)'}`);
  if (code !== 0) process.exitCode = 1;
}
