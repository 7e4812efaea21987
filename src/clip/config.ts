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
