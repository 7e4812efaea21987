/**
 * Tang et al. (ICPR 2024, "CLIP-AGIQA"): a shared 4-token context initialised from "a photo of a" for
 * six quality classes, and a regression head on the image feature concatenated with the six class
 * text features. Both encoders are frozen, so image features can be computed apart from the head.
 */
import * as G from '../graph/graph.js';
import { TextPrompts } from '../prompts/text.js';
import { linearInit } from '../prompts/context.js';
import { type Method, COMMON_DEFAULTS, qualityLoss } from './method.js';

const CLASSES = ['terrible', 'bad', 'poor', 'average', 'good', 'perfect'];

function prompts(o: Record<string, unknown>, ...rest: ConstructorParameters<typeof TextPrompts> extends [unknown, ...infer R] ? R : never): TextPrompts {
  return new TextPrompts({ name: 'text', classes: CLASSES, nCtx: 4, initPhrase: String(o.initPhrase) }, ...rest);
}

export const tang: Method = {
  info: {
    name: 'tang', description: 'Tang (CLIP-AGIQA, ICPR 2024): six learned quality-class prompts and a regression head, MSE on raw MOS',
    lowerBetter: false, scoreRange: [0, 5], trainable: true, defaultModel: 'openai/clip-vit-base-patch16',
  },
  defaults: {
    ...COMMON_DEFAULTS, initPhrase: 'a photo of a', hidden: 512, dropout: 0.5,
    optimizer: 'sgd', lr: 0.002, momentum: 0.9, weightDecay: 5e-4, batchSize: 32, epochs: 100,
    schedule: 'cosine', warmupEpochs: 1, warmupLr: 1e-5, augment: 'random-resized-crop+flip', testViews: 'resize',
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
