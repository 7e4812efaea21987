/**
 * The WebGPU provider on the software adapter (Mesa's lavapipe, set up by scripts/software-vulkan.sh and named by
 * PROMPTIQA_SOFTWARE_VULKAN; see test/helpers/software-webgpu.ts): which adapter --device auto and --device webgpu
 * take, and every method's scores and gradients against the CPU's. The WebGPU work runs in child processes started
 * with the adapter's environment; this process keeps the machine's own devices (none on CI).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SOFTWARE_ADAPTER_NOTE, SOFTWARE_VULKAN_DRIVERS, type WebGpuProbe, webgpuAdapter, webgpuProblem } from '../src/graph/webgpu.js';
import { GRADIENT_BOUND, type MethodOutputs, SCORE_BOUND, compareOutputs, withinBounds } from '../src/bench/parity.js';
import { METHODS } from '../src/methods/index.js';
import { cli } from './helpers/cli.js';
import { sharedDir } from './helpers/shared.js';
import { ROOT, childResult, runChild, softwareWebgpu } from './helpers/software-webgpu.js';
import { parityOutputs } from './helpers/parity.js';

const ref = join(sharedDir(), 'reference');
const tiny = join(ref, 'tiny-vit-p32');
const images = ['wide_640x480.png', 'grey_640x480.png'].map((f) => join(ref, 'images', f));
const cliChild = join(ROOT, 'test', 'helpers', 'cli-child.ts');

test('webgpuAdapter: a GPU where the probe without software drivers makes a session, a software adapter where only the plain probe does, else the reason', () => {
  const noLoader = "Warning: Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file\nFailed to get a WebGPU adapter";
  const noAdapter = 'webgpu_context.cc:136 ... Failed to get a WebGPU adapter: No supported adapters';
  const probes = (gpu: WebGpuProbe, any: WebGpuProbe) => {
    const asked: boolean[] = [];
    const probe = (hardwareOnly: boolean): WebGpuProbe => {
      asked.push(hardwareOnly);
      return hardwareOnly ? gpu : any;
    };
    return { asked, probe };
  };
  const ok = { status: 0, output: '' };
  let p = probes(ok, ok);
  assert.deepEqual(webgpuAdapter(p.probe), { kind: 'gpu', problem: null });
  assert.deepEqual(p.asked, [true], 'a GPU found: one probe');
  p = probes({ status: 3, output: noAdapter }, ok);
  assert.deepEqual(webgpuAdapter(p.probe), { kind: 'software', problem: null });
  assert.deepEqual(p.asked, [true, false]);
  p = probes({ status: 3, output: noAdapter }, { status: 3, output: noAdapter });
  assert.deepEqual(webgpuAdapter(p.probe), {
    kind: null,
    problem: 'no WebGPU adapter: no GPU with a Vulkan (Linux), Metal (macOS) or D3D12 (Windows) driver was found',
  });
  p = probes({ status: 3, output: noLoader }, ok);
  assert.match(webgpuAdapter(p.probe).problem!, /the Vulkan loader \(libvulkan\.so\.1\) is not installed/);
  assert.deepEqual(p.asked, [true], 'no loader: no driver of any kind can be there, one probe');
  assert.equal(SOFTWARE_VULKAN_DRIVERS, '*lvp*,*swiftshader*');
});

test('a software adapter only: --device auto runs on the CPU and says why; --device webgpu works, saying once that the adapter is a software one', async (t) => {
  const env = softwareWebgpu(t);
  if (!env) return;
  const score = (device: string) =>
    runChild<undefined>(
      { file: cliChild, args: ['score', ...images, '--method', 'clip-iqa', '--model', tiny, '--device', device, '--format', 'json'] },
      env,
    );
  const cpu = await cli('score', ...images, '--method', 'clip-iqa', '--model', tiny, '--device', 'cpu', '--format', 'json');
  assert.equal(cpu.code, 0, cpu.err);
  const expected = (JSON.parse(cpu.out) as Array<{ score: number }>).map((r) => r.score);

  const auto = await score('auto');
  assert.equal(auto.code, 0, auto.stderr);
  assert.match(
    auto.stderr,
    /^--device auto: cpu \(.*; the only WebGPU adapter is a software one \(a CPU emulating a GPU, slower than the CPU provider\)\)$/m,
  );
  assert.deepEqual(
    (JSON.parse(auto.stdout) as Array<{ score: number }>).map((r) => r.score),
    expected,
    'on the CPU: the same scores bit for bit',
  );

  const webgpu = await score('webgpu');
  assert.equal(webgpu.code, 0, webgpu.stderr);
  assert.equal(webgpu.stderr.split('\n').filter((l) => l === `--device webgpu: ${SOFTWARE_ADAPTER_NOTE}`).length, 1, webgpu.stderr);
  const got = (JSON.parse(webgpu.stdout) as Array<{ score: number }>).map((r) => r.score);
  got.forEach((s, i) => assert.ok(Math.abs(s - expected[i]!) <= SCORE_BOUND, `image ${i}: webgpu ${s}, cpu ${expected[i]}`));
});

test("a GPU beside the software adapter: --device auto takes webgpu, and this process's Vulkan loader leaves the software driver out", async (t) => {
  const env = softwareWebgpu(t);
  if (!env) return;
  // the same lavapipe under a manifest name no software glob matches: to the loader's filter, a GPU driver
  const dir = mkdtempSync(join(tmpdir(), 'promptiqa-fake-gpu-'));
  try {
    copyFileSync(env.VK_DRIVER_FILES, join(dir, 'gpu_icd.json'));
    const code = (device: string) => `
      const { resolveDevice } = await import(SRC + '/graph/device.js');
      const { CompiledGraph } = await import(SRC + '/graph/runtime.js');
      const { Graph, add } = await import(SRC + '/graph/graph.js');
      const { reply } = await import(HELPER);
      const picked = resolveDevice(${JSON.stringify(device)});
      const g = new Graph('t');
      const x = g.input('x', [2]);
      g.output('y', add(x, x));
      const compiled = await CompiledGraph.create(g, { provider: picked.provider });
      const y = Array.from((await compiled.run({ x: Float32Array.of(1, 2) })).y.data);
      reply({ picked, filter: process.env.VK_LOADER_DRIVERS_DISABLE ?? null, y });`;
    // the loader's log (stderr) tells which drivers this process loaded; the probes' logs stay in their own pipes
    const loaderLog = { VK_LOADER_DEBUG: 'driver' };
    const ignored = /Driver "lvp\.json" ignored because it was disabled by env var 'VK_LOADER_DRIVERS_DISABLE'/;
    type Reply = { picked: { provider: string; why: string; note?: string }; filter: string | null; y: number[] };

    const both = await childResult<Reply>(
      { code: code('auto') },
      { ...env, ...loaderLog, VK_DRIVER_FILES: `${join(dir, 'gpu_icd.json')}:${env.VK_DRIVER_FILES}` },
    );
    assert.deepEqual(both.result.picked, { provider: 'webgpu', why: 'a WebGPU adapter was found on a GPU' });
    assert.equal(both.result.filter, SOFTWARE_VULKAN_DRIVERS);
    assert.deepEqual(both.result.y, [2, 4]);
    assert.match(both.stderr, ignored, 'the software driver was left out of this process');
    assert.doesNotMatch(both.stderr, /Driver "gpu_icd\.json" ignored/);

    // control: asked for webgpu where the software adapter is the only one, this process loads it
    const alone = await childResult<Reply>({ code: code('webgpu') }, { ...env, ...loaderLog });
    assert.deepEqual(alone.result.picked, { provider: 'webgpu', why: 'asked for', note: SOFTWARE_ADAPTER_NOTE });
    assert.equal(alone.result.filter, null);
    assert.deepEqual(alone.result.y, [2, 4]);
    assert.doesNotMatch(alone.stderr, ignored);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the Vulkan loader without any driver: --device webgpu is refused in one line, no GPU found', async (t) => {
  const env = softwareWebgpu(t);
  if (!env) return;
  const r = await runChild<undefined>(
    { file: cliChild, args: ['score', images[0]!, '--method', 'clip-iqa', '--model', tiny, '--device', 'webgpu'] },
    { ...env, VK_DRIVER_FILES: join(tmpdir(), 'promptiqa-no-such-driver.json') },
  );
  // a device missing here is not bad usage (cuda and webgpu are valid values): exit 1, one line, no pointer to --help
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no WebGPU adapter: no GPU with a Vulkan \(Linux\), Metal \(macOS\) or D3D12 \(Windows\) driver was found/);
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  assert.equal(
    webgpuProblem(() => ({ status: 0, output: '' })),
    null,
  );
});

/**
 * Every registered method (zero-shot and trainable, so a new one is covered without a change here) on webgpu
 * against the CPU, on the tiny reference CLIPs (test/helpers/parity.ts): its scores on two images within 1e-4
 * absolute, and for a trainable one the loss and every gradient of one training step within 1e-3 relative: the
 * loss to itself, each gradient tensor's largest difference to that tensor's largest magnitude (measured on
 * lavapipe: scores within 1.2e-6, gradients within 3.2e-5). Two checks keep this from passing vacuously: some
 * value differs at all (the WebGPU kernels ran, not the CPU's), and parameters 5% off give differences beyond both
 * bounds in every trainable method.
 */
