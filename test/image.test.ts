import { pngClaiming } from './helpers/png.js';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import sharp, { type Sharp } from 'sharp';
import { SafeTensorsFile } from '../src/clip/safetensors.js';
import { decodeImage, ImageDecodeError, maxImageFileBytes, readImageHeader } from '../src/data/image.js';
import type { RgbImage } from '../src/data/rgb.js';
import { findUnreadableImages } from '../src/data/check.js';
import {
  CLIP_MEAN,
  CLIP_STD,
  IMAGENET_MEAN,
  IMAGENET_STD,
  centerCrop,
  clipPreprocess,
  crop,
  flipHorizontal,
  randomCrop,
  randomResizedCrop,
  resizeBicubic,
  resizeNearest,
  resizeShortSide,
  roundHalfEven,
  slidingWindowBoxes,
  toTensor,
} from '../src/data/preprocess.js';
import { sharedDir } from './helpers/shared.js';
import { cli } from './helpers/cli.js';
import { createMetric } from '../src/methods/index.js';
import { Rng } from '../src/util/rng.js';

/** An image whose every byte differs from its neighbours, so misplaced pixels show. */
function pattern(width: number, height: number, seed = 1): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + seed * 101 + (i >> 5)) & 255;
  return { width, height, data };
}

function pixel(img: RgbImage, x: number, y: number): number[] {
  const i = (y * img.width + x) * 3;
  return [...img.data.subarray(i, i + 3)];
}

async function rejects(promise: Promise<unknown>, file: string, problem: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof ImageDecodeError, `expected ImageDecodeError, got ${String(err)}`);
    assert.equal(err.file, file);
    assert.ok(err.message.includes(file), `message "${err.message}" does not name ${file}`);
    assert.match(err.message, problem);
    return true;
  });
}

// -------------------------------------------------------------------------------------------------------
describe('CLIP preprocessing against the reference (PIL 9.4 + torchvision 0.14)', () => {
  const ref = join(sharedDir(), 'reference');
  const file = SafeTensorsFile.open(join(ref, 'preprocess.safetensors'));
  const files = JSON.parse(file.metadata.files!) as string[];
  const pixels = file.readFloat32('pixel_values');
  file.close();
  const n = 3 * 224 * 224;

  function errors(x: Float32Array, i: number): { max: number; mean: number } {
    let max = 0,
      sum = 0;
    for (let j = 0; j < n; j++) {
      const d = Math.abs(x[j]! - pixels.data[i * n + j]!);
      if (d > max) max = d;
      sum += d;
    }
    return { max, mean: sum / n };
  }

  it('has the expected layout', () => {
    assert.deepEqual(pixels.shape, [files.length, 3, 224, 224]);
    assert.equal(files.length, 7);
  });

  for (const [i, name] of files.entries()) {
    it(`matches for ${name}`, async () => {
      const img = await decodeImage(join(ref, 'images', name));
      const x = clipPreprocess(img);
      assert.equal(x.length, n);
      const { max, mean } = errors(x, i);
      console.log(
        `  ${name} (${img.width}x${img.height}): max abs error ${max.toExponential(3)}, mean ${mean.toExponential(3)} (normalised units)`,
      );
      if (name.startsWith('palette')) {
        // Documented difference: the reference resized palette indices with nearest-neighbour, we resize RGB.
        assert.ok(max < 2.1 && mean < 0.35, `palette image: max ${max}, mean ${mean}`);
        const nearest = toTensor(centerCrop(resizeNearest(img, 224, 429), 224), CLIP_MEAN, CLIP_STD);
        const e = errors(nearest, i);
        console.log(`  ${name} with PIL's nearest-neighbour instead: max ${e.max.toExponential(3)}, mean ${e.mean.toExponential(3)}`);
        assert.ok(e.max < 1e-6, 'nearest-neighbour reproduces the reference, so the difference is only the resampling choice');
      } else if (name.endsWith('.png')) {
        // Lossless input: PIL's integer arithmetic is reproduced exactly.
        assert.ok(max < 1e-6, `max ${max}`);
      } else {
        // JPEG: the same, unless the bundled libjpeg decodes differently from PIL's.
        assert.ok(max < 0.02 && mean < 1e-3, `max ${max}, mean ${mean}`);
      }
    });
  }
});

// -------------------------------------------------------------------------------------------------------
describe('resize', () => {
  it('keeps a constant image constant, up and down', () => {
    const img = { width: 37, height: 23, data: new Uint8Array(37 * 23 * 3).fill(200) };
    for (const [w, h] of [
      [10, 7],
      [100, 50],
      [37, 60],
      [5, 23],
    ] as const) {
      const out = resizeBicubic(img, w, h);
      assert.equal(out.width, w);
      assert.equal(out.height, h);
      assert.ok(out.data.every((v) => v === 200));
    }
  });

  it('returns a copy at the same size', () => {
    const img = pattern(8, 6);
    const out = resizeBicubic(img, 8, 6);
    assert.deepEqual(out.data, img.data);
    assert.notEqual(out.data, img.data);
  });

  it('clips overshoot to 0..255', () => {
    // A hard edge makes the cubic overshoot; PIL clips it after each pass.
    const img = { width: 4, height: 1, data: new Uint8Array([0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255]) };
    const out = resizeBicubic(img, 16, 3);
    assert.ok(out.data.includes(0) && out.data.includes(255));
  });

  it('resizes the short side as torchvision Resize(size)', () => {
    const size = (w: number, h: number): [number, number] => {
      const out = resizeShortSide({ width: w, height: h, data: new Uint8Array(w * h * 3) }, 224);
      return [out.width, out.height];
    };
    assert.deepEqual(size(640, 480), [298, 224]);
    assert.deepEqual(size(157, 301), [224, 429]);
    assert.deepEqual(size(512, 512), [224, 224]);
    assert.deepEqual(size(224, 300), [224, 300]);
  });

  it("nearest-neighbour picks PIL's source pixels", () => {
    const img = pattern(4, 1);
    const out = resizeNearest(img, 8, 1);
    for (let x = 0; x < 8; x++) assert.deepEqual(pixel(out, x, 0), pixel(img, x >> 1, 0));
    const down = resizeNearest(pattern(9, 3), 3, 1);
    assert.deepEqual(pixel(down, 0, 0), pixel(pattern(9, 3), 1, 1));
  });
});

