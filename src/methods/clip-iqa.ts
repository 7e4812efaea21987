/**
 * Zero-shot CLIP-IQA and the trained CLIP-IQA+, as pyiqa computes them by default: CLIP-IQA over pyiqa's
 * five antonym pairs (the paper's single "Good photo."/"Bad photo." pair is an option), CLIP-IQA+ with its
 * 16 learned context tokens split around "Good photo.." / "Bad photo.." (CoOp's layout is an option).
 */
import * as G from '../graph/graph.js';
import { type Value } from '../graph/graph.js';
import { encodeTexts } from '../clip/encoders.js';
import { TextPrompts } from '../prompts/text.js';
import { type Method, classProbs, firstClass } from './method.js';
import { type CommonOptions, commonSchema, spec } from './options.js';
import { type PositionalEmbeddingMode, type ResNetOptions } from '../clip/resnet.js';

const PAIRS = {
  // pyiqa's clipiqa, spelt as pyiqa spells them
  pyiqa: [
    ['Good image', 'bad image'],
    ['Sharp image', 'blurry image'],
    ['sharp edges', 'blurry edges'],
    ['High resolution image', 'low resolution image'],
    ['Noise-free image', 'noisy image'],
  ],
  good: [['Good photo.', 'Bad photo.']],
  all: [
    ['Good photo.', 'Bad photo.'],
    ['High quality photo.', 'Low quality photo.'],
    ['Sharp photo.', 'Blurry photo.'],
  ],
} as const satisfies Record<string, ReadonlyArray<readonly [string, string]>>;

/**
 * How pyiqa's CLIP-IQA reads an image, with a ResNet or a ViT alike: at full resolution ('auto' views)
 * with no positional embedding by default (pyiqa's `pos_embedding=False`), the whole image as it is.
 */
interface ImageReading extends CommonOptions {
  positionalEmbedding: PositionalEmbeddingMode;
}

const POSITIONAL_EMBEDDING = spec.choice(
  ['none', 'interpolated', 'native'],
  'none',
  "the image tower's positional embedding (a ResNet's attention pool's, a ViT's): none (pyiqa's pos_embedding=False, its default), pyiqa's bicubic resize to the image (True), both at any size, or OpenAI's (native size only: testViews=auto then resizes)",
);

function imageReading(o: ImageReading): ResNetOptions {
  return { positionalEmbedding: o.positionalEmbedding };
}

export interface ClipIqaOptions extends ImageReading {
  pairs: keyof typeof PAIRS;
}

export const clipIqa: Method<ClipIqaOptions> = {
  info: {
    name: 'clip-iqa',
    description: 'Zero-shot CLIP-IQA as pyiqa: p(positive) within five antonym pairs, averaged; no training',
    lowerBetter: false,
    scoreRange: [0, 1],
    trainable: false,
    defaultModel: 'timm/resnet50_clip.openai',
  },
  options: {
    ...commonSchema({ testViews: 'auto' }),
    positionalEmbedding: POSITIONAL_EMBEDDING,
    pairs: spec.choice(
      ['pyiqa', 'good', 'all'],
      'pyiqa',
      'the antonym pairs, a softmax within each and the mean of the positive ones: pyiqa\'s five (good/bad, sharp/blurry image, sharp/blurry edges, high/low resolution, noise-free/noisy), the paper\'s "Good/Bad photo." alone, or that with "High/Low quality photo." and "Sharp/Blurry photo."',
    ),
  },
  imageInput: 'features',
  imageEncoder: imageReading,
  target: (unit) => unit,
  build(o, { weights, tokenizer }) {
    const texts = PAIRS[o.pairs].flat();
    return {
      init: () => new Map(),
      text: (ctx) => ({ pairs: encodeTexts(ctx.bank, weights, tokenizer, texts) }),
      forward(_ctx, image, text) {
        // one softmax per antonym pair, then the mean of the positive probabilities
        const t = text.pairs!;
        const nPairs = t.shape[0]! / 2;
        let sum: Value | null = null;
        for (let k = 0; k < nPairs; k++) {
          const p = firstClass(classProbs(weights, image, G.slice(t, 0, 2 * k, 2 * k + 2)));
          sum = sum ? G.add(sum, p) : p;
        }
        return { score: nPairs > 1 ? G.mul(sum!, 1 / nPairs) : sum! };
      },
    };
  },
};

