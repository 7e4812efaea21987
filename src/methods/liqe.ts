/**
 * LIQE (Zhang et al., CVPR 2023) as pyiqa scores it, with the released fine-tuned CLIP as the backbone:
 * 224-pixel windows of the full-resolution image (at most 15, chosen as pyiqa chooses them), the logits
 * exp(logit_scale) · cos against the quality prompts averaged over the windows, one softmax over every
 * prompt, the probabilities of each quality level summed (over scenes and distortions for `liqe-mix`),
 * and the score Σ k · p(level k) for the levels 1 (bad) to 5 (perfect).
 */
import * as G from '../graph/graph.js';
import { encodeTexts } from '../clip/encoders.js';
import { type ClipWeights } from '../clip/weights.js';
import { checkArch } from '../clip/arch.js';
import { type RgbImage } from '../data/rgb.js';
import { CLIP_MEAN, CLIP_STD, crop, toTensor } from '../data/preprocess.js';
import { type Method } from './method.js';
import { type CommonOptions, commonSchema, spec } from './options.js';
import { ImageRefusedError, squareView } from './views.js';

/** pyiqa's lists (liqe_arch.py), in its order: prompt k of the mix model is product(QUALITIES, SCENES, DISTORTIONS)[k]. */
export const QUALITIES = ['bad', 'poor', 'fair', 'good', 'perfect'] as const;
export const SCENES = ['animal', 'cityscape', 'human', 'indoor', 'landscape', 'night', 'plant', 'still_life', 'others'] as const;
export const DISTORTIONS = [
  'jpeg2000 compression',
  'jpeg compression',
  'noise',
  'blur',
  'color',
  'contrast',
  'overexposure',
  'underexposure',
  'spatial',
  'quantization',
  'other',
] as const;

/** LIQE's windows are 224 pixels whatever the backbone says: the released models are ViT-B/32 at 224. */
export const LIQE_WINDOW = 224;
/** The architecture pyiqa's LIQE asserts (`backbone == 'ViT-B/32'`). */
export const LIQE_ARCH = 'ViT-B/32';

/** The quality prompts: 5 for `liqe`; 495 for `liqe-mix`, quality outermost (scene `still_life` keeps its underscore). */
export function liqePrompts(mix: boolean): string[] {
  if (!mix) return QUALITIES.map((q) => `a photo with ${q} quality`);
  const out: string[] = [];
  for (const q of QUALITIES)
    for (const c of SCENES) for (const d of DISTORTIONS) out.push(`a photo of a ${c} with ${d} artifacts, which is of ${q} quality`);
  return out;
}

export interface LiqeWindow {
  /** the window's place in pyiqa's row-major list of every window (unfold at `step`) */
  index: number;
  left: number;
  top: number;
}

/**
 * The windows pyiqa scores: every `size` window at `step` from the top-left corner, row-major (the
 * remainder at the right and bottom is dropped), N of them; n = min(count, N), every (max(1, N // n))-th
 * from the first. Refuses a side under `size`, as pyiqa does (it does not upsample).
 */
export function liqeWindows(width: number, height: number, o: { size?: number; step: number; count: number }): LiqeWindow[] {
  const size = o.size ?? LIQE_WINDOW;
  if (width < size || height < size) {
    throw new ImageRefusedError(
      `the image is ${width}x${height}; LIQE needs both sides at least ${size} px (it scores ${size}-pixel windows at full resolution and does not upsample)`,
    );
  }
  const cols = Math.floor((width - size) / o.step) + 1;
  const rows = Math.floor((height - size) / o.step) + 1;
  const total = cols * rows;
  // pyiqa also lowers its own num_patch for every later image after one with fewer windows; that order
  // dependence is not copied: each image gets min(count, N)
  const n = Math.min(o.count, total);
  const every = Math.max(1, Math.floor(total / n));
  return Array.from({ length: n }, (_, i) => {
    const index = every * i;
    return { index, left: (index % cols) * o.step, top: Math.floor(index / cols) * o.step };
  });
}

