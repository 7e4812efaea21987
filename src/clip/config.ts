import { READ_LIMITS, readRegularText } from '../util/fs.js';
import { CLIP_MEAN, CLIP_STD } from '../data/preprocess.js';

/** CLIP's architecture hyper-parameters, in one shape whatever layout the weights came in. */
export interface ClipConfig {
  embedDim: number;
  imageSize: number;
  patchSize: number;
  visionWidth: number;
  visionLayers: number;
  visionHeads: number;
  visionMlp: number;
  contextLength: number;
  vocabSize: number;
  textWidth: number;
  textLayers: number;
  textHeads: number;
  textMlp: number;
  layerNormEps: number;
  activation: 'quick_gelu' | 'gelu';
  /**
   * Set for CLIPs with OpenAI's ModifiedResNet image tower. Then `visionWidth` is the stem width (64 for
   * RN50), `visionHeads` the attention pool's heads, `patchSize` the tower's total stride (32),
   * `imageSize` the native resolution of the pool's positional embedding, `visionLayers` the number of
   * bottlenecks and `visionMlp` is unused.
   */
  resnet?: ResNetConfig;
}

export interface ResNetConfig {
  /** bottleneck blocks in each of the four stages */
  layers: readonly [number, number, number, number];
}

/** OpenAI's ResNet CLIPs (clip/model.py `build_model`): stages, stem width, embedding and text widths, resolution. */
function resnetPreset(
  layers: [number, number, number, number],
  width: number,
  embedDim: number,
  textWidth: number,
  imageSize: number,
): ClipConfig {
  const base = preset(32, width, 0, textWidth, embedDim);
  return {
    ...base,
    imageSize,
    visionLayers: layers.reduce((a, b) => a + b, 0),
    visionHeads: (width * 32) / 64,
    visionMlp: 0,
    resnet: { layers },
  };
}

function preset(patchSize: number, visionWidth: number, visionLayers: number, textWidth: number, embedDim: number): ClipConfig {
  return {
    embedDim,
    imageSize: 224,
    patchSize,
    visionWidth,
    visionLayers,
    visionHeads: visionWidth / 64,
    visionMlp: 4 * visionWidth,
    contextLength: 77,
    vocabSize: 49408,
    textWidth,
    textLayers: 12,
    textHeads: textWidth / 64,
    textMlp: 4 * textWidth,
    layerNormEps: 1e-5,
    activation: 'quick_gelu',
  };
}

/** The shapes of OpenAI's released CLIPs, for benchmarks with random weights. */
export const ARCHS: Readonly<Record<string, ClipConfig>> = {
  'vit-b-32': preset(32, 768, 12, 512, 512),
  'vit-b-16': preset(16, 768, 12, 512, 512),
  'vit-l-14': preset(14, 1024, 24, 768, 768),
  rn50: resnetPreset([3, 4, 6, 3], 64, 1024, 512, 224),
  rn101: resnetPreset([3, 4, 23, 3], 64, 512, 512, 224),
  rn50x4: resnetPreset([4, 6, 10, 6], 80, 640, 640, 288),
  rn50x16: resnetPreset([6, 8, 18, 8], 96, 768, 768, 384),
  rn50x64: resnetPreset([3, 15, 36, 10], 128, 1024, 1024, 448),
};

export function archConfig(name: string): ClipConfig {
  const c = ARCHS[name];
  if (!c) throw new Error(`unknown architecture "${name}" (known: ${Object.keys(ARCHS).join(', ')})`);
  return { ...c, ...(c.resnet ? { resnet: { layers: [...c.resnet.layers] as const } } : {}) };
}

/** The channels of a ResNet CLIP's last stage, which its attention pool attends over: 32 × the stem width. */
export function resnetEmbedWidth(c: ClipConfig): number {
  return c.visionWidth * 32;
}

/** One bottleneck of OpenAI's ModifiedResNet: where it is, its input and inner widths (output 4 × planes), its stride, and whether its shortcut is a conv. */
export interface BottleneckShape {
  stage: number;
  index: number;
  inplanes: number;
  planes: number;
  stride: number;
  downsample: boolean;
}

/**
 * The bottlenecks of a ResNet CLIP in order, as ModifiedResNet makes them: stage s has planes = width · 2^s,
 * the first block of stages 2–4 has stride 2, and a block whose stride or width changes has a conv shortcut.
 */
