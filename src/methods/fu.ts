/**
 * Fu et al. (IEEE SPL 2024): two multi-modal prompt learners on one frozen CLIP. The auxiliary learner
 * judges text-image alignment ("aligned/misaligned photo"); the target learner judges quality
 * ("good/bad photo") with visual prompts that fuse its own and the auxiliary's at every depth.
 */
import * as G from '../graph/graph.js';
import { visionEncoder } from '../clip/encoders.js';
import { TextPrompts } from '../prompts/text.js';
import { VisualPrompts, visionHooks, fusionInit, fusePrompts } from '../prompts/visual.js';
import { type Method, type Options, COMMON_DEFAULTS, classProbs, firstClass, mse, qualityLoss } from './method.js';
import { type ClipWeights } from '../clip/weights.js';
import { type ClipTokenizer } from '../clip/tokenizer.js';

function learners(o: Options, weights: ClipWeights, tokenizer: ClipTokenizer) {
  const n = Number(o.nCtx);
  const depth = Number(o.depth);
  return {
    auxText: new TextPrompts({ name: 'aux', classes: ['aligned photo', 'misaligned photo'], nCtx: n, deepDepth: depth }, weights, tokenizer),
    tgtText: new TextPrompts({ name: 'target', classes: ['good photo', 'bad photo'], nCtx: n, deepDepth: depth }, weights, tokenizer),
    auxVis: new VisualPrompts({ name: 'aux', nTokens: Number(o.nVisual), depth }, weights),
    tgtVis: new VisualPrompts({ name: 'target', nTokens: Number(o.nVisual), depth }, weights),
  };
}

export const fu: Method = {
  info: {
    name: 'fu', description: 'Fu (IEEE SPL 2024): text+visual prompts in both encoders, guided by an auxiliary alignment task',
    lowerBetter: false, scoreRange: [0, 1], trainable: true, defaultModel: 'openai/clip-vit-base-patch32',
  },
  defaults: {
    ...COMMON_DEFAULTS, nCtx: 8, nVisual: 8, depth: 12, alignWeight: 0.1,
    optimizer: 'adam', lr: 1e-4, batchSize: 64, epochs: 50, patience: 15,
    augment: 'crop+flip', testViews: 'sliding', stride: 64, windows: 'unfold', normalize: 'imagenet',
  },
  validate(o) {
    if (!Number.isInteger(o.stride) || o.stride < 1) throw new Error(`fu: stride = ${o.stride}, must be an integer ≥ 1`);
  },
  imageInput: 'pixels',
  usesAlignment: (o) => Number(o.alignWeight) > 0,
  init(weights, tokenizer, o, rng) {
    const l = learners(o, weights, tokenizer);
    const params = new Map([...l.auxText.init(rng), ...l.tgtText.init(rng), ...l.auxVis.init(rng), ...l.tgtVis.init(rng)]);
    for (const [k, v] of fusionInit(rng, 'target', l.tgtVis.depth, weights)) params.set(k, v);
    return params;
  },
  text(ctx, o) {
    const l = learners(o, ctx.weights, ctx.tokenizer);
    const out = { quality: l.tgtText.build(ctx) };
    return ctx.training && Number(o.alignWeight) > 0 ? { ...out, alignment: l.auxText.build(ctx) } : out;
  },
  forward(ctx, o, image, text) {
    const l = learners(o, ctx.weights, ctx.tokenizer);
    const aux = l.auxVis.values(ctx);
    const fused = fusePrompts(ctx, 'target', l.tgtVis.values(ctx), aux);
    const quality = firstClass(classProbs(ctx.weights, visionEncoder(ctx.bank, ctx.weights, image, visionHooks(fused)).embeds, text.quality!));
    if (!text.alignment) return { score: quality };
    // the alignment branch reads the image through the auxiliary prompts only (the public code's behaviour)
    const alignment = firstClass(classProbs(ctx.weights, visionEncoder(ctx.bank, ctx.weights, image, visionHooks(aux)).embeds, text.alignment));
    return { score: quality, alignment };
  },
  loss(_ctx, o, pred, t) {
    const q = qualityLoss(o, pred.score, t.quality);
    if (!pred.alignment || !t.alignment) return q;
    return G.add(q, G.mul(mse(pred.alignment, t.alignment), Number(o.alignWeight)));
  },
  target: (unit) => unit,
};