// -------------------------------------------------------------------------------------------------------
describe('crops', () => {
  it('crop copies the region and pads outside with zeros', () => {
    const img = pattern(10, 8);
    const c = crop(img, 2, 3, 4, 2);
    assert.equal(c.width, 4);
    assert.equal(c.height, 2);
    assert.deepEqual(pixel(c, 0, 0), pixel(img, 2, 3));
    assert.deepEqual(pixel(c, 3, 1), pixel(img, 5, 4));
    const p = crop(img, -2, -1, 14, 10);
    assert.deepEqual(pixel(p, 0, 0), [0, 0, 0]);
    assert.deepEqual(pixel(p, 2, 1), pixel(img, 0, 0));
    assert.deepEqual(pixel(p, 11, 8), pixel(img, 9, 7));
    assert.deepEqual(pixel(p, 13, 9), [0, 0, 0]);
    assert.throws(() => crop(img, 0, 0, 0, 4), RangeError);
  });

  it('centerCrop rounds half to even, as torchvision', () => {
    assert.equal(roundHalfEven(102.5), 102);
    assert.equal(roundHalfEven(1.5), 2);
    assert.equal(roundHalfEven(-1.5), -2);
    assert.equal(roundHalfEven(37), 37);
    const img = pattern(429, 230);
    const c = centerCrop(img, 224);
    // left round(205 / 2) = 102, top round(6 / 2) = 3
    assert.deepEqual(pixel(c, 0, 0), pixel(img, 102, 3));
    const odd = pattern(9, 7);
    // left round(2.5) = 2, top round(1.5) = 2
    assert.deepEqual(pixel(centerCrop(odd, 4), 0, 0), pixel(odd, 2, 2));
  });

  it('centerCrop pads a small image with zeros, as torchvision', () => {
    const img = pattern(3, 6);
    const c = centerCrop(img, 6);
    // width padded (6 - 3) // 2 = 1 on the left, 2 on the right
    assert.deepEqual(pixel(c, 0, 0), [0, 0, 0]);
    assert.deepEqual(pixel(c, 1, 0), pixel(img, 0, 0));
    assert.deepEqual(pixel(c, 3, 5), pixel(img, 2, 5));
    assert.deepEqual(pixel(c, 4, 5), [0, 0, 0]);
  });

  it('flipHorizontal mirrors each row', () => {
    const img = pattern(5, 3);
    const f = flipHorizontal(img);
    for (let y = 0; y < 3; y++) for (let x = 0; x < 5; x++) assert.deepEqual(pixel(f, x, y), pixel(img, 4 - x, y));
    assert.deepEqual(flipHorizontal(f).data, img.data);
  });

  it('randomCrop stays inside, is reproducible, and pads a small side', () => {
    const img = pattern(50, 40);
    const a = randomCrop(img, 32, new Rng(7));
    const b = randomCrop(img, 32, new Rng(7));
    assert.deepEqual(a.data, b.data);
    const seen = new Set<string>();
    const rng = new Rng(1);
    for (let i = 0; i < 200; i++) {
      const c = randomCrop(img, 32, rng);
      assert.equal(c.width, 32);
      // the crop's first pixel identifies its offset
      let found = '';
      for (let y = 0; y <= 8 && !found; y++) {
        for (let x = 0; x <= 18 && !found; x++) if (crop(img, x, y, 32, 32).data.every((v, j) => v === c.data[j])) found = `${x},${y}`;
      }
      assert.ok(found, 'crop is not a 32x32 region inside the image');
      seen.add(found);
    }
    assert.ok(seen.size > 50, `only ${seen.size} distinct offsets`);
    const small = randomCrop(pattern(10, 40), 32, new Rng(3));
    assert.equal(small.width, 32);
    assert.equal(small.height, 32);
  });

  it('randomResizedCrop is reproducible with a seed and gives size×size', () => {
    const img = pattern(120, 90);
    const a = randomResizedCrop(img, 64, new Rng(42));
    const b = randomResizedCrop(img, 64, new Rng(42));
    const c = randomResizedCrop(img, 64, new Rng(43));
    assert.equal(a.width, 64);
    assert.equal(a.height, 64);
    assert.deepEqual(a.data, b.data);
    assert.notDeepEqual(a.data, c.data);
  });

  it('randomResizedCrop falls back to the ratio-clamped centre', () => {
    // No region of 2–3 times the area fits, so all 10 tries fail.
    const img = pattern(100, 10);
    const out = randomResizedCrop(img, 16, new Rng(0), [2, 3]);
    // in-ratio 10 > 4/3: h = 10, w = round(10 * 4/3) = 13, left = (100 - 13) // 2 = 43
    assert.deepEqual(out.data, resizeBicubic(crop(img, 43, 0, 13, 10), 16, 16).data);
  });
});

// -------------------------------------------------------------------------------------------------------
describe('sliding windows', () => {
  it('by default sits at 0, 64, 128, … as nn.Unfold(224, stride=64): 25 windows on 512x512, the last 32 px unseen', () => {
    const boxes = slidingWindowBoxes(512, 512, 224, 64);
    assert.equal(boxes.length, 25);
    assert.deepEqual([...new Set(boxes.map((b) => b.left))], [0, 64, 128, 192, 256]);
    assert.deepEqual(boxes[1], { left: 64, top: 0 }, 'row by row, as nn.Unfold orders its columns');
    assert.deepEqual(boxes[24], { left: 256, top: 256 });
    assert.deepEqual(
      slidingWindowBoxes(512, 300, 224, 64)
        .map((b) => b.top)
        .filter((t, i, a) => a.indexOf(t) === i),
      [0, 64],
    );
  });

  it('unfold positions are exactly those of nn.Unfold: every k·stride whose window fits', () => {
    const rng = new Rng(7);
    for (let t = 0; t < 200; t++) {
      const size = 16 + rng.int(300),
        len = size + 1 + rng.int(900),
        stride = 1 + rng.int(2 * size);
      const expected: number[] = [];
      for (let p = 0; p + size <= len; p += stride) expected.push(p);
      assert.deepEqual(
        slidingWindowBoxes(len, size, size, stride, 'unfold').map((b) => b.left),
        expected,
        `L ${len}, size ${size}, stride ${stride}`,
      );
    }
  });

  it('edge-to-edge: 25 windows on 512x512 at size 224, stride 64, flush with the edges', () => {
    const boxes = slidingWindowBoxes(512, 512, 224, 64, 'edge-to-edge');
    assert.equal(boxes.length, 25);
    assert.deepEqual([...new Set(boxes.map((b) => b.left))], [0, 72, 144, 216, 288]);
    assert.deepEqual(boxes[0], { left: 0, top: 0 });
    assert.deepEqual(boxes[24], { left: 288, top: 288 });
  });

  it('edge-to-edge covers every pixel, within the image', () => {
    const rng = new Rng(5);
    for (let t = 0; t < 200; t++) {
      const w = 1 + rng.int(900),
        h = 1 + rng.int(900),
        size = 16 + rng.int(300),
        stride = 1 + rng.int(size);
      const boxes = slidingWindowBoxes(w, h, size, stride, 'edge-to-edge');
      const xs = [...new Set(boxes.map((b) => b.left))],
        ys = [...new Set(boxes.map((b) => b.top))];
      assert.equal(boxes.length, xs.length * ys.length);
      for (const [pos, len] of [
        [xs, w],
        [ys, h],
      ] as const) {
        assert.equal(pos[0], 0);
        if (len > size) {
          assert.equal(pos.at(-1)! + size, len, 'last window flush with the edge');
          assert.equal(pos.length, Math.max(Math.floor((len - size) / stride) + 1, Math.ceil((len - size) / size) + 1));
        } else {
          assert.equal(pos.length, 1);
        }
        for (let i = 1; i < pos.length; i++) assert.ok(pos[i]! > pos[i - 1]! && pos[i]! - pos[i - 1]! <= size, 'no gap between windows');
      }
    }
  });

  it('gives one window at 0 on a side not longer than the window, with either placement (nn.Unfold fails there)', () => {
    for (const placement of ['unfold', 'edge-to-edge'] as const) {
      assert.deepEqual(slidingWindowBoxes(224, 100, 224, 64, placement), [{ left: 0, top: 0 }]);
      assert.deepEqual(
        slidingWindowBoxes(100, 400, 224, 64, placement).map((b) => b.left),
        [0, 0, 0],
      );
    }
  });

  it('refuses an unknown placement', () => {
    assert.throws(() => slidingWindowBoxes(512, 512, 224, 64, 'middle' as never), /unknown placement "middle" \(unfold, edge-to-edge\)/);
  });
});

