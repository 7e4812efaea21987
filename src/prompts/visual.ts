/**
 * Deep visual prompts (VPT-deep): n learnable tokens appended after [CLS]+patches, and at vision layers
 * 1…depth-1 the last n tokens replaced by that layer's own prompts. And Fu's coupling: a target learner's
 * prompt at each depth is concatenated with an auxiliary learner's and projected back to the width by
 * that depth's own Linear.
 */
import * as G from '../graph/graph.js';
import { type Value } from '../graph/graph.js';
import { type VisionHooks } from '../clip/encoders.js';
import { type ClipWeights } from '../clip/weights.js';
import { type BuildContext, type ParamSet, normalInit, linearInit } from './context.js';
import { type Rng } from '../util/rng.js';

export interface VisualPromptSpec {
  name: string;
  nTokens: number;
  /** prompt sets: 1 = input only; the number of vision layers = every layer */
  depth: number;
}

export class VisualPrompts {
  readonly depth: number;

  constructor(
    readonly spec: VisualPromptSpec,
    private readonly weights: ClipWeights,
  ) {
    this.depth = Math.min(spec.depth, weights.config.visionLayers);
  }

  init(rng: Rng): ParamSet {
    const out: ParamSet = new Map();
    for (let d = 0; d < this.depth; d++)
      out.set(`${this.spec.name}.vis_${d}`, normalInit(rng, [this.spec.nTokens, this.weights.config.visionWidth]));
    return out;
  }

  /** The prompt Values by depth: [nTokens, width] each. */
  values(ctx: BuildContext): Value[] {
    return Array.from({ length: this.depth }, (_, d) => ctx.param(`${this.spec.name}.vis_${d}`));
  }
}

/** Hooks for the vision encoder from prompts by depth (0 = appended at the input). */
export function visionHooks(prompts: readonly Value[]): VisionHooks {
  return { inputPrompts: prompts[0], deepPrompts: prompts };
}

/** Fu's per-depth fusion parameters: Linear(2·width → width) for each depth. */
export function fusionInit(rng: Rng, name: string, depth: number, weights: ClipWeights): ParamSet {
  const w = weights.config.visionWidth;
  const out: ParamSet = new Map();
  for (let d = 0; d < depth; d++) {
    const { w: lw, b } = linearInit(rng, 2 * w, w);
    out.set(`${name}.fuse_${d}.w`, lw);
    out.set(`${name}.fuse_${d}.b`, b);
  }
  return out;
}

/** target_d ⊕ aux_d → Linear_d → the prompt the target branch uses at depth d. */
export function fusePrompts(ctx: BuildContext, name: string, target: readonly Value[], aux: readonly Value[]): Value[] {
  return target.map((t, d) => G.linear(G.concat([t, aux[d]!], -1), ctx.param(`${name}.fuse_${d}.w`), ctx.param(`${name}.fuse_${d}.b`)));
}
