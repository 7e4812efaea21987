/**
 * The decoded image type, in a module of its own: the decoders (image.ts, bmp.ts) and the preprocessing
 * all use it, and none of them has to import another for it.
 */

/** An 8-bit sRGB image: packed RGB, row-major, 3 bytes per pixel. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}
