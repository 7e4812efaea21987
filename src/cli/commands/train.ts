/** `promptiqa train`: learns a method's prompts (and head) on a dataset. */
import type { Provider } from '../../graph/runtime.js';
import { Option } from 'commander';
import type { TrainEvent, TrainOptions, TrainResult } from '../../train/index.js';
import { UsageError, fmt, formatPairs, formatTable, jsonLine } from '../io.js';
import { opt, parsePositiveInt, parsePositiveNumber, parseNonNegativeInt } from '../options.js';
import { createProgress } from '../progress.js';
import { checkDataset, checkMethod } from '../lib/names.js';
import { warningLines } from '../lib/warnings.js';
import { examples, type Register } from '../context.js';

interface TrainCliOptions {
  method: string;
  dataset: string;
  root: string;
  labelFile?: string;
  imageCol?: string;
  mosCol?: string;
  promptCol?: string;
  skipUnreadable?: boolean;
  allowOutsideRoot?: boolean;
  exifOrientation?: boolean;
  target?: string;
  model?: string;
  epochs?: number;
  batch?: number;
  lr?: number;
  seed?: number;
  limit?: number;
  rounds: number;
  splitBy?: 'image' | 'group' | 'official';
  ratios?: [number, number, number];
  selectOn: 'val' | 'test';
  patience?: number;
  /** --option key=value, as typed (the method's schema reads them) */
  methodOptions?: Record<string, string>;
  out: string;
  device: Provider;
  threads?: number;
  json?: boolean;
  quiet?: boolean;
}

const figures = (m: Record<string, number> | undefined): string =>
  m
    ? Object.entries(m)
        .map(([k, v]) => `${k} ${fmt(v)}`)
        .join(', ')
    : '';

const orNone = (s: string): string => s || '(no figures: too few images)';

