/**
 * Runs Graphs on ONNX Runtime: session creation with the chosen execution provider and threads, input
 * checking with clear messages, and a cache so each graph is built and optimised once.
 */
import * as ort from 'onnxruntime-node';
import { join } from 'node:path';
import { availableParallelism, loadavg } from 'node:os';
import { type DType, Graph, type TypedData, identity, shapeSize } from './graph.js';
import { serialize } from './onnx.js';
import { DEVICE_TYPES, type Provider } from './device.js';
import { checkThreads } from './settings.js';

export type { Provider, Device, DeviceType } from './device.js';

export interface RuntimeOptions {
  provider?: Provider;
  /** intra-op threads; default: ONNX Runtime's choice (all cores) */
  threads?: number;
  /**
   * whether idle intra-op threads spin waiting for work rather than sleep. Spinning is 5–15% faster on an idle
   * machine, and takes CPU time from other processes, and from our own threads, where the cores are shared.
   * Default 'auto': spin where the machine's load leaves a core for each thread (see `spinsBy`; README, Benchmark).
   */
  spinning?: boolean | 'auto';
  /** write the optimised model here, to inspect it */
  optimizedModelPath?: string;
  /** profile each session's first run into a file in this folder (graph/placement.ts counts the nodes each provider ran) */
  profileDir?: string;
}

/** A tensor fed to or returned from a run. */
export interface Tensor {
  shape: number[];
  data: TypedData;
}

export type Feed = Tensor | TypedData;

const ORT_TYPE: Record<DType, ort.Tensor.Type> = {
  float32: 'float32',
  float64: 'float64',
  float16: 'float16',
  int64: 'int64',
  int32: 'int32',
  bool: 'bool',
};

function typeOf(data: TypedData): DType | 'uint8' {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof BigInt64Array) return 'int64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof Uint16Array) return 'float16';
  return 'uint8';
}

export class InputError extends Error {}

/**
 * A tensor ONNX Runtime holds between runs: in host memory, or in a GPU buffer (WebGPU), where it stays until
 * it is fed to another run or read back with `download`. Feeding one to a run copies nothing on the CPU, and
 * nothing between host and GPU on WebGPU.
 */
export class DeviceTensor {
  private constructor(private readonly tensor: ort.Tensor) {}

  /** A float32 tensor over `data` in host memory (not copied: a run that writes into it changes `data`). */
  static host(data: Float32Array, shape: readonly number[]): DeviceTensor {
    if (data.length !== shapeSize(shape))
      throw new InputError(`a tensor of shape [${shape.join(', ')}] needs ${shapeSize(shape)} values, got ${data.length}`);
    return new DeviceTensor(new ort.Tensor('float32', data, [...shape]));
  }

  /** @internal */
  static wrap(tensor: ort.Tensor): DeviceTensor {
    return new DeviceTensor(tensor);
  }

  /** @internal */
  get ort(): ort.Tensor {
    return this.tensor;
  }

  get shape(): number[] {
    return [...this.tensor.dims];
  }

  /** Whether the values are in a GPU buffer (then only `download` reads them). */
  get onGpu(): boolean {
    return this.tensor.location === 'gpu-buffer';
  }

  /** The values, where they are in host memory. */
  get data(): Float32Array {
    if (this.onGpu) throw new Error('the tensor is in a GPU buffer: read it with download()');
    return this.tensor.data as Float32Array;
  }

  /** Frees a GPU buffer now rather than when the collector gets to it (a no-op in host memory). */
  dispose(): void {
    if (this.onGpu) this.tensor.dispose();
  }
}

export { CUDA_INSTALL_COMMAND, cudaProviderProblem, type CudaCheckEnv } from './cuda.js';
export { webgpuProblem } from './webgpu.js';
export { DEVICE_TYPES, DEVICES, PROVIDERS, DeviceUnavailableError, checkDeviceName, resolveDevice } from './device.js';
export { MAX_BATCH, MAX_THREADS_PER_CORE, checkBatchSize, checkRunSettings, checkThreads } from './settings.js';

