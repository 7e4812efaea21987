#!/usr/bin/env node
// A check anyone with a GPU can run after `npm run build`: the same graphs on the CPU and on a GPU provider
// (webgpu by default, or the one named as the first argument), with random full-size weights: image features of
// ViT-B/32 and RN50, and a Fu training step (loss and every gradient). Prints the largest differences and
// the images per second of each; exits 1 when a difference passes its bound (1e-4 for features, 1e-3 relative for
// gradients).
import { archConfig } from '../dist/clip/config.js';
import { randomClipWeights } from '../dist/clip/weights.js';
import { imageFeatureGraph } from '../dist/clip/encoders.js';
import { ClipTokenizer } from '../dist/clip/tokenizer.js';
import { CompiledGraph, resolveDevice } from '../dist/graph/runtime.js';
import { getMethod } from '../dist/methods/index.js';
import { enabledAuxiliary, parseOptions } from '../dist/methods/method.js';
import { TrainStep, setUp } from '../dist/methods/graphs.js';
import { Rng } from '../dist/util/rng.js';

const device = process.argv[2] ?? 'webgpu';
const { provider } = resolveDevice(device);
const seconds = async (f, n = 3) => {
  await f();
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await f();
  return Number(process.hrtime.bigint() - t) / 1e9 / n;
};
const maxAbs = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
let failed = false;
const report = (what, diff, bound, extra) => {
  const ok = diff <= bound;
  failed ||= !ok;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}: max diff ${diff.toExponential(2)} (bound ${bound})${extra ? `; ${extra}` : ''}`);
};

for (const [arch, batch] of [['vit-b-32', 8], ['vit-b-32', 64], ['rn50', 8]]) {
  const weights = randomClipWeights(archConfig(arch), 1);
  const size = weights.config.imageSize;
  const rng = new Rng(3);
  const pixels = Float32Array.from({ length: batch * 3 * size * size }, () => rng.normal());
  const run = async (p) => {
    const g = await CompiledGraph.create(imageFeatureGraph(weights, batch), { provider: p });
    const out = (await g.run({ pixels })).features.data;
    const t = await seconds(() => g.run({ pixels }));
    await g.release();
    return { out, imgs: batch / t };
  };
  const cpu = await run('cpu');
  const gpu = await run(provider);
  report(`${arch} features, batch ${batch}`, maxAbs(cpu.out, gpu.out), 1e-4, `${provider} ${gpu.imgs.toFixed(1)} img/s, cpu ${cpu.imgs.toFixed(1)} img/s`);
}

for (const batch of [8, 64]) {
  const method = getMethod('fu');
  const o = parseOptions(method, {});
  const setup = setUp(method, o, { weights: randomClipWeights(archConfig('vit-b-32'), 2, { text: true }), tokenizer: ClipTokenizer.default(), model: 'random' });
  const params = setup.model.init(new Rng(4));
  const aux = enabledAuxiliary(method, o, []);
  const rng = new Rng(5);
  const data = {
    image: Float32Array.from({ length: batch * 3 * 224 * 224 }, () => rng.normal()),
    quality: Float32Array.from({ length: batch }, () => rng.uniform()),
    auxiliary: Object.fromEntries(aux.map((t) => [t.name, { values: Float32Array.from({ length: batch }, () => rng.uniform()) }])),
  };
  const step = async (p) => {
    const s = await TrainStep.create(setup, params, batch, aux, { provider: p });
    const r = await s.run(data, params, new Rng(0));
    const t = await seconds(() => s.run(data, params, new Rng(0)), 2);
    await s.release();
    return { ...r, imgs: batch / t };
  };
  const cpu = await step('cpu');
  const gpu = await step(provider);
  let worst = Math.abs(cpu.loss - gpu.loss) / Math.abs(cpu.loss);
  for (const [k, g] of cpu.grads) {
    const h = gpu.grads.get(k);
    const norm = Math.sqrt(g.reduce((a, v) => a + v * v, 0)) || 1;
    worst = Math.max(worst, Math.sqrt(g.reduce((a, v, i) => a + (v - h[i]) ** 2, 0)) / norm);
  }
  report(`fu training step, batch ${batch} (loss, gradients: relative)`, worst, 1e-3, `${provider} ${gpu.imgs.toFixed(1)} img/s, cpu ${cpu.imgs.toFixed(1)} img/s`);
}
process.exit(failed ? 1 : 0);
