import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Graph } from '../src/graph/graph.js';
import { CompiledGraph } from '../src/graph/runtime.js';
import { SafeTensorsFile } from '../src/clip/safetensors.js';
import { WeightBank } from '../src/clip/encoders.js';
import { paramAccessor } from '../src/prompts/context.js';
import { createMetric, loadBackbone, Scorer, type ScoreResult } from '../src/methods/index.js';
import { setUp } from '../src/methods/graphs.js';
import { parseOptions } from '../src/methods/method.js';
import { ImageRefusedError } from '../src/methods/views.js';
import { DISTORTIONS, QUALITIES, SCENES, liqe, liqeMix, liqePrompts, liqeWindows } from '../src/methods/liqe.js';
import { decodeImage } from '../src/data/image.js';
import { sharedDir } from './helpers/shared.js';

const ref = join(sharedDir(), 'reference');
const pyiqa = join(ref, 'pyiqa');
const images = join(ref, 'images');

interface Expected {
  images: string[];
  verification: { 'negative_controls (max |diff| of scores)': Record<string, number> };
  image_sizes_hw: Record<string, [number, number]>;
  metrics: Record<
    string,
    {
      scores: Record<string, number | null>;
      errors: Record<string, string>;
      settings: { qualitys: string[]; scenes: string[]; dists_map: string[]; n_prompts: number; step: number; num_patch: number };
    }
  >;
}
const expected = JSON.parse(readFileSync(join(pyiqa, 'expected.json'), 'utf8')) as Expected;
const intermediates = SafeTensorsFile.open(join(pyiqa, 'intermediates.safetensors'));

/** The fixture README's tolerances: LIQE's 1–5 scores, and embeddings / intermediates. */
const SCORE_TOL = 5e-4;
const FEATURE_TOL = 2e-4;

/** pyiqa's released LIQE weights, as the fixture's stand-ins: a whole CLIP under `params.clip_model.` */
const releasedFile = (kind: 'koniq' | 'mix'): string => join(ref, 'pyiqa', `liqe_${kind}-tiny-vit-p32.pt`);

const MODELS = [
  { method: liqe, kind: 'koniq', metric: 'liqe' },
  { method: liqeMix, kind: 'mix', metric: 'liqe_mix' },
] as const;

test("liqe's prompt lists are pyiqa's, quality outermost in the mix", () => {
  for (const { metric } of MODELS) {
    const s = expected.metrics[metric]!.settings;
    assert.deepEqual([...QUALITIES], s.qualitys);
    assert.deepEqual([...SCENES], s.scenes);
    assert.deepEqual([...DISTORTIONS], s.dists_map);
    assert.equal(liqePrompts(metric === 'liqe_mix').length, s.n_prompts);
  }
  assert.deepEqual(
    liqePrompts(false),
    QUALITIES.map((q) => `a photo with ${q} quality`),
  );
  const mix = liqePrompts(true);
  assert.equal(mix[0], 'a photo of a animal with jpeg2000 compression artifacts, which is of bad quality');
  assert.equal(mix[7 * 11 + 2], 'a photo of a still_life with noise artifacts, which is of bad quality');
  assert.equal(mix[494], 'a photo of a others with other artifacts, which is of perfect quality');
});

test('liqe picks the windows pyiqa picks and refuses a side under 224', () => {
  const s = expected.metrics.liqe!.settings;
  for (const metric of ['liqe', 'liqe_mix']) {
    const sel = intermediates.readInts(`${metric}.selected_windows`);
    const n = sel.shape[1]!;
    expected.images.forEach((name, i) => {
      const [h, w] = expected.image_sizes_hw[name]!;
      const want = sel.data.slice(i * n, (i + 1) * n).filter((k) => k >= 0);
      if (want.length === 0) {
        assert.throws(() => liqeWindows(w, h, { step: s.step, count: s.num_patch }), ImageRefusedError, name);
        return;
      }
      const got = liqeWindows(w, h, { step: s.step, count: s.num_patch });
      assert.deepEqual(
        got.map((x) => x.index),
        want,
        name,
      );
      const cols = Math.floor((w - 224) / 32) + 1;
      for (const x of got) assert.deepEqual([x.left, x.top], [(x.index % cols) * 32, Math.floor(x.index / cols) * 32]);
    });
  }
  // fewer windows than 15: every one of them; exactly 224: one window
  assert.deepEqual(
    liqeWindows(256, 224, { step: 32, count: 15 }).map((x) => x.index),
    [0, 1],
  );
  assert.deepEqual(liqeWindows(224, 224, { step: 32, count: 15 }), [{ index: 0, left: 0, top: 0 }]);
  assert.throws(() => liqeWindows(223, 500, { step: 32, count: 15 }), /223x500.*at least 224/);
});

