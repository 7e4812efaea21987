/** How a method's images become tensors: its test views and its training augmentation. */
import { type RgbImage } from '../data/rgb.js';
import {
  CLIP_MEAN,
  CLIP_STD,
  IMAGENET_MEAN,
  IMAGENET_STD,
  resizeShortSide,
  centerCrop,
  crop,
  flipHorizontal,
  randomCrop,
  randomResizedCrop,
  slidingWindowBoxes,
  toTensor,
} from '../data/preprocess.js';
import { type CommonOptions as Options } from './options.js';
import { type Rng } from '../util/rng.js';
import { type ClipConfig } from '../clip/config.js';
import { wholeImageRefusal } from '../clip/encoders.js';

function norm(o: Options): [readonly number[], readonly number[]] {
  return o.normalize === 'imagenet' ? [IMAGENET_MEAN, IMAGENET_STD] : [CLIP_MEAN, CLIP_STD];
}

/** An image a method cannot score (e.g. too small for its windows): a per-image error, not a failed batch. */
export class ImageRefusedError extends Error {}

/** A normalised view of an image: [3, height, width], channel-major. */
export interface View {
  data: Float32Array;
  height: number;
  width: number;
}

/** A square view of the model's input size. */
export function squareView(data: Float32Array, size: number): View {
  return { data, height: size, width: size };
}

/**
 * Why the image tower cannot read a whole image of this size, or undefined where it can.
 */
export type WholeImageCheck = (width: number, height: number) => string | undefined;

/**
 * The views an image is scored on; its score is their mean. `whole`: given where the image tower, as the
 * method reads images, takes any size (a positional embedding that is left out or resized); then 'auto'
 * scores the whole image, and an image it refuses is refused with 'full' views. Else 'auto' is one resized view.
 */
export function testViews(img: RgbImage, o: Options, size: number, whole?: WholeImageCheck): View[] {
  const [mean, std] = norm(o);
  const mode = o.testViews === 'auto' ? (whole ? 'full' : 'resize') : o.testViews;
  switch (mode) {
    case 'sliding':
      return slidingWindowBoxes(img.width, img.height, size, o.stride, o.windows).map(({ left, top }) =>
        squareView(toTensor(crop(img, left, top, size, size), mean, std), size),
      );
    case 'full': {
      // the whole image as it is, as pyiqa scores CLIP-IQA (an image tower that takes any size)
      const why = whole?.(img.width, img.height);
      if (why !== undefined) throw new ImageRefusedError(`${img.width}×${img.height} pixels: ${why}`);
      return [{ data: toTensor(img, mean, std), height: img.height, width: img.width }];
    }
    default:
      return [squareView(toTensor(centerCrop(resizeShortSide(img, size), size), mean, std), size)];
  }
}

/**
 * How a scorer turns a decoded image into its views, as plain data: what a worker thread needs to make the same
 * views as the scorer (`viewsByRule`), bit for bit.
 */
export interface ViewRule {
  /** the method's name (a method with views of its own is looked up by it) */
  method: string;
  options: Options;
  /** the model's input size */
  size: number;
  /** the CLIP's configuration where the image tower reads whole images (a positional embedding left out or resized) */
  whole?: ClipConfig;
  /** whether the method has views of its own (`Method.views`) */
  ownViews: boolean;
}

/** The views an image is scored on under `rule`: the method's own rule (`own`), else the common test views. */
export function viewsByRule(rule: ViewRule, img: RgbImage, own?: (img: RgbImage, o: Options, size: number) => View[]): View[] {
  if (rule.ownViews) {
    if (!own) throw new Error(`${rule.method}: the method's own views are not available here`);
    return own(img, rule.options, rule.size);
  }
  const c = rule.whole;
  return testViews(img, rule.options, rule.size, c ? (w, h) => wholeImageRefusal(c, w, h) : undefined);
}

/** One augmented training view. */
export function trainView(img: RgbImage, o: Options, size: number, rng: Rng): Float32Array {
  const [mean, std] = norm(o);
  let view: RgbImage;
  switch (o.augment) {
    case 'random-resized-crop+flip':
      view = randomResizedCrop(img, size, rng, [0.08, 1]);
      if (rng.uniform() < 0.5) view = flipHorizontal(view);
      break;
    case 'crop+flip':
      view = randomCrop(img, size, rng);
      if (rng.uniform() < 0.5) view = flipHorizontal(view);
      break;
    default:
      view = centerCrop(resizeShortSide(img, size), size);
  }
  return toTensor(view, mean, std);
}
