import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, copyFileSync, mkdirSync, readdirSync, rmSync, existsSync, symlinkSync } from 'node:fs';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import sharp from 'sharp';
import { cli, spawnCli } from './helpers/cli.js';
import { sharedDir } from './helpers/shared.js';
import { createMetric, getMethod, loadBackbone, Scorer } from '../src/methods/index.js';
import { parseOptions } from '../src/methods/method.js';
import { setUp } from '../src/methods/graphs.js';
import { decodeImage } from '../src/data/image.js';
import { Rng } from '../src/util/rng.js';

const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');

test('scoring a folder of 200 images with 3 unreadable ones scores the 197 and names the 3', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-score-'));
  const agiqa = join(sharedDir(), 'datasets', 'agiqa-3k', 'images');
  // 197 readable images: a few real AGIQA-3K JPEGs and small generated PNGs
  for (let i = 0; i < 197; i++) {
    if (i < 5) copyFileSync(join(agiqa, `AttnGAN_normal_00${i}.jpg`), join(dir, `img${String(i).padStart(3, '0')}.jpg`));
    else
      await sharp({ create: { width: 40 + i, height: 30 + (i % 7), channels: 3, background: { r: i, g: 255 - i, b: (i * 7) % 256 } } })
        .png()
        .toFile(join(dir, `img${String(i).padStart(3, '0')}.png`));
  }
  writeFileSync(join(dir, 'bad-empty.jpg'), '');
  writeFileSync(join(dir, 'bad-random.png'), Buffer.from(Array.from({ length: 500 }, (_, i) => (i * 37) % 256)));
  const jpeg = readFileSync(join(agiqa, 'AttnGAN_normal_010.jpg'));
  writeFileSync(join(dir, 'bad-truncated.jpg'), jpeg.subarray(0, 300));

  const out = join(dir, 'scores.jsonl');
  // one resized view each: the generated PNGs are smaller than a patch on a side, too small to score whole
  const r = await cli(
    'score',
    dir,
    '--method',
    'clip-iqa',
    '--model',
    tiny,
    '--option',
    'testViews=resize',
    '--format',
    'jsonl',
    '--output',
    out,
    '--quiet',
  );
  assert.equal(r.code, 0, r.err);
  const records = readFileSync(out, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { file: string; score?: number; error?: string })
    .slice(1); // the first line says what made the scores
  assert.equal(records.length, 200);
  const failed = records
    .filter((x) => x.error !== undefined)
    .map((x) => x.file.split('/').pop())
    .sort();
  assert.deepEqual(failed, ['bad-empty.jpg', 'bad-random.png', 'bad-truncated.jpg']);
  assert.equal(records.filter((x) => typeof x.score === 'number' && Number.isFinite(x.score)).length, 197);
  for (const name of failed) assert.ok(r.err.includes(name), `stderr names ${name}`);

  // nothing readable at all: a non-zero exit
  const onlyBad = mkdtempSync(join(tmpdir(), 'promptiqa-score-bad-'));
  writeFileSync(join(onlyBad, 'x.jpg'), 'not an image');
  const bad = await cli('score', onlyBad, '--method', 'clip-iqa', '--model', tiny, '--format', 'json', '--quiet');
  assert.notEqual(bad.code, 0);
});

const refImages = join(sharedDir(), 'reference', 'images');
const REF = [
  'AttnGAN_normal_000.jpg',
  'grey_640x480.png',
  'midjourney_normal_105.jpg',
  'palette_157x301.png',
  'tall_157x301.png',
  'wide_640x480.png',
];

/** A temporary folder with `n` of the reference images copied into `imgs/`. */
function imageFolder(n: number): { dir: string; imgs: string; files: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-score-'));
  const imgs = join(dir, 'imgs');
  mkdirSync(imgs);
  const files = REF.slice(0, n).map((f) => {
    copyFileSync(join(refImages, f), join(imgs, f));
    return join(imgs, f);
  });
  return { dir, imgs, files };
}

type Rec = { file: string; score?: number; error?: string; mos?: number };
const readJsonl = (path: string): Rec[] =>
  readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Rec)
    .filter((r) => 'file' in r); // the first line says what made the scores

