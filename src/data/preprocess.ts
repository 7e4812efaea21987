import type { RgbImage } from './rgb.js';
import type { Rng } from '../util/rng.js';

/** OpenAI CLIP's normalisation. */
export const CLIP_MEAN: readonly number[] = Object.freeze([0.48145466, 0.4578275, 0.40821073]);
export const CLIP_STD: readonly number[] = Object.freeze([0.26862954, 0.26130258, 0.27577711]);
export const IMAGENET_MEAN: readonly number[] = Object.freeze([0.485, 0.456, 0.406]);
export const IMAGENET_STD: readonly number[] = Object.freeze([0.229, 0.224, 0.225]);

// ---------------------------------------------------------------------------------------------------------
// Bicubic resize, as PIL's Resample.c (Pillow 9.x) computes it for 8-bit images.

/** PIL's fixed-point precision for 8-bit resampling: coefficients are scaled by 2^22. */
const PRECISION_BITS = 32 - 8 - 2;
const BICUBIC_SUPPORT = 2;

function bicubicFilter(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs {
  ksize: number;
  /** per output pixel: first input pixel and number of taps */
  bounds: Int32Array;
  /** per output pixel, ksize fixed-point weights */
  kk: Int32Array;
}

/** PIL's precompute_coeffs + normalize_coeffs_8bpc for the box [0, inSize]. */
function precomputeCoeffs(inSize: number, outSize: number): Coeffs {
  const scale = inSize / outSize;
  // Downscaling widens the kernel by the scale (antialiasing); upscaling keeps it.
  const filterscale = Math.max(scale, 1);
  const support = BICUBIC_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    // C's (int) truncates toward zero; the clamp to 0 makes that equal to PIL's rounding here.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = bicubicFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x]! / ww : k[x]!;
      // Round half away from zero, as PIL does.
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

/** PIL's clip8: fixed-point sum to a byte. */
function clip8(v: number): number {
  if (v >= 1 << (PRECISION_BITS + 8)) return 255;
  if (v <= 0) return 0;
  return v >> PRECISION_BITS;
}

const HALF = 1 << (PRECISION_BITS - 1);

/**
 * Resizes with PIL's `Image.resize(size, Image.BICUBIC)` arithmetic exactly: a separable cubic convolution
 * (a = -0.5) whose support grows with the downscale factor, fixed-point weights, the horizontal pass first,
 * rounded and clipped to 8 bits before the vertical pass. A dimension that does not change is not resampled.
 */
export function resizeBicubic(img: RgbImage, width: number, height: number): RgbImage {
  checkSize(width, height, 'resizeBicubic');
  if (width === img.width && height === img.height) return { width, height, data: img.data.slice() };
  const cv = precomputeCoeffs(img.height, height);
  let src = img;
  if (width !== img.width) {
    const ch = precomputeCoeffs(img.width, width);
    // Only the input rows that the vertical pass reads are resampled horizontally.
    const yFirst = height !== img.height ? cv.bounds[0]! : 0;
    const yLast = height !== img.height ? cv.bounds[height * 2 - 2]! + cv.bounds[height * 2 - 1]! : img.height;
    const rows = yLast - yFirst;
    const tmp = new Uint8Array(width * rows * 3);
    const inData = img.data;
    for (let y = 0; y < rows; y++) {
      const rowIn = (y + yFirst) * img.width * 3;
      const rowOut = y * width * 3;
      for (let xx = 0; xx < width; xx++) {
        const xmin = ch.bounds[xx * 2]!;
        const n = ch.bounds[xx * 2 + 1]!;
        const kOff = xx * ch.ksize;
        let s0 = HALF,
          s1 = HALF,
          s2 = HALF;
        for (let x = 0; x < n; x++) {
          const w = ch.kk[kOff + x]!;
          const p = rowIn + (xmin + x) * 3;
          s0 += inData[p]! * w;
          s1 += inData[p + 1]! * w;
          s2 += inData[p + 2]! * w;
        }
        tmp[rowOut + xx * 3] = clip8(s0);
        tmp[rowOut + xx * 3 + 1] = clip8(s1);
        tmp[rowOut + xx * 3 + 2] = clip8(s2);
      }
    }
    if (height !== img.height) for (let i = 0; i < height; i++) cv.bounds[i * 2]! -= yFirst;
    src = { width, height: rows, data: tmp };
  }
  if (height === img.height) return src;
  const out = new Uint8Array(width * height * 3);
  const rowLen = width * 3;
  const inData = src.data;
  for (let yy = 0; yy < height; yy++) {
    const ymin = cv.bounds[yy * 2]!;
    const n = cv.bounds[yy * 2 + 1]!;
    const kOff = yy * cv.ksize;
    const rowOut = yy * rowLen;
    for (let i = 0; i < rowLen; i++) {
      let s = HALF;
      for (let y = 0; y < n; y++) s += inData[(ymin + y) * rowLen + i]! * cv.kk[kOff + y]!;
      out[rowOut + i] = clip8(s);
    }
  }
  return { width, height, data: out };
}

/**
 * PIL's `Image.resize(size, Image.NEAREST)`: source pixel floor((x + 0.5) * in / out), the position stepped
 * by repeated addition as PIL's affine scaler does. PIL resizes palette and 1-bit images this way whatever
 * filter is asked for, which is what OpenAI's CLIP pipeline does to a palette PNG.
 */
export function resizeNearest(img: RgbImage, width: number, height: number): RgbImage {
  checkSize(width, height, 'resizeNearest');
  const table = (inSize: number, outSize: number): Int32Array => {
    const t = new Int32Array(outSize);
    const step = inSize / outSize;
    let pos = step * 0.5;
    for (let i = 0; i < outSize; i++, pos += step) t[i] = Math.min(Math.trunc(pos), inSize - 1);
    return t;
  };
  const xs = table(img.width, width),
    ys = table(img.height, height);
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const row = ys[y]! * img.width;
    for (let x = 0; x < width; x++) {
      const s = (row + xs[x]!) * 3,
        d = (y * width + x) * 3;
      out[d] = img.data[s]!;
      out[d + 1] = img.data[s + 1]!;
      out[d + 2] = img.data[s + 2]!;
    }
  }
  return { width, height, data: out };
}

// ---------------------------------------------------------------------------------------------------------
// Geometry

function checkSize(width: number, height: number, what: string): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new RangeError(`${what}: size must be positive integers, not ${width}x${height}`);
  }
}

