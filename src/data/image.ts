import { open, readFile, type FileHandle } from 'node:fs/promises';
import sharp, { type Metadata, type Sharp } from 'sharp';
import { decodeBmp, isBmp } from './bmp.js';
import type { RgbImage } from './rgb.js';

// libvips caches recent operations with their pixel buffers; a data loader decodes each file once, so the
// cache only makes memory grow over an epoch.
sharp.cache(false);

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
   * CMYK images are converted to RGB either way: through their profile when this is true, else with PIL's formula.
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

  const bytes = typeof source === 'string' ? await readImageFile(source, name) : source;
  if (bytes.length === 0) throw new ImageDecodeError(name, 'empty file (0 bytes)');

  if (isBmp(bytes)) {
    try {
      return decodeBmp(bytes, maxPixels);
    } catch (err) {
      throw new ImageDecodeError(name, errorMessage(err), { cause: err });
    }
  }

  try {
    return await alone(() => decodeWithSharp(bytes, maxPixels, !!opts.applyIccProfile));
  } catch (err) {
    const complete = await decodeWithoutEndMarker(bytes, maxPixels, !!opts.applyIccProfile);
    if (complete) return complete;
    throw new ImageDecodeError(name, await decoding.exclusive(() => describeSharpError(err, bytes, maxPixels)), { cause: err });
  }
}

/** What the header tells without decoding the pixels. */
export interface ImageHeader {
  format: string;
  width: number;
  height: number;
}

/**
 * Reads an image's header (format and size) without decoding its pixels, and checks what can be checked
 * cheaply: the size against `maxPixels`, and that a JPEG, PNG or GIF ends with its end marker; a file
 * without one is decoded in full, which tells a missing marker (readable) from missing image data.
 * Corrupt data in the middle of a file is only found by decoding it. Failures are `ImageDecodeError`s.
 */
export async function readImageHeader(
  source: string | Uint8Array,
  opts: Pick<DecodeOptions, 'maxPixels'> & { name?: string } = {},
): Promise<ImageHeader> {
  const name = opts.name ?? (typeof source === 'string' ? source : '<buffer>');
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  const ends = typeof source === 'string' ? await readEnds(source, name) : { head: source, tail: source, whole: true };
  const readWhole = async (): Promise<ImageHeader> => readImageHeader(await readImageFile(source as string, name), { name, maxPixels });
  if (ends.head.length === 0) throw new ImageDecodeError(name, 'empty file (0 bytes)');
  if (isBmp(ends.head)) {
    if (!ends.whole) return readWhole();
    // BMP decoding is a quick parse with exact size checks: do it all
    const img = await decodeImage(ends.head, { name, maxPixels });
    return { format: 'bmp', width: img.width, height: img.height };
  }
  let meta: Metadata;
  try {
    meta = await alone(() => sharp(ends.head, { limitInputPixels: false }).metadata());
  } catch (err) {
    if (!ends.whole) return readWhole(); // a header longer than the part read, or a format that wants the whole file (TIFF)
    throw new ImageDecodeError(name, await decoding.exclusive(() => describeSharpError(err, ends.head, maxPixels)), { cause: err });
  }
  const { format, width, height } = meta;
  if (!width || !height) throw new ImageDecodeError(name, `cannot decode: the ${format} header gives no size`);
  if (width * height > maxPixels) {
    throw new ImageDecodeError(
      name,
      `image is ${width}x${height} = ${width * height} pixels, over the limit of ${maxPixels} (decompression bomb?)`,
    );
  }
  if (!looksComplete(ends.head, ends.tail)) await decodeImage(ends.whole ? ends.head : source, { name, maxPixels });
  return { format, width, height };
}

/** Bytes read for a header: JPEG headers with EXIF and ICC segments, and PNG, GIF and WebP headers, fit. */
const HEAD_BYTES = 256 * 1024;
const TAIL_BYTES = 16;

