/**
 * A reader for the uncompressed zip archives PyTorch writes (`torch.save`, TorchScript): the central
 * directory is read once, then entries are read by positioned reads, so a gigabyte archive is never in
 * memory. Only STORED entries can be read (PyTorch compresses nothing); zip64 sizes and offsets are
 * understood. Written by hand rather than taken from a zip library because the weight loaders read
 * tensors synchronously by offset (as they do from safetensors), which the stream-based libraries do not.
 */
import { closeSync, readSync } from 'node:fs';
import { openRegularFile } from './fs.js';

export class ZipError extends Error {}

export interface ZipEntry {
  name: string;
  /** 0: stored; anything else is compressed and cannot be read here */
  method: number;
  size: number;
  compressedSize: number;
  localHeaderOffset: number;
}

const EOCD_SIG = 0x06054b50;
const EOCD64_LOCATOR_SIG = 0x07064b50;
const EOCD64_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
/** the end record is 22 bytes plus a comment of at most 65535 */
const EOCD_SEARCH = 22 + 0xffff;
/** more entries than a central directory of this size could describe is a lie; this caps the Map */
const MAX_ENTRIES = 1_000_000;
/** the central directory is held in memory: a weights archive of 10,000 tensors has about 1 MB of it */
const MAX_CENTRAL_BYTES = 64 << 20;

/** An open zip archive. */
export class ZipArchive {
  readonly entries: ReadonlyMap<string, ZipEntry>;
  private readonly fd: number;
  readonly size: number;
  private readonly dataOffsets = new Map<string, number>();

  private constructor(
    readonly path: string,
    fd: number,
    size: number,
    entries: Map<string, ZipEntry>,
  ) {
    this.fd = fd;
    this.size = size;
    this.entries = entries;
  }

  /** True when the file starts like a zip archive (a local file header). */
  static looksLikeZip(head: Uint8Array): boolean {
    return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  }