/** Python's round(): halves go to the even neighbour. torchvision's CenterCrop uses it. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The short side to `size`, the long side to int(size * long / short), bicubic: torchvision's `Resize(size)`
 * on a PIL image (an image already at that size is returned as a copy).
 */
export function resizeShortSide(img: RgbImage, size: number): RgbImage {
  checkSize(size, size, 'resizeShortSide');
  const { width: w, height: h } = img;
  const [short, long] = w <= h ? [w, h] : [h, w];
  const newLong = Math.floor((size * long) / short);
  return w <= h ? resizeBicubic(img, size, newLong) : resizeBicubic(img, newLong, size);
}

/**
 * The w×h region at (left, top); any part outside the image is zeros (as PIL's `Image.crop`), so the
 * offsets may be negative or the region larger than the image.
 */
export function crop(img: RgbImage, left: number, top: number, w: number, h: number): RgbImage {
  checkSize(w, h, 'crop');
  if (!Number.isInteger(left) || !Number.isInteger(top)) throw new RangeError(`crop: offsets must be integers, not ${left},${top}`);
  const out = new Uint8Array(w * h * 3);
  const x0 = Math.max(left, 0),
    x1 = Math.min(left + w, img.width);
  const y0 = Math.max(top, 0),
    y1 = Math.min(top + h, img.height);
  if (x1 > x0) {
    for (let y = y0; y < y1; y++) {
      const src = (y * img.width + x0) * 3;
      out.set(img.data.subarray(src, src + (x1 - x0) * 3), ((y - top) * w + (x0 - left)) * 3);
    }
  }
  return { width: w, height: h, data: out };
}

/** Offset of a centred crop along one side, as torchvision's `center_crop` (zero-padded when smaller). */
function centerOffset(side: number, size: number): number {
  return side >= size ? roundHalfEven((side - size) / 2) : -Math.floor((size - side) / 2);
}

/** torchvision's `CenterCrop(size)`: offset round((side - size) / 2) with Python's rounding; pads with zeros if smaller. */
export function centerCrop(img: RgbImage, size: number): RgbImage {
  return crop(img, centerOffset(img.width, size), centerOffset(img.height, size), size, size);
}

export function flipHorizontal(img: RgbImage): RgbImage {
  const { width, height, data } = img;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < height; y++) {
    const row = y * width * 3;
    for (let x = 0; x < width; x++) {
      const s = row + x * 3,
        d = row + (width - 1 - x) * 3;
      out[d] = data[s]!;
      out[d + 1] = data[s + 1]!;
      out[d + 2] = data[s + 2]!;
    }
  }
  return { width, height, data: out };
}

/**
 * A size×size crop at a uniformly random position, without resizing. A side shorter than `size` is padded
 * with zeros and the image lands at a random place inside the crop, as torchvision's
 * `RandomCrop(size, pad_if_needed=True)` does. The top offset is drawn first, then the left.
 */
export function randomCrop(img: RgbImage, size: number, rng: Rng): RgbImage {
  checkSize(size, size, 'randomCrop');
  const offset = (side: number): number => (side >= size ? rng.int(side - size + 1) : -rng.int(size - side + 1));
  const top = offset(img.height);
  const left = offset(img.width);
  return crop(img, left, top, size, size);
}

/**
 * torchvision's `RandomResizedCrop(size, scale, ratio, BICUBIC)`: up to 10 tries at a region of a random
 * area fraction and log-uniform aspect ratio that fits, else the centre crop clamped to the ratio range;
 * the region is then resized (PIL bicubic) to size×size.
 */
