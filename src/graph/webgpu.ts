/**
 * Whether the WebGPU provider that onnxruntime-node bundles (Dawn: Vulkan on Linux, Metal on macOS, D3D12 on
 * Windows) finds a GPU adapter here, told in one line. The probe runs in a child process: without an adapter,
 * Dawn prints its own warnings on the process's stderr, which a user should not get in place of a sentence.
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

export interface WebGpuProbe {
  /** the child's exit status: 0 when a session was made on an adapter */
  status: number | null;
  /** what ONNX Runtime and Dawn said */
  output: string;
}

function runProbe(): WebGpuProbe {
  const r = spawnSync(process.execPath, ['-e', PROBE, require.resolve('onnxruntime-node'), PROBE_MODEL_HEX], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  return { status: r.status, output: `${r.stdout}\n${r.stderr}${r.error ? `\n${r.error.message}` : ''}` };
}

let cached: string | null | undefined;

/**
 * Why `--device webgpu` cannot work here, or null when a session was made on a GPU adapter. The probe runs
 * once per process (a fraction of a second); `probe` replaces it in tests.
 */
export function webgpuProblem(probe: () => WebGpuProbe = runProbe): string | null {
  if (probe === runProbe && cached !== undefined) return cached;
  const r = probe();
  let problem: string | null = null;
  if (r.status !== 0) {
    const vulkan = /Couldn't load Vulkan: (\S+)/.exec(r.output);
    if (vulkan) {
      problem = `no WebGPU adapter: the Vulkan loader (${vulkan[1]!.replace(/:$/, '')}) is not installed; on Debian or Ubuntu \`apt-get install libvulkan1\`, with a GPU driver that supports Vulkan`;
    } else if (/adapter/i.test(r.output)) {
      problem = 'no WebGPU adapter: no GPU with a Vulkan (Linux), Metal (macOS) or D3D12 (Windows) driver was found';
    } else {
      const first = r.output.split('\n').find((l) => l.trim() !== '') ?? `the probe ended with status ${String(r.status)}`;
      problem = `no WebGPU adapter: ${first.trim().slice(0, 200)}`;
    }
  }
  if (probe === runProbe) cached = problem;
  return problem;
}
