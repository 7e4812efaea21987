/**
 * The page (`page/`, served by src/serve/page.ts) and its read-only endpoints under --root.
 *
 * The endpoints are tried with Fastify's inject: paths that leave the root (`../`, an absolute path, a link to
 * a file or a folder outside) answer 403; without a root, 404; outputs come in pages. Then the page runs in
 * a real headless Chromium (Debian's `chromium`, or PROMPTIQA_CHROMIUM) against a server on a free local port
 * that registers the page with a fake `POST /v1/score` and `GET /v1/setups` following the service's contract
 * (the real ones are the service's; this test is about the page): 20 dropped images sorted by score, the
 * threshold moved and the kept list exported; an output of 2,000 entries scrolled (thumbnails load as they come
 * into view); two outputs compared (scatter and SRCC, a point opens its image); an eval and a train run. Each
 * view is saved as a screenshot under coverage/page/. Without a Chromium the browser tests are skipped, except
 * under CI, where they fail.
 */
import { after, before, describe, test } from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import multipart from '@fastify/multipart';
import sharp from 'sharp';
import { chromium, type Browser, type Page } from 'playwright-core';
import { registerPage } from '../src/serve/page.js';
import { srcc } from '../src/eval/metrics.js';
import { linePlotSvg, scatterPlotSvg } from '../src/eval/plot.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SHOTS = join(REPO, 'coverage', 'page');
const CHROMIUM = process.env.PROMPTIQA_CHROMIUM ?? '/usr/bin/chromium';
const N_BIG = 2000;

const tmp = mkdtempSync(join(tmpdir(), 'promptiqa-page-'));
const root = join(tmp, 'root');
const outside = join(tmp, 'outside');
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A small PNG of one colour. */
async function png(r: number, g: number, b: number, size = 48): Promise<Buffer> {
  return sharp({ create: { width: size, height: size, channels: 3, background: { r, g, b } } })
    .png()
    .toBuffer();
}

/** Deterministic numbers in [0, 1) (an LCG), for the outputs' scores. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** The fake service's score of a dropped image, from its name (img-07.png → …); `broken.png` fails. */
const fakeScore = (name: string): number => ((Number(/(\d+)/.exec(name)?.[1] ?? 0) * 7) % 20) / 20 + 0.025;
const SETUP = {
  setup: 'clip-iqa',
  scoreRange: [0, 1] as [number, number],
  higherIsBetter: true,
  model: { name: 'tiny-vit-p32', id: 'sha256:abc' },
};

const big: { file: string; a?: number; b?: number; error?: string }[] = [];

