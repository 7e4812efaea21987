/** `promptiqa metrics <csv>`: SRCC, KRCC, PLCC (raw and logistic) and RMSE of two columns of a CSV. */
import { readFileSync } from 'node:fs';
import { parseCsv } from '../../util/csv.js';
import { parseDecimal } from '../../util/number.js';
import { FIGURES, correlations, figuresOf, type Correlations } from '../../eval/metrics.js';
import { CliError, fmt, formatPairs, jsonLine } from '../io.js';
import { opt } from '../options.js';
import { examples, type Register } from '../context.js';

interface MetricsOptions {
  predCol: string;
  mosCol: string;
  json?: boolean;
  quiet?: boolean;
}

/** Reads the two columns as numbers; rows where either is empty are skipped (failed images of `score`). */
export function readColumns(path: string, predCol: string, mosCol: string): { pred: number[]; mos: number[]; skipped: number } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(
      `${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder, not a CSV file' : `cannot read (${(err as Error).message})`}`,
    );
  }
  let csv;
  try {
    csv = parseCsv(text, path);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const col = (name: string, what: string): number => {
    const i = csv.header.indexOf(name);
    if (i < 0) throw new CliError(`${path}: no column '${name}' (${what}); its columns are ${csv.header.join(', ')}`);
    return i;
  };
  const p = col(predCol, '--pred-col');
  const m = col(mosCol, '--mos-col');
  const pred: number[] = [];
  const mos: number[] = [];
  let skipped = 0;
  csv.rows.forEach((row, r) => {
    const a = row[p]!.trim();
    const b = row[m]!.trim();
    if (a === '' || b === '') {
      skipped++;
      return;
    }
    const num = (s: string, name: string): number => {
      const v = parseDecimal(s);
      if (v === undefined)
        throw new CliError(`${path}: data row ${r + 1}: column '${name}' is '${s}', not a number (a finite decimal such as 3.5 or 1e-3)`);
      return v;
    };
    pred.push(num(a, predCol));
    mos.push(num(b, mosCol));
  });
  return { pred, mos, skipped };
}

export const register: Register = (program, { io }) => {
  program
    .command('metrics')
    .summary('agreement between predicted scores and MOS in a CSV')
    .description(
      'Computes SRCC, KRCC, PLCC, PLCC after the 4-parameter logistic fit, and RMSE after that fit (in MOS units) ' +
        'between two columns of a CSV, as scipy does. Rows where either column is empty (e.g. images that `score` ' +
        'could not read) are skipped and counted on stderr. NaN (printed as null in JSON) means a column is constant.',
    )
    .argument('<csv>', 'CSV file with a header row')
    .option('--pred-col <name>', 'column of predicted scores', 'score')
    .addOption(opt.mosCol('column of mean opinion scores').default('mos'))
    .addOption(opt.json())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        'promptiqa metrics results.csv --pred-col score --mos-col mos',
        'promptiqa metrics results.csv --pred-col p --mos-col m --json',
        '  {"n":2982,"srcc":0.83,"krcc":0.64,"plcc":0.85,"plcc_logistic":0.87,"rmse":0.46}',
      ),
    )
    .action((csvPath: string, o: MetricsOptions) => {
      const { pred, mos, skipped } = readColumns(csvPath, o.predCol, o.mosCol);
      if (skipped > 0 && !o.quiet) io.stderr(`${csvPath}: skipped ${skipped} row(s) with an empty '${o.predCol}' or '${o.mosCol}'\n`);
      if (pred.length < 4)
        throw new CliError(`${csvPath}: needs at least 4 rows with both '${o.predCol}' and '${o.mosCol}', found ${pred.length}`);
      const r: Correlations = correlations(pred, mos);
      if (o.json) {
        io.stdout(jsonLine({ n: r.n, ...figuresOf(r) }));
        return;
      }
      io.stdout(formatPairs([['n', String(r.n)], ...FIGURES.map(({ key, label }): [string, string] => [label, fmt(r[key])])]));
    });
};
