/** `promptiqa bench`: full-size CLIP image encoders with random weights, against the PyTorch peer. */
import { type Provider, type RuntimeOptions, spinsBy } from '../../graph/runtime.js';
import { DEVICE_TYPES } from '../../graph/device.js';
import { cpus } from 'node:os';
import { Option } from 'commander';
import { ARCHS, archConfig, visionFlops } from '../../clip/config.js';
import { UsageError, fmt, formatTable, jsonLine } from '../io.js';
import { defaultThreads, opt, parseNonNegativeInt, parsePositiveInt } from '../options.js';
import { examples, type Register } from '../context.js';
import { rateSummary } from '../../bench/timing.js';
import { warmupRuns } from '../../bench/profile.js';
import { type Placement, type PlacementDetail, describePlacement } from '../../graph/placement.js';

const MODES = ['forward', 'train', 'fu'] as const;
export type Mode = (typeof MODES)[number];

/**
 * Each mode's JSON keys: its median img/s (with `_min` and `_max` beside it: the slowest and fastest run), its
 * per-run seconds, the ratio of medians, its GFLOP/s (matrix products, from the median) and that over the
 * engine's own MatMul peak. The PyTorch peer's figures carry the same keys prefixed `torch_` (its share is of
 * its own peak, torch.mm's).
 */
const FIGURES: Record<Mode, { rate: string; seconds: string; ratio: string; gflops: string; share: string; label: string }> = {
  forward: {
    rate: 'forward_img_s',
    seconds: 'forward_s',
    ratio: 'forward_ratio',
    gflops: 'forward_gflop_s',
    share: 'forward_peak_share',
    label: 'forward',
  },
  train: {
    rate: 'train_img_s',
    seconds: 'train_s',
    ratio: 'train_ratio',
    gflops: 'train_gflop_s',
    share: 'train_peak_share',
    label: 'train',
  },
  fu: { rate: 'fu_train_img_s', seconds: 'fu_s', ratio: 'fu_ratio', gflops: 'fu_gflop_s', share: 'fu_peak_share', label: 'fu step' },
};

interface BenchOptions {
  arch: string;
  batch: number;
  threads?: number;
  spin: 'on' | 'off' | 'auto';
  iters: number;
  warmup: number;
  mode: string;
  prompts: number;
  torch: boolean;
  placement: boolean;
  peak: boolean;
  python?: string;
  device: Provider;
  json?: boolean;
  quiet?: boolean;
}