export function resnetBlocks(width: number, layers: readonly number[]): BottleneckShape[] {
  const out: BottleneckShape[] = [];
  let inplanes = width;
  layers.forEach((blocks, stage) => {
    const planes = width * 2 ** stage;
    for (let index = 0; index < blocks; index++) {
      const stride = index === 0 && stage > 0 ? 2 : 1;
      out.push({ stage, index, inplanes, planes, stride, downsample: stride > 1 || inplanes !== planes * 4 });
      inplanes = planes * 4;
    }
  });
  return out;
}

/** Output size of a ResNet CLIP's tower for an H×W input: conv1 (stride 2, pad 1), then four halvings with floor (the stem pool and the strided stages). */
export function resnetGrid(h: number, w: number): [number, number] {
  const down = (n: number): number => {
    let m = Math.floor((n - 1) / 2) + 1;
    for (let i = 0; i < 4; i++) m = Math.floor(m / 2);
    return m;
  };
  return [down(h), down(w)];
}

/**
 * Trainable-parameter count of the image tower as PyTorch counts `model.visual.parameters()` (BatchNorm
 * scale and shift included, running statistics not).
 */
export function visionParamCount(c: ClipConfig): number {
  if (!c.resnet) {
    const w = c.visionWidth;
    const layer = 4 * w + 3 * w * w + 3 * w + w * w + w + 2 * w * c.visionMlp + c.visionMlp + w;
    return 3 * c.patchSize ** 2 * w + w + (numPatches(c) + 1) * w + 2 * w + c.visionLayers * layer + 2 * w + w * c.embedDim;
  }
  const convBn = (cin: number, cout: number, k: number): number => cin * cout * k * k + 2 * cout;
  const w = c.visionWidth;
  let n = convBn(3, w / 2, 3) + convBn(w / 2, w / 2, 3) + convBn(w / 2, w, 3);
  for (const { inplanes, planes, downsample } of resnetBlocks(w, c.resnet.layers)) {
    n += convBn(inplanes, planes, 1) + convBn(planes, planes, 3) + convBn(planes, planes * 4, 1);
    if (downsample) n += convBn(inplanes, planes * 4, 1);
  }
  const e = resnetEmbedWidth(c);
  const grid = c.imageSize / 32;
  return n + (grid * grid + 1) * e + 3 * (e * e + e) + e * c.embedDim + c.embedDim;
}

export function numPatches(c: ClipConfig): number {
  return (c.imageSize / c.patchSize) ** 2;
}

/**
 * Multiply-accumulates ×2 of one image through the vision encoder (matrix products and convolutions only),
 * for GFLOP/s figures. `extraTokens` (prompt tokens) counts for the ViT only.
 */
export function visionFlops(c: ClipConfig, extraTokens = 0): number {
  if (c.resnet) return resnetFlops(c, c.resnet.layers);
  const w = c.visionWidth;
  const perLayer = blockFlops(numPatches(c) + 1 + extraTokens, w, c.visionMlp);
  return 2 * numPatches(c) * 3 * c.patchSize ** 2 * w + c.visionLayers * perLayer + 2 * w * c.embedDim;
}

/**
 * Multiply-accumulates ×2 of one prompt (all `contextLength` tokens: the causal mask saves no product) through the
 * text encoder, then the projection of its EOT token; matrix products only, as `visionFlops`.
 */
export function textFlops(c: ClipConfig): number {
  return c.textLayers * blockFlops(c.contextLength, c.textWidth, c.textMlp) + 2 * c.textWidth * c.embedDim;
}

/** One transformer block on s tokens of width w: the q, k, v projections, q·kᵀ and the weighted values, the output projection, the MLP. */
function blockFlops(s: number, w: number, mlp: number): number {
  return 2 * s * w * 3 * w + 2 * 2 * s * s * w + 2 * s * w * w + 2 * 2 * s * w * mlp;
}

/** visionFlops of a ResNet tower at its native size: every conv, then the attention pool (one query). */
function resnetFlops(c: ClipConfig, layers: readonly number[]): number {
  const conv = (cin: number, cout: number, k: number, side: number): number => 2 * cin * cout * k * k * side * side;
  const w = c.visionWidth;
  let side = c.imageSize / 2;
  let f = conv(3, w / 2, 3, side) + conv(w / 2, w / 2, 3, side) + conv(w / 2, w, 3, side);
  side /= 2;
  for (const { inplanes, planes, stride, downsample } of resnetBlocks(w, layers)) {
    const out = side / stride;
    f += conv(inplanes, planes, 1, side) + conv(planes, planes, 3, side) + conv(planes, planes * 4, 1, out);
    if (downsample) f += conv(inplanes, planes * 4, 1, out);
    side = out;
  }
  const e = resnetEmbedWidth(c);
  const s = side * side + 1;
  return f + 2 * e * e + 2 * s * e * 2 * e + 2 * 2 * s * e + 2 * e * c.embedDim;
}