// -------------------------------------------------------------------------------------------------------
describe('toTensor', () => {
  it('writes CHW (x/255 - mean)/std at an offset', () => {
    const img = { width: 2, height: 1, data: new Uint8Array([0, 128, 255, 10, 20, 30]) };
    const out = new Float32Array(20).fill(NaN);
    toTensor(img, IMAGENET_MEAN, IMAGENET_STD, out, 4);
    assert.ok(Number.isNaN(out[3]!) && Number.isNaN(out[10]!));
    const expect = [0, 10, 128, 20, 255, 30].map((v, i) => Math.fround((v / 255 - IMAGENET_MEAN[i >> 1]!) / IMAGENET_STD[i >> 1]!));
    for (let i = 0; i < 6; i++) assert.ok(Math.abs(out[4 + i]! - expect[i]!) < 1e-6, `value ${i}`);
    assert.throws(() => toTensor(img, CLIP_MEAN, CLIP_STD, new Float32Array(6), 1), RangeError);
  });
});

// -------------------------------------------------------------------------------------------------------
interface BmpSpec {
  width: number;
  height: number;
  bpp: number;
  /** unpadded rows, top row first */
  rows?: Uint8Array[];
  /** pixel data written as is (RLE) */
  raw?: Uint8Array;
  topDown?: boolean;
  headerSize?: 12 | 40 | 108 | 124;
  compression?: number;
  masks?: number[];
  palette?: Array<[number, number, number]>;
}

/** Writes a BMP by the format's rules, independently of the decoder. */
function makeBmp(s: BmpSpec): Buffer {
  const headerSize = s.headerSize ?? 40;
  const header = Buffer.alloc(headerSize);
  header.writeUInt32LE(headerSize, 0);
  if (headerSize === 12) {
    header.writeUInt16LE(s.width, 4);
    header.writeUInt16LE(s.height, 6);
    header.writeUInt16LE(1, 8);
    header.writeUInt16LE(s.bpp, 10);
  } else {
    header.writeInt32LE(s.width, 4);
    header.writeInt32LE(s.topDown ? -s.height : s.height, 8);
    header.writeUInt16LE(1, 12);
    header.writeUInt16LE(s.bpp, 14);
    header.writeUInt32LE(s.compression ?? 0, 16);
    header.writeUInt32LE(s.palette?.length ?? 0, 32);
    if (s.masks && headerSize >= 52) s.masks.forEach((m, i) => header.writeUInt32LE(m >>> 0, 40 + i * 4));
  }
  const extraMasks = s.masks && headerSize === 40 ? Buffer.from(new Uint32Array(s.masks).buffer) : Buffer.alloc(0);
  const entry = headerSize === 12 ? 3 : 4;
  const palette = Buffer.alloc((s.palette?.length ?? 0) * entry);
  s.palette?.forEach(([r, g, b], i) => palette.set([b, g, r], i * entry));
  let pixels: Buffer;
  if (s.raw) {
    pixels = Buffer.from(s.raw);
  } else {
    const stride = Math.ceil((s.width * s.bpp) / 32) * 4;
    pixels = Buffer.alloc(stride * s.height);
    s.rows!.forEach((row, y) => pixels.set(row, (s.topDown ? y : s.height - 1 - y) * stride));
  }
  const offset = 14 + headerSize + extraMasks.length + palette.length;
  const file = Buffer.alloc(14);
  file.write('BM', 0, 'latin1');
  file.writeUInt32LE(offset + pixels.length, 2);
  file.writeUInt32LE(offset, 10);
  return Buffer.concat([file, header, extraMasks, palette, pixels]);
}

/** A temporary folder for one describe block (made before, removed after): save(name, bytes) → path, at(name) → path. */
function tempFiles(prefix: string): { save: (name: string, bytes: Uint8Array) => string; at: (name: string) => string } {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), prefix));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const at = (name: string): string => join(dir, name);
  const save = (name: string, bytes: Uint8Array): string => {
    writeFileSync(at(name), bytes);
    return at(name);
  };
  return { save, at };
}