export function randomResizedCrop(
  img: RgbImage,
  size: number,
  rng: Rng,
  scale: [number, number] = [0.08, 1],
  ratio: [number, number] = [3 / 4, 4 / 3],
): RgbImage {
  checkSize(size, size, 'randomResizedCrop');
  const { width, height } = img;
  const area = width * height;
  const logRatio = [Math.log(ratio[0]), Math.log(ratio[1])] as const;
  const uniform = (a: number, b: number): number => a + (b - a) * rng.uniform();
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * uniform(scale[0], scale[1]);
    const aspect = Math.exp(uniform(logRatio[0], logRatio[1]));
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      return resizeBicubic(crop(img, left, top, w, h), size, size);
    }
  }
  const inRatio = width / height;
  const lo = Math.min(...ratio),
    hi = Math.max(...ratio);
  let w = width,
    h = height;
  if (inRatio < lo) h = roundHalfEven(w / lo);
  else if (inRatio > hi) w = roundHalfEven(h * hi);
  return resizeBicubic(crop(img, Math.floor((width - w) / 2), Math.floor((height - h) / 2), w, h), size, size);
}

/**
 * Where sliding windows go along a side:
 * - 'unfold': at 0, stride, 2·stride, … while the window fits, as PyTorch's `nn.Unfold(size, stride)` (Fu's
 *   test path). Pixels past the last window are not seen: 512 at size 224 and stride 64 gives 0, 64, 128,
 *   192, 256, and the last 32 pixels are left out.
 * - 'edge-to-edge': the same number of windows spread evenly from 0 to L − size, so the whole side is
 *   covered (steps of at least `stride`; more windows are added if a step would leave a gap): 512 gives
 *   0, 72, 144, 216, 288.
 */
export type WindowPlacement = 'unfold' | 'edge-to-edge';

/**
 * Top-left corners of size×size windows over a width×height image, top row first. Per side of length L,
 * n = floor((L − size) / stride) + 1 windows (the count `nn.Unfold` gives), placed as `placement` says. A side
 * not longer than `size` has one window at 0, which a crop pads with zeros (`nn.Unfold` fails there).
 */
export function slidingWindowBoxes(
  width: number,
  height: number,
  size: number,
  stride: number,
  placement: WindowPlacement = 'unfold',
): Array<{ left: number; top: number }> {
  checkSize(width, height, 'slidingWindowBoxes');
  checkSize(size, stride, 'slidingWindowBoxes size/stride');
  if (placement !== 'unfold' && placement !== 'edge-to-edge')
    throw new RangeError(`slidingWindowBoxes: unknown placement "${String(placement)}" (unfold, edge-to-edge)`);
  const xs = windowPositions(width, size, stride, placement);
  const ys = windowPositions(height, size, stride, placement);
  const boxes: Array<{ left: number; top: number }> = [];
  for (const top of ys) for (const left of xs) boxes.push({ left, top });
  return boxes;
}

function windowPositions(length: number, size: number, stride: number, placement: WindowPlacement): number[] {
  if (length <= size) return [0];
  const span = length - size;
  if (placement === 'unfold') return Array.from({ length: Math.floor(span / stride) + 1 }, (_, i) => i * stride);
  const n = Math.max(Math.floor(span / stride) + 1, Math.ceil(span / size) + 1);
  return Array.from({ length: n }, (_, i) => Math.round((i * span) / (n - 1)));
}

// ---------------------------------------------------------------------------------------------------------
// Tensors

/**
 * CHW float32 of (x / 255 - mean) / std, computed in float32 steps as torchvision's ToTensor + Normalize.
 * Writes into `out` at `offset` (for batching) when given.
 */
export function toTensor(img: RgbImage, mean: readonly number[], std: readonly number[], out?: Float32Array, offset = 0): Float32Array {
  const plane = img.width * img.height;
  const target = out ?? new Float32Array(3 * plane);
  if (offset < 0 || offset + 3 * plane > target.length) {
    throw new RangeError(`toTensor: ${3 * plane} values at offset ${offset} do not fit an array of ${target.length}`);
  }
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    // 256 possible values per channel: a lookup table is exact and cheap.
    const lut = new Float32Array(256);
    const m = f(mean[c]!),
      s = f(std[c]!);
    for (let v = 0; v < 256; v++) lut[v] = f(f(f(v / 255) - m) / s);
    const base = offset + c * plane;
    const data = img.data;
    for (let i = 0; i < plane; i++) target[base + i] = lut[data[i * 3 + c]!]!;
  }
  return target;
}

/**
 * CLIP's preprocessing: short side to `size` (PIL bicubic), centre crop, normalise; [3, size, size].
 * The image is already RGB, so a palette image is resized in RGB (as Hugging Face's processor does) rather
 * than with PIL's nearest-neighbour on palette indices (as OpenAI's pipeline does).
 */
export function clipPreprocess(
  img: RgbImage,
  size = 224,
  mean: readonly number[] = CLIP_MEAN,
  std: readonly number[] = CLIP_STD,
): Float32Array {
  return toTensor(centerCrop(resizeShortSide(img, size), size), mean, std);
}