test('an output that cannot be written fails before any work (the model is not even looked for), leaving nothing', async () => {
  const { dir, imgs } = imageFolder(2);
  try {
    const blocker = join(dir, 'blocker');
    writeFileSync(blocker, 'a regular file where a folder would be');
    const noModel = join(dir, 'no-such-model');
    // root ignores chmod, so the unwritable places are a path under a regular file, a folder, and sysfs
    const underFile = await cli(
      'score',
      imgs,
      '--method',
      'clip-iqa',
      '--model',
      noModel,
      '--format',
      'jsonl',
      '--output',
      join(blocker, 'scores.jsonl'),
    );
    assert.equal(underFile.code, 1);
    assert.equal(underFile.err, `promptiqa score: cannot write ${join(blocker, 'scores.jsonl')}: ${blocker} is a file, not a folder\n`);

    const folder = join(dir, 'out');
    mkdirSync(folder);
    const isFolder = await cli('score', imgs, '--method', 'clip-iqa', '--model', noModel, '--format', 'csv', '--output', folder);
    assert.equal(isFolder.code, 1);
    assert.match(isFolder.err, /cannot write .*out: it is a folder; give a file name/);
    assert.deepEqual(readdirSync(folder), [], 'no stray temporary file');

    if (process.platform === 'linux' && existsSync('/sys/kernel')) {
      const sys = await cli('score', imgs, '--method', 'clip-iqa', '--model', noModel, '--output', '/sys/promptiqa-scores.csv');
      assert.equal(sys.code, 1);
      assert.match(sys.err, /cannot write \/sys\/promptiqa-scores\.csv: (permission denied|read-only)/);
    }

    // eval's and train's --out: checked before the dataset is read
    const evalOut = await cli(
      'eval',
      '--method',
      'clip-iqa',
      '--model',
      noModel,
      '--dataset',
      'agiqa-3k',
      '--root',
      join(dir, 'no-such-root'),
      '--out',
      join(blocker, 'eval'),
    );
    assert.equal(evalOut.code, 1);
    assert.match(evalOut.err, /cannot write .*blocker.eval: .*blocker is a file, not a folder/);
    const trainOut = await cli(
      'train',
      '--method',
      'tang',
      '--model',
      noModel,
      '--dataset',
      'agiqa-3k',
      '--root',
      join(dir, 'no-such-root'),
      '--out',
      join(blocker, 'run'),
    );
    assert.equal(trainOut.code, 1);
    assert.match(trainOut.err, /cannot write .*blocker.run: .*blocker is a file, not a folder/);
    assert.deepEqual(readdirSync(dir).sort(), ['blocker', 'imgs', 'out']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test(
  'two runs on one --output: the second refuses at once naming the first, whose output has no duplicates',
  { skip: process.platform === 'win32' && 'needs a named pipe', timeout: 600_000 },
  async () => {
    const { dir, imgs, files } = imageFolder(6);
    const started: ChildProcess[] = [];
    try {
      // the first run waits on opening one of its images until the second has been refused: no timing involved
      // (test/helpers/open-gate.ts); a named pipe among the inputs is a failed record, refused without waiting
      const gate = files[0]!;
      const fifo = join(dir, 'pipe.png');
      execFileSync('mkfifo', [fifo]);
      const out = join(dir, 'scores.jsonl');
      const child = (gated: boolean, ...args: string[]): ChildProcess => {
        const p = spawnCli(['score', ...args], {
          preload: [fileURLToPath(new URL('./helpers/open-gate.ts', import.meta.url))],
          env: gated ? { ...process.env, PROMPTIQA_TEST_GATE: gate } : process.env,
        });
        started.push(p);
        return p;
      };
      const collect = (p: ReturnType<typeof child>): Promise<{ code: number | null; err: string }> => {
        let err = '';
        p.stderr!.on('data', (d: Buffer) => {
          err += d.toString();
        });
        return once(p, 'exit').then(([code]) => ({ code: code as number | null, err }));
      };
      const args = [imgs, fifo, '--method', 'clip-iqa', '--model', tiny, '--format', 'jsonl', '--output', out, '--batch', '2', '--quiet'];
      const first = child(true, ...args);
      const firstDone = collect(first);
      while (!existsSync(`${out}.lock`)) await new Promise((r) => setTimeout(r, 50));

      const second = await collect(child(false, ...args));
      assert.equal(second.code, 1, second.err);
      assert.match(second.err, new RegExp(`scores\\.jsonl is in use by another run \\(process ${first.pid} on `));
      assert.ok(existsSync(`${out}.lock`), "the refused run leaves the first one's lock alone");

      writeFileSync(`${gate}.go`, ''); // lets the first run go on
      const done = await firstDone;
      assert.equal(done.code, 0, done.err);
      const records = readJsonl(out);
      assert.equal(records.length, files.length + 1);
      assert.equal(new Set(records.map((r) => r.file)).size, records.length, 'no duplicates');
      assert.deepEqual(
        records.filter((r) => r.error !== undefined).map((r) => r.file),
        [fifo],
      );
      assert.ok(!existsSync(`${out}.lock`), 'the lock is gone after the run');
    } finally {
      // a failed assertion must not leave a run blocked at the gate
      for (const p of started) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test('bad entries (a link loop, a missing file, a dangling link) are failed records and the run goes on', async () => {
  const { dir, imgs } = imageFolder(2);
  try {
    symlinkSync('loop.jpg', join(imgs, 'loop.jpg')); // a link to itself: ELOOP
    symlinkSync(join(dir, 'gone.png'), join(imgs, 'dangling.png'));
    symlinkSync('.', join(imgs, 'again')); // a folder cycle: followed once, not an error
    const selfLoop = join(dir, 'self');
    symlinkSync('self', selfLoop);
    const missing = join(dir, 'missing.png');
    const out = join(dir, 'scores.jsonl');
    const r = await cli(
      'score',
      imgs,
      missing,
      selfLoop,
      '--method',
      'clip-iqa',
      '--model',
      tiny,
      '--format',
      'jsonl',
      '--output',
      out,
      '--quiet',
    );
    assert.equal(r.code, 0, r.err);
    const records = readJsonl(out);
    assert.equal(records.filter((x) => typeof x.score === 'number').length, 2);
    const failed = Object.fromEntries(records.filter((x) => x.error !== undefined).map((x) => [x.file, x.error]));
    assert.deepEqual(failed, {
      [join(imgs, 'dangling.png')]: 'a link to a file that does not exist',
      [join(imgs, 'loop.jpg')]: 'a symbolic link loop',
      [missing]: 'no such file or folder',
      [selfLoop]: 'a symbolic link loop',
    });
    // stderr: one "file: problem" line each, the file named once
    for (const [file, error] of Object.entries(failed)) assert.ok(r.err.includes(`${file}: ${error}\n`), `${file} on stderr: ${r.err}`);
    assert.doesNotMatch(r.err, /(\S+): \1:/, 'no file named twice');

    if (process.getuid?.() !== 0) {
      const closed = join(imgs, 'closed');
      mkdirSync(closed, { mode: 0o000 });
      const c = await cli('score', imgs, '--method', 'clip-iqa', '--model', tiny, '--format', 'json', '--quiet');
      assert.equal(c.code, 0, c.err);
      assert.match(c.err, /closed: cannot list the folder: permission denied/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("library: wrong values fail with a sentence; a failed file's error does not repeat its name", async () => {
  const metric = await createMetric('clip-iqa', { model: tiny });
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-score-'));
  try {
    await assert.rejects(metric.score(undefined as never), {
      name: 'TypeError',
      message: 'score: expected an image file path, its bytes (Uint8Array) or a decoded image {width, height, data}; got undefined',
    });
    await assert.rejects(
      metric.score({ width: 2, height: 2, data: new Uint8Array(3) }),
      /a decoded image of 2x2 needs 12 bytes of RGB data, not 3/,
    );
    await assert.rejects(metric.scoreBatch('a.jpg' as never), /scoreBatch: expected an array of images; got a string/);
    await assert.rejects(metric.scoreBatch([join(refImages, REF[0]!), null as never]), /scoreBatch: image 1: expected .* got null/);
    await assert.rejects(metric.scoreFiles([undefined as never]).next(), /scoreFiles: file 0: expected a path; got undefined/);
    const empty = join(dir, 'x.png');
    writeFileSync(empty, '');
    const results = [];
    for await (const r of metric.scoreFiles([empty, join(dir, 'nope.png')])) results.push(r);
    assert.deepEqual(results, [
      { file: empty, error: 'empty file (0 bytes)' },
      { file: join(dir, 'nope.png'), error: 'no such file' },
    ]);
    await assert.rejects(
      createMetric('clip-iqa', { model: tiny, batchSize: 100000 }),
      /createMetric: batchSize 100000 is not a whole number from 1 to 4096/,
    );
  } finally {
    await metric.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--batch: memory for the images there are, not for the batch; absurd sizes refused', async () => {
  const method = getMethod('clip-iqa');
  // views of the model's size, which are batched (whole images run alone)
  const options = parseOptions(method, { testViews: 'resize' });
  const backbone = await loadBackbone(tiny);
  const setup = setUp(method, options, backbone);
  const scorer = new Scorer(setup, setup.model.init(new Rng(0)), {}, 1000);
  const graphs: string[] = [];
  const sessions = (scorer as unknown as { sessions: { get: (key: string, build: () => unknown) => unknown } }).sessions;
  const get = sessions.get.bind(sessions);
  sessions.get = (key, build) => {
    graphs.push(key);
    return get(key, build);
  };
  const imgs = await Promise.all(REF.slice(0, 3).map((f) => decodeImage(join(refImages, f))));
  const scores = await scorer.scoreImages(imgs);
  assert.equal(scores.length, 3);
  assert.deepEqual(
    graphs.filter((k) => k.startsWith('score')),
    ['score|4'],
    'a graph (and pixel buffer) for 3 images (the power of two that holds them), not 1000',
  );
  // calls of 1 to 1000 images share the few graph sizes of powers of two, not one graph per count
  assert.deepEqual(
    [1, 2, 3, 5, 8, 9, 600, 1000].map((n) => scorer.graphBatch(n)),
    [1, 2, 4, 8, 8, 16, 1000, 1000],
  );
  await scorer.close();

  const { dir, imgs: folder } = imageFolder(2);
  try {
    const big = await cli('score', folder, '--method', 'clip-iqa', '--model', tiny, '--batch', '2000', '--format', 'json', '--quiet');
    assert.equal(big.code, 0, big.err);
    assert.equal((JSON.parse(big.out) as Rec[]).length, 2);
    const absurd = await cli('score', folder, '--method', 'clip-iqa', '--model', tiny, '--batch', '100000');
    assert.equal(absurd.code, 2);
    assert.match(absurd.err, /--batch 100000 is not a whole number from 1 to 4096/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('resume matches real paths (a run resumed from another folder adds nothing); --retry-failed scores failed files again', async () => {
  const { dir } = imageFolder(2);
  const cwd = process.cwd();
  try {
    writeFileSync(join(dir, 'imgs', 'later.png'), ''); // unreadable for now
    process.chdir(dir);
    const base = ['--method', 'clip-iqa', '--model', tiny, '--format', 'jsonl', '--quiet'];
    const first = await cli('score', 'imgs', ...base, '--output', 'scores.jsonl');
    assert.equal(first.code, 0, first.err);
    assert.equal(readJsonl(join(dir, 'scores.jsonl')).length, 3);

    process.chdir(join(dir, 'imgs'));
    const again = await cli('score', '.', ...base, '--output', '../scores.jsonl');
    assert.equal(again.code, 0, again.err);
    assert.equal(readJsonl(join(dir, 'scores.jsonl')).length, 3, 'nothing added');

    copyFileSync(join(refImages, 'wide_640x480.png'), join(dir, 'imgs', 'later.png'));
    await cli('score', '.', ...base, '--output', '../scores.jsonl');
    assert.equal(
      readJsonl(join(dir, 'scores.jsonl')).filter((r) => r.error !== undefined).length,
      1,
      'without --retry-failed a failed file stays failed',
    );
    const retry = await cli('score', '.', ...base, '--output', '../scores.jsonl', '--retry-failed');
    assert.equal(retry.code, 0, retry.err);
    const records = readJsonl(join(dir, 'scores.jsonl'));
    assert.equal(records.length, 3);
    assert.equal(new Set(records.map((r) => r.file)).size, 3);
    assert.ok(
      records.every((r) => typeof r.score === 'number'),
      'the failed record was replaced by a score',
    );

    const usage = await cli('score', '.', ...base.filter((x) => x !== 'jsonl' && x !== '--format'), '--retry-failed');
    assert.equal(usage.code, 2);
  } finally {
    process.chdir(cwd);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('score --dataset --root: records carry the MOS, so metrics reads the output as it is', async () => {
  const { dir, imgs } = imageFolder(5);
  try {
    const mos = [1.5, 2.25, 4, 3.5, 2];
    writeFileSync(
      join(dir, 'labels.csv'),
      `image,mos\n${REF.slice(0, 5)
        .map((f, i) => `imgs/${f},${mos[i]}`)
        .join('\n')}\n`,
    );
    const out = join(dir, 'scores.csv');
    const r = await cli(
      'score',
      '--dataset',
      'csv',
      '--root',
      dir,
      '--label-file',
      'labels.csv',
      '--method',
      'clip-iqa',
      '--model',
      tiny,
      '--format',
      'csv',
      '--output',
      out,
      '--quiet',
    );
    assert.equal(r.code, 0, r.err);
    assert.match(readFileSync(out, 'utf8'), /^file,score,mos,error\n/);
    const m = await cli('metrics', out, '--json');
    assert.equal(m.code, 0, m.err);
    assert.equal((JSON.parse(m.out) as { n: number }).n, 5);

    // files given as well: matched to the label file by real path
    const jsonl = join(dir, 'scores.jsonl');
    const j = await cli(
      'score',
      join(imgs, REF[2]!),
      '--dataset',
      'csv',
      '--root',
      dir,
      '--label-file',
      'labels.csv',
      '--method',
      'clip-iqa',
      '--model',
      tiny,
      '--format',
      'jsonl',
      '--output',
      jsonl,
      '--quiet',
    );
    assert.equal(j.code, 0, j.err);
    assert.deepEqual(
      readJsonl(jsonl).map((x) => x.mos),
      [4],
    );

    // an image of the label file that is missing is one failed record; the others are scored
    rmSync(join(imgs, REF[4]!));
    const gone = await cli(
      'score',
      '--dataset',
      'csv',
      '--root',
      dir,
      '--label-file',
      'labels.csv',
      '--method',
      'clip-iqa',
      '--model',
      tiny,
      '--format',
      'json',
      '--quiet',
    );
    assert.equal(gone.code, 0, gone.err);
    const recs = JSON.parse(gone.out) as Array<{ file: string; score?: number; error?: string }>;
    assert.equal(recs.filter((x) => x.score !== undefined).length, 4);
    assert.match(recs.find((x) => x.error !== undefined)?.file ?? '', new RegExp(REF[4]!.replace('.', '\\.')));

    const alone = await cli('score', imgs, '--root', dir, '--method', 'clip-iqa');
    assert.equal(alone.code, 2);
    assert.match(alone.err, /--dataset and --root go together/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('whole images of many sizes: one graph where the model reads any size, a graph per size where it does not', async () => {
  const method = getMethod('clip-iqa');
  const backbone = await loadBackbone(join(sharedDir(), 'reference', 'tiny-rn', 'openai.safetensors'));
  const imgs = await Promise.all(REF.map((f) => decodeImage(join(refImages, f))));
  const sizes = new Set(imgs.map((i) => `${i.height}x${i.width}`));
  assert.ok(sizes.size >= 3, 'the reference images have several sizes');
  type Internals = { anySize?: { sizes: Set<string> }; sizedSessions: { keys(): string[] } };
  const run = async (options: Record<string, unknown>): Promise<{ scores: number[]; open: string[]; sized: string[] }> => {
    const setup = setUp(method, parseOptions(method, options), backbone);
    const scorer = new Scorer(setup, setup.model.init(new Rng(0)), { threads: 1 });
    try {
      const scores = await scorer.scoreImages(imgs);
      const s = scorer as unknown as Internals;
      return { scores, open: [...(s.anySize?.sizes ?? [])], sized: s.sizedSessions.keys() };
    } finally {
      await scorer.close();
    }
  };
  // pyiqa's CLIP-IQA: the ResNet without its positional embedding takes every size through one graph
  const any = await run({});
  assert.deepEqual(new Set(any.open), sizes);
  assert.deepEqual(any.sized, []);
  // a positional embedding resized to each image: the graphs differ, so each size after the first has its own
  const resized = await run({ positionalEmbedding: 'interpolated' });
  assert.equal(resized.open.length, 1);
  assert.equal(resized.sized.length, Math.min(4, sizes.size - 1));
  assert.ok(any.scores.every((x, i) => Number.isFinite(x) && x !== resized.scores[i]));
});
