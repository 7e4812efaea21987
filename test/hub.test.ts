import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { sharedDir } from './helpers/shared.js';
import { type FakeHub, type FakeHubOptions, etagOf as etagFor, startHub as startFakeHub } from './helpers/fake-hub.js';
import {
  CLIP_MODEL_FILES,
  HubError,
  downloadFile,
  downloadRepo,
  repoCacheDir,
  resolveHubOptions,
  resolveModel,
  type HubOptions,
} from '../src/clip/hub.js';
import { loadClipWeights } from '../src/clip/weights.js';
import { cli } from './helpers/cli.js';

const SRC = join(sharedDir(), 'reference', 'tiny-vit-p16');
const REPO = 'tiny/clip-p16';
const COMMIT = 'c0ffee'.padEnd(40, '0');
const FILES = [
  'config.json',
  'model.safetensors',
  'vocab.json',
  'merges.txt',
  'tokenizer_config.json',
  'preprocessor_config.json',
  'special_tokens_map.json',
];

const content = new Map(FILES.map((f) => [f, readFileSync(join(SRC, f))]));
// the same weights under open_clip's name, for the alternatives test
content.set('open_clip_model.safetensors', content.get('model.safetensors')!);
const etagOf = (file: string) => etagFor(file, content.get(file)!);
const MODEL_SHA = etagOf('model.safetensors');

/** the hub with the tiny repo, holding `files` (default FILES) */
function startHub(opts: FakeHubOptions & { files?: string[] } = {}): Promise<FakeHub> {
  const files = new Map((opts.files ?? FILES).map((f) => [f, content.get(f)!]));
  return startFakeHub({ [REPO]: { commit: COMMIT, files } }, opts);
}

const caches: string[] = [];
after(() => {
  for (const dir of caches) rmSync(dir, { recursive: true, force: true });
});

function tempCache(): string {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-hub-'));
  caches.push(dir);
  return dir;
}

/** options that ignore the developer's HF_* environment */
function options(hub: FakeHub | { endpoint: string }, cacheDir: string, extra: HubOptions = {}): HubOptions {
  return { endpoint: hub.endpoint, cacheDir, token: '', offline: false, progress: false, retryDelayMs: 5, ...extra };
}

const repoDir = (cache: string) => repoCacheDir(cache, REPO);
const snapshotOf = (cache: string) => join(repoDir(cache), 'snapshots', COMMIT);
const gets = (hub: FakeHub, server: 'hub' | 'cdn') => hub.requests.filter((r) => r.server === server && r.method === 'GET');

function assertSnapshotCorrect(snapshot: string, files = FILES): void {
  for (const file of files) {
    const pointer = join(snapshot, file);
    assert.ok(lstatSync(pointer).isSymbolicLink(), `${file} is a symlink`);
    assert.equal(readlinkSync(pointer), join('..', '..', 'blobs', etagOf(file)));
    assert.ok(readFileSync(pointer).equals(content.get(file)!), `${file} has the source's bytes`);
  }
}

function assertNoLeftovers(cache: string): void {
  const blobs = readdirSync(join(repoDir(cache), 'blobs'));
  assert.deepEqual(
    blobs.filter((b) => b.endsWith('.incomplete')),
    [],
  );
  const locks = join(cache, '.locks', 'models--tiny--clip-p16');
  if (existsSync(locks)) assert.deepEqual(readdirSync(locks), []);
}

test('CLIP_MODEL_FILES: required config, weights and BPE files; optional settings', () => {
  assert.deepEqual(
    CLIP_MODEL_FILES.filter((f) => !f.endsWith('?')),
    ['config.json', 'model.safetensors|open_clip_model.safetensors', 'vocab.json', 'merges.txt'],
  );
  assert.ok(CLIP_MODEL_FILES.includes('preprocessor_config.json?'));
});