describe('decodeImage', () => {
  const { save, at } = tempFiles('promptiqa-image-');
  const src = pattern(7, 5);
  const raw = { raw: { width: 7, height: 5, channels: 3 as const } };

  it('decodes PNG, lossless WebP, TIFF exactly', async () => {
    for (const [name, bytes] of [
      ['rgb.png', await sharp(src.data, raw).png().toBuffer()],
      ['rgb.webp', await sharp(src.data, raw).webp({ lossless: true }).toBuffer()],
      ['rgb.tiff', await sharp(src.data, raw).tiff({ compression: 'lzw' }).toBuffer()],
    ] as const) {
      const img = await decodeImage(save(name, bytes));
      assert.deepEqual({ w: img.width, h: img.height }, { w: 7, h: 5 }, name);
      assert.deepEqual(img.data, src.data, name);
    }
  });

  it('decodes JPEG close to its source', async () => {
    const flat = { width: 16, height: 16, data: new Uint8Array(16 * 16 * 3).fill(90) };
    const img = await decodeImage(
      save(
        'flat.jpg',
        await sharp(flat.data, { raw: { width: 16, height: 16, channels: 3 } })
          .jpeg({ quality: 95 })
          .toBuffer(),
      ),
    );
    assert.ok(img.data.every((v) => Math.abs(v - 90) <= 2));
  });

  it('decodes 16-bit PNG to the high byte', async () => {
    const v = new Uint16Array(7 * 5 * 3).map((_, i) => (i * 1873 + 77) & 0xffff);
    const png = await sharp(v, raw).toColourspace('rgb16').png().toBuffer();
    assert.equal((await sharp(png).metadata()).depth, 'ushort');
    const img = await decodeImage(save('rgb16.png', png));
    for (let i = 0; i < v.length; i++) assert.ok(Math.abs(img.data[i]! - v[i]! / 257) <= 1, `value ${i}`);
  });

  it('decodes grey and grey+alpha PNG to R = G = B, dropping alpha', async () => {
    const grey = new Uint8Array(35).map((_, i) => i * 7);
    const ga = new Uint8Array(70).map((_, i) => (i % 2 ? (i * 13) & 255 : grey[i >> 1]!));
    for (const [name, bytes, channels] of [
      [
        'grey.png',
        await sharp(grey, { raw: { width: 7, height: 5, channels: 1 } })
          .toColourspace('b-w')
          .png()
          .toBuffer(),
        1,
      ],
      [
        'grey-alpha.png',
        await sharp(ga, { raw: { width: 7, height: 5, channels: 2 } })
          .toColourspace('b-w')
          .png()
          .toBuffer(),
        2,
      ],
    ] as const) {
      assert.equal((await sharp(bytes).metadata()).channels, channels);
      const img = await decodeImage(save(name, bytes));
      for (let i = 0; i < 35; i++) assert.deepEqual(pixel(img, i % 7, Math.floor(i / 7)), [grey[i], grey[i], grey[i]], name);
    }
  });

  it('drops alpha without compositing, as PIL convert("RGB")', async () => {
    const rgba = new Uint8Array(7 * 5 * 4);
    for (let i = 0; i < 35; i++) rgba.set([...src.data.subarray(i * 3, i * 3 + 3), i % 3 === 0 ? 0 : 128], i * 4);
    const png = await sharp(rgba, { raw: { width: 7, height: 5, channels: 4 } })
      .png()
      .toBuffer();
    const img = await decodeImage(save('rgba.png', png));
    assert.deepEqual(img.data, src.data);
  });

  it('decodes palette PNG', async () => {
    const colours = [
      [255, 0, 0],
      [0, 128, 255],
      [10, 200, 30],
      [250, 250, 250],
    ];
    const data = new Uint8Array(7 * 5 * 3);
    for (let i = 0; i < 35; i++) data.set(colours[(i * 7) % 4]!, i * 3);
    const png = await sharp(data, raw).png({ palette: true, colours: 4, dither: 0 }).toBuffer();
    assert.equal((await sharp(png).metadata()).isPalette, true);
    const img = await decodeImage(save('palette.png', png));
    for (let i = 0; i < data.length; i++) assert.ok(Math.abs(img.data[i]! - data[i]!) <= 4, `value ${i}`);
  });

  it('decodes the first frame of an animated GIF', async () => {
    const frames = new Uint8Array(7 * 10 * 3);
    frames.fill(20, 0, 105);
    frames.fill(220, 105);
    const gif = await sharp(frames, { raw: { width: 7, height: 10, channels: 3, pageHeight: 5 } })
      .gif()
      .toBuffer();
    assert.equal((await sharp(gif).metadata()).pages, 2);
    const img = await decodeImage(save('anim.gif', gif));
    assert.deepEqual([img.width, img.height], [7, 5]);
    assert.ok(img.data.every((v) => Math.abs(v - 20) <= 2));
  });

  describe('EXIF orientation', () => {
    // stored 40x20: left half red, right half blue; displayed (orientation 6, 90° clockwise) 20x40: top red, bottom blue
    const data = new Uint8Array(40 * 20 * 3);
    for (let y = 0; y < 20; y++) for (let x = 0; x < 40; x++) data.set(x < 20 ? [255, 0, 0] : [0, 0, 255], (y * 40 + x) * 3);
    const stored = sharp(data, { raw: { width: 40, height: 20, channels: 3 } });

    it('is ignored by default, as PIL convert("RGB") ignores it: the pixels as stored (PNG exactly, JPEG closely)', async () => {
      const png = await stored.clone().png().withMetadata({ orientation: 6 }).toBuffer();
      assert.equal((await sharp(png).metadata()).orientation, 6);
      const fromPng = await decodeImage(save('exif6.png', png));
      assert.deepEqual([fromPng.width, fromPng.height], [40, 20]);
      assert.deepEqual(fromPng.data, data);

      const jpg = await stored.clone().jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
      assert.equal((await sharp(jpg).metadata()).orientation, 6);
      const fromJpg = await decodeImage(save('exif6.jpg', jpg));
      assert.deepEqual([fromJpg.width, fromJpg.height], [40, 20]);
      const [r0, , b0] = pixel(fromJpg, 5, 10);
      const [r1, , b1] = pixel(fromJpg, 35, 10);
      assert.ok(r0! > 200 && b0! < 60, `left is red: ${pixel(fromJpg, 5, 10).join(', ')}`);
      assert.ok(b1! > 200 && r1! < 60, `right is blue: ${pixel(fromJpg, 35, 10).join(', ')}`);
    });

    it('is applied with applyExifOrientation: 6 turns the image 90° clockwise', async () => {
      const png = await stored.clone().png().withMetadata({ orientation: 6 }).toBuffer();
      const img = await decodeImage(save('exif6-applied.png', png), { applyExifOrientation: true });
      assert.deepEqual([img.width, img.height], [20, 40]);
      // displayed (x, y) is stored (y, 19 - x) after a clockwise quarter turn
      for (let y = 0; y < 40; y++)
        for (let x = 0; x < 20; x++)
          assert.deepEqual(pixel(img, x, y), [...data.subarray(((19 - x) * 40 + y) * 3, ((19 - x) * 40 + y) * 3 + 3)]);
      const jpg = await stored.clone().jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
      const fromJpg = await decodeImage(jpg, { applyExifOrientation: true });
      assert.deepEqual([fromJpg.width, fromJpg.height], [20, 40]);
      const [r0, , b0] = pixel(fromJpg, 10, 5);
      const [r1, , b1] = pixel(fromJpg, 10, 35);
      assert.ok(r0! > 200 && b0! < 60, `top is red: ${pixel(fromJpg, 10, 5).join(', ')}`);
      assert.ok(b1! > 200 && r1! < 60, `bottom is blue: ${pixel(fromJpg, 10, 35).join(', ')}`);
    });
  });

  it('follows applyExifOrientation through createMetric and score --exif-orientation', async () => {
    // a 64x32 noise image stored with orientation 6, and the same pixels turned as the tag says
    const noise = sharp({
      create: { width: 64, height: 32, channels: 3, background: 'grey', noise: { type: 'gaussian', mean: 128, sigma: 50 } },
    });
    const storedPng = await noise.clone().png().toBuffer();
    const tagged = save('tagged.png', await sharp(storedPng).png().withMetadata({ orientation: 6 }).toBuffer());
    const stored = save('stored.png', storedPng);
    const turned = save('turned.png', await sharp(storedPng).rotate(90).png().toBuffer());
    const model = join(sharedDir(), 'reference', 'tiny-vit-p32');
    const scores = async (applyExifOrientation?: boolean): Promise<number[]> => {
      const metric = await createMetric('clip-iqa', { model, ...(applyExifOrientation === undefined ? {} : { applyExifOrientation }) });
      try {
        const out: number[] = [];
        for await (const r of metric.scoreFiles([tagged, stored, turned])) out.push('score' in r ? r.score : NaN);
        out.push(await metric.score(tagged));
        return out;
      } finally {
        await metric.close();
      }
    };
    const [plain, asStored, asTurned, plainOne] = await scores();
    assert.notEqual(asStored, asTurned, 'the turn changes the score, or this test proves nothing');
    assert.equal(plain, asStored);
    assert.equal(plainOne, asStored);
    const [applied, , , appliedOne] = await scores(true);
    assert.equal(applied, asTurned);
    assert.equal(appliedOne, asTurned);
    const viaCli = async (...flags: string[]): Promise<number> => {
      const r = await cli('score', tagged, '--method', 'clip-iqa', '--model', model, '--format', 'json', ...flags);
      assert.equal(r.code, 0, r.err);
      return (JSON.parse(r.out) as Array<{ score: number }>)[0]!.score;
    };
    assert.equal(await viaCli(), asStored);
    assert.equal(await viaCli('--exif-orientation'), asTurned);
  });

  it('decodes a buffer, naming it in errors', async () => {
    const img = await decodeImage(await sharp(src.data, raw).png().toBuffer());
    assert.deepEqual(img.data, src.data);
    await rejects(decodeImage(new Uint8Array(0), { name: 'buf.png' }), 'buf.png', /empty/);
  });

  it('accepts a JPEG that only makes libjpeg warn (extraneous bytes before a marker)', async () => {
    const jpg = await sharp(src.data, raw).jpeg().toBuffer();
    const eoi = jpg.length - 2;
    const warned = Buffer.concat([jpg.subarray(0, eoi), Buffer.from([1, 2, 3]), jpg.subarray(eoi)]);
    const img = await decodeImage(save('extraneous.jpg', warned));
    assert.deepEqual([img.width, img.height], [7, 5]);
  });

  describe('BMP', () => {
    const decodeBmpFile = (name: string, spec: BmpSpec): Promise<RgbImage> => decodeImage(save(name, makeBmp(spec)));
    const expect = (img: RgbImage, rows: number[][][]): void => {
      assert.deepEqual([img.width, img.height], [rows[0]!.length, rows.length]);
      rows.forEach((row, y) => row.forEach((p, x) => assert.deepEqual(pixel(img, x, y), p, `pixel ${x},${y}`)));
    };

    it('24-bit bottom-up with row padding, and with an OS/2 core header', async () => {
      const rows = [
        [
          [1, 2, 3],
          [4, 5, 6],
          [7, 8, 9],
        ],
        [
          [10, 11, 12],
          [13, 14, 15],
          [16, 17, 18],
        ],
      ];
      const bgr = rows.map((r) => Uint8Array.from(r.flatMap(([r_, g, b]) => [b!, g!, r_!])));
      expect(await decodeBmpFile('24.bmp', { width: 3, height: 2, bpp: 24, rows: bgr }), rows);
      expect(await decodeBmpFile('24-core.bmp', { width: 3, height: 2, bpp: 24, rows: bgr, headerSize: 12 }), rows);
      expect(await decodeBmpFile('24-topdown.bmp', { width: 3, height: 2, bpp: 24, rows: bgr, topDown: true }), rows);
    });

    it('8-bit palette with a short colour table', async () => {
      const palette: Array<[number, number, number]> = [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
      ];
      const idx = [
        [0, 1, 2, 1, 0],
        [2, 2, 1, 0, 0],
      ];
      const img = await decodeBmpFile('8.bmp', { width: 5, height: 2, bpp: 8, palette, rows: idx.map((r) => Uint8Array.from(r)) });
      expect(
        img,
        idx.map((r) => r.map((i) => palette[i]!)),
      );
    });

    it('1-bit and 4-bit palette', async () => {
      const palette: Array<[number, number, number]> = [
        [0, 0, 0],
        [255, 255, 255],
        [9, 8, 7],
        [1, 2, 3],
      ];
      // 1-bit, 10 wide: 1010011101 | 0110000000
      const one = await decodeBmpFile('1.bmp', {
        width: 10,
        height: 1,
        bpp: 1,
        palette: palette.slice(0, 2),
        rows: [Uint8Array.from([0b10100111, 0b01000000])],
      });
      expect(one, [[1, 0, 1, 0, 0, 1, 1, 1, 0, 1].map((i) => palette[i]!)]);
      const four = await decodeBmpFile('4.bmp', { width: 3, height: 1, bpp: 4, palette, rows: [Uint8Array.from([0x23, 0x10])] });
      expect(four, [[2, 3, 1].map((i) => palette[i]!)]);
    });

    it('32-bit BI_RGB top-down and BI_BITFIELDS with a V5 header', async () => {
      const rows = [
        [
          [1, 2, 3],
          [200, 100, 50],
        ],
        [
          [7, 8, 9],
          [10, 20, 30],
        ],
      ];
      const bgrx = rows.map((r) => Uint8Array.from(r.flatMap(([r_, g, b]) => [b!, g!, r_!, 99])));
      expect(await decodeBmpFile('32.bmp', { width: 2, height: 2, bpp: 32, rows: bgrx, topDown: true }), rows);
      // RGBA byte order described by masks
      const rgba = rows.map((r) => Uint8Array.from(r.flatMap(([r_, g, b]) => [r_!, g!, b!, 0])));
      expect(
        await decodeBmpFile('32-v5.bmp', {
          width: 2,
          height: 2,
          bpp: 32,
          rows: rgba,
          headerSize: 124,
          compression: 3,
          masks: [0xff, 0xff00, 0xff0000, 0xff000000],
        }),
        rows,
      );
    });

    it('16-bit 5-5-5 and 5-6-5 bit fields', async () => {
      const word = (v: number): Uint8Array => Uint8Array.from([v & 255, v >> 8]);
      // 5-5-5: r=31, g=16, b=1
      const rgb555 = await decodeBmpFile('16.bmp', { width: 1, height: 1, bpp: 16, rows: [word((31 << 10) | (16 << 5) | 1)] });
      expect(rgb555, [[[255, Math.floor((16 * 255) / 31), Math.floor(255 / 31)]]]);
      // 5-6-5 with masks after an INFO header: r=0, g=63, b=16
      const rgb565 = await decodeBmpFile('565.bmp', {
        width: 1,
        height: 1,
        bpp: 16,
        rows: [word((63 << 5) | 16)],
        compression: 3,
        masks: [0xf800, 0x07e0, 0x001f],
      });
      expect(rgb565, [[[0, 255, Math.floor((16 * 255) / 31)]]]);
    });

    it('RLE8 and RLE4', async () => {
      const palette: Array<[number, number, number]> = [
        [0, 0, 0],
        [10, 10, 10],
        [20, 20, 20],
        [30, 30, 30],
      ];
      // bottom row: 4 × index 1; top row: absolute run 3,2,1 then end of bitmap (last pixel skipped → index 0)
      const rle8 = Uint8Array.from([4, 1, 0, 0, 0, 3, 3, 2, 1, 0, 0, 1]);
      const img8 = await decodeBmpFile('rle8.bmp', { width: 4, height: 2, bpp: 8, palette, compression: 1, raw: rle8 });
      expect(img8, [[3, 2, 1, 0].map((i) => palette[i]!), [1, 1, 1, 1].map((i) => palette[i]!)]);
      const rle4 = Uint8Array.from([5, 0x12, 0, 1]);
      const img4 = await decodeBmpFile('rle4.bmp', { width: 5, height: 1, bpp: 4, palette, compression: 2, raw: rle4 });
      expect(img4, [[1, 2, 1, 2, 1].map((i) => palette[i]!)]);
    });

    it('reports bad BMPs naming the file', async () => {
      const good = makeBmp({ width: 4, height: 4, bpp: 24, rows: Array.from({ length: 4 }, () => new Uint8Array(12)) });
      await rejects(decodeImage(save('short.bmp', good.subarray(0, good.length - 20))), at('short.bmp'), /truncated/);
      await rejects(decodeImage(save('header.bmp', good.subarray(0, 20))), at('header.bmp'), /truncated/);
      const bomb = makeBmp({ width: 100000, height: 100000, bpp: 24, raw: new Uint8Array(16) });
      await rejects(decodeImage(save('bomb.bmp', bomb)), at('bomb.bmp'), /100000x100000.*limit/);
      const jpegInBmp = makeBmp({ width: 4, height: 4, bpp: 24, compression: 4, raw: new Uint8Array(16) });
      await rejects(decodeImage(save('jpeg.bmp', jpegInBmp)), at('jpeg.bmp'), /BI_JPEG/);
      const badRle = makeBmp({ width: 4, height: 2, bpp: 8, palette: [[0, 0, 0]], compression: 1, raw: Uint8Array.from([4, 0, 0]) });
      await rejects(decodeImage(save('rle.bmp', badRle)), at('rle.bmp'), /truncated/);
    });
  });

  describe('bad input is an ImageDecodeError naming the file', () => {
    it('missing file', async () => {
      const path = at('nope.jpg');
      await rejects(decodeImage(path), path, /no such file/);
    });

    it('empty file', async () => {
      const path = save('empty.png', new Uint8Array(0));
      await rejects(decodeImage(path), path, /empty/);
    });

    it('truncated JPEG', async () => {
      const noise = await sharp({
        create: { width: 64, height: 64, channels: 3, background: 'grey', noise: { type: 'gaussian', mean: 128, sigma: 40 } },
      })
        .jpeg()
        .toBuffer();
      const path = save('truncated.jpg', noise.subarray(0, noise.length >> 1));
      await rejects(decodeImage(path), path, /truncated/);
    });

    it('random bytes', async () => {
      const rng = new Rng(9);
      const path = save(
        'random.png',
        Uint8Array.from({ length: 4096 }, () => rng.int(256)),
      );
      await rejects(decodeImage(path), path, /not a supported image/);
    });

    it('a PNG header claiming 100000x100000 (decompression bomb)', async () => {
      const path = save('bomb.png', pngClaiming(100000, 100000));
      await rejects(decodeImage(path), path, /100000x100000 = 10000000000 pixels, over the limit/);
    });

    it('an image over a lowered maxPixels', async () => {
      const path = save('big.png', await sharp(src.data, raw).png().toBuffer());
      await rejects(decodeImage(path, { maxPixels: 34 }), path, /7x5 = 35 pixels, over the limit of 34/);
    });

    it('a header libvips finds corrupt without a reason: a whole sentence, not a bare colon', async () => {
      const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      const path = save('corrupt-header.png', png);
      for (const read of [decodeImage, readImageHeader]) {
        await rejects(read(path), path, /^.*corrupt-header\.png: corrupt PNG header \(the decoder gave no reason\)$/);
        await assert.rejects(read(path), (err: Error) => !/:\s*$/.test(err.message) && !/Input buffer/.test(err.message));
      }
      const jpeg = save('corrupt.jpg', Uint8Array.from([0xff, 0xd8, 0, 0, 0, 0]));
      await rejects(
        decodeImage(jpeg),
        jpeg,
        /: truncated or corrupt JPEG image data \(premature end of JPEG image; JPEG datastream contains no image\)$/,
      );
    });
  });

  describe('only regular files are read, up to a size that follows maxPixels', () => {
    const devZero = '/dev/zero';
    const unix = process.platform !== 'win32';

    it('refuses /dev/zero, and a zero.jpg link to it, without reading it', { skip: !unix }, async () => {
      const link = at('zero.jpg');
      symlinkSync(devZero, link);
      for (const path of [devZero, link]) {
        await rejects(decodeImage(path), path, /it is a character device, not a regular file/);
        await rejects(readImageHeader(path), path, /it is a character device, not a regular file/);
      }
      assert.deepEqual(
        (await findUnreadableImages([link])).map((u) => u.problem),
        ['it is a character device, not a regular file'],
      );
    });

    it('refuses a FIFO without waiting for a writer', { skip: !unix, timeout: 20_000 }, async () => {
      const fifo = at('pipe.png');
      execFileSync('mkfifo', [fifo]);
      await rejects(decodeImage(fifo), fifo, /it is a FIFO \(named pipe\), not a regular file/);
      await rejects(readImageHeader(fifo), fifo, /it is a FIFO \(named pipe\), not a regular file/);
    });

    it('refuses a file larger than maxPixels × 8 bytes + 16 MiB before reading it', async () => {
      assert.equal(maxImageFileBytes(), 100e6 * 8 + 16 * 2 ** 20);
      const maxPixels = 1000;
      const cap = maxImageFileBytes(maxPixels);
      assert.equal(cap, 8000 + 16 * 2 ** 20);
      // a valid PNG at the front, then a sparse tail: nothing is written, nothing should be read
      const path = save('huge.png', await sharp(src.data, raw).png().toBuffer());
      truncateSync(path, cap + 1);
      await rejects(
        decodeImage(path, { maxPixels }),
        path,
        /the file is 16785217 bytes, more than the 16785216 bytes an image under the limit of 1000 pixels/,
      );
      await rejects(readImageHeader(path, { maxPixels }), path, /more than the 16785216 bytes/);
      // at the cap itself it is read: a PNG followed by zeros decodes, or fails as such, but is not refused for its size
      truncateSync(path, cap);
      const outcome = await decodeImage(path, { maxPixels: 1000 }).then(
        (img) => `decoded ${img.width}x${img.height}`,
        (err: Error) => err.message,
      );
      assert.doesNotMatch(outcome, /more than the/);
    });
  });

  it('leaves no growing memory over 100 decodes', async () => {
    const jpg = await sharp({
      create: { width: 1024, height: 768, channels: 3, background: 'grey', noise: { type: 'gaussian', mean: 128, sigma: 30 } },
    })
      .jpeg()
      .toBuffer();
    const path = save('memory.jpg', jpg);
    let rssAfterWarmup = 0;
    for (let i = 0; i < 100; i++) {
      const img = await decodeImage(path);
      assert.equal(img.width, 1024);
      if (i === 19) rssAfterWarmup = process.memoryUsage().rss;
    }
    const growth = (process.memoryUsage().rss - rssAfterWarmup) / 2 ** 20;
    console.log(`  RSS growth over decodes 20..100 of a 1024x768 JPEG: ${growth.toFixed(1)} MiB`);
    // each decode makes 2.3 MiB of pixels; a leak or an unbounded cache would grow by about 180 MiB
    assert.ok(growth < 60, `RSS grew ${growth.toFixed(1)} MiB`);
  });
});