test('every method scores and trains on webgpu as on the CPU (software adapter, tiny references)', async (t) => {
  const env = softwareWebgpu(t);
  if (!env) return;
  const [gpu, cpu] = await Promise.all([
    childResult<MethodOutputs[]>({ file: join(ROOT, 'test', 'helpers', 'parity-child.ts'), args: ['webgpu'] }, env),
    parityOutputs('cpu'),
  ]);
  assert.deepEqual(
    cpu.map((m) => m.method),
    METHODS.map((m) => m.info.name),
  );
  const diffs = compareOutputs(cpu, gpu.result);
  for (const d of diffs) {
    assert.ok(
      withinBounds(d),
      `${d.method}: webgpu against cpu: ${JSON.stringify(d)} (bounds: scores ${SCORE_BOUND}, loss and gradients ${GRADIENT_BOUND})`,
    );
    if (METHODS.find((m) => m.info.name === d.method)!.info.trainable) {
      assert.ok(d.gradient !== undefined, `${d.method}: no training step compared`);
      assert.ok(d.residentLoss !== undefined, `${d.method}: no resident training compared`);
      assert.equal(gpu.result.find((m) => m.method === d.method)!.resident!.onGpu, true, `${d.method}: the training state left the GPU`);
      assert.equal(cpu.find((m) => m.method === d.method)!.resident!.onGpu, false);
    }
  }
  assert.ok(
    diffs.some((d) => d.anyDifference),
    'webgpu computed every value bit for bit as the CPU did: the WebGPU kernels did not run',
  );

  const trainable = METHODS.filter((m) => m.info.trainable);
  const off = compareOutputs(
    cpu.filter((m) => trainable.some((x) => x.info.name === m.method)),
    await parityOutputs('cpu', 1.05, trainable),
  );
  for (const d of off) {
    assert.ok(d.score > SCORE_BOUND, `${d.method}: parameters 5% off moved the scores by ${d.score} only`);
    assert.ok(
      d.gradient! > GRADIENT_BOUND && d.loss! > GRADIENT_BOUND && d.residentLoss! > GRADIENT_BOUND,
      `${d.method}: parameters 5% off passed the gradient bound: ${JSON.stringify(d)}`,
    );
  }
});
