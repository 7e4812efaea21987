/** `promptiqa eval`: scores a dataset with a method and reports the agreement with MOS. */
import { Option } from 'commander';
import type { EvalOptions, EvalReport } from '../../eval/evaluate.js';
import { fmt, formatPairs, jsonLine } from '../io.js';
import { opt } from '../options.js';
import { createProgress } from '../progress.js';
import { checkDataset, checkMethod } from '../lib/names.js';
import { examples, type Register } from '../context.js';
import { checkWritableFolder } from '../../util/fs.js';

interface EvalCliOptions {
  method: string;
  checkpoint?: string;
  model?: string;
  dataset: string;
  root: string;
  labelFile?: string;
  target?: string;
  split: 'all' | 'test';
  seed?: number;
  ratios?: [number, number, number];
  splitBy?: 'image' | 'group' | 'official';
  limit?: number;
  out: string;
  device: 'cpu' | 'cuda';
  threads?: number;
  json?: boolean;
  quiet?: boolean;
}

export const register: Register = (program, { io }) => {
  program
    .command('eval')
    .summary('evaluate a method on a dataset: SRCC, KRCC, PLCC, RMSE, report and plot')
    .description(
      'Scores the images of a dataset (all of them, or the test side of the seeded split that `train` used: give the same ' +
        '--seed, --ratios and --split-by) and compares with the MOS: SRCC, KRCC, PLCC raw and after the 4-parameter ' +
        'logistic fit, RMSE. Writes a JSON report (with the protocol, the per-image scores and the images that failed) and ' +
        'an SVG scatter plot to --out. A trained method needs --checkpoint; zero-shot methods need only --model.',
    )
    .addOption(opt.method().makeOptionMandatory())
    .addOption(opt.checkpoint())
    .addOption(opt.model())
    .addOption(opt.dataset().makeOptionMandatory())
    .addOption(opt.root().makeOptionMandatory())
    .addOption(opt.labelFile())
    .addOption(opt.target())
    .addOption(new Option('--split <which>', 'all images, or the test side of the split').choices(['all', 'test']).default('all'))
    .addOption(opt.seed())
    .addOption(opt.ratios())
    .addOption(opt.splitBy())
    .addOption(opt.limit())
    .addOption(opt.out())
    .addOption(opt.device())
    .addOption(opt.threads())
    .addOption(opt.json())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        'promptiqa eval --method clip-iqa --model openai/clip-vit-base-patch32 --dataset agiqa-3k --root ./AGIQA-3K --out runs/eval-clip-iqa',
        'promptiqa eval --method tang --checkpoint runs/tang --dataset agiqa-3k --root ./AGIQA-3K --split test --seed 0 --out runs/tang/eval',
        'promptiqa eval --method clip-iqa --dataset csv --root ./my-set --label-file labels.csv --json --out runs/my-set',
      ),
    )
    .action(async (o: EvalCliOptions) => {
      checkDataset(o.dataset);
      await checkMethod(o.method);
      checkWritableFolder(o.out); // before any scoring: a run never ends unable to write its report
      const progress = createProgress(io, o.quiet);
      let started = false;
      const opts: EvalOptions = {
        method: o.method,
        model: o.model,
        checkpoint: o.checkpoint,
        dataset: o.dataset,
        root: o.root,
        labelFile: o.labelFile,
        target: o.target,
        split: o.split,
        splitBy: o.splitBy,
        ratios: o.ratios,
        seed: o.seed,
        limit: o.limit,
        out: o.out,
        threads: o.threads,
        device: o.device,
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
      if (o.json) {
        io.stdout(jsonLine(report));
        return;
      }
      const m = report.metrics;
      const known: Array<[string, string]> = [
        ['srcc', 'SRCC'], ['krcc', 'KRCC'], ['plcc', 'PLCC'], ['plcc_logistic', 'PLCC (logistic)'], ['rmse', 'RMSE (logistic)'],
      ];
      io.stdout(
        formatPairs([
          ['method', report.method],
          ['dataset', report.dataset],
          ['protocol', report.protocol],
          ['images', `${report.n}${report.failed.length > 0 ? ` (${report.failed.length} failed)` : ''}`],
          ...known.filter(([k]) => k in m).map(([k, label]) => [label, fmt(m[k])] as [string, string]),
          ...Object.entries(m).filter(([k]) => !known.some(([q]) => q === k)).map(([k, v]) => [k, fmt(v)] as [string, string]),
          ['report', report.reportPath],
          ['plot', report.plotPath],
        ]),
      );
    });
};