// ---------------------------------------------------------------------------------------------------------
// open_clip's config

/** The file an open_clip repository describes its model in, beside its weights. */
export const OPEN_CLIP_CONFIG = 'open_clip_config.json';

/** An open_clip config applied to the configuration read off the tensors. */
export interface OpenClipApplied {
  config: ClipConfig;
  /** what it sets beyond what the tensors say under OpenAI's defaults ("gelu", "vision_heads=4"); empty when nothing */
  changes: string[];
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A field whose value must be one of `accepted` (JSON-equal) for the encoders to build the model; `why` names the feature. */
interface Fixed {
  accepted: readonly unknown[];
  why: string;
}

/**
 * Fields of open_clip's CLIPVisionCfg / CLIPTextCfg / CLIP model config that promptiqa's encoders have no way to
 * build at another value, with what that value would need. `null`, `{}` and the default are accepted.
 */
const VISION_FIXED: Readonly<Record<string, Fixed>> = {
  timm_model_name: { accepted: [null, ''], why: 'a timm image tower' },
  ls_init_value: { accepted: [null], why: 'layer scale' },
  attentional_pool: { accepted: [false], why: 'an attentional pooler' },
  no_ln_pre: { accepted: [false], why: 'a tower without its pre-LayerNorm' },
  pos_embed_type: { accepted: ['learnable'], why: 'another positional embedding' },
  final_ln_after_pool: { accepted: [false], why: 'the final LayerNorm after the pool' },
  pool_type: { accepted: ['tok'], why: 'another pool than the class token' },
  act_kwargs: { accepted: [null, {}], why: 'activation arguments' },
  norm_kwargs: { accepted: [null, {}], why: 'LayerNorm arguments (non-default norms)' },
  input_patchnorm: { accepted: [false], why: 'a LayerNorm on the patches' },
  global_average_pool: { accepted: [false], why: 'average pooling' },
};

const TEXT_FIXED: Readonly<Record<string, Fixed>> = {
  hf_model_name: { accepted: [null, ''], why: 'a Hugging Face text tower' },
  hf_tokenizer_name: { accepted: [null, ''], why: 'another tokenizer than CLIP’s' },
  tokenizer_kwargs: { accepted: [null, {}], why: 'tokenizer arguments' },
  ls_init_value: { accepted: [null], why: 'layer scale' },
  embed_cls: { accepted: [false], why: 'a class token in the text' },
  pad_id: { accepted: [0], why: 'another padding token' },
  no_causal_mask: { accepted: [false], why: 'a text tower without the causal mask' },
  final_ln_after_pool: { accepted: [false], why: 'the final LayerNorm after the pool' },
  pool_type: { accepted: ['argmax', 'eos'], why: 'another pool than the end-of-text token' },
  proj_bias: { accepted: [false], why: 'a bias on the text projection' },
  proj_type: { accepted: ['linear'], why: 'another text projection' },
  act_kwargs: { accepted: [null, {}], why: 'activation arguments' },
  norm_kwargs: { accepted: [null, {}], why: 'LayerNorm arguments (non-default norms)' },
};

const MODEL_FIXED: Readonly<Record<string, Fixed>> = {
  custom_text: { accepted: [false], why: 'a custom text tower (CustomTextCLIP)' },
  init_logit_bias: { accepted: [null], why: 'a logit bias (SigLIP)' },
  multimodal_cfg: { accepted: [null], why: 'a multimodal decoder (CoCa)' },
};

/** Fields that change nothing the encoders compute (training, precision, return types, unused options). */
const VISION_FREE = new Set([
  'patch_dropout',
  'attn_pooler_queries',
  'attn_pooler_heads',
  'output_tokens',
  'timm_model_pretrained',
  'timm_pool',
  'timm_proj',
  'timm_proj_bias',
  'timm_drop',
  'timm_drop_path',
]);
const TEXT_FREE = new Set(['output_tokens', 'hf_model_pretrained', 'hf_proj_type', 'hf_pooler_type']);
const MODEL_FREE = new Set(['cast_dtype', 'output_dict', 'init_logit_scale']);

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Applies open_clip's `open_clip_config.json` (its `model_cfg`, as open_clip's `CLIP(**model_cfg)` reads it) to
 * the configuration read off the tensors of an OpenAI-layout state dict. What the tensors fix (widths, layers,
 * patch, resolution, embedding, MLP ratio) must agree with it; what they do not is taken from it: the activation
 * (`quick_gelu`: QuickGELU when true, GELU otherwise, as open_clip defaults to false), the image tower's heads
 * (width / `head_width`, 64 by default; 32 × width / `head_width` for a ResNet) and the text heads (`heads`).
 * Whatever the encoders cannot build (a timm tower, an attentional pooler, layer scale, other norms, pools or
 * projections, another tokenizer or normalisation, an unknown field) is refused, naming the field and the file.
 */
