import { constants as fsConstants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import sharp, { type Metadata, type Sharp } from 'sharp';
import { decodeBmp, isBmp } from './bmp.js';
import type { RgbImage } from './rgb.js';
import { formatBytes, notReadableInput } from '../util/fs.js';

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
  /**
   * Rotate and flip the image as its EXIF orientation tag says (a phone photo taken upright comes out upright).
   * Default false: the pixels are taken as stored, as PIL's `Image.open(...).convert('RGB')` (pyiqa, and the
   * authors' code of every method here) reads them, so that scores and windows match the reference code.
   */
  applyExifOrientation?: boolean;
}

export const DEFAULT_MAX_PIXELS = 100e6;

/**
 * The largest image file read, from the decompression-bomb guard: `maxPixels` pixels of 8 bytes (16-bit RGBA
 * stored uncompressed, the widest pixels a supported file holds but for float TIFF) plus 16 MiB of headers and
 * metadata (EXIF, ICC, XMP). A larger file cannot be an image under the pixel limit; it is refused before it is
 * read, so a device, a runaway file or a bomb never fills memory. 816 MB at the default 100e6 pixels.
 */
export function maxImageFileBytes(maxPixels = DEFAULT_MAX_PIXELS): number {
  return maxPixels * BYTES_PER_PIXEL + METADATA_BYTES;
}
const BYTES_PER_PIXEL = 8;
const METADATA_BYTES = 16 * 1024 * 1024;

/**
 * Decodes JPEG, PNG (8/16-bit, grey, palette, alpha), WebP, TIFF, GIF (first frame) and BMP to 8-bit RGB.
 * The pixels are taken as stored, EXIF orientation ignored as PIL does, unless `applyExifOrientation`. Only a
 * regular file of at most `maxImageFileBytes(maxPixels)` is read: a FIFO or a device is refused without
 * waiting on it. Alpha is dropped without compositing, as PIL's `convert('RGB')` does, so a
 * transparent pixel keeps whatever colour is stored under it. Every failure is an `ImageDecodeError` naming
 * the file; `name` names a buffer in messages.
 */
