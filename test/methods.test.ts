import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Graph } from '../src/graph/graph.js';
import { CompiledGraph } from '../src/graph/runtime.js';
import { SafeTensorsFile } from '../src/clip/safetensors.js';
import { WeightBank, visionEncoder, textEncoder, tokenEmbeddings, eotOneHot } from '../src/clip/encoders.js';
import { METHODS, MAX_BATCH, getMethod, loadBackbone, Scorer, listMetrics, createMetric } from '../src/methods/index.js';
import { cudaProviderProblem, webgpuProblem } from '../src/graph/runtime.js';
import { collectKeyValue } from '../src/cli/options.js';
import { ClipTokenizer } from '../src/clip/tokenizer.js';
import { availableParallelism } from 'node:os';
import { enabledAuxiliary, parseOptions } from '../src/methods/method.js';
import { TrainStep, setUp, type TrainBatch } from '../src/methods/graphs.js';
import { tang as tangMethod } from '../src/methods/tang.js';
import { sharedDir } from './helpers/shared.js';
import { Rng } from '../src/util/rng.js';
import { type View, squareView, testViews } from '../src/methods/views.js';
import { crop, toTensor, IMAGENET_MEAN, IMAGENET_STD } from '../src/data/preprocess.js';
import { type RgbImage } from '../src/data/rgb.js';

const ref = join(sharedDir(), 'reference');
const tinyP32 = join(ref, 'tiny-vit-p32');

test('listMetrics describes every method', () => {
  const names = listMetrics().map((m) => m.name);
  assert.deepEqual(names, ['clip-iqa', 'clip-iqa+', 'tang', 'fu', 'mp-iqe', 'liqe', 'liqe-mix']);
  for (const m of listMetrics()) {
    assert.ok(m.description.length > 10);
    assert.equal(m.lowerBetter, false);
    assert.ok(m.scoreRange[0] < m.scoreRange[1]);
  }
});

test('zero-shot clip-iqa equals a hand computation from the reference embeddings', async () => {
  const b = await loadBackbone(tinyP32);
  const outs = SafeTensorsFile.open(join(tinyP32, 'outputs.safetensors'));
  const texts = JSON.parse(outs.metadata.texts!) as string[];
  assert.equal(texts[0], 'Good photo.');
  assert.equal(texts[1], 'Bad photo.');
  const logits = outs.readFloat32('logits_per_image');
  const pixels = SafeTensorsFile.open(join(ref, 'preprocess.safetensors')).readFloat32('pixel_values');
  const n = pixels.shape[0]!;
  const per = pixels.data.length / n;
  const method = getMethod('clip-iqa');
  // OpenAI's own positional embedding, as the reference logits were computed
  const scorer = new Scorer(setUp(method, parseOptions(method, { pairs: 'good', positionalEmbedding: 'native' }), b), new Map(), {}, 4);
  const scores = await scorer.scoreViews(Array.from({ length: n }, (_, i) => pixels.data.slice(i * per, (i + 1) * per)));
  const nt = texts.length;
  for (let i = 0; i < n; i++) {
    const good = logits.data[i * nt]!;
    const bad = logits.data[i * nt + 1]!;
    const expected = 1 / (1 + Math.exp(bad - good));
    assert.ok(Math.abs(scores[i]! - expected) < 1e-5, `image ${i}: ${scores[i]} vs ${expected}`);
  }
  await scorer.close();
});

test('an image gets the same score whatever batch it is in', async () => {
  const metric = await createMetric('clip-iqa', { model: tinyP32, batchSize: 4 });
  const imgs = ['AttnGAN_normal_000.jpg', 'wide_640x480.png', 'tall_157x301.png', 'grey_640x480.png', 'palette_157x301.png'].map((f) =>
    join(ref, 'images', f),
  );
  const alone = await metric.score(imgs[1]!);
  const together = await metric.scoreBatch(imgs);
  assert.equal(together[1], alone);
  const shifted = await metric.scoreBatch(imgs.slice(1));
  assert.equal(shifted[0], alone);
  await metric.close();
});

