import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CUDA_INSTALL_COMMAND, SessionCache, cudaProviderProblem, webgpuProblem } from '../src/graph/runtime.js';
import { cli } from './helpers/cli.js';
import { Graph, add } from '../src/graph/graph.js';
import { sharedDir } from './helpers/shared.js';

test('cudaProviderProblem: names the missing Linux provider library and the command that adds it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-ort-'));
  try {
    const missing = cudaProviderProblem({ platform: 'linux/x64', hasCudaBuild: true, binaryDir: dir });
    assert.ok(missing);
    assert.match(missing, /libonnxruntime_providers_cuda\.so/);
    assert.ok(missing.includes(CUDA_INSTALL_COMMAND), missing);
    assert.ok(missing.includes('--device cpu'), missing);
    writeFileSync(join(dir, 'libonnxruntime_providers_cuda.so'), '');
    assert.equal(cudaProviderProblem({ platform: 'linux/x64', hasCudaBuild: true, binaryDir: dir }), null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('cudaProviderProblem: a build without the CUDA provider is named; other platforms are left to ONNX Runtime', () => {
  const none = cudaProviderProblem({ platform: 'darwin/arm64', hasCudaBuild: false, binaryDir: '/nonexistent' });
  assert.match(none ?? '', /no CUDA provider for darwin\/arm64/);
  assert.equal(cudaProviderProblem({ platform: 'win32/x64', hasCudaBuild: true, binaryDir: '/nonexistent' }), null);
});

// The native log of ONNX Runtime goes to the process's own stderr, so this runs the command in a child.
test(
  '--device cuda without the CUDA provider: exit 2 and one clear line, no native ONNX Runtime log',
  { skip: cudaProviderProblem() === null && 'the CUDA provider is installed here' },
  () => {
    const model = join(sharedDir(), 'reference', 'tiny-vit-p32');
    const entry =
      "import { main } from './src/cli/main.ts'; process.exitCode = await main(['node', 'promptiqa', ...process.argv.slice(1)]);";
    const r = spawnSync(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', entry, 'embed', '--model', model, '--text', 'Good photo.', '--device', 'cuda'],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stdout, '');
    assert.doesNotMatch(r.stderr, /onnxruntime:|\[E:|\x1b\[/, 'no native log');
    const first = r.stderr.split('\n')[0]!;
    assert.match(first, /^promptiqa embed: .*CUDA provider is not installed/);
    assert.ok(first.includes(CUDA_INSTALL_COMMAND), first);
  },
);

test('SessionCache with maxEntries keeps the most recently used graphs and releases the others', async () => {
  const built: string[] = [];
  const graph = (name: string) => (): Graph => {
    built.push(name);
    const g = new Graph(name);
    const x = g.input('x', [2]);
    g.output('y', add(x, x));
    return g;
  };
  const cache = new SessionCache({ threads: 1 }, 2);
  const a = await cache.get('a', graph('a'));
  await cache.get('b', graph('b'));
  await cache.get('a', graph('a')); // a is used again: b is now the oldest
  await cache.get('c', graph('c'));
  assert.deepEqual(cache.keys(), ['a', 'c']);
  assert.deepEqual(built, ['a', 'b', 'c'], 'a hit builds nothing');
  assert.deepEqual(Array.from((await a.run({ x: Float32Array.of(1, 2) })).y!.data as Float32Array), [2, 4]);
  await cache.get('b', graph('b'));
  assert.deepEqual(cache.keys(), ['c', 'b'], 'a was the least recently used');
  assert.deepEqual(built, ['a', 'b', 'c', 'b'], 'a graph let go is built again when asked for');
  await cache.clear();
});

test('webgpuProblem: one line for a missing Vulkan loader, for no adapter, and null where a session was made', () => {
  const said = (status: number, output: string) => webgpuProblem(() => ({ status, output }));
  assert.equal(
    said(
      3,
      "Warning: Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file\n  at operator() (BackendVk.cpp:368)\nFailed to get a WebGPU adapter",
    ),
    'no WebGPU adapter: the Vulkan loader (libvulkan.so.1) is not installed; on Debian or Ubuntu `apt-get install libvulkan1`, with a GPU driver that supports Vulkan',
  );
  assert.equal(
    said(3, 'webgpu_context.cc:136 ... Failed to get a WebGPU adapter: No supported adapters'),
    'no WebGPU adapter: no GPU with a Vulkan (Linux), Metal (macOS) or D3D12 (Windows) driver was found',
  );
  assert.equal(said(0, ''), null);
});

test('--device webgpu without an adapter is refused in one line before any work; --device auto says what it picked', async (t) => {
  if (webgpuProblem() === null) {
    t.skip('this machine has a WebGPU adapter');
    return;
  }
  const tiny = join(sharedDir(), 'reference', 'tiny-vit-p32');
  const image = join(sharedDir(), 'reference', 'images', 'wide_640x480.png');
  const r = await cli('score', image, '--method', 'clip-iqa', '--model', tiny, '--device', 'webgpu');
  assert.equal(r.code, 2);
  assert.match(r.err, /no WebGPU adapter: /);
  assert.doesNotMatch(r.err, /BackendVk|webgpu_context\.cc|Warning:/, 'no native log');
  const auto = await cli('score', image, '--method', 'clip-iqa', '--model', tiny, '--device', 'auto', '--format', 'json');
  assert.equal(auto.code, 0, auto.err);
  assert.match(auto.err, /^--device auto: cpu \(.*no WebGPU adapter/m);
  assert.ok(Number.isFinite((JSON.parse(auto.out) as Array<{ score: number }>)[0]!.score));
});
