import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { cli } from './helpers/cli.js';
import { sharedDir } from '../src/util/fs.js';

const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');


test('scoring a folder of 200 images with 3 unreadable ones scores the 197 and names the 3', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-score-'));
  const agiqa = join(sharedDir(), 'datasets', 'agiqa-3k', 'images');
  // 197 readable images: a few real AGIQA-3K JPEGs and small generated PNGs
  for (let i = 0; i < 197; i++) {
    if (i < 5) copyFileSync(join(agiqa, `AttnGAN_normal_00${i}.jpg`), join(dir, `img${String(i).padStart(3, '0')}.jpg`));
    else await sharp({ create: { width: 40 + i, height: 30 + (i % 7), channels: 3, background: { r: i, g: 255 - i, b: (i * 7) % 256 } } }).png().toFile(join(dir, `img${String(i).padStart(3, '0')}.png`));
  }
  writeFileSync(join(dir, 'bad-empty.jpg'), '');
  writeFileSync(join(dir, 'bad-random.png'), Buffer.from(Array.from({ length: 500 }, (_, i) => (i * 37) % 256)));
  const jpeg = readFileSync(join(agiqa, 'AttnGAN_normal_010.jpg'));
  writeFileSync(join(dir, 'bad-truncated.jpg'), jpeg.subarray(0, 300));

  const out = join(dir, 'scores.jsonl');
  const r = await cli('score', dir, '--method', 'clip-iqa', '--model', tiny, '--format', 'jsonl', '--output', out, '--quiet');
  assert.equal(r.code, 0, r.err);
  const records = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { file: string; score?: number; error?: string });
  assert.equal(records.length, 200);
  const failed = records.filter((x) => x.error !== undefined).map((x) => x.file.split('/').pop()).sort();
  assert.deepEqual(failed, ['bad-empty.jpg', 'bad-random.png', 'bad-truncated.jpg']);
  assert.equal(records.filter((x) => typeof x.score === 'number' && Number.isFinite(x.score)).length, 197);
  for (const name of failed) assert.ok(r.err.includes(name!), `stderr names ${name}`);

  // nothing readable at all: a non-zero exit
  const onlyBad = mkdtempSync(join(tmpdir(), 'promptiqa-score-bad-'));
  writeFileSync(join(onlyBad, 'x.jpg'), 'not an image');
  const bad = await cli('score', onlyBad, '--method', 'clip-iqa', '--model', tiny, '--format', 'json', '--quiet');
  assert.notEqual(bad.code, 0);
});
