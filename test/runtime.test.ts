import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CompiledGraph,
  CUDA_INSTALL_COMMAND,
  DEVICES,
  DEVICE_TYPES,
  MAX_THREADS_PER_CORE,
  PROVIDERS,
  SessionCache,
  checkThreads,
  cudaProviderProblem,
  spinsBy,
  webgpuProblem,
} from '../src/graph/runtime.js';
import { buildProgram, type CliIo } from '../src/cli/main.js';
import { evaluate } from '../src/eval/evaluate.js';
import { train } from '../src/train/index.js';
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
  '--device cuda without the CUDA provider: exit 1 and one clear line (a failure, not bad usage), no native ONNX Runtime log',
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
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.doesNotMatch(r.stderr, /onnxruntime:|\[E:|\x1b\[/, 'no native log');
    assert.doesNotMatch(r.stderr, /see: .*--help/, 'not a usage error');
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
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
  assert.equal(r.code, 1, 'a device missing here is a failure, not bad usage');
  assert.match(r.err, /^promptiqa score: no WebGPU adapter: /);
  assert.equal(r.err.trim().split('\n').length, 1, r.err);
  assert.doesNotMatch(r.err, /BackendVk|webgpu_context\.cc|Warning:/, 'no native log');
  const auto = await cli('score', image, '--method', 'clip-iqa', '--model', tiny, '--device', 'auto', '--format', 'json');
  assert.equal(auto.code, 0, auto.err);
  assert.match(auto.err, /^--device auto: cpu \(.*no WebGPU adapter/m);
  assert.ok(Number.isFinite((JSON.parse(auto.out) as Array<{ score: number }>)[0]!.score));
});

/**
 * Peak memory (maxRSS growth) of a child process while it computes text features on the tiny CLIP: LIQE's (5
 * prompts) or LIQE-mix's (495) through the scorer, or (`folded`, the control) LIQE-mix's text tower as a bare graph
 * with ONNX Runtime's constant folding forced on, as the scorer's graph was loaded before. `constants`: the bytes of
 * LIQE-mix's text graph's own constants (token embeddings and the like, beside the weights).
 */
function textPeak(kind: 'liqe' | 'liqe-mix' | 'folded'): { growth: number; constants: number } {
  const model = join(sharedDir(), 'reference', 'tiny-vit-p32', 'openai.safetensors');
  const child = `
    import { Graph } from './src/graph/graph.ts';
    import { CompiledGraph } from './src/graph/runtime.ts';
    import { WeightBank, encodeTexts } from './src/clip/encoders.ts';
    import { loadClipWeights } from './src/clip/weights.ts';
    import { ClipTokenizer } from './src/clip/tokenizer.ts';
    import { liqe, liqeMix, liqePrompts } from './src/methods/liqe.ts';
    import { setUp, Scorer } from './src/methods/graphs.ts';
    import { parseOptions } from './src/methods/method.ts';
    const kind = ${JSON.stringify(kind)};
    const weights = await loadClipWeights(${JSON.stringify(model)}, { cache: null });
    const tokenizer = ClipTokenizer.default();
    const g = new Graph('text', { foldConstants: true });
    g.output('f', encodeTexts(new WeightBank(g), weights, tokenizer, liqePrompts(true)));
    const constants = g.initializers.reduce((s, i) => s + i.data.byteLength, 0);
    const before = process.resourceUsage().maxRSS * 1024;
    if (kind === 'folded') {
      await (await CompiledGraph.create(g, { threads: 1 })).run({});
    } else {
      const method = kind === 'liqe' ? liqe : liqeMix;
      const setup = setUp(method, parseOptions(method, {}), { weights, tokenizer, model: 'tiny' });
      await new Scorer(setup, new Map(), { threads: 1 }).scoreViews([new Float32Array(3 * 224 * 224)]);
    }
    console.log(JSON.stringify({ growth: process.resourceUsage().maxRSS * 1024 - before, constants }));
  `;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { growth: number; constants: number };
}

test('a text graph is not constant-folded at load: its peak memory does not grow with the prompts beyond their inputs', () => {
  const MB = 2 ** 20;
  const five = textPeak('liqe');
  const many = textPeak('liqe-mix');
  // the same tower folded at load keeps every layer's intermediates: the control shows the measure sees it (about 300 MB
  // on the tiny model, whose prompts stop at their end-of-text token, against a bound of about 75 MB)
  const folded = textPeak('folded');
  // 490 more prompts may cost their constants (held by the graph and by ONNX Runtime) and a chunk's work, no more
  const bound = 2 * many.constants + 64 * MB;
  const grew = many.growth - five.growth;
  assert.ok(grew < bound, `495 prompts took ${(grew / MB).toFixed(0)} MB more than 5, bound ${(bound / MB).toFixed(0)} MB`);
  assert.ok(
    folded.growth - five.growth > 2 * bound,
    `control: folding grew only ${(folded.growth / MB).toFixed(0)} MB (5 prompts ${(five.growth / MB).toFixed(0)}, 495 ${(many.growth / MB).toFixed(0)}, bound ${(bound / MB).toFixed(0)} MB)`,
  );
});

test('spinning: as asked, or where the load leaves a core free for each thread', () => {
  assert.equal(spinsBy({ spinning: true }, 5, 2), true);
  assert.equal(spinsBy({ spinning: false }, 0, 2), false);
  // an idle 2-core machine: both threads spin; one busy process there: they sleep, unless one thread leaves it a core
  assert.equal(spinsBy({ threads: 2 }, 0.3, 2), true);
  assert.equal(spinsBy({ threads: 2, spinning: 'auto' }, 1.0, 2), false);
  assert.equal(spinsBy({ threads: 1 }, 1.0, 2), true);
  // no thread count: all the cores
  assert.equal(spinsBy({}, 0.2, 4), true);
  assert.equal(spinsBy({}, 1.0, 4), false);
});

test('one list of devices: the command line, createMetric, evaluate and train take theirs from DEVICE_TYPES', async () => {
  assert.deepEqual(PROVIDERS, Object.keys(DEVICE_TYPES));
  assert.deepEqual(DEVICES, [...PROVIDERS, 'auto']);
  for (const p of PROVIDERS) assert.equal(DEVICE_TYPES[p].executionProviders[0], p);
  const io: CliIo = { stdout: () => undefined, stderr: () => undefined, stderrIsTTY: false, env: {} };
  for (const cmd of buildProgram(io).commands) {
    const device = cmd.options.find((o) => o.long === '--device');
    if (device) assert.deepEqual(device.argChoices, DEVICES, cmd.name());
  }
  // a name outside the list is refused naming the list; webgpu is in it (evaluate refused it as "not one of cpu, cuda")
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-devices-'));
  try {
    const root = join(sharedDir(), 'datasets', 'agiqa-3k');
    const given = { method: 'clip-iqa', dataset: 'agiqa-3k', root, out: join(dir, 'eval') };
    await assert.rejects(evaluate({ ...given, device: 'gpu' as never }), /evaluate: device "gpu" is not one of cpu, cuda, webgpu$/);
    const webgpu = webgpuProblem();
    await assert.rejects(
      evaluate({ ...given, device: 'webgpu', threads: 0 }),
      (err: Error) => !/one of/.test(err.message) && (webgpu === null ? /threads 0/ : /no WebGPU adapter/).test(err.message),
    );
    await assert.rejects(
      train({ method: 'tang', model: 'x', dataset: 'agiqa-3k', root, out: join(dir, 'run'), device: 'gpu' as never }),
      /train: device "gpu" is not one of cpu, cuda, webgpu$/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const bad = await cli('embed', '--model', 'x', '--text', 'a', '--device', 'gpu');
  assert.equal(bad.code, 2, 'a name outside the list is bad usage');
  assert.match(bad.err, /--device "gpu" is not one of cpu, cuda, webgpu, auto/);
});

test(`threads: warned of above the cores, refused above ${MAX_THREADS_PER_CORE} per core, in the library and the command line`, async () => {
  assert.deepEqual(checkThreads(2, 'threads', 2), { threads: 2 });
  assert.match(checkThreads(3, 'threads', 2).warning!, /^threads 3 is more than the 2 core\(s\) here: .*slower than 2$/);
  assert.equal(checkThreads(8, 'threads', 2).threads, 8);
  assert.throws(() => checkThreads(9, 'threads', 2), /^RangeError: threads 9 is not a whole number from 1 to 8 \(4 × the 2 core\(s\) here/);
  for (const bad of [0, -1, 1.5, 'x', 1e9, Number.NaN])
    assert.throws(() => checkThreads(bad, 'threads', 2), /is not a whole number from 1 to 8/);

  const cores = availableParallelism();
  const g = new Graph('threads');
  g.output('y', add(g.input('x', [2]), g.input('x2', [2])));
  await assert.rejects(CompiledGraph.create(g, { threads: 1000 * cores }), /threads \d+ is not a whole number from 1 to/);
  const model = join(sharedDir(), 'reference', 'tiny-vit-p32');
  const tooMany = await cli('embed', '--model', model, '--text', 'Good photo.', '--threads', '1000');
  assert.equal(tooMany.code, 2);
  assert.match(tooMany.err, new RegExp(`--threads 1000 is not a whole number from 1 to ${MAX_THREADS_PER_CORE * cores} `));
  const some = await cli('embed', '--model', model, '--text', 'Good photo.', '--threads', String(cores + 1));
  assert.equal(some.code, 0, some.err);
  assert.match(some.err, new RegExp(`^warning: --threads ${cores + 1} is more than the ${cores} core\\(s\\) here`, 'm'));
  const quiet = await cli('embed', '--model', model, '--text', 'Good photo.', '--threads', String(cores));
  assert.equal(quiet.code, 0, quiet.err);
  assert.doesNotMatch(quiet.err, /warning/);
});
