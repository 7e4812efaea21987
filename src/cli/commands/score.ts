/** `promptiqa score <files-or-folders>...`: quality scores of images with a method. */
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { writeFileAtomic } from '../../util/fs.js';
import { toCsv } from '../../util/csv.js';
import { CliError, fmt, formatTable } from '../io.js';
import { opt } from '../options.js';
import { createProgress } from '../progress.js';
import { checkMethod } from '../lib/names.js';
import { examples, type Register } from '../context.js';
import { expandInputs, prepareResume, type ScoreRecord, IMAGE_EXTENSIONS } from '../lib/files.js';

type Format = 'table' | 'json' | 'csv' | 'jsonl';

interface ScoreOptions {
  method: string;
  model?: string;
  checkpoint?: string;
  format: Format;
  output?: string;
  batch?: number;
  device: 'cpu' | 'cuda';
  threads?: number;
  option?: Record<string, unknown>;
  quiet?: boolean;
}

function render(format: Exclude<Format, 'jsonl'>, records: readonly ScoreRecord[]): string {
  if (format === 'json') return records.length === 0 ? '[]\n' : `[\n${records.map((r) => `  ${JSON.stringify(r)}`).join(',\n')}\n]\n`;
  if (format === 'csv') {
    return toCsv(['file', 'score', 'error'], records.map((r) => ('score' in r ? [r.file, r.score, ''] : [r.file, '', r.error])));
  }
  return formatTable(['file', 'score', 'error'], records.map((r) => ('score' in r ? [r.file, fmt(r.score), ''] : [r.file, '', r.error])));
}

/** Appends lines to a file, each in one write, so a kill leaves at most one torn last line. */
class LineAppender {
  private readonly fd: number;
  constructor(path: string) {
    mkdirSync(dirname(resolve(path)), { recursive: true });
    this.fd = openSync(path, 'a');
  }
  write(line: string): void {
    const buf = Buffer.from(line, 'utf8');
    let off = 0;
    while (off < buf.length) off += writeSync(this.fd, buf, off, buf.length - off);
  }
  close(): void {
    try {
      fsyncSync(this.fd);
    } finally {
      closeSync(this.fd);
    }
  }
}

export const register: Register = (program, { io }) => {
  program
    .command('score')
    .summary('score the quality of images (files or folders) with a method')
    .description(
      `Scores images with a quality method. Folders are searched recursively for image files (${IMAGE_EXTENSIONS.map((e) => e.slice(1)).join(', ')}; ` +
        'any case), taken in sorted order; hidden files are skipped. Images that cannot be read are reported on stderr ' +
        '(file: problem) and in the output as {"file", "error"}; the run goes on. A summary line ends the run on stderr. ' +
        'The exit code is non-zero only when no image could be scored.\n\n' +
        'Formats: table, json and csv are printed when all images are done (written atomically with --output); jsonl ' +
        'streams one {"file","score"} record per line as results arrive. With --format jsonl --output FILE an interrupted ' +
        'run resumes: files already in FILE are skipped (a torn last line is rewritten) and the rest are appended. ' +
        'Resume from the same folder (paths are compared as absolute paths); delete a line to score that file again.',
    )
    .argument('<files-or-folders...>', 'image files and folders of images')
    .addOption(opt.method().makeOptionMandatory())
    .addOption(opt.model())
    .addOption(opt.checkpoint())
    .addOption(opt.format(['table', 'json', 'csv', 'jsonl'], 'table'))
    .addOption(opt.output())
    .addOption(opt.batch())
    .addOption(opt.device())
    .addOption(opt.threads())
    .addOption(opt.methodOption())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        'promptiqa score ./images --method clip-iqa --model openai/clip-vit-base-patch32',
        'promptiqa score a.jpg b.png --method clip-iqa --format json',
        'promptiqa score ./images --method tang --checkpoint runs/tang --format csv --output scores.csv',
        'promptiqa score ./images --method clip-iqa --format jsonl --output scores.jsonl   # run again to resume',
      ),
    )
    .action(async (inputs: string[], o: ScoreOptions) => {
      await checkMethod(o.method);
      const note = (s: string): void => {
        if (!o.quiet) io.stderr(s + '\n');
      };
      const { files, empty } = expandInputs(inputs);
      for (const dir of empty) note(`${dir}: no image files in this folder`);
      if (files.length === 0) throw new CliError(`no image files found in ${inputs.join(', ')}`);

      // resuming a jsonl output: skip what it already holds
      let todo = files;
      let skipped = 0;
      const streaming = o.format === 'jsonl';
      if (streaming && o.output !== undefined) {
        const prev = prepareResume(o.output);
        if (prev.records > 0 || prev.dropped) {
          todo = files.filter((f) => !prev.done.has(resolve(f)));
          skipped = files.length - todo.length;
          note(`${o.output}: resuming; ${skipped} of ${files.length} image(s) already there${prev.dropped ? ', a torn last line dropped' : ''}`);
        }
      }
      if (todo.length === 0) {
        note(`scored 0, failed 0 (all ${files.length} already in ${o.output})`);
        return;
      }

      const { createMetric } = await import('../../methods/index.js');
      const metric = await createMetric(o.method, {
        model: o.model,
        checkpoint: o.checkpoint,
        device: o.device,
        threads: o.threads,
        batchSize: o.batch,
        options: o.option,
      });
      const sink = streaming && o.output !== undefined ? new LineAppender(o.output) : undefined;
      const progress = createProgress(io, o.quiet);
      const collected: ScoreRecord[] = [];
      let scored = 0;
      let failed = 0;
      try {
        progress.start(todo.length, o.method);
        for await (const r of metric.scoreFiles(todo)) {
          // the problem without the file name, which the record (and the stderr line) already give
          const rec: ScoreRecord =
            'error' in r ? { file: r.file, error: r.error.startsWith(`${r.file}: `) ? r.error.slice(r.file.length + 2) : r.error } : { file: r.file, score: r.score };
          if ('error' in rec) {
            failed++;
            progress.note(`${rec.file}: ${rec.error}`, true);
          } else {
            scored++;
          }
          if (streaming) {
            const line = JSON.stringify(rec) + '\n';
            if (sink) sink.write(line);
            else io.stdout(line);
          } else {
            collected.push(rec);
          }
          progress.increment();
        }
      } finally {
        progress.stop();
        sink?.close();
        await metric.close();
      }

      if (!streaming) {
        const text = render(o.format as Exclude<Format, 'jsonl'>, collected);
        if (o.output !== undefined) writeFileAtomic(o.output, text);
        else io.stdout(text);
      }
      note(`scored ${scored}, failed ${failed}${skipped > 0 ? ` (${skipped} already in ${o.output})` : ''}${o.output !== undefined ? ` → ${o.output}` : ''}`);
      if (scored === 0) throw new CliError(`no image could be scored (${failed} of ${todo.length} failed)`);
    });
};
