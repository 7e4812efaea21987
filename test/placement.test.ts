import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import onnxProto from 'onnx-proto';
import { Graph, add, cast, mul } from '../src/graph/graph.js';
import { CompiledGraph } from '../src/graph/runtime.js';
import { PlacementRecorder, describePlacement, nodePlacement, parseProfile, providerShortName } from '../src/graph/placement.js';
import { loadClipWeights } from '../src/clip/weights.js';
import { imageFeatureGraph } from '../src/clip/encoders.js';
import { sharedDir } from './helpers/shared.js';

const CPU = 'CPUExecutionProvider';
const WEBGPU = 'WebGpuExecutionProvider';

/** A Node event of ONNX Runtime's profile, as its SequentialExecutor writes one per node run. */
const nodeEvent = (name: string, provider: string, op: string) => ({
  cat: 'Node',
  name: `${name}_kernel_time`,
  ph: 'X',
  args: { provider, op_name: op, node_index: '0' },
});

test('parseProfile counts each node once under the provider that ran it; copies between providers apart', () => {
  const events = [
    { cat: 'Session', name: 'session_initialization', args: {} },
    nodeEvent('Mul_0', WEBGPU, 'Mul'),
    nodeEvent('Cast_1', CPU, 'Cast'),
    nodeEvent('Add_2', CPU, 'Add'),
    nodeEvent('Memcpy_token_3', WEBGPU, 'MemcpyToHost'),
    nodeEvent('Memcpy_token_4', WEBGPU, 'MemcpyFromHost'),
    // the WebGPU provider's own events (its programs) are not nodes
    { cat: 'Api', name: 'Mul_0&Mul&Mul', args: {} },
    // a second run of the same nodes counts nothing more
    nodeEvent('Mul_0', WEBGPU, 'Mul'),
    nodeEvent('Cast_1', CPU, 'Cast'),
    { cat: 'Node', name: 'Mul_0_fence_before', args: { provider: WEBGPU, op_name: 'Mul' } },
  ];
  assert.deepEqual(parseProfile(events), {
    nodes: { [WEBGPU]: 1, [CPU]: 2 },
    ops: { [WEBGPU]: { Mul: 1 }, [CPU]: { Cast: 1, Add: 1 } },
    copies: 2,
  });
  assert.throws(() => parseProfile({ traceEvents: [] }), /not an ONNX Runtime profile/);
});

test('describePlacement: nodes by provider, most first, the ops that left the provider asked for, the copies', () => {
  const p = { nodes: { [CPU]: 3, [WEBGPU]: 812 }, ops: { [CPU]: { Add: 1, Cast: 2 }, [WEBGPU]: { Mul: 812 } }, copies: 2 };
  assert.equal(describePlacement(p, 'webgpu'), '812 webgpu, 3 cpu (Cast 2, Add 1), 2 copies');
  assert.equal(describePlacement(p), '812 webgpu, 3 cpu, 2 copies');
  assert.equal(describePlacement({ nodes: { [CPU]: 347 }, ops: { [CPU]: { MatMul: 347 } }, copies: 0 }, 'cpu'), '347 cpu');
  assert.equal(describePlacement({ nodes: {}, ops: {}, copies: 0 }), 'no nodes profiled');
  assert.equal(providerShortName('CUDAExecutionProvider'), 'cuda');
});

test('on the CPU every node of the optimised graph is counted, on the CPU provider, from the first run only', async () => {
  const weights = await loadClipWeights(join(sharedDir(), 'reference', 'tiny-vit-p32'));
  const graph = imageFeatureGraph(weights, 2);
  const recorder = new PlacementRecorder();
  const optimised = join(recorder.dir, 'optimised.onnx.bin');
  try {
    const compiled = await CompiledGraph.create(graph, recorder.runtime({ provider: 'cpu', optimizedModelPath: optimised }));
    const pixels = new Float32Array(2 * 3 * weights.config.imageSize ** 2);
    await compiled.run({ pixels });
    // the profile is written when the first run ends, before the session is released
    const profiles = readdirSync(recorder.dir).filter((f) => f.endsWith('.json'));
    assert.equal(profiles.length, 1, profiles.join(', '));
    await compiled.run({ pixels });
    await compiled.run({ pixels });
    await compiled.release();
    const events = JSON.parse(readFileSync(join(recorder.dir, profiles[0]!), 'utf8')) as Array<{ cat: string; name: string }>;
    const kernels = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time')).length;

    const placement = recorder.read();
    const nodes = onnxProto.onnx.ModelProto.decode(readFileSync(optimised)).graph?.node?.length ?? 0;
    assert.ok(nodes > 0);
    assert.deepEqual(placement.nodes, { [CPU]: nodes });
    assert.equal(placement.copies, 0);
    assert.equal(
      Object.values(placement.ops[CPU] ?? {}).reduce((a, b) => a + b, 0),
      nodes,
    );
    // later runs were not profiled: one event per node
    assert.equal(kernels, nodes);
  } finally {
    recorder.dispose();
  }
  assert.equal(existsSync(recorder.dir), false, 'the profile folder is removed');

  // nodePlacement: its own session, one run with zeros, and the same count
  const again = await nodePlacement(graph, { provider: 'cpu' });
  assert.deepEqual(Object.keys(again.nodes), [CPU]);
  assert.ok(again.nodes[CPU]! > 0);
});

