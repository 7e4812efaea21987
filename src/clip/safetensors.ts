import { readSync, closeSync } from 'node:fs';
import { InputFileError, openRegularFile, writeFileAtomic } from '../util/fs.js';
import type { HostTensor } from '../graph/tensor.js';
import { formatShape } from '../graph/graph.js';

/** dtypes of the safetensors format that promptiqa reads. */
export type SafeDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<SafeDType, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export interface TensorInfo {
  dtype: SafeDType;
  shape: number[];
  /** byte offsets relative to the start of the data section */
  offsets: [number, number];
}

/** The longest header read, as the format's own library allows (100 MB): the header is held in memory. */
export const MAX_HEADER_BYTES = 100_000_000;

/** A safetensors file that is not one, or whose header lies about its data; names the file. */
export class SafeTensorsError extends InputFileError {
  constructor(path: string, message: string) {
    super(path, message);
    this.name = 'SafeTensorsError';
  }
}

function readFully(fd: number, buf: Buffer, position: number, fail: (problem: string) => never): void {
  let got = 0;
  while (got < buf.length) {
    const r = readSync(fd, buf, got, buf.length - got, position + got);
    if (r === 0) break;
    got += r;
  }
  if (got < buf.length) fail(`the file ends at byte ${position + got}, inside its header (truncated while being read?)`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function describeJson(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

/**
 * The header's tensors and metadata, every field checked (see `SafeTensorsFile.open`); `dataBytes` is the size of
 * the data section, which the tensors must cover exactly.
 */
function parseHeader(
  headerBuf: Buffer,
  dataBytes: number,
  fail: (problem: string) => never,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBuf));
  } catch (err) {
    fail(`its header is not UTF-8 JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (!isObject(header)) fail(`its header is ${describeJson(header)}, not a JSON object of tensors`);
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(value) || !Object.values(value).every((v) => typeof v === 'string'))
        fail(`__metadata__ is ${describeJson(value)}, not an object of strings`);
      metadata = value as Record<string, string>;
      continue;
    }
    const bad: (problem: string) => never = (problem) => fail(`tensor "${name}": ${problem}`);
    if (!isObject(value)) bad(`its entry is ${describeJson(value)}, not an object`);
    const { dtype, shape, data_offsets: offsets } = value;
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype))
      bad(`dtype ${JSON.stringify(dtype)} is not one of ${Object.keys(DTYPE_BYTES).join(', ')}`);
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) bad(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt))
      bad(`data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    const [begin, end] = offsets as [number, number];
    if (begin > end) bad(`data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataBytes) bad(`data_offsets [${begin}, ${end}] run past the end of the data (${dataBytes} bytes; truncated?)`);
    // the byte count the shape needs, checked one factor at a time so that nothing overflows
    const dims = shape;
    let bytes = DTYPE_BYTES[dtype as SafeDType];
    for (const d of dims) {
      if (d === 0) bytes = 0;
      else if (bytes > 0 && bytes * d > dataBytes)
        bad(`shape ${formatShape(dims)} of ${dtype} needs more bytes than the file's data holds (${dataBytes})`);
      else bytes *= d;
    }
    if (end - begin !== bytes) bad(`has ${end - begin} bytes, but shape ${formatShape(dims)} of ${dtype} needs ${bytes}`);
    tensors.set(name, { dtype: dtype as SafeDType, shape: [...dims], offsets: [begin, end] });
  }
  // end to end from the start of the data, as safetensors' own validation requires: no tensor reads another's
  // bytes (or the header's), and no bytes lie between or after them unaccounted for
  const order = [...tensors].sort(([, a], [, b]) => a.offsets[0] - b.offsets[0] || a.offsets[1] - b.offsets[1]);
  let at = 0;
  let previous: string | undefined;
  for (const [name, { offsets }] of order) {
    const [begin, end] = offsets;
    if (begin < at) fail(`tensor "${name}" (bytes ${begin}–${end}) overlaps tensor "${previous}" (which ends at ${at})`);
    if (begin > at)
      fail(
        `tensor "${name}" starts at byte ${begin}, but ${previous === undefined ? 'the data starts' : `tensor "${previous}" ends`} at ${at}: a gap of ${begin - at} bytes`,
      );
    at = end;
    previous = name;
  }
  if (at !== dataBytes)
    fail(
      `the tensors end at byte ${at} of the data, but the file holds ${dataBytes} bytes of data (${dataBytes - at} bytes unaccounted for)`,
    );
  return { tensors, metadata };
}

/**
 * A safetensors file opened for reading. Tensors are read one at a time with positioned reads, so a
 * multi-gigabyte checkpoint never has to be in memory at once.
 */
export class SafeTensorsFile {
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  private readonly fd: number;
  private readonly dataStart: number;

  private constructor(
    readonly path: string,
    fd: number,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
    dataStart: number,
  ) {
    this.fd = fd;
    this.dataStart = dataStart;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  /**
   * Opens a safetensors file, its header checked completely as the format's own library checks it before
   * anything is read: a JSON object of tensors (and string metadata), each of a known dtype, a shape of
   * non-negative integers and integer offsets whose span is exactly the bytes the shape needs; the tensors
   * laid end to end from the start of the data, without overlap or gap, up to the end of the file.
   */
  static open(path: string): SafeTensorsFile {
    const { fd, size } = openRegularFile(path, 'weights file');
    try {
      const fail: (problem: string) => never = (problem) => {
        throw new SafeTensorsError(path, `${path}: not a valid safetensors file: ${problem}`);
      };
      if (size < 8) fail(`it is only ${size} bytes, less than the 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      readFully(fd, lenBuf, 0, fail);
      const headerLen = lenBuf.readBigUInt64LE(0);
      // the bigint is printed as it is: a length past 2^53 is not rounded in the message
      if (headerLen < 2n || headerLen > BigInt(MAX_HEADER_BYTES))
        fail(`header length ${headerLen} is not between 2 and ${MAX_HEADER_BYTES} bytes`);
      if (8n + headerLen > BigInt(size)) fail(`header length ${headerLen} does not fit a ${size}-byte file (truncated?)`);
      const n = Number(headerLen);
      const headerBuf = Buffer.alloc(n);
      readFully(fd, headerBuf, 8, fail);
      const parsed = parseHeader(headerBuf, size - 8 - n, fail);
      return new SafeTensorsFile(path, fd, parsed.tensors, parsed.metadata, 8 + n);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  keys(): string[] {
    return [...this.tensors.keys()];
  }

  /** The raw bytes of a tensor, as stored. */
  readBytes(name: string): Buffer {
    const info = this.info(name);
    const n = info.offsets[1] - info.offsets[0];
    // every byte is read below, or the read fails
    const buf = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const r = readSync(this.fd, buf, got, n - got, this.dataStart + info.offsets[0] + got);
      if (r === 0) throw new Error(`${this.path}: unexpected end of file while reading "${name}"`);
      got += r;
    }
    return buf;
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new Error(`${this.path}: no tensor named "${name}"`);
    return info;
  }

  /** Reads a floating-point tensor (F32, F16, BF16 or F64) as float32. */
  readFloat32(name: string): HostTensor {
    const info = this.info(name);
    const bytes = this.readBytes(name);
    return { shape: [...info.shape], data: toFloat32(bytes, info.dtype, `${this.path}: "${name}"`) };
  }

  /** Reads an integer tensor as a JS number array (int64 values must fit 2^53). */
  readInts(name: string): { shape: number[]; data: number[] } {
    const info = this.info(name);
    const b = this.readBytes(name);
    const count = info.shape.reduce((a, c) => a * c, 1);
    const out = new Array<number>(count);
    for (let i = 0; i < count; i++) {
      switch (info.dtype) {
        case 'I64':
          out[i] = Number(b.readBigInt64LE(i * 8));
          break;
        case 'I32':
          out[i] = b.readInt32LE(i * 4);
          break;
        case 'I16':
          out[i] = b.readInt16LE(i * 2);
          break;
        case 'I8':
          out[i] = b.readInt8(i);
          break;
        case 'U8':
        case 'BOOL':
          out[i] = b[i]!;
          break;
        default:
          throw new Error(`${this.path}: "${name}" is ${info.dtype}, not an integer tensor`);
      }
    }
    return { shape: [...info.shape], data: out };
  }

  close(): void {
    closeSync(this.fd);
  }
}

let halfTable: Float32Array | undefined;

/** Every float16 bit pattern's value, made once: a weight file's float16 tensors are converted by lookup. */
function halves(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h);
  }
  return halfTable;
}

/** float16 bits to float32. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** Converts the bytes of a floating-point tensor (F32, F64, F16, BF16; little-endian) to float32. */
export function toFloat32(bytes: Buffer, dtype: SafeDType, what: string): Float32Array {
  switch (dtype) {
    case 'F32': {
      // bytes that own their whole buffer become the array as they are (little-endian, as every machine we run on)
      if (bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length && bytes.length % 4 === 0)
        return new Float32Array(bytes.buffer, 0, bytes.length / 4);
      const out = new Float32Array(bytes.length / 4);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case 'F64': {
      const out = new Float32Array(bytes.length / 8);
      for (let i = 0; i < out.length; i++) out[i] = bytes.readDoubleLE(i * 8);
      return out;
    }
    case 'F16': {
      const out = new Float32Array(bytes.length / 2);
      const table = halves();
      if (bytes.byteOffset % 2 === 0) {
        const bits = new Uint16Array(bytes.buffer, bytes.byteOffset, out.length);
        for (let i = 0; i < out.length; i++) out[i] = table[bits[i]!]!;
      } else {
        for (let i = 0; i < out.length; i++) out[i] = table[bytes.readUInt16LE(i * 2)]!;
      }
      return out;
    }
    case 'BF16': {
      const out = new Float32Array(bytes.length / 2);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < out.length; i++) u[i] = bytes.readUInt16LE(i * 2) << 16;
      return out;
    }
    default:
      throw new Error(`${what} is ${dtype}, not a floating-point tensor`);
  }
}

/** Writes float32 tensors (and string metadata) as a safetensors file, atomically. */
export function writeSafetensors(path: string, tensors: Record<string, HostTensor>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(path, safetensorsBytes(tensors, metadata));
}

/** float32 tensors (and string metadata) as the parts of a safetensors file, in order. */
export function safetensorsBytes(tensors: Record<string, HostTensor>, metadata: Record<string, string> = {}): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const t = tensors[name]!;
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length)
      throw new Error(`writeSafetensors: "${name}" has ${t.data.length} values but shape ${formatShape(t.shape)}`);
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + count * 4] };
    offset += count * 4;
  }
  let json = JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += ' ';
  const headerBuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(headerBuf.length));
  const parts: Uint8Array[] = [lenBuf, headerBuf];
  for (const name of names) {
    const d = tensors[name]!.data;
    parts.push(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  return parts;
}

/** Reads every tensor of a small safetensors file into memory as float32. */
export function readSafetensors(path: string): { tensors: Map<string, HostTensor>; metadata: Record<string, string> } {
  const f = SafeTensorsFile.open(path);
  try {
    const tensors = new Map<string, HostTensor>();
    for (const name of f.keys()) {
      const info = f.info(name);
      if (info.dtype === 'F32' || info.dtype === 'F16' || info.dtype === 'BF16' || info.dtype === 'F64')
        tensors.set(name, f.readFloat32(name));
    }
    return { tensors, metadata: f.metadata };
  } finally {
    f.close();
  }
}