before(async () => {
  mkdirSync(join(root, 'big'), { recursive: true });
  mkdirSync(join(root, 'runs', 'eval1'), { recursive: true });
  mkdirSync(join(root, 'runs', 'train1'), { recursive: true });
  mkdirSync(outside, { recursive: true });
  const palette = await Promise.all(Array.from({ length: 16 }, (_, i) => png((i * 53) % 256, (i * 97 + 40) % 256, (i * 151 + 90) % 256)));
  writeFileSync(join(outside, 'secret.png'), palette[0]!);
  writeFileSync(join(root, 'notes.txt'), 'not an image\n');
  mkdirSync(join(root, 'photos'));
  writeFileSync(join(root, 'photos', 'wide.png'), await png(10, 120, 200, 640));
  writeFileSync(join(root, 'photos', 'bad.jpg'), 'not a JPEG at all\n');
  symlinkSync(join(outside, 'secret.png'), join(root, 'escape.png'));
  symlinkSync(outside, join(root, 'linkdir'));
  // an output of 2,000 images (absolute paths, as `score --format jsonl --output` writes them) and a csv of
  // another set-up over the same images, its header in FILE.meta.json
  const rnd = lcg(7);
  for (let i = 0; i < N_BIG; i++) {
    const file = join(root, 'big', `${String(i).padStart(4, '0')}.png`);
    writeFileSync(file, palette[i % palette.length]!);
    const a = rnd();
    if (i % 250 === 3) big.push({ file, error: 'cannot decode: truncated PNG' });
    else big.push({ file, a, b: 1 + 4 * (0.7 * a + 0.3 * rnd()) });
  }
  const header = (method: string, scoreRange: [number, number]): object => ({
    format: 'promptiqa-scores/1',
    version: '0.1.0',
    method,
    model: { name: 'tiny-vit-p32', id: 'sha256:abc' },
    options: {},
    scoreRange,
  });
  writeFileSync(
    join(root, 'out-a.jsonl'),
    [header('clip-iqa', [0, 1]), ...big.map((r) => (r.error ? { file: r.file, error: r.error } : { file: r.file, score: r.a }))]
      .map((r) => JSON.stringify(r) + '\n')
      .join(''),
  );
  writeFileSync(
    join(root, 'out-b.csv'),
    [
      'file,score,error',
      ...big.map((r) => (r.error ? `big/${r.file.split('/').pop()},,x` : `big/${r.file.split('/').pop()},${r.b},`)),
    ].join('\n') + '\n',
  );
  writeFileSync(join(root, 'out-b.csv.meta.json'), JSON.stringify(header('liqe', [1, 5])));
  // an output whose images cannot all be shown: one gone, one not an image, one outside the root
  writeFileSync(
    join(root, 'gone.jsonl'),
    [
      { file: join(root, 'big', '0000.png'), score: 0.9 },
      { file: join(root, 'big', 'gone.png'), score: 0.8 },
      { file: join(root, 'notes.txt'), score: 0.7 },
      { file: join(outside, 'secret.png'), score: 0.6 },
    ]
      .map((r) => JSON.stringify(r) + '\n')
      .join(''),
  );
  // an eval run and a train run, as `promptiqa eval` and `promptiqa train` leave them
  const pred = Array.from({ length: 60 }, (_, i) => i / 60 + 0.1 * Math.sin(i));
  const mos = pred.map((p, i) => 1 + 4 * p + 0.3 * Math.cos(i * 3));
  const metrics = { srcc: srcc(pred, mos), plcc: 0.9123, krcc: 0.7456, plcc_fit: 0.9234 };
  writeFileSync(
    join(root, 'runs', 'eval1', 'report.json'),
    JSON.stringify({
      protocol: 'clip-iqa (zero-shot) on agiqa-3k (mos_quality), all 60 images',
      method: 'clip-iqa',
      dataset: 'agiqa-3k',
      target: 'mos_quality',
      n: 60,
      metrics,
      notes: [],
      failed: ['x/broken.jpg: cannot decode'],
      scores: pred.map((p, i) => ({ file: `img${i}.jpg`, mos: mos[i], score: p })),
    }),
  );
  writeFileSync(
    join(root, 'runs', 'eval1', 'scatter.svg'),
    scatterPlotSvg({ pred, mos, title: 'clip-iqa on agiqa-3k', legend: [`SRCC ${metrics.srcc.toFixed(4)}`] }),
  );
  const history = [1, 2, 3, 4].map((epoch) => ({ epoch, loss: 1 / epoch, val: { srcc: 0.5 + epoch / 10, n: 20 }, lr: 1e-3 }));
  writeFileSync(
    join(root, 'runs', 'train1', 'result.json'),
    JSON.stringify({
      bestEpoch: 4,
      selectOn: 'val',
      best: history[3]!.val,
      test: { srcc: 0.8765, n: 20 },
      history,
      protocol: 'agiqa-3k, 4 epochs',
    }),
  );
  writeFileSync(join(root, 'runs', 'train1', 'train.jsonl'), history.map((h) => JSON.stringify({ kind: 'epoch', ...h }) + '\n').join(''));
  writeFileSync(
    join(root, 'runs', 'train1', 'training.svg'),
    linePlotSvg({
      title: 'training',
      xLabel: 'epoch',
      panels: [{ yLabel: 'loss', series: [{ name: 'loss', x: [1, 2, 3, 4], y: history.map((h) => h.loss) }] }],
    }),
  );
});