export function parseModes(value: string): Mode[] {
  const modes = [
    ...new Set(
      value
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  ];
  const bad = modes.filter((m) => !(MODES as readonly string[]).includes(m));
  if (modes.length === 0 || bad.length > 0) {
    throw new UsageError(
      `--mode: unknown mode ${bad.map((b) => `'${b}'`).join(', ') || "''"}; choose from ${MODES.join(', ')} (comma-separated)`,
    );
  }
  return MODES.filter((m) => modes.includes(m));
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * Puts a mode's node placement into the JSON: `placement_<mode>` (nodes by provider), `placement_<mode>_copies`
 * (copies between providers) and, on a GPU, `placement_<mode>_cpu_ops` (the ops of the nodes that ran on the CPU).
 */
export function putPlacement(result: Record<string, unknown>, mode: Mode, device: string, p: Readonly<PlacementDetail>): void {
  result[`placement_${mode}`] = { ...p.nodes };
  result[`placement_${mode}_copies`] = p.copies;
  const cpu = DEVICE_TYPES.cpu.profileName;
  if (device !== 'cpu' && p.ops[cpu] && Object.keys(p.ops[cpu]).length > 0) result[`placement_${mode}_cpu_ops`] = { ...p.ops[cpu] };
}

/** The lines under the table that say where each mode's nodes ran: "forward nodes: 812 webgpu, 14 cpu (Gather 12, Range 2)". */
export function placementLines(result: Readonly<Record<string, unknown>>, modes: readonly Mode[]): string {
  const cpu = DEVICE_TYPES.cpu.profileName;
  const device = typeof result.device === 'string' ? result.device : undefined;
  let out = '';
  for (const m of modes) {
    const nodes = result[`placement_${m}`] as Placement | undefined;
    if (!nodes) continue;
    const cpuOps = result[`placement_${m}_cpu_ops`] as Record<string, number> | undefined;
    const copies = num(result[`placement_${m}_copies`]) ?? 0;
    out += `${m} nodes: ${describePlacement({ nodes, ops: cpuOps ? { [cpu]: cpuOps } : {}, copies }, device)}\n`;
  }
  return out;
}

/** Whether the peer ran on another device than ours (a GPU run compared with PyTorch on the CPU). */
function torchElsewhere(result: Readonly<Record<string, unknown>>): boolean {
  return (
    typeof result.torch_device === 'string' && typeof result.device === 'string' && result.device !== 'cpu' && result.torch_device === 'cpu'
  );
}

/** The peer's column header: its torch, device and, on the CPU, the OpenBLAS kernel it ran ("torch 1.13.1 (cpu, OpenBLAS Zen)"). */
export function torchHeader(result: Readonly<Record<string, unknown>>): string {
  const where = [
    typeof result.torch_device === 'string' ? result.torch_device : undefined,
    result.torch_device !== 'cuda' && typeof result.torch_blas_core === 'string' ? `OpenBLAS ${result.torch_blas_core}` : undefined,
  ].filter(Boolean);
  return `torch ${result.torch_version as string}${where.length > 0 ? ` (${where.join(', ')})` : ''}`;
}

/** The line under the table where the peer replaced the OpenBLAS kernel OpenBLAS chose; '' otherwise. */
export function blasCoreNote(result: Readonly<Record<string, unknown>>): string {
  if (result.torch_blas_core_pinned !== true) return '';
  const chose = result.torch_blas_core_detected as string;
  const why = typeof result.torch_blas_core_env === 'string' ? `OPENBLAS_CORETYPE=${result.torch_blas_core_env}` : 'its own detection';
  return `(PyTorch's OpenBLAS chose its ${chose} kernels (${why}); the peer ran ${result.torch_blas_core as string}, the best this CPU supports)\n`;
}

/**
 * Puts each mode's share of its engine's MatMul peak (`<mode>_peak_share`, and `torch_<mode>_peak_share` of the peer's
 * own peak), and the ratio of the two peaks (`peak_ratio`), where the figures are there.
 */
export function putShares(result: Record<string, unknown>, modes: readonly Mode[]): void {
  for (const prefix of ['', 'torch_']) {
    const peak = num(result[`${prefix}peak_gflop_s`]);
    if (peak === undefined) continue;
    for (const m of modes) {
      const gflops = num(result[prefix + FIGURES[m].gflops]);
      if (gflops !== undefined) result[prefix + FIGURES[m].share] = gflops / peak;
    }
  }
  const ours = num(result.peak_gflop_s);
  const theirs = num(result.torch_peak_gflop_s);
  if (ours !== undefined && theirs !== undefined) result.peak_ratio = ours / theirs;
}

/**
 * The table of a bench result: the MatMul peak of each engine, then per mode img/s as "median (min–max)" over the
 * timed runs, GFLOP/s and the share of the peak (from the medians), ratios of ours to the peer's.
 */
export function benchTable(result: Readonly<Record<string, unknown>>, modes: readonly Mode[]): string {
  const hasTorch = result.torch_version !== undefined;
  const rows: string[][] = [];
  const range = (key: string): string => {
    const med = num(result[key]);
    return med === undefined ? '' : `${fmt(med, 2)} (${fmt(num(result[`${key}_min`]), 2)}–${fmt(num(result[`${key}_max`]), 2)})`;
  };
  const gflop = (key: string): string => fmt(num(result[key]), 1);
  const percent = (key: string): string => {
    const v = num(result[key]);
    return v === undefined ? '' : `${(100 * v).toFixed(0)}%`;
  };
  const row = (label: string, ours: string, ratio: string | undefined, cell: (key: string) => string): void => {
    const theirs = `torch_${ours}`;
    if (num(result[ours]) === undefined && num(result[theirs]) === undefined) return;
    rows.push([label, cell(ours), ...(hasTorch ? [cell(theirs), ratio ? fmt(num(result[ratio]), 2) : ''] : [])]);
  };
  const size = num(result.peak_size);
  row(`MatMul peak GFLOP/s${size ? ` (${size}²)` : ''}`, 'peak_gflop_s', 'peak_ratio', gflop);
  for (const m of modes) {
    const f = FIGURES[m];
    row(`${f.label} img/s`, f.rate, f.ratio, range);
    row(`${f.label} GFLOP/s`, f.gflops, f.ratio, gflop);
    row(`${f.label} share of peak`, f.share, undefined, percent);
  }
  const ours = typeof result.device === 'string' ? `onnxruntime (${result.device})` : 'onnxruntime';
  const ratio = torchElsewhere(result) ? 'ratio (vs torch on cpu)' : 'ratio';
  return formatTable(['', ours, ...(hasTorch ? [torchHeader(result), ratio] : [])], rows);
}

/** Puts each mode's img/s (median, `_min`, `_max`) from its per-run seconds, under `prefix` + the mode's rate key. */
export function putRates(result: Record<string, unknown>, prefix: string, mode: Mode, batch: number, seconds: readonly number[]): void {
  const r = rateSummary(batch, seconds);
  const key = prefix + FIGURES[mode].rate;
  result[key] = r.median;
  result[`${key}_min`] = r.min;
  result[`${key}_max`] = r.max;
}

export const register: Register = (program, { io }) => {
  program
    .command('bench')
    .summary('time CLIP image encoders (random weights) on ONNX Runtime, against PyTorch')
    .description(
      'Builds a CLIP of the chosen architecture with random weights and times, at the given batch size (median, min and ' +
        'max of --iters runs after --warmup): forward = image features; train = forward + backward to deep visual prompts at every layer ' +
        '(--prompts tokens each; CLIP frozen), the work of one prompt-learning step; fu = one full Adam step of the ' +
        'two-branch Fu prompt learner (both text encoders, two vision passes). Reports images/s and GFLOP/s (matrix products only), ' +
        "and, unless --no-peak, ONNX Runtime's own float32 MatMul peak with the same threads and provider and each mode's share of it " +
        '(how close to the ceiling it runs). ' +
        'Under the table, where each graph ran: how many nodes each ONNX Runtime provider ran (from a profile of the first, ' +
        'untimed run; ops a GPU provider lacks run on the CPU). ' +
        'Then, unless --no-torch, runs the PyTorch peer (scripts/bench_torch.py: the same models in PyTorch, fp32; its fu ' +
        "step computes what the Fu authors' code trains) with the same settings and adds torch_* figures and ratios of the " +
        'medians (ours / PyTorch; above 1 = faster). With --device cuda or webgpu the peer runs on CUDA where its torch has it, ' +
        'else on the CPU, and the table says so. The peer runs the best OpenBLAS kernel its CPU supports where OpenBLAS chose a ' +
        'weaker one (scripts/blas_core.py; the table names the kernel), and times torch.mm for its own peak. The peer needs a ' +
        'Python with torch: `apt-get install python3-torch` (Debian/Ubuntu) or `pip install torch`; without one it is ' +
        'skipped with a note.',
    )
    .addOption(new Option('--arch <name>', 'architecture').choices(Object.keys(ARCHS)).default('vit-b-32'))
    .addOption(opt.batch(8))
    .addOption(opt.threads())
    .addOption(new Option('--iters <n>', 'timed runs (median, min and max are reported)').argParser(parsePositiveInt).default(3))
    .addOption(
      new Option('--warmup <n>', 'untimed runs first (a training graph needs two before its memory arena settles)')
        .argParser(parseNonNegativeInt)
        .default(2),
    )
    .addOption(new Option('--mode <list>', 'comma-separated subset of forward,train,fu').default('forward,train'))
    .addOption(new Option('--prompts <n>', 'visual prompt tokens per layer in train and fu').argParser(parsePositiveInt).default(8))
    .addOption(new Option('--no-torch', 'do not run the PyTorch peer'))
    .addOption(
      new Option(
        '--no-peak',
        "do not measure each engine's float32 MatMul peak (the best of large square products, with the same threads) nor each mode's share of it",
      ),
    )
    .addOption(
      new Option(
        '--no-placement',
        'do not profile the first run of each graph to count the nodes each execution provider ran (that run is a warm-up: with --warmup 0, one is made anyway, by both engines)',
      ),
    )
    .addOption(
      new Option('--python <path>', 'Python with torch for the peer (default: the first of python3, /usr/bin/python3 that imports torch)'),
    )
    .addOption(opt.device())
    .addOption(
      new Option(
        '--spin <when>',
        "whether ONNX Runtime's idle threads spin: on, off, or auto (where the load leaves a core for each thread, as scoring and training decide)",
      )
        .choices(['on', 'off', 'auto'])
        .default('auto'),
    )
    .addOption(opt.json())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        'promptiqa bench --arch vit-b-32 --batch 8 --threads 2 --json',
        'promptiqa bench --arch vit-b-16 --batch 8 --iters 5 --warmup 2 --mode forward,train,fu',
        'promptiqa bench --arch vit-l-14 --batch 4 --no-torch',
        'promptiqa bench --arch rn50 --batch 8   # ResNet: train times the backward to the pixels',
        'promptiqa bench --arch vit-b-32 --batch 64 --mode forward,train,fu --device webgpu --json',
        '',
        'The PyTorch peer: apt-get install python3-torch   (or: pip install torch)',
      ),
    )
    .action(async (o: BenchOptions) => {
      const modes = parseModes(o.mode);
      if (archConfig(o.arch).resnet && modes.includes('fu')) {
        throw new UsageError(`--mode fu needs a ViT arch: ${o.arch} is a ResNet, which takes no visual prompt tokens`);
      }
      const threads = o.threads ?? defaultThreads();
      // the profiled run of each graph is an untimed one: with --warmup 0 one is added, for the peer too
      const warmup = warmupRuns(o.warmup, o.placement);
      const note = (s: string): void => {
        if (!o.quiet) io.stderr(s + '\n');
      };
      const [{ randomClipWeights }, { benchVision }] = await Promise.all([
        import('../../clip/weights.js'),
        import('../../bench/vision.js'),
      ]);
      const config = archConfig(o.arch);
      const weights = randomClipWeights(config, 0, { text: modes.includes('fu') });
      const runtime: RuntimeOptions = { provider: o.device, threads, spinning: o.spin === 'auto' ? 'auto' : o.spin === 'on' };
      const result: Record<string, unknown> = {
        arch: o.arch,
        batch: o.batch,
        spinning: spinsBy(runtime),
        threads,
        device: o.device,
        // the machine every figure was taken on
        cpu: cpus()[0]?.model.trim() ?? 'unknown',
        prompts: o.prompts,
        warmup,
        iters: o.iters,
        modes,
      };

      const { matmulPeak, PEAK_SIZES } = await import('../../bench/peak.js');
      if (o.peak) {
        note(`onnxruntime: MatMul peak (${PEAK_SIZES.join(', ')} square), ${threads} thread(s) …`);
        const peak = await matmulPeak(runtime, { warmup, iters: o.iters });
        result.peak_gflop_s = peak.gflop_s;
        result.peak_size = peak.size;
        result.peak_gflop_s_by_size = peak.by_size;
      }

      // where each mode's nodes ran (with --placement, the default)
      const placements: Partial<Record<Mode, PlacementDetail>> = {};
      const visionModes = modes.filter((m) => m !== 'fu');
      if (visionModes.length > 0) {
        note(`onnxruntime: ${visionModes.join(' + ')}, ${o.arch}, batch ${o.batch}, ${threads} thread(s) …`);
        const { placement_forward, placement_train, ...figures } = await benchVision(weights, {
          batch: o.batch,
          prompts: o.prompts,
          warmup,
          iters: o.iters,
          runtime,
          modes: new Set(visionModes),
          placement: o.placement,
        });
        Object.assign(result, figures);
        placements.forward = placement_forward;
        placements.train = placement_train;
      }
      if (modes.includes('fu')) {
        note(`onnxruntime: fu, ${o.arch}, batch ${o.batch} …`);
        const { benchFu } = await import('../../bench/fu.js');
        const fu = await benchFu(weights, { batch: o.batch, warmup, iters: o.iters, runtime, placement: o.placement });
        result.fu_train_img_s = fu.fu_train_img_s;
        result.fu_gflop_s = fu.fu_gflop_s;
        result.fu_s = fu.fu_s;
        placements.fu = fu.placement_fu;
      }
      for (const m of modes) {
        putRates(result, '', m, o.batch, result[FIGURES[m].seconds] as number[]);
        const where = placements[m];
        if (where) putPlacement(result, m, o.device, where);
      }

      if (o.torch) {
        const { findTorchPython, runTorchBench } = await import('../lib/torch.js');
        const found = findTorchPython(o.python ? [o.python] : undefined);
        if (!found) {
          const tried = o.python ?? 'python3, /usr/bin/python3';
          result.torch_skipped = `no Python with torch (tried ${tried}); install it with apt-get install python3-torch`;
          note(`PyTorch peer skipped: ${result.torch_skipped as string}`);
        } else {
          note(`PyTorch ${found.version} (${found.python}): ${modes.join(' + ')} …`);
          try {
            const t = await runTorchBench({
              python: found.python,
              arch: o.arch,
              batch: o.batch,
              threads,
              warmup,
              iters: o.iters,
              modes,
              prompts: o.prompts,
              device: o.device,
              peakSizes: o.peak ? PEAK_SIZES : [],
              onStderr: o.quiet ? undefined : (s) => io.stderr(s),
            });
            result.torch_version = t.torchVersion ?? found.version;
            result.torch_device = t.device ?? 'cpu';
            if (t.gpu !== undefined) result.torch_gpu = t.gpu;
            if (t.threads !== undefined) result.torch_threads = t.threads;
            if (t.blas !== undefined) result.torch_blas = t.blas;
            if (t.blasThreads !== undefined) result.torch_blas_threads = t.blasThreads;
            if (t.blasCore !== undefined) result.torch_blas_core = t.blasCore;
            if (t.blasCoreDetected !== undefined) result.torch_blas_core_detected = t.blasCoreDetected;
            if (t.blasCoreEnv !== undefined) result.torch_blas_core_env = t.blasCoreEnv;
            if (t.blasCorePinned !== undefined) result.torch_blas_core_pinned = t.blasCorePinned;
            if (t.blasCheck !== undefined) result.torch_blas_check = t.blasCheck;
            if (t.peakGflops !== undefined) result.torch_peak_gflop_s = t.peakGflops;
            if (t.peakSize !== undefined) result.torch_peak_size = t.peakSize;
            for (const m of modes) {
              const secs = t.seconds[m]!;
              putRates(result, 'torch_', m, o.batch, secs);
              result[`torch_${FIGURES[m].seconds}`] = secs;
              result[FIGURES[m].ratio] = (result[FIGURES[m].rate] as number) / (result[`torch_${FIGURES[m].rate}`] as number);
            }
            // the same operation counts as ours, so GFLOP/s compare directly
            const fwd = num(result.torch_forward_img_s);
            const trn = num(result.torch_train_img_s);
            const fus = num(result.torch_fu_train_img_s);
            if (fwd !== undefined) result.torch_forward_gflop_s = (visionFlops(config) * fwd) / 1e9;
            if (trn !== undefined) result.torch_train_gflop_s = (2 * visionFlops(config, o.prompts) * trn) / 1e9;
            if (fus !== undefined) {
              // the peer's Fu learners take --prompts tokens; the step's work per image at this batch
              const { fuStepFlops, fuDefaults } = await import('../../bench/fu.js');
              const flops = fuStepFlops(config, o.batch, { ...fuDefaults(), nVisual: o.prompts });
              result.torch_fu_gflop_s = ((flops / o.batch) * fus) / 1e9;
            }
          } catch (err) {
            result.torch_error = (err as Error).message;
            note(`PyTorch peer failed: ${result.torch_error as string}`);
          }
        }
      }

      putShares(result, modes);

      if (o.json) {
        io.stdout(jsonLine(result));
        return;
      }
      const hasTorch = result.torch_version !== undefined;
      io.stdout(
        `${o.arch}, batch ${o.batch}, ${threads} thread(s) (${result.spinning ? 'spinning' : 'sleeping'} when idle), ${o.device} (${result.cpu as string}), ${o.iters} timed run(s) after ${warmup} warm-up: median (min–max)\n` +
          benchTable(result, modes) +
          placementLines(result, modes) +
          blasCoreNote(result),
      );
      if (!hasTorch && o.torch) io.stdout(`(no PyTorch figures: ${(result.torch_skipped ?? result.torch_error) as string})\n`);
      if (hasTorch && torchElsewhere(result)) {
        io.stdout(`(PyTorch ran on the CPU: its torch has no CUDA; the ratios compare ${o.device} with PyTorch on the CPU)\n`);
      }
    });
};
