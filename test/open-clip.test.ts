/**
 * open_clip's `open_clip_config.json`: what it says beyond the tensors (QuickGELU or GELU, the heads) is built,
 * checked against a float64 forward pass written here; what disagrees with the tensors or what the encoders
 * cannot build is refused by name; and a local snapshot of a timm repo chooses the files the hub path chooses.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../src/graph/graph.js';
import { CompiledGraph } from '../src/graph/runtime.js';
import { SafeTensorsFile, writeSafetensors } from '../src/clip/safetensors.js';
import { WeightError, loadClipWeights, type ClipWeights, type LayerWeights, type VitWeights } from '../src/clip/weights.js';
import { WeightBank, visionEncoder } from '../src/clip/encoders.js';
import { repoCacheDir, resolveModel } from '../src/clip/hub.js';
import { loadBackbone } from '../src/methods/index.js';
import { startHub } from './helpers/fake-hub.js';
import { sharedDir } from './helpers/shared.js';

const ref = join(sharedDir(), 'reference');
const P32 = join(ref, 'tiny-vit-p32');
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'promptiqa-openclip-'));
  dirs.push(d);
  return d;
}

/** open_clip's config of the tiny p32 CLIP (models.json), as open_clip writes it for OpenAI's weights */
function tinyConfig(): {
  model_cfg: Record<string, unknown> & { vision_cfg: Record<string, unknown>; text_cfg: Record<string, unknown> };
} & Record<string, unknown> {
  return {
    model_cfg: {
      quick_gelu: true,
      embed_dim: 64,
      vision_cfg: { image_size: 224, layers: 2, width: 128, patch_size: 32 },
      text_cfg: { context_length: 77, vocab_size: 49408, width: 64, heads: 1, layers: 2 },
    },
    preprocess_cfg: {
      mean: [0.48145466, 0.4578275, 0.40821073],
      std: [0.26862954, 0.26130258, 0.27577711],
      interpolation: 'bicubic',
      resize_mode: 'shortest',
    },
  };
}

const WEIGHTS = join(P32, 'openai.safetensors');
const shared = tempDir();
const weightsCopy = join(shared, 'open_clip_model.safetensors');
copyFileSync(WEIGHTS, weightsCopy);

/** a folder laid out as an open_clip repo: the tiny CLIP's state dict and `config` as open_clip_config.json */
function openClipRepo(config: unknown): string {
  const dir = tempDir();
  copyFileSync(weightsCopy, join(dir, 'open_clip_model.safetensors'));
  writeFileSync(join(dir, 'open_clip_config.json'), typeof config === 'string' ? config : JSON.stringify(config));
  return dir;
}

// ---------------------------------------------------------------------------------------------------------
// A float64 forward pass of OpenAI's VisionTransformer (clip/model.py), written out plainly, to check the graph

function layerNorm(x: Float64Array, [g, b]: [Float32Array, Float32Array], eps = 1e-5): Float64Array {
  let mean = 0;
  for (const v of x) mean += v;
  mean /= x.length;
  let variance = 0;
  for (const v of x) variance += (v - mean) ** 2;
  variance /= x.length;
  const s = 1 / Math.sqrt(variance + eps);
  return x.map((v, i) => (v - mean) * s * g[i]! + b[i]!);
}

/** x [in] times w [in, out] (weights are stored transposed) plus b */
function linear(x: Float64Array, w: Float32Array, b: Float32Array | null, out: number): Float64Array {
  const y = new Float64Array(out);
  for (let i = 0; i < x.length; i++) {
    const xi = x[i]!;
    for (let j = 0; j < out; j++) y[j] = y[j]! + xi * w[i * out + j]!;
  }
  if (b) for (let j = 0; j < out; j++) y[j] = y[j]! + b[j]!;
  return y;
}

