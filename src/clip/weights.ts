/**
 * CLIP weights from safetensors, in either layout users have: Hugging Face `CLIPModel` names with a
 * `config.json`, or OpenAI / open_clip state-dict names (configuration inferred from the shapes).
 * Both become one `ClipWeights`, with linear weights stored transposed ([in, out]) so the graphs
 * multiply by them directly.
 */
import { existsSync, statSync, readdirSync } from 'node:fs';
import { InputFileError, READ_LIMITS, readRegularText } from '../util/fs.js';
import { dirname, join } from 'node:path';
import { openTensorFile, prefixOf, withPrefix, type TensorFile } from './tensor-file.js';
import type { HostTensor } from '../graph/tensor.js';
import { formatShape } from '../graph/graph.js';
import { type ClipConfig, OPEN_CLIP_CONFIG, readOpenClipConfig, resnetBlocks, resnetEmbedWidth } from './config.js';
import { modelFolderWeights } from './hub.js';
import { Rng } from '../util/rng.js';
import { fileDigest } from '../util/hash.js';
import { type CacheDir, resolveCacheDir } from '../util/cache.js';

export interface LayerWeights {
  ln1: [Float32Array, Float32Array];
  /** [width, 3·width]: q, k, v columns */
  qkvW: Float32Array;
  qkvB: Float32Array;
  /** [width, width] */
  outW: Float32Array;
  outB: Float32Array;
  ln2: [Float32Array, Float32Array];
  /** [width, mlp] */
  fcW: Float32Array;
  fcB: Float32Array;
  /** [mlp, width] */
  projW: Float32Array;
  projB: Float32Array;
}

/** The image tower: a vision transformer or OpenAI's ModifiedResNet. */
export type VisionWeights = VitWeights | ResNetWeights;

export interface VitWeights {
  kind: 'vit';
  /** [width, 3·p·p]: the patch-embedding conv kernel, flattened (channel-major inside a patch) */
  patchW: Float32Array;
  classEmbedding: Float32Array;
  /** [1 + patches, width] */
  positionalEmbedding: Float32Array;
  lnPre: [Float32Array, Float32Array];
  layers: LayerWeights[];
  lnPost: [Float32Array, Float32Array];
  /** [width, embed] */
  projection: Float32Array;
}

/** A conv followed by inference-mode BatchNorm, folded into one conv with a bias. */
export interface ConvBn {
  /** [out, in, k, k]: the conv kernel times the BatchNorm scale γ/√(var + ε) of its output channel */
  kernel: Float32Array;
  /** [out]: β − mean·γ/√(var + ε) */
  bias: Float32Array;
  shape: [number, number, number, number];
}

export interface BottleneckWeights {
  conv1: ConvBn;
  conv2: ConvBn;
  conv3: ConvBn;
  /** average pool of this stride before conv3 and on the shortcut (1: none) */
  stride: number;
  /** the shortcut's 1×1 conv, where the stride or the width changes */
  downsample: ConvBn | null;
}

export interface ResNetWeights {
  kind: 'resnet';
  /** three 3×3 convs, the first with stride 2 */
  stem: [ConvBn, ConvBn, ConvBn];
  /** four stages of bottlenecks */
  stages: BottleneckWeights[][];
  /** the attention pool over the last stage's C = 32·width channels */
  attnpool: {
    /** [1 + grid², C]: the mean token first, then the grid in row-major order */
    positionalEmbedding: Float32Array;
    /** [C, C]: the query, applied to the mean token only */
    qW: Float32Array;
    qB: Float32Array;
    /** [C, 2·C]: k and v columns, applied to every token */
    kvW: Float32Array;
    kvB: Float32Array;
    /** [C, embed] */
    outW: Float32Array;
    outB: Float32Array;
  };
}

export interface TextWeights {
  /** [vocab, width] */
  tokenEmbedding: Float32Array;
  /** [context, width] */
  positionalEmbedding: Float32Array;
  layers: LayerWeights[];
  lnFinal: [Float32Array, Float32Array];
  /** [width, embed] */
  projection: Float32Array;
}

export interface ClipWeights {
  config: ClipConfig;
  vision: VisionWeights;
  text: TextWeights;
  /** ln of the softmax temperature (ln 100 for trained CLIPs) */
  logitScale: number;
  /** identifies the weights (sha256 of the weight file, or `random:<arch>:<seed>`) */
  id: string;
  layout: 'hf' | 'openai' | 'random';
  /**
   * Tensors of the file that a CLIP of this configuration does not have (by their names in the file), which a
   * strict load (OpenAI's `build_model`, pyiqa's released files) refuses: see `refuseExtraTensors`.
   */
  extraTensors?: readonly string[];
}

export class WeightError extends Error {}

/** Transposes a row-major [rows, cols] matrix, in tiles that stay in the cache (a plain loop's strided writes miss it at every element). */
export function transpose2d(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  const T = 64;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(r0 + T, rows);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(c0 + T, cols);
      for (let c = c0; c < c1; c++) {
        const row = c * rows;
        for (let r = r0; r < r1; r++) out[row + r] = a[r * cols + c]!;
      }
    }
  }
  return out;
}

/** Reads tensors by name with shape checks and messages that name the file. */
class TensorSource {
  constructor(private readonly file: TensorFile) {}