/** The first HEAD_BYTES and the last TAIL_BYTES of a file, or all of it (`whole`) when it is no longer than HEAD_BYTES. */
async function readEnds(path: string, name: string): Promise<{ head: Uint8Array; tail: Uint8Array; whole: boolean }> {
  let file: FileHandle | undefined;
  try {
    file = await open(path, 'r');
    const { size } = await file.stat();
    if (size <= HEAD_BYTES) {
      const all = await file.readFile();
      return { head: all, tail: all, whole: true };
    }
    const head = new Uint8Array(HEAD_BYTES);
    const tail = new Uint8Array(TAIL_BYTES);
    await file.read(head, 0, HEAD_BYTES, 0);
    await file.read(tail, 0, TAIL_BYTES, size - TAIL_BYTES);
    return { head, tail, whole: false };
  } catch (err) {
    throw new ImageDecodeError(name, describeFsError(err), { cause: err });
  } finally {
    await file?.close();
  }
}

const JPEG_SOI = [0xff, 0xd8];
const JPEG_EOI = [0xff, 0xd9];
const PNG_IEND = [0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]; // 'IEND' and its CRC
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47];
const GIF_SIGNATURE = [0x47, 0x49, 0x46, 0x38];
const GIF_TRAILER = [0x3b];

const startsWith = (bytes: Uint8Array, sig: readonly number[]): boolean =>
  bytes.length >= sig.length && sig.every((b, i) => bytes[i] === b);
const endsWith = (bytes: Uint8Array, sig: readonly number[]): boolean =>
  bytes.length >= sig.length && sig.every((b, i) => bytes[bytes.length - sig.length + i] === b);

/**
 * False when a JPEG, PNG or GIF lacks its end marker (cut short, or written without it); true for other
 * formats (libwebp's header check already compares a WebP's length with its RIFF size). `head` and `tail`
 * are the file's first and last bytes.
 */
function looksComplete(head: Uint8Array, tail: Uint8Array): boolean {
  if (startsWith(head, JPEG_SOI)) return endsWith(tail, JPEG_EOI);
  if (startsWith(head, PNG_SIGNATURE)) return endsWith(tail, PNG_IEND);
  if (startsWith(head, GIF_SIGNATURE)) return endsWith(tail, GIF_TRAILER);
  return true;
}

/**
 * A JPEG whose image data is complete but whose end marker is missing is read, as PIL reads such files:
 * the marker is added and the file decoded with warnings as errors, so that image data that stops early
 * (libjpeg warns of a marker in the middle of the data) is still refused. Null when that fails.
 */
async function decodeWithoutEndMarker(bytes: Uint8Array, maxPixels: number, applyIcc: boolean): Promise<RgbImage | null> {
  if (!startsWith(bytes, JPEG_SOI) || endsWith(bytes, JPEG_EOI)) return null;
  const completed = new Uint8Array(bytes.length + 2);
  completed.set(bytes);
  completed.set(JPEG_EOI, bytes.length);
  try {
    return await decoding.shared(() => decodeWithSharp(completed, maxPixels, applyIcc, 'warning'));
  } catch {
    return null;
  }
}

async function readImageFile(path: string, name: string): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new ImageDecodeError(name, describeFsError(err), { cause: err });
  }
}

async function decodeWithSharp(
  bytes: Uint8Array,
  maxPixels: number,
  applyIcc: boolean,
  failOn: 'error' | 'warning' = 'error',
): Promise<RgbImage> {
  const input = () =>
    sharp(bytes, {
      limitInputPixels: Number.isFinite(maxPixels) ? Math.max(1, Math.floor(maxPixels)) : false,
      // 'error' refuses truncated and corrupt pixel data but, like PIL, accepts files that only make libjpeg
      // warn (extraneous bytes before a marker), which real datasets contain.
      failOn,
      ignoreIcc: !applyIcc,
      autoOrient: true,
    });
  // CMYK exists only in JPEG and TIFF: other files skip the extra header read on the training path
  if (!applyIcc && mayBeCmyk(bytes) && (await input().metadata()).space === 'cmyk') return cmykToRgb(input());
  const { data, info } = await input().removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`decoder gave ${info.channels} channels, not 3`);
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** JPEG (FF D8) or TIFF (II*\0, MM\0*) by their first bytes. */
function mayBeCmyk(b: Uint8Array): boolean {
  if (b[0] === 0xff && b[1] === 0xd8) return true;
  return (b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a && b[3] === 0) || (b[0] === 0x4d && b[1] === 0x4d && b[2] === 0 && b[3] === 0x2a);
}

