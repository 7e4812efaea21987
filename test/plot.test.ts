import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { linePlotSvg, scatterPlotSvg } from '../src/eval/plot.js';
import { Rng } from '../src/util/rng.js';

interface Element {
  name: string;
  attrs: Record<string, string>;
  text: string;
}

const ENTITY = /&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/y;

function unescape(s: string): string {
  return s.replace(/&(amp|lt|gt|quot|apos);/g, (_, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" })[e]!);
}

/** Every `&` must start an entity, and `<` may not appear: what an XML parser demands of text. */
function assertEscaped(s: string, where: string): void {
  assert.ok(!s.includes('<'), `raw "<" in ${where}`);
  for (let i = s.indexOf('&'); i >= 0; i = s.indexOf('&', i + 1)) {
    ENTITY.lastIndex = i;
    assert.ok(ENTITY.test(s), `unescaped "&" in ${where}: ${s.slice(i, i + 12)}`);
  }
}

/**
 * A strict little XML reader, enough for our SVG: checks that tags balance under one <svg> root, that
 * attributes are well quoted, and that text and attribute values are escaped. Returns the elements in
 * document order with their direct text.
 */
function parseSvg(svg: string): Element[] {
  const elements: Element[] = [];
  const stack: Element[] = [];
  let roots = 0;
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"]*")*)\s*(\/?)>/y;
  let i = 0;
  while (i < svg.length) {
    const lt = svg.indexOf('<', i);
    const text = svg.slice(i, lt < 0 ? svg.length : lt);
    assertEscaped(text, 'text');
    if (stack.length) stack[stack.length - 1]!.text += unescape(text);
    else assert.equal(text.trim(), '', 'text outside the root element');
    if (lt < 0) break;
    tag.lastIndex = lt;
    const m = tag.exec(svg);
    assert.ok(m, `malformed tag at ${lt}: ${svg.slice(lt, lt + 60)}`);
    const [, closing, name, attrText, selfClosing] = m;
    if (closing) {
      const top = stack.pop();
      assert.equal(top?.name, name, `</${name}> closes <${top?.name}>`);
    } else {
      const attrs: Record<string, string> = {};
      for (const a of attrText!.matchAll(/([\w:-]+)="([^"]*)"/g)) {
        assert.ok(!(a[1]! in attrs), `duplicate attribute ${a[1]} on <${name}>`);
        assertEscaped(a[2]!, `attribute ${a[1]} of <${name}>`);
        attrs[a[1]!] = unescape(a[2]!);
      }
      const el: Element = { name: name!, attrs, text: '' };
      elements.push(el);
      if (!stack.length) roots++;
      if (!selfClosing) stack.push(el);
    }
    i = tag.lastIndex;
  }
  assert.equal(stack.length, 0, `unclosed: ${stack.map((e) => e.name).join(', ')}`);
  assert.equal(roots, 1, 'exactly one root element');
  assert.equal(elements[0]!.name, 'svg');
  assert.equal(elements[0]!.attrs.xmlns, 'http://www.w3.org/2000/svg');
  return elements;
}

/** No NaN/Infinity anywhere, and every geometric attribute and path number is finite. */
function assertFiniteGeometry(svg: string, elements: Element[]): void {
  assert.ok(!/NaN|Infinity|undefined/.test(svg), 'NaN, Infinity or undefined in the SVG');
  for (const el of elements) {
    for (const key of ['x', 'y', 'x1', 'y1', 'x2', 'y2', 'cx', 'cy', 'r', 'width', 'height']) {
      if (key in el.attrs) assert.ok(Number.isFinite(Number(el.attrs[key])), `<${el.name} ${key}="${el.attrs[key]}">`);
    }
    if (el.name === 'path') {
      assert.match(el.attrs.d!, /^M/);
      for (const n of el.attrs.d!.match(/-?[\d.]+(e-?\d+)?/g) ?? [])
        assert.ok(Number.isFinite(Number(n)) && Math.abs(Number(n)) < 1e5, `path number ${n}`);
    }
  }
}

function texts(elements: Element[]): string[] {
  return elements.filter((e) => e.name === 'text' || e.name === 'title').map((e) => e.text);
}

