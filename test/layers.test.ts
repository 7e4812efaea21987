/**
 * The house rules of src/ as an import graph: every import (type-only and dynamic included) runs from a
 * higher layer to a lower one or stays in its folder; no files import each other in a circle; the package
 * entry reaches nothing under cli/; no library file names a path into the shared test data. The checks are
 * plain functions, first tried on small made-up sources so that each can be seen to fail, then run on src/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'src');

/**
 * The layers, lowest first: a file may import from its own folder and from folders before it. data sits
 * below clip because clip's embed decodes images. Files directly in src/ (index.ts, the package entry)
 * are above every folder.
 */
const LAYERS = ['util', 'graph', 'data', 'clip', 'prompts', 'methods', 'eval', 'train', 'bench', 'serve', 'cli'] as const;
const ENTRY_RANK = LAYERS.length;

interface ImportRef {
  specifier: string;
  line: number;
}

/** Every module specifier a source names: import/export declarations, `import x = require()`, `import()`, `import('x').T`. */
function importsOf(text: string, file: string): ImportRef[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const refs: ImportRef[] = [];
  const add = (node: ts.Node, spec: ts.Node | undefined): void => {
    const line = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
    if (spec && ts.isStringLiteralLike(spec)) refs.push({ specifier: spec.text, line });
    else throw new Error(`${file}:${line}: an import whose module is not a string literal cannot be checked`);
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) add(node, node.moduleSpecifier);
    else if (ts.isExportDeclaration(node) && node.moduleSpecifier) add(node, node.moduleSpecifier);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference))
      add(node, node.moduleReference.expression);
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) add(node, node.arguments[0]);
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) add(node, node.argument.literal);
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return refs;
}

/** String literals (and template parts) under src/ that name the shared data folder, with their lines. */
function sharedPathsIn(text: string, file: string): { text: string; line: number }[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: { text: string; line: number }[] = [];
  // "shared" as a whole path segment: '../shared', 'shared/x', or the bare segment given to join()
  const path = /(^|[\\/])shared([\\/]|$)/;
  const visit = (node: ts.Node): void => {
    const isText = ts.isStringLiteralLike(node) || ts.isTemplateHead(node) || ts.isTemplateMiddle(node) || ts.isTemplateTail(node);
    if (isText && path.test(node.text)) found.push({ text: node.text, line: sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1 });
    if (ts.isIdentifier(node) && node.text === 'sharedDir')
      found.push({ text: 'sharedDir', line: sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1 });
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return found;
}

/** The layer rank of a file given relative to src/ with '/' separators. */
function rankOf(file: string): number {
  const parts = file.split('/');
  if (parts.length === 1) return ENTRY_RANK;
  const rank = (LAYERS as readonly string[]).indexOf(parts[0]!);
  if (rank < 0) throw new Error(`src/${file}: folder "${parts[0]}" is not in the layer order; add it to LAYERS in test/layers.test.ts`);
  return rank;
}

/** The file a relative specifier names, relative to src/ (".js" written for ".ts" as ESM TypeScript does). */
function resolveIn(files: ReadonlySet<string>, from: string, specifier: string): string | undefined {
  const joined = join(dirname(from), specifier).split(sep).join('/');
  for (const candidate of [joined.replace(/\.js$/, '.ts'), joined, `${joined}.ts`, `${joined}/index.ts`]) {
    if (files.has(candidate)) return candidate;
  }
  return undefined;
}

type ImportGraph = Map<string, { to: string; line: number }[]>;

/** The import graph of a set of sources (file relative to src/ → text); fails on a relative import that names no file. */
function importGraph(sources: ReadonlyMap<string, string>): ImportGraph {
  const files = new Set(sources.keys());
  const graph: ImportGraph = new Map();
  for (const [file, text] of sources) {
    const edges: { to: string; line: number }[] = [];
    for (const ref of importsOf(text, file)) {
      if (!ref.specifier.startsWith('.')) continue; // a package or node: builtin
      const to = resolveIn(files, file, ref.specifier);
      if (to === undefined) throw new Error(`src/${file}:${ref.line}: "${ref.specifier}" names no file under src/`);
      edges.push({ to, line: ref.line });
    }
    graph.set(file, edges);
  }
  return graph;
}

/** Imports from a lower layer to a higher one, as "from:line -> to (lower -> higher)". */
function upwardImports(graph: ImportGraph): string[] {
  const name = (rank: number): string => LAYERS[rank] ?? 'package entry';
  const bad: string[] = [];
  for (const [from, edges] of graph) {
    for (const { to, line } of edges) {
      if (rankOf(to) > rankOf(from)) bad.push(`src/${from}:${line} -> src/${to} (${name(rankOf(from))} imports ${name(rankOf(to))})`);
    }
  }
  return bad;
}

/** The import cycles: strongly connected groups of more than one file, or a file importing itself (Tarjan). */
function importCycles(graph: ImportGraph): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  let next = 0;
  const connect = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const { to } of graph.get(v) ?? []) {
      if (!index.has(to)) {
        connect(to);
        low.set(v, Math.min(low.get(v)!, low.get(to)!));
      } else if (onStack.has(to)) low.set(v, Math.min(low.get(v)!, index.get(to)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const group: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      group.push(w);
    } while (w !== v);
    const selfLoop = (graph.get(v) ?? []).some((e) => e.to === v);
    if (group.length > 1 || selfLoop) cycles.push(group.sort());
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) connect(v);
  return cycles;
}

