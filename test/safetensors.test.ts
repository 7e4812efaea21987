/**
 * safetensors headers checked completely before anything is read: hand-built hostile headers (overlapping
 * tensors, offsets into the header, negative, fractional or huge numbers, a null header) are refused with the
 * file and the tensor named, never with Node's own errors, and a valid file still reads.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { MAX_HEADER_BYTES, SafeTensorsError, SafeTensorsFile, writeSafetensors } from '../src/clip/safetensors.js';
import { InputFileError } from '../src/util/fs.js';

const tmp = mkdtempSync(join(tmpdir(), 'promptiqa-safetensors-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
/** A file of an 8-byte length (`length`, default the header's), the header as JSON text and `data` bytes. */
function file(header: unknown, data: number, length?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(length ?? BigInt(json.length));
  const path = join(tmp, `case-${n++}.safetensors`);
  writeFileSync(path, Buffer.concat([len, json, Buffer.alloc(data, 7)]));
  return path;
}

const F32 = (shape: number[], begin: number, end: number) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });

/** Opening `path` is refused with a SafeTensorsError naming the file and matching each pattern. */
function refused(path: string, ...patterns: RegExp[]): void {
  assert.throws(
    () => SafeTensorsFile.open(path).close(),
    (err: Error) => {
      assert.ok(err instanceof SafeTensorsError, `${err.name}: ${err.message}`);
      assert.equal(err.path, path);
      assert.ok(err.message.startsWith(`${path}: not a valid safetensors file: `), err.message);
      for (const p of patterns) assert.match(err.message, p);
      return true;
    },
  );
}

describe('safetensors headers', () => {
  test('a valid file reads (a zero-size tensor included), its metadata kept', () => {
    const path = join(tmp, 'ok.safetensors');
    writeSafetensors(
      path,
      { a: { shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }, empty: { shape: [0, 3], data: new Float32Array(0) } },
      { note: 'x' },
    );
    const f = SafeTensorsFile.open(path);
    try {
      assert.deepEqual(f.keys().sort(), ['a', 'empty']);
      assert.deepEqual([...f.readFloat32('a').data], [1, 2, 3, 4]);
      assert.deepEqual(f.metadata, { note: 'x' });
    } finally {
      f.close();
    }
  });

  test('overlapping tensors (text_projection reading another tensor’s bytes) are refused, naming both', () => {
    refused(
      file({ 'ln_final.weight': F32([4], 0, 16), text_projection: F32([2, 2], 8, 24) }, 24),
      /tensor "text_projection" \(bytes 8–24\) overlaps tensor "ln_final.weight"/,
    );
    // the same bytes twice
    refused(file({ a: F32([4], 0, 16), b: F32([4], 0, 16) }, 16), /overlaps tensor "a"/);
  });

  test('an offset of [-256, 0] (the JSON header read as a tensor) and larger negatives are refused by name', () => {
    refused(file({ 'ln_final.bias': F32([64], -256, 0), w: F32([1], 0, 4) }, 4), /tensor "ln_final.bias": data_offsets \[-256,0\]/);
    refused(file({ 'ln_final.bias': F32([1], -1e9, -1e9 + 4) }, 4), /tensor "ln_final.bias": data_offsets/, /non-negative integers/);
    refused(file({ w: F32([1], 0, 4), x: F32([1], 4, 2 ** 60) }, 8), /tensor "x": data_offsets/);
  });

  test('fractional offsets and dimensions, negative dimensions, and offsets that are not a pair are refused', () => {
    refused(file({ w: F32([1], 0.5, 4.5) }, 5), /tensor "w": data_offsets \[0.5,4.5\] is not a pair of non-negative integers/);
    refused(file({ w: F32([-1, -4], 0, 16) }, 16), /tensor "w": shape \[-1,-4\] is not a list of non-negative integers/);
    refused(file({ w: F32([1.5], 0, 6) }, 6), /tensor "w": shape/);
    refused(file({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4, 8] } }, 8), /tensor "w": data_offsets/);
    refused(file({ w: { dtype: 'F32', shape: [1], data_offsets: ['0', '4'] } }, 4), /tensor "w": data_offsets/);
    refused(file({ w: { dtype: 'F32', data_offsets: [0, 4] } }, 4), /tensor "w": shape undefined/);
  });

  test('a header that is null, an array, a string or not JSON is refused, naming the file', () => {
    refused(file('null', 0), /its header is null, not a JSON object/);
    refused(file('[1, 2]', 0), /its header is an array/);
    refused(file('"x"', 0), /its header is string "x"/);
    refused(file('{"a": ', 0), /its header is not UTF-8 JSON/);
    refused(file({ w: null }, 0), /tensor "w": its entry is null/);
    refused(file({ __metadata__: { a: 1 } }, 0), /__metadata__ is an object, not an object of strings/);
  });

  test('dtypes: an unknown one is refused; the byte count must be dtype size × the shape', () => {
    refused(file({ w: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, 16), /tensor "w": dtype "F128" is not one of F32/);
    refused(
      file({ w: { dtype: 'F16', shape: [2, 2], data_offsets: [0, 16] } }, 16),
      /tensor "w": has 16 bytes, but shape \[2, 2\] of F16 needs 8/,
    );
    // a shape whose product would overflow is stopped before it is multiplied out
    refused(file({ w: F32([2 ** 40, 2 ** 40], 0, 16) }, 16), /tensor "w": shape .* needs more bytes than the file's data holds \(16\)/);
  });

  test('the tensors must cover the data: a gap, bytes after the last and a truncated file are refused', () => {
    refused(file({ a: F32([1], 0, 4), b: F32([1], 8, 12) }, 12), /tensor "b" starts at byte 8, but tensor "a" ends at 4: a gap of 4 bytes/);
    refused(file({ a: F32([1], 4, 8) }, 8), /tensor "a" starts at byte 4, but the data starts at 0/);
    refused(file({ a: F32([1], 0, 4) }, 12), /the tensors end at byte 4 of the data, but the file holds 12 bytes of data/);
    refused(file({ a: F32([4], 0, 16) }, 8), /tensor "a": data_offsets \[0, 16\] run past the end of the data \(8 bytes; truncated\?\)/);
  });

  test('header lengths: 2^60 is printed exactly; past the cap or the file is refused before any allocation', () => {
    refused(file({}, 0, 2n ** 60n), /header length 1152921504606846976 is not between 2 and 100000000 bytes/);
    refused(file({}, 0, 2n ** 64n - 1n), /header length 18446744073709551615 /);
    refused(file({}, 0, BigInt(MAX_HEADER_BYTES)), /header length 100000000 does not fit a \d+-byte file/);
    refused(file({}, 0, 0n), /header length 0 /);
    const short = join(tmp, 'short.safetensors');
    writeFileSync(short, Buffer.alloc(5));
    refused(short, /only 5 bytes/);
  });

  test('a folder or a FIFO given as the file is refused by name, without blocking', () => {
    const dir = join(tmp, 'model.safetensors');
    mkdirSync(dir);
    assert.throws(
      () => SafeTensorsFile.open(dir),
      (err: Error) => err instanceof InputFileError && err.message.includes(dir) && /a folder, not a regular file/.test(err.message),
    );
    const fifo = join(tmp, 'fifo.safetensors');
    if (spawnSync('mkfifo', [fifo]).status !== 0) return;
    assert.throws(
      () => SafeTensorsFile.open(fifo),
      (err: Error) => err instanceof InputFileError && err.message.includes(fifo) && /a FIFO/.test(err.message),
    );
  });
});
