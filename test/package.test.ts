/**
 * The package as another project gets it: `npm pack`, then `npm install` of the tarball into a fresh folder
 * with no network, then `import … from 'promptiqa'` and a score, and the `promptiqa` command.
 *
 * No network: npm runs with `--offline` (its cache only: `npm ci` of this checkout filled it) and every proxy,
 * onnxruntime-node's own (global-agent) included, points at a closed port. The versions are this checkout's
 * package-lock.json, so the install makes no registry look-up. The build and the pack happen in a copy of the
 * checkout, never in it.
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMetric } from '../src/index.js';
import { sharedDir } from './helpers/shared.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = join(sharedDir(), 'reference', 'tiny-vit-p32');
const IMAGE = join(sharedDir(), 'reference', 'images', 'AttnGAN_normal_000.jpg');

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'promptiqa-package-'));
  dirs.push(d);
  return d;
};

/** Where nothing listens: the proxies of a machine without a network. */
const NO_NETWORK = 'http://127.0.0.1:9';

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): { code: number; out: string; err: string } {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    env: {
      ...process.env,
      // coverage (c8) is of this checkout's sources: npm, tsc and the installed copy write none
      NODE_V8_COVERAGE: undefined,
      // npm's own settings from an enclosing `npm test` must not leak into the child npm
      npm_config_local_prefix: undefined,
      npm_package_json: undefined,
      npm_config_offline: 'true',
      npm_config_audit: 'false',
      npm_config_fund: 'false',
      npm_config_update_notifier: 'false',
      npm_config_proxy: NO_NETWORK,
      npm_config_https_proxy: NO_NETWORK,
      HTTP_PROXY: NO_NETWORK,
      HTTPS_PROXY: NO_NETWORK,
      GLOBAL_AGENT_HTTP_PROXY: NO_NETWORK,
      GLOBAL_AGENT_HTTPS_PROXY: NO_NETWORK,
      ...env,
    },
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr + (r.error ? String(r.error) : '') };
}

/** npm pack of a copy of the checkout, built there: the tarball's path. */
function pack(): string {
  const copy = tempDir();
  for (const p of [
    'package.json',
    'package-lock.json',
    'tsconfig.json',
    'tsconfig.build.json',
    'README.md',
    'src',
    'assets',
    'bin',
    'scripts',
  ]) {
    cpSync(join(ROOT, p), join(copy, p), { recursive: true });
  }
  symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'), 'dir');
  const build = run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], copy);
  assert.equal(build.code, 0, build.out + build.err);
  const out = tempDir();
  // the build is done: --ignore-scripts keeps `prepare` from building again
  const packed = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', out], copy);
  assert.equal(packed.code, 0, packed.err);
  const [{ filename }] = JSON.parse(packed.out) as [{ filename: string }];
  return join(out, filename);
}

/**
 * A fresh project depending on the tarball, with a lockfile of this checkout's versions for the rest (so
 * `--offline` needs no registry metadata), and `extra` in its package.json.
 */
function freshProject(tarball: string, extra: Record<string, unknown> = {}): string {
  const dir = tempDir();
  const name = 'promptiqa.tgz';
  cpSync(tarball, join(dir, name));
  const ours = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean } & Record<string, unknown>>;
  };
  const self = ours.packages['']!;
  const spec = `file:${name}`;
  const packages: Record<string, unknown> = {
    '': { name: 'fresh', version: '1.0.0', dependencies: { promptiqa: spec } },
    'node_modules/promptiqa': {
      version: self.version,
      resolved: spec,
      integrity: `sha512-${createHash('sha512')
        .update(readFileSync(join(dir, name)))
        .digest('base64')}`,
      license: self.license,
      dependencies: self.dependencies,
      bin: self.bin,
      engines: self.engines,
    },
  };
  for (const [path, entry] of Object.entries(ours.packages)) if (path !== '' && !entry.dev) packages[path] = entry;
  writeFileSync(
    join(dir, 'package-lock.json'),
    JSON.stringify({ name: 'fresh', version: '1.0.0', lockfileVersion: 3, requires: true, packages }),
  );
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'fresh', version: '1.0.0', private: true, type: 'module', dependencies: { promptiqa: spec }, ...extra }),
  );
  return dir;
}