test('downloads a repo into the huggingface_hub cache layout', async () => {
  const hub = await startHub();
  const cache = tempCache();
  try {
    const snapshot = await resolveModel(REPO, options(hub, cache));
    assert.equal(snapshot, snapshotOf(cache));
    assertSnapshotCorrect(snapshot);
    assert.equal(readFileSync(join(repoDir(cache), 'refs', 'main'), 'utf8'), COMMIT);
    assert.deepEqual(readdirSync(join(repoDir(cache), 'blobs')).sort(), FILES.map(etagOf).sort());
    assertNoLeftovers(cache);
    // one GET per file at the hub; the weights' is redirected to the CDN and fetched there once
    assert.equal(gets(hub, 'hub').length, FILES.length);
    assert.deepEqual(
      gets(hub, 'cdn').map((r) => r.path),
      [`/${MODEL_SHA}`],
    );
    // later files are asked for at the commit the first one pinned
    assert.ok(hub.requests.slice(1).every((r) => r.server === 'cdn' || r.path.includes(`/resolve/${COMMIT}/`)));
    assert.ok(
      hub.requests.every((r) => r.headers.authorization === undefined),
      'no token, no header',
    );

    // a second run is answered by the cache alone
    hub.requests.length = 0;
    assert.equal(await resolveModel(REPO, options(hub, cache)), snapshot);
    assert.equal(await downloadFile(REPO, 'vocab.json', options(hub, cache)), join(snapshot, 'vocab.json'));
    assert.equal(await downloadRepo(REPO, ['config.json'], options(hub, cache)), snapshot);
    assert.equal(hub.requests.length, 0, 'no request');

    // refresh asks again (HEAD only) and downloads nothing
    assert.equal(await resolveModel(REPO, options(hub, cache, { refresh: true })), snapshot);
    assert.ok(hub.requests.length > 0);
    assert.ok(hub.requests.every((r) => r.method === 'HEAD'));
  } finally {
    await hub.close();
  }
});

test('offline: uses the cache without the network, fails clearly without it', async () => {
  const hub = await startHub();
  const cache = tempCache();
  let snapshot: string;
  try {
    snapshot = await resolveModel(REPO, options(hub, cache));
  } finally {
    await hub.close();
  }
  // the server is gone: only the cache can answer
  const closed = { endpoint: hub.endpoint };
  assert.equal(await resolveModel(REPO, options(closed, cache, { offline: true })), snapshot);
  assert.equal(await downloadFile(REPO, 'merges.txt', options(closed, cache, { offline: true })), join(snapshot, 'merges.txt'));

  const empty = tempCache();
  await assert.rejects(resolveModel(REPO, options(closed, empty, { offline: true })), (err: HubError) => {
    assert.equal(err.code, 'Offline');
    assert.match(err.message, /offline/);
    assert.match(err.message, /tiny\/clip-p16/);
    assert.match(err.message, /config\.json/);
    return true;
  });
  await assert.rejects(downloadFile(REPO, 'vocab.json', options(closed, empty, { offline: true })), /offline.*vocab\.json/s);

  // offline, a missing optional file is skipped
  const partial = tempCache();
  const hub2 = await startHub({ files: FILES.filter((f) => f !== 'tokenizer_config.json') });
  try {
    await resolveModel(REPO, options(hub2, partial));
  } finally {
    await hub2.close();
  }
  rmSync(join(repoDir(partial), '.no_exist'), { recursive: true });
  assert.equal(await resolveModel(REPO, options(closed, partial, { offline: true })), snapshotOf(partial));
});

test('a connection cut midway is resumed with a Range request', async () => {
  const hub = await startHub({ cutAfter: { file: 'model.safetensors', bytes: 5_000_000 } });
  const cache = tempCache();
  try {
    const snapshot = await resolveModel(REPO, options(hub, cache));
    assertSnapshotCorrect(snapshot);
    assertNoLeftovers(cache);
    const cdnGets = gets(hub, 'cdn');
    assert.equal(cdnGets.length, 2);
    assert.equal(cdnGets[0]!.headers.range, undefined);
    const range = /^bytes=(\d+)-$/.exec(String(cdnGets[1]!.headers.range));
    assert.ok(range, `second request has a Range header: ${cdnGets[1]!.headers.range}`);
    const from = Number(range[1]);
    assert.ok(from > 0 && from <= 5_000_000, `resumed from ${from}`);
  } finally {
    await hub.close();
  }
});

