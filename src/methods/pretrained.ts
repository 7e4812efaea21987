/**
 * Pretrained metrics by name: a method with the options, the CLIP and the released file that pyiqa
 * (chaofengc/IQA-PyTorch, `pyiqa/default_model_configs.py`) uses for the metric of that name. The files come
 * through the hub client, so they are cached (shared with Python's huggingface_hub), checked, and found
 * again offline (HF_HUB_OFFLINE=1) or through a mirror (HF_ENDPOINT).
 */
import { basename, dirname } from 'node:path';
import { statSync } from 'node:fs';
import { HubError, downloadFile, resolveModel, type HubOptions } from '../clip/hub.js';
import { fileSha256 } from '../util/hash.js';
import { checkArch } from '../clip/arch.js';
import { type ClipWeights, refuseExtraTensors } from '../clip/weights.js';

/** Where pyiqa keeps its released weights (its `get_url_from_name`, store_base 'hugging_face'). */
export const PYIQA_WEIGHTS_REPO = 'chaofengc/IQA-PyTorch-Weights';

export interface PretrainedMetric {
  /** the name `createMetric` and `--method` take */
  name: string;
  /** the method that computes it */
  method: string;
  /** the method options of pyiqa's set-up (the method's defaults for the rest) */
  options: Readonly<Record<string, unknown>>;
  /** the CLIP's hub repo (Hugging Face or open_clip layout); absent where the released file holds the whole CLIP (LIQE) */
  clip?: string;
  /** OpenAI's name of the CLIP architecture, as pyiqa's `backbone` argument spells it */
  arch: string;
  /** the released file, in PYIQA_WEIGHTS_REPO */
  released?: string;
  /** the metric's name in pyiqa */
  pyiqa: string;
  /** what the released file was trained on, where that is known */
  trainedOn?: string;
}

const RN50 = 'timm/resnet50_clip.openai';

/** The registry, in the order `promptiqa methods` lists it. Names follow pyiqa's, spelt as promptiqa's methods. */
export const PRETRAINED: readonly PretrainedMetric[] = [
  // pyiqa's CLIPIQA defaults: RN50, pos_embedding False (the method's default), five antonym pairs
  { name: 'clip-iqa', method: 'clip-iqa', options: {}, clip: RN50, arch: 'RN50', pyiqa: 'clipiqa' },
  {
    name: 'clip-iqa+',
    method: 'clip-iqa+',
    options: {},
    clip: RN50,
    arch: 'RN50',
    released: 'CLIP-IQA+_learned_prompts-603f3273.pth',
    pyiqa: 'clipiqa+',
    trainedOn: 'KonIQ-10k',
  },
  {
    name: 'clip-iqa+-rn50-512',
    method: 'clip-iqa+',
    options: { positionalEmbedding: 'interpolated' },
    clip: RN50,
    arch: 'RN50',
    released: 'CLIPIQA+_RN50_512-89f5d940.pth',
    pyiqa: 'clipiqa+_rn50_512',
  },
  // a ViT at full resolution, its positional embedding resized to the image (pyiqa's pos_embedding True)
  {
    name: 'clip-iqa+-vitl14-512',
    method: 'clip-iqa+',
    options: { positionalEmbedding: 'interpolated' },
    clip: 'openai/clip-vit-large-patch14',
    arch: 'ViT-L/14',
    released: 'CLIPIQA+_ViTL14_512-e66488f2.pth',
    pyiqa: 'clipiqa+_vitL14_512',
  },
  // LIQE's file holds the whole fine-tuned CLIP: nothing else to download, CLIP's own vocabulary tokenises
  { name: 'liqe', method: 'liqe', options: {}, arch: 'ViT-B/32', released: 'liqe_koniq.pt', pyiqa: 'liqe', trainedOn: 'KonIQ-10k' },
  {
    name: 'liqe-mix',
    method: 'liqe-mix',
    options: {},
    arch: 'ViT-B/32',
    released: 'liqe_mix.pt',
    pyiqa: 'liqe_mix',
    trainedOn: "LIQE's mix of six IQA datasets",
  },
];

export function findPretrained(name: string): PretrainedMetric | undefined {
  return PRETRAINED.find((p) => p.name === name);
}

/** The pretrained set-up of `method` whose released file has this name, if any. */
export function findReleased(method: string, filename: string): PretrainedMetric | undefined {
  return PRETRAINED.find((p) => p.method === method && p.released === filename);
}

/** One line on what a pretrained metric downloads: "liqe_koniq.pt on ViT-B/32", "RN50 (timm/resnet50_clip.openai)". */
export function describePretrained(p: PretrainedMetric): string {
  const clip = p.clip ? `${p.arch} (${p.clip})` : p.arch;
  return p.released ? `${p.released} on ${clip}` : clip;
}

/**
 * A hub failure that neither the network nor the cache can mend (no connection, or offline with an empty
 * cache), with the way to do without the hub added: `wayOut`, the options that give the files by path.
 * Other errors are returned as they are.
 */
