/**
 * CLIP-IQA and CLIP-IQA+ as pyiqa computes them, on the tiny ResNet CLIP and files shaped like pyiqa's
 * released prompts: the reference images' scores within the fixture's 1e-4 of pyiqa's, from each weight
 * format, and the negative controls the fixture lists (each plausible mistake moves some score far more).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createMetric, type MetricOptions } from '../src/methods/index.js';
import { sharedDir } from './helpers/shared.js';

const ref = join(sharedDir(), 'reference');
const images = join(ref, 'images');
const rn = (file: string): string => join(ref, 'tiny-rn', file);
const prompts = (file: string): string => join(ref, 'pyiqa', file);

interface Expected {
  images: string[];
  metrics: Record<string, { scores: Record<string, number | null> }>;
  verification: { 'negative_controls (max |diff| of scores)': Record<string, number> };
}
const expected = JSON.parse(readFileSync(join(ref, 'pyiqa', 'expected.json'), 'utf8')) as Expected;
const TOL = 1e-4;

/** The largest gap between our scores of the reference images and pyiqa's for `metric`. */
async function gap(method: string, opts: MetricOptions, metric: string): Promise<number> {
  const m = await createMetric(method, { batchSize: 4, threads: 1, ...opts });
  const want = expected.metrics[metric]!.scores;
  let max = 0;
  try {
    for await (const r of m.scoreFiles(expected.images.map((f) => join(images, f)))) {
      assert.ok('score' in r, `${r.file}: ${'error' in r ? r.error : ''}`);
      max = Math.max(max, Math.abs(r.score - want[r.file.slice(images.length + 1)]!));
    }
  } finally {
    await m.close();
  }
  return max;
}

const controls = expected.verification['negative_controls (max |diff| of scores)'];

test("clip-iqa: pyiqa's scores at full resolution with its five prompt pairs, from every weight format", async (t) => {
  for (const file of ['openai.safetensors', 'openai-jit.pt', 'openai-state-dict.pt']) {
    const max = await gap('clip-iqa', { model: rn(file) }, 'clipiqa');
    t.diagnostic(`${file}: max |diff| ${max}`);
    assert.ok(max <= TOL, `${file}: max |diff| ${max}`);
  }
});

test("clip-iqa: the fixture's negative controls move the scores as they moved pyiqa's", async () => {
  const model = rn('openai.safetensors');
  const pos = await gap('clip-iqa', { model, methodOptions: { positionalEmbedding: 'interpolated' } }, 'clipiqa');
  assert.ok(Math.abs(pos - controls['clipiqa with pos_embedding=True']!) <= TOL, `pos_embedding=True: ${pos}`);
  const resized = await gap('clip-iqa', { model, methodOptions: { testViews: 'resize' } }, 'clipiqa');
  assert.ok(Math.abs(resized - controls["clipiqa on OpenAI's 224 resize + centre crop"]!) <= TOL, `224 resize: ${resized}`);
  const paper = await gap('clip-iqa', { model, methodOptions: { pairs: 'good' } }, 'clipiqa');
  assert.ok(paper > 100 * TOL, `the paper's single pair: ${paper}`);
});

test("clip-iqa+: pyiqa's scores with its released prompt file, in either context layout", async (t) => {
  const model = rn('openai.safetensors');
  const shared = await gap('clip-iqa+', { model, checkpoint: prompts('CLIP-IQA+_learned_prompts-tiny-rn.pth') }, 'clipiqa+');
  const perClass = await gap(
    'clip-iqa+',
    { model, checkpoint: prompts('CLIP-IQA+_learned_prompts-tiny-rn-csc.pth') },
    'clipiqa+ (class-specific ctx)',
  );
  t.diagnostic(`shared context: max |diff| ${shared}; one per prompt: ${perClass}`);
  assert.ok(shared <= TOL, `shared context: ${shared}`);
  assert.ok(perClass <= TOL, `one context per prompt: ${perClass}`);
  // CoOp's layout on the same vectors, as the fixture's control
  const coop = await gap(
    'clip-iqa+',
    { model, checkpoint: prompts('CLIP-IQA+_learned_prompts-tiny-rn.pth'), methodOptions: { layout: 'coop' } },
    'clipiqa+',
  );
  assert.ok(coop > 100 * TOL, `CoOp's layout: ${coop}`);
});

test('clip-iqa+: a released prompt file that does not fit the CLIP is refused by name', async () => {
  const file = prompts('CLIP-IQA+_learned_prompts-tiny-rn.pth');
  // tiny-vit-p16's text width is not the tiny ResNet's
  await assert.rejects(createMetric('clip-iqa+', { model: join(ref, 'tiny-vit-p16'), checkpoint: file }), (err: Error) =>
    err.message.startsWith(`${file}: the context is [16, 64]; CLIP-IQA+ on this CLIP (text width `),
  );
  await assert.rejects(createMetric('tang', { model: rn('openai.safetensors'), checkpoint: file }), /tang reads no released file/);
});
