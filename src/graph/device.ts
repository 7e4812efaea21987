/**
 * Which ONNX Runtime execution provider runs the graphs. Told without loading ONNX Runtime itself, so that the
 * command line can check --device while it parses its arguments.
 */
import { cudaProviderProblem } from './cuda.js';
import { SOFTWARE_ADAPTER_NOTE, webgpuAdapter } from './webgpu.js';

export type Provider = 'cpu' | 'cuda' | 'webgpu';
/** What a user may ask for: a provider, or `auto` (CUDA where its provider is installed, else a WebGPU adapter, else the CPU). */
export type Device = Provider | 'auto';

/**
 * The provider `device` stands for, and why: `auto` is CUDA where its provider is installed, else WebGPU
 * where a GPU adapter is found (never a software one: a CPU emulating a GPU is slower than the CPU provider),
 * else the CPU. A named GPU provider that cannot work is refused in one line; `webgpu` on a software adapter
 * works, with a `note` saying so.
 */
export function resolveDevice(device: Device): { provider: Provider; why: string; note?: string } {
  if (device === 'cpu') return { provider: 'cpu', why: 'asked for' };
  if (device === 'cuda') {
    const problem = cudaProviderProblem();
    if (problem) throw new Error(problem);
    return { provider: device, why: 'asked for' };
  }
  if (device === 'webgpu') {
    const adapter = webgpuAdapter();
    if (adapter.problem !== null) throw new Error(adapter.problem);
    return { provider: device, why: 'asked for', ...(adapter.kind === 'software' ? { note: SOFTWARE_ADAPTER_NOTE } : {}) };
  }
  const cuda = cudaProviderProblem();
  if (!cuda) return { provider: 'cuda', why: "onnxruntime-node's CUDA provider is installed" };
  const webgpu = webgpuAdapter();
  if (webgpu.kind === 'gpu') return { provider: 'webgpu', why: 'a WebGPU adapter was found on a GPU' };
  const none =
    webgpu.kind === 'software'
      ? 'the only WebGPU adapter is a software one (a CPU emulating a GPU, slower than the CPU provider)'
      : webgpu.problem;
  return { provider: 'cpu', why: `${cuda}; ${none}` };
}
