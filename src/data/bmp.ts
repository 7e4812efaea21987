import type { RgbImage } from './rgb.js';

/**
 * A Windows BMP decoder. libvips has no BMP loader, and LIVE and TID2013 ship their images as BMP.
 *
 * Supported: BITMAPCOREHEADER (OS/2 1.x), BITMAPINFOHEADER and its V2–V5 extensions, OS/2 2.x headers
 * without their own compressions; 1/2/4/8-bit palette, 16/24/32-bit; bottom-up and top-down rows;
 * BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS, BI_RLE8 and BI_RLE4. Alpha is dropped, as PIL's convert('RGB') does.
 * Errors are plain `Error`s describing the problem; the caller adds the file name.
 */

const BI_RGB = 0;
const BI_RLE8 = 1;
const BI_RLE4 = 2;
const BI_BITFIELDS = 3;
const BI_ALPHABITFIELDS = 6;
const COMPRESSION_NAMES: Record<number, string> = { 4: 'BI_JPEG', 5: 'BI_PNG', 11: 'BI_CMYK', 12: 'BI_CMYKRLE8', 13: 'BI_CMYKRLE4' };

/** Whether the bytes start with the BMP magic 'BM'. */
export function isBmp(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x42 && bytes[1] === 0x4d;
}

/** One channel of a BI_BITFIELDS mask: where it sits and how to scale it to 0..255. */
interface Channel {
  mask: number;
  shift: number;
  max: number;
}

function channel(mask: number): Channel {
  mask >>>= 0;
  if (mask === 0) return { mask: 0, shift: 0, max: 1 };
  let shift = 0;
  while (((mask >>> shift) & 1) === 0) shift++;
  let bits = 0;
  while (shift + bits < 32 && ((mask >>> (shift + bits)) & 1) === 1) bits++;
  return { mask, shift, max: 2 ** bits - 1 };
}

/** Scales a masked value to 8 bits with a floor, as PIL's BGR;15 / BGR;16 unpackers do. */
function extract(px: number, c: Channel): number {
  if (c.mask === 0) return 0;
  const v = (px & c.mask) >>> c.shift;
  return c.max === 255 ? v : Math.floor((v * 255) / c.max);
}

export function decodeBmp(buf: Uint8Array, maxPixels = Infinity): RgbImage {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const len = buf.length;
  if (!isBmp(buf)) throw new Error('not a BMP file (no "BM" signature)');
  if (len < 26) throw new Error(`truncated BMP header (${len} bytes)`);
  const pixelOffset = view.getUint32(10, true);
  const headerSize = view.getUint32(14, true);
  if (headerSize !== 12 && (headerSize < 16 || headerSize > 124)) throw new Error(`unsupported BMP header size ${headerSize}`);
  if (14 + headerSize > len) throw new Error(`truncated BMP header (${len} bytes, header needs ${14 + headerSize})`);

  let width: number,
    height: number,
    bpp: number,
    compression = BI_RGB,
    colorsUsed = 0;
  if (headerSize === 12) {
    width = view.getUint16(18, true);
    height = view.getUint16(20, true);
    bpp = view.getUint16(24, true);
  } else {
    width = view.getInt32(18, true);
    height = view.getInt32(22, true);
    bpp = view.getUint16(28, true);
    if (headerSize >= 20) compression = view.getUint32(30, true);
    if (headerSize >= 36) colorsUsed = view.getUint32(46, true);
    // OS/2 2.x reuses 3 and 4 for Huffman 1D and RLE24, which nobody writes any more.
    if (headerSize === 64 && compression >= 3) throw new Error(`unsupported OS/2 BMP compression ${compression}`);
  }
  const topDown = height < 0;
  height = Math.abs(height);
  if (width <= 0 || height <= 0) throw new Error(`invalid BMP size ${width}x${height}`);
  if (width * height > maxPixels) {
    throw new Error(`image is ${width}x${height} = ${width * height} pixels, over the limit of ${maxPixels} (decompression bomb?)`);
  }
  if (compression in COMPRESSION_NAMES) throw new Error(`unsupported BMP compression ${COMPRESSION_NAMES[compression]}`);
  if (compression > BI_ALPHABITFIELDS) throw new Error(`unknown BMP compression ${compression}`);
  const rle = compression === BI_RLE8 || compression === BI_RLE4;
  if (compression === BI_RLE8 && bpp !== 8) throw new Error(`BI_RLE8 needs 8 bits per pixel, not ${bpp}`);
  if (compression === BI_RLE4 && bpp !== 4) throw new Error(`BI_RLE4 needs 4 bits per pixel, not ${bpp}`);
  if (rle && topDown) throw new Error('a top-down BMP cannot be RLE-compressed');
  const bitfields = compression === BI_BITFIELDS || compression === BI_ALPHABITFIELDS;
  if (bitfields && bpp !== 16 && bpp !== 32) throw new Error(`BI_BITFIELDS with ${bpp} bits per pixel is not supported`);
  if (![1, 2, 4, 8, 16, 24, 32].includes(bpp)) throw new Error(`unsupported BMP bit depth ${bpp}`);

  // Where the colour masks and palette are: a V2+ header holds the masks, an INFO header is followed by them.
  let after = 14 + headerSize;
  let masks: [number, number, number];
  if (bitfields) {
    const at = headerSize >= 52 ? 54 : after;
    if (at + 12 > len) throw new Error('truncated BMP colour masks');
    masks = [view.getUint32(at, true), view.getUint32(at + 4, true), view.getUint32(at + 8, true)];
    if (headerSize < 52) after += compression === BI_ALPHABITFIELDS ? 16 : 12;
  } else {
    masks = bpp === 16 ? [0x7c00, 0x03e0, 0x001f] : [0xff0000, 0x00ff00, 0x0000ff];
  }

  const out = new Uint8Array(width * height * 3);
  const rowOf = (fileRow: number): number => (topDown ? fileRow : height - 1 - fileRow);

  if (bpp <= 8) {
    const entry = headerSize === 12 ? 3 : 4;
    const count = colorsUsed > 0 && colorsUsed < 1 << bpp ? colorsUsed : 1 << bpp;
    // Some writers declare more entries than fit before the pixels; take those that are there.
    const room = Math.floor(((pixelOffset > after ? Math.min(pixelOffset, len) : len) - after) / entry);
    const n = Math.min(count, room);
    if (n <= 0) throw new Error('BMP palette is missing');
    const palette = new Uint8Array(256 * 3); // indices past the palette read as black
    for (let i = 0; i < n; i++) {
      palette[i * 3] = buf[after + i * entry + 2]!;
      palette[i * 3 + 1] = buf[after + i * entry + 1]!;
      palette[i * 3 + 2] = buf[after + i * entry]!;
    }
    const indices = rle
      ? decodeRle(buf, pixelOffset, width, height, compression === BI_RLE4)
      : unpackIndices(buf, pixelOffset, width, height, bpp);
    for (let y = 0; y < height; y++) {
      const dst = rowOf(y) * width * 3;
      for (let x = 0; x < width; x++) {
        const p = indices[y * width + x]! * 3;
        out[dst + x * 3] = palette[p]!;
        out[dst + x * 3 + 1] = palette[p + 1]!;
        out[dst + x * 3 + 2] = palette[p + 2]!;
      }
    }
    return { width, height, data: out };
  }

  const stride = Math.floor((bpp * width + 31) / 32) * 4;
  checkPixelData(len, pixelOffset, stride, width, height, bpp);
  if (bpp === 24) {
    for (let y = 0; y < height; y++) {
      let src = pixelOffset + y * stride;
      let dst = rowOf(y) * width * 3;
      for (let x = 0; x < width; x++, src += 3, dst += 3) {
        out[dst] = buf[src + 2]!;
        out[dst + 1] = buf[src + 1]!;
        out[dst + 2] = buf[src]!;
      }
    }
    return { width, height, data: out };
  }
  const [r, g, b] = masks.map(channel) as [Channel, Channel, Channel];
  const bytesPerPixel = bpp / 8;
  for (let y = 0; y < height; y++) {
    let src = pixelOffset + y * stride;
    let dst = rowOf(y) * width * 3;
    for (let x = 0; x < width; x++, src += bytesPerPixel, dst += 3) {
      const px = bpp === 16 ? view.getUint16(src, true) : view.getUint32(src, true);
      out[dst] = extract(px, r);
      out[dst + 1] = extract(px, g);
      out[dst + 2] = extract(px, b);
    }
  }
  return { width, height, data: out };
}