function readSources(root: string): Map<string, string> {
  const sources = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (/\.(ts|mts|cts|js|mjs|cjs)$/.test(entry.name))
        sources.set(relative(root, full).split(sep).join('/'), readFileSync(full, 'utf8'));
    }
  };
  walk(root);
  return sources;
}

// --- the checks on made-up sources: each must report what it is for ---

test('the checker finds every kind of import, type-only and dynamic included', () => {
  const text = [
    "import a from './a.js';",
    "import type { B } from '../b.js';",
    "import { type C } from './c.js';",
    "export { d } from './d.js';",
    "export type { E } from './e.js';",
    "export * from './f.js';",
    "import g = require('./g.js');",
    "const h = await import('./h.js');",
    "let i: import('./i.js').I;",
    "import './j.js';",
    '// import k from "./k.js";',
  ].join('\n');
  assert.deepEqual(
    importsOf(text, 'x.ts').map((r) => r.specifier),
    ['./a.js', '../b.js', './c.js', './d.js', './e.js', './f.js', './g.js', './h.js', './i.js', './j.js'],
  );
  assert.throws(() => importsOf("const m = 'x'; await import(m);", 'x.ts'), /not a string literal/);
});

test('the checker reports an import from a lower layer to a higher one, and accepts downward and same-folder ones', () => {
  const graph = importGraph(
    new Map([
      ['data/image.ts', "import type { T } from '../train/trainer.js';\nimport { r } from './rgb.js';\nimport { u } from '../util/fs.js';"],
      ['data/rgb.ts', ''],
      ['train/trainer.ts', "import { decode } from '../data/image.js';"],
      ['util/fs.ts', ''],
      ['index.ts', "export * from './train/trainer.js';"],
    ]),
  );
  assert.deepEqual(upwardImports(graph), ['src/data/image.ts:1 -> src/train/trainer.ts (data imports train)']);
  assert.throws(() => rankOf('extras/x.ts'), /not in the layer order/);
  assert.throws(() => importGraph(new Map([['util/a.ts', "import './gone.js';"]])), /names no file/);
});

test('the checker reports import cycles, type-only ones included', () => {
  const graph = importGraph(
    new Map([
      ['data/bmp.ts', "import type { RgbImage } from './image.js';"],
      ['data/image.ts', "import { decodeBmp } from './bmp.js';"],
      ['data/self.ts', "import type { X } from './self.js';"],
      ['data/leaf.ts', "import { y } from './image.js';"],
    ]),
  );
  assert.deepEqual(importCycles(graph), [['data/bmp.ts', 'data/image.ts'], ['data/self.ts']]);
});

test('the checker reports paths into the shared data folder and uses of sharedDir', () => {
  const text =
    "const a = '../shared/clip';\nconst b = join(cwd, '..', 'shared');\nconst c = `${root}/shared/x`;\nconst d = sharedDir();\nconst ok = 'a shared context';";
  assert.deepEqual(
    sharedPathsIn(text, 'x.ts').map((f) => f.line),
    [1, 2, 3, 4],
  );
});

/** Library files (index.ts and what it imports, directly or not) that live under cli/: the command line is built on the library, not part of it. */
function libraryFilesUnderCli(graph: ImportGraph, entry = 'index.ts'): string[] {
  const seen = new Set<string>([entry]);
  const queue = [entry];
  for (let v = queue.shift(); v !== undefined; v = queue.shift()) {
    for (const { to } of graph.get(v) ?? [])
      if (!seen.has(to)) {
        seen.add(to);
        queue.push(to);
      }
  }
  return [...seen]
    .filter((f) => f.startsWith('cli/'))
    .map((f) => `src/${f}`)
    .sort();
}

test('the checker reports command-line files that the package entry reaches', () => {
  const graph = importGraph(
    new Map([
      ['index.ts', "export { embed } from './clip/embed.js';\nexport { x } from './cli/lib/x.js';"],
      ['clip/embed.ts', "import { y } from '../cli/lib/y.js';"],
      ['cli/lib/x.ts', ''],
      ['cli/lib/y.ts', ''],
      ['cli/main.ts', "import { embed } from '../clip/embed.js';"],
    ]),
  );
  assert.deepEqual(libraryFilesUnderCli(graph), ['src/cli/lib/x.ts', 'src/cli/lib/y.ts']);
});

// --- the checks on src/ ---

const sources = readSources(SRC);
const graph = importGraph(sources);

test('src/ is read: every layer has files and the package entry is there', () => {
  assert.ok(existsSync(join(SRC, 'index.ts')));
  for (const layer of LAYERS)
    assert.ok(
      [...sources.keys()].some((f) => f.startsWith(`${layer}/`)),
      `no files under src/${layer}/`,
    );
});

test(`imports run downward: ${LAYERS.join(' < ')} < the package entry`, () => {
  assert.deepEqual(upwardImports(graph), []);
});

test('no import cycle under src/, type-only imports included', () => {
  assert.deepEqual(importCycles(graph), []);
});

test('the package entry reaches no file under src/cli/: library code lives in the library layers', () => {
  assert.deepEqual(libraryFilesUnderCli(graph), []);
});

test('no path into the shared data folder under src/: it holds test data, which the library never reads', () => {
  const found: string[] = [];
  for (const [file, text] of sources) {
    for (const hit of sharedPathsIn(text, file)) found.push(`src/${file}:${hit.line}: ${hit.text}`);
  }
  assert.deepEqual(found, []);
});