async function renderPng(svg: string): Promise<{ width?: number; height?: number; format?: string; distinct: boolean }> {
  const png = await sharp(Buffer.from(svg)).png().toBuffer();
  const meta = await sharp(png).metadata();
  const stats = await sharp(png).stats();
  // Not a blank canvas: some channel spans dark to light.
  const distinct = stats.channels.slice(0, 3).some((c) => c.max - c.min > 100);
  return { width: meta.width, height: meta.height, format: meta.format, distinct };
}

function sampleData(n: number, seed = 1): { pred: number[]; mos: number[] } {
  const rng = new Rng(seed);
  const pred = Array.from({ length: n }, () => rng.uniform());
  const mos = pred.map((p) => 5 / (1 + Math.exp(-(p - 0.5) / 0.15)) + rng.normal() * 0.4);
  return { pred, mos };
}

const logistic = (x: number): number => 5 / (1 + Math.exp(-(x - 0.5) / 0.15));

test('scatter plot: one circle per finite pair, fitted curve, legend figures, escaped title', async () => {
  const { pred, mos } = sampleData(120);
  pred.push(NaN, 0.3);
  mos.push(2, Infinity);
  const title = 'Tang <ViT-B/16> on AGIQA-3K & "friends"';
  const legend = ['SRCC 0.861', 'PLCC 0.897', 'KRCC 0.678 & more <x>'];
  const svg = scatterPlotSvg({ pred, mos, title, fit: logistic, legend });
  const els = parseSvg(svg);
  assertFiniteGeometry(svg, els);

  assert.equal(els.filter((e) => e.name === 'circle').length, 120, 'pairs with a non-finite value are left out');
  const circles = els.filter((e) => e.name === 'circle');
  assert.ok(
    circles.every((c) => Number(c.attrs.cx) >= 0 && Number(c.attrs.cx) <= 720 && Number(c.attrs.cy) >= 0 && Number(c.attrs.cy) <= 540),
  );
  const pointGroup = els.find((e) => e.name === 'g' && e.attrs['fill-opacity'] !== undefined)!;
  assert.ok(Number(pointGroup.attrs['fill-opacity']) < 1, 'points are semi-transparent');
  assert.equal(els.filter((e) => e.name === 'path').length, 1, 'the fitted curve');

  const t = texts(els);
  for (const s of legend) assert.ok(t.includes(s), `legend "${s}"`);
  assert.ok(t.includes('fitted mapping'));
  assert.equal(t.filter((s) => s === title).length, 2, 'title as <title> and as visible text');
  assert.ok(svg.includes('Tang &lt;ViT-B/16&gt; on AGIQA-3K &amp; &quot;friends&quot;'));
  assert.ok(t.includes('Predicted score') && t.includes('MOS'), 'default axis labels');
  // Tick labels: a handful of numbers on each axis.
  assert.ok(t.filter((s) => /^-?\d+(\.\d+)?$/.test(s)).length >= 8);

  const png = await renderPng(svg);
  assert.deepEqual([png.format, png.height], ['png', 540]);
  assert.ok(png.width! >= 720);
  assert.ok(png.distinct);
});

test('scatter plot without a fit, with custom labels', () => {
  const { pred, mos } = sampleData(30, 2);
  const svg = scatterPlotSvg({ pred, mos, title: 'zero-shot', xLabel: 'CLIP-IQA score', yLabel: 'MOS (0–5)', legend: ['SRCC 0.5'] });
  const els = parseSvg(svg);
  assertFiniteGeometry(svg, els);
  assert.equal(els.filter((e) => e.name === 'path').length, 0);
  assert.equal(els.filter((e) => e.name === 'circle').length, 30);
  const t = texts(els);
  assert.ok(t.includes('CLIP-IQA score') && t.includes('MOS (0–5)') && !t.includes('fitted mapping'));
});