function erf(x: number): number {
  // Abramowitz–Stegun 7.1.26 is too coarse for 1e-4 after two layers: use the series / continued fraction
  const t = Math.abs(x);
  if (t < 3) {
    let sum = t;
    let term = t;
    for (let n = 1; n < 60; n++) {
      term *= (-t * t) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (t + f);
  return Math.sign(x) * (1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f));
}

const ACT = {
  quick_gelu: (v: number) => v / (1 + Math.exp(-1.702 * v)),
  gelu: (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
};

function block(x: Float64Array[], l: LayerWeights, w: number, heads: number, act: (v: number) => number): Float64Array[] {
  const n = x.length;
  const dh = w / heads;
  const qkv = x.map((t) => linear(layerNorm(t, l.ln1), l.qkvW, l.qkvB, 3 * w));
  const attended = x.map(() => new Float64Array(w));
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < n; i++) {
      const scores = new Float64Array(n);
      for (let j = 0; j < n; j++) {
        let dot = 0;
        for (let d = 0; d < dh; d++) dot += qkv[i]![h * dh + d]! * qkv[j]![w + h * dh + d]!;
        scores[j] = dot / Math.sqrt(dh);
      }
      const max = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - max));
      const total = e.reduce((a, b) => a + b, 0);
      const out = attended[i]!;
      for (let j = 0; j < n; j++)
        for (let d = 0; d < dh; d++) out[h * dh + d] = out[h * dh + d]! + (e[j]! / total) * qkv[j]![2 * w + h * dh + d]!;
    }
  }
  const mlp = l.fcB.length;
  return x.map((t, i) => {
    const a = linear(attended[i]!, l.outW, l.outB, w).map((v, k) => v + t[k]!);
    const hidden = linear(layerNorm(a, l.ln2), l.fcW, l.fcB, mlp).map(act);
    return linear(hidden, l.projW, l.projB, w).map((v, k) => v + a[k]!);
  });
}

/** the image embedding of one [3, S, S] image, with `heads` and `act` as given (not as the config says) */
function referenceImageEmbed(weights: ClipWeights, pixels: Float32Array, heads: number, act: keyof typeof ACT): Float64Array {
  const c = weights.config;
  const v = weights.vision as VitWeights;
  const [w, p, S] = [c.visionWidth, c.patchSize, c.imageSize];
  const grid = S / p;
  let x: Float64Array[] = [Float64Array.from(v.classEmbedding)];
  for (let gy = 0; gy < grid; gy++)
    for (let gx = 0; gx < grid; gx++) {
      const patch = new Float64Array(3 * p * p);
      for (let ch = 0; ch < 3; ch++)
        for (let y = 0; y < p; y++)
          for (let xx = 0; xx < p; xx++) patch[(ch * p + y) * p + xx] = pixels[(ch * S + gy * p + y) * S + gx * p + xx]!;
      const token = new Float64Array(w);
      for (let o = 0; o < w; o++) {
        let sum = 0;
        for (let k = 0; k < patch.length; k++) sum += v.patchW[o * patch.length + k]! * patch[k]!;
        token[o] = sum;
      }
      x.push(token);
    }
  x = x.map((t, i) =>
    layerNorm(
      t.map((val, k) => val + v.positionalEmbedding[i * w + k]!),
      v.lnPre,
    ),
  );
  for (const l of v.layers) x = block(x, l, w, heads, ACT[act]);
  return linear(layerNorm(x[0]!, v.lnPost), v.projection, null, c.embedDim);
}

const pixelsFile = SafeTensorsFile.open(join(ref, 'preprocess.safetensors'));
const allPixels = pixelsFile.readFloat32('pixel_values');
const image0 = allPixels.data.subarray(0, 3 * 224 * 224);

