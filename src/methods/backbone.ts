/**
 * CLIP backbones by name: a folder, a single weights file or a hub repo id, loaded once per process.
 */
import { statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { type Backbone, type BackboneSource } from './graphs.js';
import { loadClipWeights } from '../clip/weights.js';
import { ClipTokenizer } from '../clip/tokenizer.js';
import { resolveModel } from '../clip/hub.js';
import { modelWayOut, withWayOut } from './pretrained.js';
import { type CacheDir, resolveCacheDir } from '../util/cache.js';

const backbones = new Map<string, Promise<Backbone>>();

/**
 * Loads (once per process) a CLIP from a folder, a single weights file (safetensors, or PyTorch's .pt/.pth:
 * OpenAI's released files, state dicts) or a hub repo id (at `revision`, default main), and notes where it
 * was found: the absolute path, or the repo and the commit of its files. A single file is tokenised with
 * CLIP's own vocabulary (shipped with the package).
 */
export function loadBackbone(model: string, revision?: string, cache: CacheDir = resolveCacheDir(undefined)): Promise<Backbone> {
  const key = revision === undefined ? model : `${model}@${revision}`;
  let p = backbones.get(key);
  if (!p) {
    p = (async () => {
      const stat = statSync(model, { throwIfNoEntry: false });
      if (stat?.isFile() && revision === undefined) {
        const weights = await loadClipWeights(model, { cache });
        return { weights, tokenizer: ClipTokenizer.default(), model, source: { path: resolve(model) } };
      }
      const local = stat?.isDirectory() === true;
      const found = await resolveModel(model, revision === undefined ? undefined : { revision }).catch((err: unknown) => {
        throw withWayOut(err, modelWayOut(model));
      });
      const single = statSync(found).isFile();
      const tokenizer = ClipTokenizer.forModel(found); // before the weights: a broken file fails fast
      const weights = await loadClipWeights(found, { cache });
      // a hub download lives in snapshots/<commit>
      const source: BackboneSource = local
        ? { path: resolve(model) }
        : { repo: model, revision: basename(single ? dirname(found) : found) };
      return { weights, tokenizer, model, source };
    })();
    backbones.set(key, p);
    p.catch(() => backbones.delete(key));
  }
  return p;
}

/** The tokenizer of a model as `loadBackbone` would load it, without loading its weights. */
export async function loadTokenizer(model: string): Promise<ClipTokenizer> {
  return ClipTokenizer.forModel(statSync(model, { throwIfNoEntry: false })?.isFile() ? model : await resolveModel(model));
}