export function applyOpenClipConfig(tensors: ClipConfig, json: unknown, path: string): OpenClipApplied {
  const fail = (field: string, problem: string): never => {
    throw new Error(`${path}: ${field} ${problem}`);
  };
  if (!isObject(json)) fail('the file', 'is not a JSON object');
  const root = json as Json;
  const model = root.model_cfg;
  if (!isObject(model)) return fail('model_cfg', 'is missing or not an object');
  const vision = model.vision_cfg ?? {};
  const text = model.text_cfg ?? {};
  if (!isObject(vision)) return fail('model_cfg.vision_cfg', 'is not an object');
  if (!isObject(text)) return fail('model_cfg.text_cfg', 'is not an object');

  const checkFields = (
    obj: Json,
    where: string,
    fixed: Readonly<Record<string, Fixed>>,
    free: ReadonlySet<string>,
    known: readonly string[],
  ) => {
    for (const [key, value] of Object.entries(obj)) {
      const f = fixed[key];
      if (f) {
        if (value !== undefined && !f.accepted.some((a) => sameJson(a, value))) {
          fail(`${where}.${key}`, `is ${JSON.stringify(value)}: ${f.why}, which promptiqa cannot build yet`);
        }
      } else if (!free.has(key) && !known.includes(key)) {
        fail(`${where}.${key}`, 'is a field promptiqa does not know: it cannot tell what it would change');
      }
    }
  };
  checkFields(model, 'model_cfg', MODEL_FIXED, MODEL_FREE, ['embed_dim', 'quick_gelu', 'vision_cfg', 'text_cfg']);
  checkFields(vision, 'model_cfg.vision_cfg', VISION_FIXED, VISION_FREE, [
    'layers',
    'width',
    'head_width',
    'mlp_ratio',
    'patch_size',
    'image_size',
  ]);
  checkFields(text, 'model_cfg.text_cfg', TEXT_FIXED, TEXT_FREE, ['context_length', 'vocab_size', 'width', 'heads', 'layers', 'mlp_ratio']);

  const positiveInt = (v: unknown, field: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0)
      return fail(field, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  /** a field the tensors fix: absent, or equal to what they say */
  const agree = (v: unknown, field: string, actual: number): void => {
    if (v !== undefined && positiveInt(v, field) !== actual) fail(field, `is ${JSON.stringify(v)}, but the weights have ${actual}`);
  };
  const ratio = (v: unknown, field: string, width: number, mlp: number): void => {
    if (v === undefined) return;
    if (typeof v !== 'number' || !(v > 0)) fail(field, `must be a positive number, got ${JSON.stringify(v)}`);
    if (Math.trunc(width * (v as number)) !== mlp)
      fail(field, `is ${v as number}, but the weights have an MLP of ${mlp} for a width of ${width} (${mlp / width})`);
  };

  agree(model.embed_dim, 'model_cfg.embed_dim', tensors.embedDim);
  const quick = model.quick_gelu ?? false;
  if (typeof quick !== 'boolean') fail('model_cfg.quick_gelu', `must be true or false, got ${JSON.stringify(quick)}`);
  const config: ClipConfig = { ...tensors, activation: quick ? 'quick_gelu' : 'gelu' };

  // the image tower
  const V = 'model_cfg.vision_cfg';
  const headWidth = vision.head_width === undefined ? 64 : positiveInt(vision.head_width, `${V}.head_width`);
  if (tensors.resnet) {
    if (vision.layers !== undefined && !Array.isArray(vision.layers)) {
      fail(
        `${V}.layers`,
        `is ${JSON.stringify(vision.layers)} (a vision transformer), but the weights are a ResNet CLIP with stages ${JSON.stringify(tensors.resnet.layers)}`,
      );
    }
    if (vision.layers !== undefined && !sameJson(vision.layers, tensors.resnet.layers)) {
      fail(`${V}.layers`, `is ${JSON.stringify(vision.layers)}, but the weights have stages ${JSON.stringify(tensors.resnet.layers)}`);
    }
    agree(vision.width, `${V}.width`, tensors.visionWidth);
    const channels = resnetEmbedWidth(tensors);
    if (channels % headWidth !== 0)
      fail(`${V}.head_width`, `is ${headWidth}, which does not divide the attention pool's ${channels} channels`);
    config.visionHeads = channels / headWidth;
  } else {
    if (Array.isArray(vision.layers)) {
      fail(
        `${V}.layers`,
        `is ${JSON.stringify(vision.layers)} (a ResNet), but the weights are a vision transformer of ${tensors.visionLayers} layers`,
      );
    }
    agree(vision.layers, `${V}.layers`, tensors.visionLayers);
    agree(vision.width, `${V}.width`, tensors.visionWidth);
    agree(vision.patch_size, `${V}.patch_size`, tensors.patchSize);
    ratio(vision.mlp_ratio, `${V}.mlp_ratio`, tensors.visionWidth, tensors.visionMlp);
    if (tensors.visionWidth % headWidth !== 0)
      fail(`${V}.head_width`, `is ${headWidth}, which does not divide the width ${tensors.visionWidth}`);
    config.visionHeads = tensors.visionWidth / headWidth;
  }
  const given: unknown = vision.image_size;
  // open_clip takes an int or [height, width]: a square pair is that int
  const size: unknown = Array.isArray(given) && given.length === 2 && given[0] === given[1] ? (given[0] as unknown) : given;
  if (Array.isArray(size)) fail(`${V}.image_size`, `is ${JSON.stringify(size)}: a non-square input, which promptiqa cannot build yet`);
  agree(size, `${V}.image_size`, tensors.imageSize);

  // the text tower
  const T = 'model_cfg.text_cfg';
  agree(text.context_length, `${T}.context_length`, tensors.contextLength);
  agree(text.vocab_size, `${T}.vocab_size`, tensors.vocabSize);
  agree(text.width, `${T}.width`, tensors.textWidth);
  agree(text.layers, `${T}.layers`, tensors.textLayers);
  ratio(text.mlp_ratio, `${T}.mlp_ratio`, tensors.textWidth, tensors.textMlp);
  const heads = text.heads === undefined ? 8 : positiveInt(text.heads, `${T}.heads`);
  if (tensors.textWidth % heads !== 0) fail(`${T}.heads`, `is ${heads}, which does not divide the width ${tensors.textWidth}`);
  config.textHeads = heads;

  // the normalisation promptiqa's methods apply is CLIP's: a model trained with another is refused
  const pre = root.preprocess_cfg;
  if (pre !== undefined && pre !== null) {
    if (!isObject(pre)) fail('preprocess_cfg', 'is not an object');
    for (const [key, expected] of [
      ['mean', CLIP_MEAN],
      ['std', CLIP_STD],
    ] as const) {
      const v = (pre as Json)[key];
      const close = Array.isArray(v) && v.length === 3 && v.every((x, i) => typeof x === 'number' && Math.abs(x - expected[i]!) < 1e-6);
      if (v !== undefined && !close)
        fail(`preprocess_cfg.${key}`, `is ${JSON.stringify(v)}: another normalisation than CLIP's, which promptiqa's methods do not apply`);
    }
  }

  const changes: string[] = [];
  if (config.activation !== tensors.activation) changes.push(config.activation);
  if (config.visionHeads !== tensors.visionHeads) changes.push(`vision_heads=${config.visionHeads}`);
  if (config.textHeads !== tensors.textHeads) changes.push(`text_heads=${config.textHeads}`);
  return { config, changes };
}

/** Reads `open_clip_config.json` and applies it (applyOpenClipConfig). */
export function readOpenClipConfig(tensors: ClipConfig, path: string): OpenClipApplied {
  const text = readRegularText(path, "open_clip's config", READ_LIMITS.json);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }
  return applyOpenClipConfig(tensors, json, path);
}
