#!/usr/bin/env node
// A check anyone with a GPU can run after `npm run build`:
//
//   npm run gpu-check [webgpu|cuda] [REFERENCE_DIR]
//
// The same work on the CPU and on a GPU provider (webgpu by default, or the one named):
// 1. every registered method on the tiny reference CLIPs (REFERENCE_DIR, default ../shared/reference beside the
//    checkout; skipped, saying so, when it is not there): its scores on two images, and for a trainable method
//    the loss and every gradient of one training step;
// 2. full-size figures with random weights: image features of ViT-B/32 and RN50; a Fu training step (its loss and
//    gradients, then the speed of the step as the trainer takes it: the update in the graph, the state on the
//    device); and scoring a folder of JPEGs as `promptiqa score` does (decoding included), with tang on ViT-B/32.
// Prints the largest differences and the images per second of each; exits 1 when a difference passes its bound:
// scores and features 1e-4 absolute; the loss 1e-3 relative to itself, each gradient tensor 1e-3 relative to its
// largest magnitude. On a software adapter (Mesa's lavapipe: scripts/software-vulkan.sh) it checks the same, with
// the full-size figures at batch 2 and one timed run (some minutes); its speeds say nothing of a GPU's.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { archConfig } from '../dist/clip/config.js';
import { randomClipWeights } from '../dist/clip/weights.js';
import { imageFeatureGraph } from '../dist/clip/encoders.js';
import { ClipTokenizer } from '../dist/clip/tokenizer.js';
import { CompiledGraph, resolveDevice } from '../dist/graph/runtime.js';
import { webgpuAdapter } from '../dist/graph/webgpu.js';
import sharp from 'sharp';
import { METHODS, getMethod, loadBackbone, metricFor } from '../dist/methods/index.js';
import { parseOptions } from '../dist/methods/method.js';
import { TrainStep, setUp } from '../dist/methods/graphs.js';
import { GRADIENT_BOUND, SCORE_BOUND, compareOutputs, methodOutputs } from '../dist/bench/parity.js';
import { decodeImage } from '../dist/data/image.js';
import { crop } from '../dist/data/preprocess.js';
import { adam } from '../dist/train/optim.js';
import { ResidentTraining } from '../dist/train/resident.js';
import { Rng } from '../dist/util/rng.js';

