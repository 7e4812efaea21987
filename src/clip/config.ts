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
};

export function archConfig(name: string): ClipConfig {
  const c = ARCHS[name];
  if (!c) throw new Error(`unknown architecture "${name}" (known: ${Object.keys(ARCHS).join(', ')})`);
  return { ...c };
}

export function numPatches(c: ClipConfig): number {
  return (c.imageSize / c.patchSize) ** 2;
}

/** Multiply-accumulates ×2 of one image through the vision encoder (matrix products only), for GFLOP/s figures. */
export function visionFlops(c: ClipConfig, extraTokens = 0): number {
  const s = numPatches(c) + 1 + extraTokens;
  const w = c.visionWidth;
  const perLayer = 2 * s * w * 3 * w + 2 * 2 * s * s * w + 2 * s * w * w + 2 * 2 * s * w * c.visionMlp;
  return 2 * numPatches(c) * 3 * c.patchSize ** 2 * w + c.visionLayers * perLayer + 2 * w * c.embedDim;
}