test("fu: test windows at the authors' nn.Unfold positions by default, edge to edge on request, one padded window on a short side", () => {
  const fu = getMethod('fu');
  const rng = new Rng(3);
  const img: RgbImage = { width: 512, height: 300, data: Uint8Array.from({ length: 512 * 300 * 3 }, () => rng.int(256)) };
  const expect = (xs: number[], ys: number[]): View[] =>
    ys.flatMap((y) => xs.map((x) => squareView(toTensor(crop(img, x, y, 224, 224), IMAGENET_MEAN, IMAGENET_STD), 224)));
  assert.deepEqual(testViews(img, parseOptions(fu, {}), 224), expect([0, 64, 128, 192, 256], [0, 64]));
  assert.deepEqual(testViews(img, parseOptions(fu, { windows: 'edge-to-edge' }), 224), expect([0, 72, 144, 216, 288], [0, 76]));
  const narrow: RgbImage = { width: 150, height: 300, data: img.data.slice(0, 150 * 300 * 3) };
  assert.deepEqual(
    testViews(narrow, parseOptions(fu, {}), 224),
    [0, 64].map((y) => squareView(toTensor(crop(narrow, 0, y, 224, 224), IMAGENET_MEAN, IMAGENET_STD), 224)),
  );
  assert.throws(() => parseOptions(fu, { windows: 'centre' }), /fu: option windows = "centre", must be one of unfold, edge-to-edge/);
});

test('tang: context from "a photo of a" by default, 16 random tokens with preset=readme, nCtx validated', async () => {
  const tang = tangMethod;
  const b = await loadBackbone(tinyP32);
  const w = b.weights.config.textWidth;
  const o = parseOptions(tang, {});
  assert.equal(o.nCtx, 4);
  const phrase = tang.build(o, b).init(new Rng(1)).get('text.ctx')!;
  assert.deepEqual(phrase.shape, [4, w]);
  const ids = b.tokenizer.tokenizeBatch(['a photo of a'], b.weights.config.contextLength);
  assert.deepEqual(phrase.data, tokenEmbeddings(b.weights, ids, 1).slice(w, 5 * w), "the phrase's own token embeddings");

  const readme = parseOptions(tang, { preset: 'readme' });
  assert.equal(readme.nCtx, 16);
  assert.equal(readme.initPhrase, '');
  const random = tang.build(readme, b).init(new Rng(1)).get('text.ctx')!;
  assert.deepEqual(random.shape, [16, w]);
  const std = Math.sqrt(random.data.reduce((a, v) => a + v * v, 0) / random.data.length);
  assert.ok(Math.abs(std - 0.02) < 0.004, `N(0, 0.02) init, std ${std}`);
  assert.equal(parseOptions(tang, { preset: 'readme', nCtx: '8' }).nCtx, 8, 'options beside a preset override it');
  assert.deepEqual(parseOptions(tang, { preset: 'ctxv1' }), o);
  // the 16-token prompts build and score
  const metric = await createMetric('tang', { model: tinyP32, methodOptions: { allowUntrained: true, preset: 'readme' } });
  const rng = new Rng(2);
  const score = await metric.score({ width: 40, height: 30, data: Uint8Array.from({ length: 40 * 30 * 3 }, () => rng.int(256)) });
  assert.ok(Number.isFinite(score));
  await metric.close();

  assert.throws(() => parseOptions(tang, { nCtx: '0', initPhrase: '' }), /tang: option nCtx = "0", must be a whole number ≥ 1/);
  assert.throws(() => parseOptions(tang, { nCtx: 2.5, initPhrase: '' }), /tang: option nCtx = 2.5, must be a whole number ≥ 1/);
  assert.throws(() => parseOptions(tang, { nCtx: '8' }), /initPhrase "a photo of a" has 4 words but nCtx = 8/);
  assert.throws(() => parseOptions(tang, { preset: 'paper' }), /tang has no preset "paper" \(presets: ctxv1, readme\)/);
});

test('visual prompts: sequence length grows by n, deep prompts replace the last n tokens from layer 1', async () => {
  const b = await loadBackbone(tinyP32);
  const c = b.weights.config;
  const g = new Graph('placement');
  const bank = new WeightBank(g);
  const px = g.input('pixels', [1, 3, 224, 224]);
  const p0 = g.input('p0', [3, c.visionWidth]);
  const p1 = g.input('p1', [3, c.visionWidth]);
  const out = visionEncoder(bank, b.weights, px, { inputPrompts: p0, deepPrompts: [undefined, p1] });
  assert.deepEqual(out.hidden[0]!.shape, [1, 50 + 3, c.visionWidth]);
  out.hidden.forEach((h, i) => g.output(`h${i}`, h));
  g.output('e', out.embeds);
  const compiled = await CompiledGraph.create(g);
  const rng = new Rng(3);
  const rand = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  const pixels = rand(3 * 224 * 224);
  const a0 = rand(3 * c.visionWidth);
  const r1 = await compiled.run({ pixels, p0: a0, p1: rand(3 * c.visionWidth) });
  const r2 = await compiled.run({ pixels, p0: a0, p1: rand(3 * c.visionWidth) });
  // block 0 runs before the deep prompt goes in: identical; block 1 sees the new prompt: different
  assert.deepEqual(r1.h0!.data, r2.h0!.data);
  assert.notDeepEqual(r1.h1!.data, r2.h1!.data);
  await compiled.release();
});

