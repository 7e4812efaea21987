/**
 * Every registered method on the tiny reference CLIPs, on one provider (`methodOutputs`): the inputs that the
 * WebGPU parity test and its child process share. A method runs on the tiny stand-in of its paper's backbone
 * (RN50 → tiny-rn, ViT-B/16 → tiny-vit-p16, else tiny-vit-p32), so the ResNet and both ViT encoders are covered.
 */
import { join } from 'node:path';
import { type Provider } from '../../src/graph/runtime.js';
import { METHODS, loadBackbone } from '../../src/methods/index.js';
import { type Method } from '../../src/methods/method.js';
import { type Backbone } from '../../src/methods/graphs.js';
import { decodeImage } from '../../src/data/image.js';
import { crop } from '../../src/data/preprocess.js';
import { type RgbImage } from '../../src/data/rgb.js';
import { type MethodOutputs, methodOutputs } from '../../src/bench/parity.js';
import { sharedDir } from './shared.js';

const ref = join(sharedDir(), 'reference');

/** The tiny reference model standing in for a method's paper backbone. */
export function tinyModelFor(method: Method): string {
  const m = method.info.defaultModel.toLowerCase();
  return join(ref, /resnet|rn50/.test(m) ? 'tiny-rn' : /patch16|vit-b-16|b16/.test(m) ? 'tiny-vit-p16' : 'tiny-vit-p32');
}

/**
 * Two reference images, cut to 288 × 240 and 240 × 256 (LIQE refuses sides under 224; a small image keeps the views
 * few: every method still scores several views of each, the slow part on a software adapter).
 */
export async function parityImages(): Promise<RgbImage[]> {
  const [a, b] = await Promise.all(['wide_640x480.png', 'AttnGAN_normal_000.jpg'].map((f) => decodeImage(join(ref, 'images', f))));
  return [crop(a!, 100, 80, 288, 240), crop(b!, 40, 20, 240, 256)];
}

/** Each method's outputs on `provider`, with its trained parameters multiplied by `perturb` (the negative control). */
export async function parityOutputs(provider: Provider, perturb = 1, methods: readonly Method[] = METHODS): Promise<MethodOutputs[]> {
  const backbones = new Map<string, Promise<Backbone>>();
  const images = await parityImages();
  return methodOutputs({
    methods,
    backbone: (method) => {
      const model = tinyModelFor(method);
      if (!backbones.has(model)) backbones.set(model, loadBackbone(model));
      return backbones.get(model)!;
    },
    images,
    runtime: { provider, threads: 2 },
    batch: 2,
    perturb,
  });
}