/** The page's routes with the fake scoring endpoints; `files` counts the image requests. */
async function makeApp(opts: {
  root?: string;
  token?: string;
}): Promise<{ app: FastifyInstance; files: () => number; posts: () => number }> {
  const app = Fastify();
  let files = 0;
  let posts = 0;
  // as the service does when bound beyond this machine: the API asks for a bearer token, the page's own files do not
  if (opts.token !== undefined)
    app.addHook('onRequest', (req, reply, done) => {
      if (req.url.startsWith('/v1/') && req.headers.authorization !== `Bearer ${opts.token}`)
        void reply.code(401).send({ error: 'a token is required (Authorization: Bearer TOKEN)' });
      else done();
    });
  app.addHook('onRequest', (req, _reply, done) => {
    if (req.url.startsWith('/v1/file')) files++;
    done();
  });
  await app.register(multipart, { limits: { fileSize: 1 << 20, files: 100 } });
  app.get('/v1/setups', () => Promise.resolve({ setups: [SETUP] }));
  app.post('/v1/score', async (req) => {
    const setup = (req.query as { setup?: string }).setup ?? SETUP.setup;
    assert.equal(setup, SETUP.setup);
    posts++;
    const results = [];
    for await (const part of req.parts()) {
      if (part.type !== 'file') continue;
      const bytes = await part.toBuffer();
      if (part.filename === 'broken.png') results.push({ name: part.filename, error: 'cannot decode broken.png: not an image' });
      else results.push({ name: part.filename, score: fakeScore(part.filename), bytes: bytes.length });
    }
    return { ...SETUP, results };
  });
  await registerPage(app, opts);
  return { app, files: () => files, posts: () => posts };
}