test('deep text prompts replace token positions 1…n before layers 1…d-1', async () => {
  const b = await loadBackbone(tinyP32);
  const c = b.weights.config;
  const ids = b.tokenizer.tokenizeBatch(['X X X X good photo.'], 77);
  const g = new Graph('text-placement');
  const bank = new WeightBank(g);
  const deep = g.input('deep', [4, c.textWidth]);
  const tokens = g.constant(tokenEmbeddings(b.weights, ids, 1), [1, 77, c.textWidth]);
  const eot = g.constant(eotOneHot(ids, 1, 49407), [1, 77]);
  const out = textEncoder(bank, b.weights, tokens, eot, { deepPrompts: [undefined, deep] });
  g.output('h1', out.hidden[1]!);
  const compiled = await CompiledGraph.create(g);
  const w = c.textWidth;
  const r1 = (await compiled.run({ deep: new Float32Array(4 * w).fill(0.5) })).h1!.data as Float32Array;
  const r2 = (await compiled.run({ deep: new Float32Array(4 * w).fill(-0.5) })).h1!.data as Float32Array;
  // causal attention: position 0 (start token) never sees positions 1…4, so it is unchanged; position 1 is a prompt
  assert.deepEqual(r1.subarray(0, w), r2.subarray(0, w));
  assert.notDeepEqual(r1.subarray(w, 2 * w), r2.subarray(w, 2 * w));
  await compiled.release();
});

/**
 * Each method's whole training graph against central differences, in float32 on the tiny backbone.
 *
 * Each parameter tensor is checked along one direction v ∝ g ⊙ r (g its analytic gradient, r drawn in
 * [0.5, 1.5) per entry): the analytic slope g·v is then of the size of |g|, far above float32 noise, whereas a
 * single entry's gradient can be ~1e-4, where the loss's rounding (~1e-7, different for every summation
 * order) decides the outcome — the former entry-wise check failed now and then for that reason. The
 * session is single-threaded, so the reductions, and hence the figures, are the same on every run. A
 * narrow h drowns in noise (1e-7/h) while a wide one adds truncation error (~h²), and text context tokens
 * are strongly curved, so each tensor must agree within 1% at one of five steps h (measured: every tensor
 * agrees within 0.6% at its best h). Negative controls show the check rejects a gradient 5% too large and
 * one with the signs of a random half of its entries flipped.
 */
