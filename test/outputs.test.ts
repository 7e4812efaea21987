// Outputs that are not plain files (devices, FIFOs, links, standard output), what an output records of the run
// that made it, and the score outputs read back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import {
  closeSync,
  constants as fsConstants,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkWritableFile, checkWritableFolder, OutputError, writeFileAtomic } from '../src/util/fs.js';
import { expandInputs, outputHeader, prepareResume, readOutputHeader, sourceDifferences } from '../src/cli/lib/files.js';
import type { MetricSource } from '../src/methods/index.js';
import { readUnreadable } from '../src/train/batches.js';
import { cli, cliInChild } from './helpers/cli.js';
import { sharedDir } from './helpers/shared.js';

const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');
const refImages = join(sharedDir(), 'reference', 'images');
const linux = process.platform === 'linux';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-outputs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A character device of our own (the null device's numbers), where this process may make one (root). */
function ownNullDevice(dir: string): string | undefined {
  const path = join(dir, 'null');
  try {
    execFileSync('mknod', [path, 'c', '1', '3'], { stdio: 'ignore' });
    return statSync(path).isCharacterDevice() ? path : undefined;
  } catch {
    return undefined;
  }
}

test('writeFileAtomic writes into a FIFO as it is: the FIFO stays a FIFO', { skip: !linux && 'needs mkfifo' }, (t) => {
  const dir = tempDir(t);
  const fifo = join(dir, 'pipe');
  execFileSync('mkfifo', [fifo]);
  // a reader first, so that opening the FIFO for writing does not wait
  const reader = openSync(fifo, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  try {
    writeFileAtomic(fifo, 'a,b\n1,2\n');
    const buf = Buffer.alloc(64);
    const n = readSync(reader, buf, 0, buf.length, null);
    assert.equal(buf.subarray(0, n).toString(), 'a,b\n1,2\n');
  } finally {
    closeSync(reader);
  }
  assert.ok(lstatSync(fifo).isFIFO(), 'still a FIFO, not replaced by a regular file');
  assert.deepEqual(readdirSync(dir), ['pipe'], 'no temporary file left');
});

test('writeFileAtomic writes into a character device and never replaces it', { skip: !linux && 'needs mknod' }, (t) => {
  const dir = tempDir(t);
  const dev = ownNullDevice(dir);
  if (!dev) return t.skip('mknod is not allowed here');
  writeFileAtomic(dev, 'scores\n');
  assert.ok(lstatSync(dev).isCharacterDevice(), 'still a device');
  assert.ok(checkWritableFile(dev).kind === 'stream');
  // a device that refuses what is written: the error says so (it was "written" and replaced before)
  if (existsSync('/dev/full')) {
    assert.throws(() => writeFileAtomic('/dev/full', 'x'), /cannot write \/dev\/full: no space left on the device/);
    assert.ok(lstatSync('/dev/full').isCharacterDevice());
  }
});

test('writeFileAtomic follows a link to its target, which it replaces; the link stays', (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'real'));
  writeFileSync(join(dir, 'real', 'scores.csv'), 'old\n');
  symlinkSync(join('real', 'scores.csv'), join(dir, 'scores.csv'));
  assert.deepEqual(checkWritableFile(join(dir, 'scores.csv')), { kind: 'file', path: join(dir, 'real', 'scores.csv') });
  writeFileAtomic(join(dir, 'scores.csv'), 'new\n');
  assert.ok(lstatSync(join(dir, 'scores.csv')).isSymbolicLink(), 'the link is kept');
  assert.equal(readlinkSync(join(dir, 'scores.csv')), join('real', 'scores.csv'));
  assert.equal(readFileSync(join(dir, 'real', 'scores.csv'), 'utf8'), 'new\n');
  assert.deepEqual(readdirSync(join(dir, 'real')), ['scores.csv']);
});

