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
  arch: string;
  batch: number;
  threads: number;
  warmup: number;
  iters: number;
  modes: readonly string[];
  prompts: number;
  /** receives the peer's stderr (its progress lines) */
  onStderr?: (text: string) => void;
}

/** Runs the peer and returns its JSON object. */
export function runTorchBench(opts: TorchBenchOptions): Promise<Record<string, unknown>> {
  if (!existsSync(TORCH_SCRIPT)) return Promise.reject(new Error(`the PyTorch peer ${TORCH_SCRIPT} is missing`));
  const args = [
    TORCH_SCRIPT, '--arch', opts.arch, '--batch', String(opts.batch), '--threads', String(opts.threads),
    '--warmup', String(opts.warmup), '--iters', String(opts.iters), '--mode', opts.modes.join(','), '--prompts', String(opts.prompts),
  ];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(opts.python, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OMP_NUM_THREADS: String(opts.threads) } });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
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
      const line = out.trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';
      try {
        const obj = JSON.parse(line) as unknown;
        if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new Error('not an object');
        resolvePromise(obj as Record<string, unknown>);
      } catch {
        reject(new Error(`the PyTorch peer did not print a JSON object (stdout: ${JSON.stringify(out.slice(0, 200))})`));
      }
    });
  });
}
