/**
 * Which ONNX Runtime execution provider runs the graphs. Told without loading ONNX Runtime itself, so that the
 * command line can check --device while it parses its arguments.
 */
import { cudaProviderProblem } from './cuda.js';
import { webgpuProblem } from './webgpu.js';

export type Provider = 'cpu' | 'cuda' | 'webgpu';
/** What a user may ask for: a provider, or `auto` (CUDA where its provider is installed, else a WebGPU adapter, else the CPU). */
export type Device = Provider | 'auto';

/**
 * The provider `device` stands for, and why: `auto` is CUDA where its provider is installed, else WebGPU
 * where an adapter is found, else the CPU. A named GPU provider that cannot work is refused in one line.
 */
export function resolveDevice(device: Device): { provider: Provider; why: string } {
  if (device === 'cpu') return { provider: 'cpu', why: 'asked for' };
  if (device !== 'auto') {
    const problem = device === 'cuda' ? cudaProviderProblem() : webgpuProblem();
    if (problem) throw new Error(problem);
    return { provider: device, why: 'asked for' };
  }
  const cuda = cudaProviderProblem();
  if (!cuda) return { provider: 'cuda', why: "onnxruntime-node's CUDA provider is installed" };
  const webgpu = webgpuProblem();
  if (!webgpu) return { provider: 'webgpu', why: 'a WebGPU adapter was found' };
  return { provider: 'cpu', why: `${cuda}; ${webgpu}` };
}