/** the graph's image embedding of image 0 with the configuration the weights carry */
async function graphImageEmbed(weights: ClipWeights): Promise<Float32Array> {
  const g = new Graph('open-clip');
  const px = g.input('pixels', [1, 3, 224, 224]);
  g.output('embeds', visionEncoder(new WeightBank(g), weights, px).embeds);
  const compiled = await CompiledGraph.create(g);
  try {
    return (await compiled.run({ pixels: image0 })).embeds!.data as Float32Array;
  } finally {
    await compiled.release();
  }
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

// ---------------------------------------------------------------------------------------------------------

test('the float64 reference written here equals the reference CLIP (QuickGELU, 2 heads), and GELU or 4 heads move it', async () => {
  const weights = await loadClipWeights(WEIGHTS);
  const expected = SafeTensorsFile.open(join(P32, 'outputs.safetensors')).readFloat32('image_embeds').data.subarray(0, 64);
  const mine = referenceImageEmbed(weights, image0, 2, 'quick_gelu');
  assert.ok(maxAbsDiff(mine, expected) < 1e-4, `reference vs outputs.safetensors: ${maxAbsDiff(mine, expected)}`);
  // negative controls: each setting the config decides changes the features by far more than the tolerance
  assert.ok(maxAbsDiff(referenceImageEmbed(weights, image0, 2, 'gelu'), expected) > 1e-3);
  assert.ok(maxAbsDiff(referenceImageEmbed(weights, image0, 4, 'quick_gelu'), expected) > 1e-3);
});

describe("open_clip_config.json beside the weights sets the activation and the heads, as open_clip's CLIP(**model_cfg) builds them", () => {
  const cases: Array<
    [string, (c: ReturnType<typeof tinyConfig>) => void, { act: keyof typeof ACT; heads: number; textHeads: number; id: string }]
  > = [
    ["OpenAI's (quick_gelu true, head_width 64 by default)", () => {}, { act: 'quick_gelu', heads: 2, textHeads: 1, id: '' }],
    ['quick_gelu false: GELU', (c) => (c.model_cfg.quick_gelu = false), { act: 'gelu', heads: 2, textHeads: 1, id: '+gelu' }],
    [
      "quick_gelu absent: GELU, open_clip's default",
      (c) => delete c.model_cfg.quick_gelu,
      { act: 'gelu', heads: 2, textHeads: 1, id: '+gelu' },
    ],
    [
      'head_width 32: 128 / 32 = 4 heads; text heads 2',
      (c) => {
        c.model_cfg.vision_cfg.head_width = 32;
        c.model_cfg.text_cfg.heads = 2;
      },
      { act: 'quick_gelu', heads: 4, textHeads: 2, id: '+vision_heads=4+text_heads=2' },
    ],
  ];
  for (const [what, edit, want] of cases) {
    test(what, async () => {
      const config = tinyConfig();
      edit(config);
      const weights = await loadClipWeights(openClipRepo(config));
      const plain = await loadClipWeights(WEIGHTS);
      assert.equal(weights.config.activation, want.act);
      assert.equal(weights.config.visionHeads, want.heads);
      assert.equal(weights.config.textHeads, want.textHeads);
      // weights built otherwise are other weights: caches and checkpoints keyed by the id must not mix them
      assert.equal(weights.id, plain.id + want.id);
      const graph = await graphImageEmbed(weights);
      const expected = referenceImageEmbed(weights, image0, want.heads, want.act);
      assert.ok(maxAbsDiff(graph, expected) < 1e-4, `graph vs float64 reference: ${maxAbsDiff(graph, expected)}`);
    });
  }
});

describe('a config that disagrees with the tensors, or asks for what the encoders cannot build, is refused naming the field', () => {
  const cases: Array<[string, (c: ReturnType<typeof tinyConfig>) => void, RegExp]> = [
    ['layers', (c) => (c.model_cfg.vision_cfg.layers = 3), /model_cfg\.vision_cfg\.layers is 3, but the weights have 2/],
    ['width', (c) => (c.model_cfg.vision_cfg.width = 768), /model_cfg\.vision_cfg\.width is 768, but the weights have 128/],
    ['patch_size', (c) => (c.model_cfg.vision_cfg.patch_size = 16), /model_cfg\.vision_cfg\.patch_size is 16, but the weights have 32/],
    ['image_size', (c) => (c.model_cfg.vision_cfg.image_size = 336), /model_cfg\.vision_cfg\.image_size is 336, but the weights have 224/],
    ['a ResNet layout', (c) => (c.model_cfg.vision_cfg.layers = [3, 4, 6, 3]), /model_cfg\.vision_cfg\.layers is \[3,4,6,3\] \(a ResNet\)/],
    [
      'mlp_ratio',
      (c) => (c.model_cfg.vision_cfg.mlp_ratio = 2.6667),
      /model_cfg\.vision_cfg\.mlp_ratio is 2\.6667, but the weights have an MLP of 512/,
    ],
    [
      'head_width',
      (c) => (c.model_cfg.vision_cfg.head_width = 48),
      /model_cfg\.vision_cfg\.head_width is 48, which does not divide the width 128/,
    ],
    ['embed_dim', (c) => (c.model_cfg.embed_dim = 512), /model_cfg\.embed_dim is 512, but the weights have 64/],
    ['text width', (c) => (c.model_cfg.text_cfg.width = 512), /model_cfg\.text_cfg\.width is 512, but the weights have 64/],
    ['text heads', (c) => (c.model_cfg.text_cfg.heads = 3), /model_cfg\.text_cfg\.heads is 3, which does not divide the width 64/],
    [
      'a string for a number',
      (c) => (c.model_cfg.text_cfg.layers = '2'),
      /model_cfg\.text_cfg\.layers must be a positive integer, got "2"/,
    ],
    ['quick_gelu not a boolean', (c) => (c.model_cfg.quick_gelu = 'yes'), /model_cfg\.quick_gelu must be true or false/],
    [
      'a timm tower',
      (c) => (c.model_cfg.vision_cfg.timm_model_name = 'vit_base_patch32_224'),
      /model_cfg\.vision_cfg\.timm_model_name .*a timm image tower, which promptiqa cannot build yet/,
    ],
    [
      'an attentional pooler',
      (c) => (c.model_cfg.vision_cfg.attentional_pool = true),
      /vision_cfg\.attentional_pool .*an attentional pooler/,
    ],
    ['a custom pool', (c) => (c.model_cfg.vision_cfg.pool_type = 'avg'), /vision_cfg\.pool_type is "avg": another pool/],
    ['non-default norms', (c) => (c.model_cfg.vision_cfg.norm_kwargs = { eps: 1e-6 }), /vision_cfg\.norm_kwargs .*LayerNorm arguments/],
    ['layer scale', (c) => (c.model_cfg.text_cfg.ls_init_value = 1e-5), /text_cfg\.ls_init_value .*layer scale/],
    [
      'a Hugging Face text tower',
      (c) => (c.model_cfg.text_cfg.hf_model_name = 'xlm-roberta-base'),
      /text_cfg\.hf_model_name .*Hugging Face text tower/,
    ],
    ['SigLIP', (c) => (c.model_cfg.init_logit_bias = -10), /model_cfg\.init_logit_bias .*SigLIP/],
    [
      'an unknown field',
      (c) => (c.model_cfg.vision_cfg.act_layer = 'silu'),
      /model_cfg\.vision_cfg\.act_layer is a field promptiqa does not know/,
    ],
    [
      'another normalisation',
      (c) => ((c.preprocess_cfg as { mean: number[] }).mean = [0.5, 0.5, 0.5]),
      /preprocess_cfg\.mean is \[0\.5,0\.5,0\.5\]: another normalisation/,
    ],
  ];
  for (const [what, edit, message] of cases) {
    test(what, async () => {
      const config = tinyConfig();
      edit(config);
      const dir = openClipRepo(config);
      await assert.rejects(loadClipWeights(dir), (err: Error) => {
        assert.ok(err instanceof WeightError);
        assert.match(err.message, new RegExp(`^${join(dir, 'open_clip_config.json').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: `));
        assert.match(err.message, message);
        return true;
      });
    });
  }
  test('not JSON, or no model_cfg', async () => {
    await assert.rejects(loadClipWeights(openClipRepo('{"model_cfg": ')), /open_clip_config\.json: not valid JSON/);
    await assert.rejects(
      loadClipWeights(openClipRepo({ preprocess_cfg: {} })),
      /open_clip_config\.json: model_cfg is missing or not an object/,
    );
  });
});

describe("a local snapshot of a timm repo chooses the files the hub chooses: open_clip's, not timm's image tower", () => {
  const timmConfig = JSON.stringify({ architecture: 'vit_base_patch32_clip_224', num_classes: 0, pretrained_cfg: { tag: 'openai' } });
  const config = tinyConfig();
  config.model_cfg.vision_cfg.head_width = 32; // something only the config says, to see that it was read
  const files = new Map<string, Buffer>([
    ['config.json', Buffer.from(timmConfig)],
    ['open_clip_model.safetensors', readFileSync(WEIGHTS)],
    ['open_clip_config.json', Buffer.from(JSON.stringify(config))],
  ]);
  // timm's image tower, under timm's names
  const tower = join(tempDir(), 'model.safetensors');
  writeSafetensors(tower, { 'patch_embed.proj.weight': { shape: [4, 3, 2, 2], data: new Float32Array(48).fill(0.5) } });
  files.set('model.safetensors', readFileSync(tower));

  test('a folder', async () => {
    const dir = tempDir();
    for (const [name, body] of files) writeFileSync(join(dir, name), body);
    const weights = await loadClipWeights(dir);
    assert.equal(weights.layout, 'openai');
    assert.equal(weights.config.visionHeads, 4, 'open_clip_config.json was read');
    const backbone = await loadBackbone(dir);
    assert.equal(backbone.weights.id, weights.id);

    // the same snapshot from the hub: the same file, the same weights
    const hub = await startHub({ 'tiny/timm-clip': { commit: 'be'.padEnd(40, '0'), files } });
    const cache = tempDir();
    try {
      const found = await resolveModel('tiny/timm-clip', {
        endpoint: hub.endpoint,
        cacheDir: cache,
        token: '',
        offline: false,
        progress: false,
      });
      assert.equal(found, join(repoCacheDir(cache, 'tiny/timm-clip'), 'snapshots', 'be'.padEnd(40, '0'), 'open_clip_model.safetensors'));
      const fromHub = await loadClipWeights(found);
      assert.equal(fromHub.id, weights.id);
      assert.deepEqual(fromHub.config, weights.config);
    } finally {
      await hub.close();
    }
  });

  test("only open_clip's PyTorch file; neither: timm's tower is refused by name", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'config.json'), timmConfig);
    writeFileSync(join(dir, 'model.safetensors'), files.get('model.safetensors')!);
    await assert.rejects(loadClipWeights(dir), (err: Error) => {
      assert.ok(err.message.startsWith(join(dir, 'model.safetensors')), err.message);
      assert.match(err.message, /not a CLIP checkpoint/);
      return true;
    });
    copyFileSync(join(ref, 'tiny-rn', 'openai-state-dict.pt'), join(dir, 'open_clip_pytorch_model.bin'));
    const weights = await loadClipWeights(dir);
    assert.ok(weights.config.resnet, 'the ResNet CLIP of open_clip_pytorch_model.bin');
  });

  test("a folder without config.json keeps its order: model.safetensors (Hugging Face), else open_clip's", async () => {
    const dir = tempDir();
    copyFileSync(weightsCopy, join(dir, 'open_clip_model.safetensors'));
    assert.equal((await loadClipWeights(dir)).layout, 'openai');
    copyFileSync(join(P32, 'model.safetensors'), join(dir, 'model.safetensors'));
    assert.equal((await loadClipWeights(dir)).layout, 'hf');
  });
});