describe("the page's endpoints", () => {
  let app: FastifyInstance;
  before(async () => {
    app = (await makeApp({ root })).app;
  });
  after(() => app.close());
  const get = async (url: string): Promise<{ status: number; body: Record<string, unknown>; type: string }> => {
    const r = await app.inject({ method: 'GET', url });
    const type = String(r.headers['content-type'] ?? '');
    return { status: r.statusCode, body: type.startsWith('application/json') ? r.json<Record<string, unknown>>() : {}, type };
  };

  test('the page is served at / with its modules', async () => {
    const r = await app.inject({ method: 'GET', url: '/' });
    assert.equal(r.statusCode, 200);
    assert.match(String(r.headers['content-type']), /text\/html/);
    assert.match(r.body, /<script type="module" src="app.js">/);
    assert.match(String(r.headers['content-security-policy']), /default-src 'self'/);
    for (const f of ['app.js', 'plots.js', 'style.css'])
      assert.equal((await app.inject({ method: 'GET', url: `/${f}` })).statusCode, 200, f);
  });

  test('paths that leave the root answer 403 and read nothing; others 404, 415', async () => {
    for (const p of [
      '../outside/secret.png',
      join(outside, 'secret.png'),
      'escape.png',
      'linkdir/secret.png',
      'big/../../outside/secret.png',
    ]) {
      const r = await get(`/v1/file?path=${encodeURIComponent(p)}`);
      assert.equal(r.status, 403, p);
      assert.match(String(r.body.error), /outside --root/);
      if (!p.startsWith('/')) assert.doesNotMatch(String(r.body.error), new RegExp(tmp), 'no server path in the answer');
    }
    assert.equal((await get('/v1/browse?path=linkdir')).status, 403);
    assert.equal((await get('/v1/browse?path=..')).status, 403);
    assert.equal((await get('/v1/output?path=..%2Foutside%2Fx.jsonl')).status, 403);
    assert.equal((await get('/v1/run?path=linkdir')).status, 403);
    assert.equal((await get('/v1/file?path=nothere.png')).status, 404);
    assert.equal((await get('/v1/file?path=notes.txt')).status, 415);
    assert.equal((await get('/v1/file')).status, 400);
    const ok = await get('/v1/file?path=big%2F0001.png');
    assert.equal(ok.status, 200);
    assert.equal(ok.type, 'image/png');
    const svg = await app.inject({ method: 'GET', url: '/v1/file?path=runs/eval1/scatter.svg' });
    assert.equal(svg.headers['content-type'], 'image/svg+xml');
    assert.match(String(svg.headers['content-security-policy']), /sandbox/);
  });

  test('a thumbnail is a small WebP; one that cannot be decoded says why', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/file?path=photos/wide.png&size=100' });
    assert.equal(r.statusCode, 200);
    assert.equal(r.headers['content-type'], 'image/webp');
    const meta = await sharp(r.rawPayload).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['webp', 100, 100]);
    const full = await app.inject({ method: 'GET', url: '/v1/file?path=photos/wide.png' });
    assert.equal((await sharp(full.rawPayload).metadata()).width, 640, 'without size, the file as it is');
    const bad = await get('/v1/file?path=photos/bad.jpg&size=100');
    assert.equal(bad.status, 422);
    assert.match(String(bad.body.error), /^photos\/bad\.jpg: cannot decode the image/);
    assert.equal((await get('/v1/file?path=photos/wide.png&size=5')).status, 400);
  });

  test('a folder lists its entries by kind', async () => {
    const r = await get('/v1/browse');
    assert.equal(r.status, 200);
    const kinds = Object.fromEntries((r.body.entries as { name: string; kind: string }[]).map((e) => [e.name, e.kind]));
    assert.deepEqual(kinds, {
      big: 'folder',
      'escape.png': 'image',
      linkdir: 'folder',
      'notes.txt': 'file',
      'out-a.jsonl': 'output',
      'out-b.csv': 'output',
      'out-b.csv.meta.json': 'file',
      'gone.jsonl': 'output',
      photos: 'folder',
      runs: 'folder',
    });
    const runs = await get('/v1/browse?path=runs');
    assert.deepEqual(
      (runs.body.entries as { kind: string }[]).map((e) => e.kind),
      ['run', 'run'],
    );
    assert.equal(runs.body.parent, '');
  });

  test('an output comes in pages, best first, with what made it and the images under the root', async () => {
    const first = await get('/v1/output?path=out-a.jsonl&offset=0&limit=100');
    assert.equal(first.status, 200);
    assert.equal(first.body.total, N_BIG);
    assert.equal(first.body.failed, big.filter((r) => r.error).length);
    assert.equal(first.body.higherIsBetter, true);
    assert.deepEqual(first.body.scoreRange, [0, 1]);
    assert.match(String(first.body.setup), /^clip-iqa \(tiny-vit-p32\)$/);
    const recs = first.body.records as { score: number; path: string; file: string }[];
    assert.equal(recs.length, 100);
    const best = big.filter((r) => r.a !== undefined).sort((x, y) => y.a! - x.a!);
    assert.deepEqual(
      recs.map((r) => r.score),
      best.slice(0, 100).map((r) => r.a),
    );
    assert.match(recs[0]!.path, /^big\/\d{4}\.png$/);
    const last = await get('/v1/output?path=out-a.jsonl&offset=1990&limit=100');
    assert.equal((last.body.records as unknown[]).length, 10);
    const nFailed = big.filter((r) => r.error).length;
    assert.ok(
      (last.body.records as { error?: string }[]).slice(-nFailed).every((r) => r.error !== undefined),
      'the failed records come last',
    );
    const csv = await get('/v1/output?path=out-b.csv&limit=5&sort=none');
    assert.match(String(csv.body.setup), /^liqe/);
    assert.equal((csv.body.records as { path: string }[])[0]!.path, 'big/0000.png');
    assert.equal((await get('/v1/output?path=out-a.jsonl&limit=0')).status, 400);
    assert.equal((await get('/v1/output?path=notes.txt')).status, 415);
  });

  test('odd outputs: torn lines and records without a score are noted; a json list; what is not an output says why', async () => {
    const odd = join(root, 'odd');
    mkdirSync(odd, { recursive: true });
    try {
      writeFileSync(
        join(odd, 'torn.jsonl'),
        [
          JSON.stringify({
            format: 'promptiqa-scores/1',
            method: 'no-such-method',
            scoreRange: [0, 10],
            pretrained: 'x',
            checkpoint: { path: '/a/b/ck.json' },
          }),
          JSON.stringify({ file: 'b.png', score: 2, mos: 3.5 }),
          '[1, 2]',
          JSON.stringify({ score: 1 }),
          JSON.stringify({ file: 'a.png', score: null }),
          '{"file": "c.png", "sco',
        ].join('\n'),
      );
      const torn = await get('/v1/output?path=odd/torn.jsonl&sort=file');
      assert.equal(torn.status, 200);
      assert.equal(torn.body.setup, 'no-such-method (pretrained x, checkpoint ck.json)');
      assert.equal(torn.body.higherIsBetter, true, 'a method promptiqa does not know: higher is better');
      assert.deepEqual(
        (torn.body.records as object[]).map((r) => ({ ...r, path: undefined })),
        [
          { i: 1, file: 'a.png', error: 'no score in the output (null)', path: undefined },
          { i: 0, file: 'b.png', score: 2, mos: 3.5, path: undefined },
        ],
      );
      assert.deepEqual(torn.body.problems, [
        'line 3: not a record',
        'line 6: not JSON (a torn last line)',
        'a record without a file: {"score":1}',
      ]);
      writeFileSync(join(odd, 'list.json'), JSON.stringify([{ file: 'x.png', score: 1 }, { file: 'y.png', error: 'bad' }, 7]));
      writeFileSync(join(odd, 'list.json.meta.json'), JSON.stringify({ format: 'promptiqa-scores/1', method: 'liqe', scoreRange: [1, 5] }));
      const list = await get('/v1/output?path=odd/list.json');
      assert.deepEqual([list.body.setup, list.body.scored, list.body.failed], ['liqe', 1, 1]);
      writeFileSync(join(odd, 'mos.csv'), 'file,mos,error\nx.png,3,\n');
      assert.equal((await get('/v1/output?path=odd/mos.csv')).body.failed, 1);
      const refusals: [string, string, number, RegExp][] = [
        ['garbage.jsonl', 'not json at all\n', 422, /^odd\/garbage\.jsonl: not a score output \(line 1: not JSON/],
        ['labels.csv', 'image,mos\na.png,3\n', 422, /^odd\/labels\.csv: not a score output/],
        ['quote.csv', 'file,score\n"a.png,1\n', 422, /^odd\/quote\.csv:/],
        ['bad.json', '{', 422, /^odd\/bad\.json: not JSON/],
        ['obj.json', '{}', 422, /^odd\/obj\.json: not a score output/],
      ];
      for (const [name, text, status, message] of refusals) {
        writeFileSync(join(odd, name), text);
        const r = await get(`/v1/output?path=odd/${name}`);
        assert.equal(r.status, status, name);
        assert.match(String(r.body.error), message, name);
      }
      assert.equal((await get('/v1/output?path=out-a.jsonl&sort=worst')).status, 400);
      // a FIFO is neither listed as a file nor read
      spawnSync('mkfifo', [join(odd, 'pipe.jsonl')]);
      symlinkSync(join(odd, 'nowhere'), join(odd, 'dangling.png'));
      const entries = Object.fromEntries(
        ((await get('/v1/browse?path=odd')).body.entries as { name: string; kind: string }[]).map((e) => [e.name, e.kind]),
      );
      assert.equal(entries['pipe.jsonl'], 'other');
      assert.match(entries['dangling.png']!, /^unreadable/);
      const fifo = await get('/v1/output?path=odd/pipe.jsonl');
      assert.equal(fifo.status, 422);
      assert.match(String(fifo.body.error), /^cannot read score output odd\/pipe\.jsonl: it is a FIFO/);
      assert.equal((await get('/v1/file?path=odd/dangling.png')).status, 404);
      assert.equal((await get('/v1/browse?path=notes.txt')).status, 400);
    } finally {
      rmSync(odd, { recursive: true, force: true });
    }
  });

  test('an eval run and a train run', async () => {
    const ev = await get('/v1/run?path=runs/eval1');
    assert.equal(ev.body.kind, 'eval');
    assert.deepEqual(ev.body.figures, ['runs/eval1/scatter.svg']);
    const tr = await get('/v1/run?path=runs/train1');
    assert.equal(tr.body.kind, 'train');
    assert.equal((tr.body.epochs as unknown[]).length, 4);
    assert.equal((await get('/v1/run?path=big')).status, 404);
    assert.equal((await get('/v1/run?path=runs/eval1/report.json')).body.kind, 'eval', 'a run file opens its run');
    // a train run still going: its epochs so far (the steps left out); a damaged report says so
    const going = join(root, 'runs', 'going');
    mkdirSync(going);
    try {
      writeFileSync(
        join(going, 'train.jsonl'),
        [
          { kind: 'step', step: 1 },
          { kind: 'epoch', epoch: 1, loss: 1, val: {} },
        ]
          .map((r) => JSON.stringify(r))
          .join('\n') + '\n{"torn',
      );
      const r = await get('/v1/run?path=runs/going');
      assert.deepEqual([r.body.kind, r.body.result, (r.body.epochs as unknown[]).length], ['train', null, 1]);
      writeFileSync(join(going, 'report.json'), '{"n": ');
      const bad = await get('/v1/run?path=runs/going');
      assert.equal(bad.status, 422);
      assert.match(String(bad.body.error), /^runs\/going\/report\.json: not JSON/);
    } finally {
      rmSync(going, { recursive: true, force: true });
    }
  });

  test('without a root the endpoints answer 404, saying so; the page still loads', async () => {
    const { app: bare } = await makeApp({});
    try {
      const r = await bare.inject({ method: 'GET', url: '/v1/browse' });
      assert.equal(r.statusCode, 404);
      assert.match(r.json<{ error: string }>().error, /no --root/);
      assert.equal((await bare.inject({ method: 'GET', url: '/' })).statusCode, 200);
    } finally {
      await bare.close();
    }
  });

  test('a root that is not a folder is refused at start', async () => {
    await assert.rejects(makeApp({ root: join(root, 'notes.txt') }), /--root .*notes\.txt: it is not a folder/);
    await assert.rejects(makeApp({ root: join(root, 'nothere') }), /--root .*nothere: /);
  });
});

