import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeCsvText, detectDelimiter, parseCsv, readCsvFile, toCsv } from '../src/util/csv.js';

test('parses a plain table', () => {
  const csv = parseCsv('name,mos\na.jpg,3.5\nb.jpg,1.25\n');
  assert.deepEqual(csv.header, ['name', 'mos']);
  assert.deepEqual(csv.rows, [
    ['a.jpg', '3.5'],
    ['b.jpg', '1.25'],
  ]);
});

test('quoted fields: escaped quotes, commas and line breaks inside', () => {
  const text = 'name,prompt\n"a.jpg","a cat, on a mat"\nb.jpg,"he said ""hi"""\nc.jpg,"two\nlines"\n';
  assert.deepEqual(parseCsv(text).rows, [
    ['a.jpg', 'a cat, on a mat'],
    ['b.jpg', 'he said "hi"'],
    ['c.jpg', 'two\nlines'],
  ]);
});

test('CRLF line endings, BOM and missing final newline', () => {
  const csv = parseCsv('\uFEFFname,mos\r\na.jpg,1\r\n"b\r\nc",2');
  assert.deepEqual(csv.header, ['name', 'mos']);
  assert.deepEqual(csv.rows, [
    ['a.jpg', '1'],
    ['b\r\nc', '2'],
  ]);
});

test('empty fields, quoted empty fields and blank lines', () => {
  const csv = parseCsv('a,b,c\n,,\n"",x,""\n\n1,2,3\n\n');
  assert.deepEqual(csv.rows, [
    ['', '', ''],
    ['', 'x', ''],
    ['1', '2', '3'],
  ]);
  // A one-column file keeps a quoted empty value but skips a blank line.
  assert.deepEqual(parseCsv('v\n""\n\nz\n').rows, [[''], ['z']]);
});

test('a row with the wrong number of fields names the file and the line', () => {
  assert.throws(() => parseCsv('a,b\n1,2\n3\n', 'labels.csv'), /labels\.csv:3: expected 2 fields.*found 1/);
  // The line is where the record starts, counting line breaks inside quoted fields.
  assert.throws(() => parseCsv('a,b\n"x\ny",1\n1,2,3\n', 'f.csv'), /f\.csv:4: expected 2 fields.*found 3/);
});

test('each row carries the line it starts on: quoted line breaks, blank lines and every line ending counted', () => {
  // Line 1 header; 2-3 a quoted LF; 4-5 a quoted CRLF; 6 blank; 7 a lone-CR ending; 8-9 a quoted CR; 10 last.
  const text = '\uFEFFname,prompt\na,"x\ny"\r\nb,"x\r\ny"\n\r\nc,z\rd,"x\ry"\ne,z';
  const csv = parseCsv(text);
  assert.deepEqual(
    csv.rows.map((r) => r[0]),
    ['a', 'b', 'c', 'd', 'e'],
  );
  assert.deepEqual(csv.lines, [2, 4, 7, 8, 10]);
});

test('error lines stay right after a quoted CRLF (counted once, not as two breaks)', () => {
  const crlf = 'a,b\r\n"x\r\ny",1\r\n\r\n';
  assert.throws(() => parseCsv(crlf + '1,2,3\r\n', 'f.csv'), /f\.csv:5: expected 2 fields.*found 3/);
  assert.throws(() => parseCsv(crlf + '"open\r\n', 'f.csv'), /f\.csv:5: quoted field is never closed/);
  assert.throws(() => parseCsv(crlf + 'x"y,1\r\n', 'f.csv'), /f\.csv:5: a quote inside an unquoted field/);
  assert.throws(() => parseCsv(crlf + '"x"y,1\r\n', 'f.csv'), /f\.csv:5: unexpected character "y" after a closing quote/);
});

