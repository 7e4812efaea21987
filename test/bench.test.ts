import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rateSummary, median } from '../src/bench/timing.js';
import { findTorchPython, parseTorchOutput, runTorchBench } from '../src/cli/lib/torch.js';
import { benchTable, placementLines, putPlacement, putRates } from '../src/cli/commands/bench.js';
import { warmupRuns } from '../src/bench/profile.js';
import { benchVision } from '../src/bench/vision.js';
import { benchFu } from '../src/bench/fu.js';
import { loadClipWeights } from '../src/clip/weights.js';
import { sharedDir } from './helpers/shared.js';

test('rateSummary: images/s of the slowest, median and fastest run', () => {
  assert.deepEqual(rateSummary(8, [2, 4, 1]), { min: 2, median: 4, max: 8 });
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.throws(() => rateSummary(8, []), /no timed runs/);
});

test('bench figures: JSON and table carry min, median and max img/s of both engines', () => {
  const result: Record<string, unknown> = { torch_version: '1.13.0' };
  putRates(result, '', 'fu', 3, [2, 4, 5]);
  putRates(result, 'torch_', 'fu', 3, [10, 6, 4]);
  result.fu_ratio = 1.5;
  assert.deepEqual(
    [
      result.fu_train_img_s,
      result.fu_train_img_s_min,
      result.fu_train_img_s_max,
      result.torch_fu_train_img_s,
      result.torch_fu_train_img_s_min,
      result.torch_fu_train_img_s_max,
    ],
    [0.75, 0.6, 1.5, 0.5, 0.3, 0.75],
  );
  const table = benchTable(result, ['fu']);
  assert.match(table, /fu step img\/s +0\.75 \(0\.60–1\.50\) +0\.50 \(0\.30–0\.75\) +1\.50/);
  assert.match(table, /torch 1\.13\.0/);
});

test('bench placement: JSON keys per mode, the CPU ops only on a GPU, one line per mode under the table', () => {
  const gpu: Record<string, unknown> = { device: 'webgpu' };
  putPlacement(gpu, 'fu', 'webgpu', {
    nodes: { WebGpuExecutionProvider: 812, CPUExecutionProvider: 14 },
    ops: { WebGpuExecutionProvider: { MatMul: 812 }, CPUExecutionProvider: { Gather: 12, Range: 2 } },
    copies: 6,
  });
  assert.deepEqual(gpu, {
    device: 'webgpu',
    placement_fu: { WebGpuExecutionProvider: 812, CPUExecutionProvider: 14 },
    placement_fu_copies: 6,
    placement_fu_cpu_ops: { Gather: 12, Range: 2 },
  });
  assert.equal(placementLines(gpu, ['forward', 'fu']), 'fu nodes: 812 webgpu, 14 cpu (Gather 12, Range 2), 6 copies\n');

  const cpu: Record<string, unknown> = { device: 'cpu' };
  putPlacement(cpu, 'forward', 'cpu', { nodes: { CPUExecutionProvider: 347 }, ops: { CPUExecutionProvider: { MatMul: 347 } }, copies: 0 });
  assert.deepEqual(cpu, { device: 'cpu', placement_forward: { CPUExecutionProvider: 347 }, placement_forward_copies: 0 });
  assert.equal(placementLines(cpu, ['forward']), 'forward nodes: 347 cpu\n');

  // the profiled run is an untimed one: with --warmup 0 it is one extra run; without placement, none
  assert.deepEqual([warmupRuns(0, true), warmupRuns(2, true), warmupRuns(0, false)], [1, 2, 0]);
});

test('bench table: the header names both devices; a GPU run against PyTorch on the CPU is marked', () => {
  const result: Record<string, unknown> = { device: 'webgpu', torch_version: '2.11.0', torch_device: 'cpu' };
  putRates(result, '', 'forward', 8, [1]);
  putRates(result, 'torch_', 'forward', 8, [2]);
  result.forward_ratio = 2;
  const table = benchTable(result, ['forward']);
  assert.match(table, /onnxruntime \(webgpu\) +torch 2\.11\.0 \(cpu\) +ratio \(vs torch on cpu\)/);
  result.torch_device = 'cuda';
  assert.match(benchTable(result, ['forward']), /onnxruntime \(webgpu\) +torch 2\.11\.0 \(cuda\) +ratio\n/);
  // both on the CPU: nothing to mark
  assert.match(benchTable({ ...result, device: 'cpu', torch_device: 'cpu' }, ['forward']), /\(cpu\) +ratio\n/);
});

test('parseTorchOutput reads the per-run seconds of each mode from the last stdout line', () => {
  const line = JSON.stringify({
    torch_version: '1.13.0',
    threads: 2,
    blas: '/lib/libopenblas.so.0',
    blas_threads: 2,
    fu_s: [2, 1.5, 3],
    forward_s: [0.5],
  });
  const r = parseTorchOutput(`a progress line\n${line}\n`, ['forward', 'fu']);
  assert.deepEqual(r, {
    torchVersion: '1.13.0',
    threads: 2,
    blas: '/lib/libopenblas.so.0',
    blasThreads: 2,
    seconds: { forward: [0.5], fu: [2, 1.5, 3] },
  });
  assert.throws(() => parseTorchOutput(line, ['train']), /no valid train_s/);
  assert.throws(() => parseTorchOutput(JSON.stringify({ fu_s: [1, -1] }), ['fu']), /no valid fu_s/);
  assert.throws(() => parseTorchOutput(JSON.stringify({ fu_s: [] }), ['fu']), /no valid fu_s/);
  assert.throws(() => parseTorchOutput('Traceback (most recent call last)', ['fu']), /did not print a JSON object/);
  assert.throws(() => parseTorchOutput(JSON.stringify({ device: 'mps', fu_s: [1] }), ['fu']), /unknown device: "mps"/);
});