let profiles = 0;

/** The machine's load when this process made its first session: later readings would count our own work. */
let loadAtStart: number | undefined;

/**
 * Whether a session's idle threads spin (RuntimeOptions.spinning): as asked, or with 'auto' where the load of the
 * last minute, read when this process made its first session, leaves a core free for each of our threads, with
 * half a core to spare. Where the load cannot be read (Windows gives 0) threads spin, as ONNX Runtime's default.
 */
export function spinsBy(opts: RuntimeOptions, load = (loadAtStart ??= loadavg()[0]!), cores = availableParallelism()): boolean {
  if (typeof opts.spinning === 'boolean') return opts.spinning;
  return load + (opts.threads ?? cores) <= cores + 0.5;
}

/** A graph loaded into an ONNX Runtime session. */
export class CompiledGraph {
  /** set while the session's first run is to be profiled (RuntimeOptions.profileDir) */
  private profiling = false;

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly inputs: ReadonlyMap<string, { shape: readonly number[]; dtype: DType }>,
    readonly outputNames: readonly string[],
    readonly name: string,
  ) {}

  /**
   * `deviceOutputs`: outputs that stay where the graph ran (a GPU buffer on WebGPU) for `runDevice` to hand on;
   * on the CPU every output is in host memory anyway.
   */
  static async create(graph: Graph, opts: RuntimeOptions = {}, deviceOutputs: readonly string[] = []): Promise<CompiledGraph> {
    const device = DEVICE_TYPES[opts.provider ?? 'cpu'];
    if (!device) throw new Error(`unknown device ${JSON.stringify(opts.provider)}`);
    const { problem } = device.check();
    if (problem) throw new Error(problem);
    // the bound every caller gets (1000 threads on 2 cores ran 80× slower than 2)
    if (opts.threads !== undefined) checkThreads(opts.threads, 'threads');
    const model = serialize(graph);
    const sessionOptions: ort.InferenceSession.SessionOptions & { externalData?: Array<{ path: string; data: Uint8Array }> } = {
      // ops the GPU provider lacks run on the CPU provider
      executionProviders: [...device.executionProviders],
      graphOptimizationLevel: 'all',
      // ONNX Runtime would also print its failures and notes natively on stderr; they reach the user as the
      // thrown error below instead (DeviceType.logSeverity)
      logSeverityLevel: device.logSeverity,
      externalData: model.externalData,
      extra: {
        // ONNX Runtime's constant folding computes a constant subgraph at load time and keeps each intermediate it
        // makes: for a text tower over fixed prompts, gigabytes (see Graph's foldConstants)
        ...(graph.foldsConstants ? {} : { optimization: { disable_specified_optimizers: 'ConstantFolding' } }),
        session: { intra_op: { allow_spinning: spinsBy(opts) ? '1' : '0' } },
      },
      ...(opts.threads ? { intraOpNumThreads: opts.threads, interOpNumThreads: 1 } : {}),

      ...(opts.optimizedModelPath ? { optimizedModelFilePath: opts.optimizedModelPath } : {}),
      ...(device.deviceOutputs && deviceOutputs.length > 0
        ? { preferredOutputLocation: Object.fromEntries(deviceOutputs.map((n) => [n, 'gpu-buffer' as const])) }
        : {}),
      ...(opts.profileDir ? { enableProfiling: true, profileFilePrefix: join(opts.profileDir, `${graph.name}.${++profiles}`) } : {}),
    };
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(model.bytes, sessionOptions);
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      if (device.startNeeds) {
        throw new Error(`could not start ONNX Runtime with the ${opts.provider} provider (${msg}); it needs ${device.startNeeds}`);
      }
      throw new Error(`ONNX Runtime rejected graph "${graph.name}": ${msg}`);
    }
    // an open axis is -1: any size is taken there
    const inputs = new Map(
      graph.inputs.map((v) => {
        const open = graph.dynamicAxes.get(v) ?? [];
        return [v.name, { shape: v.shape.map((d, axis) => (open.includes(axis) ? -1 : d)), dtype: v.dtype }] as const;
      }),
    );
    const compiled = new CompiledGraph(session, inputs, model.outputNames, graph.name);
    compiled.profiling = Boolean(opts.profileDir);
    return compiled;
  }

  /** Runs the graph. Every input must be fed with its exact shape and dtype. */
  async run(feeds: Readonly<Record<string, Feed>>, outputs?: readonly string[]): Promise<Record<string, Tensor>> {
    const result = await this.session.run(this.ortFeeds(feeds), outputs ? [...outputs] : [...this.outputNames]);
    this.endProfiling();
    const out: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(result)) out[name] = { shape: [...t.dims], data: t.data as TypedData };
    return out;
  }

  /**
   * Runs the graph with tensors that stay on the device: inputs may be `DeviceTensor`s (outputs of earlier runs),
   * and the outputs come back as `DeviceTensor`s, those named in `create`'s `deviceOutputs` left in a GPU buffer on
   * WebGPU. `into` gives host tensors to write outputs into (no allocation per run on the CPU).
   */
  async runDevice(
    feeds: Readonly<Record<string, Feed | DeviceTensor>>,
    outputs: readonly string[],
    into: Readonly<Record<string, DeviceTensor>> = {},
  ): Promise<Record<string, DeviceTensor>> {
    const fetches: Record<string, ort.Tensor | null> = {};
    for (const name of outputs) {
      if (!this.outputNames.includes(name)) throw new InputError(`${this.name}: unknown output "${name}"`);
      fetches[name] = into[name]?.ort ?? null;
    }
    const result = await this.session.run(this.ortFeeds(feeds), fetches);
    this.endProfiling();
    const out: Record<string, DeviceTensor> = {};
    for (const [name, t] of Object.entries(result)) out[name] = into[name] ?? DeviceTensor.wrap(t);
    return out;
  }

  private ortFeeds(feeds: Readonly<Record<string, Feed | DeviceTensor>>): Record<string, ort.Tensor> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const name of Object.keys(feeds)) {
      if (!this.inputs.has(name))
        throw new InputError(`${this.name}: unknown input "${name}" (inputs: ${[...this.inputs.keys()].join(', ')})`);
    }
    const fits = (shape: readonly number[], spec: readonly number[]): boolean =>
      shape.length === spec.length && shape.every((d, i) => d === spec[i] || (spec[i] === -1 && Number.isSafeInteger(d) && d > 0));
    const described = (spec: readonly number[]): string => spec.map((d) => (d === -1 ? 'any' : d)).join(', ');
    for (const [name, spec] of this.inputs) {
      const feed = feeds[name];
      if (feed === undefined) throw new InputError(`${this.name}: input "${name}" (${spec.dtype}[${described(spec.shape)}]) was not given`);
      if (feed instanceof DeviceTensor) {
        const shape = feed.shape;
        if (feed.ort.type !== spec.dtype || !fits(shape, spec.shape))
          throw new InputError(
            `${this.name}: input "${name}" must be ${spec.dtype}[${described(spec.shape)}], got ${feed.ort.type}[${shape.join(', ')}]`,
          );
        ortFeeds[name] = feed.ort;
        continue;
      }
      const data = 'data' in feed && !ArrayBuffer.isView(feed) ? feed.data : (feed as TypedData);
      const given = 'shape' in feed && !ArrayBuffer.isView(feed) ? feed.shape : null;
      const dtype = typeOf(data);
      if (dtype !== spec.dtype && !(spec.dtype === 'bool' && dtype === 'uint8')) {
        throw new InputError(`${this.name}: input "${name}" must be ${spec.dtype}, got ${dtype}`);
      }
      if (given && !fits(given, spec.shape)) {
        throw new InputError(`${this.name}: input "${name}" must have shape [${described(spec.shape)}], got [${given.join(', ')}]`);
      }
      if (!given && spec.shape.includes(-1)) {
        throw new InputError(`${this.name}: input "${name}" has open axes ([${described(spec.shape)}]): feed it with its shape`);
      }
      const shape = given ?? spec.shape;
      if (data.length !== shapeSize(shape)) {
        throw new InputError(
          `${this.name}: input "${name}" must have shape [${shape.join(', ')}] (${shapeSize(shape)} values), got ${data.length} values`,
        );
      }
      ortFeeds[name] = new ort.Tensor(ORT_TYPE[spec.dtype], data as never, [...shape]);
    }
    return ortFeeds;
  }

  /** After the first run: writes the profile of a session made with `profileDir`, and profiles no later run. */
  private endProfiling(): void {
    if (!this.profiling) return;
    this.profiling = false;
    this.session.endProfiling();
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Identity graphs that read GPU buffers back, by provider and shapes (one per set of tensors read together). */
const readers = new Map<string, Promise<CompiledGraph>>();

/**
 * The values of device tensors, copied into host memory: those in host memory by a copy, those in GPU buffers
 * through one run of an identity graph on `runtime`'s provider (onnxruntime-node reads a GPU buffer only as the
 * output of a run).
 */
export async function download(
  tensors: ReadonlyMap<string, DeviceTensor>,
  runtime: RuntimeOptions = {},
): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  const onGpu: Array<[string, DeviceTensor]> = [];
  for (const [name, t] of tensors) {
    if (t.onGpu) onGpu.push([name, t]);
    else out.set(name, t.data.slice());
  }
  if (onGpu.length > 0) {
    const key = `${runtime.provider ?? 'cpu'}|${onGpu.map(([, t]) => t.shape.join('x')).join(',')}`;
    let reader = readers.get(key);
    if (!reader) {
      const g = new Graph('download');
      onGpu.forEach(([, t], i) => g.output(`y${i}`, identity(g.input(`x${i}`, t.shape))));
      reader = CompiledGraph.create(g, runtime);
      readers.set(key, reader);
      reader.catch(() => readers.delete(key));
    }
    const got = await (
      await reader
    ).runDevice(
      Object.fromEntries(onGpu.map(([, t], i) => [`x${i}`, t])),
      onGpu.map((_, i) => `y${i}`),
    );
    onGpu.forEach(([name], i) => out.set(name, got[`y${i}`]!.data));
  }
  return new Map([...tensors.keys()].map((k) => [k, out.get(k)!]));
}

