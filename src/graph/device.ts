/**
 * Which ONNX Runtime execution provider runs the graphs: the one list of devices (`DEVICE_TYPES`), from which the
 * device names, the check of whether each can work here and the providers a session is made with all come; the
 * command line, `createMetric`, `evaluate`, `train` and `bench` take them from here. Told without loading ONNX
 * Runtime itself, so that the command line can check --device while it parses its arguments.
 */
import { cudaProviderProblem } from './cuda.js';
import { SOFTWARE_ADAPTER_NOTE, webgpuAdapter } from './webgpu.js';

/** One device: what it is, the providers a session on it asks for, and whether it can work here. */
export interface DeviceType {
  /** what it is, for --device's help */
  help: string;
  /** ONNX Runtime's execution providers for a session, in order: the ops a GPU provider lacks run on the CPU */
  executionProviders: readonly string[];
  /** the provider's name in ONNX Runtime's profiles (`graph/placement.ts`) */
  profileName: string;
  /** ONNX Runtime's log level for its sessions (CUDA logs a library-loading failure as an error: fatal only there) */
  logSeverity: 3 | 4;
  /** whether outputs can stay where the graph ran between runs (GPU buffers), for `CompiledGraph.runDevice` to hand on */
  deviceOutputs: boolean;
  /** what a session that ONNX Runtime could not start on it needs, said after ONNX Runtime's message */
  startNeeds?: string;
  /** why it cannot work here (null: nothing known to be missing), and a note to say once where it works slowly */
  check: () => { problem: string | null; note?: string };
}

const devices = {
  cpu: {
    help: 'cpu',
    executionProviders: ['cpu'],
    profileName: 'CPUExecutionProvider',
    logSeverity: 3,
    deviceOutputs: false,
    check: () => ({ problem: null }),
  },
  cuda: {
    help: "cuda (needs onnxruntime-node's CUDA provider: see the README's Install section)",
    executionProviders: ['cuda', 'cpu'],
    profileName: 'CUDAExecutionProvider',
    logSeverity: 4,
    // onnxruntime-node hands back only WebGPU's buffers: CUDA's outputs come back to host memory
    deviceOutputs: false,
    startNeeds: 'an NVIDIA driver and the CUDA 12 and cuDNN 9 libraries on the library path, or use --device cpu',
    check: () => ({ problem: cudaProviderProblem() }),
  },
  webgpu: {
    help: 'webgpu (the provider onnxruntime-node bundles: a GPU with a Vulkan, Metal or D3D12 driver)',
    executionProviders: ['webgpu', 'cpu'],
    profileName: 'WebGpuExecutionProvider',
    logSeverity: 3,
    deviceOutputs: true,
    check: () => {
      const adapter = webgpuAdapter();
      return { problem: adapter.problem, ...(adapter.kind === 'software' ? { note: SOFTWARE_ADAPTER_NOTE } : {}) };
    },
  },
} satisfies Record<string, DeviceType>;

/** An ONNX Runtime execution provider that runs the graphs: a name of DEVICE_TYPES. */
export type Provider = keyof typeof devices;

/** The devices: each one's providers, log level and check. The one list; everything else is derived from it. */
export const DEVICE_TYPES: Readonly<Record<Provider, DeviceType>> = Object.freeze(devices);
/** What a user may ask for: a provider, or `auto` (CUDA where its provider is installed, else a WebGPU adapter, else the CPU). */
export type Device = Provider | 'auto';

/** The providers, in DEVICE_TYPES' order. */
export const PROVIDERS = Object.keys(DEVICE_TYPES) as readonly Provider[];
/** What --device takes. */
export const DEVICES: readonly Device[] = [...PROVIDERS, 'auto'];

/** A device that is named right but cannot work here (its provider or adapter is missing): not bad usage. */
export class DeviceUnavailableError extends Error {}

/**
 * `value` as a device name, or a TypeError naming the ones there are. `auto` only where `auto` is allowed (the command
 * line resolves it before a command runs; the library takes a provider).
 */
export function checkDeviceName(value: unknown, what = 'device', allowAuto = false): Device {
  const names: readonly string[] = allowAuto ? DEVICES : PROVIDERS;
  if (typeof value === 'string' && names.includes(value)) return value as Device;
  throw new TypeError(`${what} ${JSON.stringify(value) ?? String(value)} is not one of ${names.join(', ')}`);
}

/**
 * The provider `device` stands for, and why: `auto` is CUDA where its provider is installed, else WebGPU
 * where a GPU adapter is found (never a software one: a CPU emulating a GPU is slower than the CPU provider),
 * else the CPU. A named GPU provider that cannot work is refused in one line (DeviceUnavailableError); `webgpu` on a
 * software adapter works, with a `note` saying so.
 */
export function resolveDevice(device: Device): { provider: Provider; why: string; note?: string } {
  if (device !== 'auto') {
    const { problem, note } = DEVICE_TYPES[checkDeviceName(device, 'device', false) as Provider].check();
    if (problem) throw new DeviceUnavailableError(problem);
    return { provider: device, why: 'asked for', ...(note ? { note } : {}) };
  }
  const cuda = DEVICE_TYPES.cuda.check().problem;
  if (!cuda) return { provider: 'cuda', why: "onnxruntime-node's CUDA provider is installed" };
  const webgpu = webgpuAdapter();
  if (webgpu.kind === 'gpu') return { provider: 'webgpu', why: 'a WebGPU adapter was found on a GPU' };
  const none =
    webgpu.kind === 'software'
      ? 'the only WebGPU adapter is a software one (a CPU emulating a GPU, slower than the CPU provider)'
      : webgpu.problem;
  return { provider: 'cpu', why: `${cuda}; ${none}` };
}