test("a ResNet CLIP's config: the pool's heads from head_width (32 × width / head_width), its stages checked", async () => {
  const rn = (vision: Record<string, unknown>): string => {
    const dir = tempDir();
    copyFileSync(join(ref, 'tiny-rn', 'openai.safetensors'), join(dir, 'open_clip_model.safetensors'));
    const model_cfg = {
      quick_gelu: true,
      embed_dim: 64,
      vision_cfg: { image_size: 224, layers: [2, 1, 1, 1], width: 8, patch_size: null, ...vision },
      text_cfg: { context_length: 77, vocab_size: 49408, width: 64, heads: 1, layers: 2 },
    };
    writeFileSync(join(dir, 'open_clip_config.json'), JSON.stringify({ model_cfg }));
    return dir;
  };
  assert.equal((await loadClipWeights(rn({}))).config.visionHeads, 4, '256 channels / 64');
  assert.equal((await loadClipWeights(rn({ head_width: 32 }))).config.visionHeads, 8);
  await assert.rejects(
    loadClipWeights(rn({ layers: [3, 4, 6, 3] })),
    /vision_cfg\.layers is \[3,4,6,3\], but the weights have stages \[2,1,1,1\]/,
  );
  await assert.rejects(
    loadClipWeights(rn({ layers: 12 })),
    /vision_cfg\.layers is 12 \(a vision transformer\), but the weights are a ResNet CLIP/,
  );
  await assert.rejects(
    loadClipWeights(rn({ head_width: 48 })),
    /vision_cfg\.head_width is 48, which does not divide the attention pool's 256 channels/,
  );
});
