/** `promptiqa score <files-or-folders>...`: quality scores of images with a method. */
import type { Provider } from '../../graph/runtime.js';
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Option } from 'commander';
import { type OutputTarget, checkWritableFile, describeFsError, openOutputStream, writeFileAtomic } from '../../util/fs.js';
import { acquireLock } from '../../util/lock.js';
import { toCsv } from '../../util/csv.js';
import { CliError, UsageError, fmt, formatTable, wantsProgress } from '../io.js';
import { opt } from '../options.js';
import { createProgress } from '../progress.js';
import { checkDataset, checkMethodName } from '../lib/names.js';
import { examples, type Register } from '../context.js';
import {
  canonicalPath,
  expandInputs,
  outputHeader,
  prepareResume,
  readOutputHeader,
  sidecarPath,
  sourceDifferences,
  type ScoreRecord,
  IMAGE_EXTENSIONS,
} from '../lib/files.js';

type Format = 'table' | 'json' | 'csv' | 'jsonl';

interface ScoreOptions {
  method: string;
  model?: string;
  checkpoint?: string;
  format: Format;
  output?: string;
  batch?: number;
  device: Provider;
  threads?: number;
  decodeThreads?: number;
  /** --option key=value, as typed (the method's schema reads them) */
  methodOptions?: Record<string, string>;
  dataset?: string;
  root?: string;
  labelFile?: string;
  imageCol?: string;
  mosCol?: string;
  promptCol?: string;
  allowOutsideRoot?: boolean;
  exifOrientation?: boolean;
  target?: string;
  retryFailed?: boolean;
  quiet?: boolean;
  /** false with --no-cache */
  cache: boolean;
  allowExtraTensors?: boolean;
}

/** table, json or csv; `withMos` adds the dataset's MOS column. */
function render(format: Exclude<Format, 'jsonl'>, records: readonly ScoreRecord[], withMos: boolean): string {
  if (format === 'json') return records.length === 0 ? '[]\n' : `[\n${records.map((r) => `  ${JSON.stringify(r)}`).join(',\n')}\n]\n`;
  const header = withMos ? ['file', 'score', 'mos', 'error'] : ['file', 'score', 'error'];
  const mos = (r: ScoreRecord, show: (x: number) => string | number): Array<string | number> =>
    withMos ? [r.mos === undefined ? '' : show(r.mos)] : [];
  if (format === 'csv') {
    return toCsv(
      header,
      records.map((r) => ('score' in r ? [r.file, r.score, ...mos(r, (x) => x), ''] : [r.file, '', ...mos(r, (x) => x), r.error])),
    );
  }
  return formatTable(
    header,
    records.map((r) => ('score' in r ? [r.file, fmt(r.score), ...mos(r, fmt), ''] : [r.file, '', ...mos(r, fmt), r.error]).map(String)),
  );
}

/** Appends lines to a file, each in one write, so a kill leaves at most one torn last line. */
class LineAppender {
  private readonly path: string;
  private readonly fd: number;
  private readonly stream: boolean;
  private readonly closeFd: () => void;
  /** A file is appended to and flushed at the end; a character device, FIFO or open descriptor is written as it is. */
  constructor(target: OutputTarget) {
    this.path = target.path;
    this.stream = target.kind === 'stream';
    try {
      if (target.kind === 'stream') {
        ({ fd: this.fd, close: this.closeFd } = openOutputStream(target));
      } else {
        mkdirSync(dirname(resolve(target.path)), { recursive: true });
        const fd = openSync(target.path, 'a');
        this.fd = fd;
        this.closeFd = () => closeSync(fd);
      }
    } catch (err) {
      throw new CliError(`cannot write ${target.path}: ${describeFsError(err)}`);
    }
  }
  write(line: string): void {
    const buf = Buffer.from(line, 'utf8');
    let off = 0;
    try {
      while (off < buf.length) off += writeSync(this.fd, buf, off, buf.length - off);
    } catch (err) {
      // what is in the file stays; a torn last line is rewritten when the run is resumed
      throw new CliError(
        `cannot write ${this.path}: ${describeFsError(err)}; the records already in it are kept: run the same command again to resume`,
      );
    }
  }
  close(): void {
    try {
      if (!this.stream) fsyncSync(this.fd);
    } catch (err) {
      throw new CliError(
        `cannot write ${this.path}: ${describeFsError(err)}; the records already in it are kept: run the same command again to resume`,
      );
    } finally {
      this.closeFd();
    }
  }
}

