/** Zero-shot CLIP-IQA and the trained CLIP-IQA+ (a CoOp context around the antonym pair). */
import * as G from '../graph/graph.js';
import { type Value } from '../graph/graph.js';
import { textEncoder, tokenEmbeddings, eotOneHot } from '../clip/encoders.js';
import { TextPrompts } from '../prompts/text.js';
import { type Method, COMMON_DEFAULTS, classProbs, firstClass, qualityLoss } from './method.js';

const PAIRS: Record<string, [string, string][]> = {
  good: [['Good photo.', 'Bad photo.']],
  all: [['Good photo.', 'Bad photo.'], ['High quality photo.', 'Low quality photo.'], ['Sharp photo.', 'Blurry photo.']],
};

export const clipIqa: Method = {
  info: {
    name: 'clip-iqa', description: 'Zero-shot CLIP-IQA: p("Good photo.") against its antonym, no training',
    lowerBetter: false, scoreRange: [0, 1], trainable: false, defaultModel: 'openai/clip-vit-base-patch32',
  },
  defaults: { ...COMMON_DEFAULTS, pairs: 'good' },
  imageInput: 'features',
  init: () => new Map(),
  text(ctx, o) {
    const pairs = PAIRS[String(o.pairs)];
    if (!pairs) throw new Error(`clip-iqa: pairs must be one of ${Object.keys(PAIRS).join(', ')}`);
    const texts = pairs.flat();
    const c = ctx.weights.config;
    const ids = ctx.tokenizer.tokenizeBatch(texts, c.contextLength);
    const tokens = ctx.g.constant(tokenEmbeddings(ctx.weights, ids, texts.length), [texts.length, c.contextLength, c.textWidth]);
    const eot = ctx.g.constant(eotOneHot(ids, texts.length, ctx.tokenizer.eot), [texts.length, c.contextLength]);
    return { pairs: textEncoder(ctx.bank, ctx.weights, tokens, eot).embeds };
  },
  forward(ctx, _o, image, text) {
    // one softmax per antonym pair, then the mean of the positive probabilities
    const t = text.pairs!;
    const nPairs = t.shape[0]! / 2;
    let sum: Value | null = null;
    for (let k = 0; k < nPairs; k++) {
      const p = firstClass(classProbs(ctx.weights, image, G.slice(t, 0, 2 * k, 2 * k + 2)));
      sum = sum ? G.add(sum, p) : p;
    }
    return { score: nPairs > 1 ? G.mul(sum!, 1 / nPairs) : sum! };
  },
  loss: () => {
    throw new Error('clip-iqa is zero-shot: there is nothing to train (use clip-iqa+)');
  },
  target: (unit) => unit,
};

export const clipIqaPlus: Method = {
  info: {
    name: 'clip-iqa+', description: 'CLIP-IQA+: a learned 16-token CoOp context around "Good/Bad photo.", MSE on MOS in [0, 1]',
    lowerBetter: false, scoreRange: [0, 1], trainable: true, defaultModel: 'openai/clip-vit-base-patch32',
  },
  defaults: { ...COMMON_DEFAULTS, nCtx: 16, optimizer: 'sgd', lr: 0.002, momentum: 0.9, weightDecay: 5e-4, batchSize: 64, epochs: 50, schedule: 'cosine' },
  imageInput: 'features',
  init(weights, tokenizer, o, rng) {
    return new TextPrompts({ name: 'quality', classes: ['Good photo', 'Bad photo'], nCtx: Number(o.nCtx) }, weights, tokenizer).init(rng);
  },
  text(ctx, o) {
    return { quality: new TextPrompts({ name: 'quality', classes: ['Good photo', 'Bad photo'], nCtx: Number(o.nCtx) }, ctx.weights, ctx.tokenizer).build(ctx) };
  },
  forward(ctx, _o, image, text) {
    return { score: firstClass(classProbs(ctx.weights, image, text.quality!)) };
  },
  loss: (_ctx, o, pred, t) => qualityLoss(o, pred.score, t.quality),
  target: (unit) => unit,
};