  static open(path: string): ZipArchive {
    const { fd, size } = openRegularFile(path, 'archive');
    try {
      return new ZipArchive(path, fd, size, readCentralDirectory(path, fd, size));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  private fail(problem: string): never {
    throw new ZipError(`${this.path}: ${problem}`);
  }

  entry(name: string): ZipEntry {
    const e = this.entries.get(name);
    if (!e) this.fail(`no entry "${name}" in the archive`);
    return e;
  }

  /** Where an entry's bytes start in the file (after its local header), checked to lie inside the file. */
  dataOffset(name: string): number {
    const known = this.dataOffsets.get(name);
    if (known !== undefined) return known;
    const e = this.entry(name);
    if (e.method !== 0) this.fail(`entry "${name}" is compressed (method ${e.method}); only stored entries can be read`);
    if (e.compressedSize !== e.size) this.fail(`entry "${name}" is stored but its sizes differ`);
    const local = readExact(this.fd, e.localHeaderOffset, 30, this.size, () =>
      this.fail(`local header of "${name}" lies past the end (truncated?)`),
    );
    if (local.readUInt32LE(0) !== LOCAL_SIG) this.fail(`entry "${name}" has no local header where the directory says`);
    const start = e.localHeaderOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    if (start + e.size > this.size) this.fail(`entry "${name}" runs past the end of the file (truncated?)`);
    this.dataOffsets.set(name, start);
    return start;
  }

  /** Reads `length` bytes of an entry from `offset` within it (the whole entry by default). */
  read(name: string, offset = 0, length?: number): Buffer {
    const e = this.entry(name);
    const n = length ?? e.size - offset;
    if (offset < 0 || n < 0 || offset + n > e.size)
      this.fail(`read of ${n} bytes at ${offset} is outside entry "${name}" (${e.size} bytes)`);
    const start = this.dataOffset(name) + offset;
    return readExact(this.fd, start, n, this.size, () => this.fail(`unexpected end of file in entry "${name}"`));
  }

  close(): void {
    closeSync(this.fd);
  }
}

function readExact(fd: number, position: number, length: number, fileSize: number, onShort: () => never): Buffer {
  if (position + length > fileSize) onShort();
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const r = readSync(fd, buf, got, length - got, position + got);
    if (r === 0) onShort();
    got += r;
  }
  return buf;
}

function readCentralDirectory(path: string, fd: number, size: number): Map<string, ZipEntry> {
  const fail = (problem: string): never => {
    throw new ZipError(`${path}: ${problem}`);
  };
  const notZip = (): never => fail('not a zip archive, or truncated (no end of central directory record)');
  if (size < 22) notZip();
  const tailLen = Math.min(size, EOCD_SEARCH);
  const tail = readExact(fd, size - tailLen, tailLen, size, notZip);
  let at = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === EOCD_SIG && i + 22 + tail.readUInt16LE(i + 20) <= tailLen) {
      at = i;
      break;
    }
  }
  if (at < 0) notZip();
  let count: number = tail.readUInt16LE(at + 10);
  let cdSize: number = tail.readUInt32LE(at + 12);
  let cdOffset: number = tail.readUInt32LE(at + 16);
  const eocdPos = size - tailLen + at;
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // zip64: a locator sits just before the end record and points at the zip64 end record
    if (eocdPos < 20) fail('zip64 end record locator missing');
    const loc = readExact(fd, eocdPos - 20, 20, size, notZip);
    if (loc.readUInt32LE(0) !== EOCD64_LOCATOR_SIG) fail('zip64 end record locator missing');
    const rec64Pos = safeNumber(loc.readBigUInt64LE(8), fail);
    const rec = readExact(fd, rec64Pos, 56, size, () => fail('zip64 end record lies past the end (truncated?)'));
    if (rec.readUInt32LE(0) !== EOCD64_SIG) fail('zip64 end record not where its locator says');
    count = safeNumber(rec.readBigUInt64LE(32), fail);
    cdSize = safeNumber(rec.readBigUInt64LE(40), fail);
    cdOffset = safeNumber(rec.readBigUInt64LE(48), fail);
  }
  if (cdOffset + cdSize > size) fail('central directory lies past the end of the file (truncated?)');
  if (cdSize > MAX_CENTRAL_BYTES || count > MAX_ENTRIES || count * 46 > cdSize)
    fail(`implausible central directory (${count} entries in ${cdSize} bytes)`);
  const cd = readExact(fd, cdOffset, cdSize, size, notZip);
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== CENTRAL_SIG) fail(`central directory entry ${i} is malformed`);
    const method = cd.readUInt16LE(p + 10);
    let compressedSize: number = cd.readUInt32LE(p + 20);
    let entrySize: number = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeaderOffset: number = cd.readUInt32LE(p + 42);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cd.length) fail(`central directory entry ${i} runs past the directory`);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    // zip64 extended information: the 64-bit values of the fields saturated above, in this order
    let x = p + 46 + nameLen;
    const extraEnd = x + extraLen;
    while (x + 4 <= extraEnd) {
      const id = cd.readUInt16LE(x);
      const len = cd.readUInt16LE(x + 2);
      if (x + 4 + len > extraEnd) fail(`entry "${name}" has a malformed extra field`);
      if (id === 0x0001) {
        let q = x + 4;
        const next = (): number => {
          if (q + 8 > x + 4 + len) fail(`entry "${name}" has a short zip64 extra field`);
          const v = safeNumber(cd.readBigUInt64LE(q), fail);
          q += 8;
          return v;
        };
        if (entrySize === 0xffffffff) entrySize = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
      }
      x += 4 + len;
    }
    if (localHeaderOffset + 30 > size) fail(`entry "${name}" starts past the end of the file (truncated?)`);
    if (entries.has(name)) fail(`entry "${name}" appears twice`);
    entries.set(name, { name, method, size: entrySize, compressedSize, localHeaderOffset });
    p = end;
  }
  return entries;
}

function safeNumber(v: bigint, fail: (problem: string) => never): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`a zip64 size or offset (${v}) is too large`);
  return Number(v);
}