export interface ClipIqaPlusOptions extends ImageReading {
  nCtx: number;
  layout: 'pyiqa' | 'coop';
  perClass: boolean;
}

/** The prompt texts of each layout (the learner appends a period): pyiqa's "X … X Good photo.." and CoOp's "X … X Good photo.". */
const PLUS_CLASSES = { pyiqa: ['Good photo.', 'Bad photo.'], coop: ['Good photo', 'Bad photo'] } as const;

export const clipIqaPlus: Method<ClipIqaPlusOptions> = {
  info: {
    name: 'clip-iqa+',
    description: 'CLIP-IQA+: 16 learned context tokens around "Good/Bad photo.." (as pyiqa places them), MSE on MOS in [0, 1]',
    lowerBetter: false,
    scoreRange: [0, 1],
    trainable: true,
    defaultModel: 'timm/resnet50_clip.openai',
  },
  options: {
    ...commonSchema({
      optimizer: 'sgd',
      lr: 0.002,
      momentum: 0.9,
      weightDecay: 5e-4,
      batchSize: 64,
      epochs: 50,
      schedule: 'cosine',
      testViews: 'auto',
    }),
    positionalEmbedding: POSITIONAL_EMBEDDING,
    nCtx: spec.integer(16, 'learned context tokens around the antonym pair', { min: 1 }),
    layout: spec.choice(
      ['pyiqa', 'coop'],
      'pyiqa',
      'where the context goes: split in two halves around "Good photo.." (pyiqa and the CLIP-IQA authors), or all before "Good photo." (CoOp)',
      // checkpoints trained before this option had CoOp's layout
      { legacy: 'coop' },
    ),
    perClass: spec.boolean(false, 'one context per prompt ([2, nCtx, width]) instead of one shared by both'),
  },
  imageInput: 'features',
  imageEncoder: imageReading,
  released: {
    holds: 'parameters',
    describe: "pyiqa's released CLIP-IQA+ prompts (CLIP-IQA+_learned_prompts-*.pth: the context tensor, [16, width] or [2, 16, width])",
    read(file, clip) {
      // the file is the bare tensor; the 512-px variants keep it in a whole module state under params
      const name = ['', 'params.prompt_learner.ctx', 'prompt_learner.ctx'].find((n) => file.has(n));
      if (name === undefined) throw new Error(`${file.path}: no CLIP-IQA+ context in it (a bare tensor, or params.prompt_learner.ctx)`);
      const ctx = file.readFloat32(name);
      const width = clip.config.textWidth;
      const [nCls, n, w] = ctx.shape.length === 2 ? [1, ctx.shape[0]!, ctx.shape[1]!] : [ctx.shape[0]!, ctx.shape[1]!, ctx.shape[2]!];
      if (ctx.shape.length < 2 || ctx.shape.length > 3 || w !== width || (ctx.shape.length === 3 && nCls !== 2)) {
        throw new Error(
          `${file.path}: the context is [${ctx.shape.join(', ')}]; CLIP-IQA+ on this CLIP (text width ${width}) needs [nCtx, ${width}] or [2, nCtx, ${width}]`,
        );
      }
      // pyiqa loads the 512-px files strictly: its module has the context and the prompt's fixed token embeddings
      // (token_prefix, token_suffix, which promptiqa recomputes), nothing else in the dict that holds them
      const container = name.slice(0, name.length - 'prompt_learner.ctx'.length);
      const known = new Set(name === '' ? [''] : ['ctx', 'token_prefix', 'token_suffix'].map((k) => `${container}prompt_learner.${k}`));
      const unexpected = file.keys().filter((k) => k.startsWith(container) && !known.has(k));
      return {
        params: new Map([['quality.ctx', ctx]]),
        options: { layout: 'pyiqa', nCtx: n, perClass: ctx.shape.length === 3 },
        unexpected,
      };
    },
  },
  target: (unit) => unit,
  build(o, { weights, tokenizer }) {
    const prompts = new TextPrompts(
      {
        name: 'quality',
        classes: PLUS_CLASSES[o.layout],
        nCtx: o.nCtx,
        perClass: o.perClass,
        classAt: o.layout === 'pyiqa' ? 'middle' : 'end',
      },
      weights,
      tokenizer,
    );
    return {
      init: (rng) => prompts.init(rng),
      text: (ctx) => ({ quality: prompts.build(ctx) }),
      forward: (_ctx, image, text) => ({ score: firstClass(classProbs(weights, image, text.quality!)) }),
    };
  },
};