test('a partial download left by an earlier process is resumed', async () => {
  const hub = await startHub();
  const cache = tempCache();
  try {
    const blobs = join(repoDir(cache), 'blobs');
    mkdirSync(blobs, { recursive: true });
    writeFileSync(join(blobs, `${MODEL_SHA}.incomplete`), content.get('model.safetensors')!.subarray(0, 1_000_000));
    const path = await downloadFile(REPO, 'model.safetensors', options(hub, cache));
    assert.ok(readFileSync(path).equals(content.get('model.safetensors')!));
    assert.deepEqual(
      gets(hub, 'cdn').map((r) => r.headers.range),
      ['bytes=1000000-'],
    );
    assertNoLeftovers(cache);
  } finally {
    await hub.close();
  }
});

test('a server that ignores Range (200) makes the download start over', async () => {
  const hub = await startHub({ ignoreRange: true });
  const cache = tempCache();
  try {
    const blobs = join(repoDir(cache), 'blobs');
    mkdirSync(blobs, { recursive: true });
    writeFileSync(join(blobs, `${MODEL_SHA}.incomplete`), Buffer.alloc(777, 1));
    const path = await downloadFile(REPO, 'model.safetensors', options(hub, cache));
    assert.ok(readFileSync(path).equals(content.get('model.safetensors')!));
    assert.equal(gets(hub, 'cdn')[0]?.headers.range, 'bytes=777-');
  } finally {
    await hub.close();
  }
});

test('corrupt bytes: sha256 mismatch names the file and leaves nothing in blobs', async () => {
  const hub = await startHub({ corrupt: 'model.safetensors' });
  const cache = tempCache();
  try {
    await assert.rejects(resolveModel(REPO, options(hub, cache)), (err: HubError) => {
      assert.equal(err.code, 'HashMismatch');
      assert.equal(err.filename, 'model.safetensors');
      assert.match(err.message, /tiny\/clip-p16\/model\.safetensors/);
      assert.match(err.message, /sha256/);
      return true;
    });
    const blobs = readdirSync(join(repoDir(cache), 'blobs'));
    assert.deepEqual(
      blobs.filter((b) => b.startsWith(MODEL_SHA)),
      [],
    );
    assertNoLeftovers(cache);
    assert.ok(!existsSync(join(snapshotOf(cache), 'model.safetensors')));
  } finally {
    await hub.close();
  }
});

test('a missing required file is an error naming repo and file', async () => {
  const hub = await startHub({ files: FILES.filter((f) => f !== 'vocab.json') });
  const cache = tempCache();
  try {
    await assert.rejects(resolveModel(REPO, options(hub, cache)), (err: HubError) => {
      assert.equal(err.code, 'EntryNotFound');
      assert.match(err.message, /vocab\.json/);
      assert.match(err.message, /tiny\/clip-p16/);
      return true;
    });
    await assert.rejects(downloadFile(REPO, 'vocab.json', options(hub, cache)), /'vocab\.json' not found in tiny\/clip-p16/);
    await assert.rejects(downloadFile('nobody/nothing', 'config.json', options(hub, cache)), (err: HubError) => {
      assert.equal(err.code, 'RepoNotFound');
      assert.match(err.message, /nobody\/nothing/);
      return true;
    });
    await assert.rejects(downloadFile(REPO, 'config.json', options(hub, cache, { revision: 'v9' })), /revision 'v9' not found/);
  } finally {
    await hub.close();
  }
});