  has(name: string): boolean {
    return this.file.has(name);
  }

  keys(): string[] {
    return this.file.keys();
  }

  close(): void {
    this.file.close();
  }

  shape(name: string): number[] {
    if (!this.file.has(name)) throw new WeightError(`${this.file.path}: missing tensor "${name}"`);
    return this.file.info(name).shape;
  }

  get(name: string, shape: readonly number[]): Float32Array {
    if (!this.file.has(name)) throw new WeightError(`${this.file.path}: missing tensor "${name}"`);
    const t: HostTensor = this.file.readFloat32(name);
    const squeeze = (s: readonly number[]): number[] => s.filter((d) => d !== 1);
    const same =
      t.shape.length === shape.length ? t.shape.every((d, i) => d === shape[i]) : squeeze(t.shape).join() === squeeze(shape).join();
    if (!same)
      throw new WeightError(`${this.file.path}: tensor "${name}" has shape ${formatShape(t.shape)}, expected ${formatShape(shape)}`);
    return t.data;
  }

  /** A PyTorch Linear weight [out, in], returned transposed as [in, out]. */
  linearT(name: string, out: number, inp: number): Float32Array {
    return transpose2d(this.get(name, [out, inp]), out, inp);
  }
}

const FOLDER_WEIGHT_FILES = ['model.safetensors', 'open_clip_model.safetensors', 'openai.safetensors'];

function findWeightFile(dir: string): string {
  // the hub's choice in a snapshot first (a timm folder's CLIP is open_clip's file), then the usual names
  const chosen = modelFolderWeights(dir);
  for (const path of [...(chosen ? [chosen] : []), ...FOLDER_WEIGHT_FILES.map((name) => join(dir, name))]) {
    const st = statSync(path, { throwIfNoEntry: false });
    if (!st) continue;
    // a folder (or a FIFO, a device) under a weight file's name is refused by name, not passed over
    if (!st.isFile()) throw new WeightError(`${path}: it is ${st.isDirectory() ? 'a folder' : 'not a regular file'}, not a weights file`);
    return path;
  }
  const any = readdirSync(dir).filter((f) => f.endsWith('.safetensors') && f !== 'outputs.safetensors');
  if (any.length === 1) return join(dir, any[0]!);
  throw new WeightError(`${dir}: no CLIP weights found (expected model.safetensors or open_clip_model.safetensors)`);
}

export interface LoadWeightsOptions {
  /** where the file's digest (its identity) may be remembered between runs; default the user's cache folder */
  cache?: CacheDir;
}

/** Names whose prefix (the sub-dict a checkpoint keeps the CLIP in) is looked for, in order: one of each layout's towers. */
const PREFIX_PROBES = [
  'vision_model.embeddings.patch_embedding.weight',
  'text_model.embeddings.token_embedding.weight',
  'visual.conv1.weight',
  'token_embedding.weight',
  'visual.class_embedding',
  'visual.attnpool.c_proj.weight',
  'ln_final.weight',
];

/** The layout the names are in: Hugging Face's `CLIPModel`, or OpenAI's / open_clip's state dict; undefined for neither. */
function layoutOf(keys: readonly string[]): 'hf' | 'openai' | undefined {
  if (keys.some((k) => k.startsWith('vision_model.') || k.startsWith('text_model.'))) return 'hf';
  if (keys.some((k) => k.startsWith('visual.') || k === 'token_embedding.weight' || k.startsWith('transformer.resblocks.')))
    return 'openai';
  return undefined;
}

/**
 * Loads CLIP weights from a folder (Hugging Face or open_clip layout), a .safetensors file, or a PyTorch
 * file (OpenAI's TorchScript `.pt`, a `torch.save` state dict, also one nested in a dict as pyiqa's LIQE
 * checkpoints are). The layout is detected from the tensor names. The image tower is read now; the text
 * tower when it is first used (text features served from the cache never need it), from the same file,
 * which must not have changed in between. Tensors the configuration found has no place for are listed in
 * `extraTensors` (refused where a load must be strict: `refuseExtraTensors`).
 */
