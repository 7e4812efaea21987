/**
 * What a method's graph is built with: the graph, the frozen CLIP, the tokenizer, and access to the
 * trainable parameters. Parameters are always graph inputs (`param:<name>`), in training and scoring
 * alike, so one graph per batch size serves both and a new epoch needs no new session.
 */
import { type Graph, type Value } from '../graph/graph.js';
import { type WeightBank } from '../clip/encoders.js';
import { type ClipWeights } from '../clip/weights.js';
import { type ClipTokenizer } from '../clip/tokenizer.js';
import { type HostTensor } from '../graph/tensor.js';
import { Rng } from '../util/rng.js';

export type ParamSet = Map<string, HostTensor>;

export interface BuildContext {
  g: Graph;
  bank: WeightBank;
  weights: ClipWeights;
  tokenizer: ClipTokenizer;
  batch: number;
  /** true in the training graph (dropout on) */
  training: boolean;
  /** the auxiliary predictions the graph computes (by target name): none when scoring */
  auxiliary: ReadonlySet<string>;
  param(name: string): Value;
}

const PARAM_PREFIX = 'param:';

/** The graph input that holds a parameter. */
export function paramInput(name: string): string {
  return `${PARAM_PREFIX}${name}`;
}

/** Makes `param(name)` for a graph: inputs shaped as the parameter set says. */
export function paramAccessor(g: Graph, params: ParamSet): { param: (name: string) => Value; used: Map<string, Value> } {
  const used = new Map<string, Value>();
  return {
    used,
    param(name: string): Value {
      let v = used.get(name);
      if (!v) {
        const t = params.get(name);
        if (!t) throw new Error(`no parameter named "${name}"`);
        v = g.input(paramInput(name), t.shape);
        used.set(name, v);
      }
      return v;
    },
  };
}

/** The values of the parameters a graph reads, by its input names: the one place that feeds parameters. */
export function paramFeeds(inputs: Iterable<string>, params: ParamSet): Record<string, Float32Array> {
  const feeds: Record<string, Float32Array> = {};
  for (const name of inputs) {
    if (!name.startsWith(PARAM_PREFIX)) continue;
    const t = params.get(name.slice(PARAM_PREFIX.length));
    if (!t) throw new Error(`no value for the graph's parameter "${name.slice(PARAM_PREFIX.length)}"`);
    feeds[name] = t.data;
  }
  return feeds;
}

/** N(0, std) initialisation. */
export function normalInit(rng: Rng, shape: number[], std = 0.02): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = rng.normal() * std;
  return { shape, data };
}

/** PyTorch's default Linear initialisation: U(-1/√in, 1/√in) for weight ([in, out] here) and bias. */
export function linearInit(rng: Rng, inp: number, out: number): { w: HostTensor; b: HostTensor } {
  const bound = 1 / Math.sqrt(inp);
  const u = (n: number): Float32Array => Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * bound);
  return { w: { shape: [inp, out], data: u(inp * out) }, b: { shape: [out], data: u(out) } };
}