/** Mean logits over the windows, softmax over every prompt, each level's probability summed, then Σ k · p(level k). */
export function liqeScore(perWindowLogits: readonly Float32Array[]): number {
  const p = perWindowLogits[0]!.length;
  const mean = new Float64Array(p);
  for (const row of perWindowLogits) for (let j = 0; j < p; j++) mean[j]! += row[j]! / perWindowLogits.length;
  let max = -Infinity;
  for (const v of mean) max = Math.max(max, v);
  let z = 0;
  for (let j = 0; j < p; j++) z += mean[j] = Math.exp(mean[j]! - max);
  // prompts of level k are the k-th block of p / 5 (quality outermost)
  const per = p / QUALITIES.length;
  let score = 0;
  for (let j = 0; j < p; j++) score += (Math.floor(j / per) + 1) * mean[j]!;
  return score / z;
}

export interface LiqeOptions extends CommonOptions {
  patches: number;
  step: number;
}

function liqeMethod(mix: boolean): Method<LiqeOptions> {
  const name = mix ? 'liqe-mix' : 'liqe';
  const prompts = liqePrompts(mix);
  return {
    info: {
      name,
      description: mix
        ? 'LIQE-mix (Zhang et al., CVPR 2023) as pyiqa: 495 quality × scene × distortion prompts, quality marginalised; needs the released liqe_mix weights'
        : 'LIQE (Zhang et al., CVPR 2023) as pyiqa: five quality-level prompts over 224 windows; needs the released liqe_koniq weights',
      lowerBetter: false,
      scoreRange: [1, 5],
      trainable: false,
      defaultModel: 'openai/clip-vit-base-patch32',
    },
    options: {
      ...commonSchema(),
      patches: spec.integer(15, 'the most 224-pixel windows scored per image (pyiqa num_patch)', { min: 1 }),
      step: spec.integer(32, 'the stride of the windows, in pixels (pyiqa step)', { min: 1 }),
    },
    imageInput: 'features',
    released: {
      holds: 'backbone',
      describe: `pyiqa's released ${mix ? 'liqe_mix.pt' : 'liqe_koniq.pt'}: the whole fine-tuned CLIP (params.clip_model.*)`,
    },
    target: (unit) => 1 + 4 * unit,
    views(img: RgbImage, o: LiqeOptions) {
      return liqeWindows(img.width, img.height, { step: o.step, count: o.patches }).map(({ left, top }) =>
        squareView(toTensor(crop(img, left, top, LIQE_WINDOW, LIQE_WINDOW), CLIP_MEAN, CLIP_STD), LIQE_WINDOW),
      );
    },
    build(_o, { weights, tokenizer }) {
      checkBackbone(name, weights);
      const levels = QUALITIES.length;
      return {
        init: () => new Map(),
        text: (ctx) => ({ prompts: G.l2Normalize(encodeTexts(ctx.bank, weights, tokenizer, prompts)) }),
        forward(ctx, image, text) {
          const b = image.shape[0]!;
          const logits = G.mul(G.matmul(G.l2Normalize(image), G.transposeLast(text.prompts!)), Math.exp(weights.logitScale));
          // one window alone: its softmax, each level's probabilities summed, Σ k · p(level k)
          const perLevel = G.reduceSum(G.reshape(G.softmax(logits, -1), [b, levels, prompts.length / levels]), [2], false);
          const score = G.reshape(
            G.matmul(
              perLevel,
              ctx.g.constant(
                Array.from({ length: levels }, (_, k) => k + 1),
                [levels, 1],
              ),
            ),
            [b],
          );
          return { score, perView: logits };
        },
        combineViews: liqeScore,
      };
    },
  };
}

/**
 * pyiqa's LIQE asserts ViT-B/32 (its windows are 224 pixels and go through the encoder as they are): a ResNet
 * CLIP, or a ViT of another patch or input size, is refused with what it is.
 */
function checkBackbone(name: string, weights: ClipWeights): void {
  checkArch(weights.config, LIQE_ARCH, `${name} (as pyiqa's LIQE, which asserts it)`);
}

export const liqe = liqeMethod(false);
export const liqeMix = liqeMethod(true);