for (const { method, kind, metric } of MODELS) {
  const file = releasedFile(kind);

  test(`${method.info.name}: text features equal pyiqa's`, async (t) => {
    const backbone = await loadBackbone(file);
    const model = method.build(parseOptions(method, {}), backbone);
    const g = new Graph('liqe_text');
    const { param } = paramAccessor(g, new Map());
    const ctx = {
      g,
      bank: new WeightBank(g),
      weights: backbone.weights,
      tokenizer: backbone.tokenizer,
      batch: 0,
      training: false,
      auxiliary: new Set<string>(),
      param,
    };
    g.output('text', model.text(ctx).prompts!);
    const compiled = await CompiledGraph.create(g);
    const got = (await compiled.run({})).text!;
    await compiled.release();
    const want = intermediates.readFloat32(`${metric}.text_features`);
    assert.deepEqual(got.shape, want.shape);
    let max = 0;
    want.data.forEach((v, i) => (max = Math.max(max, Math.abs(v - (got.data as Float32Array)[i]!))));
    t.diagnostic(`text features: max |diff| ${max}`);
    assert.ok(max <= FEATURE_TOL, `max |diff| ${max}`);
  });

  test(`${method.info.name}: scores the reference images as pyiqa, refusing those under 224 one by one`, async (t) => {
    const m = await createMetric(method.info.name, { checkpoint: file, model: join(ref, 'tiny-vit-p32'), batchSize: 16 });
    const want = expected.metrics[metric]!;
    let max = 0;
    try {
      for await (const r of m.scoreFiles(expected.images.map((f) => join(images, f)))) {
        const name = r.file.slice(images.length + 1);
        const score = want.scores[name];
        if (score === null || score === undefined) {
          assert.ok('error' in r, `${name} should be refused`);
          assert.match(r.error, /157x301; LIQE needs both sides at least 224 px/);
          assert.ok(want.errors[name]?.includes('less than 224'));
        } else {
          assert.ok('score' in r, `${name}: ${'error' in r ? r.error : ''}`);
          max = Math.max(max, Math.abs(r.score - score));
        }
      }
    } finally {
      await m.close();
    }
    t.diagnostic(`scores: max |diff| ${max}`);
    assert.ok(max <= SCORE_TOL, `max |diff| ${max}`);
  });

  test(`${method.info.name}: negative controls move some score past the tolerance`, async (t) => {
    const backbone = await loadBackbone(file);
    const want = expected.metrics[metric]!.scores;
    const ok = expected.images.filter((f) => want[f] !== null);
    const decoded = await Promise.all(ok.map((f) => decodeImage(join(images, f))));
    const worst = async (options: Record<string, unknown>, averageScores: boolean): Promise<number> => {
      const setup = setUp(method, parseOptions(method, options), backbone);
      if (averageScores) setup.model = { ...setup.model, combineViews: undefined };
      const scorer = new Scorer(setup, new Map(), {}, 16);
      try {
        const scores = await scorer.scoreImages(decoded);
        return Math.max(...scores.map((s, i) => Math.abs(s - want[ok[i]!]!)));
      } finally {
        await scorer.close();
      }
    };
    // the mean of the windows' scores instead of the score of their mean logits
    const meanOfScores = await worst({}, true);
    // every window instead of pyiqa's 15 (a negative control of expected.json)
    const allWindows = await worst({ patches: 1000 }, false);
    t.diagnostic(`mean of window scores: ${meanOfScores}; every window: ${allWindows}`);
    assert.ok(meanOfScores > SCORE_TOL);
    assert.ok(allWindows > SCORE_TOL);
    // and moves it as it moved pyiqa's
    const recorded =
      expected.verification['negative_controls (max |diff| of scores)'][`${metric} averaging all 224 windows instead of the 15 selected`]!;
    assert.ok(Math.abs(allWindows - recorded) <= SCORE_TOL, `${allWindows} against pyiqa's ${recorded}`);
  });
}

test('liqe refuses an image under 224 px by itself: a per-image error in scoreFiles, a rejection alone', async () => {
  // any ViT CLIP at 224 runs the method; the base tiny model needs no converted checkpoint
  const m = await createMetric('liqe', { model: join(ref, 'tiny-vit-p32') });
  try {
    const files = ['tall_157x301.png', 'wide_640x480.png', 'palette_157x301.png', 'missing.png'].map((f) => join(images, f));
    const got: ScoreResult[] = [];
    for await (const r of m.scoreFiles(files)) got.push(r);
    assert.deepEqual(
      got.map((r) => r.file),
      files,
    );
    assert.match((got[0] as { error: string }).error, /^the image is 157x301; LIQE needs both sides at least 224 px/);
    assert.ok('score' in got[1]! && got[1].score > 1 && got[1].score < 5);
    assert.match((got[2] as { error: string }).error, /157x301/);
    assert.ok('error' in got[3]!);
    await assert.rejects(
      m.score({ width: 300, height: 200, data: new Uint8Array(300 * 200 * 3) }),
      /300x200; LIQE needs both sides at least 224/,
    );
  } finally {
    await m.close();
  }
});