describe('the page in a headless Chromium', () => {
  let browser: Browser | undefined;
  let app: FastifyInstance;
  let base = '';
  let files: () => number;
  let posts: () => number;
  const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set PROMPTIQA_CHROMIUM)`;
  if (skip && process.env.CI === 'true') throw new Error(`CI: ${skip}`);

  before(async () => {
    if (skip) return;
    mkdirSync(SHOTS, { recursive: true });
    ({ app, files, posts } = await makeApp({ root }));
    base = await app.listen({ host: '127.0.0.1', port: 0 });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  });
  after(async () => {
    await browser?.close();
    await app?.close();
  });

  /** What the page's Content-Security-Policy refused (nothing, when the page keeps to its own host). */
  const blocked: string[] = [];
  /** The page's uncaught script errors (none). */
  const errors: string[] = [];
  /** Closes a page, checking that it broke no rule of its policy. */
  const done = async (page: Page): Promise<void> => {
    await page.close();
    assert.deepEqual(blocked, [], 'nothing refused by the Content-Security-Policy');
    assert.deepEqual(errors, [], 'no script errors');
  };

  /**
   * Waits until a script run in the page is true (polled from here: the page's policy forbids the eval that
   * Playwright's waitForFunction would run inside it).
   */
  const until = async (page: Page, expr: string, timeoutMs = 10000): Promise<void> => {
    for (const start = Date.now(); !(await js<boolean>(page, `!!(${expr})`));) {
      if (Date.now() - start > timeoutMs) throw new Error(`still false after ${timeoutMs} ms: ${expr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  /** A script run in the page (written as text: this project's types know no DOM). */
  const js = <T>(page: Page, expr: string): Promise<T> => page.evaluate<T>(expr);

  async function open(hash: string, viewport = { width: 1200, height: 900 }): Promise<Page> {
    const page = await browser!.newPage({ viewport, acceptDownloads: true });
    page.setDefaultTimeout(10000);
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) blocked.push(m.text());
    });
    await page.goto(`${base}/${hash}`);
    await page.waitForSelector('body[data-ready]');
    assert.deepEqual(errors, [], 'no script errors');
    return page;
  }

  test('drop 20 images: sorted by score, the threshold splits them, the kept list is exported', { skip }, async () => {
    const names = [...Array.from({ length: 19 }, (_, i) => `img-${String(i + 1).padStart(2, '0')}.png`), 'broken.png'];
    const images = await Promise.all(
      names.map(async (n, i) => ({ name: n, b64: (await png(i * 12, 200 - i * 9, 80 + i * 7, 96)).toString('base64') })),
    );
    const page = await open('#/score');
    await page.waitForSelector('#setup option', { state: 'attached' });
    // a drop, as a file manager makes it: a DataTransfer of Files on the drop zone
    await page.evaluate(`{
      const dt = new DataTransfer();
      for (const { name, b64 } of ${JSON.stringify(images)})
        dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, { type: 'image/png' }));
      document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }`);
    await until(page, `document.querySelectorAll('#gallery .tile').length === 20`);
    await until(page, `[...document.querySelectorAll('#gallery img')].every((i) => i.complete && i.naturalWidth > 0)`);
    const shown = await js<string[][]>(
      page,
      `[...document.querySelectorAll('#gallery .tile')].map((e) => [e.dataset.name, e.querySelector('.score').textContent])`,
    );
    const expected = names
      .filter((n) => n !== 'broken.png')
      .sort((a, b) => fakeScore(b) - fakeScore(a) || names.indexOf(a) - names.indexOf(b));
    assert.deepEqual(
      shown.slice(0, 19),
      expected.map((n) => [n, fakeScore(n).toFixed(4)]),
    );
    assert.deepEqual(shown[19], ['broken.png', 'failed']);
    assert.equal(posts(), 2, 'sent 16 at a time');
    assert.match((await page.textContent('#gallery .tile:last-child .why')) ?? '', /cannot decode broken\.png: not an image/);
    assert.equal(await page.locator('.plots svg rect').count(), 30, 'a histogram');
    // the threshold, by keyboard and then to a chosen value
    const before = await page.inputValue('#threshold');
    await page.focus('#threshold');
    await page.keyboard.press('ArrowRight');
    assert.notEqual(await page.inputValue('#threshold'), before, 'the keyboard moves the threshold');
    const t = 0.6;
    await page.evaluate(`{
      const el = document.getElementById('threshold');
      el.value = '${t}';
      el.dispatchEvent(new Event('input', { bubbles: true }));
    }`);
    const kept = expected.filter((n) => fakeScore(n) >= t);
    assert.match((await page.textContent('.summary[aria-live]')) ?? '', new RegExp(`^kept ${kept.length} of 20, 1 failed`));
    assert.equal(await page.locator('#gallery .tile.kept').count(), kept.length);
    await page.screenshot({ path: join(SHOTS, 'score.png'), fullPage: true });
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
    const csv = readFileSync(await download.path(), 'utf8');
    assert.equal(csv, ['file,score', ...kept.map((n) => `${n},${fakeScore(n)}`)].join('\n') + '\n');
    // by keyboard: the first tile opens its image, Escape closes it
    await page.focus('#gallery .tile button.thumb');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#viewer[open]');
    assert.equal(await page.textContent('#viewer-title'), expected[0]);
    await page.keyboard.press('Escape');
    assert.equal(await js<boolean>(page, `document.getElementById('viewer').open`), false);
    await done(page);
  });

  test('an output of 2,000 images: all listed, thumbnails loaded as they scroll into view', { skip }, async () => {
    const page = await open('#/output?path=out-a.jsonl');
    await until(page, `document.querySelectorAll('#gallery .tile').length === ${N_BIG}`);
    await until(page, `document.querySelector('#gallery .tile img')?.naturalWidth > 0`);
    const loaded = (): Promise<number> => page.locator('#gallery img[src]').count();
    const atTop = await loaded();
    assert.ok(atTop > 0 && atTop < 200, `only the images in view (and near it) load at first: ${atTop}`);
    assert.ok(files() < 200, `and only they are fetched: ${files()}`);
    await page.screenshot({ path: join(SHOTS, 'output-top.png') });
    // scroll to the end a screen at a time
    const fetchedBefore = files();
    await page.evaluate(`window.scrollTo(0, document.body.scrollHeight)`);
    await until(page, `document.querySelector('#gallery .tile:nth-last-child(20) img')?.naturalWidth > 0`);
    assert.ok(files() > fetchedBefore, 'scrolling fetched more images');
    assert.ok((await loaded()) < N_BIG / 2, 'the images between were never loaded');
    const failedTiles = await page.locator('#gallery .tile .why').allTextContents();
    assert.equal(failedTiles.length, big.filter((r) => r.error).length);
    assert.ok(failedTiles.every((t) => t === 'failed: cannot decode: truncated PNG'));
    await page.screenshot({ path: join(SHOTS, 'output-end.png') });
    await done(page);
    // readable on a narrow window
    const narrow = await open('#/output?path=out-a.jsonl', { width: 380, height: 800 });
    await until(narrow, `document.querySelector('#gallery .tile img')?.naturalWidth > 0`);
    const wide = await js<string[]>(
      narrow,
      `[...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > innerWidth + 1).map((e) => e.tagName + '.' + e.className).slice(0, 5)`,
    );
    assert.deepEqual(wide, [], 'no sideways scrolling');
    await narrow.screenshot({ path: join(SHOTS, 'output-narrow.png') });
    await done(narrow);
  });

  test('an image that cannot be shown says why', { skip }, async () => {
    const page = await open('#/output?path=gone.jsonl');
    await until(page, `document.querySelectorAll('#gallery .tile .why').length === 3`);
    const why = await js<string[][]>(
      page,
      `[...document.querySelectorAll('#gallery .tile')].map((e) => [e.dataset.name, e.querySelector('.why')?.textContent ?? 'shown'])`,
    );
    assert.equal(why[0]![1], 'shown');
    assert.match(why[1]!.join(' '), /^big\/gone\.png big\/gone\.png: .*(no such|not exist)/i);
    assert.match(why[2]!.join(' '), /^notes\.txt notes\.txt: not an image/);
    assert.match(why[3]![1]!, /outside --root: not shown/);
    await page.screenshot({ path: join(SHOTS, 'output-errors.png') });
    await done(page);
  });

  test('a server that asks for a token: the page asks for it, then shows the output and its images', { skip }, async () => {
    const guarded = await makeApp({ root, token: 's3cret' });
    const url = await guarded.app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const page = await browser!.newPage();
      page.setDefaultTimeout(10000);
      await page.goto(`${url}/#/output?path=gone.jsonl`);
      await page.waitForSelector('#token');
      assert.match((await page.textContent('main .error')) ?? '', /a token is required/);
      await page.fill('#token', 's3cret');
      await page.keyboard.press('Enter');
      await until(page, `document.querySelectorAll('#gallery .tile .why').length === 3`);
      await until(page, `document.querySelector('#gallery .tile img')?.naturalWidth > 0`);
      assert.match((await page.getAttribute('#gallery .tile img', 'src')) ?? '', /^blob:/, 'fetched with the token');
      assert.match((await page.locator('#gallery .tile .why').first().textContent()) ?? '', /no such file/);
      await page.screenshot({ path: join(SHOTS, 'token.png') });
      await done(page);
    } finally {
      await guarded.app.close();
    }
  });

  test('two outputs of different set-ups: a scatter with their SRCC; a point opens its image', { skip }, async () => {
    const page = await open('#/browse');
    await page.check('input[aria-label="choose out-a.jsonl to compare"]');
    await page.check('input[aria-label="choose out-b.csv to compare"]');
    await page.screenshot({ path: join(SHOTS, 'browse.png') });
    await page.click('#compare');
    await page.waitForSelector('#srcc');
    const both = big.filter((r) => r.error === undefined);
    const want = srcc(
      both.map((r) => r.a!),
      both.map((r) => r.b!),
    );
    assert.equal(await page.textContent('#srcc'), `SRCC ${want.toFixed(4)} over ${both.length} images`);
    assert.equal(await page.locator('svg.scatter circle').count(), both.length);
    await page.locator('svg.scatter circle').nth(5).dispatchEvent('click');
    await until(page, `document.querySelector('#viewer[open] #viewer-body img')?.naturalWidth > 0`);
    assert.equal(await page.textContent('#viewer-title'), `big/${both[5]!.file.split('/').pop()}`, 'named by its path under the root');
    await page.screenshot({ path: join(SHOTS, 'compare.png'), fullPage: true });
    await page.keyboard.press('Escape');
    assert.equal(await js<boolean>(page, `document.getElementById('viewer').open`), false);
    await done(page);
  });

  test('an eval run and a train run: figures, scatter and training curves', { skip }, async () => {
    const page = await open('#/run?path=runs/eval1');
    const srccCell = await page.textContent('tr:has(th:text-is("srcc")) td');
    const report = JSON.parse(readFileSync(join(root, 'runs', 'eval1', 'report.json'), 'utf8')) as { metrics: { srcc: number } };
    assert.equal(srccCell, report.metrics.srcc.toFixed(4));
    assert.equal(await page.locator('svg.scatter circle').count(), 60);
    await until(page, `document.querySelector('img.figure')?.naturalWidth > 0`);
    assert.match((await page.textContent('details summary')) ?? '', /^1 image failed$/);
    await page.screenshot({ path: join(SHOTS, 'eval.png'), fullPage: true });
    await page.goto(`${base}/#/run?path=runs/train1`);
    await page.waitForSelector('caption:text-is("chosen epoch 4 (on val)")');
    assert.equal(await page.textContent('caption >> nth=1'), 'test');
    assert.equal(await page.locator('.plots svg polyline').count(), 2, 'loss and SRCC curves');
    await until(page, `document.querySelector('img.figure')?.naturalWidth > 0`);
    await page.screenshot({ path: join(SHOTS, 'train.png'), fullPage: true });
    // a run that cannot be opened says why
    await page.goto(`${base}/#/run?path=linkdir`);
    await page.waitForSelector('.error:has-text("outside --root")');
    await done(page);
  });
});
