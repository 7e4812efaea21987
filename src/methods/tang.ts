/**
 * Tang et al. (ICPR 2024, "CLIP-AGIQA"): a shared CoOp context for six quality classes, and a regression
 * head on the image feature concatenated with the six class text features. Both encoders are frozen, so
 * image features can be computed apart from the head. The authors publish two contexts: 4 tokens from
 * "a photo of a" (their `*_ctxv1` configs, the default here) and 16 random tokens (their README command).
 */
import * as G from '../graph/graph.js';
import { TextPrompts } from '../prompts/text.js';
import { linearInit } from '../prompts/context.js';
import { type Method, type Options, COMMON_DEFAULTS, qualityLoss } from './method.js';
import { type ClipWeights } from '../clip/weights.js';
import { type ClipTokenizer } from '../clip/tokenizer.js';

const CLASSES = ['terrible', 'bad', 'poor', 'average', 'good', 'perfect'];

/** As CoOp: an init phrase sets the context (its words are the tokens); without one, nCtx tokens drawn N(0, 0.02). */
function prompts(o: Options, weights: ClipWeights, tokenizer: ClipTokenizer): TextPrompts {
  const phrase = String(o.initPhrase);
  const p = new TextPrompts({ name: 'text', classes: CLASSES, nCtx: Number(o.nCtx), ...(phrase ? { initPhrase: phrase } : {}) }, weights, tokenizer);
  if (p.nCtx !== Number(o.nCtx)) throw new Error(`tang: initPhrase "${phrase}" is ${p.nCtx} tokens, but nCtx = ${o.nCtx}; give a phrase of nCtx single-token words`);
  return p;
}

export const tang: Method = {
  info: {
    name: 'tang', description: 'Tang (CLIP-AGIQA, ICPR 2024): six learned quality-class prompts and a regression head, MSE on raw MOS',
    lowerBetter: false, scoreRange: [0, 5], trainable: true, defaultModel: 'openai/clip-vit-base-patch16',
  },
  defaults: {
    ...COMMON_DEFAULTS, nCtx: 4, initPhrase: 'a photo of a', hidden: 512, dropout: 0.5,
    optimizer: 'sgd', lr: 0.002, momentum: 0.9, weightDecay: 5e-4, batchSize: 32, epochs: 100,
    schedule: 'cosine', warmupEpochs: 1, warmupLr: 1e-5, lrStep: 'epoch', dropLast: true, augment: 'random-resized-crop+flip', testViews: 'resize',
  },
  presets: {
    ctxv1: { description: 'the authors\' *_ctxv1 configs: 4 context tokens initialised from "a photo of a" (the default)', options: { nCtx: 4, initPhrase: 'a photo of a' } },
    readme: { description: 'the authors\' README command (scripts/main.sh … vit_b16_ep100 end 16 1 False): 16 random context tokens', options: { nCtx: 16, initPhrase: '' } },
  },
  validate(o) {
    const n = Number(o.nCtx);
    if (!Number.isInteger(n) || n < 1) throw new Error(`tang: nCtx = ${String(o.nCtx)}, must be an integer ≥ 1`);
    const words = String(o.initPhrase).trim().split(/\s+/).filter(Boolean).length;
    if (words && words !== n) {
      throw new Error(`tang: initPhrase "${String(o.initPhrase)}" has ${words} words but nCtx = ${n}; set nCtx=${words}, or initPhrase= (empty) for ${n} random tokens (or --option preset=readme)`);
    }
  },
  imageInput: 'features',
  init(weights, tokenizer, o, rng) {
    const params = prompts(o, weights, tokenizer).init(rng);
    const e = weights.config.embedDim;
    const h = Number(o.hidden);
    const fc1 = linearInit(rng, e * (1 + CLASSES.length), h);
    const fc2 = linearInit(rng, h, 1);
    params.set('head.fc1.w', fc1.w);
    params.set('head.fc1.b', fc1.b);
    params.set('head.fc2.w', fc2.w);
    params.set('head.fc2.b', fc2.b);
    return params;
  },
  text(ctx, o) {
    return { classes: prompts(o, ctx.weights, ctx.tokenizer).build(ctx) };
  },
  forward(ctx, o, image, text) {
    const b = image.shape[0]!;
    const e = ctx.weights.config.embedDim;
    const t = G.expand(G.reshape(G.l2Normalize(text.classes!), [1, CLASSES.length * e]), [b, CLASSES.length * e]);
    let x = G.concat([G.l2Normalize(image), t], 1);
    const p = Number(o.dropout);
    if (ctx.training) x = G.dropout(x, p, 'dropout:head.in');
    x = G.relu(G.linear(x, ctx.param('head.fc1.w'), ctx.param('head.fc1.b')));
    if (ctx.training) x = G.dropout(x, p, 'dropout:head.hidden');
    return { score: G.reshape(G.linear(x, ctx.param('head.fc2.w'), ctx.param('head.fc2.b')), [b]) };
  },
  loss: (_ctx, o, pred, t) => qualityLoss(o, pred.score, t.quality),
  // raw MOS on the dataset's own scale
  target: (unit, range) => range[0] + unit * (range[1] - range[0]),
};
