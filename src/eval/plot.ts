/**
 * Dependency-free SVG charts for evaluation reports: a prediction-vs-MOS scatter plot with the fitted
 * logistic and the figures in a legend box placed where it hides no data, and a per-epoch line plot with
 * one panel per quantity (training loss above, validation SRCC below, on a shared x axis) and the chosen
 * epoch marked. The output is plain SVG 1.1 that browsers and librsvg (hence sharp, for PNG) render alike;
 * non-finite values are skipped, never written.
 */

const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif';
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
const POINT_COLOUR = '#1f77b4';
const FIT_COLOUR = '#d62728';

/** Escapes text for XML content and attribute values, dropping control characters XML forbids. */
function esc(text: string): string {
  return text
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

/** A pixel coordinate with two decimals, never "-0". */
function px(v: number): string {
  const r = Math.round(v * 100) / 100;
  return String(r === 0 ? 0 : r);
}

/** Rough width of a text in DejaVu Sans, enough to size a legend box. */
function textWidth(text: string, fontSize: number): number {
  return text.length * fontSize * 0.6;
}

interface Axis {
  lo: number;
  hi: number;
  ticks: number[];
  label(v: number): string;
}

/**
 * An axis over [min, max] with a small margin (so no dot sits on the frame), ticks at "nice" values
 * (steps of 1, 2 or 5 × 10^k, about `target` intervals) inside it; `integer` keeps the step ≥ 1 for
 * counts such as epochs.
 */
function niceAxis(min: number, max: number, target = 6, integer = false): Axis {
  if (!Number.isFinite(min) || !Number.isFinite(max)) [min, max] = [0, 1];
  // A range too small for the float resolution at this magnitude is drawn as a single value.
  if (max - min <= Math.max(Math.abs(min), Math.abs(max)) * 1e-12) {
    const pad = Math.abs(min) * 0.1 || 1;
    [min, max] = [min - pad, max + pad];
  }
  const margin = (max - min) * 0.04;
  const lo = min - margin;
  const hi = max + margin;
  const rough = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(rough));
  // The 1-2-5 step nearest (in ratio) to the rough step.
  let step = [1, 2, 5, 10]
    .map((m) => m * mag)
    .reduce((best, s) => (Math.abs(Math.log(s / rough)) < Math.abs(Math.log(best / rough)) ? s : best));
  if (integer) step = Math.max(1, Math.round(step));
  const first = Math.ceil(lo / step - 1e-9);
  const ticks: number[] = [];
  for (let k = first; k * step <= hi + step * 1e-9 && ticks.length <= 100; k++) ticks.push(k * step);
  const decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
  return {
    lo,
    hi,
    ticks,
    label: (v) => {
      const s = v.toFixed(decimals);
      return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s;
    },
  };
}

function extent(values: Iterable<number>): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return [lo, hi];
}

/** The plotting area inside the margins, and value → pixel maps for its axes. */
class Frame {
  constructor(
    readonly width: number,
    readonly height: number,
    readonly left: number,
    readonly top: number,
    readonly right: number,
    readonly bottom: number,
  ) {}

  get x0(): number {
    return this.left;
  }
  get x1(): number {
    return this.width - this.right;
  }
  get y0(): number {
    return this.height - this.bottom;
  }
  get y1(): number {
    return this.top;
  }

  sx(axis: Axis, v: number): number {
    return this.x0 + ((v - axis.lo) / (axis.hi - axis.lo)) * (this.x1 - this.x0);
  }

  sy(axis: Axis, v: number): number {
    return this.y0 - ((v - axis.lo) / (axis.hi - axis.lo)) * (this.y0 - this.y1);
  }
}

/** Name for a clip path: stable for the same chart, distinct between charts inlined in one page. */
function clipId(seed: string): string {
  let h = 2166136261;
  for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 16777619) >>> 0;
  return `plot-area-${h.toString(16)}`;
}