test('degenerate inputs still give well-formed SVG without NaN', async () => {
  const steep = (x: number): number => 4 / (1 + Math.exp(-(x - 0.5) / 1e-9)) + 1;
  const cases = [
    { pred: [], mos: [] },
    { pred: [0.5], mos: [3] },
    { pred: [1, 1, 1, 1], mos: [2, 3, 4, 5] },
    { pred: [0, 0, 0], mos: [0, 0, 0] },
    { pred: [1e9, 1e9 + 1e-6], mos: [1, 2] },
    { pred: [NaN, Infinity], mos: [1, 2] },
  ];
  for (const c of cases) {
    const svg = scatterPlotSvg({ ...c, title: 'edge', fit: steep, legend: [] });
    const els = parseSvg(svg);
    assertFiniteGeometry(svg, els);
    assert.equal(
      els.filter((e) => e.name === 'circle').length,
      c.pred.filter((p, i) => Number.isFinite(p) && Number.isFinite(c.mos[i])).length,
    );
  }
  const png = await renderPng(scatterPlotSvg({ pred: [], mos: [], title: 'empty', legend: ['n = 0'] }));
  assert.equal(png.format, 'png');
  assert.throws(() => scatterPlotSvg({ pred: [1, 2], mos: [1], title: 'x', legend: [] }), /2 predictions but 1 MOS values/);
});

test('scatter plot of 10,000 points', () => {
  const { pred, mos } = sampleData(10_000, 3);
  const svg = scatterPlotSvg({ pred, mos, title: 'KonIQ-10k', fit: logistic, legend: ['SRCC 0.9'] });
  const els = parseSvg(svg);
  assert.equal(els.filter((e) => e.name === 'circle').length, 10_000);
  assert.ok(svg.length < 1_500_000, `${svg.length} bytes`);
});

