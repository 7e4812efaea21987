/**
 * The PyTorch peer of the benchmark: `scripts/bench_torch.py`, run with a Python that has torch, with the
 * same architecture, batch, threads and iterations. It prints one JSON object on stdout.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** scripts/bench_torch.py of this package (src/cli/lib and dist/cli/lib are both three levels down). */
export const TORCH_SCRIPT = fileURLToPath(new URL('../../../scripts/bench_torch.py', import.meta.url));

export const PYTHON_CANDIDATES: readonly string[] = ['python3', '/usr/bin/python3'];

/** The first Python that can import torch, with torch's version; undefined when none can. */
export function findTorchPython(candidates: readonly string[] = PYTHON_CANDIDATES): { python: string; version: string } | undefined {
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 60_000 });
    if (r.status === 0 && r.stdout.trim() !== '') return { python, version: r.stdout.trim() };
  }
  return undefined;
}

export interface TorchBenchOptions {
  python: string;
  /** the peer script (default TORCH_SCRIPT) */
  script?: string;
  arch: string;
  batch: number;
  threads: number;
  warmup: number;
  iters: number;
  modes: readonly string[];
  prompts: number;
  /**
   * the provider our figures ran on (default cpu): on a GPU provider (cuda, webgpu) the peer runs on CUDA where
   * its torch has it, else on the CPU, and says which (`device` of the result)
   */
  device?: string;
  /** the square sizes of the peer's matrix-product peak (torch.mm); none or empty: no peak */
  peakSizes?: readonly number[];
  /** also count each mode's matrix-product operations with torch's profiler (one more, untimed step each) */
  countFlops?: boolean;
  /** receives the peer's stderr (its progress lines) */
  onStderr?: (text: string) => void;
}

/** What the peer measured: per-run seconds by mode, and how it ran. */
export interface TorchBenchResult {
  torchVersion?: string;
  threads?: number;
  /** the BLAS library torch loaded, as the peer found it */
  blas?: string;
  /** OpenBLAS's own thread count, where torch uses OpenBLAS */
  blasThreads?: number;
  /** the OpenBLAS kernel ("core") the peer ran, where torch uses OpenBLAS (scripts/blas_core.py) */
  blasCore?: string;
  /** the core OpenBLAS chose when it loaded: its own detection, or the caller's OPENBLAS_CORETYPE */
  blasCoreDetected?: string;
  /** the caller's OPENBLAS_CORETYPE, where one was set */
  blasCoreEnv?: string;
  /** whether the peer restarted itself with a better core than OpenBLAS chose */
  blasCorePinned?: boolean;
  /** the largest relative error of a float32 product against float64 (the peer stops above 3.1e-5, the bound of a correct product) */
  blasCheck?: number;
  /** torch.mm's best GFLOP/s over the peak sizes, and the size that gave it */
  peakGflops?: number;
  peakSize?: number;
  /** the CPU the peer ran on ("model name" of /proc/cpuinfo) */
  cpu?: string;
  /** the device the peer ran on: 'cuda' or 'cpu' */
  device?: 'cuda' | 'cpu';
  /** the GPU's name, where the peer ran on CUDA */
  gpu?: string;
  seconds: Partial<Record<'forward' | 'train' | 'fu', number[]>>;
  /** with `countFlops`: each mode's operations in matrix products and convolutions, as torch's profiler counts one step */
  flops?: Partial<Record<'forward' | 'train' | 'fu', number>>;
}

/** The peer's JSON keys of the per-run seconds, by mode. */
export const TORCH_SECONDS_KEYS = { forward: 'forward_s', train: 'train_s', fu: 'fu_s' } as const;

/**
 * Reads the peer's stdout: its last line must be a JSON object; each mode asked for must come with a
 * non-empty list of positive seconds.
 */