test('missing optional files are skipped and remembered; alternatives are tried in order', async () => {
  const files = FILES.filter((f) => f !== 'special_tokens_map.json' && f !== 'model.safetensors').concat('open_clip_model.safetensors');
  const hub = await startHub({ files });
  const cache = tempCache();
  try {
    const snapshot = await resolveModel(REPO, options(hub, cache));
    assert.ok(!existsSync(join(snapshot, 'special_tokens_map.json')));
    assert.ok(!existsSync(join(snapshot, 'model.safetensors')));
    assert.ok(readFileSync(join(snapshot, 'open_clip_model.safetensors')).equals(content.get('model.safetensors')!));
    assert.ok(existsSync(join(repoDir(cache), '.no_exist', COMMIT, 'special_tokens_map.json')));
    hub.requests.length = 0;
    assert.equal(await resolveModel(REPO, options(hub, cache)), snapshot);
    assert.equal(hub.requests.length, 0, 'known absences need no request');
  } finally {
    await hub.close();
  }
});

test('two concurrent downloads in one process share the work', async () => {
  const hub = await startHub();
  const cache = tempCache();
  try {
    const [a, b] = await Promise.all([resolveModel(REPO, options(hub, cache)), resolveModel(REPO, options(hub, cache))]);
    assert.equal(a, b);
    assertSnapshotCorrect(a);
    assertNoLeftovers(cache);
    assert.equal(gets(hub, 'cdn').length, 1, 'the weights were fetched once');
    assert.equal(gets(hub, 'hub').length, FILES.length, 'each file was asked for once');
  } finally {
    await hub.close();
  }
});

