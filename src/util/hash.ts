/**
 * sha256 of a file, in one place for every layer that checks one: checkpoint tensors (sync, at save and
 * load), CLIP weight files (their identity in a checkpoint) and hub downloads (against the LFS etag).
 * Both variants read in chunks, so a multi-gigabyte weight file never sits in memory whole.
 */
import { closeSync, createReadStream, openSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';

/** sha256 of a file as lowercase hex, streamed. */
export async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** sha256 of a file as lowercase hex, read synchronously in chunks (for code that cannot await). */
export function fileSha256Sync(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}
