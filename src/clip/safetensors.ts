import { openSync, readSync, closeSync, fstatSync } from 'node:fs';
import { writeFileAtomic } from '../util/fs.js';
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
    header: Record<string, unknown>,
    dataStart: number,
  ) {
    this.fd = fd;
    this.dataStart = dataStart;
    const tensors = new Map<string, TensorInfo>();
    let meta: Record<string, string> = {};
    for (const [name, value] of Object.entries(header)) {
      if (name === '__metadata__') {
        meta = (value ?? {}) as Record<string, string>;
        continue;
      }
      const v = value as { dtype?: string; shape?: number[]; data_offsets?: [number, number] };
      if (!v || typeof v.dtype !== 'string' || !Array.isArray(v.shape) || !Array.isArray(v.data_offsets)) {
        throw new Error(`${path}: malformed safetensors header entry for tensor "${name}"`);
      }
      if (!(v.dtype in DTYPE_BYTES)) throw new Error(`${path}: tensor "${name}" has unsupported dtype ${v.dtype}`);
      const count = v.shape.reduce((a, b) => a * b, 1);
      const bytes = v.data_offsets[1] - v.data_offsets[0];
      if (bytes !== count * DTYPE_BYTES[v.dtype as SafeDType]) {
        throw new Error(
          `${path}: tensor "${name}" has ${bytes} bytes, but shape ${formatShape(v.shape)} of ${v.dtype} needs ${count * DTYPE_BYTES[v.dtype as SafeDType]}`,
        );
      }
      tensors.set(name, { dtype: v.dtype as SafeDType, shape: v.shape, offsets: v.data_offsets });
    }
    this.tensors = tensors;
    this.metadata = meta;
  }

  static open(path: string): SafeTensorsFile {
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size < 8) throw new Error(`${path}: not a safetensors file (only ${size} bytes)`);
      const lenBuf = Buffer.alloc(8);
      readSync(fd, lenBuf, 0, 8, 0);
      const headerLen = Number(lenBuf.readBigUInt64LE(0));
      if (headerLen <= 0 || headerLen > 100_000_000 || 8 + headerLen > size) {
        throw new Error(`${path}: not a safetensors file (header length ${headerLen} does not fit a ${size}-byte file)`);
      }
      const headerBuf = Buffer.alloc(headerLen);
      readSync(fd, headerBuf, 0, headerLen, 8);
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(headerBuf.toString('utf8')) as Record<string, unknown>;
      } catch {
        throw new Error(`${path}: not a safetensors file (its header is not JSON)`);
      }
      const file = new SafeTensorsFile(path, fd, header, 8 + headerLen);
      for (const [name, info] of file.tensors) {
        if (file.dataStart + info.offsets[1] > size)
          throw new Error(`${path}: tensor "${name}" runs past the end of the file (truncated?)`);
      }
      return file;
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