export async function loadClipWeights(path: string, opts: LoadWeightsOptions = {}): Promise<ClipWeights> {
  if (!existsSync(path)) throw new WeightError(`${path}: no such file or folder`);
  const isDir = statSync(path).isDirectory();
  const file = isDir ? findWeightFile(path) : path;
  let prefix = '';
  let all: string[] = [];
  const open = (): TensorSource => {
    const opened = openTensorFile(file);
    all = opened.keys();
    prefix = PREFIX_PROBES.map((name) => prefixOf(opened, name)).find((p) => p !== undefined) ?? '';
    return new TensorSource(withPrefix(opened, prefix));
  };
  const src = open();
  try {
    const seen = fileIdentity(file);
    const id = `sha256:${await fileDigest(file, opts.cache === undefined ? resolveCacheDir(undefined) : opts.cache)}`;
    let loaded: Omit<ClipWeights, 'text'> & { text: TextReader };
    const layout = layoutOf(src.keys());
    if (layout === 'hf') {
      const cfgPath = isDir ? join(path, 'config.json') : join(file, '..', 'config.json');
      loaded = loadHf(src, existsSync(cfgPath) ? readHfConfig(cfgPath) : undefined, id);
    } else if (layout === 'openai') {
      loaded = loadOpenAI(src, id, file);
    } else {
      throw new WeightError(`${file}: not a CLIP checkpoint (neither Hugging Face CLIPModel nor OpenAI/open_clip tensor names)`);
    }
    const openClipConfig = join(dirname(file), OPEN_CLIP_CONFIG);
    if (loaded.layout === 'openai' && existsSync(openClipConfig)) {
      // what the tensors do not say (activation, heads) from open_clip's config; what they say must agree with it
      let applied: ReturnType<typeof readOpenClipConfig>;
      try {
        applied = readOpenClipConfig(loaded.config, openClipConfig);
      } catch (err) {
        throw new WeightError((err as Error).message, { cause: err });
      }
      const { config, changes } = applied;
      loaded = { ...loaded, config, id: changes.length > 0 ? `${loaded.id}+${changes.join('+')}` : loaded.id };
    }
    const { text, ...rest } = loaded;
    const expected = expectedTensorNames(rest.config, layout);
    // the CLIP's own names that it lacks, and the names beside it in the dict that holds it (pyiqa's `params`)
    const container = prefix.slice(0, prefix.lastIndexOf('.', prefix.length - 2) + 1);
    const extraTensors = all.filter(
      (k) =>
        k.startsWith(container) &&
        !(k.startsWith(prefix) && (expected.has(k.slice(prefix.length)) || OPTIONAL.has(k.slice(prefix.length)))),
    );
    // the text tower, read on first use from the file as it was when the rest was read
    return withLazyText({ ...rest, extraTensors }, () => {
      if (fileIdentity(file) !== seen)
        throw new WeightError(`${file}: the file changed after its image tower was read; load the weights again to read its text tower`);
      const again = open();
      try {
        return text(again);
      } finally {
        again.close();
      }
    });
  } finally {
    src.close();
  }
}

/**
 * Names a CLIP file may carry that are not weights: the int64 scalars of OpenAI's TorchScript CLIPs (its
 * `build_model` deletes them before the strict load) and the position ids older transformers saved.
 */
const OPTIONAL = new Set([
  'input_resolution',
  'context_length',
  'vocab_size',
  'text_model.embeddings.position_ids',
  'vision_model.embeddings.position_ids',
]);

/** A transformer block's tensor names under `p` (e.g. `visual.transformer.resblocks.3.`). */
function blockNames(p: string, hf: boolean): string[] {
  const names = hf
    ? [
        ...['q_proj', 'k_proj', 'v_proj', 'out_proj'].flatMap((n) => [`self_attn.${n}.weight`, `self_attn.${n}.bias`]),
        'layer_norm1.weight',
        'layer_norm1.bias',
        'layer_norm2.weight',
        'layer_norm2.bias',
        'mlp.fc1.weight',
        'mlp.fc1.bias',
        'mlp.fc2.weight',
        'mlp.fc2.bias',
      ]
    : [
        'ln_1.weight',
        'ln_1.bias',
        'attn.in_proj_weight',
        'attn.in_proj_bias',
        'attn.out_proj.weight',
        'attn.out_proj.bias',
        'ln_2.weight',
        'ln_2.bias',
        'mlp.c_fc.weight',
        'mlp.c_fc.bias',
        'mlp.c_proj.weight',
        'mlp.c_proj.bias',
      ];
  return names.map((n) => p + n);
}

/**
 * Every tensor a CLIP of this configuration has in the layout, as its module's `state_dict()` names them (with
 * `logit_scale`, which promptiqa does not require): what a strict load accepts, and nothing else.
 */
export function expectedTensorNames(c: ClipConfig, layout: 'hf' | 'openai'): Set<string> {
  const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
  const pair = (p: string): string[] => [`${p}.weight`, `${p}.bias`];
  if (layout === 'hf') {
    return new Set([
      'vision_model.embeddings.class_embedding',
      'vision_model.embeddings.patch_embedding.weight',
      'vision_model.embeddings.position_embedding.weight',
      ...pair('vision_model.pre_layrnorm'),
      ...range(c.visionLayers).flatMap((i) => blockNames(`vision_model.encoder.layers.${i}.`, true)),
      ...pair('vision_model.post_layernorm'),
      'visual_projection.weight',
      'text_model.embeddings.token_embedding.weight',
      'text_model.embeddings.position_embedding.weight',
      ...range(c.textLayers).flatMap((i) => blockNames(`text_model.encoder.layers.${i}.`, true)),
      ...pair('text_model.final_layer_norm'),
      'text_projection.weight',
      'logit_scale',
    ]);
  }
  const bn = (p: string): string[] => [...pair(p), `${p}.running_mean`, `${p}.running_var`, `${p}.num_batches_tracked`];
  const convBnNames = (conv: string, norm: string): string[] => [`${conv}.weight`, ...bn(norm)];
  const vision = c.resnet
    ? [
        ...[1, 2, 3].flatMap((i) => convBnNames(`visual.conv${i}`, `visual.bn${i}`)),
        ...resnetBlocks(c.visionWidth, c.resnet.layers).flatMap(({ stage, index, downsample }) => {
          const p = `visual.layer${stage + 1}.${index}`;
          return [
            ...[1, 2, 3].flatMap((i) => convBnNames(`${p}.conv${i}`, `${p}.bn${i}`)),
            ...(downsample ? convBnNames(`${p}.downsample.0`, `${p}.downsample.1`) : []),
          ];
        }),
        'visual.attnpool.positional_embedding',
        ...['q_proj', 'k_proj', 'v_proj', 'c_proj'].flatMap((n) => pair(`visual.attnpool.${n}`)),
      ]
    : [
        'visual.conv1.weight',
        'visual.class_embedding',
        'visual.positional_embedding',
        ...pair('visual.ln_pre'),
        ...range(c.visionLayers).flatMap((i) => blockNames(`visual.transformer.resblocks.${i}.`, false)),
        ...pair('visual.ln_post'),
        'visual.proj',
      ];
  return new Set([
    ...vision,
    'token_embedding.weight',
    'positional_embedding',
    ...range(c.textLayers).flatMap((i) => blockNames(`transformer.resblocks.${i}.`, false)),
    ...pair('ln_final'),
    'text_projection',
    'logit_scale',
  ]);
}

