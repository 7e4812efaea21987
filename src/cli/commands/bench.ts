/** `promptiqa bench`: full-size CLIP image encoders with random weights, against the PyTorch peer. */
import { Option } from 'commander';
import { ARCHS, archConfig, visionFlops } from '../../clip/config.js';
import { UsageError, fmt, formatTable, jsonLine } from '../io.js';
import { defaultThreads, opt, parseNonNegativeInt, parsePositiveInt } from '../options.js';
import { examples, type Register } from '../context.js';

const MODES = ['forward', 'train', 'fu'] as const;

interface BenchOptions {
  arch: string;
  batch: number;
  threads?: number;
  iters: number;
  warmup: number;
  mode: string;
  prompts: number;
  torch: boolean;
  python?: string;
  device: 'cpu' | 'cuda';
  json?: boolean;
  quiet?: boolean;
}

export function parseModes(value: string): string[] {
  const modes = [...new Set(value.split(',').map((s) => s.trim()).filter(Boolean))];
  const bad = modes.filter((m) => !(MODES as readonly string[]).includes(m));
  if (modes.length === 0 || bad.length > 0) {
    throw new UsageError(`--mode: unknown mode ${bad.map((b) => `'${b}'`).join(', ') || "''"}; choose from ${MODES.join(', ')} (comma-separated)`);
  }
  return MODES.filter((m) => modes.includes(m));
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

export const register: Register = (program, { io }) => {
  program
    .command('bench')
    .summary('time CLIP image encoders (random weights) on ONNX Runtime, against PyTorch')
    .description(
      'Builds a CLIP of the chosen architecture with random weights and times, at the given batch size (median of --iters ' +
        'runs after --warmup): forward = image features; train = forward + backward to deep visual prompts at every layer ' +
        '(--prompts tokens each; CLIP frozen), the work of one prompt-learning step; fu = one full Adam step of the ' +
        'two-branch Fu prompt learner (text encoder included). Reports images/s and GFLOP/s (matrix products only). ' +
        'Then, unless --no-torch, runs the PyTorch peer (scripts/bench_torch.py: the same model in PyTorch, fp32, CPU) ' +
        'with the same settings and adds torch_* figures and ratios (ours / PyTorch; above 1 = faster). The peer needs a ' +
        'Python with torch: `apt-get install python3-torch` (Debian/Ubuntu) or `pip install torch`; without one it is ' +
        'skipped with a note.',
    )
    .addOption(new Option('--arch <name>', 'architecture').choices(Object.keys(ARCHS)).default('vit-b-32'))
    .addOption(opt.batch(8))
    .addOption(opt.threads())
    .addOption(new Option('--iters <n>', 'timed runs (the median is reported)').argParser(parsePositiveInt).default(3))
    .addOption(new Option('--warmup <n>', 'untimed runs first (a training graph needs two before its memory arena settles)').argParser(parseNonNegativeInt).default(2))
    .addOption(new Option('--mode <list>', 'comma-separated subset of forward,train,fu').default('forward,train'))
    .addOption(new Option('--prompts <n>', 'visual prompt tokens per layer in train and fu').argParser(parsePositiveInt).default(8))
    .addOption(new Option('--no-torch', 'do not run the PyTorch peer'))
    .addOption(new Option('--python <path>', 'Python with torch for the peer (default: the first of python3, /usr/bin/python3 that imports torch)'))
    .addOption(opt.device())
    .addOption(opt.json())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        'promptiqa bench --arch vit-b-32 --batch 8 --threads 2 --json',
        'promptiqa bench --arch vit-b-16 --batch 8 --iters 5 --warmup 2 --mode forward,train,fu',
        'promptiqa bench --arch vit-l-14 --batch 4 --no-torch',
        '',
        'The PyTorch peer: apt-get install python3-torch   (or: pip install torch)',
      ),
    )
    .action(async (o: BenchOptions) => {
      const modes = parseModes(o.mode);
      const threads = o.threads ?? defaultThreads();
      const note = (s: string): void => {
        if (!o.quiet) io.stderr(s + '\n');
      };
      const [{ randomClipWeights }, { benchVision }] = await Promise.all([import('../../clip/weights.js'), import('../../bench/vision.js')]);
      const config = archConfig(o.arch);
      const weights = randomClipWeights(config, 0, { text: modes.includes('fu') });
      const runtime = { provider: o.device, threads };
      const result: Record<string, unknown> = {
        arch: o.arch, batch: o.batch, threads, device: o.device, prompts: o.prompts, warmup: o.warmup, iters: o.iters, modes,
      };

      const visionModes = modes.filter((m) => m !== 'fu');
      if (visionModes.length > 0) {
        note(`onnxruntime: ${visionModes.join(' + ')}, ${o.arch}, batch ${o.batch}, ${threads} thread(s) …`);
        Object.assign(result, await benchVision(weights, { batch: o.batch, prompts: o.prompts, warmup: o.warmup, iters: o.iters, runtime, modes: new Set(visionModes) }));
      }
      if (modes.includes('fu')) {
        note(`onnxruntime: fu, ${o.arch}, batch ${o.batch} …`);
        const { benchFu } = await import('../../bench/fu.js');
        const fu = await benchFu(weights, { batch: o.batch, warmup: o.warmup, iters: o.iters, runtime });
        result.fu_train_img_s = fu.fu_train_img_s;
        result.fu_s = fu.fu_s;
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
              python: found.python, arch: o.arch, batch: o.batch, threads, warmup: o.warmup, iters: o.iters, modes, prompts: o.prompts,
              onStderr: o.quiet ? undefined : (s) => io.stderr(s),
            });
            result.torch_version = typeof t.torch_version === 'string' ? t.torch_version : found.version;
            if (num(t.threads) !== undefined) result.torch_threads = t.threads;
            const pairs: Array<[string, string, string, string]> = [
              ['forward_img_s', 'forward_s', 'torch_forward_img_s', 'forward_ratio'],
              ['train_img_s', 'train_s', 'torch_train_img_s', 'train_ratio'],
              ['fu_train_img_s', 'fu_s', 'torch_fu_train_img_s', 'fu_ratio'],
            ];
            for (const [ours, secs, theirs, ratio] of pairs) {
              const v = num(t[ours]);
              if (v === undefined) continue;
              result[theirs] = v;
              if (Array.isArray(t[secs])) result[`torch_${secs}`] = t[secs];
              const mine = num(result[ours]);
              if (mine !== undefined) result[ratio] = mine / v;
            }
            // the same operation counts as ours, so GFLOP/s compare directly
            const fwd = num(result.torch_forward_img_s);
            const trn = num(result.torch_train_img_s);
            if (fwd !== undefined) result.torch_forward_gflop_s = (visionFlops(config) * fwd) / 1e9;
            if (trn !== undefined) result.torch_train_gflop_s = (2 * visionFlops(config, o.prompts) * trn) / 1e9;
          } catch (err) {
            result.torch_error = (err as Error).message;
            note(`PyTorch peer failed: ${result.torch_error as string}`);
          }
        }
      }

      if (o.json) {
        io.stdout(jsonLine(result));
        return;
      }
      const hasTorch = result.torch_version !== undefined;
      const rows: string[][] = [];
      const row = (label: string, ours: string, theirs: string, ratio: string, digits = 2): void => {
        const a = num(result[ours]);
        if (a === undefined && num(result[theirs]) === undefined) return;
        rows.push([label, fmt(a, digits), ...(hasTorch ? [fmt(num(result[theirs]), digits), fmt(num(result[ratio]), 2)] : [])]);
      };
      row('forward img/s', 'forward_img_s', 'torch_forward_img_s', 'forward_ratio');
      row('forward GFLOP/s', 'forward_gflop_s', 'torch_forward_gflop_s', 'forward_ratio', 1);
      row('train img/s', 'train_img_s', 'torch_train_img_s', 'train_ratio');
      row('train GFLOP/s', 'train_gflop_s', 'torch_train_gflop_s', 'train_ratio', 1);
      row('fu step img/s', 'fu_train_img_s', 'torch_fu_train_img_s', 'fu_ratio');
      io.stdout(
        `${o.arch}, batch ${o.batch}, ${threads} thread(s), ${o.device}, median of ${o.iters} after ${o.warmup} warm-up\n` +
          formatTable(['', 'onnxruntime', ...(hasTorch ? [`torch ${result.torch_version as string}`, 'ratio'] : [])], rows),
      );
      if (!hasTorch && o.torch) io.stdout(`(no PyTorch figures: ${(result.torch_skipped ?? result.torch_error) as string})\n`);
    });
};