/** The [x, y] pixel pairs of a path's "M x y L x y ..." data. */
function pathPoints(d: string): Array<[number, number]> {
  return [...d.matchAll(/[ML](-?[\d.]+) (-?[\d.]+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
}

function trainingPlot(epochs: number[], loss: number[], srcc: number[], chosen?: number): string {
  return linePlotSvg({
    title: 'Training & validation',
    xLabel: 'Epoch',
    panels: [
      { yLabel: 'Loss (MSE)', series: [{ name: 'training loss', x: epochs, y: loss }] },
      { yLabel: 'Validation SRCC', series: [{ name: 'validation SRCC', x: epochs, y: srcc }] },
    ],
    mark: chosen === undefined ? undefined : { x: chosen, label: `chosen epoch ${chosen} (on val)` },
  });
}

test('line plot: loss and SRCC in panels of their own, so few epochs cannot put them on one line', () => {
  // Two or three epochs where both rise: autoscaled on two axes of one panel, the lines were identical.
  for (const [loss, srcc] of [
    [
      [0.2, 0.3],
      [0.5, 0.6],
    ],
    [
      [0.9, 0.5, 0.42],
      [0.55, 0.71, 0.74],
    ],
    [[1], [0.5]],
  ]) {
    const epochs = loss!.map((_, i) => i + 1);
    const svg = trainingPlot(epochs, loss!, srcc!);
    const els = parseSvg(svg);
    assertFiniteGeometry(svg, els);
    const dots = els.filter((e) => e.name === 'circle');
    const ys = (colour: string): number[] => dots.filter((c) => c.attrs.fill === colour).map((c) => Number(c.attrs.cy));
    const lossY = ys('#1f77b4');
    const srccY = ys('#d62728');
    assert.equal(lossY.length, epochs.length);
    assert.equal(srccY.length, epochs.length);
    assert.ok(
      Math.max(...lossY) < Math.min(...srccY),
      `loss pixels ${lossY.join(', ')} above SRCC pixels ${srccY.join(', ')}, never shared`,
    );
    const t = texts(els);
    for (const s of ['Loss (MSE)', 'Validation SRCC', 'training loss', 'validation SRCC', 'Epoch']) assert.ok(t.includes(s), s);
  }
});

test('line plot: the chosen epoch is marked through both panels, its points ringed and labelled', () => {
  const epochs = [1, 2, 3, 4, 5];
  const svg = trainingPlot(epochs, [0.9, 0.6, 0.5, 0.45, 0.44], [0.5, 0.7, 0.78, 0.76, 0.75], 3);
  const els = parseSvg(svg);
  assertFiniteGeometry(svg, els);
  const dots = els.filter((e) => e.name === 'circle' && e.attrs.fill !== 'none');
  const at = (colour: string): Element => dots.filter((c) => c.attrs.fill === colour)[2]!;
  const lossDot = at('#1f77b4');
  const srccDot = at('#d62728');
  const cx = Number(srccDot.attrs.cx);
  assert.equal(Number(lossDot.attrs.cx), cx);
  const marks = els.filter(
    (e) => e.name === 'line' && e.attrs['stroke-dasharray'] && Number(e.attrs.x1) === cx && Number(e.attrs.x2) === cx,
  );
  assert.equal(marks.length, 1, 'one dashed vertical line at epoch 3');
  const [top, bottom] = [Number(marks[0]!.attrs.y1), Number(marks[0]!.attrs.y2)].sort((a, b) => a - b);
  assert.ok(top! < Number(lossDot.attrs.cy) && bottom! > Number(srccDot.attrs.cy), 'it runs through both panels');
  const rings = els.filter((e) => e.name === 'circle' && e.attrs.fill === 'none');
  for (const dot of [lossDot, srccDot]) {
    assert.ok(
      rings.some((r) => r.attrs.cx === dot.attrs.cx && r.attrs.cy === dot.attrs.cy && Number(r.attrs.r) > Number(dot.attrs.r)),
      'ringed',
    );
  }
  assert.ok(texts(els).includes('chosen epoch 3 (on val)'));
  const unmarked = parseSvg(trainingPlot(epochs, [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]));
  assert.equal(unmarked.filter((e) => e.name === 'line' && e.attrs['stroke-dasharray']).length, 0);
});

test('line plot: gaps at missing values, integer epoch ticks, a PNG that renders', async () => {
  const epochs = Array.from({ length: 20 }, (_, i) => i + 1);
  const loss = epochs.map((e) => 1.5 * Math.exp(-e / 5) + 0.2);
  const srccs = epochs.map((e) => (e === 8 ? NaN : 0.85 - 0.4 * Math.exp(-e / 4)));
  const svg = trainingPlot(epochs, loss, srccs, 20);
  const els = parseSvg(svg);
  assertFiniteGeometry(svg, els);
  const paths = els.filter((e) => e.name === 'path');
  assert.equal(paths.length, 2);
  assert.equal(paths[1]!.attrs.d!.match(/M/g)!.length, 2, 'the NaN at epoch 8 breaks the SRCC line');
  assert.equal(pathPoints(paths[1]!.attrs.d!).length, 19);
  assert.equal(els.filter((e) => e.name === 'circle' && e.attrs.fill !== 'none').length, 39, 'a dot per finite point');
  // Epochs are integers: integer tick labels only, under the bottom panel only.
  const xTicks = els.filter((e) => e.name === 'text' && e.attrs['text-anchor'] === 'middle' && /^\d+$/.test(e.text));
  assert.ok(xTicks.length >= 3);
  assert.equal(new Set(xTicks.map((e) => e.attrs.y)).size, 1);
  const panels = els.filter((e) => e.name === 'rect' && e.attrs.fill === '#fbfbfb');
  assert.equal(panels.length, 2);
  const srccTicks = els.filter(
    (e) => e.name === 'text' && e.attrs['text-anchor'] === 'end' && Number(e.attrs.y) > Number(panels[1]!.attrs.y),
  );
  assert.ok(
    srccTicks.length >= 3 && srccTicks.every((e) => Number(e.text) > 0.3 && Number(e.text) < 1),
    `SRCC ticks ${srccTicks.map((e) => e.text).join(', ')}`,
  );

  const png = await renderPng(svg);
  assert.deepEqual([png.format, png.width], ['png', 760]);
  assert.ok(png.distinct);
});

test('line plot: one panel of many series wraps the legend, long series without dots', () => {
  const x = Array.from({ length: 200 }, (_, i) => i / 10);
  const series = Array.from({ length: 9 }, (_, k) => ({ name: `run ${k} with a fairly long name`, x, y: x.map((v) => Math.sin(v + k)) }));
  const svg = linePlotSvg({ title: 'sweep', xLabel: 'step', panels: [{ series }] });
  const els = parseSvg(svg);
  assertFiniteGeometry(svg, els);
  assert.equal(els.filter((e) => e.name === 'path').length, 9);
  assert.equal(els.filter((e) => e.name === 'circle').length, 0);
  assert.ok(texts(els).includes('run 8 with a fairly long name'));
  const height = Number(els[0]!.attrs.height);
  assert.ok(height > 540, 'legend rows add height');

  for (const panels of [[], [{ series: [] }]]) {
    const empty = linePlotSvg({ title: 'nothing yet', xLabel: 'epoch', panels, mark: { x: 1, label: 'chosen epoch 1' } });
    assertFiniteGeometry(empty, parseSvg(empty));
  }
  assert.throws(
    () => linePlotSvg({ title: 't', xLabel: 'x', panels: [{ series: [{ name: 'a', x: [1, 2], y: [1] }] }] }),
    /series "a" has 2 x values but 1 y values/,
  );
});

/** The legend box: the rounded rectangle. */
function legendBox(els: Element[]): { x: number; y: number; w: number; h: number } {
  const rect = els.find((e) => e.name === 'rect' && e.attrs.rx !== undefined)!;
  return { x: Number(rect.attrs.x), y: Number(rect.attrs.y), w: Number(rect.attrs.width), h: Number(rect.attrs.height) };
}

test('scatter plot: the legend box covers no point and no part of the fitted curve', () => {
  const rng = new Rng(5);
  // A weak correlation fills every corner; a strong one leaves the top-left free.
  const weakPred = Array.from({ length: 400 }, () => rng.uniform());
  const weakMos = weakPred.map((p) => 1 + 4 * (0.5 * p + 0.5 * rng.uniform()));
  const strong = sampleData(300, 6);
  const cases = [
    { pred: weakPred, mos: weakMos, fit: (v: number): number => 1.5 + 2 * v, beside: true },
    { ...strong, fit: logistic, beside: false },
  ];
  for (const c of cases) {
    const legend = ['n 400', 'SRCC 0.5123', 'KRCC 0.3512', 'PLCC 0.5011', 'PLCC (logistic) 0.5102', 'RMSE 0.8123'];
    const svg = scatterPlotSvg({ pred: c.pred, mos: c.mos, title: 'legend', fit: c.fit, legend });
    const els = parseSvg(svg);
    assertFiniteGeometry(svg, els);
    const box = legendBox(els);
    for (const p of els.filter((e) => e.name === 'circle')) {
      const [cx, cy, r] = [Number(p.attrs.cx), Number(p.attrs.cy), Number(p.attrs.r)];
      const inside = cx + r >= box.x && cx - r <= box.x + box.w && cy + r >= box.y && cy - r <= box.y + box.h;
      assert.ok(!inside, `point at ${cx},${cy} under the legend ${JSON.stringify(box)}`);
    }
    const frame = els.find((e) => e.name === 'rect' && e.attrs.fill === '#fbfbfb')!;
    const [fy0, fy1] = [Number(frame.attrs.y), Number(frame.attrs.y) + Number(frame.attrs.height)];
    const curve = pathPoints(els.find((e) => e.name === 'path')!.attrs.d!).filter(([, y]) => y >= fy0 && y <= fy1);
    assert.ok(
      curve.every(([x, y]) => x < box.x || x > box.x + box.w || y < box.y || y > box.y + box.h),
      'curve under the legend',
    );
    const frameRight = Number(frame.attrs.x) + Number(frame.attrs.width);
    assert.equal(box.x > frameRight, c.beside, c.beside ? 'no free corner: beside the plot' : 'a free corner is used');
    const t = texts(els);
    for (const s of legend) assert.ok(t.includes(s), s);
  }
});

test('the SVG checker itself rejects malformed output', () => {
  const ns = 'xmlns="http://www.w3.org/2000/svg"';
  assert.throws(() => parseSvg(`<svg ${ns}><g></svg>`), /closes/);
  assert.throws(() => parseSvg(`<svg ${ns}><text>a & b</text></svg>`), /unescaped "&"/);
  assert.throws(() => parseSvg(`<svg ${ns}><text x=1>a</text></svg>`), /malformed tag/);
  assert.throws(() => parseSvg(`<svg ${ns}/><svg ${ns}/>`), /one root/);
  const bad = `<svg ${ns}><circle cx="NaN" cy="1" r="2"/></svg>`;
  assert.throws(() => assertFiniteGeometry(bad, parseSvg(bad)), /NaN/);
});