const l2 = (a: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return Math.sqrt(s);
};
for (const method of METHODS.filter((m) => m.info.trainable)) {
  test(`${method.info.name}: gradient of the full training graph matches finite differences`, async () => {
    const b = await loadBackbone(tinyP32);
    const o = parseOptions(method, method.info.name === 'tang' ? { dropout: 0 } : {});
    const setup = setUp(method, o, b);
    const params = setup.model.init(new Rng(5));
    const batch = 2;
    const rng = new Rng(9);
    const train = [
      { image: 'a', mos: 1, group: 'a', distortion: 'blur' },
      { image: 'b', mos: 2, group: 'b', distortion: 'jpeg' },
    ];
    const auxiliary = enabledAuxiliary(method, o, train);
    assert.equal(auxiliary.length, method.auxiliary?.length ?? 0, 'every auxiliary target is on');
    const c = b.weights.config;
    const data: TrainBatch = {
      image: Float32Array.from({ length: batch * (method.imageInput === 'features' ? c.embedDim : 3 * c.imageSize * c.imageSize) }, () =>
        rng.normal(),
      ),
      quality: Float32Array.from({ length: batch }, () => rng.uniform()),
      auxiliary: Object.fromEntries(
        auxiliary.map((t) => {
          const info = { mosRange: [0, 5] } as Parameters<typeof t.read>[1];
          const values = new Float32Array(batch * t.size);
          train.forEach((it, j) => {
            const v = t.read({ ...it, extra: { alignment: rng.uniform() * 5 } }, info)!;
            if (typeof v === 'number') values[j] = v;
            else values.set(v, j * t.size);
          });
          return [t.name, { values, mask: new Float32Array(batch).fill(1) }];
        }),
      ),
    };
    const step = await TrainStep.create(setup, params, batch, auxiliary, { threads: 1 });
    const res = await step.run(data, params, new Rng(0));
    const lossAt = (): Promise<number> => step.loss(data, params, new Rng(0));
    /** The smallest relative gap between the slope `grad` claims for `name` and central differences. */
    const gap = async (name: string, grad: Float32Array): Promise<{ rel: number; analytic: number; numeric: number }> => {
      const x = params.get(name)!.data;
      const orig = x.slice();
      const r = new Rng(11);
      const v = Float64Array.from(grad, (g) => g * (0.5 + r.uniform()));
      const norm = l2(v);
      let analytic = 0;
      for (let i = 0; i < v.length; i++) {
        v[i] = v[i]! / norm;
        analytic += grad[i]! * v[i]!;
      }
      let best = { rel: Infinity, analytic, numeric: NaN };
      for (const h of [5e-4, 1e-3, 3e-3, 1e-2, 3e-2]) {
        for (let i = 0; i < x.length; i++) x[i] = orig[i]! + h * v[i]!;
        const fp = await lossAt();
        for (let i = 0; i < x.length; i++) x[i] = orig[i]! - h * v[i]!;
        const fm = await lossAt();
        x.set(orig);
        const numeric = (fp - fm) / (2 * h);
        const rel = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric), Math.abs(analytic));
        if (rel < best.rel) best = { rel, analytic, numeric };
      }
      return best;
    };
    let checked = 0;
    for (const name of step.trained) {
      const grad = res.grads.get(name)!;
      if (l2(grad) < 1e-4) continue;
      const g = await gap(name, grad);
      checked++;
      assert.ok(g.rel < 1e-2, `${method.info.name} ${name}: slope along g⊙r analytic ${g.analytic}, numeric ${g.numeric}`);
    }
    assert.ok(checked >= Math.min(2, step.trained.length), `${method.info.name}: only ${checked} parameter tensors had a usable gradient`);
    // negative controls on the first tensor: wrong gradients must be caught
    const first = step.trained[0]!;
    const grad = res.grads.get(first)!;
    assert.ok(
      (
        await gap(
          first,
          grad.map((g) => g * 1.05),
        )
      ).rel >= 1e-2,
      `${first}: a gradient 5% too large passed`,
    );
    const flip = new Rng(13);
    assert.ok(
      (
        await gap(
          first,
          grad.map((g) => (flip.uniform() < 0.5 ? -g : g)),
        )
      ).rel >= 1e-2,
      `${first}: a gradient with flipped signs passed`,
    );
    await step.release();
  });
}

test('Fu: about 14.4 M trainable parameters at ViT-B/32 shapes', async () => {
  const { archConfig } = await import('../src/clip/config.js');
  const { randomClipWeights } = await import('../src/clip/weights.js');
  const { ClipTokenizer } = await import('../src/clip/tokenizer.js');
  const c = { ...archConfig('vit-b-32'), textLayers: 12, vocabSize: 49408 };
  // only the shapes matter: tiny random tables keep this test light
  const w = randomClipWeights({ ...c, visionLayers: 12 }, 0, { text: true });
  const fu = getMethod('fu');
  const params = fu.build(parseOptions(fu, {}), { weights: w, tokenizer: ClipTokenizer.default() }).init(new Rng(0));
  const total = [...params.values()].reduce((a, t) => a + t.data.length, 0);
  assert.ok(Math.abs(total - 14.4e6) < 0.1e6, `fu has ${total} parameters`);
  const tang = getMethod('tang');
  const tp = tang.build(parseOptions(tang, {}), { weights: w, tokenizer: ClipTokenizer.default() }).init(new Rng(0));
  const head = [...tp].filter(([k]) => k.startsWith('head.')).reduce((a, [, t]) => a + t.data.length, 0);
  assert.ok(Math.abs(head - 1.84e6) < 0.01e6, `tang's head has ${head} parameters`);
});

