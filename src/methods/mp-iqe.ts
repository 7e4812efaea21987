/**
 * MP-IQE (Pan et al. 2024): deep visual prompts at every layer of the image encoder, learned text
 * prompts for five quality levels, and dual text prompts for scene and distortion type (LIQE's label
 * sets). Quality = Σ i·p(level i), i = 1…5. The distortion classification loss is on when the training
 * images carry distortion labels; no dataset here has scene labels in LIQE's sense, so that loss is off.
 */
import * as G from '../graph/graph.js';
import { visionEncoder } from '../clip/encoders.js';
import { TextPrompts } from '../prompts/text.js';
import { VisualPrompts, visionHooks } from '../prompts/visual.js';
import { type AuxiliaryTarget, type Method, classProbs } from './method.js';
import { type CommonOptions, type Schema, commonSchema, spec } from './options.js';
import { DISTORTIONS } from './liqe.js';

const LEVELS = ['bad', 'poor', 'fair', 'good', 'perfect'];
export const SCENES = ['animal', 'cityscape', 'human', 'indoor scene', 'landscape', 'night scene', 'plant', 'still-life', 'others'];
/** LIQE's eleven distortion classes (MP-IQE uses LIQE's label sets) */
export { DISTORTIONS };

/** Maps a dataset's distortion name (KADID, TID2013, CSIQ, LIVE) to one of LIQE's eleven classes. */
export function distortionClass(name: string): number {
  const n = name.toLowerCase();
  const rules: Array<[RegExp, (typeof DISTORTIONS)[number]]> = [
    [/jpeg ?2000|jp2k|jpeg2k/, 'jpeg2000 compression'],
    [/jpeg|jpg/, 'jpeg compression'],
    [/noise|awgn|wn\b/, 'noise'],
    [/blur|gblur/, 'blur'],
    [/colou?r|saturat|chrom|hue/, 'color'],
    [/contrast/, 'contrast'],
    [/brighten|overexpos/, 'overexposure'],
    [/darken|underexpos/, 'underexposure'],
    [/quantiz/, 'quantization'],
    [/jitter|shift|block|pixelat|spatial/, 'spatial'],
  ];
  for (const [re, cls] of rules) if (re.test(n)) return DISTORTIONS.indexOf(cls);
  return DISTORTIONS.indexOf('other');
}

export interface MpIqeOptions extends CommonOptions {
  nCtx: number;
  nVisual: number;
  distortionWeight: number;
}

const options: Schema<MpIqeOptions> = {
  ...commonSchema({
    optimizer: 'adamw',
    lr: 1e-3,
    weightDecay: 1e-3,
    batchSize: 32,
    epochs: 30,
    schedule: 'cosine',
    augment: 'crop+flip',
    testViews: 'resize',
  }),
  nCtx: spec.integer(8, 'learned text context tokens of each prompt', { min: 1 }),
  nVisual: spec.integer(8, 'learned visual prompt tokens per layer', { min: 1 }),
  distortionWeight: spec.number(0.1, 'the weight of the distortion classification loss (0: off)', { min: 0 }),
};

/** LIQE's distortion class, learnt from the images that carry a distortion label (the others are masked out). */
const distortion: AuxiliaryTarget<MpIqeOptions> = {
  name: 'distortion',
  size: DISTORTIONS.length,
  enabled: (o, train) => o.distortionWeight > 0 && train.some((it) => it.distortion),
  read(item) {
    if (!item.distortion) return undefined;
    const onehot = new Float32Array(DISTORTIONS.length);
    onehot[distortionClass(item.distortion)] = 1;
    return onehot;
  },
  missing: { kind: 'mask' },
  loss(o, probs, onehot, mask) {
    // cross-entropy over the images that have a label
    const logp = G.log(G.add(probs, 1e-8));
    const perImage = G.neg(G.reduceSum(G.mul(logp, onehot), [1], false));
    const ce = G.div(G.sumAll(G.mul(perImage, mask!)), G.add(G.sumAll(mask!), 1e-8));
    return G.mul(ce, o.distortionWeight);
  },
};

export const mpIqe: Method<MpIqeOptions> = {
  info: {
    name: 'mp-iqe',
    description: 'MP-IQE (Pan et al. 2024): visual prompts at every layer, dual scene/distortion text prompts, quality from five levels',
    lowerBetter: false,
    scoreRange: [1, 5],
    trainable: true,
    defaultModel: 'openai/clip-vit-base-patch32',
  },
  options,
  imageInput: 'pixels',
  auxiliary: [distortion],
  // MOS scaled to the five levels' range [1, 5]
  target: (unit) => 1 + 4 * unit,
  build(o, { weights, tokenizer }) {
    const quality = new TextPrompts({ name: 'quality', classes: LEVELS.map((l) => `${l} quality`), nCtx: o.nCtx }, weights, tokenizer);
    const scene = new TextPrompts({ name: 'scene', classes: SCENES, nCtx: o.nCtx }, weights, tokenizer);
    const distortions = new TextPrompts({ name: 'distortion', classes: DISTORTIONS, nCtx: o.nCtx }, weights, tokenizer);
    const visual = new VisualPrompts({ name: 'visual', nTokens: o.nVisual, depth: weights.config.visionLayers }, weights);
    return {
      init: (rng) => new Map([...quality.init(rng), ...scene.init(rng), ...distortions.init(rng), ...visual.init(rng)]),
      text(ctx) {
        const out = { quality: quality.build(ctx) };
        return ctx.auxiliary.has(distortion.name) ? { ...out, distortion: distortions.build(ctx) } : out;
      },
      forward(ctx, image, text) {
        const feats = visionEncoder(ctx.bank, weights, image, visionHooks(visual.values(ctx))).embeds;
        const p = classProbs(weights, feats, text.quality!);
        const levels = ctx.g.constant([1, 2, 3, 4, 5], [5, 1]);
        const score = G.reshape(G.matmul(p, levels), [image.shape[0]!]);
        return text.distortion ? { score, auxiliary: { [distortion.name]: classProbs(weights, feats, text.distortion) } } : { score };
      },
    };
  },
};
