/**
 * Whether the CUDA provider of onnxruntime-node can work here, told before a session is made. No top-level
 * import of the runtime: commands that never run a graph do not load its native library.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);

/** How to add the CUDA provider to an installed onnxruntime-node (the README's Install section explains it). */
export const CUDA_INSTALL_COMMAND = 'ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install';

/**
 * The CUDA provider library that onnxruntime-node's install script adds on Linux x64, the one platform where
 * it is not shipped in the npm package.
 */
const LINUX_CUDA_PROVIDER = 'libonnxruntime_providers_cuda.so';

/** Where onnxruntime-node keeps its native libraries for this platform (as its own binding.js loads them). */
function ortBinaryDir(): string {
  const packageRoot = dirname(dirname(require.resolve('onnxruntime-node')));
  return join(packageRoot, 'bin', 'napi-v6', process.platform, process.arch);
}

export interface CudaCheckEnv {
  /** `${platform}/${arch}` */
  platform: string;
  /** whether this onnxruntime-node build knows the CUDA provider at all */
  hasCudaBuild: boolean;
  binaryDir: string;
}

function currentEnv(): CudaCheckEnv {
  return {
    platform: `${process.platform}/${process.arch}`,
    // loaded here, not at the top: the command line checks --device without loading the native runtime first
    hasCudaBuild: (require('onnxruntime-node') as typeof import('onnxruntime-node')).listSupportedBackends().some((b) => b.name === 'cuda'),
    binaryDir: ortBinaryDir(),
  };
}

/**
 * Why `--device cuda` cannot work here, or null when nothing is known to be missing. Checked before a
 * session is made: ONNX Runtime's own failure is a native log on stderr followed by a vague error.
 */
export function cudaProviderProblem(env: CudaCheckEnv = currentEnv()): string | null {
  if (!env.hasCudaBuild) return `onnxruntime-node has no CUDA provider for ${env.platform}; use --device cpu`;
  if (env.platform !== 'linux/x64' || existsSync(join(env.binaryDir, LINUX_CUDA_PROVIDER))) return null;
  return `onnxruntime-node's CUDA provider is not installed (no ${LINUX_CUDA_PROVIDER} in ${env.binaryDir}); add it with \`${CUDA_INSTALL_COMMAND}\`, or use --device cpu`;
}
