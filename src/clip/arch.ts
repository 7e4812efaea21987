/**
 * CLIP architectures by OpenAI's names (`RN50`, `ViT-B/32`, …), as pyiqa names the backbone of each released
 * set-up, and the check that a loaded CLIP has the geometry such a set-up's arithmetic depends on.
 */
import type { ClipConfig } from './config.js';
import { WeightError } from './weights.js';

/** What a named architecture fixes: the image tower's kind and, for a ViT, its patch and input size. */
export interface ArchGeometry {
  kind: 'vit' | 'resnet';
  patchSize?: number;
  imageSize?: number;
}

/** OpenAI's CLIPs that pyiqa's set-ups name. */
export const ARCHS: Readonly<Record<string, ArchGeometry>> = {
  RN50: { kind: 'resnet' },
  'ViT-B/32': { kind: 'vit', patchSize: 32, imageSize: 224 },
  'ViT-B/16': { kind: 'vit', patchSize: 16, imageSize: 224 },
  'ViT-L/14': { kind: 'vit', patchSize: 14, imageSize: 224 },
};

/** The architecture in words: "a ViT with 32-pixel patches at 224 px (width 768, 12 layers)", "a ResNet (…)". */
export function describeArch(c: ClipConfig): string {
  if (c.resnet) return `a ResNet CLIP (stages ${c.resnet.layers.join(', ')}, width ${c.visionWidth}, ${c.imageSize} px)`;
  return `a ViT with ${c.patchSize}-pixel patches at ${c.imageSize} px (width ${c.visionWidth}, ${c.visionLayers} layers)`;
}

function describeGeometry(g: ArchGeometry): string {
  if (g.kind === 'resnet') return 'a ResNet CLIP';
  return `a ViT with ${g.patchSize}-pixel patches at ${g.imageSize} px`;
}

/**
 * Refuses a CLIP that is not of the named architecture's geometry (the tower's kind, a ViT's patch and input
 * size), naming what was found and what `who` expects. Widths and depths are the file's own: the loader
 * builds the CLIP its tensors describe, and refuses tensors it has no place for.
 */
export function checkArch(c: ClipConfig, arch: string, who: string, file?: string): void {
  const g = ARCHS[arch];
  if (!g) throw new Error(`unknown CLIP architecture "${arch}" (known: ${Object.keys(ARCHS).join(', ')})`);
  const ok =
    g.kind === 'resnet' ? c.resnet !== undefined : c.resnet === undefined && c.patchSize === g.patchSize && c.imageSize === g.imageSize;
  if (ok) return;
  throw new WeightError(
    `${file === undefined ? '' : `${file}: `}${who} runs on ${arch} (${describeGeometry(g)}), but this CLIP is ${describeArch(c)}`,
  );
}