test('malformed quoting is an error with a line number', () => {
  assert.throws(() => parseCsv('a,b\n"open,1\n', 'f.csv'), /f\.csv:2: quoted field is never closed/);
  assert.throws(() => parseCsv('a,b\nx"y,1\n', 'f.csv'), /f\.csv:2: a quote inside an unquoted field/);
  assert.throws(() => parseCsv('a,b\n"x"y,1\n', 'f.csv'), /f\.csv:2: unexpected character "y" after a closing quote/);
  assert.throws(() => parseCsv('', 'f.csv'), /f\.csv: empty CSV/);
});

test('toCsv quotes only what needs quoting and round-trips through parseCsv', () => {
  const header = ['name', 'prompt', 'score'];
  const rows = [
    ['a.jpg', 'plain', 0.1 + 0.2],
    ['b,c.jpg', 'say "cheese"', -3],
    ['d.jpg', 'line\nbreak\r\nand CRLF', 1e-300],
    ['', ' spaced ', 0],
  ];
  const text = toCsv(header, rows);
  assert.equal(text.split('\n')[1], 'a.jpg,plain,0.30000000000000004');
  assert.ok(text.includes('"b,c.jpg","say ""cheese"""'));
  assert.ok(text.endsWith('\n'));
  const back = parseCsv(text);
  assert.deepEqual(back.header, header);
  assert.deepEqual(
    back.rows,
    rows.map((r) => r.map(String)),
  );
  assert.equal(Number(back.rows[0]![2]), 0.1 + 0.2);
  assert.throws(() => toCsv(['a', 'b'], [['1']]), /row 0 has 1 fields/);
});

test('the delimiter: a comma, unless the header has none and has semicolons or tabs (quoted ones not counted)', () => {
  assert.equal(detectDelimiter('image,mos\na;b,1\n'), ',');
  assert.equal(detectDelimiter('image;mos\na,b;1\n'), ';');
  assert.equal(detectDelimiter('image\tmos\na;b\t1\n'), '\t');
  assert.equal(detectDelimiter('"a,b";mos\n'), ';');
  assert.equal(detectDelimiter('image\n'), ',');
  assert.deepEqual(parseCsv('image;mos\n"x;y.png";1\n').rows, [['x;y.png', '1']]);
  // a file that only names columns the comma way keeps failing the comma way, by line
  assert.throws(() => parseCsv('image,mos\na.png;1\n', 'f.csv'), /f\.csv:2: expected 2 fields/);
});

test('decodeCsvText: UTF-8 with or without its BOM, UTF-16 by its BOM; other encodings refused by name', () => {
  const text = 'name,mos\né.png,1\n';
  assert.equal(decodeCsvText(Buffer.from(text)), text);
  assert.equal(decodeCsvText(Buffer.from('\uFEFF' + text)), text);
  assert.equal(decodeCsvText(Buffer.from('\uFEFF' + text, 'utf16le'), 'f.csv'), text);
  assert.equal(decodeCsvText(Buffer.from('\uFEFF' + text, 'utf16le').swap16(), 'f.csv'), text);
  assert.throws(
    () => decodeCsvText(Buffer.from([0, 0, 0xfe, 0xff, 0, 0, 0, 0x61]), 'f.csv'),
    /f\.csv: the file is UTF-32 \(big-endian\) text/,
  );
  assert.throws(() => decodeCsvText(Buffer.from('a,b\n1,2\n3,\xff\n', 'latin1'), 'f.csv'), /f\.csv:3: not UTF-8 text/);
  // a lone surrogate in UTF-16
  assert.throws(
    () => decodeCsvText(Buffer.from([0xff, 0xfe, 0x61, 0, 0x0a, 0, 0x00, 0xd8, 0x0a, 0]), 'f.csv'),
    /f\.csv:2: not UTF-16 \(little-endian\) text as its byte-order mark says/,
  );
  assert.throws(() => decodeCsvText(Buffer.from('name,mos\n', 'utf16le'), 'f.csv'), /f\.csv:1: a NUL byte in the header/);
});

test('readCsvFile reads only a regular file', { skip: process.platform === 'win32' }, () => {
  assert.throws(
    () => readCsvFile('/dev/zero', 'label file'),
    /cannot read label file \/dev\/zero: it is a character device, not a regular file/,
  );
});