test('two processes downloading the same repo leave a correct cache', async () => {
  const hub = await startHub();
  const cache = tempCache();
  const hubModule = pathToFileURL(resolve('src/clip/hub.ts')).href;
  const script = `const { resolveModel } = await import(${JSON.stringify(hubModule)});
    const { repo, opts } = JSON.parse(process.env.HUB_TEST_ARGS);
    process.stdout.write(await resolveModel(repo, opts));`;
  const run = () =>
    new Promise<string>((ok, fail) => {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
        env: { ...process.env, HUB_TEST_ARGS: JSON.stringify({ repo: REPO, opts: options(hub, cache) }) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      child.on('error', fail);
      child.on('close', (code) => (code === 0 ? ok(out) : fail(new Error(`child exited with ${code}: ${err}`))));
    });
  try {
    const [a, b] = await Promise.all([run(), run()]);
    assert.equal(a, snapshotOf(cache));
    assert.equal(b, a);
    assertSnapshotCorrect(a);
    assertNoLeftovers(cache);
    assert.equal(gets(hub, 'cdn').length, 1, 'the weights were fetched once');
  } finally {
    await hub.close();
  }
});

test('a lock held by a live process is waited for; a dead one is taken over', async () => {
  const hub = await startHub();
  try {
    const lockOf = (cache: string) => join(cache, '.locks', 'models--tiny--clip-p16', `${MODEL_SHA}.lock`);

    // held by another live process of this host (init): the download waits until it is released
    const cache = tempCache();
    mkdirSync(join(cache, '.locks', 'models--tiny--clip-p16'), { recursive: true });
    writeFileSync(lockOf(cache), JSON.stringify({ pid: 1, host: hostname() }));
    const t0 = Date.now();
    setTimeout(() => rmSync(lockOf(cache)), 300);
    const path = await downloadFile(REPO, 'model.safetensors', options(hub, cache));
    assert.ok(Date.now() - t0 >= 300, 'waited for the lock');
    assert.ok(readFileSync(path).equals(content.get('model.safetensors')!));

    // left by a process that died, and one untouched for an hour on another host: both are stale
    for (const lock of [
      { pid: 2 ** 30, host: hostname() },
      { pid: 1, host: 'elsewhere' },
    ]) {
      const stale = tempCache();
      mkdirSync(join(stale, '.locks', 'models--tiny--clip-p16'), { recursive: true });
      writeFileSync(lockOf(stale), JSON.stringify(lock));
      const hourAgo = new Date(Date.now() - 3600_000);
      if (lock.host === 'elsewhere') utimesSync(lockOf(stale), hourAgo, hourAgo);
      const p = await downloadFile(REPO, 'model.safetensors', options(hub, stale));
      assert.ok(readFileSync(p).equals(content.get('model.safetensors')!));
      assert.ok(!existsSync(lockOf(stale)));
    }
  } finally {
    await hub.close();
  }
});

test('a local folder is returned as is', async () => {
  const hub = await startHub();
  try {
    assert.equal(await resolveModel(SRC, options(hub, tempCache())), SRC);
    assert.equal(hub.requests.length, 0, 'no request');
    await assert.rejects(resolveModel('./no/such/folder', options(hub, tempCache())), /no model folder/);
    await assert.rejects(resolveModel(join(SRC, 'config.json'), options(hub, tempCache())), /is a file/);
    await assert.rejects(downloadFile('../evil', 'x', options(hub, tempCache())), /invalid repo id/);
    await assert.rejects(downloadFile(REPO, '../../x', options(hub, tempCache())), /invalid file name/);
  } finally {
    await hub.close();
  }
});

test('the token goes to the hub as a Bearer header, never to the CDN', async () => {
  const hub = await startHub({ token: 'hf_secret' });
  try {
    await assert.rejects(resolveModel(REPO, options(hub, tempCache())), (err: HubError) => {
      assert.equal(err.code, 'Unauthorized');
      assert.equal(err.status, 401);
      assert.match(err.message, /tiny\/clip-p16\/config\.json/);
      assert.match(err.message, /HF_TOKEN/);
      return true;
    });
    hub.requests.length = 0;
    const snapshot = await resolveModel(REPO, options(hub, tempCache(), { token: 'hf_secret' }));
    assertSnapshotCorrect(snapshot);
    const fromHub = hub.requests.filter((r) => r.server === 'hub');
    assert.ok(fromHub.length > 0 && fromHub.every((r) => r.headers.authorization === 'Bearer hf_secret'));
    assert.ok(hub.requests.filter((r) => r.server === 'cdn').every((r) => r.headers.authorization === undefined));
  } finally {
    await hub.close();
  }
});

/** fetch, counting its calls */
function countingFetch(impl: typeof fetch = fetch): { fetchImpl: typeof fetch; calls: () => number } {
  let n = 0;
  return {
    fetchImpl: (input, init) => {
      n++;
      return impl(input, init);
    },
    calls: () => n,
  };
}

/** a fetch failing as Node's does when the socket fails with `code` */
const failingFetch =
  (code: string): typeof fetch =>
  () =>
    Promise.reject(new TypeError('fetch failed', { cause: Object.assign(new Error(`getaddrinfo ${code} huggingface.co`), { code }) }));

/** the endpoint of a port nothing listens on */
async function closedEndpoint(): Promise<string> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((ok) => server.close(() => ok()));
  return `http://127.0.0.1:${port}`;
}

test('server errors and cut connections are retried, then reported', async () => {
  const hub = await startHub({ failFirst: 3 });
  try {
    assertSnapshotCorrect(await resolveModel(REPO, options(hub, tempCache())));
  } finally {
    await hub.close();
  }
  const cut = countingFetch(failingFetch('ECONNRESET'));
  await assert.rejects(
    resolveModel(REPO, options(hub, tempCache(), { retries: 2, retryDelayMs: 1, fetchImpl: cut.fetchImpl })),
    (err: HubError) => {
      assert.equal(err.code, 'Network');
      assert.match(err.message, /after 3 attempts: .*ECONNRESET/);
      return true;
    },
  );
  assert.equal(cut.calls(), 3);
});

