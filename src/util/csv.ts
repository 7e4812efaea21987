/**
 * A small RFC 4180 CSV reader and writer: enough for label files and score tables, no dependency.
 *
 * Reading: the first record is the header. Fields may be quoted; inside quotes a doubled quote is a
 * quote, and commas and line breaks are data. Records end with LF, CRLF or a lone CR. A leading UTF-8
 * BOM is dropped. Blank lines (outside quotes) are skipped, so a trailing newline or an empty last line
 * is harmless. Every record must have as many fields as the header; errors name the file and the line
 * on which the offending record starts (1-based).
 */

export interface Csv {
  header: string[];
  rows: string[][];
}

export function parseCsv(text: string, file = '<csv>'): Csv {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const records: Array<{ line: number; fields: string[] }> = [];

  let line = 1; // current physical line
  let recordLine = 1; // line on which the current record started
  let fields: string[] = [];
  let field = '';
  let quoted = false; // the current field was quoted, so it exists even when empty

  const endField = (): void => {
    fields.push(field);
    field = '';
    quoted = false;
  };
  const endRecord = (): void => {
    const blank = fields.length === 0 && field === '' && !quoted;
    endField();
    if (!blank) records.push({ line: recordLine, fields });
    fields = [];
  };

  let i = 0;
  while (i < text.length) {
    const ch = text[i]!;
    if (ch === '"') {
      if (field !== '') throw new Error(`${file}:${line}: a quote inside an unquoted field (quote the whole field and double the quote)`);
      const startLine = line;
      quoted = true;
      i++;
      for (;;) {
        if (i >= text.length) throw new Error(`${file}:${startLine}: quoted field is never closed`);
        const c = text[i]!;
        if (c === '"') {
          if (text[i + 1] !== '"') break;
          field += '"';
          i += 2;
          continue;
        }
        if (c === '\n' || (c === '\r' && text[i + 1] !== '\n')) line++;
        field += c;
        i++;
      }
      i++; // the closing quote
      // After the closing quote only a separator, a line break or the end may follow.
      const next = text[i];
      if (next !== undefined && next !== ',' && next !== '\n' && next !== '\r') {
        throw new Error(`${file}:${line}: unexpected character ${JSON.stringify(next)} after a closing quote`);
      }
    } else if (ch === ',') {
      endField();
      i++;
    } else if (ch === '\n' || ch === '\r') {
      endRecord();
      i += ch === '\r' && text[i + 1] === '\n' ? 2 : 1;
      line++;
      recordLine = line;
    } else {
      field += ch;
      i++;
    }
  }
  if (field !== '' || quoted || fields.length > 0) endRecord();
  return finish(records, file);
}

function finish(records: Array<{ line: number; fields: string[] }>, file: string): Csv {
  if (records.length === 0) throw new Error(`${file}: empty CSV, no header`);
  const header = records[0]!.fields;
  const rows: string[][] = [];
  for (const rec of records.slice(1)) {
    if (rec.fields.length !== header.length) {
      throw new Error(`${file}:${rec.line}: expected ${header.length} fields as in the header, found ${rec.fields.length}`);
    }
    rows.push(rec.fields);
  }
  return { header, rows };
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
