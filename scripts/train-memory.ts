/**
 * Peak memory (and speed) of a training run at full size, without a full-size weights file: random CLIP
 * weights of an architecture (`randomClipWeights`) are written once, in OpenAI's state-dict layout, to a
 * safetensors file in a temporary folder, and a child process trains on it through the same `train` as
 * the command line, then prints its peak resident set size and its training images per second as JSON.
 *
 *   node --import tsx scripts/train-memory.ts --root DIR [--dataset agiqa-3k] [--method tang] [--arch vit-b-16]
 *       [--limit 300] [--batch 32] [--epochs 1] [--threads N]
 *
 * A figure, not a test: the speed depends on the machine and on what else runs on it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { archConfig } from '../src/clip/config.js';
import { randomClipWeights, transpose2d, type ClipWeights, type LayerWeights } from '../src/clip/weights.js';
import { writeSafetensors } from '../src/clip/safetensors.js';
import type { HostTensor } from '../src/graph/tensor.js';
import { train } from '../src/train/index.js';

const { values: args } = parseArgs({
  options: {
    root: { type: 'string' },
    dataset: { type: 'string', default: 'agiqa-3k' },
    method: { type: 'string', default: 'tang' },
    arch: { type: 'string', default: 'vit-b-16' },
    limit: { type: 'string', default: '300' },
    batch: { type: 'string', default: '32' },
    epochs: { type: 'string', default: '1' },
    threads: { type: 'string' },
    // internal: the child that trains
    model: { type: 'string' },
    out: { type: 'string' },
  },
});

/** A ViT CLIP's weights under OpenAI's state-dict names (what `loadClipWeights` reads back). */
function openAiTensors(w: ClipWeights): Record<string, HostTensor> {
  const c = w.config;
  if (w.vision.kind !== 'vit') throw new Error('train-memory: only ViT architectures are written');
  const v = w.vision;
  const t: Record<string, HostTensor> = {};
  const put = (name: string, data: Float32Array, shape: number[]): void => {
    t[name] = { data, shape };
  };
  const layer = (p: string, l: LayerWeights, width: number, mlp: number): void => {
    put(`${p}.ln_1.weight`, l.ln1[0], [width]);
    put(`${p}.ln_1.bias`, l.ln1[1], [width]);
    // the weights hold [in, out] matrices; torch's Linear keeps [out, in]
    put(`${p}.attn.in_proj_weight`, transpose2d(l.qkvW, width, 3 * width), [3 * width, width]);
    put(`${p}.attn.in_proj_bias`, l.qkvB, [3 * width]);
    put(`${p}.attn.out_proj.weight`, transpose2d(l.outW, width, width), [width, width]);
    put(`${p}.attn.out_proj.bias`, l.outB, [width]);
    put(`${p}.ln_2.weight`, l.ln2[0], [width]);
    put(`${p}.ln_2.bias`, l.ln2[1], [width]);
    put(`${p}.mlp.c_fc.weight`, transpose2d(l.fcW, width, mlp), [mlp, width]);
    put(`${p}.mlp.c_fc.bias`, l.fcB, [mlp]);
    put(`${p}.mlp.c_proj.weight`, transpose2d(l.projW, mlp, width), [width, mlp]);
    put(`${p}.mlp.c_proj.bias`, l.projB, [width]);
  };
  const vw = c.visionWidth;
  const npos = (c.imageSize / c.patchSize) ** 2 + 1;
  put('visual.conv1.weight', v.patchW, [vw, 3, c.patchSize, c.patchSize]);
  put('visual.class_embedding', v.classEmbedding, [vw]);
  put('visual.positional_embedding', v.positionalEmbedding, [npos, vw]);
  put('visual.ln_pre.weight', v.lnPre[0], [vw]);
  put('visual.ln_pre.bias', v.lnPre[1], [vw]);
  v.layers.forEach((l, i) => layer(`visual.transformer.resblocks.${i}`, l, vw, c.visionMlp));
  put('visual.ln_post.weight', v.lnPost[0], [vw]);
  put('visual.ln_post.bias', v.lnPost[1], [vw]);
  put('visual.proj', v.projection, [vw, c.embedDim]);
  const tw = c.textWidth;
  put('token_embedding.weight', w.text.tokenEmbedding, [c.vocabSize, tw]);
  put('positional_embedding', w.text.positionalEmbedding, [c.contextLength, tw]);
  w.text.layers.forEach((l, i) => layer(`transformer.resblocks.${i}`, l, tw, c.textMlp));
  put('ln_final.weight', w.text.lnFinal[0], [tw]);
  put('ln_final.bias', w.text.lnFinal[1], [tw]);
  put('text_projection', w.text.projection, [tw, c.embedDim]);
  put('logit_scale', Float32Array.of(w.logitScale), []);
  return t;
}

const int = (name: string, v: string | undefined): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`train-memory: --${name} must be a whole number ≥ 1, not ${v}`);
  return n;
};

if (args.model !== undefined) {
  // the child: one training run, then its figures
  const started: number[] = [];
  const batch = int('batch', args.batch)!;
  const t0 = performance.now();
  await train({
    method: args.method,
    model: args.model,
    dataset: args.dataset,
    root: args.root!,
    out: args.out!,
    limit: int('limit', args.limit),
    batchSize: batch,
    epochs: int('epochs', args.epochs),
    threads: int('threads', args.threads),
    onEvent: (e) => {
      if (e.kind !== 'step') return;
      started.push(performance.now());
    },
  });
  // steps after the first (which also builds the graphs), from the end of one to the end of the last
  const steps = started.length - 1;
  const seconds = steps > 0 ? (started.at(-1)! - started[0]!) / 1000 : NaN;
  process.stdout.write(
    JSON.stringify({
      peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
      steps: started.length,
      trainImgPerSec: Number(((steps * batch) / seconds).toFixed(2)),
      wallSeconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
    }) + '\n',
  );
} else {
  if (args.root === undefined) throw new Error('train-memory: --root (the dataset folder) is required');
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-train-memory-'));
  try {
    const model = join(dir, `${args.arch}-random.safetensors`);
    writeSafetensors(model, openAiTensors(randomClipWeights(archConfig(args.arch), 0, { text: true })));
    const passOn = Object.entries(args).flatMap(([k, v]) => (v === undefined ? [] : [`--${k}`, String(v)]));
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(import.meta.url), ...passOn, '--model', model, '--out', join(dir, 'run')],
      { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' },
    );
    process.stdout.write(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