test('an output that is a link to nothing, a socket or a block device is refused by name, nothing replaced', async (t) => {
  const dir = tempDir(t);
  const dangling = join(dir, 'dangling.csv');
  symlinkSync(join(dir, 'gone', 'x.csv'), dangling);
  for (const f of [() => checkWritableFile(dangling), () => writeFileAtomic(dangling, 'x')]) {
    assert.throws(
      f,
      (e: unknown) =>
        e instanceof OutputError &&
        e.message === `cannot write ${dangling}: it is a link to ${join(dir, 'gone', 'x.csv')}, which does not exist`,
    );
  }
  assert.ok(lstatSync(dangling).isSymbolicLink());
  assert.ok(!existsSync(join(dir, 'gone')));
  if (process.platform !== 'win32') {
    const sock = join(dir, 'sock');
    const server = createServer();
    server.listen(sock);
    await once(server, 'listening');
    try {
      assert.throws(
        () => writeFileAtomic(sock, 'x'),
        new RegExp(`cannot write ${sock}: it is a socket; an output is written into a regular file, a character device or a FIFO`),
      );
      assert.ok(lstatSync(sock).isSocket());
    } finally {
      server.close();
    }
  }
  const block = readdirSync('/dev', { withFileTypes: true }).find((e) => e.isBlockDevice());
  if (linux && block) {
    const path = join('/dev', block.name);
    assert.throws(() => checkWritableFile(path), new RegExp(`cannot write ${path}: it is a block device`));
  }
});

test('an output in /proc is reported as what it is, not as a missing folder', { skip: !linux && 'procfs' }, () => {
  assert.throws(
    () => checkWritableFile('/proc/version'),
    (e: unknown) => e instanceof OutputError && /^cannot write \/proc\/version: files cannot be created in \/proc \(procfs/.test(e.message),
  );
  assert.throws(() => writeFileAtomic('/proc/promptiqa-out.csv', 'x'), /files cannot be created in \/proc \(procfs/);
  // eval's and train's --out: a device is named as one, not as "a file"
  assert.throws(() => checkWritableFolder('/dev/null'), /cannot write in \/dev\/null: it is a character device, not a folder/);
});

test('score --output -: standard output, no file named "-"', async (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'a.png');
  copyFileSync(join(refImages, 'grey_640x480.png'), img);
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    const csv = await cli('score', img, '--method', 'clip-iqa', '--model', tiny, '--format', 'csv', '--output', '-', '--quiet');
    assert.equal(csv.code, 0, csv.err);
    assert.match(csv.out, /^file,score,error\n.*a\.png,0\.\d+,\n$/);
    const jsonl = await cli('score', img, '--method', 'clip-iqa', '--model', tiny, '--format', 'jsonl', '--output', '-', '--quiet');
    assert.equal(jsonl.code, 0, jsonl.err);
    assert.equal((JSON.parse(jsonl.out) as { file: string }).file, img);
  } finally {
    process.chdir(cwd);
  }
  assert.deepEqual(readdirSync(dir), ['a.png']);
});