test('a refused connection and a name that does not resolve fail at once, without suggesting HF_HUB_OFFLINE to an empty cache', async () => {
  const endpoint = await closedEndpoint();
  const refused = countingFetch();
  await assert.rejects(
    resolveModel(REPO, options({ endpoint }, tempCache(), { retryDelayMs: 1, fetchImpl: refused.fetchImpl })),
    (err: HubError) => {
      assert.equal(err.code, 'Network');
      assert.match(err.message, new RegExp(`${endpoint}: .*refused the connection \\(ECONNREFUSED`));
      assert.doesNotMatch(err.message, /attempts|HF_HUB_OFFLINE/);
      assert.match(err.message, /the cache at .* has no copy of tiny\/clip-p16/);
      return true;
    },
  );
  assert.equal(refused.calls(), 1, 'one attempt, not six');

  for (const code of ['ENOTFOUND', 'EAI_AGAIN']) {
    const dns = countingFetch(failingFetch(code));
    await assert.rejects(
      downloadFile(REPO, 'vocab.json', options({ endpoint }, tempCache(), { fetchImpl: dns.fetchImpl })),
      (err: HubError) => {
        assert.equal(err.code, 'Network');
        assert.match(err.message, new RegExp(`does not resolve \\(${code}: no network`));
        assert.doesNotMatch(err.message, /HF_HUB_OFFLINE/);
        return true;
      },
    );
    assert.equal(dns.calls(), 1, code);
  }

  // where the cache has the files but one optional file is unknown, offline mode would do: say so
  const hub = await startHub({ files: FILES.filter((f) => f !== 'special_tokens_map.json') });
  const cache = tempCache();
  try {
    await downloadRepo(REPO, CLIP_MODEL_FILES, options(hub, cache));
  } finally {
    await hub.close();
  }
  rmSync(join(repoDir(cache), '.no_exist'), { recursive: true, force: true });
  await assert.rejects(downloadRepo(REPO, CLIP_MODEL_FILES, options({ endpoint }, cache)), (err: HubError) => {
    assert.equal(err.code, 'Network');
    assert.match(err.message, /has a copy: set HF_HUB_OFFLINE=1 to use it/);
    return true;
  });
  assert.equal(await downloadRepo(REPO, CLIP_MODEL_FILES, options({ endpoint }, cache, { offline: true })), snapshotOf(cache));
});

test('the command line names the way out without the hub: --model for a repo id, the released file for a pretrained metric', async () => {
  const keys = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE', 'HF_TOKEN'] as const;
  const saved = keys.map((k) => process.env[k]);
  const image = join(sharedDir(), 'reference', 'images', 'AttnGAN_normal_000.jpg');
  try {
    Object.assign(process.env, { HF_ENDPOINT: await closedEndpoint(), HF_HUB_CACHE: tempCache(), HF_TOKEN: '' });
    for (const offline of [false, true]) {
      if (offline) process.env.HF_HUB_OFFLINE = '1';
      else delete process.env.HF_HUB_OFFLINE;
      const liqe = await cli('score', image, '--method', 'liqe');
      assert.equal(liqe.code, 1);
      assert.equal(liqe.err.trim().split('\n').length, 1, liqe.err);
      assert.match(liqe.err, offline ? /offline mode/ : /ECONNREFUSED/);
      assert.match(
        liqe.err,
        /Without the hub: fetch liqe_koniq\.pt from chaofengc\/IQA-PyTorch-Weights .*--method liqe --checkpoint liqe_koniq\.pt/,
      );
      assert.doesNotMatch(liqe.err, /set HF_HUB_OFFLINE|attempts/);

      const plus = await cli('score', image, '--method', 'clip-iqa+');
      assert.match(plus.err, /--checkpoint CLIP-IQA\+_learned_prompts-603f3273\.pth --model <RN50 folder or file>/);

      const model = await cli('score', image, '--method', 'clip-iqa', '--model', 'openai/clip-vit-base-patch32');
      assert.equal(model.code, 1);
      assert.match(model.err, /instead of openai\/clip-vit-base-patch32 \(--model <folder or file>\)/);
      assert.doesNotMatch(model.err, /set HF_HUB_OFFLINE/);
    }
  } finally {
    keys.forEach((k, i) => {
      if (saved[i] === undefined) delete process.env[k];
      else process.env[k] = saved[i];
    });
  }
});

