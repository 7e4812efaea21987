import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { Graph, add, cast, mul } from '../src/graph/graph.js';
import { CompiledGraph } from '../src/graph/runtime.js';
import { PlacementRecorder, describePlacement, nodePlacement, parseProfile, providerShortName } from '../src/graph/placement.js';
import { loadClipWeights } from '../src/clip/weights.js';
import { imageFeatureGraph } from '../src/clip/encoders.js';
import { sharedDir } from './helpers/shared.js';
import { childResult, softwareWebgpu } from './helpers/software-webgpu.js';

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

test('on WebGPU the nodes it runs are counted under it, and a float64 op (WebGPU has none) under the CPU, with the copies', async (t) => {
  const env = softwareWebgpu(t);
  if (!env) return;
  const { result: p } = await childResult<ReturnType<typeof parseProfile>>(
    {
      code: [
        'const { Graph, add, cast, mul } = await import(`${SRC}/graph/graph.ts`);',
        'const { nodePlacement } = await import(`${SRC}/graph/placement.ts`);',
        'const { reply } = await import(HELPER);',
        "const g = new Graph('chain');",
        "const a = g.input('a', [4]);",
        'const x = mul(a, a);',
        "const y = cast(add(cast(x, 'float64'), cast(x, 'float64')), 'float32');",
        "g.output('z', mul(y, a));",
        "reply(await nodePlacement(g, { provider: 'webgpu' }));",
      ].join('\n'),
    },
    env,
    120_000,
  );
  // the two float32 Muls on the GPU; the float64 Add and the Casts to and from float64 on the CPU
  assert.equal(p.nodes[WEBGPU], 2, JSON.stringify(p));
  assert.equal(p.ops[CPU]?.Add, 1, JSON.stringify(p));
  assert.ok(p.copies > 0, JSON.stringify(p));
});

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
