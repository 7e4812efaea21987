/** `promptiqa metrics <file>`: SRCC, KRCC, PLCC (raw and logistic) and RMSE of two columns of a CSV, or of `score`'s jsonl or json output. */
import { READ_LIMITS, readRegularText } from '../../util/fs.js';
import { parseCsv } from '../../util/csv.js';
import { parseDecimal } from '../../util/number.js';
import { FIGURES, correlations, figuresOf, type Correlations } from '../../eval/metrics.js';
import { CliError, fmt, formatPairs, jsonLine } from '../io.js';
import { opt } from '../options.js';
import { examples, type Register } from '../context.js';
import { isHeaderLine } from '../lib/files.js';

interface MetricsOptions {
  predCol: string;
  mosCol: string;
  json?: boolean;
  quiet?: boolean;
}

/**
 * Reads the two columns as numbers from a CSV with a header row, or from `score`'s own jsonl (one record per line; its
 * first line, which says what made the scores, is passed over) or json (a list of records) output: the keys of the
 * records are the columns. Rows where either is empty or absent are skipped (failed images of `score`).
 */
export function readColumns(path: string, predCol: string, mosCol: string): { pred: number[]; mos: number[]; skipped: number } {
  let text: string;
  try {
    text = readRegularText(path, 'score file', READ_LIMITS.labels);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const start = text.replace(/^\uFEFF/, '').trimStart();
  if (start.startsWith('{') || start.startsWith('[')) return recordColumns(path, text, predCol, mosCol);
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

/** The two keys of JSON records: `score --format jsonl` (one per line) or `--format json` (a list). */
function recordColumns(path: string, text: string, predCol: string, mosCol: string): { pred: number[]; mos: number[]; skipped: number } {
  const records: Array<{ where: string; rec: unknown }> = [];
  if (
    text
      .trimStart()
      .replace(/^\uFEFF/, '')
      .startsWith('[')
  ) {
    let list: unknown;
    try {
      list = JSON.parse(text.replace(/^\uFEFF/, ''));
    } catch (err) {
      throw new CliError(`${path}: not a JSON list of score records (${(err as Error).message})`);
    }
    if (!Array.isArray(list)) throw new CliError(`${path}: not a JSON list of score records`);
    list.forEach((rec, i) => records.push({ where: `record ${i + 1}`, rec }));
  } else {
    text.split('\n').forEach((raw, i) => {
      const line = raw.replace(/^\uFEFF/, '').trim();
      if (line === '') return;
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch {
        throw new CliError(`${path}:${i + 1}: not a JSON record (a jsonl file has one {...} per line)`);
      }
      if (!isHeaderLine(rec)) records.push({ where: `line ${i + 1}`, rec });
    });
  }
  const pred: number[] = [];
  const mos: number[] = [];
  let skipped = 0;
  const keys = new Set<string>();
  for (const { where, rec } of records) {
    if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) throw new CliError(`${path}: ${where}: not a JSON object`);
    const r = rec as Record<string, unknown>;
    Object.keys(r).forEach((k) => keys.add(k));
    const a = r[predCol];
    const b = r[mosCol];
    if (a === undefined || a === null || a === '' || b === undefined || b === null || b === '') {
      skipped++;
      continue;
    }
    const num = (v: unknown, name: string): number => {
      const x = typeof v === 'number' ? v : typeof v === 'string' ? parseDecimal(v) : undefined;
      if (x === undefined || !Number.isFinite(x))
        throw new CliError(`${path}: ${where}: '${name}' is ${JSON.stringify(v)}, not a number (a finite decimal such as 3.5 or 1e-3)`);
      return x;
    };
    pred.push(num(a, predCol));
    mos.push(num(b, mosCol));
  }
  for (const [name, what] of [
    [predCol, '--pred-col'],
    [mosCol, '--mos-col'],
  ] as const) {
    if (records.length > 0 && !keys.has(name))
      throw new CliError(`${path}: no record has '${name}' (${what}); its records have ${[...keys].join(', ')}`);
  }
  return { pred, mos, skipped };
}

export const register: Register = (program, { io }) => {
  program
    .command('metrics')
    .summary("agreement between predicted scores and MOS in a CSV, or in score's jsonl or json output")
    .description(
      'Computes SRCC, KRCC, PLCC, PLCC after the 4-parameter logistic fit, and RMSE after that fit (in MOS units) ' +
        'between two columns of a CSV, as scipy does. The output of `promptiqa score --dataset ...` is read as it is: csv, ' +
        "jsonl (its first line, which says what made the scores, is passed over) or json, whose records' keys are the " +
        'columns. Rows where either column is empty (e.g. images that `score` ' +
        'could not read) are skipped and counted on stderr. NaN (printed as null in JSON) means a column is constant.',
    )
    .argument('<file>', "CSV file with a header row, or score's jsonl or json output")
    .option('--pred-col <name>', 'column of predicted scores', 'score')
    .addOption(opt.mosCol('column of mean opinion scores').default('mos'))
    .addOption(opt.json())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        'promptiqa metrics results.csv --pred-col score --mos-col mos',
        'promptiqa metrics results.csv --pred-col p --mos-col m --json',
        'promptiqa metrics scores.jsonl                      # score --dataset ... --format jsonl --output scores.jsonl',
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