test('defaults come from the HF_* environment', () => {
  const home = tempCache();
  writeFileSync(join(home, 'token'), 'hf_from_file\n');
  const fromHome = resolveHubOptions({}, { HF_HOME: home });
  assert.equal(fromHome.endpoint, 'https://huggingface.co');
  assert.equal(fromHome.cacheDir, join(home, 'hub'));
  assert.equal(fromHome.token, 'hf_from_file');
  assert.equal(fromHome.offline, false);
  assert.equal(fromHome.revision, 'main');

  const env = { HF_HOME: home, HF_HUB_CACHE: '/x/cache', HF_ENDPOINT: 'http://127.0.0.1:9/', HF_TOKEN: 'hf_env', HF_HUB_OFFLINE: '1' };
  const fromEnv = resolveHubOptions({}, env);
  assert.equal(fromEnv.endpoint, 'http://127.0.0.1:9');
  assert.equal(fromEnv.cacheDir, '/x/cache');
  assert.equal(fromEnv.token, 'hf_env');
  assert.equal(fromEnv.offline, true);

  // explicit options win; an empty token sends none
  const explicit = resolveHubOptions({ cacheDir: '/y', token: '', offline: false, revision: 'v1' }, env);
  assert.deepEqual([explicit.cacheDir, explicit.token, explicit.offline, explicit.revision], ['/y', undefined, false, 'v1']);
});

test("a repo with only open_clip's files resolves to its weights file, from the cache the second time; one with neither layout is refused", async () => {
  const RN = join(sharedDir(), 'reference', 'tiny-rn');
  const commit = 'f00d'.padEnd(40, '0');
  const hub = await startFakeHub({
    // no config.json, the PyTorch pickle only (as some open_clip repos are)
    'tiny/open-clip-rn': { commit, files: new Map([['open_clip_pytorch_model.bin', readFileSync(join(RN, 'openai-state-dict.pt'))]]) },
    // another library's config.json and nothing of CLIP
    'tiny/not-clip': { commit, files: new Map([['config.json', Buffer.from('{"architecture": "resnet50"}')]]) },
  });
  const cache = tempCache();
  try {
    const weights = await resolveModel('tiny/open-clip-rn', options(hub, cache));
    assert.equal(weights, join(repoCacheDir(cache, 'tiny/open-clip-rn'), 'snapshots', commit, 'open_clip_pytorch_model.bin'));
    const clip = await loadClipWeights(weights);
    assert.ok(clip.config.resnet, 'the ResNet CLIP is read from the state dict');
    const before = hub.requests.length;
    assert.equal(await resolveModel('tiny/open-clip-rn', options(hub, cache)), weights);
    assert.equal(hub.requests.length, before, 'a second call makes no request');
    assert.equal(await resolveModel('tiny/open-clip-rn', options({ endpoint: 'http://127.0.0.1:9' }, cache, { offline: true })), weights);

    await assert.rejects(resolveModel('tiny/not-clip', options(hub, cache)), (err: HubError) => {
      assert.equal(err.code, 'EntryNotFound');
      assert.match(err.message, /tiny\/not-clip has no CLIP that promptiqa reads: its config\.json is not a transformers CLIP config/);
      assert.match(err.message, /open_clip_model\.safetensors, open_clip_pytorch_model\.bin/);
      return true;
    });
    await assert.rejects(resolveModel('tiny/nothing-cached', options(hub, tempCache(), { offline: true })), (err: HubError) => {
      assert.equal(err.code, 'Offline');
      assert.match(err.message, /missing: config\.json.*open_clip's layout, open_clip_model\.safetensors\|open_clip_pytorch_model\.bin/);
      return true;
    });
  } finally {
    await hub.close();
  }
});