/**
 * Refuses a file with tensors its CLIP (or its method's parameters) has no place for, as pyiqa's strict loads
 * do, naming them; `what` says what the file was read as. A custom file that carries more on purpose is
 * allowed with the `allowExtraTensors` option (`--allow-extra-tensors`).
 */
export function refuseExtraTensors(file: string, extra: readonly string[] | undefined, what: string): void {
  if (!extra?.length) return;
  const shown = extra.slice(0, 8).map((k) => `"${k}"`);
  throw new WeightError(
    `${file}: ${extra.length === 1 ? 'a tensor' : `${extra.length} tensors`} that ${what} does not have: ${shown.join(', ')}${extra.length > shown.length ? `, … (${extra.length - shown.length} more)` : ''}; ` +
      'a strict load (as pyiqa loads its released files) refuses them: give allowExtraTensors: true (--allow-extra-tensors) for a file made to carry them',
  );
}

/** What says a file is the one read before: its inode, size and modification time. */
function fileIdentity(file: string): string {
  const st = statSync(file, { bigint: true });
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
}

/** Weights whose text tower is read on first use (once). */
function withLazyText(rest: Omit<ClipWeights, 'text'>, read: () => TextWeights): ClipWeights {
  let text: TextWeights | undefined;
  return Object.defineProperty(rest, 'text', { get: () => (text ??= read()), enumerable: true }) as ClipWeights;
}

/** The text tower from a source: read when called. */
type TextReader = (src: TensorSource) => TextWeights;

function layerWeights(src: TensorSource, names: (k: string) => string, width: number, mlp: number, hf: boolean): LayerWeights {
  let qkvW: Float32Array;
  let qkvB: Float32Array;
  if (hf) {
    // Hugging Face stores q, k, v as separate Linears; fuse them into one [width, 3·width] matrix
    const parts = ['q_proj', 'k_proj', 'v_proj'].map((p) => src.linearT(names(`self_attn.${p}.weight`), width, width));
    qkvW = new Float32Array(width * 3 * width);
    for (let r = 0; r < width; r++) parts.forEach((p, j) => qkvW.set(p.subarray(r * width, (r + 1) * width), r * 3 * width + j * width));
    qkvB = new Float32Array(3 * width);
    ['q_proj', 'k_proj', 'v_proj'].forEach((p, j) => qkvB.set(src.get(names(`self_attn.${p}.bias`), [width]), j * width));
    return {
      ln1: [src.get(names('layer_norm1.weight'), [width]), src.get(names('layer_norm1.bias'), [width])],
      qkvW,
      qkvB,
      outW: src.linearT(names('self_attn.out_proj.weight'), width, width),
      outB: src.get(names('self_attn.out_proj.bias'), [width]),
      ln2: [src.get(names('layer_norm2.weight'), [width]), src.get(names('layer_norm2.bias'), [width])],
      fcW: src.linearT(names('mlp.fc1.weight'), mlp, width),
      fcB: src.get(names('mlp.fc1.bias'), [mlp]),
      projW: src.linearT(names('mlp.fc2.weight'), width, mlp),
      projB: src.get(names('mlp.fc2.bias'), [width]),
    };
  }
  return {
    ln1: [src.get(names('ln_1.weight'), [width]), src.get(names('ln_1.bias'), [width])],
    qkvW: src.linearT(names('attn.in_proj_weight'), 3 * width, width),
    qkvB: src.get(names('attn.in_proj_bias'), [3 * width]),
    outW: src.linearT(names('attn.out_proj.weight'), width, width),
    outB: src.get(names('attn.out_proj.bias'), [width]),
    ln2: [src.get(names('ln_2.weight'), [width]), src.get(names('ln_2.bias'), [width])],
    fcW: src.linearT(names('mlp.c_fc.weight'), mlp, width),
    fcB: src.get(names('mlp.c_fc.bias'), [mlp]),
    projW: src.linearT(names('mlp.c_proj.weight'), width, mlp),
    projB: src.get(names('mlp.c_proj.bias'), [width]),
  };
}

function countLayers(src: TensorSource, prefix: string, suffix: string): number {
  let n = 0;
  while (src.has(`${prefix}${n}${suffix}`)) n++;
  return n;
}

