import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildProgram, type CliIo } from '../src/cli/main.js';
import { cli } from './helpers/cli.js';
import { correlations } from '../src/eval/metrics.js';
import { SafeTensorsFile } from '../src/clip/safetensors.js';
import { expandInputs, prepareResume } from '../src/cli/lib/files.js';
import { sharedDir } from './helpers/shared.js';

const ref = join(sharedDir(), 'reference');

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'promptiqa-cli-'));
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('metrics --json gives the figures of correlations() on the CSV columns', async () => {
  const dir = tempDir();
  try {
    const pred = [0.1, 0.4, 0.35, 0.8, 0.7, 0.95, 0.2, 0.5];
    const mos = [1.2, 2.0, 2.4, 3.9, 3.1, 4.6, 1.0, 2.2];
    const rows = pred.map((p, i) => `img${i}.jpg,${p},${mos[i]}`);
    const csv = join(dir, 'scores.csv');
    writeFileSync(csv, `file,p,m\n${rows.join('\n')}\nfailed.jpg,,3.0\n`);
    const r = await cli('metrics', csv, '--pred-col', 'p', '--mos-col', 'm', '--json');
    assert.equal(r.code, 0, r.err);
    const got = JSON.parse(r.out) as Record<string, number>;
    assert.deepEqual(Object.keys(got), ['n', 'srcc', 'krcc', 'plcc', 'plcc_logistic', 'rmse']);
    const want = correlations(pred, mos);
    for (const k of Object.keys(got)) assert.equal(got[k], want[k as keyof typeof want], k);
    assert.match(r.err, /skipped 1 row/);

    const table = await cli('metrics', csv, '--pred-col', 'p', '--mos-col', 'm');
    assert.equal(table.code, 0);
    assert.match(table.out, /SRCC\s+\d\.\d{4}/);
    assert.match(table.out, /^n\s+8$/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('metrics: a missing file or column is one clear line naming it, exit 1', async () => {
  const dir = tempDir();
  try {
    const missing = join(dir, 'nope.csv');
    const r = await cli('metrics', missing, '--pred-col', 'p', '--mos-col', 'm');
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.equal(r.err, `promptiqa metrics: cannot read score file ${missing}: no such file or folder\n`);

    const csv = join(dir, 'a.csv');
    writeFileSync(csv, 'file,score,mos\na,1,2\nb,2,3\nc,3,3\nd,4,5\n');
    const col = await cli('metrics', csv, '--pred-col', 'pred');
    assert.equal(col.code, 1);
    assert.match(col.err, /no column 'pred'/);
    assert.ok(col.err.includes(csv));
    assert.equal(col.err.trim().split('\n').length, 1, 'one line');
    assert.doesNotMatch(col.err, /\n\s+at /, 'no stack');

    writeFileSync(csv, 'file,score,mos\na,1,2\nb,x,3\nc,3,3\nd,4,5\n');
    const bad = await cli('metrics', csv);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /column 'score' is 'x', not a number/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('datasets --json lists the registry with agiqa-3k', async () => {
  const r = await cli('datasets', '--json');
  assert.equal(r.code, 0, r.err);
  const { datasets } = JSON.parse(r.out) as { datasets: Array<{ name: string; targets: string[]; mosRange: number[]; howToGet: string }> };
  const agiqa = datasets.find((d) => d.name === 'agiqa-3k');
  assert.ok(agiqa, 'agiqa-3k listed');
  assert.deepEqual(agiqa.mosRange, [0, 5]);
  assert.ok(agiqa.targets.includes('alignment'));
  assert.ok(agiqa.howToGet.length > 0);
  const table = await cli('datasets');
  assert.equal(table.code, 0);
  assert.match(table.out, /^agiqa-3k\s+AGIQA-3K\s+aigc/m);
});

test("embed --json gives the reference's ids and embeddings (tiny-vit-p32)", async () => {
  const model = join(ref, 'tiny-vit-p32');
  const image = join(ref, 'images', 'AttnGAN_normal_000.jpg');
  const r = await cli('embed', '--model', model, '--text', 'Good photo.', '--image', image, '--json');
  assert.equal(r.code, 0, r.err);
  const got = JSON.parse(r.out) as { input_ids: number[][]; text_embeds: number[][]; image_embeds: number[][] };

  const outs = SafeTensorsFile.open(join(model, 'outputs.safetensors'));
  const texts = JSON.parse(outs.metadata.texts!) as string[];
  const images = JSON.parse(outs.metadata.images!) as string[];
  const t = texts.indexOf('Good photo.');
  const i = images.indexOf('AttnGAN_normal_000.jpg');
  assert.ok(t >= 0 && i >= 0);
  const ids = outs.readInts('input_ids');
  const te = outs.readFloat32('text_embeds');
  const ie = outs.readFloat32('image_embeds');
  const d = te.shape[1]!;
  const ctx = ids.shape[1]!;

  assert.equal(got.input_ids.length, 1);
  assert.deepEqual(got.input_ids[0], Array.from(ids.data.slice(t * ctx, (t + 1) * ctx), Number));
  assert.equal(got.text_embeds.length, 1);
  assert.equal(got.image_embeds.length, 1);
  const textErr = maxAbsDiff(got.text_embeds[0]!, te.data.subarray(t * d, (t + 1) * d));
  assert.ok(textErr < 1e-4, `text_embeds: max abs error ${textErr}`);
  // the reference decoded the JPEG with PIL's libjpeg, this with libvips: allow for that
  const imageErr = maxAbsDiff(got.image_embeds[0]!, ie.data.subarray(i * d, (i + 1) * d));
  assert.ok(imageErr < 1e-3, `image_embeds: max abs error ${imageErr}`);
});

test('embed: an unreadable image fails with one line naming the file', async () => {
  const dir = tempDir();
  try {
    const bad = join(dir, 'bad.jpg');
    writeFileSync(bad, 'not an image');
    const r = await cli('embed', '--model', join(ref, 'tiny-vit-p32'), '--image', bad, '--json');
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.ok(r.err.startsWith(`promptiqa embed: ${bad}: `), r.err);
    assert.equal(r.err.trim().split('\n').length, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad usage exits 2 with a message on stderr', async () => {
  const cases: Array<[string[], RegExp]> = [
    [[], /Usage: promptiqa/],
    [['nosuchcommand'], /unknown command 'nosuchcommand'/],
    [['metrics'], /missing required argument 'file'/],
    [['metrics', 'a.csv', '--bogus'], /unknown option '--bogus'/],
    [['score', 'x.jpg'], /required option '--method <name>' not specified/],
    [['bench', '--batch', '0'], /--batch <n>' argument '0' is invalid/],
    [['bench', '--arch', 'vit-h-99'], /Allowed choices are vit-b-32, vit-b-16, vit-l-14/],
    [['bench', '--mode', 'forward,sideways', '--no-torch'], /unknown mode 'sideways'/],
    [['bench', '--arch', 'rn50', '--mode', 'forward,fu', '--no-torch'], /--mode fu needs a ViT arch: rn50 is a ResNet/],
    [
      ['train', '--method', 'tang', '--dataset', 'agiqa-3k', '--root', '.', '--out', 'x', '--ratios', '0.5,0.5'],
      /three non-negative numbers/,
    ],
    [['embed', '--model', 'x'], /at least one --image or --text/],
    [['score', 'x.jpg', '--method', 'clip-iqa', '--format', 'xml'], /Allowed choices are table, json, csv, jsonl/],
    [
      ['score', 'x.jpg', '--method', 'no-such-method'],
      /unknown method "no-such-method" \(methods: clip-iqa.*; pretrained \(without a model or checkpoint\): clip-iqa/,
    ],
    [
      ['eval', '--method', 'clip-iqa', '--dataset', 'no-such-set', '--root', '.', '--out', 'x'],
      /unknown dataset 'no-such-set'; choose from .*agiqa-3k/,
    ],
  ];
  for (const [args, message] of cases) {
    const r = await cli(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, stderr ${r.err}`);
    assert.match(r.err, message, args.join(' '));
    assert.doesNotMatch(r.err, /\n\s+at /, 'no stack');
  }
});

// Fu's alignment branch reads the generation prompt only in training; no method's score depends on one.
test('score takes no --prompt or --prompts-csv: no method reads a generation prompt when scoring', async () => {
  for (const flag of ['--prompt', '--prompts-csv']) {
    const r = await cli('score', 'x.jpg', '--method', 'clip-iqa', flag, 'value');
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, new RegExp(`unknown option '${flag}'`));
  }
});

test('--help of every command works and shows examples; --version prints the version', async () => {
  const top = await cli('--help');
  assert.equal(top.code, 0);
  const commands = ['score', 'train', 'eval', 'metrics', 'methods', 'datasets', 'download', 'embed', 'bench', 'serve'];
  for (const c of commands) assert.match(top.out, new RegExp(`^  ${c} `, 'm'), `${c} listed`);
  for (const c of commands) {
    const r = await cli(c, '--help');
    assert.equal(r.code, 0, `${c} --help: ${r.err}`);
    assert.match(r.out, new RegExp(`^Usage: promptiqa ${c}`), c);
    assert.match(r.out, /Examples:\n {2}promptiqa /, `${c} has examples`);
  }
  // the shared options read the same everywhere
  const io: CliIo = { stdout: () => undefined, stderr: () => undefined, stderrIsTTY: false, env: {} };
  const seen = new Map<string, string>();
  for (const cmd of buildProgram(io).commands) {
    for (const o of cmd.options) {
      const key = o.long ?? o.flags;
      const text = `${o.flags}: ${o.description}`;
      if (['--batch', '--seed', '--format'].includes(key)) continue; // defaults differ by command
      if (key === '--mos-col' && cmd.name() === 'metrics') continue; // a column of the scores CSV, not of a label file
      if (key === '--root' && cmd.name() === 'serve') continue; // the folder whose files requests may name, not a dataset's
      if (seen.has(key)) assert.equal(text, seen.get(key), `${cmd.name()} ${key}`);
      else seen.set(key, text);
    }
  }
  for (const shared of [
    '--model',
    '--checkpoint',
    '--method',
    '--dataset',
    '--root',
    '--label-file',
    '--target',
    '--device',
    '--threads',
    '--json',
    '--output',
    '--quiet',
  ]) {
    assert.ok(seen.has(shared), `${shared} defined`);
  }
  const bench = await cli('bench', '--help');
  assert.match(bench.out, /apt-get install python3-torch/);

  const version = await cli('--version');
  assert.equal(version.code, 0);
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.equal(version.out.trim(), pkg.version);
});

test('score inputs: folders expand recursively to image files, sorted, hidden files skipped', () => {
  const dir = tempDir();
  try {
    mkdirSync(join(dir, 'b', 'deep'), { recursive: true });
    for (const f of [
      'z.JPG',
      'a.png',
      'notes.txt',
      '.hidden.jpg',
      'b/c.webp',
      'b/deep/d.TIFF',
      'b/e.gif',
      'b/f.bmp',
      'b/g.jpeg',
      'b/h.tif',
    ]) {
      writeFileSync(join(dir, f), '');
    }
    const { files, empty, failed } = expandInputs([dir, join(dir, 'a.png')]);
    assert.deepEqual(empty, []);
    assert.deepEqual(failed, []);
    assert.deepEqual(
      files.map((f) => f.slice(dir.length + 1)),
      ['a.png', 'b/c.webp', 'b/deep/d.TIFF', 'b/e.gif', 'b/f.bmp', 'b/g.jpeg', 'b/h.tif', 'z.JPG'],
    );
    // a missing path is a failed entry, not the end of the run
    assert.deepEqual(expandInputs([join(dir, 'missing'), join(dir, 'a.png')]), {
      files: [join(dir, 'a.png')],
      empty: [],
      failed: [{ file: join(dir, 'missing'), error: 'no such file or folder' }],
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('score resume: records already written are skipped and a torn last line is cut off', () => {
  const dir = tempDir();
  try {
    const out = join(dir, 'scores.jsonl');
    writeFileSync(out, '{"file":"a.jpg","score":0.5}\n{"file":"b.jpg","error":"truncated"}\n{"file":"c.jp');
    const r = prepareResume(out);
    assert.equal(r.records, 2);
    assert.equal(r.dropped, true);
    assert.equal(r.done.size, 2);
    assert.equal(readFileSync(out, 'utf8'), '{"file":"a.jpg","score":0.5}\n{"file":"b.jpg","error":"truncated"}\n');

    writeFileSync(out, '{"file":"a.jpg","score":0.5}\nnot json\n{"file":"b.jpg","score":1}\n');
    assert.throws(() => prepareResume(out), /scores\.jsonl:2: not a score record/);
    assert.deepEqual(prepareResume(join(dir, 'new.jsonl')), { done: new Set(), records: 0, dropped: false, retried: 0 });

    // a file that is not a score output, however large, is refused without being read whole
    writeFileSync(out, Buffer.alloc(3 << 20, 0x61));
    assert.throws(() => prepareResume(out), /scores\.jsonl:1: not a score record/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('score resume: --retry-failed takes the records of failed files out, keeping the rest byte for byte', () => {
  const dir = tempDir();
  try {
    const out = join(dir, 'scores.jsonl');
    const a = join(dir, 'a.jpg');
    const b = join(dir, 'b.jpg');
    writeFileSync(out, `{"file":${JSON.stringify(a)},"score":0.5}\n{"file":${JSON.stringify(b)},"error":"truncated"}\n`);
    const plain = prepareResume(out);
    assert.deepEqual([plain.records, plain.retried, plain.done.size], [2, 0, 2]);
    const retry = prepareResume(out, { retryFailed: true });
    assert.deepEqual([retry.records, retry.retried], [1, 1]);
    assert.deepEqual([...retry.done], [a]);
    assert.equal(readFileSync(out, 'utf8'), `{"file":${JSON.stringify(a)},"score":0.5}\n`);
    assert.deepEqual(readdirSync(dir).sort(), ['scores.jsonl'], 'no temporary file left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train --help says how to resume; --model names single weight files; eval --checkpoint says what is wrong with it', async () => {
  const help = await cli('train', '--help');
  assert.equal(help.code, 0);
  const text = help.out.replace(/\s+/g, ' ');
  assert.match(
    text,
    /Resuming: .* goes on from its last finished epoch when the same command is given again \(the same --out and settings\)/,
  );
  assert.match(text, /--model <dir\|file\|repo> CLIP weights: a local model folder, a single weights file \(OpenAI's released \.pt/);

  const dir = tempDir();
  try {
    const root = join(sharedDir(), 'datasets', 'agiqa-3k');
    const eval_ = (checkpoint: string) =>
      cli(
        'eval',
        '--method',
        'tang',
        '--checkpoint',
        checkpoint,
        '--dataset',
        'agiqa-3k',
        '--root',
        root,
        '--out',
        join(dir, 'e'),
        '--limit',
        '4',
      );
    const missing = await eval_(join(dir, 'runs', 'tang'));
    assert.equal(missing.code, 1, missing.err);
    assert.equal(
      missing.err,
      `promptiqa eval: ${join(dir, 'runs', 'tang')}: does not exist (give the --out folder of \`promptiqa train\`, or the checkpoint.json it wrote)\n`,
    );
    mkdirSync(join(dir, 'rounds', 'round-0'), { recursive: true });
    writeFileSync(join(dir, 'rounds', 'round-0', 'checkpoint.json'), '{}');
    const rounds = await eval_(join(dir, 'rounds'));
    assert.equal(rounds.code, 1, rounds.err);
    assert.match(rounds.err, /the folder of a 1-round run, .*: give one of them, e\.g\. .*round-0\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--batch is checked as the library checks it (at most MAX_BATCH)', async () => {
  const r = await cli('embed', '--model', 'x', '--text', 'a', '--batch', '100000');
  assert.equal(r.code, 2);
  assert.match(r.err, /--batch 100000 is not a whole number from 1 to 4096/);
});

test("--option keeps the library's name for the method options (methodOptions) in every command that has it", () => {
  const io: CliIo = { stdout: () => undefined, stderr: () => undefined, stderrIsTTY: false, env: {} };
  const having = buildProgram(io).commands.filter((cmd) => cmd.options.some((o) => o.long === '--option'));
  assert.deepEqual(having.map((c) => c.name()).sort(), ['eval', 'score', 'serve', 'train']);
  for (const cmd of having) {
    cmd.parseOptions(['--option', 'nCtx=16', '--option', 'initPhrase=0.50']);
    assert.deepEqual(cmd.opts().methodOptions, { nCtx: '16', initPhrase: '0.50' }, cmd.name());
  }
});