test(
  'score --output into a FIFO, a device and /dev/stdout writes through them and replaces nothing',
  { skip: !linux && 'devices' },
  async (t) => {
    const dir = tempDir(t);
    const img = join(dir, 'a.png');
    copyFileSync(join(refImages, 'grey_640x480.png'), img);
    const fifo = join(dir, 'scores.csv');
    execFileSync('mkfifo', [fifo]);
    const reader = openSync(fifo, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    try {
      for (const format of ['csv', 'jsonl']) {
        const r = await cli('score', img, '--method', 'clip-iqa', '--model', tiny, '--format', format, '--output', fifo, '--quiet');
        assert.equal(r.code, 0, r.err);
        const buf = Buffer.alloc(4096);
        const got = buf.subarray(0, readSync(reader, buf, 0, buf.length, null)).toString();
        assert.match(
          got,
          format === 'csv'
            ? /^file,score,error\n.*a\.png,0\.\d+,\n$/
            : /^\{"format":"promptiqa-scores\/1",[^\n]*\}\n\{"file":".*a\.png","score":0\.\d+\}\n$/,
        );
      }
    } finally {
      closeSync(reader);
    }
    assert.ok(lstatSync(fifo).isFIFO());
    const dev = ownNullDevice(dir);
    if (dev) {
      const r = await cli('score', img, '--method', 'clip-iqa', '--model', tiny, '--format', 'jsonl', '--output', dev, '--quiet');
      assert.equal(r.code, 0, r.err);
      assert.ok(lstatSync(dev).isCharacterDevice());
      assert.ok(!existsSync(`${dev}.lock`), 'no lock file beside a device');
    }
    assert.deepEqual(readdirSync(dir).sort(), ['a.png', ...(dev ? ['null'] : []), 'scores.csv']);

    // /dev/stdout in a child whose standard output is a pipe: the scores come through it
    const { code, out, err } = await cliInChild([
      'score',
      img,
      '--method',
      'clip-iqa',
      '--model',
      tiny,
      '--format',
      'csv',
      '--output',
      '/dev/stdout',
      '--quiet',
    ]);
    assert.equal(code, 0, err);
    assert.match(out, /^file,score,error\n.*a\.png,0\.\d+,\n$/);
    assert.ok(lstatSync('/dev/stdout').isSymbolicLink());
  },
);

test(
  'score --output onto a full device fails (exit 1) saying so, with the scores on standard output',
  { skip: !existsSync('/dev/full') && 'no /dev/full' },
  async (t) => {
    const dir = tempDir(t);
    const img = join(dir, 'a.png');
    copyFileSync(join(refImages, 'grey_640x480.png'), img);
    const r = await cli('score', img, '--method', 'clip-iqa', '--model', tiny, '--format', 'csv', '--output', '/dev/full', '--quiet');
    assert.equal(r.code, 1);
    assert.match(r.err, /cannot write \/dev\/full: no space left on the device; the results were printed on standard output instead/);
    assert.match(r.out, /^file,score,error\n/);
    assert.ok(lstatSync('/dev/full').isCharacterDevice());
  },
);

const REF = ['AttnGAN_normal_000.jpg', 'grey_640x480.png', 'midjourney_normal_105.jpg', 'palette_157x301.png', 'wide_640x480.png'];

/** A folder `imgs/` with the reference images and a label file `labels.csv` with other column names than the defaults. */
function labelledSet(dir: string): { imgs: string; mos: number[] } {
  const imgs = join(dir, 'imgs');
  mkdirSync(imgs);
  for (const f of REF) copyFileSync(join(refImages, f), join(imgs, f));
  const mos = [1.5, 2.25, 4, 3.5, 2];
  writeFileSync(join(dir, 'labels.csv'), `path,rating,caption\n${REF.map((f, i) => `imgs/${f},${mos[i]},a picture`).join('\n')}\n`);
  return { imgs, mos };
}

test('a jsonl output records what made it; a resume with another model or option is refused naming it, the file untouched', async (t) => {
  const dir = tempDir(t);
  const { imgs } = labelledSet(dir);
  const out = join(dir, 'scores.jsonl');
  const base = ['--method', 'clip-iqa', '--format', 'jsonl', '--output', out, '--quiet'];
  const first = await cli('score', join(imgs, REF[0]!), join(imgs, REF[1]!), ...base, '--model', tiny);
  assert.equal(first.code, 0, first.err);
  const lines = readFileSync(out, 'utf8').trim().split('\n');
  assert.equal(lines.length, 3);
  const header = JSON.parse(lines[0]!) as Record<string, unknown> & {
    model: { name: string; id: string };
    options: Record<string, unknown>;
  };
  assert.equal(header.format, 'promptiqa-scores/1');
  assert.equal(header.method, 'clip-iqa');
  assert.equal(header.model.name, tiny);
  assert.match(header.model.id, /^sha256:[0-9a-f]{64}$/);
  assert.equal(header.options.testViews, 'auto');
  assert.deepEqual(header.scoreRange, [0, 1]);
  assert.ok(!('file' in header));
  const before = readFileSync(out);

  // all already there, but with other weights: refused (it said "all 2 already in" before)
  const otherModel = await cli('score', join(imgs, REF[0]!), ...base, '--model', join(sharedDir(), 'reference', 'tiny-vit-p16'));
  assert.equal(otherModel.code, 1);
  assert.match(
    otherModel.err,
    new RegExp(
      `cannot resume ${out}: its scores were made otherwise \\(model ${tiny} \\(sha256:[0-9a-f]{12}…\\) there, .*tiny-vit-p16 \\(sha256:[0-9a-f]{12}…\\) now\\)`,
    ),
  );
  const otherOption = await cli('score', imgs, ...base, '--model', tiny, '--option', 'testViews=resize');
  assert.equal(otherOption.code, 1);
  assert.match(otherOption.err, /its scores were made otherwise \(option testViews auto there, resize now\)/);
  assert.deepEqual(readFileSync(out), before, 'the refused runs changed nothing');

  // the same set-up resumes, the header kept once at the top
  const same = await cli('score', imgs, ...base, '--model', tiny);
  assert.equal(same.code, 0, same.err);
  const after = readFileSync(out, 'utf8').trim().split('\n');
  assert.equal(after.length, 1 + REF.length);
  assert.equal(after[0], lines[0]);
  assert.ok(after.slice(1).every((l) => 'file' in (JSON.parse(l) as object)));

  // a jsonl file with records and no header (an earlier promptiqa, another tool) is not resumed
  const headless = join(dir, 'old.jsonl');
  writeFileSync(headless, lines.slice(1).join('\n') + '\n');
  const old = await cli('score', imgs, '--method', 'clip-iqa', '--model', tiny, '--format', 'jsonl', '--output', headless, '--quiet');
  assert.equal(old.code, 1);
  assert.match(old.err, /cannot resume .*old\.jsonl: it does not record what made its scores/);
});

test('a csv output keeps a plain table and records what made it in FILE.meta.json', async (t) => {
  const dir = tempDir(t);
  const { imgs } = labelledSet(dir);
  const out = join(dir, 'scores.csv');
  const r = await cli('score', imgs, '--method', 'clip-iqa', '--model', tiny, '--format', 'csv', '--output', out, '--quiet');
  assert.equal(r.code, 0, r.err);
  assert.match(readFileSync(out, 'utf8'), /^file,score,error\n/);
  const meta = JSON.parse(readFileSync(`${out}.meta.json`, 'utf8')) as { format: string; method: string; model: { name: string } };
  assert.equal(meta.format, 'promptiqa-scores/1');
  assert.equal(meta.method, 'clip-iqa');
  assert.equal(meta.model.name, tiny);
});

test('score --dataset csv takes --image-col/--mos-col/--prompt-col; metrics reads its jsonl, json and csv outputs', async (t) => {
  const dir = tempDir(t);
  const { mos } = labelledSet(dir);
  const common = ['--dataset', 'csv', '--root', dir, '--label-file', 'labels.csv', '--image-col', 'path', '--mos-col', 'rating'];
  const figures: string[] = [];
  for (const format of ['jsonl', 'json', 'csv']) {
    const out = join(dir, `scores.${format}`);
    const r = await cli(
      'score',
      ...common,
      '--prompt-col',
      'caption',
      '--method',
      'clip-iqa',
      '--model',
      tiny,
      '--format',
      format,
      '--output',
      out,
      '--quiet',
    );
    assert.equal(r.code, 0, r.err);
    const m = await cli('metrics', out, '--json');
    assert.equal(m.code, 0, m.err);
    figures.push(m.out);
    assert.equal((JSON.parse(m.out) as { n: number }).n, mos.length);
  }
  assert.equal(new Set(figures).size, 1, 'the same figures from each format');
  const jsonl = readFileSync(join(dir, 'scores.jsonl'), 'utf8').trim().split('\n').slice(1);
  assert.deepEqual(
    jsonl.map((l) => (JSON.parse(l) as { mos: number }).mos),
    mos,
  );

  // a failed image's record has no score: skipped and counted
  writeFileSync(join(dir, 'more.jsonl'), readFileSync(join(dir, 'scores.jsonl'), 'utf8') + '{"file":"/x.png","error":"bad","mos":3}\n');
  const skipped = await cli('metrics', join(dir, 'more.jsonl'), '--json');
  assert.equal(skipped.code, 0, skipped.err);
  assert.match(skipped.err, /skipped 1 row/);
  // a record key that no record has, and a value that is not a number, named
  const noKey = await cli('metrics', join(dir, 'scores.jsonl'), '--mos-col', 'rating');
  assert.equal(noKey.code, 1);
  assert.match(noKey.err, /scores\.jsonl: no record has 'rating' \(--mos-col\); its records have file, score, mos/);
  writeFileSync(join(dir, 'bad.jsonl'), '{"file":"a","score":"x","mos":1}\n');
  const bad = await cli('metrics', join(dir, 'bad.jsonl'));
  assert.equal(bad.code, 1);
  assert.match(bad.err, /bad\.jsonl: line 1: 'score' is "x", not a number/);
});

test(
  'score: a FIFO or device among the inputs or in a folder is a failed record saying what it is, never read',
  { skip: !linux && 'devices' },
  async (t) => {
    const dir = tempDir(t);
    const imgs = join(dir, 'imgs');
    mkdirSync(imgs);
    copyFileSync(join(refImages, 'grey_640x480.png'), join(imgs, 'a.png'));
    execFileSync('mkfifo', [join(imgs, 'pipe.jpg')]); // no writer: reading it would wait forever
    symlinkSync('/dev/zero', join(imgs, 'zero.jpg')); // reading it would never end
    execFileSync('mkfifo', [join(imgs, 'notes')]); // not an image name: not an image, as any other file
    const fifo = join(dir, 'given.png');
    execFileSync('mkfifo', [fifo]);
    // found without opening any of them (the old scan dropped the folder's silently and took the given ones as images)
    const found = expandInputs([imgs, fifo, '/dev/zero']);
    assert.deepEqual(found.files, [join(imgs, 'a.png')]);
    assert.deepEqual(
      found.failed.map((f) => f.file),
      [join(imgs, 'pipe.jpg'), join(imgs, 'zero.jpg'), fifo, '/dev/zero'],
    );
    const out = join(dir, 'scores.jsonl');
    const r = await cli('score', imgs, fifo, '/dev/zero', '--method', 'clip-iqa', '--model', tiny, '--format', 'jsonl', '--output', out);
    assert.equal(r.code, 0, r.err);
    const records = readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => JSON.parse(l) as { file: string; score?: number; error?: string });
    const errors = Object.fromEntries(records.filter((x) => x.error !== undefined).map((x) => [x.file, x.error]));
    assert.deepEqual(errors, {
      [join(imgs, 'pipe.jpg')]: 'it is a FIFO (named pipe), not a regular file: skipped',
      [join(imgs, 'zero.jpg')]: 'it is a character device, not a regular file: skipped',
      [fifo]: 'it is a FIFO (named pipe), not a regular file: skipped',
      '/dev/zero': 'it is a character device, not a regular file: skipped',
    });
    assert.equal(records.filter((x) => typeof x.score === 'number').length, 1);
    for (const f of ['pipe.jpg', 'zero.jpg', 'given.png', '/dev/zero']) assert.ok(r.err.includes(f), `stderr names ${f}`);
    assert.match(r.err, /scored 1, failed 4/);
  },
);