interface HfConfig {
  projection_dim?: number;
  text_config?: {
    hidden_size?: number;
    intermediate_size?: number;
    num_attention_heads?: number;
    num_hidden_layers?: number;
    max_position_embeddings?: number;
    vocab_size?: number;
    hidden_act?: string;
    layer_norm_eps?: number;
  };
  vision_config?: {
    hidden_size?: number;
    intermediate_size?: number;
    num_attention_heads?: number;
    num_hidden_layers?: number;
    image_size?: number;
    patch_size?: number;
  };
}

const HF_NUMBER_FIELDS = [
  'hidden_size',
  'intermediate_size',
  'num_attention_heads',
  'num_hidden_layers',
  'max_position_embeddings',
  'vocab_size',
  'layer_norm_eps',
  'image_size',
  'patch_size',
];

/** A Hugging Face config.json, checked for the fields loadHf reads: they come from a file, not from this code. */
function readHfConfig(path: string): HfConfig {
  let cfg: unknown;
  try {
    cfg = JSON.parse(readRegularText(path, 'model config', READ_LIMITS.json));
  } catch (err) {
    if (err instanceof InputFileError) throw err;
    throw new WeightError(`${path}: not valid JSON (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(cfg)) throw new WeightError(`${path}: expected a JSON object`);
  for (const part of ['text_config', 'vision_config']) {
    const sub = cfg[part];
    if (sub === undefined) continue;
    if (!isObject(sub)) throw new WeightError(`${path}: ${part} must be an object`);
    for (const field of HF_NUMBER_FIELDS) {
      const v = sub[field];
      const kind = field === 'layer_norm_eps' ? 'number' : 'integer';
      if (v !== undefined && !(typeof v === 'number' && v > 0 && (kind === 'number' ? Number.isFinite(v) : Number.isInteger(v)))) {
        throw new WeightError(`${path}: ${part}.${field} must be a positive ${kind}, got ${JSON.stringify(v)}`);
      }
    }
    if (sub.hidden_act !== undefined && typeof sub.hidden_act !== 'string') {
      throw new WeightError(`${path}: ${part}.hidden_act must be a string, got ${JSON.stringify(sub.hidden_act)}`);
    }
  }
  return cfg; // the fields read are checked above
}

function loadHf(src: TensorSource, cfg: HfConfig | undefined, id: string): Omit<ClipWeights, 'text'> & { text: TextReader } {
  const [vw, , p] = src.shape('vision_model.embeddings.patch_embedding.weight') as [number, number, number];
  const [vocab, tw] = src.shape('text_model.embeddings.token_embedding.weight') as [number, number];
  const [embed] = src.shape('visual_projection.weight') as [number];
  const npos = src.shape('vision_model.embeddings.position_embedding.weight')[0]!;
  const grid = Math.round(Math.sqrt(npos - 1));
  const tc = cfg?.text_config ?? {};
  const vc = cfg?.vision_config ?? {};
  const config: ClipConfig = {
    embedDim: embed,
    imageSize: vc.image_size ?? grid * p,
    patchSize: p,
    visionWidth: vw,
    visionLayers: vc.num_hidden_layers ?? countLayers(src, 'vision_model.encoder.layers.', '.layer_norm1.weight'),
    visionHeads: vc.num_attention_heads ?? vw / 64,
    visionMlp: src.shape('vision_model.encoder.layers.0.mlp.fc1.weight')[0]!,
    contextLength: src.shape('text_model.embeddings.position_embedding.weight')[0]!,
    vocabSize: vocab,
    textWidth: tw,
    textLayers: tc.num_hidden_layers ?? countLayers(src, 'text_model.encoder.layers.', '.layer_norm1.weight'),
    textHeads: tc.num_attention_heads ?? tw / 64,
    textMlp: src.shape('text_model.encoder.layers.0.mlp.fc1.weight')[0]!,
    layerNormEps: tc.layer_norm_eps ?? 1e-5,
    activation: tc.hidden_act === 'gelu' ? 'gelu' : 'quick_gelu',
  };
  const c = config;
  const vision: VisionWeights = {
    kind: 'vit',
    patchW: src.get('vision_model.embeddings.patch_embedding.weight', [vw, 3, p, p]),
    classEmbedding: src.get('vision_model.embeddings.class_embedding', [vw]),
    positionalEmbedding: src.get('vision_model.embeddings.position_embedding.weight', [npos, vw]),
    lnPre: [src.get('vision_model.pre_layrnorm.weight', [vw]), src.get('vision_model.pre_layrnorm.bias', [vw])],
    layers: Array.from({ length: c.visionLayers }, (_, i) =>
      layerWeights(src, (k) => `vision_model.encoder.layers.${i}.${k}`, vw, c.visionMlp, true),
    ),
    lnPost: [src.get('vision_model.post_layernorm.weight', [vw]), src.get('vision_model.post_layernorm.bias', [vw])],
    projection: src.linearT('visual_projection.weight', embed, vw),
  };
  const text = (src: TensorSource): TextWeights => ({
    tokenEmbedding: src.get('text_model.embeddings.token_embedding.weight', [vocab, tw]),
    positionalEmbedding: src.get('text_model.embeddings.position_embedding.weight', [c.contextLength, tw]),
    layers: Array.from({ length: c.textLayers }, (_, i) =>
      layerWeights(src, (k) => `text_model.encoder.layers.${i}.${k}`, tw, c.textMlp, true),
    ),
    lnFinal: [src.get('text_model.final_layer_norm.weight', [tw]), src.get('text_model.final_layer_norm.bias', [tw])],
    projection: src.linearT('text_projection.weight', embed, tw),
  });
  const logitScale = src.has('logit_scale') ? src.get('logit_scale', [])[0]! : Math.log(100);
  return { config, vision, text, logitScale, id, layout: 'hf' };
}

/** Names only OpenAI's ModifiedResNet has, and names only its VisionTransformer has (prefixes, or whole names). */
const RESNET_MARKS = [
  'visual.layer1.',
  'visual.layer2.',
  'visual.layer3.',
  'visual.layer4.',
  'visual.attnpool.',
  'visual.bn1.',
  'visual.conv2.',
  'visual.conv3.',
];
const VIT_MARKS = [
  'visual.class_embedding',
  'visual.positional_embedding',
  'visual.transformer.',
  'visual.ln_pre.',
  'visual.ln_post.',
  'visual.proj',
];

/**
 * The image tower of an OpenAI-layout file, decided from every distinctive name present (not from one that
 * may be the one missing): a file with names of both towers, or of neither, is refused with what was found.
 */
function visionKind(src: TensorSource, file: string): 'vit' | 'resnet' {
  const keys = src.keys();
  const found = (marks: string[]): string[] => marks.filter((m) => keys.some((k) => (m.endsWith('.') ? k.startsWith(m) : k === m)));
  const resnet = found(RESNET_MARKS);
  const vit = found(VIT_MARKS);
  if (resnet.length && !vit.length) return 'resnet';
  if (vit.length && !resnet.length) return 'vit';
  const list = (marks: string[]): string => marks.map((m) => (m.endsWith('.') ? `${m}*` : m)).join(', ');
  if (resnet.length)
    throw new WeightError(
      `${file}: has tensors of both image towers, a ResNet's (${list(resnet)}) and a ViT's (${list(vit)}): not one CLIP`,
    );
  throw new WeightError(`${file}: no image tower: none of a ResNet's tensors (${list(RESNET_MARKS)}) nor a ViT's (${list(VIT_MARKS)})`);
}

/** How many blocks a stage has: one more than the highest index named under `prefix` (a gap is then a missing tensor, by name). */
function countBlocks(src: TensorSource, prefix: string): number {
  let n = 0;
  for (const k of src.keys()) {
    if (!k.startsWith(prefix)) continue;
    const m = /^(\d+)\./.exec(k.slice(prefix.length));
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

function loadOpenAI(src: TensorSource, id: string, file: string): Omit<ClipWeights, 'text'> & { text: TextReader } {
  const [vocab, tw] = src.shape('token_embedding.weight') as [number, number];
  const [, embed] = src.shape('text_projection') as [number, number];
  const contextLength = src.shape('positional_embedding')[0]!;
  const textLayers = countLayers(src, 'transformer.resblocks.', '.ln_1.weight');
  const textMlp = src.shape('transformer.resblocks.0.mlp.c_fc.weight')[0]!;
  const text = (src: TensorSource): TextWeights => ({
    tokenEmbedding: src.get('token_embedding.weight', [vocab, tw]),
    positionalEmbedding: src.get('positional_embedding', [contextLength, tw]),
    layers: Array.from({ length: textLayers }, (_, i) => layerWeights(src, (k) => `transformer.resblocks.${i}.${k}`, tw, textMlp, false)),
    lnFinal: [src.get('ln_final.weight', [tw]), src.get('ln_final.bias', [tw])],
    projection: src.get('text_projection', [tw, embed]),
  });
  const textConfig = { contextLength, vocabSize: vocab, textWidth: tw, textLayers, textHeads: tw / 64, textMlp };
  const logitScale = src.has('logit_scale') ? src.get('logit_scale', [])[0]! : Math.log(100);
  if (visionKind(src, file) === 'resnet') {
    const { config, vision } = loadOpenAIResNet(src, embed);
    return { config: { ...config, ...textConfig }, vision, text, logitScale, id, layout: 'openai' };
  }
  const [vw, , p] = src.shape('visual.conv1.weight') as [number, number, number];
  const npos = src.shape('visual.positional_embedding')[0]!;
  const grid = Math.round(Math.sqrt(npos - 1));
  const config: ClipConfig = {
    embedDim: embed,
    imageSize: grid * p,
    patchSize: p,
    visionWidth: vw,
    visionLayers: countLayers(src, 'visual.transformer.resblocks.', '.ln_1.weight'),
    visionHeads: vw / 64,
    visionMlp: src.shape('visual.transformer.resblocks.0.mlp.c_fc.weight')[0]!,
    contextLength: src.shape('positional_embedding')[0]!,
    vocabSize: vocab,
    textWidth: tw,
    textLayers: countLayers(src, 'transformer.resblocks.', '.ln_1.weight'),
    textHeads: tw / 64,
    textMlp: src.shape('transformer.resblocks.0.mlp.c_fc.weight')[0]!,
    layerNormEps: 1e-5,
    activation: 'quick_gelu',
  };
  const c = config;
  const vision: VisionWeights = {
    kind: 'vit',
    patchW: src.get('visual.conv1.weight', [vw, 3, p, p]),
    classEmbedding: src.get('visual.class_embedding', [vw]),
    positionalEmbedding: src.get('visual.positional_embedding', [npos, vw]),
    lnPre: [src.get('visual.ln_pre.weight', [vw]), src.get('visual.ln_pre.bias', [vw])],
    layers: Array.from({ length: c.visionLayers }, (_, i) =>
      layerWeights(src, (k) => `visual.transformer.resblocks.${i}.${k}`, vw, c.visionMlp, false),
    ),
    lnPost: [src.get('visual.ln_post.weight', [vw]), src.get('visual.ln_post.bias', [vw])],
    projection: src.get('visual.proj', [vw, embed]),
  };
  return { config, vision, text, logitScale, id, layout: 'openai' };
}

/** BatchNorm2d's default ε, which CLIP's ResNets use. */
const BN_EPS = 1e-5;

/** A bias-free conv and the BatchNorm after it, folded into one conv with a bias (in float64, then rounded). */
function convBn(src: TensorSource, conv: string, bn: string, shape: [number, number, number, number]): ConvBn {
  const kernel = src.get(conv, shape);
  const [out] = shape;
  const gamma = src.get(`${bn}.weight`, [out]);
  const beta = src.get(`${bn}.bias`, [out]);
  const mean = src.get(`${bn}.running_mean`, [out]);
  const variance = src.get(`${bn}.running_var`, [out]);
  const per = kernel.length / out;
  const folded = new Float32Array(kernel.length);
  const bias = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    const scale = gamma[o]! / Math.sqrt(variance[o]! + BN_EPS);
    for (let i = o * per; i < (o + 1) * per; i++) folded[i] = kernel[i]! * scale;
    bias[o] = beta[o]! - mean[o]! * scale;
  }
  return { kernel: folded, bias, shape };
}

/**
 * OpenAI's ModifiedResNet under its state-dict names, configured as `build_model` does: the stages'
 * block counts from the `visual.layer{1..4}.N` names, the width from layer1's first conv, the native
 * resolution from the attention pool's positional embedding (32 × its grid side), heads = width·32/64.
 */
function loadOpenAIResNet(
  src: TensorSource,
  embed: number,
): {
  config: Omit<ClipConfig, 'contextLength' | 'vocabSize' | 'textWidth' | 'textLayers' | 'textHeads' | 'textMlp'>;
  vision: ResNetWeights;
} {
  const layers = [1, 2, 3, 4].map((b) => countBlocks(src, `visual.layer${b}.`)) as [number, number, number, number];
  const width = src.shape('visual.layer1.0.conv1.weight')[0]!;
  const what = 'visual.layer1.0.conv1.weight';
  if (layers.some((n) => n < 1))
    throw new WeightError(`ResNet CLIP: every stage needs a block (found ${layers.join(', ')} in visual.layer1..4)`);
  if (width < 2 || width % 2 !== 0) throw new WeightError(`ResNet CLIP: the width read from ${what} must be even, got ${width}`);
  const e = width * 32;
  const [npos] = src.shape('visual.attnpool.positional_embedding') as [number];
  const grid = Math.round(Math.sqrt(npos - 1));
  if (grid < 1 || grid * grid + 1 !== npos)
    throw new WeightError(`ResNet CLIP: visual.attnpool.positional_embedding has ${npos} rows, not 1 + a square grid`);

  const half = width / 2;
  const stem: [ConvBn, ConvBn, ConvBn] = [
    convBn(src, 'visual.conv1.weight', 'visual.bn1', [half, 3, 3, 3]),
    convBn(src, 'visual.conv2.weight', 'visual.bn2', [half, half, 3, 3]),
    convBn(src, 'visual.conv3.weight', 'visual.bn3', [width, half, 3, 3]),
  ];
  const blocks = resnetBlocks(width, layers);
  const stages = layers.map((_, s) =>
    blocks
      .filter((b) => b.stage === s)
      .map(({ index, inplanes, planes, stride, downsample }): BottleneckWeights => {
        const p = `visual.layer${s + 1}.${index}`;
        if (downsample !== src.has(`${p}.downsample.0.weight`)) {
          throw new WeightError(`ResNet CLIP: ${p} ${downsample ? 'lacks' : 'has'} a downsample branch, unlike OpenAI's ModifiedResNet`);
        }
        return {
          conv1: convBn(src, `${p}.conv1.weight`, `${p}.bn1`, [planes, inplanes, 1, 1]),
          conv2: convBn(src, `${p}.conv2.weight`, `${p}.bn2`, [planes, planes, 3, 3]),
          conv3: convBn(src, `${p}.conv3.weight`, `${p}.bn3`, [planes * 4, planes, 1, 1]),
          stride,
          downsample: downsample ? convBn(src, `${p}.downsample.0.weight`, `${p}.downsample.1`, [planes * 4, inplanes, 1, 1]) : null,
        };
      }),
  );
  // k and v are separate Linears in OpenAI's AttentionPool2d; fuse them into one product over the tokens
  const [kW, vW] = ['k_proj', 'v_proj'].map((n) => src.linearT(`visual.attnpool.${n}.weight`, e, e)) as [Float32Array, Float32Array];
  const kvW = new Float32Array(e * 2 * e);
  for (let r = 0; r < e; r++) {
    kvW.set(kW.subarray(r * e, (r + 1) * e), r * 2 * e);
    kvW.set(vW.subarray(r * e, (r + 1) * e), r * 2 * e + e);
  }
  const kvB = new Float32Array(2 * e);
  kvB.set(src.get('visual.attnpool.k_proj.bias', [e]), 0);
  kvB.set(src.get('visual.attnpool.v_proj.bias', [e]), e);
  const vision: ResNetWeights = {
    kind: 'resnet',
    stem,
    stages,
    attnpool: {
      positionalEmbedding: src.get('visual.attnpool.positional_embedding', [npos, e]),
      qW: src.linearT('visual.attnpool.q_proj.weight', e, e),
      qB: src.get('visual.attnpool.q_proj.bias', [e]),
      kvW,
      kvB,
      outW: src.linearT('visual.attnpool.c_proj.weight', embed, e),
      outB: src.get('visual.attnpool.c_proj.bias', [embed]),
    },
  };
  const config = {
    embedDim: embed,
    imageSize: grid * 32,
    patchSize: 32,
    visionWidth: width,
    visionLayers: layers.reduce((a, b) => a + b, 0),
    visionHeads: e / 64,
    visionMlp: 0,
    layerNormEps: 1e-5,
    activation: 'quick_gelu' as const,
    resnet: { layers },
  };
  return { config, vision };
}