export function parseTorchOutput(stdout: string, modes: readonly string[]): TorchBenchResult {
  const line = stdout.trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch {
    obj = undefined;
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new Error(`the PyTorch peer did not print a JSON object (stdout: ${JSON.stringify(stdout.slice(0, 200))})`);
  }
  const o = obj as Record<string, unknown>;
  const out: TorchBenchResult = { seconds: {} };
  if (typeof o.torch_version === 'string') out.torchVersion = o.torch_version;
  if (typeof o.threads === 'number' && Number.isInteger(o.threads) && o.threads > 0) out.threads = o.threads;
  if (typeof o.blas === 'string') out.blas = o.blas;
  if (typeof o.blas_threads === 'number' && Number.isInteger(o.blas_threads) && o.blas_threads > 0) out.blasThreads = o.blas_threads;
  if (typeof o.blas_core === 'string') out.blasCore = o.blas_core;
  if (typeof o.blas_core_detected === 'string') out.blasCoreDetected = o.blas_core_detected;
  if (typeof o.blas_core_env === 'string') out.blasCoreEnv = o.blas_core_env;
  if (typeof o.blas_core_pinned === 'boolean') out.blasCorePinned = o.blas_core_pinned;
  if (typeof o.blas_check === 'number' && Number.isFinite(o.blas_check)) out.blasCheck = o.blas_check;
  if (typeof o.peak_gflop_s === 'number' && Number.isFinite(o.peak_gflop_s) && o.peak_gflop_s > 0) out.peakGflops = o.peak_gflop_s;
  if (typeof o.peak_size === 'number' && Number.isInteger(o.peak_size)) out.peakSize = o.peak_size;
  if (typeof o.cpu === 'string') out.cpu = o.cpu;
  if (o.device !== undefined) {
    if (o.device !== 'cuda' && o.device !== 'cpu')
      throw new Error(`the PyTorch peer's JSON names an unknown device: ${JSON.stringify(o.device)}`);
    out.device = o.device;
  }
  if (typeof o.gpu === 'string') out.gpu = o.gpu;
  for (const [mode, key] of Object.entries(TORCH_SECONDS_KEYS)) {
    if (!modes.includes(mode)) continue;
    const v = o[key];
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0)) {
      throw new Error(
        `the PyTorch peer's JSON has no valid ${key} (a non-empty list of positive seconds): ${JSON.stringify(v)?.slice(0, 100)}`,
      );
    }
    out.seconds[mode as keyof typeof TORCH_SECONDS_KEYS] = v as number[];
    const flops = o[`${mode}_flops`];
    if (typeof flops === 'number' && Number.isFinite(flops)) (out.flops ??= {})[mode as keyof typeof TORCH_SECONDS_KEYS] = flops;
  }
  return out;
}

/** Runs the peer and returns what it measured. */
export function runTorchBench(opts: TorchBenchOptions): Promise<TorchBenchResult> {
  const script = opts.script ?? TORCH_SCRIPT;
  if (!existsSync(script)) return Promise.reject(new Error(`the PyTorch peer ${script} is missing`));
  const args = [
    script,
    '--arch',
    opts.arch,
    '--batch',
    String(opts.batch),
    '--threads',
    String(opts.threads),
    '--warmup',
    String(opts.warmup),
    '--iters',
    String(opts.iters),
    '--mode',
    opts.modes.join(','),
    '--prompts',
    String(opts.prompts),
    '--device',
    opts.device ?? 'cpu',
    ...(opts.peakSizes && opts.peakSizes.length > 0 ? ['--peak-sizes', opts.peakSizes.join(',')] : ['--no-peak']),
    ...(opts.countFlops ? ['--count-flops'] : []),
  ];
  return new Promise((resolvePromise, reject) => {
    // the peer sets its thread pools itself from --threads, before torch loads
    const child = spawn(opts.python, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      opts.onStderr?.(d);
    });
    child.on('error', (e) => reject(new Error(`cannot run ${opts.python}: ${e.message}`)));
    child.on('close', (code, signal) => {
      if (code !== 0) {
        const last = err.trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';
        reject(new Error(`the PyTorch peer exited with ${signal ?? `code ${code}`}${last ? `: ${last}` : ''}`));
        return;
      }
      try {
        resolvePromise(parseTorchOutput(out, opts.modes));
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  });
}