// -------------------------------------------------------------------------------------------------------
describe('decodeImage: CMYK, end markers, error attribution', () => {
  const { save } = tempFiles('promptiqa-image-');
  const noise = (): Promise<Buffer> =>
    sharp({ create: { width: 64, height: 48, channels: 3, background: 'grey', noise: { type: 'gaussian', mean: 128, sigma: 40 } } })
      .jpeg()
      .toBuffer();

  it('converts an Adobe CMYK JPEG to RGB as PIL does', async () => {
    // a 12x8 CMYK JPEG (Adobe marker, inverted) and its pixels from PIL 9.4: Image.open(f).convert('RGB').tobytes()
    const jpg = Buffer.from(
      '/9j/7gAOQWRvYmUAZAAAAAAA/9sAQwADAgIDAgIDAwMDBAMDBAUIBQUEBAUKBwcGCAwKDAwLCgsLDQ4SEA0OEQ4LCxAWEBETFBUVFQwPFxgWFBgSFBUU/8AAFAgACAAMBEMRAE0RAFkRAEsRAP/EABgAAAIDAAAAAAAAAAAAAAAAAAYJBAcI/8QAKRAAAQMDBAEDBAMAAAAAAAAAAQIDBAUGEQAHCCETEiJRCRYjMUFh0f/aAA4EQwBNAFkASwAAPwAI4i8c3bU3DptarVsVGtNtOhSIbSg2FKz7ckgkjP8AAAz86t2N9LnbWBDl13cGuFFNgsuSpKg8mOww2hJUpx15fSUJAJV0AAD3rXXIbmtRdo466fSqXJrlakfhjNtdep1R9KAlIBUslWAAAMnoaY5uXDuqq0KXHodSp1useMl+pTsrUhAGVYAwlPWfcScfGm20+6Y70JlyRGdpy1pz4HylKgP67/X+aBlcUOLbq1qpu7lhORc9H7ghKIPxkO6TZcdkbnckLqrt5UGy7pupl2atiRLplGkTENvABSmlLQ2oBQC0kpJyAoHHY1HsW36tRLcjwy/EnePrzsO+pKv1r//Z',
      'base64',
    );
    const pil = Buffer.from(
      '113afc0d36ff152cfb141cfb2114fe3b07ff5f09f78e04e2ab099ecb0b67e40f32f71304134bff1136fa0f30ff1531ff3029f84a21fe6e18ea9222b0a9276dc32d42dd351ff442121b54f1165afe205afc2d55fd3652ff5251e47549a780476da2514fbd5831dc610ff16e022d85ff2985fd2d80f7377ff24a83ce61748b60635981784c9b7d37b78822d28e15e8950832b2fb38abf740b7e24cbeaf52b18663c3767bc65989b23ea1b329b9bc1fcebd0ce0c20c47ddee4aefde50eeb759f89c62f87c74fb5f8bf64f9bfc2eaef61ebef414cbec0ee5ea1268fbdc62ffbb75f7a287fc9291ff689af749a7ff33b7f417cbff10d9fe09e7ff0bf1ff058fffc89bf7b2a5fea8a4ff69b7fc5ac2ff40c5f6149f026ac1012dd60003e70a02e11efd',
      'hex',
    );
    const img = await decodeImage(save('cmyk.jpg', jpg));
    assert.deepEqual([img.width, img.height], [12, 8]);
    let worst = 0;
    for (let i = 0; i < pil.length; i++) worst = Math.max(worst, Math.abs(img.data[i]! - pil[i]!));
    assert.ok(worst <= 1, `largest difference from PIL ${worst}`);
  });

  it('reads a JPEG that lacks only its end marker, and refuses one whose data stops early', async () => {
    const jpg = await noise();
    assert.deepEqual([...jpg.subarray(-2)], [0xff, 0xd9]);
    const whole = await decodeImage(jpg);
    const noEnd = await decodeImage(save('no-eoi.jpg', jpg.subarray(0, jpg.length - 2)));
    assert.deepEqual(noEnd, whole);
    const cut = save('cut.jpg', jpg.subarray(0, jpg.length - 40));
    await rejects(decodeImage(cut), cut, /truncated/);
  });

  it("names each file's own problem when truncated PNGs and JPEGs fail at the same time", async () => {
    const png = await sharp({
      create: { width: 64, height: 48, channels: 3, background: 'grey', noise: { type: 'gaussian', mean: 128, sigma: 40 } },
    })
      .png()
      .toBuffer();
    const jpg = await noise();
    const badPng = save('cut.png', png.subarray(0, png.length >> 1));
    const badJpg = save('cut-half.jpg', jpg.subarray(0, jpg.length >> 1));
    const messages = new Map<string, Set<string>>([
      [badPng, new Set()],
      [badJpg, new Set()],
    ]);
    // libvips's own words, which the message rewords without the loaders' names
    const causes = new Map<string, Set<string>>([
      [badPng, new Set()],
      [badJpg, new Set()],
    ]);
    for (let round = 0; round < 10; round++) {
      const files = Array.from({ length: 16 }, (_, i) => (i % 2 ? badPng : badJpg));
      const results = await Promise.allSettled(files.map((f) => decodeImage(f)));
      results.forEach((r, i) => {
        assert.equal(r.status, 'rejected');
        messages.get(files[i]!)!.add((r.reason as Error).message);
        causes.get(files[i]!)!.add(((r.reason as Error).cause as Error).message);
      });
    }
    assert.deepEqual([...messages.get(badPng)!].length, 1, [...messages.get(badPng)!].join('\n'));
    assert.deepEqual([...messages.get(badJpg)!].length, 1, [...messages.get(badJpg)!].join('\n'));
    const [pngMessage] = messages.get(badPng)!;
    const [jpgMessage] = messages.get(badJpg)!;
    assert.match(pngMessage!, /png/i);
    assert.doesNotMatch(pngMessage!, /JPEG/);
    assert.match(jpgMessage!, /JPEG/);
    assert.doesNotMatch(jpgMessage!, /png/i);
    assert.deepEqual([...causes.get(badPng)!].length, 1, [...causes.get(badPng)!].join('\n'));
    assert.deepEqual([...causes.get(badJpg)!].length, 1, [...causes.get(badJpg)!].join('\n'));
    const [pngCause] = causes.get(badPng)!;
    const [jpgCause] = causes.get(badJpg)!;
    assert.doesNotMatch(pngCause!, /VipsJpeg/);
    assert.match(jpgCause!, /VipsJpeg/);
    assert.doesNotMatch(jpgCause!, /vipspng/);
  });
});