/** The SVG's opening: the title, and for each plotting area its clip path (by id) and background. */
function open(f: Frame, title: string, areas: ReadonlyArray<{ id: string; frame: Frame }>): string[] {
  const rect = (a: Frame): string => `x="${px(a.x0)}" y="${px(a.y1)}" width="${px(a.x1 - a.x0)}" height="${px(a.y0 - a.y1)}"`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${f.width}" height="${f.height}" viewBox="0 0 ${f.width} ${f.height}" font-family="${FONT}">`,
    `<title>${esc(title)}</title>`,
    `<defs>${areas.map((a) => `<clipPath id="${a.id}"><rect ${rect(a.frame)}/></clipPath>`).join('')}</defs>`,
    `<rect width="${f.width}" height="${f.height}" fill="#ffffff"/>`,
    ...areas.map((a) => `<rect ${rect(a.frame)} fill="#fbfbfb"/>`),
    `<text x="${px(f.width / 2)}" y="30" text-anchor="middle" font-size="17" font-weight="bold" fill="#222">${esc(title)}</text>`,
  ];
}

/** Grid lines, the frame, tick marks and tick labels (the x labels only where `xLabels`, e.g. the bottom panel). */
function axes(f: Frame, x: Axis, y: Axis, xLabels = true): string[] {
  const out: string[] = ['<g stroke="#e3e3e3" stroke-width="1">'];
  for (const t of x.ticks) out.push(`<line x1="${px(f.sx(x, t))}" y1="${px(f.y1)}" x2="${px(f.sx(x, t))}" y2="${px(f.y0)}"/>`);
  for (const t of y.ticks) out.push(`<line x1="${px(f.x0)}" y1="${px(f.sy(y, t))}" x2="${px(f.x1)}" y2="${px(f.sy(y, t))}"/>`);
  out.push('</g>');
  out.push(
    `<rect x="${px(f.x0)}" y="${px(f.y1)}" width="${px(f.x1 - f.x0)}" height="${px(f.y0 - f.y1)}" fill="none" stroke="#444" stroke-width="1"/>`,
  );
  out.push('<g stroke="#444" stroke-width="1">');
  for (const t of x.ticks) out.push(`<line x1="${px(f.sx(x, t))}" y1="${px(f.y0)}" x2="${px(f.sx(x, t))}" y2="${px(f.y0 + 5)}"/>`);
  for (const t of y.ticks) out.push(`<line x1="${px(f.x0 - 5)}" y1="${px(f.sy(y, t))}" x2="${px(f.x0)}" y2="${px(f.sy(y, t))}"/>`);
  out.push('</g>');
  out.push('<g font-size="12" fill="#333">');
  if (xLabels)
    for (const t of x.ticks) out.push(`<text x="${px(f.sx(x, t))}" y="${px(f.y0 + 19)}" text-anchor="middle">${esc(x.label(t))}</text>`);
  for (const t of y.ticks) out.push(`<text x="${px(f.x0 - 8)}" y="${px(f.sy(y, t) + 4)}" text-anchor="end">${esc(y.label(t))}</text>`);
  out.push('</g>');
  return out;
}

function xAxisLabel(f: Frame, label: string): string {
  return `<text x="${px((f.x0 + f.x1) / 2)}" y="${px(f.height - 16)}" text-anchor="middle" font-size="14" fill="#222">${esc(label)}</text>`;
}

/** A y axis label, rotated, beside the middle of its frame. */
function yAxisLabel(f: Frame, label: string): string {
  return `<text transform="translate(20 ${px((f.y0 + f.y1) / 2)}) rotate(-90)" text-anchor="middle" font-size="14" fill="#222">${esc(label)}</text>`;
}

/** An SVG path through the points, broken wherever a value is missing. */
function pathData(points: Array<[number, number] | null>): string {
  let d = '';
  let pen = false;
  for (const p of points) {
    if (!p) {
      pen = false;
      continue;
    }
    d += `${pen ? 'L' : 'M'}${px(p[0])} ${px(p[1])}`;
    pen = true;
  }
  return d;
}

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** Whether a point lies inside the box grown by `pad` on every side. */
function inBox(b: Box, p: readonly [number, number], pad: number): boolean {
  return p[0] >= b.x - pad && p[0] <= b.x + b.w + pad && p[1] >= b.y - pad && p[1] <= b.y + b.h + pad;
}