const device = process.argv[2] ?? 'webgpu';
const reference = resolve(process.argv[3] ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'shared', 'reference'));
const { provider, note } = resolveDevice(device);
if (note) console.log(`note: ${note}`);
const software = provider === 'webgpu' && webgpuAdapter().kind === 'software';
const seconds = async (f, n = software ? 1 : 3) => {
  await f();
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await f();
  return Number(process.hrtime.bigint() - t) / 1e9 / n;
};
const rate = (x) => (x >= 10 ? x.toFixed(1) : x.toPrecision(2));
const maxAbs = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
let failed = false;
const report = (what, diff, bound, extra) => {
  const ok = diff <= bound;
  failed ||= !ok;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}: max diff ${diff.toExponential(2)} (bound ${bound})${extra ? `; ${extra}` : ''}`);
};
const reportStep = (what, d, extra) =>
  report(`${what} loss and gradients (relative; worst: ${d.worstGradient ?? 'loss'})`, Math.max(d.loss, d.gradient), GRADIENT_BOUND, extra);

// 1. every method on the tiny references: the tiny stand-in of its paper's backbone, two images cut small
if (existsSync(join(reference, 'tiny-vit-p32'))) {
  const tinyFor = (m) => {
    const name = m.info.defaultModel.toLowerCase();
    return join(reference, /resnet|rn50/.test(name) ? 'tiny-rn' : /patch16|vit-b-16|b16/.test(name) ? 'tiny-vit-p16' : 'tiny-vit-p32');
  };
  const [a, b] = await Promise.all(['wide_640x480.png', 'AttnGAN_normal_000.jpg'].map((f) => decodeImage(join(reference, 'images', f))));
  const images = [crop(a, 100, 80, 288, 240), crop(b, 40, 20, 240, 256)];
  const run = (p) => methodOutputs({ methods: METHODS, backbone: (m) => loadBackbone(tinyFor(m)), images, runtime: { provider: p }, batch: 2 });
  const cpu = await run('cpu');
  const gpu = await run(provider);
  for (const d of compareOutputs(cpu, gpu)) {
    const model = cpu.find((m) => m.method === d.method).model.split(/[\\/]/).pop();
    report(`${d.method} on ${model}: scores`, d.score, SCORE_BOUND);
    if (d.gradient !== undefined) reportStep(`${d.method} on ${model}: training step`, d);
    if (d.residentLoss !== undefined)
      report(`${d.method} on ${model}: three steps as the trainer takes them, losses (relative)`, d.residentLoss, GRADIENT_BOUND);
  }
} else {
  console.log(`skip every method on the tiny references: ${reference} is not there (give the reference folder as the second argument)`);
}

// 2. full-size, random weights
const featureRuns = software ? [['vit-b-32', 2], ['rn50', 2]] : [['vit-b-32', 8], ['vit-b-32', 64], ['rn50', 8]];
for (const [arch, batch] of featureRuns) {
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
  report(`${arch} features, batch ${batch}`, maxAbs(cpu.out, gpu.out), SCORE_BOUND, `${provider} ${rate(gpu.imgs)} img/s, cpu ${rate(cpu.imgs)} img/s`);
}

for (const batch of software ? [2] : [8, 64]) {
  const method = getMethod('fu');
  const o = parseOptions(method, {});
  const setup = setUp(method, o, { weights: randomClipWeights(archConfig('vit-b-32'), 2, { text: true }), tokenizer: ClipTokenizer.default(), model: 'random' });
  const params = setup.model.init(new Rng(4));
  const aux = method.auxiliary ?? [];
  const rng = new Rng(5);
  const data = {
    image: Float32Array.from({ length: batch * 3 * 224 * 224 }, () => rng.normal()),
    quality: Float32Array.from({ length: batch }, () => rng.uniform()),
    auxiliary: Object.fromEntries(aux.map((t) => [t.name, { values: Float32Array.from({ length: batch }, () => rng.uniform()) }])),
  };
  const step = async (p) => {
    const s = await TrainStep.create(setup, params, batch, aux, { provider: p });
    const r = await s.run(data, params, new Rng(0));
    const grads = Object.fromEntries(s.trained.map((n) => [n, r.grads.get(n)]));
    await s.release();
    // the trainer's step: loss, gradients and Adam's update in one run, parameters and buffers kept on the device
    const optimizer = adam({ lr: o.lr });
    const fused = await TrainStep.create(setup, params, batch, aux, { provider: p }, optimizer.update());
    const resident = ResidentTraining.create(fused, params, optimizer, { provider: p });
    const t = await seconds(() => resident.step(fused, data, new Rng(0)), software ? 1 : 3);
    resident.dispose();
    await fused.release();
    return { outputs: [{ method: 'fu', model: 'random', scores: [], step: { loss: r.loss, grads } }], imgs: batch / t };
  };
  const cpu = await step('cpu');
  const gpu = await step(provider);
  const [d] = compareOutputs(cpu.outputs, gpu.outputs);
  reportStep(`fu training step, ViT-B/32, batch ${batch}:`, d, `trainer's step ${provider} ${rate(gpu.imgs)} img/s, cpu ${rate(cpu.imgs)} img/s`);
}

// scoring a folder: decoding, views and the score graph, as `promptiqa score` runs them (Metric.scoreFiles)
{
  const count = software ? 8 : 512;
  const batch = software ? 4 : 64;
  const folder = mkdtempSync(join(tmpdir(), 'promptiqa-gpu-check-'));
  try {
    const rng = new Rng(6);
    const files = [];
    for (let i = 0; i < count; i++) {
      const raw = Buffer.from(Uint8Array.from({ length: 384 * 512 * 3 }, (_, k) => ((k >> 4) + i * 7 + rng.int(32)) & 255));
      const file = join(folder, `${String(i).padStart(4, '0')}.jpg`);
      await sharp(raw, { raw: { width: 512, height: 384, channels: 3 } }).jpeg({ quality: 90 }).toFile(file);
      files.push(file);
    }
    const method = getMethod('tang');
    const setup = setUp(method, parseOptions(method, {}), { weights: randomClipWeights(archConfig('vit-b-32'), 7, { text: true }), tokenizer: ClipTokenizer.default(), model: 'random' });
    const params = setup.model.init(new Rng(8));
    const scoreAll = async (p) => {
      const metric = metricFor(setup, params, { provider: p }, batch);
      const scores = [];
      const timed = async () => {
        scores.length = 0;
        for await (const r of metric.scoreFiles(files)) scores.push('score' in r ? r.score : NaN);
      };
      const t = await seconds(timed, 1);
      await metric.close();
      return { scores: [...scores], imgs: count / t };
    };
    const cpu = await scoreAll('cpu');
    const gpu = await scoreAll(provider);
    report(`promptiqa score on a folder of ${count} JPEGs (512x384), tang on ViT-B/32, batch ${batch}`, maxAbs(cpu.scores, gpu.scores), SCORE_BOUND, `${provider} ${rate(gpu.imgs)} img/s, cpu ${rate(cpu.imgs)} img/s, decoding included`);
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}
process.exit(failed ? 1 : 0);