export async function decodeImage(source: string | Uint8Array, opts: DecodeOptions & { name?: string } = {}): Promise<RgbImage> {
  const name = opts.name ?? (typeof source === 'string' ? source : '<buffer>');
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!(maxPixels > 0)) throw new RangeError(`maxPixels must be positive, not ${maxPixels}`);

  const bytes = typeof source === 'string' ? await readImageFile(source, name, maxPixels) : source;
  if (bytes.length === 0) throw new ImageDecodeError(name, 'empty file (0 bytes)');

  if (isBmp(bytes)) {
    try {
      return decodeBmp(bytes, maxPixels);
    } catch (err) {
      throw new ImageDecodeError(name, errorMessage(err), { cause: err });
    }
  }

  const how: SharpDecode = { maxPixels, applyIcc: !!opts.applyIccProfile, orient: !!opts.applyExifOrientation };
  try {
    return await alone(() => decodeWithSharp(bytes, how));
  } catch (err) {
    const complete = await decodeWithoutEndMarker(bytes, how);
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
  if (!(maxPixels > 0)) throw new RangeError(`maxPixels must be positive, not ${maxPixels}`);
  const ends = typeof source === 'string' ? await readEnds(source, name, maxPixels) : { head: source, tail: source, whole: true };
  const readWhole = async (): Promise<ImageHeader> =>
    readImageHeader(await readImageFile(source as string, name, maxPixels), { name, maxPixels });
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
async function readEnds(path: string, name: string, maxPixels: number): Promise<{ head: Uint8Array; tail: Uint8Array; whole: boolean }> {
  const { file, size } = await openImage(path, name, maxPixels);
  try {
    if (size <= HEAD_BYTES) {
      const all = await readAll(file, size);
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
    await file.close();
  }
}

/**
 * Opens an image file, checked to be a regular file (a link followed to its target) of at most
 * `maxImageFileBytes(maxPixels)`. It is opened non-blocking, so a FIFO is refused rather than waited on.
 */
async function openImage(path: string, name: string, maxPixels: number): Promise<{ file: FileHandle; size: number }> {
  let file: FileHandle;
  try {
    file = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw new ImageDecodeError(name, describeFsError(err), { cause: err });
  }
  try {
    const st = await file.stat();
    if (st.isDirectory()) throw new ImageDecodeError(name, 'is a folder, not an image file');
    const kind = notReadableInput(st, Infinity); // a FIFO, a device, a socket
    if (kind !== undefined) throw new ImageDecodeError(name, kind);
    const limit = maxImageFileBytes(maxPixels);
    if (st.size > limit) {
      // in bytes when the rounded sizes would read the same
      const [size, most] =
        formatBytes(st.size) === formatBytes(limit) ? [`${st.size} bytes`, `${limit} bytes`] : [formatBytes(st.size), formatBytes(limit)];
      throw new ImageDecodeError(
        name,
        `the file is ${size}, more than the ${most} an image under the limit of ${maxPixels} pixels can take (decompression bomb?)`,
      );
    }
    return { file, size: st.size };
  } catch (err) {
    await file.close();
    if (err instanceof ImageDecodeError) throw err;
    throw new ImageDecodeError(name, describeFsError(err), { cause: err });
  }
}

/** `size` bytes from the start of an open file (fewer when it shrank meanwhile). */
async function readAll(file: FileHandle, size: number): Promise<Uint8Array> {
  const buf = new Uint8Array(size);
  let off = 0;
  while (off < size) {
    const { bytesRead } = await file.read(buf, off, size - off, off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return off === size ? buf : buf.subarray(0, off);
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
async function decodeWithoutEndMarker(bytes: Uint8Array, how: SharpDecode): Promise<RgbImage | null> {
  if (!startsWith(bytes, JPEG_SOI) || endsWith(bytes, JPEG_EOI)) return null;
  const completed = new Uint8Array(bytes.length + 2);
  completed.set(bytes);
  completed.set(JPEG_EOI, bytes.length);
  try {
    return await decoding.shared(() => decodeWithSharp(completed, how, 'warning'));
  } catch {
    return null;
  }
}

async function readImageFile(path: string, name: string, maxPixels: number): Promise<Uint8Array> {
  const { file, size } = await openImage(path, name, maxPixels);
  try {
    return await readAll(file, size);
  } catch (err) {
    throw new ImageDecodeError(name, describeFsError(err), { cause: err });
  } finally {
    await file.close();
  }
}

/** How sharp decodes: the pixel limit, whether through the ICC profile, whether by the EXIF orientation. */
interface SharpDecode {
  maxPixels: number;
  applyIcc: boolean;
  orient: boolean;
}

async function decodeWithSharp(bytes: Uint8Array, how: SharpDecode, failOn: 'error' | 'warning' = 'error'): Promise<RgbImage> {
  const { maxPixels, applyIcc, orient } = how;
  const input = () =>
    sharp(bytes, {
      limitInputPixels: Number.isFinite(maxPixels) ? Math.max(1, Math.floor(maxPixels)) : false,
      // 'error' refuses truncated and corrupt pixel data but, like PIL, accepts files that only make libjpeg
      // warn (extraneous bytes before a marker), which real datasets contain.
      failOn,
      ignoreIcc: !applyIcc,
      autoOrient: orient,
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
export class SharedExclusiveLock {
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

/** The format by its first bytes, for messages ("the PNG header is corrupt"); undefined when none is known. */
function formatName(b: Uint8Array): string | undefined {
  if (startsWith(b, JPEG_SOI)) return 'JPEG';
  if (startsWith(b, PNG_SIGNATURE)) return 'PNG';
  if (startsWith(b, GIF_SIGNATURE)) return 'GIF';
  if (startsWith(b, [0x52, 0x49, 0x46, 0x46]) && b[8] === 0x57 && b[9] === 0x45 && b[10] === 0x42 && b[11] === 0x50) return 'WebP';
  if (isBmp(b)) return 'BMP';
  if (startsWith(b, [0x49, 0x49, 0x2a, 0]) || startsWith(b, [0x4d, 0x4d, 0, 0x2a])) return 'TIFF';
  return undefined;
}

/**
 * Turns libvips's wording into a whole sentence about the file: sharp's prefix ("Input buffer has corrupt
 * header:", which libvips sometimes follows with nothing) and the loaders' names ("VipsJpeg:") are dropped,
 * repeated lines kept once, and what is left given as the decoder's reason, or none said when none is left.
 */
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
  const format = formatName(bytes);
  const image = format === undefined ? 'image' : `${format} image`;
  const reasons = decoderReasons(msg);
  const why = reasons === '' ? ' (the decoder gave no reason)' : ` (${reasons})`;
  if (/premature end|truncated|unexpected end|not enough data|read error|out of data/i.test(msg)) {
    return `truncated or corrupt ${image} data${why}`;
  }
  if (/corrupt header/i.test(msg)) return `corrupt ${format ?? 'image'} header${why}`;
  return `cannot decode the ${image}${why}`;
}

/** The decoder's own reasons in a libvips message, without sharp's prefix and the loaders' names, each once. */
function decoderReasons(msg: string): string {
  const reasons = msg
    .split('\n')
    .map((l) =>
      l
        .trim()
        .replace(/^Input (buffer|file) (has corrupt header|contains unsupported image format):?\s*/i, '')
        .replace(/^(Vips\w+|\w+load(_buffer|_source)?|webp|tiff|png|jpeg|gif):\s*/i, '')
        .replace(/[.:;,\s]+$/, ''),
    )
    .filter(Boolean);
  return [...new Set(reasons)].slice(0, 2).join('; ');
}