/** `npm install` of the project, offline; outside CI, skips the test where npm's cache lacks a package (no `npm ci` here). */
function install(t: TestContext, dir: string, env: NodeJS.ProcessEnv = {}): boolean {
  const r = run('npm', ['install', '--no-save'], dir, env);
  // under CI, `npm ci` has just filled the cache: there it is a failure, not a skip
  if (r.code !== 0 && /ENOTCACHED/.test(r.err) && !process.env.CI) {
    t.skip("npm's cache lacks a dependency: run `npm ci` here once (it fills the cache), then this test runs without a network");
    return false;
  }
  assert.equal(r.code, 0, r.err);
  return true;
}

const SCORE = `
import { createMetric } from 'promptiqa';
const metric = await createMetric('clip-iqa', { model: process.argv[2] });
console.log(JSON.stringify({ score: await metric.score(process.argv[3]) }));
await metric.close();
`;

function npmAtLeast(major: number, minor: number): boolean {
  const [a = 0, b = 0] = run('npm', ['--version'], ROOT).out.trim().split('.').map(Number);
  return a > major || (a === major && b >= minor);
}

test('pack, install into a fresh project without a network, import, score; onnxruntime-node’s install script skipped as the README says', async (t) => {
  const tarball = pack();
  const files = run('tar', ['-tzf', tarball], ROOT).out.split('\n');
  for (const f of ['package/dist/index.js', 'package/bin/promptiqa.js', 'package/assets/clip/bpe_simple_vocab_16e6.txt.gz']) {
    assert.ok(files.includes(f), `${f} is packed`);
  }
  assert.ok(!files.some((f) => f.startsWith('package/src/') || f.startsWith('package/test/')), 'sources and tests are not packed');

  // the README's way for any npm: ONNXRUNTIME_NODE_INSTALL=skip
  const dir = freshProject(tarball);
  if (!install(t, dir, { ONNXRUNTIME_NODE_INSTALL: 'skip' })) return;
  assert.ok(existsSync(join(dir, 'node_modules', 'onnxruntime-node', 'bin')), 'onnxruntime-node installed, its CPU runtime with it');

  writeFileSync(join(dir, 'score.mjs'), SCORE);
  const scored = run(process.execPath, ['score.mjs', MODEL, IMAGE], dir);
  assert.equal(scored.code, 0, scored.err);
  const { score } = JSON.parse(scored.out) as { score: number };
  const metric = await createMetric('clip-iqa', { model: MODEL });
  try {
    assert.ok(Math.abs(score - (await metric.score(IMAGE))) < 1e-6, 'the installed package scores as this checkout');
  } finally {
    await metric.close();
  }
  const cli = run(
    process.execPath,
    [join(dir, 'node_modules', '.bin', 'promptiqa'), 'score', IMAGE, '--method', 'clip-iqa', '--model', MODEL, '--format', 'json'],
    dir,
  );
  assert.equal(cli.code, 0, cli.err);
  assert.ok(Math.abs((JSON.parse(cli.out) as Array<{ score: number }>)[0]!.score - score) < 1e-6);

  // the negative control: without the skip, onnxruntime-node's script reaches for NuGet, which a machine
  // without a network cannot reach, and the install fails (the script, run as npm runs it, in that tree)
  // (on Linux x64, where it has the CUDA provider to fetch; elsewhere it has nothing to do)
  if (process.platform === 'linux' && process.arch === 'x64') {
    const script = run(process.execPath, [join('node_modules', 'onnxruntime-node', 'script', 'install')], dir, {
      ONNXRUNTIME_NODE_INSTALL: undefined,
    });
    assert.notEqual(script.code, 0, 'without the skip the install script needs the network');
    assert.match(script.err, /ECONNREFUSED/);
  }

  // the other way the README gives, for npm ≥ 11.16: an allowScripts entry in the project's package.json
  if (npmAtLeast(11, 16)) {
    const other = freshProject(tarball, { allowScripts: { 'onnxruntime-node': false } });
    install(t, other, { ONNXRUNTIME_NODE_INSTALL: undefined });
    assert.ok(existsSync(join(other, 'node_modules', 'promptiqa', 'dist', 'index.js')));
  }
});
