/**
 * Whether the WebGPU provider that onnxruntime-node bundles (Dawn: Vulkan on Linux, Metal on macOS, D3D12 on
 * Windows) finds an adapter here, and whether it is a GPU or a software one (a CPU emulating a GPU); where there is
 * none, why, in one line. The probe runs in a child process: without an adapter, Dawn prints its own warnings on the
 * process's stderr, which a user should not get in place of a sentence.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * The probe's model: y = x + x on a float [2], as `serialize` writes that graph (kept as bytes so that this
 * check, which the command line runs while parsing --device, loads neither ONNX Runtime nor protobuf here).
 */
const PROBE_MODEL_HEX =
  '0808120970726f6d70746971613a470a150a01780a01781201791a054164645f302203416464120c7765626770755f70726f62655a0f0a0178120a0a' +
  '08080112040a020802620f0a0179120a0a08080112040a02080242040a001012';

const PROBE = `
const ort = require(process.argv[1]);
ort.InferenceSession.create(Buffer.from(process.argv[2], 'hex'), { executionProviders: ['webgpu'], logSeverityLevel: 4 })
  .then(() => process.exit(0), (e) => { process.stdout.write(String(e && e.message)); process.exit(3); });
`;

/**
 * The Vulkan drivers that are a CPU emulating a GPU (Mesa's lavapipe, Google's SwiftShader), as globs of the Vulkan
 * loader's `VK_LOADER_DRIVERS_DISABLE`, which match a driver's manifest file name (`lvp_icd.x86_64.json`,
 * `vk_swiftshader_icd.json`). The loader honours it from 1.3.234 on (Debian 12 has 1.3.239); an older one ignores
 * it, and then a software adapter is taken for a GPU.
 */
export const SOFTWARE_VULKAN_DRIVERS = '*lvp*,*swiftshader*';

export interface WebGpuProbe {
  /** the child's exit status: 0 when a session was made on an adapter */
  status: number | null;
  /** what ONNX Runtime and Dawn said */
  output: string;
}

/** `VK_LOADER_DRIVERS_DISABLE` as `env` has it, with the software drivers added. */
function withoutSoftwareDrivers(env: NodeJS.ProcessEnv): string {
  const own = env.VK_LOADER_DRIVERS_DISABLE?.trim();
  return own ? `${own},${SOFTWARE_VULKAN_DRIVERS}` : SOFTWARE_VULKAN_DRIVERS;
}

/** Makes a session in a child process; with `hardwareOnly`, its Vulkan loader leaves the software drivers out. */
function runProbe(hardwareOnly = false): WebGpuProbe {
  const env = hardwareOnly ? { ...process.env, VK_LOADER_DRIVERS_DISABLE: withoutSoftwareDrivers(process.env) } : process.env;
  const r = spawnSync(process.execPath, ['-e', PROBE, require.resolve('onnxruntime-node'), PROBE_MODEL_HEX], {
    encoding: 'utf8',
    timeout: 20_000,
    env,
  });
  return { status: r.status, output: `${r.stdout}\n${r.stderr}${r.error ? `\n${r.error.message}` : ''}` };
}

/** Why a probe made no session, in one line. */
function describeFailure(r: WebGpuProbe): string {
  const vulkan = /Couldn't load Vulkan: (\S+)/.exec(r.output);
  if (vulkan) {
    return `no WebGPU adapter: the Vulkan loader (${vulkan[1]!.replace(/:$/, '')}) is not installed; on Debian or Ubuntu \`apt-get install libvulkan1\`, with a GPU driver that supports Vulkan`;
  }
  if (/adapter/i.test(r.output)) {
    return 'no WebGPU adapter: no GPU with a Vulkan (Linux), Metal (macOS) or D3D12 (Windows) driver was found';
  }
  const first = r.output.split('\n').find((l) => l.trim() !== '') ?? `the probe ended with status ${String(r.status)}`;
  return `no WebGPU adapter: ${first.trim().slice(0, 200)}`;
}

/** What the WebGPU provider finds here. */
export type WebGpuAdapter =
  /** an adapter with the software drivers left out: a GPU */
  | { kind: 'gpu'; problem: null }
  /** only a software one (lavapipe, SwiftShader): it works, slower than the CPU provider */
  | { kind: 'software'; problem: null }
  | { kind: null; problem: string };

/** What `--device webgpu` says once where the adapter is a software one. */
export const SOFTWARE_ADAPTER_NOTE =
  "the WebGPU adapter here is a software one (a CPU emulating a GPU: Mesa's lavapipe or SwiftShader), slower than --device cpu; fit for checking, not for speed";

let cachedAdapter: WebGpuAdapter | undefined;

/**
 * Whether the WebGPU provider finds an adapter here, and whether it is a GPU: a probe with the Vulkan loader told
 * to leave the software drivers out (`SOFTWARE_VULKAN_DRIVERS`), and where that finds none, one without (unless the
 * loader itself is missing). Where a GPU is found, this process's own loader is told the same, before ONNX Runtime
 * starts Dawn here, so that its sessions run on the adapter the probe found and never on a software one (Dawn
 * would prefer the GPU anyway: ONNX Runtime asks for a high-performance adapter, and Dawn sorts discrete and
 * integrated GPUs before CPU adapters). Probed once per process; `probe` replaces the child process in tests.
 */
export function webgpuAdapter(probe: (hardwareOnly: boolean) => WebGpuProbe = runProbe): WebGpuAdapter {
  if (probe === runProbe && cachedAdapter !== undefined) return cachedAdapter;
  let found: WebGpuAdapter;
  const gpu = probe(true);
  if (gpu.status === 0) {
    found = { kind: 'gpu', problem: null };
  } else if (/Couldn't load Vulkan/.test(gpu.output)) {
    found = { kind: null, problem: describeFailure(gpu) };
  } else {
    const any = probe(false);
    found = any.status === 0 ? { kind: 'software', problem: null } : { kind: null, problem: describeFailure(any) };
  }
  if (probe === runProbe) {
    cachedAdapter = found;
    if (found.kind === 'gpu') process.env.VK_LOADER_DRIVERS_DISABLE = withoutSoftwareDrivers(process.env);
  }
  return found;
}

/**
 * Why `--device webgpu` cannot work here, or null when a session was made on an adapter (a software one
 * included: `webgpuAdapter` tells which). The probe runs once per process (a fraction of a second); `probe`
 * replaces it in tests, and is then the only probe made.
 */
export function webgpuProblem(probe?: () => WebGpuProbe): string | null {
  if (!probe) return webgpuAdapter().problem;
  const r = probe();
  return r.status === 0 ? null : describeFailure(r);
}