export const register: Register = (program, { io }) => {
  program
    .command('train')
    .summary("train a method's prompts on a dataset")
    .description(
      "Trains a method's learnable prompts (and head) on a dataset with CLIP frozen, picks the best epoch on the validation " +
        "split (--select-on val; 'test' reproduces papers that select on the test set, an optimistic protocol), and writes " +
        'checkpoints, a training log and plots to --out. With --rounds N, N splits with seeds seed, seed+1, … are trained ' +
        "and the figures summarised (mean, median, std). Defaults (epochs, batch, lr, split unit) are the method's paper " +
        'settings; AI-generated sets split by generation prompt by default. Progress per step is drawn on a terminal; one ' +
        'line per epoch goes to stderr (none with --quiet).\n\n' +
        'Resuming: the state is saved at the end of every epoch. A run that was stopped (Ctrl-C, a crash, a kill) goes on from ' +
        'its last finished epoch when the same command is given again (the same --out and settings), and ends with the ' +
        'same numbers as a run never stopped; a finished run given again only reports. Other settings are refused, naming ' +
        "them (e.g. epochs 3 ≠ 2). --out must be a new or empty folder, or a run's own.",
    )
    .addOption(opt.method().makeOptionMandatory())
    .addOption(opt.dataset().makeOptionMandatory())
    .addOption(opt.root().makeOptionMandatory())
    .addOption(opt.labelFile())
    .addOption(opt.imageCol())
    .addOption(opt.mosCol())
    .addOption(opt.promptCol())
    .addOption(opt.allowOutsideRoot())
    .addOption(opt.exifOrientation())
    .addOption(opt.target())
    .addOption(opt.model())
    .addOption(
      new Option(
        '--skip-unreadable',
        "leave out images that cannot be read (listed in the run's result.json) instead of refusing to start",
      ),
    )
    .addOption(new Option('--epochs <n>', "epochs (default: the method's)").argParser(parsePositiveInt))
    .addOption(opt.batch())
    .addOption(new Option('--lr <rate>', "learning rate (default: the method's)").argParser(parsePositiveNumber))
    .addOption(opt.seed())
    .addOption(opt.limit())
    .addOption(
      new Option(
        '--rounds <n>',
        'train on this many seeded splits (split seeds --seed, --seed+1, …; with --limit, the same subset in each) and summarise',
      )
        .argParser(parsePositiveInt)
        .default(1),
    )
    .addOption(opt.splitBy())
    .addOption(opt.ratios())
    .addOption(new Option('--select-on <split>', 'split that picks the best epoch').choices(['val', 'test']).default('val'))
    .addOption(
      new Option('--patience <n>', "stop after this many epochs without improvement (default: the method's)").argParser(
        parseNonNegativeInt,
      ),
    )
    .addOption(opt.methodOption())
    .addOption(opt.out())
    .addOption(opt.device())
    .addOption(opt.threads())
    .addOption(opt.json())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        'promptiqa train --method tang --dataset agiqa-3k --root ./AGIQA-3K --model openai/clip-vit-base-patch16 --out runs/tang',
        'promptiqa train --method fu --dataset agiqa-3k --root ./AGIQA-3K --rounds 10 --ratios 0.8,0,0.2 --select-on test --out runs/fu-paper',
        'promptiqa train --method clip-iqa+ --dataset koniq-10k --root ./koniq --split-by official --epochs 5 --out runs/koniq',
        'promptiqa train --method fu --dataset agiqa-3k --root ./AGIQA-3K --limit 64 --epochs 1 --option nCtx=4 --out runs/try',
      ),
    )
    .action(async (o: TrainCliOptions) => {
      if (o.selectOn === 'val' && o.ratios !== undefined && o.ratios[1] === 0 && o.splitBy !== 'official') {
        throw new UsageError('--select-on val needs a validation share: give --ratios with val > 0 (e.g. 0.7,0.1,0.2) or --select-on test');
      }
      checkDataset(o.dataset);
      const info = await checkMethod(o.method, 'trainable');
      const model = o.model ?? info.defaultModel;
      const progress = createProgress(io, o.quiet);
      let barEpoch: number | undefined;
      const onEvent = (e: TrainEvent): void => {
        if (e.kind === 'warning') {
          for (const line of warningLines(e.message ?? 'warning', e.warnings)) progress.note(line, true);
        } else if (e.kind === 'start') {
          if (e.message) progress.note(e.message);
        } else if (e.kind === 'step') {
          if (barEpoch === undefined || e.epoch !== barEpoch) {
            barEpoch = e.epoch ?? -1;
            progress.start(e.stepsPerEpoch ?? 0, `epoch ${e.epoch ?? '?'}`);
          }
          progress.update(e.step ?? 0, e.loss !== undefined ? `loss ${fmt(e.loss)}` : '');
        } else if (e.kind === 'epoch') {
          progress.stop();
          barEpoch = undefined;
          const parts = [e.loss !== undefined ? `loss ${fmt(e.loss)}` : '', figures(e.val), e.message ?? ''].filter((x) => x !== '');
          progress.note(`epoch ${e.epoch ?? '?'}: ${parts.join(', ')}`);
        } else if (e.kind === 'done') {
          progress.stop();
          barEpoch = undefined;
          if (e.message) progress.note(e.message);
        }
      };
      const opts: TrainOptions = {
        method: o.method,
        model,
        dataset: o.dataset,
        root: o.root,
        labelFile: o.labelFile,
        imageCol: o.imageCol,
        mosCol: o.mosCol,
        promptCol: o.promptCol,
        skipUnreadable: o.skipUnreadable,
        allowOutsideRoot: o.allowOutsideRoot,
        applyExifOrientation: o.exifOrientation,
        target: o.target,
        out: o.out,
        epochs: o.epochs,
        batchSize: o.batch,
        lr: o.lr,
        seed: o.seed,
        limit: o.limit,
        splitBy: o.splitBy,
        ratios: o.ratios,
        selectOn: o.selectOn,
        patience: o.patience,
        threads: o.threads,
        device: o.device,
        methodOptions: o.methodOptions,
        onEvent,
      };
      const trainer = await import('../../train/index.js');
      try {
        if (o.rounds > 1) {
          const res = await trainer.trainRounds({ ...opts, rounds: o.rounds });
          if (o.json) {
            io.stdout(jsonLine(res));
            return;
          }
          io.stdout(`${res.protocol}\n\n`);
          io.stdout(
            formatTable(
              ['round', 'best epoch', 'selected on', 'test', 'checkpoint'],
              res.rounds.map((r, i) => [String(i + 1), String(r.bestEpoch), figures(r.best), figures(r.test), r.checkpoint]),
            ),
          );
          io.stdout('\n');
          io.stdout(
            formatTable(
              ['figure', 'mean', 'median', 'std'],
              Object.entries(res.summary).map(([k, s]) => [k, fmt(s.mean), fmt(s.median), fmt(s.std)]),
            ),
          );
          return;
        }
        const res: TrainResult = await trainer.train(opts);
        if (o.json) {
          io.stdout(jsonLine(res));
          return;
        }
        io.stdout(
          formatPairs([
            ['best epoch', `${res.bestEpoch} of ${res.epochs}`],
            [`selected on ${o.selectOn}`, orNone(figures(res.best))],
            ...(res.test ? [['test', orNone(figures(res.test))] as [string, string]] : []),
            ...(res.unreadable
              ? [['left out', `${res.unreadable.length} unreadable image(s), listed in result.json`] as [string, string]]
              : []),
            ['checkpoint', res.checkpoint],
            ['run folder', res.out],
          ]),
        );
      } finally {
        progress.stop();
      }
    });
};