// -------------------------------------------------------------------------------------------------------
describe('readImageHeader and findUnreadableImages: the check before work', () => {
  const { save, at } = tempFiles('promptiqa-check-');

  it('finds missing, empty, truncated, non-image and oversized files by their header and end, in the order given', async () => {
    const img = {
      create: {
        width: 48,
        height: 32,
        channels: 3 as const,
        background: 'grey',
        noise: { type: 'gaussian' as const, mean: 128, sigma: 40 },
      },
    };
    const jpg = await sharp(img).jpeg().toBuffer();
    const png = await sharp(img).png().toBuffer();
    const webp = await sharp(img).webp().toBuffer();
    const files = [
      save('cut.webp', webp.subarray(0, webp.length - 50)),
      save('good.webp', webp),
      save('good.jpg', jpg),
      save('cut.jpg', jpg.subarray(0, jpg.length - 100)),
      save('no-eoi.jpg', jpg.subarray(0, jpg.length - 2)),
      save('cut.png', png.subarray(0, png.length - 30)),
      save('good.png', png),
      save('empty.png', new Uint8Array(0)),
      at('missing.jpg'),
      save('text.jpg', new TextEncoder().encode('not an image')),
      save('bomb.png', pngClaiming(100000, 100000)),
    ];
    const found = await findUnreadableImages(files);
    assert.deepEqual(
      found.map((u) => basename(u.file)),
      ['cut.webp', 'cut.jpg', 'cut.png', 'empty.png', 'missing.jpg', 'text.jpg', 'bomb.png'],
    );
    assert.match(found[1]!.problem, /truncated/);
    assert.match(found[2]!.problem, /truncated/);
    assert.match(found[4]!.problem, /no such file/);
    assert.match(found[6]!.problem, /decompression bomb/);
    assert.deepEqual(await readImageHeader(files[2]!), { format: 'jpeg', width: 48, height: 32 });
  });

  it('reads only the ends of a large file, and still finds one cut short', async () => {
    const big = (): Sharp =>
      sharp({ create: { width: 1200, height: 900, channels: 3, background: 'grey', noise: { type: 'gaussian', mean: 128, sigma: 40 } } });
    const jpg = await big().jpeg({ quality: 95 }).toBuffer();
    const png = await big().png().toBuffer();
    assert.ok(jpg.length > 512 * 1024 && png.length > 512 * 1024, 'larger than the part read for the header');
    const files = [
      save('big.jpg', jpg),
      save('big-cut.jpg', jpg.subarray(0, Math.floor(jpg.length * 0.9))),
      save('big-no-eoi.jpg', jpg.subarray(0, jpg.length - 2)),
      save('big.png', png),
      save('big-cut.png', png.subarray(0, Math.floor(png.length * 0.9))),
    ];
    const found = await findUnreadableImages(files);
    assert.deepEqual(
      found.map((u) => basename(u.file)),
      ['big-cut.jpg', 'big-cut.png'],
    );
    assert.deepEqual(await readImageHeader(files[3]!), { format: 'png', width: 1200, height: 900 });
  });

  it('decodes in full the files asked for, which finds damage inside', async () => {
    const png = Buffer.from(
      await sharp({ create: { width: 64, height: 64, channels: 3, background: 'grey', noise: { type: 'gaussian', mean: 128, sigma: 40 } } })
        .png()
        .toBuffer(),
    );
    for (let i = png.length >> 1; i < (png.length >> 1) + 64; i++) png[i] = png[i]! ^ 0x5a;
    const file = save('damaged.png', png);
    assert.deepEqual(await findUnreadableImages([file]), []);
    const found = await findUnreadableImages([file], { decodeFully: new Set([file]) });
    assert.equal(found.length, 1);
    assert.equal(found[0]!.file, file);
  });
});
