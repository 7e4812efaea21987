import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { decodeBmp, isBmp } from './bmp.js';

// libvips caches recent operations with their pixel buffers; a data loader decodes each file once, so the
// cache only makes memory grow over an epoch.
sharp.cache(false);

/** An 8-bit sRGB image: packed RGB, row-major, 3 bytes per pixel. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** A file that cannot be decoded: missing, empty, truncated, corrupt, unsupported or too large. */
export class ImageDecodeError extends Error {
  /** The file (or the name given for a buffer). */
  readonly file: string;
  /** What is wrong, without the file name. */
  readonly problem: string;

  constructor(file: string, problem: string, options?: { cause?: unknown }) {
    super(`${file}: ${problem}`, options);
    this.name = 'ImageDecodeError';
    this.file = file;
    this.problem = problem;
  }
}

export interface DecodeOptions {
  /** Images with more pixels than this are refused (decompression bombs). Default 100e6. */
  maxPixels?: number;
  /**
   * Convert through an embedded ICC profile to sRGB. Default false: the pixel values are taken as stored, as
   * PIL (and so every PyTorch training pipeline) does, so that features match models trained that way.
   * CMYK images are converted to sRGB either way.
   */
  applyIccProfile?: boolean;
}

export const DEFAULT_MAX_PIXELS = 100e6;

/**
 * Decodes JPEG, PNG (8/16-bit, grey, palette, alpha), WebP, TIFF, GIF (first frame) and BMP to 8-bit RGB.
 * EXIF orientation is applied. Alpha is dropped without compositing, as PIL's `convert('RGB')` does, so a
 * transparent pixel keeps whatever colour is stored under it. Every failure is an `ImageDecodeError` naming
 * the file; `name` names a buffer in messages.
 */
export async function decodeImage(source: string | Uint8Array, opts: DecodeOptions & { name?: string } = {}): Promise<RgbImage> {
  const name = opts.name ?? (typeof source === 'string' ? source : '<buffer>');
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!(maxPixels > 0)) throw new RangeError(`maxPixels must be positive, not ${maxPixels}`);

  let bytes: Uint8Array;
  if (typeof source === 'string') {
    try {
      bytes = await readFile(source);
    } catch (err) {
      throw new ImageDecodeError(name, describeFsError(err), { cause: err });
    }
  } else {
    bytes = source;
  }
  if (bytes.length === 0) throw new ImageDecodeError(name, 'empty file (0 bytes)');

  if (isBmp(bytes)) {
    try {
      return decodeBmp(bytes, maxPixels);
    } catch (err) {
      throw new ImageDecodeError(name, errorMessage(err), { cause: err });
    }
  }

  try {
    const { data, info } = await sharp(bytes, {
      limitInputPixels: Number.isFinite(maxPixels) ? Math.max(1, Math.floor(maxPixels)) : false,
      // 'error' refuses truncated and corrupt pixel data but, like PIL, accepts files that only make libjpeg
      // warn (extraneous bytes before a marker), which real datasets contain.
      failOn: 'error',
      ignoreIcc: !opts.applyIccProfile,
      autoOrient: true,
    })
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoder gave ${info.channels} channels, not 3`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (err) {
    throw new ImageDecodeError(name, await describeSharpError(err, bytes, maxPixels), { cause: err });
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EISDIR') return 'is a folder, not an image file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  return `cannot read: ${errorMessage(err)}`;
}

/** Turns libvips's wording into a sentence about the file. */
async function describeSharpError(err: unknown, bytes: Uint8Array, maxPixels: number): Promise<string> {
  const msg = errorMessage(err).trim();
  if (/unsupported image format/i.test(msg)) return 'not a supported image (JPEG, PNG, WebP, TIFF, GIF or BMP)';
  if (/pixel limit/i.test(msg)) {
    // The header is trusted for the size: reading it costs nothing, decoding is what the limit prevents.
    try {
      const meta = await sharp(bytes, { limitInputPixels: false }).metadata();
      if (meta.width && meta.height) {
        return `image is ${meta.width}x${meta.height} = ${meta.width * meta.height} pixels, over the limit of ${maxPixels} (decompression bomb?)`;
      }
    } catch {
      // fall through to the generic wording
    }
    return `image has more than ${maxPixels} pixels (decompression bomb?)`;
  }
  if (/premature end|truncated|unexpected end|not enough data|read error|out of data/i.test(msg)) {
    return `truncated or corrupt image data (${firstLine(msg)})`;
  }
  return `cannot decode: ${firstLine(msg)}`;
}

function firstLine(msg: string): string {
  return msg.split('\n').map((l) => l.trim()).filter(Boolean).slice(0, 2).join('; ');
}