test('runTorchBench passes the settings to the peer and parses what it prints', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-bench-'));
  try {
    // a stand-in peer run by node: echoes its arguments and times every mode at 1 s
    const peer = join(dir, 'peer.mjs');
    writeFileSync(
      peer,
      [
        'const a = process.argv.slice(2);',
        'const get = (k) => a[a.indexOf(k) + 1];',
        'process.stderr.write("progress\\n");',
        // as the real peer on a machine whose torch has CUDA: a GPU provider puts it on cuda
        'const gpu = ["cuda", "webgpu"].includes(get("--device"));',
        'const out = { torch_version: "0.0", threads: Number(get("--threads")), device: gpu ? "cuda" : "cpu", ...(gpu ? { gpu: "Stand-in GPU" } : {}), argv: a };',
        'for (const m of get("--mode").split(",")) out[m + "_s"] = Array(Number(get("--iters"))).fill(1);',
        'console.log(JSON.stringify(out));',
      ].join('\n'),
    );
    let stderr = '';
    const r = await runTorchBench({
      python: process.execPath,
      script: peer,
      arch: 'vit-b-16',
      batch: 4,
      threads: 3,
      warmup: 0,
      iters: 2,
      modes: ['train', 'fu'],
      prompts: 5,
      device: 'webgpu',
      onStderr: (s) => {
        stderr += s;
      },
    });
    assert.deepEqual(r, {
      torchVersion: '0.0',
      threads: 3,
      device: 'cuda',
      gpu: 'Stand-in GPU',
      seconds: { train: [1, 1], fu: [1, 1] },
    });
    assert.equal(stderr, 'progress\n');
    // the smallest run, for the cases below
    const minimal = {
      python: process.execPath,
      script: peer,
      arch: 'vit-b-32',
      batch: 1,
      threads: 1,
      warmup: 0,
      iters: 1,
      prompts: 8,
    } as const;
    // without a device, the peer is told cpu
    const onCpu = await runTorchBench({ ...minimal, modes: ['forward'] });
    assert.equal(onCpu.device, 'cpu');
    assert.equal(onCpu.gpu, undefined);

    writeFileSync(peer, 'process.stderr.write("ImportError: no torch\\n"); process.exit(1);');
    await assert.rejects(runTorchBench({ ...minimal, modes: ['fu'] }), /the PyTorch peer exited with code 1: ImportError: no torch/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// The real peer needs a Python with torch; CI has none.
const torchPython = findTorchPython();
test(
  'the PyTorch peer runs every mode and sets its own thread pools, whatever the environment says',
  {
    skip: torchPython ? false : 'no Python with torch here (python3, /usr/bin/python3); the peer is tested where torch is installed',
  },
  async () => {
    const saved = { OMP_NUM_THREADS: process.env.OMP_NUM_THREADS, OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS };
    // a caller's environment asking for other pool sizes must not change what the peer measures
    process.env.OMP_NUM_THREADS = '5';
    process.env.OPENBLAS_NUM_THREADS = '7';
    try {
      const r = await runTorchBench({
        python: torchPython!.python,
        arch: 'vit-b-32',
        batch: 1,
        threads: 1,
        warmup: 0,
        iters: 1,
        modes: ['forward', 'train', 'fu'],
        prompts: 2,
        // on a GPU provider the peer goes to CUDA where its torch has it, else stays on the CPU and says so
        device: 'webgpu',
      });
      assert.equal(r.threads, 1);
      assert.ok(r.device === 'cpu' || (r.device === 'cuda' && typeof r.gpu === 'string'), `${r.device} ${r.gpu}`);
      // the peer names its BLAS (from /proc on Linux) and, for OpenBLAS, the size of OpenBLAS's own pool
      if (process.platform === 'linux') assert.ok(r.blas, 'the peer reports its BLAS');
      if (r.blas?.includes('openblas')) assert.equal(r.blasThreads, 1, `OpenBLAS threads (${r.blas})`);
      for (const m of ['forward', 'train', 'fu'] as const) assert.equal(r.seconds[m]?.length, 1, m);
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  },
);

test("benchVision and benchFu say where each graph's nodes ran when asked, and nothing otherwise", async () => {
  const weights = await loadClipWeights(join(sharedDir(), 'reference', 'tiny-vit-p32'));
  const runtime = { provider: 'cpu' as const, threads: 1 };
  const vision = await benchVision(weights, {
    batch: 1,
    prompts: 2,
    warmup: 0,
    iters: 2,
    runtime,
    modes: new Set(['forward', 'train']),
    placement: true,
  });
  assert.equal(vision.forward_s?.length, 2);
  assert.equal(vision.train_s?.length, 2);
  for (const p of [vision.placement_forward, vision.placement_train]) {
    assert.ok(p, 'placement');
    assert.deepEqual(Object.keys(p.nodes), ['CPUExecutionProvider']);
    assert.ok(p.nodes.CPUExecutionProvider! > 10, JSON.stringify(p.nodes));
  }
  // the train graph has the backward pass too
  assert.ok(vision.placement_train!.nodes.CPUExecutionProvider! > vision.placement_forward!.nodes.CPUExecutionProvider!);
  const fu = await benchFu(weights, { batch: 1, warmup: 0, iters: 1, runtime, placement: true });
  assert.equal(fu.fu_s.length, 1);
  assert.ok(fu.placement_fu && fu.placement_fu.nodes.CPUExecutionProvider! > 0);
  const none = await benchVision(weights, {
    batch: 1,
    prompts: 2,
    warmup: 0,
    iters: 1,
    runtime,
    modes: new Set(['forward']),
    placement: false,
  });
  assert.equal(none.placement_forward, undefined);
});