function checkPixelData(len: number, offset: number, stride: number, width: number, height: number, bpp: number): void {
  // The last row need not carry its padding.
  const needed = offset + stride * (height - 1) + Math.ceil((bpp * width) / 8);
  if (offset < 14 || needed > len)
    throw new Error(`truncated BMP pixel data (file has ${len} bytes, ${width}x${height} at ${bpp} bits needs ${needed})`);
}

/** Palette indices of an uncompressed 1/2/4/8-bit image, in file row order. */
function unpackIndices(buf: Uint8Array, offset: number, width: number, height: number, bpp: number): Uint8Array {
  const stride = Math.floor((bpp * width + 31) / 32) * 4;
  checkPixelData(buf.length, offset, stride, width, height, bpp);
  const out = new Uint8Array(width * height);
  const perByte = 8 / bpp;
  const mask = (1 << bpp) - 1;
  for (let y = 0; y < height; y++) {
    const row = offset + y * stride;
    for (let x = 0; x < width; x++) {
      const byte = buf[row + Math.floor(x / perByte)]!;
      // Pixels are packed from the most significant bits.
      const shift = 8 - bpp * ((x % perByte) + 1);
      out[y * width + x] = (byte >> shift) & mask;
    }
  }
  return out;
}

/** Palette indices of an RLE8/RLE4 image, in file row order; skipped pixels get index 0 (as PIL does). */
function decodeRle(buf: Uint8Array, offset: number, width: number, height: number, four: boolean): Uint8Array {
  const out = new Uint8Array(width * height);
  const put = (x: number, y: number, v: number): void => {
    if (x < width && y < height) out[y * width + x] = v;
  };
  let x = 0,
    y = 0,
    p = offset;
  const need = (n: number): void => {
    if (p + n > buf.length) throw new Error('truncated BMP RLE data');
  };
  for (;;) {
    need(2);
    const n = buf[p]!,
      c = buf[p + 1]!;
    p += 2;
    if (n > 0) {
      // Encoded run: n pixels of one byte (RLE8) or of two alternating nibbles (RLE4).
      for (let i = 0; i < n; i++) put(x++, y, four ? (i % 2 === 0 ? c >> 4 : c & 15) : c);
    } else if (c === 0) {
      x = 0;
      y++;
    } else if (c === 1) {
      break;
    } else if (c === 2) {
      need(2);
      x += buf[p]!;
      y += buf[p + 1]!;
      p += 2;
    } else {
      // Absolute run of c pixels, padded to a 16-bit boundary.
      const bytes = four ? Math.ceil(c / 2) : c;
      need(bytes);
      for (let i = 0; i < c; i++) {
        const byte = buf[p + (four ? i >> 1 : i)]!;
        put(x++, y, four ? (i % 2 === 0 ? byte >> 4 : byte & 15) : byte);
      }
      p += bytes + (bytes & 1);
    }
    if (y >= height) break;
  }
  return out;
}
