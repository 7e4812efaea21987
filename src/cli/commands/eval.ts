/** `promptiqa eval`: scores a dataset with a method and reports the agreement with MOS. */
import type { Provider } from '../../graph/runtime.js';
import { Option } from 'commander';
import type { EvalOptions, EvalReport } from '../../eval/evaluate.js';
import { UsageError, fmt, formatPairs, jsonLine } from '../io.js';
import { opt } from '../options.js';
import { toCsv } from '../../util/csv.js';
import { FIGURES } from '../../eval/metrics.js';
import { createProgress } from '../progress.js';
import { checkDataset, checkMethodName } from '../lib/names.js';
import { warningLines } from '../lib/warnings.js';
import { examples, type Register } from '../context.js';

interface EvalCliOptions {
  method: string;
  checkpoint?: string;
  model?: string;
  dataset: string;
  root: string;
  labelFile?: string;
  imageCol?: string;
  mosCol?: string;
  promptCol?: string;
  allowOutsideRoot?: boolean;
  allowExtraTensors?: boolean;
  exifOrientation?: boolean;
  target?: string;
  split: 'all' | 'test';
  seed?: number;
  ratios?: [number, number, number];
  splitBy?: 'image' | 'group' | 'official';
  limit?: number;
  out: string;
  batch?: number;
  /** --option key=value, as typed (the method's schema reads them) */
  methodOptions?: Record<string, string>;
  format: 'table' | 'json' | 'csv';
  device: Provider;
  threads?: number;
  json?: boolean;
  quiet?: boolean;
  /** false with --no-cache */
  cache: boolean;
}

export const register: Register = (program, { io }) => {
  program
    .command('eval')
    .summary('evaluate a method on a dataset: SRCC, KRCC, PLCC, RMSE, report and plot')
    .description(
      'Scores the images of a dataset (all of them, or the test side of a seeded split) and compares with the MOS: SRCC, ' +
        'KRCC, PLCC raw and after the 4-parameter logistic fit, RMSE. Writes a JSON report (with the protocol, the per-image ' +
        'scores and the images that failed) and an SVG scatter plot to --out, which is checked before any work. A trained ' +
        'method needs --checkpoint; zero-shot methods need only --model.\n\n' +
        "With --checkpoint, --split test is the test side of the training run's own split, rebuilt from what the checkpoint " +
        'records (unit, shares, seed, round, --limit) and checked against its digest of the test images, so the figures are ' +
        'those `train` reported; --seed, --limit, --ratios and --split-by are then not used (a note says so), and a dataset ' +
        'whose images differ is refused. Without a checkpoint they define the split.\n\n' +
        'Formats: table (default), json (the figures, protocol and notes; as --json), csv (the per-image file, mos, score, ' +
        'for `promptiqa metrics`).',
    )
    .addOption(opt.method().makeOptionMandatory())
    .addOption(opt.checkpoint())
    .addOption(opt.model())
    .addOption(opt.dataset().makeOptionMandatory())
    .addOption(opt.root().makeOptionMandatory())
    .addOption(opt.labelFile())
    .addOption(opt.imageCol())
    .addOption(opt.mosCol())
    .addOption(opt.promptCol())
    .addOption(opt.allowOutsideRoot())
    .addOption(opt.allowExtraTensors())
    .addOption(opt.exifOrientation())
    .addOption(opt.target())
    .addOption(new Option('--split <which>', 'all images, or the test side of the split').choices(['all', 'test']).default('all'))
    .addOption(opt.seed())
    .addOption(opt.ratios())
    .addOption(opt.splitBy())
    .addOption(opt.limit())
    .addOption(opt.out())
    .addOption(opt.batch())
    .addOption(opt.methodOption())
    .addOption(opt.format(['table', 'json', 'csv'], 'table'))
    .addOption(opt.device())
    .addOption(opt.threads())
    .addOption(opt.noCache())
    .addOption(opt.json())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        'promptiqa eval --method clip-iqa --model openai/clip-vit-base-patch32 --dataset agiqa-3k --root ./AGIQA-3K --out runs/eval-clip-iqa',
        'promptiqa eval --method tang --checkpoint runs/tang --dataset agiqa-3k --root ./AGIQA-3K --split test --out runs/tang/eval',
        'promptiqa eval --method tang --checkpoint runs/tang --dataset agiqa-3k --root ./AGIQA-3K --format csv --out runs/tang/eval-all > scores.csv',
        'promptiqa eval --method clip-iqa --dataset csv --root ./my-set --label-file labels.csv --json --out runs/my-set',
      ),
    )
    .action(async (o: EvalCliOptions) => {
      if (o.json && o.format !== 'table' && o.format !== 'json')
        throw new UsageError(`--json and --format ${o.format} disagree: give one of them`);
      const format = o.json ? 'json' : o.format;
      checkDataset(o.dataset);
      await checkMethodName(o.method, o);
      const progress = createProgress(io, o.quiet);
      let started = false;
      const opts: EvalOptions = {
        method: o.method,
        model: o.model,
        checkpoint: o.checkpoint,
        dataset: o.dataset,
        root: o.root,
        labelFile: o.labelFile,
        imageCol: o.imageCol,
        mosCol: o.mosCol,
        promptCol: o.promptCol,
        allowOutsideRoot: o.allowOutsideRoot,
        applyExifOrientation: o.exifOrientation,
        allowExtraTensors: o.allowExtraTensors === true,
        target: o.target,
        split: o.split,
        splitBy: o.splitBy,
        ratios: o.ratios,
        seed: o.seed,
        limit: o.limit,
        out: o.out,
        batchSize: o.batch,
        methodOptions: o.methodOptions,
        threads: o.threads,
        device: o.device,
        ...(o.cache ? {} : { cache: false as const }),
        onWarning: (message, cases) => {
          for (const line of warningLines(message, cases)) progress.note(line, true);
        },
        onEvent: (e: { done: number; total: number }) => {
          if (!started) {
            progress.start(e.total, o.method);
            started = true;
          }
          progress.update(e.done);
        },
      };
      const { evaluate } = await import('../../eval/evaluate.js');
      let report: EvalReport;
      try {
        report = await evaluate(opts);
      } finally {
        progress.stop();
      }
      if (report.failed.length > 0 && !o.quiet) {
        io.stderr(`${report.failed.length} image(s) could not be scored (listed in ${report.reportPath})\n`);
      }
      if (!o.quiet) for (const note of report.notes) io.stderr(`note: ${note}\n`);
      if (format === 'json') {
        const { scores: _perImage, ...summary } = report;
        io.stdout(jsonLine(summary));
        return;
      }
      if (format === 'csv') {
        io.stdout(
          toCsv(
            ['file', 'mos', 'score'],
            report.scores.map((s) => [s.file, s.mos, s.score]),
          ),
        );
        return;
      }
      const m = report.metrics;
      const known: Array<[string, string]> = FIGURES.map(({ key, label }) => [key, label]);
      io.stdout(
        formatPairs([
          ['method', report.method],
          ['dataset', report.dataset],
          ['protocol', report.protocol],
          ['images', `${report.n}${report.failed.length > 0 ? ` (${report.failed.length} failed)` : ''}`],
          ...known.filter(([k]) => k in m).map(([k, label]) => [label, fmt(m[k])] as [string, string]),
          ...Object.entries(m)
            .filter(([k]) => !known.some(([q]) => q === k))
            .map(([k, v]) => [k, fmt(v)] as [string, string]),
          ['report', report.reportPath],
          ['plot', report.plotPath],
        ]),
      );
    });
};
