/**
 * promptiqa's cache: what it can always compute again but need not at every start (file digests, text
 * features of fixed prompts). One folder, `PROMPTIQA_CACHE`, else `$XDG_CACHE_HOME/promptiqa`, else
 * `~/.cache/promptiqa`; `--no-cache` (the library's `cache: false`) neither reads nor writes it. An entry is a
 * file written atomically under a key that names everything it was computed from, so a stale entry is never
 * read; one that cannot be read or written is computed again, never an error.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from './fs.js';

/** The cache folder, or null for no cache. */
export type CacheDir = string | null;

/**
 * The cache folder for an option: `false` for none, a folder to use that one, undefined for the default
 * (`PROMPTIQA_CACHE`, else `$XDG_CACHE_HOME/promptiqa`, else `~/.cache/promptiqa`).
 */
export function resolveCacheDir(option: string | false | undefined, env: NodeJS.ProcessEnv = process.env): CacheDir {
  if (option === false) return null;
  if (option !== undefined) return resolve(option);
  if (env.PROMPTIQA_CACHE) return resolve(env.PROMPTIQA_CACHE);
  return join(env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(homedir(), '.cache'), 'promptiqa');
}

/** A cache key: sha256 of the JSON of what the entry depends on (objects with their keys sorted). */
export function cacheKey(parts: unknown): string {
  return createHash('sha256').update(stableJson(parts)).digest('hex');
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** The path of an entry: `<dir>/<kind>/<key><ext>`. */
export function cachePath(dir: string, kind: string, key: string, ext = ''): string {
  return join(dir, kind, `${key}${ext}`);
}

/** An entry's bytes, or undefined where there is none or it cannot be read. */
export function readCacheEntry(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch {
    return undefined;
  }
}

/** Writes an entry atomically; a cache that cannot be written (read-only, full) is left as it is. Returns whether it was written. */
export function writeCacheEntry(path: string, data: string | Uint8Array | readonly Uint8Array[]): boolean {
  try {
    writeFileAtomic(path, data);
    return true;
  } catch {
    return false;
  }
}