/**
 * CMYK as PIL converts it (`convert('RGB')` in Pillow ≥ 9.1): R = (255 − K) − (255 − K)·C/255, likewise G
 * from M and B from Y, with PIL's rounded division by 255. The CMYK values are the stored ones (libvips
 * un-inverts Adobe JPEGs as PIL's 'CMYK;I' mode does); libvips's own conversion goes through an ICC
 * profile and gives other colours.
 */
async function cmykToRgb(image: Sharp): Promise<RgbImage> {
  const { data, info } = await image
    .pipelineColourspace('cmyk')
    .toColourspace('cmyk')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels < 4) throw new Error(`decoder gave ${info.channels} channels for a CMYK image, not 4`);
  const n = info.width * info.height;
  const rgb = new Uint8Array(n * 3);
  const mulDiv255 = (a: number, b: number): number => {
    const t = a * b + 128;
    return ((t >> 8) + t) >> 8;
  };
  for (let p = 0, i = 0; p < n; p++, i += info.channels) {
    const nk = 255 - data[i + 3]!;
    rgb[p * 3] = nk - mulDiv255(data[i]!, nk);
    rgb[p * 3 + 1] = nk - mulDiv255(data[i + 1]!, nk);
    rgb[p * 3 + 2] = nk - mulDiv255(data[i + 2]!, nk);
  }
  return { width: info.width, height: info.height, data: rgb };
}

/**
 * libvips keeps one error buffer for the whole process, so when two decodes fail at once each message
 * can carry the other's text (a truncated PNG reported with the JPEG decoder's words) or none. Decodes
 * share this lock and run in parallel; a failed one is run again holding it alone (`alone`), which gives
 * the file's own message, the same every run. Only failures pay for the serialisation.
 */
class SharedExclusiveLock {
  private active = 0;
  private exclusiveHeld = false;
  private readonly waiting: Array<{ exclusive: boolean; start: () => void }> = [];

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(false);
    try {
      return await fn();
    } finally {
      this.release(false);
    }
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(true);
    try {
      return await fn();
    } finally {
      this.release(true);
    }
  }

  private acquire(exclusive: boolean): Promise<void> {
    // first come, first served: a waiting exclusive holder is not starved by later shared ones
    if (this.waiting.length === 0 && this.canStart(exclusive)) {
      this.take(exclusive);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push({ exclusive, start: resolve }));
  }

  private canStart(exclusive: boolean): boolean {
    return !this.exclusiveHeld && (!exclusive || this.active === 0);
  }

  private take(exclusive: boolean): void {
    if (exclusive) this.exclusiveHeld = true;
    else this.active++;
  }

  private release(exclusive: boolean): void {
    if (exclusive) this.exclusiveHeld = false;
    else this.active--;
    while (this.waiting.length > 0 && this.canStart(this.waiting[0]!.exclusive)) {
      const next = this.waiting.shift()!;
      this.take(next.exclusive);
      next.start();
    }
  }
}

const decoding = new SharedExclusiveLock();

/** Runs a libvips call in parallel with others and, when it fails, again alone, so that its error is its own. */
async function alone<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await decoding.shared(call);
  } catch {
    return decoding.exclusive(call);
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
  return msg
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(0, 2)
    .join('; ');
}