export const register: Register = (program, { io }) => {
  program
    .command('score')
    .summary('score the quality of images (files or folders) with a method')
    .description(
      `Scores images with a quality method. Folders are searched recursively for image files (${IMAGE_EXTENSIONS.map((e) => e.slice(1)).join(', ')}; ` +
        'any case), taken in sorted order; hidden files are skipped. Images that cannot be read, paths that do not exist, ' +
        'folders that cannot be listed, links that lead nowhere and FIFOs or devices (never read) are reported on stderr ' +
        '(file: problem) and in the output ' +
        'as {"file", "error"}; the run goes on. A summary line ends the run on stderr. ' +
        'The exit code is non-zero only when no image could be scored.\n\n' +
        'Without --model and --checkpoint, a method with a pretrained set-up (see `promptiqa methods`: clip-iqa, clip-iqa+, ' +
        'clip-iqa+-rn50-512, clip-iqa+-vitl14-512, liqe, liqe-mix) runs as pyiqa runs it: its CLIP and released weights are ' +
        'downloaded once into the Hugging Face cache (HF_ENDPOINT, HF_HUB_CACHE, HF_HUB_OFFLINE=1 are honoured), checked, and ' +
        'where each file came from is printed on stderr.\n\n' +
        "With --dataset and --root, every record carries the MOS of its image (the dataset's images are scored when no " +
        'file or folder is given), so `promptiqa metrics` reads the output as it is.\n\n' +
        '--output is checked (writable, not a folder) and locked before any work: a second run on the same --output ' +
        'refuses at once, naming the first (a lock left by a killed run is taken over). `--output -` is standard output; a ' +
        'link is followed to its target; a character device or a FIFO (/dev/null, a named pipe) is written as it is, ' +
        'never replaced, and a jsonl run into one does not resume.\n\n' +
        'Formats: table, json and csv are printed when all images are done (written atomically with --output); jsonl ' +
        'streams one {"file","score"} record per line as results arrive. With --format jsonl --output FILE an interrupted ' +
        'run resumes: files already in FILE are skipped (a torn last line is rewritten) and the rest are appended; FILE ' +
        'names files by absolute path, so a run resumed from another folder finds them. --retry-failed scores again the ' +
        'files whose records in FILE are errors (those records are replaced).\n\n' +
        'An output records what made it (method, pretrained set-up, checkpoint, CLIP weights, options, score range): a ' +
        'jsonl output as its first line, a csv, json or table output in FILE.meta.json beside it. A resume made otherwise ' +
        'is refused, naming each difference.',
    )
    .argument('[files-or-folders...]', "image files and folders of images (default with --dataset: the dataset's images)")
    .addOption(opt.method().makeOptionMandatory())
    .addOption(opt.model())
    .addOption(opt.checkpoint())
    .addOption(opt.dataset())
    .addOption(opt.root())
    .addOption(opt.labelFile())
    .addOption(opt.imageCol())
    .addOption(opt.mosCol())
    .addOption(opt.promptCol())
    .addOption(opt.allowOutsideRoot())
    .addOption(opt.target())
    .addOption(opt.exifOrientation())
    .addOption(opt.format(['table', 'json', 'csv', 'jsonl'], 'table'))
    .addOption(opt.output())
    .addOption(new Option('--retry-failed', 'with --format jsonl --output FILE: score again the files whose records in FILE are errors'))
    .addOption(opt.batch())
    .addOption(opt.device())
    .addOption(opt.threads())
    .addOption(opt.decodeThreads())
    .addOption(opt.noCache())
    .addOption(opt.allowExtraTensors())
    .addOption(opt.methodOption())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        "promptiqa score ./images --method liqe                # pyiqa's pretrained LIQE, downloaded once",
        'promptiqa score ./images --method clip-iqa --model openai/clip-vit-base-patch32',
        'promptiqa score a.jpg b.png --method clip-iqa --format json',
        'promptiqa score ./images --method tang --checkpoint runs/tang --format csv --output scores.csv',
        'promptiqa score ./images --method clip-iqa --format jsonl --output scores.jsonl   # run again to resume',
        'promptiqa score ./images --method clip-iqa --format jsonl --output scores.jsonl --retry-failed',
        'promptiqa score --dataset agiqa-3k --root ./AGIQA-3K --method clip-iqa --format csv --output s.csv && promptiqa metrics s.csv',
      ),
    )
    .action(async (inputs: string[], o: ScoreOptions) => {
      if ((o.dataset === undefined) !== (o.root === undefined)) throw new UsageError('--dataset and --root go together');
      if (inputs.length === 0 && o.dataset === undefined)
        throw new UsageError('give image files or folders to score, or --dataset and --root');
      // `--output -` is standard output, as in most command-line tools
      if (o.output === '-') o.output = undefined;
      const streaming = o.format === 'jsonl';
      if (o.retryFailed && !(streaming && o.output !== undefined))
        throw new UsageError('--retry-failed works on a resumed output: give --format jsonl --output FILE');
      const note = (s: string): void => {
        if (!o.quiet) io.stderr(s + '\n');
      };
      // --method NAME alone is pyiqa's pretrained set-up where there is one; with --model or --checkpoint, the method
      await checkMethodName(o.method, o);
      if (o.dataset !== undefined) checkDataset(o.dataset);

      // the output is checked and locked before anything long: a run never ends unable to write its results. A link
      // is followed to its target; a character device or a FIFO is written directly, neither locked nor resumed.
      const target = o.output !== undefined ? checkWritableFile(o.output) : undefined;
      const toFile = target?.kind === 'file';
      const resumable = streaming && toFile;
      if (o.retryFailed && !resumable)
        throw new UsageError(
          `--retry-failed works on a resumed output: ${o.output} is ${target?.kind === 'stream' ? target.what : 'not a file'}`,
        );
      const lock = toFile ? acquireLock(target.path, 'file') : undefined;
      try {
        const { createMetric } = await import('../../methods/index.js');

        // the dataset's MOS by image, so that the output needs no join with the label file
        let mosOf: ((f: string) => number | undefined) | undefined;
        let datasetImages: string[] = [];
        if (o.dataset !== undefined && o.root !== undefined) {
          const { loadDataset, imagePath } = await import('../../data/datasets.js');
          // a missing image is a failed record like any other, not a reason to score nothing
          const ds = loadDataset(o.dataset, {
            root: o.root,
            labelFile: o.labelFile,
            target: o.target,
            imageCol: o.imageCol,
            mosCol: o.mosCol,
            promptCol: o.promptCol,
            checkImages: false,
            allowOutsideRoot: o.allowOutsideRoot,
          });
          const byPath = new Map<string, number>();
          datasetImages = ds.items.map((it) => imagePath(ds, it));
          ds.items.forEach((it, i) => byPath.set(canonicalPath(datasetImages[i]!), it.mos));
          mosOf = (f) => byPath.get(canonicalPath(f));
        }

        const { files, empty, failed: unreadable } = expandInputs(inputs.length > 0 ? inputs : datasetImages);
        for (const dir of empty) note(`${dir}: no image files in this folder`);
        if (files.length === 0 && unreadable.length === 0)
          throw new CliError(
            `no image files found in ${inputs.length > 0 ? inputs.join(', ') : `the label file of ${o.dataset} under ${o.root}`}`,
          );
        if (mosOf) {
          const unlabelled = files.filter((f) => mosOf(f) === undefined).length;
          if (unlabelled > 0) note(`${o.dataset}: no MOS for ${unlabelled} of ${files.length} image(s) (not in its label file)`);
        }

        let metric: Awaited<ReturnType<typeof createMetric>> | undefined;
        const loadMetric = async (): Promise<NonNullable<typeof metric>> =>
          (metric ??= await createMetric(o.method, {
            model: o.model,
            checkpoint: o.checkpoint,
            device: o.device,
            threads: o.threads,
            ...(o.decodeThreads !== undefined ? { decodeThreads: o.decodeThreads } : {}),
            batchSize: o.batch,
            methodOptions: o.methodOptions,
            allowExtraTensors: o.allowExtraTensors === true,
            applyExifOrientation: o.exifOrientation,
            hub: { progress: wantsProgress(io, o.quiet) },
            ...(o.cache ? {} : { cache: false as const }),
            onFile: (f) =>
              note(`${f.metric}: ${f.role === 'clip' ? 'CLIP' : 'released weights'} from ${f.repo} at ${f.commit} → ${f.path}`),
          }));
        try {
          // an output records what made it (see OutputHeader), so the metric is loaded even where nothing is left to score
          const header = target !== undefined ? outputHeader((await loadMetric()).source) : undefined;

          // resuming a jsonl output: refused unless it was made the same way, then what it holds is skipped
          let todo = files;
          let failedInputs = unreadable;
          let skipped = 0;
          let headerDue = streaming && header !== undefined;
          const total = files.length + unreadable.length;
          if (resumable) {
            const recorded = readOutputHeader(target.path);
            if (recorded.state === 'unrecorded')
              throw new CliError(
                `cannot resume ${o.output}: it does not record what made its scores (an earlier promptiqa, or another tool wrote it); give another --output`,
              );
            if (recorded.state === 'header') {
              const diff = sourceDifferences(recorded.header, header!);
              if (diff.length > 0)
                throw new CliError(`cannot resume ${o.output}: its scores were made otherwise (${diff.join('; ')}); give another --output`);
              headerDue = false;
            }
            const prev = prepareResume(target.path, { retryFailed: o.retryFailed });
            if (prev.records > 0 || prev.dropped || prev.retried > 0) {
              const isNew = (f: string): boolean => !prev.done.has(canonicalPath(f));
              todo = files.filter(isNew);
              failedInputs = unreadable.filter((x) => isNew(x.file));
              skipped = total - todo.length - failedInputs.length;
              const extra = [
                prev.dropped ? 'a torn last line dropped' : '',
                prev.retried > 0 ? `${prev.retried} failed record(s) to retry` : '',
              ].filter((x) => x);
              note(`${o.output}: resuming; ${skipped} of ${total} already there${extra.length ? `, ${extra.join(', ')}` : ''}`);
            }
          }
          if (todo.length === 0 && failedInputs.length === 0) {
            note(`scored 0, failed 0 (all ${total} already in ${o.output})`);
            return;
          }

          // a resumable output names files by absolute path, so that a run from another folder matches them
          const named = (f: string): string => (resumable ? resolve(f) : f);
          const sink = streaming && target !== undefined ? new LineAppender(target) : undefined;
          const collected: ScoreRecord[] = [];
          let scored = 0;
          let failed = 0;
          const emit = (rec: ScoreRecord): void => {
            if (streaming) {
              const line = JSON.stringify(rec) + '\n';
              if (sink) sink.write(line);
              else io.stdout(line);
            } else {
              collected.push(rec);
            }
          };
          const withMos = (file: string): { mos?: number } => {
            const mos = mosOf?.(file);
            return mos === undefined ? {} : { mos };
          };
          const progress = createProgress(io, o.quiet);
          try {
            if (headerDue) sink?.write(JSON.stringify(header) + '\n');
            for (const x of failedInputs) {
              failed++;
              progress.note(`${x.file}: ${x.error}`, true);
              emit({ file: named(x.file), error: x.error, ...withMos(x.file) });
            }
            if (todo.length > 0) {
              const m = await loadMetric();
              progress.start(todo.length, o.method);
              for await (const r of m.scoreFiles(todo)) {
                if ('error' in r) {
                  failed++;
                  progress.note(`${r.file}: ${r.error}`, true);
                  emit({ file: named(r.file), error: r.error, ...withMos(r.file) });
                } else {
                  scored++;
                  emit({ file: named(r.file), score: r.score, ...withMos(r.file) });
                }
                progress.increment();
              }
            }
          } finally {
            progress.stop();
            sink?.close();
          }

          if (!streaming) {
            const text = render(o.format as Exclude<Format, 'jsonl'>, collected, mosOf !== undefined);
            if (o.output === undefined) io.stdout(text);
            else {
              try {
                writeFileAtomic(o.output, text);
                // what made the scores, beside the file, so that the file itself stays a plain table for any reader
                if (target?.kind === 'file') writeFileAtomic(sidecarPath(target.path), JSON.stringify(header, null, 2) + '\n');
              } catch (err) {
                // the output was checked before the work, yet can still fail (a full disk): the scores are not lost
                io.stdout(text);
                throw new CliError(`${(err as Error).message}; the results were printed on standard output instead`);
              }
            }
          }
          note(
            `scored ${scored}, failed ${failed}${skipped > 0 ? ` (${skipped} already in ${o.output})` : ''}${o.output !== undefined ? ` → ${o.output}` : ''}`,
          );
          if (scored === 0 && skipped === 0)
            throw new CliError(`no image could be scored (${failed} of ${todo.length + failedInputs.length} failed)`);
        } finally {
          await metric?.close();
        }
      } finally {
        lock?.release();
      }
    });
};
