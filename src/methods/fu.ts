/**
 * Fu et al. (IEEE SPL 2024): two multi-modal prompt learners on one frozen CLIP. The auxiliary learner
 * judges text-image alignment ("aligned/misaligned photo"); the target learner judges quality
 * ("good/bad photo") with visual prompts that fuse its own and the auxiliary's at every depth.
 */
import * as G from '../graph/graph.js';
import { visionEncoder } from '../clip/encoders.js';
import { TextPrompts } from '../prompts/text.js';
import { VisualPrompts, visionHooks, fusionInit, fusePrompts } from '../prompts/visual.js';
import { type AuxiliaryTarget, type Method, classProbs, firstClass, mse } from './method.js';
import { type CommonOptions, type Schema, commonSchema, spec } from './options.js';

export interface FuOptions extends CommonOptions {
  nCtx: number;
  nVisual: number;
  depth: number;
  alignWeight: number;
}

const options: Schema<FuOptions> = {
  ...commonSchema({
    optimizer: 'adam',
    lr: 1e-4,
    batchSize: 64,
    epochs: 50,
    patience: 15,
    augment: 'crop+flip',
    testViews: 'sliding',
    stride: 64,
    windows: 'unfold',
    normalize: 'imagenet',
  }),
  nCtx: spec.integer(8, 'learned text context tokens of each prompt learner', { min: 1 }),
  nVisual: spec.integer(8, 'learned visual prompt tokens per layer', { min: 1 }),
  depth: spec.integer(12, 'the layers that get deep text and visual prompts', { min: 1 }),
  alignWeight: spec.number(0.1, 'the weight of the auxiliary alignment loss (0: train without it)', { min: 0 }),
};

/** The dataset's text-image alignment score, scaled as its MOS is (AGIQA-3K's correspondence). */
const alignment: AuxiliaryTarget<FuOptions> = {
  name: 'alignment',
  size: 1,
  enabled: (o) => o.alignWeight > 0,
  read(item, info) {
    const a = item.extra?.alignment ?? item.extra?.correspondence;
    if (a === undefined) return undefined;
    const [lo, hi] = info.mosRange;
    return (a - lo) / (hi - lo);
  },
  missing: { kind: 'refuse', why: 'the auxiliary alignment task needs it (set --option alignWeight=0 to train without it)' },
  loss: (o, predicted, target) => G.mul(mse(predicted, target), o.alignWeight),
};

export const fu: Method<FuOptions> = {
  info: {
    name: 'fu',
    description: 'Fu (IEEE SPL 2024): text+visual prompts in both encoders, guided by an auxiliary alignment task',
    lowerBetter: false,
    scoreRange: [0, 1],
    trainable: true,
    defaultModel: 'openai/clip-vit-base-patch32',
  },
  options,
  imageInput: 'pixels',
  auxiliary: [alignment],
  target: (unit) => unit,
  build(o, { weights, tokenizer }) {
    const depth = o.depth;
    const auxText = new TextPrompts(
      { name: 'aux', classes: ['aligned photo', 'misaligned photo'], nCtx: o.nCtx, deepDepth: depth },
      weights,
      tokenizer,
    );
    const tgtText = new TextPrompts(
      { name: 'target', classes: ['good photo', 'bad photo'], nCtx: o.nCtx, deepDepth: depth },
      weights,
      tokenizer,
    );
    const auxVis = new VisualPrompts({ name: 'aux', nTokens: o.nVisual, depth }, weights);
    const tgtVis = new VisualPrompts({ name: 'target', nTokens: o.nVisual, depth }, weights);
    return {
      init(rng) {
        const params = new Map([...auxText.init(rng), ...tgtText.init(rng), ...auxVis.init(rng), ...tgtVis.init(rng)]);
        for (const [k, v] of fusionInit(rng, 'target', tgtVis.depth, weights)) params.set(k, v);
        return params;
      },
      text(ctx) {
        const out = { quality: tgtText.build(ctx) };
        return ctx.auxiliary.has(alignment.name) ? { ...out, alignment: auxText.build(ctx) } : out;
      },
      forward(ctx, image, text) {
        const aux = auxVis.values(ctx);
        const fused = fusePrompts(ctx, 'target', tgtVis.values(ctx), aux);
        const quality = firstClass(classProbs(weights, visionEncoder(ctx.bank, weights, image, visionHooks(fused)).embeds, text.quality!));
        if (!text.alignment) return { score: quality };
        // the alignment branch reads the image through the auxiliary prompts only (the public code's behaviour)
        const predicted = firstClass(classProbs(weights, visionEncoder(ctx.bank, weights, image, visionHooks(aux)).embeds, text.alignment));
        return { score: quality, auxiliary: { [alignment.name]: predicted } };
      },
    };
  },
};
