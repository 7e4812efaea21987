/**
 * sha256 of a file, in one place for every layer that checks one: checkpoint tensors (sync, at save and
 * load), CLIP weight files (their identity in a checkpoint) and hub downloads (against the LFS etag).
 * Both variants read in chunks, so a multi-gigabyte weight file never sits in memory whole.
 */
import { closeSync, createReadStream, openSync, readSync, realpathSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { type CacheDir, cacheKey, cachePath, readCacheEntry, writeCacheEntry } from './cache.js';

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

/** A blob of a Hugging Face cache stored with Git LFS: `…/models--owner--name/blobs/<sha256>`. */
const HUB_LFS_BLOB = /[\\/](?:models|datasets|spaces)--[^\\/]+[\\/]blobs[\\/]([0-9a-f]{64})$/;

/**
 * sha256 of a file such as a CLIP's weights, without reading it again when nothing says it changed. A file
 * that is a Git LFS blob of a Hugging Face cache is named by its sha256, which the hub client (ours or
 * Python's) checked when it downloaded it: that name is taken. Otherwise a digest recorded in `cache` for the
 * same real path, device, inode, size, modification and change times is reused; any difference hashes the
 * file again and records the new digest. With no cache, the file is hashed.
 */
export async function fileDigest(path: string, cache: CacheDir): Promise<string> {
  const real = realpathSync(path);
  const blob = HUB_LFS_BLOB.exec(real);
  if (blob) return blob[1]!;
  if (cache === null) return fileSha256(real);
  const st = statSync(real, { bigint: true });
  const identity = {
    path: real,
    dev: String(st.dev),
    ino: String(st.ino),
    size: String(st.size),
    mtimeNs: String(st.mtimeNs),
    ctimeNs: String(st.ctimeNs),
  };
  const entry = cachePath(cache, 'digests', cacheKey(real), '.json');
  const seen = readCacheEntry(entry);
  if (seen) {
    try {
      const rec = JSON.parse(seen.toString('utf8')) as Record<string, unknown>;
      if (Object.entries(identity).every(([k, v]) => rec[k] === v) && typeof rec.sha256 === 'string' && /^[0-9a-f]{64}$/.test(rec.sha256))
        return rec.sha256;
    } catch {
      // a damaged entry is written again below
    }
  }
  const sha256 = await fileSha256(real);
  writeCacheEntry(entry, JSON.stringify({ ...identity, sha256 }) + '\n');
  return sha256;
}