test(
  'metrics and a checkpoint read only regular files: a FIFO or device is refused at once, naming it',
  { skip: !linux && 'devices' },
  async (t) => {
    const dir = tempDir(t);
    const fifo = join(dir, 'scores.csv');
    execFileSync('mkfifo', [fifo]);
    for (const f of [fifo, '/dev/zero']) {
      const r = await cli('metrics', f);
      assert.equal(r.code, 1);
      assert.match(r.err, new RegExp(`cannot read score file ${f}: it is a (FIFO|character device)`));
    }
    // a jsonl output to resume that is not a regular file is written into, not read (see the FIFO test above);
    // a checkpoint's description or tensors that are a FIFO or a device: refused by name
    const run = join(dir, 'run');
    mkdirSync(run);
    execFileSync('mkfifo', [join(run, 'checkpoint.json')]);
    const ck = await cli('score', join(refImages, 'grey_640x480.png'), '--method', 'tang', '--checkpoint', run, '--model', tiny);
    assert.equal(ck.code, 1);
    assert.match(ck.err, /cannot read checkpoint description .*checkpoint\.json: it is a FIFO/);
  },
);

test('sourceDifferences names each difference; a resume keeps the header line through --retry-failed', (t) => {
  const base: MetricSource = {
    method: 'liqe',
    pretrained: 'liqe',
    checkpoint: { path: '/a/liqe_koniq.pt', sha256: 'a'.repeat(64) },
    model: { name: 'openai/clip-vit-base-patch32', id: `sha256:${'b'.repeat(64)}` },
    options: { nCtx: 16, testViews: 'auto' },
    scoreRange: [1, 5],
  };
  assert.deepEqual(sourceDifferences(base, structuredClone(base)), []);
  // another copy of the same files (other paths, same digests) is the same source
  assert.deepEqual(
    sourceDifferences(base, {
      ...base,
      checkpoint: { path: '/b/copy.pt', sha256: 'a'.repeat(64) },
      model: { ...base.model, name: '/models/clip' },
    }),
    [],
  );
  assert.deepEqual(
    sourceDifferences(base, {
      method: 'clip-iqa',
      model: base.model,
      options: { testViews: 'resize', pairs: 'pyiqa' },
      scoreRange: [0, 1],
    }),
    [
      'method liqe there, clip-iqa now',
      'pretrained set-up liqe there, none now',
      `checkpoint /a/liqe_koniq.pt (sha256 ${'a'.repeat(12)}…) there, none now`,
      // another method's options are not listed one by one: the method says it
      'score range [1,5] there, [0,1] now',
    ],
  );
  assert.deepEqual(sourceDifferences(base, { ...base, options: { testViews: 'resize', pairs: 'pyiqa' }, applyExifOrientation: true }), [
    'option nCtx 16 there, not set now',
    'option pairs not set there, pyiqa now',
    'option testViews auto there, resize now',
    'images as stored there, turned by EXIF orientation now',
  ]);

  const dir = tempDir(t);
  const out = join(dir, 'scores.jsonl');
  const header = JSON.stringify(outputHeader(base));
  writeFileSync(out, `${header}\n{"file":"/x/a.png","score":2}\n{"file":"/x/b.png","error":"bad"}\n`);
  assert.deepEqual(readOutputHeader(out), { state: 'header', header: JSON.parse(header) as unknown });
  const state = prepareResume(out, { retryFailed: true });
  assert.equal(state.records, 1);
  assert.equal(state.retried, 1);
  assert.equal(readFileSync(out, 'utf8'), `${header}\n{"file":"/x/a.png","score":2}\n`);
  writeFileSync(out, '{"file":"/x/a.png","score":2}\n');
  assert.deepEqual(readOutputHeader(out), { state: 'unrecorded' });
  writeFileSync(out, '{"format":"promptiqa-sc'); // a run killed while writing its first line
  assert.deepEqual(readOutputHeader(out), { state: 'empty' });
});

test(
  "a run's list of unreadable images that is a FIFO is passed over at once (it only saves decoding)",
  { skip: !linux && 'mkfifo' },
  (t) => {
    const dir = tempDir(t);
    execFileSync('mkfifo', [join(dir, 'unreadable.json')]);
    assert.deepEqual(readUnreadable(join(dir, 'unreadable.json')), []);
  },
);
