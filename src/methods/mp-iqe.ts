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
import { type Method, type Options, type Predictions, COMMON_DEFAULTS, classProbs, qualityLoss } from './method.js';
import { type ClipWeights } from '../clip/weights.js';
import { type ClipTokenizer } from '../clip/tokenizer.js';

const LEVELS = ['bad', 'poor', 'fair', 'good', 'perfect'];
export const SCENES = ['animal', 'cityscape', 'human', 'indoor scene', 'landscape', 'night scene', 'plant', 'still-life', 'others'];
export const DISTORTIONS = ['jpeg2000 compression', 'jpeg compression', 'noise', 'blur', 'color', 'contrast', 'overexposure', 'underexposure', 'spatial', 'quantization', 'other'];

/** Maps a dataset's distortion name (KADID, TID2013, CSIQ, LIVE) to one of LIQE's eleven classes. */
export function distortionClass(name: string): number {
  const n = name.toLowerCase();
  const rules: Array<[RegExp, string]> = [
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

function learners(o: Options, weights: ClipWeights, tokenizer: ClipTokenizer) {
  const n = Number(o.nCtx);
  return {
    quality: new TextPrompts({ name: 'quality', classes: LEVELS.map((l) => `${l} quality`), nCtx: n }, weights, tokenizer),
    scene: new TextPrompts({ name: 'scene', classes: SCENES, nCtx: n }, weights, tokenizer),
    distortion: new TextPrompts({ name: 'distortion', classes: DISTORTIONS, nCtx: n }, weights, tokenizer),
    visual: new VisualPrompts({ name: 'visual', nTokens: Number(o.nVisual), depth: weights.config.visionLayers }, weights),
  };
}

export const mpIqe: Method = {
  info: {
    name: 'mp-iqe', description: 'MP-IQE (Pan et al. 2024): visual prompts at every layer, dual scene/distortion text prompts, quality from five levels',
    lowerBetter: false, scoreRange: [1, 5], trainable: true, defaultModel: 'openai/clip-vit-base-patch32',
  },
  defaults: { ...COMMON_DEFAULTS, nCtx: 8, nVisual: 8, distortionWeight: 0.1, optimizer: 'adamw', lr: 1e-3, weightDecay: 1e-3, batchSize: 32, epochs: 30, schedule: 'cosine', augment: 'crop+flip', testViews: 'resize' },
  imageInput: 'pixels',
  distortionClasses: DISTORTIONS,
  distortionClass,
  init(weights, tokenizer, o, rng) {
    const l = learners(o, weights, tokenizer);
    return new Map([...l.quality.init(rng), ...l.scene.init(rng), ...l.distortion.init(rng), ...l.visual.init(rng)]);
  },
  text(ctx, o) {
    const l = learners(o, ctx.weights, ctx.tokenizer);
    const out = { quality: l.quality.build(ctx) };
    return ctx.training && Number(o.distortionWeight) > 0 ? { ...out, distortion: l.distortion.build(ctx) } : out;
  },
  forward(ctx, o, image, text) {
    const l = learners(o, ctx.weights, ctx.tokenizer);
    const feats = visionEncoder(ctx.bank, ctx.weights, image, visionHooks(l.visual.values(ctx))).embeds;
    const p = classProbs(ctx.weights, feats, text.quality!);
    const levels = ctx.g.constant([1, 2, 3, 4, 5], [5, 1]);
    const score = G.reshape(G.matmul(p, levels), [image.shape[0]!]);
    const out: Predictions = { score };
    if (text.distortion) out.distortionProbs = classProbs(ctx.weights, feats, text.distortion);
    return out;
  },
  loss(_ctx, o, pred, t) {
    let loss = qualityLoss(o, pred.score, t.quality);
    const probs = pred.distortionProbs;
    if (probs && t.distortion) {
      // cross-entropy over the images that have a label
      const logp = G.log(G.add(probs, 1e-8));
      const perImage = G.neg(G.reduceSum(G.mul(logp, t.distortion.onehot), [1], false));
      const ce = G.div(G.sumAll(G.mul(perImage, t.distortion.mask)), G.add(G.sumAll(t.distortion.mask), 1e-8));
      loss = G.add(loss, G.mul(ce, Number(o.distortionWeight)));
    }
    return loss;
  },
  // MOS scaled to the five levels' range [1, 5]
  target: (unit) => 1 + 4 * unit,
};
