/**
 * Where ONNX Runtime ran a graph's nodes. With a GPU provider, the nodes it has no kernel for (an op, or an op
 * at a dtype, e.g. float64 on WebGPU) run on the CPU provider, with copies between them. ONNX Runtime tells it
 * in a session's profile: one `Node` event per node run, whose `args.provider` names the provider that ran it
 * and `args.op_name` the op, after its graph optimisations (fused nodes count once, under their fused op).
 * Sessions made with `RuntimeOptions.profileDir` profile their first run only (see `CompiledGraph`).
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DType, type Graph, type TypedData, shapeSize } from './graph.js';
// types only: the command line loads this file eagerly, and ONNX Runtime only when a graph runs
import type { Feed, RuntimeOptions } from './runtime.js';

/** Nodes by the execution provider that ran them, as ONNX Runtime names it (`WebGpuExecutionProvider`, `CPUExecutionProvider`, …). */
export type Placement = Record<string, number>;

export interface PlacementDetail {
  /** the graph's nodes by provider (the copies ONNX Runtime adds between providers left out) */
  nodes: Placement;
  /** op types by provider: provider → op → nodes */
  ops: Record<string, Record<string, number>>;
  /** the copies ONNX Runtime added where a tensor passes between the GPU and the CPU inside the graph */
  copies: number;
}

const KERNEL_SUFFIX = '_kernel_time';
const COPY_OPS = new Set(['MemcpyToHost', 'MemcpyFromHost']);

const empty = (): PlacementDetail => ({ nodes: {}, ops: {}, copies: 0 });

/**
 * Counts the nodes of a session profile (the Chrome-trace JSON array ONNX Runtime writes) by provider and op.
 * A node run several times within the profile is counted once; the copies between providers are counted apart.
 */
export function parseProfile(events: unknown, into: PlacementDetail = empty()): PlacementDetail {
  if (!Array.isArray(events)) throw new Error('not an ONNX Runtime profile: expected a JSON array of events');
  const seen = new Set<string>();
  for (const e of events as unknown[]) {
    if (e === null || typeof e !== 'object') continue;
    const { cat, name, args } = e as { cat?: unknown; name?: unknown; args?: unknown };
    if (cat !== 'Node' || typeof name !== 'string' || !name.endsWith(KERNEL_SUFFIX) || seen.has(name)) continue;
    if (args === null || typeof args !== 'object') continue;
    const { provider, op_name: op } = args as { provider?: unknown; op_name?: unknown };
    if (typeof provider !== 'string') continue;
    seen.add(name);
    if (typeof op === 'string' && COPY_OPS.has(op)) {
      into.copies++;
      continue;
    }
    into.nodes[provider] = (into.nodes[provider] ?? 0) + 1;
    const ops = (into.ops[provider] ??= {});
    const key = typeof op === 'string' ? op : '?';
    ops[key] = (ops[key] ?? 0) + 1;
  }
  return into;
}

/** `WebGpuExecutionProvider` → `webgpu`, `CPUExecutionProvider` → `cpu`, `CUDAExecutionProvider` → `cuda`. */
export function providerShortName(provider: string): string {
  return provider.replace(/ExecutionProvider$/, '').toLowerCase();
}

/**
 * One line: "812 webgpu, 14 cpu (Gather 12, Range 2), 6 copies": nodes by provider, most first; with `provider`
 * (the one asked for) the ops that ran elsewhere; the copies between providers, if any.
 */
export function describePlacement(p: Readonly<PlacementDetail>, provider?: string): string {
  const byCount = (o: Readonly<Record<string, number>>): Array<[string, number]> =>
    Object.entries(o).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const parts = byCount(p.nodes).map(([name, n]) => {
    const short = providerShortName(name);
    const ops = provider !== undefined && short !== provider ? byCount(p.ops[name] ?? {}) : [];
    return `${n} ${short}${ops.length > 0 ? ` (${ops.map(([op, k]) => `${op} ${k}`).join(', ')})` : ''}`;
  });
  if (parts.length === 0) return 'no nodes profiled';
  return parts.join(', ') + (p.copies > 0 ? `, ${p.copies} cop${p.copies === 1 ? 'y' : 'ies'}` : '');
}

/**
 * A temporary folder that sessions profile into (`runtime(opts)` adds it to runtime options); `read()` sums the
 * placements of every session profiled so far (a session's profile is written after its first run, or when it
 * is released), `dispose()` removes the folder.
 */
export class PlacementRecorder {
  readonly dir: string;

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'promptiqa-profile-'));
  }

  runtime(opts: RuntimeOptions): RuntimeOptions {
    return { ...opts, profileDir: this.dir };
  }

  read(): PlacementDetail {
    const detail = empty();
    for (const f of readdirSync(this.dir).filter((n) => n.endsWith('.json'))) {
      const file = join(this.dir, f);
      let events: unknown;
      try {
        events = JSON.parse(readFileSync(file, 'utf8'));
      } catch (err) {
        throw new Error(`${file}: unreadable ONNX Runtime profile (${(err as Error).message})`);
      }
      parseProfile(events, detail);
    }
    return detail;
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function zeros(dtype: DType, n: number): TypedData {
  switch (dtype) {
    case 'float64':
      return new Float64Array(n);
    case 'int64':
      return new BigInt64Array(n);
    case 'int32':
      return new Int32Array(n);
    case 'float16':
      return new Uint16Array(n);
    case 'bool':
      return new Uint8Array(n);
    default:
      return new Float32Array(n);
  }
}

/**
 * Makes a session for `graph` with `opts` (its provider, threads), runs it once with `feeds` (default: zeros
 * for every input) and tells where ONNX Runtime ran its nodes.
 */
export async function nodePlacement(
  graph: Graph,
  opts: RuntimeOptions = {},
  feeds?: Readonly<Record<string, Feed>>,
): Promise<PlacementDetail> {
  const { CompiledGraph } = await import('./runtime.js');
  const recorder = new PlacementRecorder();
  try {
    const compiled = await CompiledGraph.create(graph, recorder.runtime(opts));
    try {
      await compiled.run(feeds ?? Object.fromEntries(graph.inputs.map((v) => [v.name, zeros(v.dtype, shapeSize(v.shape))])));
    } finally {
      await compiled.release();
    }
    return recorder.read();
  } finally {
    recorder.dispose();
  }
}