/** Random weights of a given shape (benchmarks, tests): N(0, 0.02) matrices, unit layer-norm scales. */
export function randomClipWeights(config: ClipConfig, seed = 0, parts: { text?: boolean } = {}): ClipWeights {
  const rng = new Rng(seed);
  // a cheap normal: the sum of uniforms is enough for weights nobody reads
  const rand = (n: number, std = 0.02): Float32Array => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (rng.uniform() + rng.uniform() + rng.uniform() - 1.5) * 2 * std;
    return a;
  };
  const ln = (w: number): [Float32Array, Float32Array] => [new Float32Array(w).fill(1), rand(w)];
  const layer = (w: number, mlp: number): LayerWeights => ({
    ln1: ln(w),
    qkvW: rand(w * 3 * w),
    qkvB: rand(3 * w),
    outW: rand(w * w),
    outB: rand(w),
    ln2: ln(w),
    fcW: rand(w * mlp),
    fcB: rand(mlp),
    projW: rand(mlp * w),
    projB: rand(w),
  });
  const c = config;
  const vw = c.visionWidth;
  const tw = c.textWidth;
  const withText = parts.text ?? true;
  return {
    config: { ...c },
    vision: c.resnet
      ? randomResNet(c, c.resnet.layers, rand)
      : {
          kind: 'vit',
          patchW: rand(vw * 3 * c.patchSize ** 2),
          classEmbedding: rand(vw),
          positionalEmbedding: rand(((c.imageSize / c.patchSize) ** 2 + 1) * vw),
          lnPre: ln(vw),
          layers: Array.from({ length: c.visionLayers }, () => layer(vw, c.visionMlp)),
          lnPost: ln(vw),
          projection: rand(vw * c.embedDim),
        },
    text: {
      tokenEmbedding: withText ? rand(c.vocabSize * tw) : new Float32Array(0),
      positionalEmbedding: rand(c.contextLength * tw),
      layers: withText ? Array.from({ length: c.textLayers }, () => layer(tw, c.textMlp)) : [],
      lnFinal: ln(tw),
      projection: rand(tw * c.embedDim),
    },
    logitScale: Math.log(100),
    id: `random:${JSON.stringify(c)}:${seed}`,
    layout: 'random',
  };
}