/**
 * Builds each graph once: `get(key, build)` returns the compiled graph for a key such as
 * `${model}|${method}|${batch}|${mode}`, building it on first use. With `maxEntries`, the least recently
 * used graph is released when a new one would exceed it (graphs per image size, for full-resolution
 * scoring, would otherwise grow with every new size); its user must not be running it then.
 */
export class SessionCache {
  private readonly cache = new Map<string, Promise<CompiledGraph>>();

  constructor(
    readonly options: RuntimeOptions = {},
    readonly maxEntries = Infinity,
  ) {}

  get(key: string, build: () => Graph): Promise<CompiledGraph> {
    let p = this.cache.get(key);
    if (p) {
      // most recently used last
      this.cache.delete(key);
      this.cache.set(key, p);
      return p;
    }
    while (this.cache.size >= this.maxEntries) {
      const [oldest, graph] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      void graph.then(
        (g) => g.release(),
        () => undefined,
      );
    }
    p = CompiledGraph.create(build(), this.options);
    this.cache.set(key, p);
    // a failed build is forgotten, unless the key already holds a newer build
    p.catch(() => {
      if (this.cache.get(key) === p) this.cache.delete(key);
    });
    return p;
  }

  /** The keys held, least recently used first. */
  keys(): string[] {
    return [...this.cache.keys()];
  }

  async clear(): Promise<void> {
    const all = [...this.cache.values()];
    this.cache.clear();
    for (const p of all) await (await p).release();
  }
}
