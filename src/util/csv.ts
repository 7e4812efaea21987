/**
 * CSV reading (a thin layer over csv-parse) and writing.
 *
 * Reading follows RFC 4180: the first record is the header. Fields may be quoted; inside quotes a
 * doubled quote is a quote, and delimiters and line breaks are data. Records end with LF, CRLF or a lone CR,
 * mixed freely. A leading UTF-8 BOM is dropped. Blank lines (outside quotes) are skipped, so a trailing
 * newline or an empty last line is harmless. Every record must have as many fields as the header; errors
 * name the file and the line on which the offending record starts (1-based).
 *
 * The delimiter is a comma, unless the header has none and has semicolons or tabs (as spreadsheets save
 * CSV in locales with a decimal comma, and as "Unicode text"): then that. Files are UTF-8, or UTF-16 with
 * its byte-order mark (`decodeCsvText`); other encodings are refused by name.
 */
import { parse, CsvError } from 'csv-parse/sync';
import { readRegularFile, READ_LIMITS } from './fs.js';

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

/** The field delimiter of a CSV: ',' unless its header (its first record) has no comma and has ';' or tabs. */
export function detectDelimiter(text: string): ',' | ';' | '\t' {
  const counts = { ',': 0, ';': 0, '\t': 0 };
  let quoted = false;
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    else if (!quoted && (ch === '\n' || ch === '\r')) break;
    else if (!quoted && (ch === ',' || ch === ';' || ch === '\t')) counts[ch]++;
  }
  if (counts[','] > 0) return ',';
  if (counts[';'] === 0 && counts['\t'] === 0) return ',';
  return counts[';'] >= counts['\t'] ? ';' : '\t';
}

export function parseCsv(text: string, file = '<csv>'): Csv {
  const delimiter = detectDelimiter(text);
  const records: string[][] = [];
  const lines: number[] = [];
  // Lines taken by the records so far; with csv-parse's count of skipped blank lines this places each record.
  let recordLines = 0;
  try {
    parse(text, {
      bom: true,
      delimiter,
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

const BOMS: ReadonlyArray<{ bytes: readonly number[]; encoding: string; decoder?: 'utf-8' | 'utf-16le' | 'utf-16be' }> = [
  // UTF-32 first: its little-endian mark begins with UTF-16's
  { bytes: [0xff, 0xfe, 0, 0], encoding: 'UTF-32 (little-endian)' },
  { bytes: [0, 0, 0xfe, 0xff], encoding: 'UTF-32 (big-endian)' },
  { bytes: [0xef, 0xbb, 0xbf], encoding: 'UTF-8', decoder: 'utf-8' },
  { bytes: [0xff, 0xfe], encoding: 'UTF-16 (little-endian)', decoder: 'utf-16le' },
  { bytes: [0xfe, 0xff], encoding: 'UTF-16 (big-endian)', decoder: 'utf-16be' },
];

/**
 * The text of a CSV file's bytes: UTF-8 (a BOM dropped), or UTF-16 with its byte-order mark (spreadsheets'
 * "Unicode text"). UTF-32, text that is not valid UTF-8, and NUL bytes in the header (UTF-16 without its
 * mark, or not a text file) are refused, naming the file, the encoding or the line.
 */
export function decodeCsvText(bytes: Uint8Array, file = '<csv>'): string {
  const bom = BOMS.find((b) => b.bytes.every((x, i) => bytes[i] === x));
  if (bom && !bom.decoder) throw new Error(`${file}: the file is ${bom.encoding} text; save it as UTF-8 (or UTF-16)`);
  const decoder = bom?.decoder ?? 'utf-8';
  let text: string;
  try {
    // fatal: a byte that is not text is an error, not a silent U+FFFD in an image path
    text = new TextDecoder(decoder, { fatal: true }).decode(bytes); // the BOM is dropped
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_ENCODING_INVALID_ENCODED_DATA') {
      throw new Error(`${file}: cannot read it as text: ${(err as Error).message}`, { cause: err }); // e.g. longer than a string can be
    }
    const what = bom ? `${bom.encoding} text as its byte-order mark says` : 'UTF-8 text';
    throw new Error(`${file}:${firstBadLine(bytes, decoder)}: not ${what}; save the file as UTF-8`, { cause: err });
  }
  const end = text.search(/[\r\n]/);
  if ((end < 0 ? text : text.slice(0, end)).includes('\0')) {
    throw new Error(`${file}:1: a NUL byte in the header: UTF-16 text without its byte-order mark, or not a text file; save it as UTF-8`);
  }
  return text;
}

/** The 1-based line of the first bytes that `decoder` refuses (by lines: a refused line is the one). */
function firstBadLine(bytes: Uint8Array, decoder: 'utf-8' | 'utf-16le' | 'utf-16be'): number {
  const dec = new TextDecoder(decoder, { fatal: true });
  const unit = decoder === 'utf-8' ? 1 : 2;
  let line = 1;
  let start = 0;
  for (let i = 0; i + unit <= bytes.length; i += unit) {
    const lf =
      unit === 1
        ? bytes[i] === 0x0a
        : decoder === 'utf-16le'
          ? bytes[i] === 0x0a && bytes[i + 1] === 0
          : bytes[i] === 0 && bytes[i + 1] === 0x0a;
    if (!lf) continue;
    try {
      dec.decode(bytes.subarray(start, i));
    } catch {
      return line;
    }
    line++;
    start = i + unit;
  }
  return line;
}

/**
 * Reads and parses a CSV file: a regular file of at most `READ_LIMITS.labels` (a FIFO or a device is refused
 * without waiting), decoded by `decodeCsvText`. `what` names it in errors ("label file").
 */
export function readCsvFile(path: string, what = 'CSV file'): Csv {
  return parseCsv(decodeCsvText(readRegularFile(path, what, READ_LIMITS.labels), path), path);
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