/** Random ResNet tower weights; kernels scaled by 1/√fan-in so activations keep their size through the stages. */
function randomResNet(c: ClipConfig, layers: readonly number[], rand: (n: number, std?: number) => Float32Array): ResNetWeights {
  const conv = (out: number, inp: number, k: number): ConvBn => ({
    kernel: rand(out * inp * k * k, 1 / Math.sqrt(inp * k * k)),
    bias: rand(out),
    shape: [out, inp, k, k],
  });
  const w = c.visionWidth;
  const e = resnetEmbedWidth(c);
  const blocks = resnetBlocks(w, layers);
  const stages = layers.map((_, s) =>
    blocks
      .filter((b) => b.stage === s)
      .map(({ inplanes, planes, stride, downsample }): BottleneckWeights => ({
        conv1: conv(planes, inplanes, 1),
        conv2: conv(planes, planes, 3),
        conv3: conv(planes * 4, planes, 1),
        stride,
        downsample: downsample ? conv(planes * 4, inplanes, 1) : null,
      })),
  );
  return {
    kind: 'resnet',
    stem: [conv(w / 2, 3, 3), conv(w / 2, w / 2, 3), conv(w, w / 2, 3)],
    stages,
    attnpool: {
      positionalEmbedding: rand(((c.imageSize / 32) ** 2 + 1) * e, 1 / Math.sqrt(e)),
      qW: rand(e * e),
      qB: rand(e),
      kvW: rand(e * 2 * e),
      kvB: rand(2 * e),
      outW: rand(e * c.embedDim),
      outB: rand(c.embedDim),
    },
  };
}
