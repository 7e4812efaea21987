/**
 * Tang et al. (ICPR 2024, "CLIP-AGIQA"): a shared CoOp context for six quality classes, and a regression
 * head on the image feature concatenated with the six class text features. Both encoders are frozen, so
 * image features can be computed apart from the head. The authors publish two contexts: 4 tokens from
 * "a photo of a" (their `*_ctxv1` configs, the default here) and 16 random tokens (their README command).
 */
import * as G from '../graph/graph.js';
import { TextPrompts } from '../prompts/text.js';
import { linearInit } from '../prompts/context.js';
import { type Method } from './method.js';
import { type CommonOptions, type Schema, commonSchema, spec } from './options.js';

const CLASSES = ['terrible', 'bad', 'poor', 'average', 'good', 'perfect'];

export interface TangOptions extends CommonOptions {
  nCtx: number;
  initPhrase: string;
  hidden: number;
  dropout: number;
}

const options: Schema<TangOptions> = {
  ...commonSchema({
    optimizer: 'sgd',
    lr: 0.002,
    momentum: 0.9,
    weightDecay: 5e-4,
    batchSize: 32,
    epochs: 100,
    schedule: 'cosine',
    warmupEpochs: 1,
    warmupLr: 1e-5,
    lrStep: 'epoch',
    dropLast: true,
    augment: 'random-resized-crop+flip',
    testViews: 'resize',
  }),
  nCtx: spec.integer(4, 'learned context tokens shared by the six class prompts', { min: 1 }),
  initPhrase: spec.text(
    'a photo of a',
    'the words that initialise the context (nCtx of them), or empty for random tokens drawn N(0, 0.02)',
  ),
  hidden: spec.integer(512, "the regression head's hidden width", { min: 1 }),
  dropout: spec.number(0.5, "the regression head's dropout probability", { min: 0, max: 0.99 }),
};

export const tang: Method<TangOptions> = {
  info: {
    name: 'tang',
    description: 'Tang (CLIP-AGIQA, ICPR 2024): six learned quality-class prompts and a regression head, MSE on raw MOS',
    lowerBetter: false,
    scoreRange: [0, 5],
    trainable: true,
    defaultModel: 'openai/clip-vit-base-patch16',
  },
  options,
  presets: {
    ctxv1: {
      description: 'the authors\' *_ctxv1 configs: 4 context tokens initialised from "a photo of a" (the default)',
      options: { nCtx: 4, initPhrase: 'a photo of a' },
    },
    readme: {
      description: "the authors' README command (scripts/main.sh … vit_b16_ep100 end 16 1 False): 16 random context tokens",
      options: { nCtx: 16, initPhrase: '' },
    },
  },
  validate(o) {
    const words = o.initPhrase.trim().split(/\s+/).filter(Boolean).length;
    if (words && words !== o.nCtx) {
      throw new Error(
        `tang: initPhrase "${o.initPhrase}" has ${words} words but nCtx = ${o.nCtx}; set nCtx=${words}, or initPhrase= (empty) for ${o.nCtx} random tokens (or --option preset=readme)`,
      );
    }
  },
  imageInput: 'features',
  // raw MOS on the dataset's own scale
  target: (unit, range) => range[0] + unit * (range[1] - range[0]),
  build(o, { weights, tokenizer }) {
    // as CoOp: an init phrase sets the context (its words are the tokens); without one, nCtx tokens drawn N(0, 0.02)
    const prompts = new TextPrompts(
      { name: 'text', classes: CLASSES, nCtx: o.nCtx, ...(o.initPhrase ? { initPhrase: o.initPhrase } : {}) },
      weights,
      tokenizer,
    );
    if (prompts.nCtx !== o.nCtx)
      throw new Error(
        `tang: initPhrase "${o.initPhrase}" is ${prompts.nCtx} tokens, but nCtx = ${o.nCtx}; give a phrase of nCtx single-token words`,
      );
    const e = weights.config.embedDim;
    return {
      init(rng) {
        const params = prompts.init(rng);
        const fc1 = linearInit(rng, e * (1 + CLASSES.length), o.hidden);
        const fc2 = linearInit(rng, o.hidden, 1);
        params.set('head.fc1.w', fc1.w);
        params.set('head.fc1.b', fc1.b);
        params.set('head.fc2.w', fc2.w);
        params.set('head.fc2.b', fc2.b);
        return params;
      },
      text: (ctx) => ({ classes: prompts.build(ctx) }),
      forward(ctx, image, text) {
        const b = image.shape[0]!;
        const t = G.expand(G.reshape(G.l2Normalize(text.classes!), [1, CLASSES.length * e]), [b, CLASSES.length * e]);
        let x = G.concat([G.l2Normalize(image), t], 1);
        if (ctx.training) x = G.dropout(x, o.dropout, 'dropout:head.in');
        x = G.relu(G.linear(x, ctx.param('head.fc1.w'), ctx.param('head.fc1.b')));
        if (ctx.training) x = G.dropout(x, o.dropout, 'dropout:head.hidden');
        return { score: G.reshape(G.linear(x, ctx.param('head.fc2.w'), ctx.param('head.fc2.b')), [b]) };
      },
    };
  },
};