export function withWayOut(err: unknown, wayOut: string): unknown {
  if (!(err instanceof HubError) || (err.code !== 'Network' && err.code !== 'Offline')) return err;
  return new HubError(`${err.message}. Without the hub: ${wayOut}`, {
    repo: err.repo,
    filename: err.filename,
    status: err.status,
    code: err.code,
    cause: err.cause ?? err,
  });
}

/** How to run a model given as a repo id without the hub. */
export function modelWayOut(model: string): string {
  return `give the model as a local folder or weights file instead of ${model} (--model <folder or file>)`;
}

/** How to run a pretrained metric without the hub: its files, fetched elsewhere, given by path. */
export function pretrainedWayOut(p: PretrainedMetric): string {
  const where = [p.released && `${p.released} from ${PYIQA_WEIGHTS_REPO}`, p.clip && `the ${p.arch} CLIP from ${p.clip}`].filter(Boolean);
  const args = [`--method ${p.method}`, p.released && `--checkpoint ${p.released}`, p.clip && `--model <${p.arch} folder or file>`];
  return `fetch ${where.join(' and ')} where there is a network, then give ${where.length > 1 ? 'them' : 'it'} by path: ${args.filter(Boolean).join(' ')}`;
}

/** Where a file of a pretrained metric came from. */
export interface PretrainedFile {
  metric: string;
  /** 'clip': the CLIP's weights (a folder for the Hugging Face layout); 'released': the released file */
  role: 'clip' | 'released';
  repo: string;
  /** the commit of the repository the file is at */
  commit: string;
  /** the local path in the hub cache */
  path: string;
}

export interface PretrainedPaths {
  /** the CLIP, as `loadBackbone` takes it: a snapshot folder or a weights file */
  clip?: string;
  released?: string;
}

/**
 * The first hex digits of the file's sha256 that a name such as `CLIP-IQA+_learned_prompts-603f3273.pth`
 * carries (torch.hub's naming: `-<hex>.` before the extension), or undefined when it has none.
 */
export function hashPrefixOf(filename: string): string | undefined {
  return /-([0-9a-f]{8,64})\.[^.]+$/.exec(filename)?.[1];
}

/**
 * Refuses a file whose sha256 does not start with the prefix its name carries. pyiqa downloads with
 * hash_prefix=None, so nothing checked this before; the hub's sha256 (LFS) proves the transfer, this proves
 * the file is the one the name stands for. Nothing is deleted: the file is the user's cache.
 */
export async function checkHashPrefix(path: string, filename: string): Promise<void> {
  const prefix = hashPrefixOf(filename);
  if (prefix === undefined) return;
  const actual = await fileSha256(path);
  if (!actual.startsWith(prefix)) {
    throw new Error(
      `${path}: its sha256 is ${actual}, but its name ${filename} says it starts with ${prefix}: not the released file; ` +
        'check HF_ENDPOINT (a mirror may serve another file under this name), then remove the file from the cache and download it again',
    );
  }
}

/** The commit of a file or folder in the hub cache: `snapshots/<commit>/…`. */
function commitOf(path: string, isFolder: boolean): string {
  return basename(isFolder ? path : dirname(path));
}

/**
 * Downloads (or finds in the cache) the files of a pretrained metric, checks the hash its released file's
 * name carries, and tells `onFile` where each came from.
 */
export async function fetchPretrained(
  p: PretrainedMetric,
  hub?: HubOptions,
  onFile?: (f: PretrainedFile) => void,
): Promise<PretrainedPaths> {
  try {
    return await fetchFiles(p, hub, onFile);
  } catch (err) {
    throw withWayOut(err, pretrainedWayOut(p));
  }
}

async function fetchFiles(p: PretrainedMetric, hub?: HubOptions, onFile?: (f: PretrainedFile) => void): Promise<PretrainedPaths> {
  const out: PretrainedPaths = {};
  if (p.clip) {
    out.clip = await resolveModel(p.clip, hub);
    const isFolder = statSync(out.clip).isDirectory();
    onFile?.({ metric: p.name, role: 'clip', repo: p.clip, commit: commitOf(out.clip, isFolder), path: out.clip });
  }
  if (p.released) {
    out.released = await downloadFile(PYIQA_WEIGHTS_REPO, p.released, hub);
    await checkHashPrefix(out.released, p.released);
    onFile?.({ metric: p.name, role: 'released', repo: PYIQA_WEIGHTS_REPO, commit: commitOf(out.released, false), path: out.released });
  }
  return out;
}

/**
 * The CLIP of a pretrained set-up checked as pyiqa loads it: of the geometry of the architecture the set-up
 * names (`arch`), and (unless `allowExtra`) with no tensor that CLIP does not have.
 */
export function checkPretrainedClip(p: PretrainedMetric, weights: ClipWeights, file: string, allowExtra: boolean): void {
  checkArch(weights.config, p.arch, `pyiqa's ${p.pyiqa}`, file);
  if (!allowExtra) refuseExtraTensors(file, weights.extraTensors, `${p.arch} CLIP`);
}