/**
 * The software WebGPU adapter of `scripts/software-vulkan.sh DIR`, named by PROMPTIQA_SOFTWARE_VULKAN=DIR: its
 * lvp.json names the driver, beside the Vulkan loader. The dynamic loader reads LD_LIBRARY_PATH when a process
 * starts, so the WebGPU run is a child process.
 */
function softwareVulkan(): Record<string, string> | null {
  const dir = process.env.PROMPTIQA_SOFTWARE_VULKAN;
  if (!dir) return null;
  const manifest = resolve(dir, 'lvp.json');
  const driver = (JSON.parse(readFileSync(manifest, 'utf8')) as { ICD?: { library_path?: string } }).ICD?.library_path;
  assert.ok(driver && existsSync(driver), `${manifest}: its driver ${driver ?? '(none)'} is missing`);
  return { LD_LIBRARY_PATH: [dirname(driver), process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'), VK_DRIVER_FILES: manifest };
}

const vulkan = softwareVulkan();
test(
  'on WebGPU the nodes it runs are counted under it, and a float64 op (WebGPU has none) under the CPU, with the copies',
  { skip: vulkan ? false : 'no software WebGPU adapter: set PROMPTIQA_SOFTWARE_VULKAN=DIR after scripts/software-vulkan.sh DIR' },
  async () => {
    const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
    const dir = mkdtempSync(join(tmpdir(), 'promptiqa-placement-'));
    try {
      const child = join(dir, 'child.mts');
      writeFileSync(
        child,
        [
          `import { Graph, add, cast, mul } from ${JSON.stringify(join(root, 'src/graph/graph.ts'))};`,
          `import { nodePlacement } from ${JSON.stringify(join(root, 'src/graph/placement.ts'))};`,
          "const g = new Graph('chain');",
          "const a = g.input('a', [4]);",
          'const x = mul(a, a);',
          "const y = cast(add(cast(x, 'float64'), cast(x, 'float64')), 'float32');",
          "g.output('z', mul(y, a));",
          "process.stdout.write('\\n@@' + JSON.stringify(await nodePlacement(g, { provider: 'webgpu' })) + '\\n');",
        ].join('\n'),
      );
      const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((done, failed) => {
        const p = spawn(process.execPath, ['--import', 'tsx', child], { cwd: root, env: { ...process.env, ...vulkan }, timeout: 120_000 });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        p.on('error', failed);
        p.on('close', (c) => done({ code: c, stdout, stderr }));
      });
      assert.equal(code, 0, stderr.slice(-2000));
      const line = stdout.split('\n').find((l) => l.startsWith('@@'));
      assert.ok(line, stdout);
      const p = JSON.parse(line.slice(2)) as ReturnType<typeof parseProfile>;
      // the two float32 Muls on the GPU; the float64 Add and the Casts to and from float64 on the CPU
      assert.equal(p.nodes[WEBGPU], 2, JSON.stringify(p));
      assert.equal(p.ops[CPU]?.Add, 1, JSON.stringify(p));
      assert.ok(p.copies > 0, JSON.stringify(p));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

// the same graph on the CPU: every node there, no copies (the control of the test above)
test('the float64 chain on the CPU provider runs wholly there', async () => {
  const g = new Graph('chain');
  const a = g.input('a', [4]);
  const x = mul(a, a);
  const y = cast(add(cast(x, 'float64'), cast(x, 'float64')), 'float32');
  g.output('z', mul(y, a));
  const p = await nodePlacement(g, { provider: 'cpu' });
  assert.deepEqual(Object.keys(p.nodes), [CPU]);
  assert.equal(p.copies, 0);
  assert.equal(p.ops[CPU]?.Mul, 2);
});