/**
 * Where a w × h legend hides nothing: the first inner corner of the frame (top-left, top-right,
 * bottom-right, bottom-left) that no point (of radius `r`) nor curve sample touches, else null (the
 * legend then goes beside the frame).
 */
function freeCorner(
  f: Frame,
  w: number,
  h: number,
  points: ReadonlyArray<readonly [number, number]>,
  r: number,
  curve: ReadonlyArray<readonly [number, number]>,
): Box | null {
  const inset = 12;
  const left = f.x0 + inset;
  const right = f.x1 - inset - w;
  const top = f.y1 + inset;
  const bottom = f.y0 - inset - h;
  for (const [x, y] of [
    [left, top],
    [right, top],
    [right, bottom],
    [left, bottom],
  ] as const) {
    const box = { x, y, w, h };
    if (points.every((p) => !inBox(box, p, r + 2)) && curve.every((p) => !inBox(box, p, 3))) return box;
  }
  return null;
}

/**
 * Predicted score (x) against MOS (y): one semi-transparent dot per image, the fitted mapping as a curve
 * when `fit` is given, and a legend box with the figures (`legend` lines) in a corner of the plot that
 * no dot or curve touches, or beside the plot when every corner has data. Pairs with a non-finite value
 * are left out.
 */
export function scatterPlotSvg(opts: {
  pred: number[];
  mos: number[];
  title: string;
  xLabel?: string;
  yLabel?: string;
  fit?: (x: number) => number;
  legend: string[];
}): string {
  const { pred, mos, title, fit, legend } = opts;
  if (pred.length !== mos.length) throw new Error(`scatterPlotSvg: ${pred.length} predictions but ${mos.length} MOS values`);
  const keep = pred.map((p, i) => Number.isFinite(p) && Number.isFinite(mos[i]));
  const xs = pred.filter((_, i) => keep[i]);
  const ys = mos.filter((_, i) => keep[i]);

  // The plot area; a legend beside it widens the canvas, not the area, so pixel positions hold either way.
  const width = 720;
  const margin = { left: 76, top: 52, right: 28, bottom: 62 };
  const area = new Frame(width, 540, margin.left, margin.top, margin.right, margin.bottom);
  const x = niceAxis(...extent(xs));
  const y = niceAxis(...extent(ys));
  const points = xs.map((xv, i): [number, number] => [area.sx(x, xv), area.sy(y, ys[i]!)]);
  // Dense clouds get smaller, fainter dots so that the density still shows.
  const r = xs.length > 2000 ? 1.8 : xs.length > 300 ? 2.6 : 3.4;
  const alpha = xs.length > 2000 ? 0.25 : xs.length > 300 ? 0.4 : 0.55;

  // The fit, sampled densely across the x axis; values far outside the y range are held just beyond it
  // (the clip path hides them) so a steep logistic cannot produce huge coordinates.
  const samples: Array<[number, number] | null> = [];
  if (fit) {
    const span = y.hi - y.lo;
    for (let k = 0; k <= 240; k++) {
      const xv = x.lo + ((x.hi - x.lo) * k) / 240;
      const yv = fit(xv);
      samples.push(Number.isFinite(yv) ? [area.sx(x, xv), area.sy(y, Math.min(y.hi + span, Math.max(y.lo - span, yv)))] : null);
    }
  }

  // Legend: the fitted-curve swatch, then the figures, in a white box.
  const fontSize = 13;
  const lineHeight = 19;
  const rows: Array<{ text: string; swatch: boolean }> = [
    ...(fit ? [{ text: 'fitted mapping', swatch: true }] : []),
    ...legend.map((text) => ({ text, swatch: false })),
  ];
  const swatchW = fit ? 26 : 0;
  const legendW = rows.length ? 20 + swatchW + Math.max(...rows.map((row) => textWidth(row.text, fontSize))) : 0;
  const legendH = 12 + rows.length * lineHeight;
  const shown = samples.filter((p): p is [number, number] => p !== null && p[1] >= area.y1 && p[1] <= area.y0);
  let box = rows.length ? freeCorner(area, legendW, legendH, points, r, shown) : null;
  const gap = 16;
  const f =
    rows.length && !box
      ? new Frame(width + legendW + gap, 540, margin.left, margin.top, margin.right + legendW + gap, margin.bottom)
      : area;
  if (rows.length && !box) box = { x: f.x1 + gap, y: f.y1, w: legendW, h: legendH };

  const clip = clipId(`scatter\u0000${title}`);
  const out = open(f, title, [{ id: clip, frame: f }]);
  out.push(...axes(f, x, y));
  out.push(
    `<g clip-path="url(#${clip})" fill="${POINT_COLOUR}" fill-opacity="${alpha}" stroke="${POINT_COLOUR}" stroke-opacity="0.8" stroke-width="0.5">`,
  );
  for (const [cx, cy] of points) out.push(`<circle cx="${px(cx)}" cy="${px(cy)}" r="${r}"/>`);
  out.push('</g>');
  const d = pathData(samples);
  if (d)
    out.push(`<path d="${d}" clip-path="url(#${clip})" fill="none" stroke="${FIT_COLOUR}" stroke-width="2.2" stroke-linejoin="round"/>`);

  if (box) {
    out.push(`<g font-size="${fontSize}" fill="#222">`);
    out.push(
      `<rect x="${px(box.x)}" y="${px(box.y)}" width="${px(box.w)}" height="${px(box.h)}" rx="4" fill="#ffffff" fill-opacity="0.9" stroke="#999" stroke-width="1"/>`,
    );
    rows.forEach((row, k) => {
      const baseline = box.y + 6 + lineHeight * (k + 1) - 5;
      if (row.swatch)
        out.push(
          `<line x1="${px(box.x + 10)}" y1="${px(baseline - 4)}" x2="${px(box.x + 10 + swatchW - 6)}" y2="${px(baseline - 4)}" stroke="${FIT_COLOUR}" stroke-width="2.2"/>`,
        );
      out.push(`<text x="${px(box.x + 10 + swatchW)}" y="${px(baseline)}">${esc(row.text)}</text>`);
    });
    out.push('</g>');
  }

  out.push(xAxisLabel(f, opts.xLabel ?? 'Predicted score'), yAxisLabel(f, opts.yLabel ?? 'MOS'));
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export interface LineSeries {
  name: string;
  x: number[];
  y: number[];
}

export interface LinePanel {
  /** the panel's y axis label */
  yLabel?: string;
  series: LineSeries[];
}

/**
 * Lines over a shared x axis (e.g. epochs), in panels stacked top to bottom, each with its own y axis
 * (e.g. training loss above validation SRCC): quantities of different units never share an axis, so two
 * autoscaled series cannot land on the same pixels. Series with at most 60 points get a dot per point; a
 * non-finite y breaks the line. The legend runs above the plot, so it never hides data. `mark` draws a
 * dashed vertical line through every panel at x (e.g. the chosen epoch), rings the points there and
 * labels it above the top panel.
 */
export function linePlotSvg(opts: { title: string; xLabel: string; panels: LinePanel[]; mark?: { x: number; label: string } }): string {
  const { title, mark } = opts;
  const panels = opts.panels.length ? opts.panels : [{ series: [] }];
  const all = panels.flatMap((p) => p.series);
  for (const s of all) {
    if (s.x.length !== s.y.length) throw new Error(`linePlotSvg: series "${s.name}" has ${s.x.length} x values but ${s.y.length} y values`);
  }
  const finite = (s: LineSeries, i: number): boolean => Number.isFinite(s.x[i]) && Number.isFinite(s.y[i]);

  // Legend entries wrap into rows above the plot area; the top margin grows with them.
  const fontSize = 13;
  const entries = all.map((s, k) => ({ text: s.name, colour: PALETTE[k % PALETTE.length]! }));
  const width = 760;
  const legendRows: Array<Array<{ entry: (typeof entries)[number]; x: number }>> = [];
  let cursor = Infinity;
  for (const entry of entries) {
    const w = 30 + textWidth(entry.text, fontSize) + 18;
    if (cursor + w > width - 40) {
      legendRows.push([]);
      cursor = 0;
    }
    legendRows[legendRows.length - 1]!.push({ entry, x: cursor });
    cursor += w;
  }

  // Panels: one of 400 px, or several of 220 px with a gap; the mark's label gets a line above them.
  const panelH = panels.length === 1 ? 400 : 220;
  const panelGap = 16;
  const top = 48 + 20 * legendRows.length + 8 + (mark ? 20 : 0);
  const bottom = 62;
  const height = top + panels.length * panelH + (panels.length - 1) * panelGap + bottom;
  const frames = panels.map((_, k) => {
    const y1 = top + k * (panelH + panelGap);
    return new Frame(width, height, 80, y1, 30, height - (y1 + panelH));
  });
  const whole = new Frame(width, height, 80, top, 30, bottom);

  const xAll = all.flatMap((s) => s.x.filter((_, i) => finite(s, i)));
  if (mark && Number.isFinite(mark.x)) xAll.push(mark.x);
  const integerX = xAll.length > 0 && xAll.every(Number.isInteger);
  const x = niceAxis(...extent(xAll), 6, integerX);

  const clip = clipId(`line\u0000${title}`);
  const out = open(
    whole,
    title,
    frames.map((frame, k) => ({ id: `${clip}-${k}`, frame })),
  );
  let colourIndex = 0;
  const rings: string[] = [];
  panels.forEach((panel, k) => {
    const f = frames[k]!;
    const y = niceAxis(...extent(panel.series.flatMap((s) => s.y.filter((_, i) => finite(s, i)))), panels.length === 1 ? 6 : 5);
    out.push(...axes(f, x, y, k === panels.length - 1));
    if (panel.yLabel) out.push(yAxisLabel(f, panel.yLabel));
    for (const s of panel.series) {
      const colour = entries[colourIndex++]!.colour;
      const pts = s.x.map((xv, i): [number, number] | null => (finite(s, i) ? [f.sx(x, xv), f.sy(y, s.y[i]!)] : null));
      const d = pathData(pts);
      out.push(`<g clip-path="url(#${clip}-${k})">`);
      if (d) out.push(`<path d="${d}" fill="none" stroke="${colour}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>`);
      if (s.x.length <= 60) {
        for (const p of pts) if (p) out.push(`<circle cx="${px(p[0])}" cy="${px(p[1])}" r="2.8" fill="${colour}"/>`);
      }
      out.push('</g>');
      if (mark) {
        const at = pts.find((p, i) => p && s.x[i] === mark.x);
        if (at) rings.push(`<circle cx="${px(at[0])}" cy="${px(at[1])}" r="6.5" fill="none" stroke="#222" stroke-width="1.6"/>`);
      }
    }
  });

  if (mark && Number.isFinite(mark.x)) {
    const mx = whole.sx(x, mark.x);
    const first = frames[0]!;
    const last = frames[frames.length - 1]!;
    out.push(
      `<line x1="${px(mx)}" y1="${px(first.y1)}" x2="${px(mx)}" y2="${px(last.y0)}" stroke="#222" stroke-width="1.2" stroke-dasharray="5 4"/>`,
    );
    out.push(...rings);
    const anchor = mx < (whole.x0 + whole.x1) / 2 ? 'start' : 'end';
    out.push(
      `<text x="${px(mx + (anchor === 'start' ? -4 : 4))}" y="${px(first.y1 - 7)}" text-anchor="${anchor}" font-size="12" fill="#222">${esc(mark.label)}</text>`,
    );
  }

  if (entries.length) {
    out.push(`<g font-size="${fontSize}" fill="#222">`);
    legendRows.forEach((row, r) => {
      const rowWidth = row.length ? row[row.length - 1]!.x + 30 + textWidth(row[row.length - 1]!.entry.text, fontSize) : 0;
      const left = (width - rowWidth) / 2;
      const baseline = 52 + 20 * r;
      for (const { entry, x: dx } of row) {
        out.push(
          `<line x1="${px(left + dx)}" y1="${px(baseline - 4)}" x2="${px(left + dx + 24)}" y2="${px(baseline - 4)}" stroke="${entry.colour}" stroke-width="2.5"/>`,
        );
        out.push(`<text x="${px(left + dx + 30)}" y="${px(baseline)}">${esc(entry.text)}</text>`);
      }
    });
    out.push('</g>');
  }

  out.push(xAxisLabel(whole, opts.xLabel));
  out.push('</svg>');
  return out.join('\n') + '\n';
}
