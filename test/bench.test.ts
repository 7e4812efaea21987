import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { rateSummary, median } from '../src/bench/timing.js';
import { TORCH_SCRIPT, parseTorchOutput, runTorchBench } from '../src/cli/lib/torch.js';
import { benchTable, blasCoreNote, placementLines, putPlacement, putRates, putShares, torchHeader } from '../src/cli/commands/bench.js';
import { warmupRuns } from '../src/bench/profile.js';
import { benchVision } from '../src/bench/vision.js';
import { benchFu, fuDefaults, fuStepFlops } from '../src/bench/fu.js';
import { matmulPeak, peakGraph, peakOperands, peakProducts, unitVector } from '../src/bench/peak.js';
import { CompiledGraph } from '../src/graph/runtime.js';
import { archConfig, visionFlops } from '../src/clip/config.js';
import { loadClipWeights } from '../src/clip/weights.js';
import { Rng } from '../src/util/rng.js';
import { sharedDir } from './helpers/shared.js';
import { torchPython } from './helpers/torch.js';

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
    blas_core: 'SkylakeX',
    blas_core_detected: 'Prescott',
    blas_core_env: null,
    blas_core_pinned: true,
    blas_check: 2e-7,
    cpu: 'Intel(R) Xeon(R) Platinum 8581C',
    peak_gflop_s: 135.9,
    peak_size: 2048,
    fu_s: [2, 1.5, 3],
    fu_flops: 9e10,
    forward_s: [0.5],
  });
  const r = parseTorchOutput(`a progress line\n${line}\n`, ['forward', 'fu']);
  assert.deepEqual(r, {
    torchVersion: '1.13.0',
    threads: 2,
    blas: '/lib/libopenblas.so.0',
    blasThreads: 2,
    blasCore: 'SkylakeX',
    blasCoreDetected: 'Prescott',
    blasCorePinned: true,
    blasCheck: 2e-7,
    cpu: 'Intel(R) Xeon(R) Platinum 8581C',
    peakGflops: 135.9,
    peakSize: 2048,
    seconds: { forward: [0.5], fu: [2, 1.5, 3] },
    flops: { fu: 9e10 },
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
        'process.stderr.write(`progress ${a.join(" ")}\\n`);',
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
      peakSizes: [1024, 2048],
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
    // the peak's sizes reach the peer; without them it is told to skip its peak
    assert.match(stderr, /^progress .*--device webgpu --peak-sizes 1024,2048\n$/);
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
    stderr = '';
    const onCpu = await runTorchBench({
      ...minimal,
      modes: ['forward'],
      onStderr: (s) => {
        stderr += s;
      },
    });
    assert.match(stderr, / --no-peak\n$/);
    assert.equal(onCpu.device, 'cpu');
    assert.equal(onCpu.gpu, undefined);

    writeFileSync(peer, 'process.stderr.write("ImportError: no torch\\n"); process.exit(1);');
    await assert.rejects(runTorchBench({ ...minimal, modes: ['fu'] }), /the PyTorch peer exited with code 1: ImportError: no torch/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The OpenBLAS core blas_core.py should pin on this CPU, read here from /proc/cpuinfo (null: none applies, or not Linux). */
function bestCoreHere(): string | null {
  let text: string;
  try {
    text = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return null;
  }
  const field = (name: string): string => new RegExp(`^${name}\\s*: (.*)$`, 'm').exec(text)?.[1] ?? '';
  const flags = new Set(field('flags').split(' '));
  if (['avx512f', 'avx512bw', 'avx512dq', 'avx512vl', 'avx512cd'].every((f) => flags.has(f))) return 'SkylakeX';
  if (flags.has('avx2') && flags.has('fma')) return ['AuthenticAMD', 'HygonGenuine'].includes(field('vendor_id')) ? 'Zen' : 'Haswell';
  return null;
}

/** a within `rel` of b, relative to b */
function near(a: number | undefined, b: number, rel: number, what: string): void {
  assert.ok(a !== undefined && Math.abs(a - b) <= rel * Math.abs(b), `${what}: ${a} against ${b}`);
}

test('the PyTorch peer: its own thread pools and the best OpenBLAS kernel whatever the environment says, its peak, and our operation counts', async (t) => {
  const found = torchPython(t);
  if (!found) return;
  const saved = Object.fromEntries(['OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'OPENBLAS_CORETYPE'].map((k) => [k, process.env[k]]));
  // a caller's environment asking for other pool sizes must not change what the peer measures
  process.env.OMP_NUM_THREADS = '5';
  process.env.OPENBLAS_NUM_THREADS = '7';
  // an old SSE kernel, as OpenBLAS 0.3.21 picks by itself on CPUs newer than it (Intel family 6 model 207, AMD Zen 5)
  process.env.OPENBLAS_CORETYPE = 'Prescott';
  try {
    const r = await runTorchBench({
      python: found.python,
      arch: 'vit-b-32',
      batch: 1,
      threads: 1,
      warmup: 0,
      iters: 1,
      modes: ['forward', 'train', 'fu'],
      prompts: 2,
      // on a GPU provider the peer goes to CUDA where its torch has it, else stays on the CPU and says so
      device: 'webgpu',
      peakSizes: [64],
      countFlops: true,
    });
    assert.equal(r.threads, 1);
    assert.ok(r.device === 'cpu' || (r.device === 'cuda' && typeof r.gpu === 'string'), `${r.device} ${r.gpu}`);
    for (const m of ['forward', 'train', 'fu'] as const) assert.equal(r.seconds[m]?.length, 1, m);
    // the peer names its BLAS (from /proc on Linux) and, for OpenBLAS, the size of OpenBLAS's own pool and its kernel
    if (process.platform === 'linux') {
      assert.ok(r.blas, 'the peer reports its BLAS');
      assert.ok(r.cpu, 'the peer names its CPU');
    }
    if (r.blas?.includes('openblas')) {
      assert.equal(r.blasThreads, 1, `OpenBLAS threads (${r.blas})`);
      assert.equal(r.blasCoreDetected, 'Prescott');
      assert.equal(r.blasCoreEnv, 'Prescott');
      const best = bestCoreHere();
      assert.equal(r.blasCorePinned, best !== null, `pinned to ${best}`);
      assert.equal(r.blasCore, best ?? 'Prescott');
    }
    // a float32 product against float64, within the bound of a correct one (blas_core.py's negative controls are below)
    assert.ok(r.blasCheck !== undefined && r.blasCheck > 0 && r.blasCheck < 3.1e-5, `blas_check ${r.blasCheck}`);
    assert.ok(r.peakGflops !== undefined && r.peakGflops > 0 && r.peakSize === 64, `peak ${r.peakGflops} at ${r.peakSize}`);
    // torch's profiler counted one step of each mode: the counts behind our GFLOP/s and peak shares match the work
    // done (leaving out Fu's text encoders would be 50% off at batch 1)
    const c = archConfig('vit-b-32');
    near(r.flops?.forward, visionFlops(c), 0.01, 'forward operations');
    near(r.flops?.train, 2 * visionFlops(c, 2), 0.02, 'train operations');
    near(r.flops?.fu, fuStepFlops(c, 1, { ...fuDefaults(), nVisual: 2 }), 0.02, 'fu operations');
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
});

test("blas_core.py: the best kernel by CPU flags; --blas-core keep keeps the caller's; the float64 check refuses wrong products", (t) => {
  const found = torchPython(t);
  if (!found) return;
  const py = (code: string, env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } =>
    spawnSync(found.python, ['-c', code], { cwd: dirname(TORCH_SCRIPT), encoding: 'utf8', env: { ...process.env, ...env } });

  const cpus = py(`
import json, blas_core as b
avx2 = {"sse2", "avx", "avx2", "fma"}
avx512 = avx2 | {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"}
cases = [("GenuineIntel", avx512 | {"avx512_bf16"}), ("AuthenticAMD", avx512), ("AuthenticAMD", avx2),
         ("HygonGenuine", avx2), ("GenuineIntel", avx2), ("GenuineIntel", avx2 - {"fma"}),
         ("GenuineIntel", avx512 - {"avx512bw"}), ("GenuineIntel", {"sse2", "sse3"})]
print(json.dumps([b.best_core({"vendor": v, "model": "", "flags": f}) for v, f in cases]
                 + [b.best_core(None), b.level("Prescott") < b.level("Zen"), b.level("Haswell") == b.level("Zen")]))
`);
  assert.equal(cpus.status, 0, cpus.stderr);
  // Emerald Rapids, Zen 5, Zen 3, Hygon, Haswell, AVX2 without FMA, AVX-512 without BW, SSE only
  assert.deepEqual(JSON.parse(cpus.stdout), ['SkylakeX', 'SkylakeX', 'Zen', 'Zen', 'Haswell', null, 'Haswell', null, null, true, true]);

  // --blas-core keep: the caller's weaker kernel runs, and is reported as such
  const keep = py(
    `
import json, blas_core
blas_core.pin_best_openblas_core(["--blas-core", "keep"])
import torch
print(json.dumps(blas_core.blas_report(torch)))
`,
    { OPENBLAS_CORETYPE: 'Prescott' },
  );
  assert.equal(keep.status, 0, keep.stderr);
  const kept = JSON.parse(keep.stdout) as Record<string, unknown>;
  if (typeof kept.blas_core === 'string') {
    assert.deepEqual(
      [kept.blas_core, kept.blas_core_detected, kept.blas_core_env, kept.blas_core_pinned],
      ['Prescott', 'Prescott', 'Prescott', false],
    );
    if (bestCoreHere()) assert.match(keep.stderr, /warning: OpenBLAS runs its Prescott kernels .* kept as asked/);
  }

  // negative controls: inputs rounded to half precision (as TF32 does), a product 0.1% too large; blas_report stops
  const wrong = py(`
import blas_core, torch
half = blas_core.gemm_check(torch, lambda a, b: torch.mm(a.half().float(), b.half().float()))
scaled = blas_core.gemm_check(torch, lambda a, b: torch.mm(a, b) * 1.001)
print(half > blas_core.GEMM_TOLERANCE, scaled > blas_core.GEMM_TOLERANCE, blas_core.gemm_check(torch) < blas_core.GEMM_TOLERANCE / 10)
blas_core.blas_report(torch, lambda a, b: torch.mm(a, b) * 1.001)
`);
  assert.equal(wrong.stdout.trim(), 'True True True');
  assert.notEqual(wrong.status, 0);
  assert.match(wrong.stderr, /computes a 512x512 float32 product with relative error .* its figures would be timing wrong results/);
});

test("bench_fu_authors.py refuses a folder that is not the authors' checkout, and says how to get it", (t) => {
  const found = torchPython(t);
  if (!found) return;
  const script = join(dirname(TORCH_SCRIPT), 'bench_fu_authors.py');
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-authors-'));
  try {
    const run = (...args: string[]): { status: number | null; stderr: string } =>
      spawnSync(found.python, [script, ...args], { encoding: 'utf8' });
    const how = 'get it with: git clone https://github.com/JunFu1995/CLIP-AGIQA';
    const none = run('--authors', join(dir, 'nowhere'));
    assert.equal(none.status, 2);
    assert.ok(none.stderr.includes(`not a checkout of the Fu authors' code (no such folder); ${how}`), none.stderr);
    const empty = run('--authors', dir);
    assert.equal(empty.status, 2);
    assert.ok(empty.stderr.includes('(missing models/AGIQA.py, clip/model.py, clip/maple.py, config/cfg_8.yaml)'), empty.stderr);
    assert.match(run().stderr, /the following arguments are required: --authors/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('matmulPeak: chained products of a graph input by a weight, timed at each size, the best reported', async () => {
  assert.deepEqual([peakProducts(1024), peakProducts(2048), peakProducts(4096), peakProducts(32, 2 * 64 ** 3)], [16, 2, 1, 8]);
  // the graph's X = x·uᵀ·Wᵏ, summed: the same chain on vectors gives (Σx)·Σ(uᵀ·Wᵏ); a chain that ONNX Runtime folded
  // or cut short would give something else
  const n = 48;
  const x = unitVector(n, new Rng(5));
  const { u, w } = peakOperands(n);
  let row = Float64Array.from(u);
  for (let k = 0; k < 5; k++) {
    const next = new Float64Array(n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) next[j]! += row[i]! * w[i * n + j]!;
    row = next;
  }
  const want = x.reduce((a, b) => a + b, 0) * row.reduce((a, b) => a + b, 0);
  const graph = await CompiledGraph.create(peakGraph(n, 5), { threads: 1 });
  try {
    const out = (await graph.run({ x })).sum!.data[0] as number;
    assert.ok(Math.abs(out - want) < 1e-4 * Math.abs(want), `${out} against ${want}`);
    const short = (await (await CompiledGraph.create(peakGraph(n, 4), { threads: 1 })).run({ x })).sum!.data[0] as number;
    assert.ok(Math.abs(short - want) > 1e-2 * Math.abs(want), 'a chain one product short gives another sum');
  } finally {
    await graph.release();
  }
  const peak = await matmulPeak({ provider: 'cpu', threads: 1 }, { warmup: 0, iters: 1, sizes: [32, 64], work: 2 * 2 * 64 ** 3 });
  assert.deepEqual(Object.keys(peak.by_size), ['32', '64']);
  assert.equal(peak.gflop_s, Math.max(...Object.values(peak.by_size)));
  assert.equal(peak.gflop_s, peak.by_size[String(peak.size)]);
});

test("bench table: each engine's MatMul peak, and per mode GFLOP/s and its share of that engine's peak; the peer's OpenBLAS kernel", () => {
  const result: Record<string, unknown> = {
    device: 'cpu',
    torch_version: '1.13.1',
    torch_device: 'cpu',
    torch_blas_core: 'SkylakeX',
    torch_blas_core_detected: 'Prescott',
    torch_blas_core_pinned: true,
    peak_gflop_s: 200,
    peak_size: 2048,
    torch_peak_gflop_s: 100,
    fu_gflop_s: 150,
    torch_fu_gflop_s: 50,
  };
  putRates(result, '', 'fu', 8, [4]);
  putRates(result, 'torch_', 'fu', 8, [12]);
  result.fu_ratio = 3;
  putShares(result, ['forward', 'fu']);
  assert.deepEqual([result.fu_peak_share, result.torch_fu_peak_share, result.peak_ratio], [0.75, 0.5, 2]);
  assert.equal(result.forward_peak_share, undefined);
  const table = benchTable(result, ['fu']);
  assert.match(table, /onnxruntime \(cpu\) +torch 1\.13\.1 \(cpu, OpenBLAS SkylakeX\) +ratio\n/);
  assert.match(table, /MatMul peak GFLOP\/s \(2048²\) +200 +100 +2\n/);
  assert.match(table, /fu step GFLOP\/s +150 +50 +3\n/);
  assert.match(table, /fu step share of peak +75% +50%\n/);
  assert.equal(
    blasCoreNote(result),
    "(PyTorch's OpenBLAS chose its Prescott kernels (its own detection); the peer ran SkylakeX, the best this CPU supports)\n",
  );
  assert.match(blasCoreNote({ ...result, torch_blas_core_env: 'Prescott' }), /chose its Prescott kernels \(OPENBLAS_CORETYPE=Prescott\)/);
  assert.equal(blasCoreNote({ ...result, torch_blas_core_pinned: false }), '');
  // on CUDA the peer's products are cuBLAS's: no OpenBLAS kernel in the header
  assert.equal(torchHeader({ ...result, torch_device: 'cuda' }), 'torch 1.13.1 (cuda)');
});

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

test('matmulFlops: the image tower as built does the matrix-product work visionFlops counts', async () => {
  const { matmulFlops } = await import('../src/graph/graph.js');
  const { imageFeatureGraph } = await import('../src/clip/encoders.js');
  const { visionFlops } = await import('../src/clip/config.js');
  const weights = await loadClipWeights(join(sharedDir(), 'reference', 'tiny-vit-p32'));
  const g = imageFeatureGraph(weights, 3);
  assert.equal(matmulFlops(g), 3 * visionFlops(weights.config));
});
