/**
 * CSV reading (a thin layer over csv-parse) and writing.
 *
 * Reading follows RFC 4180: the first record is the header. Fields may be quoted; inside quotes a
 * doubled quote is a quote, and commas and line breaks are data. Records end with LF, CRLF or a lone CR,
 * mixed freely. A leading UTF-8 BOM is dropped. Blank lines (outside quotes) are skipped, so a trailing
 * newline or an empty last line is harmless. Every record must have as many fields as the header; errors
 * name the file and the line on which the offending record starts (1-based).
 */
import { parse, CsvError } from 'csv-parse/sync';

export interface Csv {
  header: string[];
  rows: string[][];
  /** The 1-based line on which each row starts (quoted line breaks and blank lines make it differ from the index). */
  lines: number[];
}

/** Line breaks inside a record's quoted fields, each of CRLF, LF and CR counting once. */
function lineBreaks(fields: readonly string[]): number {
  let n = 0;
  for (const f of fields) n += f.match(/\r\n|\r|\n/g)?.length ?? 0;
  return n;
}

/** Our wording of csv-parse's errors (its own line count takes a quoted CRLF for two lines, so ours is used). */
function csvErrorText(err: CsvError): string {
  switch (err.code) {
    case 'CSV_QUOTE_NOT_CLOSED':
      return 'quoted field is never closed';
    case 'INVALID_OPENING_QUOTE':
      return 'a quote inside an unquoted field (quote the whole field and double the quote)';
    case 'CSV_INVALID_CLOSING_QUOTE': {
      // csv-parse reports the offending byte: name it only when it is a whole (ASCII) character.
      const got = /got "([\x20-\x7e])"/.exec(err.message)?.[1];
      return `unexpected character ${got === undefined ? '' : `${JSON.stringify(got)} `}after a closing quote`;
    }
    default:
      return err.message;
  }
}

export function parseCsv(text: string, file = '<csv>'): Csv {
  const records: string[][] = [];
  const lines: number[] = [];
  // Lines taken by the records so far; with csv-parse's count of skipped blank lines this places each record.
  let recordLines = 0;
  try {
    parse(text, {
      bom: true,
      skip_empty_lines: true,
      relax_column_count: true, // checked below, with the line
      record_delimiter: ['\r\n', '\n', '\r'],
      on_record: (fields: string[], info) => {
        records.push(fields);
        lines.push(1 + recordLines + info.empty_lines);
        recordLines += 1 + lineBreaks(fields);
        return null; // kept here, not in csv-parse's result
      },
    });
  } catch (err) {
    if (!(err instanceof CsvError)) throw err;
    const line = 1 + recordLines + ((err as CsvError & { empty_lines?: number }).empty_lines ?? 0);
    throw new Error(`${file}:${line}: ${csvErrorText(err)}`, { cause: err });
  }
  if (records.length === 0) throw new Error(`${file}: empty CSV, no header`);
  const header = records[0]!;
  const rows = records.slice(1);
  rows.forEach((row, i) => {
    if (row.length !== header.length) {
      throw new Error(`${file}:${lines[i + 1]!}: expected ${header.length} fields as in the header, found ${row.length}`);
    }
  });
  return { header, rows, lines: lines.slice(1) };
}

/** Quotes a field only when it must be: it holds a comma, a quote or a line break. */
function csvField(value: string | number): string {
  const s = String(value);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * Writes a CSV table with LF line endings and a final newline. Numbers are written with `String()`,
 * which round-trips float64 exactly. Every row must have as many fields as the header.
 */
export function toCsv(header: readonly string[], rows: ReadonlyArray<ReadonlyArray<string | number>>): string {
  const lines = [header.map(csvField).join(',')];
  rows.forEach((row, r) => {
    if (row.length !== header.length) throw new Error(`toCsv: row ${r} has ${row.length} fields, the header ${header.length}`);
    lines.push(row.map(csvField).join(','));
  });
  return lines.join('\n') + '\n';
}