test('createMetric checks its options as the command line does, before any file is read; a closed metric says so', async () => {
  const expectRefused = async (opts: Record<string, unknown>, re: RegExp): Promise<void> => {
    await assert.rejects(createMetric('clip-iqa', { model: tinyP32, ...opts }), re, JSON.stringify(opts));
  };
  await expectRefused({ device: 'gpu' }, /^TypeError: createMetric: device "gpu" is not one of cpu, cuda, webgpu$/);
  for (const batchSize of [-1, 0, 1.5, 'x', 1e9])
    await expectRefused(
      { batchSize },
      new RegExp(`createMetric: batchSize ${JSON.stringify(batchSize)} is not a whole number from 1 to ${MAX_BATCH}`),
    );
  for (const threads of [-1, 0, 1.5, 'x', 1e9])
    await expectRefused({ threads }, /createMetric: threads .* is not a whole number from 1 to \d+/);
  // a slip would be ignored silently: refused, with the name meant
  await expectRefused({ batch: 4 }, /createMetric: unknown option batch \(did you mean batchSize\?\); the options are model, checkpoint/);
  await expectRefused({ options: {} }, /did you mean methodOptions\?/);
  // a string where a boolean is meant would be taken as true
  await expectRefused({ applyExifOrientation: 'false' }, /createMetric: option applyExifOrientation must be true or false; got a string/);
  await expectRefused({ allowExtraTensors: 1 }, /createMetric: option allowExtraTensors must be true or false; got a number/);
  // the same check (not a copy) for a model that does not exist: the device is refused first
  await assert.rejects(createMetric('clip-iqa', { model: '/nonexistent', device: 'gpu' as never }), /device "gpu"/);
  if (cudaProviderProblem() !== null) {
    // a provider missing here fails at creation, not at the first score
    await assert.rejects(
      createMetric('clip-iqa', { model: tinyP32, device: 'cuda' }),
      /^Error: createMetric: device cuda: .*CUDA provider/,
    );
  }
  if (webgpuProblem() !== null)
    await assert.rejects(
      createMetric('clip-iqa', { model: tinyP32, device: 'webgpu' }),
      /^Error: createMetric: device webgpu: no WebGPU adapter/,
    );
  // more threads than cores: allowed, and told
  const warnings: string[] = [];
  const cores = availableParallelism();
  const metric = await createMetric('clip-iqa', { model: tinyP32, threads: cores + 1, onWarning: (w) => warnings.push(w) });
  assert.deepEqual(warnings, [
    `createMetric: threads ${cores + 1} is more than the ${cores} core(s) here: the threads share cores and wait for each other, which is slower than ${cores}`,
  ]);
  const img = { width: 48, height: 40, data: new Uint8Array(48 * 40 * 3).fill(128) };
  assert.ok(Number.isFinite(await metric.score(img)));
  await metric.close();
  await metric.close(); // twice is harmless
  await assert.rejects(
    metric.score(img),
    /^Error: score: this metric was closed \(close\(\) frees its sessions\); make another with createMetric$/,
  );
  await assert.rejects(metric.scoreBatch([img]), /scoreBatch: this metric was closed/);
  await assert.rejects(metric.scoreFiles(['a.jpg']).next(), /scoreFiles: this metric was closed/);
});

test('method options are read once, by the schema: --option values arrive as typed (initPhrase=0.50 stays "0.50")', async () => {
  const given = ['nCtx=1', 'initPhrase=0.50'].reduce<Record<string, string> | undefined>((acc, kv) => collectKeyValue(kv, acc), undefined);
  assert.deepEqual(given, { nCtx: '1', initPhrase: '0.50' });
  const o = parseOptions(tangMethod, given);
  assert.equal(o.initPhrase, '0.50');
  assert.equal(o.nCtx, 1);
  // allowUntrained is read as the schema reads a boolean: "false" from the command line is false
  await assert.rejects(
    createMetric('tang', { model: tinyP32, methodOptions: { allowUntrained: 'false' } }),
    /tang needs a trained checkpoint/,
  );
  await assert.rejects(
    createMetric('tang', { model: tinyP32, methodOptions: { allowUntrained: 'yes' } }),
    /createMetric: option allowUntrained = "yes", must be true or false/,
  );
});

test('the tokenizer of a model: one rule for a single weights file (the shipped vocabulary) and a folder (its own files)', () => {
  const file = join(tinyP32, 'openai.safetensors');
  assert.deepEqual(ClipTokenizer.forModel(file).encode('a good photo'), ClipTokenizer.default().encode('a good photo'));
  assert.deepEqual(ClipTokenizer.forModel(tinyP32).encode('a good photo'), ClipTokenizer.fromFolder(tinyP32).encode('a good photo'));
});
