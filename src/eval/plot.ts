/**
 * Dependency-free SVG charts for evaluation reports: a prediction-vs-MOS scatter plot with the fitted
 * logistic and the figures in a legend box, and a per-epoch line plot with an optional second y axis
 * (training loss on the left, validation SRCC on the right). The output is plain SVG 1.1 that browsers
 * and librsvg (hence sharp, for PNG) render alike; non-finite values are skipped, never written.
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
  let step = [1, 2, 5, 10].map((m) => m * mag).reduce((best, s) => (Math.abs(Math.log(s / rough)) < Math.abs(Math.log(best / rough)) ? s : best));
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
  constructor(readonly width: number, readonly height: number, readonly left: number, readonly top: number, readonly right: number, readonly bottom: number) {}

  get x0(): number { return this.left; }
  get x1(): number { return this.width - this.right; }
  get y0(): number { return this.height - this.bottom; }
  get y1(): number { return this.top; }

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

function open(f: Frame, title: string, clip: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${f.width}" height="${f.height}" viewBox="0 0 ${f.width} ${f.height}" font-family="${FONT}">`,
    `<title>${esc(title)}</title>`,
    `<defs><clipPath id="${clip}"><rect x="${px(f.x0)}" y="${px(f.y1)}" width="${px(f.x1 - f.x0)}" height="${px(f.y0 - f.y1)}"/></clipPath></defs>`,
    `<rect width="${f.width}" height="${f.height}" fill="#ffffff"/>`,
    `<rect x="${px(f.x0)}" y="${px(f.y1)}" width="${px(f.x1 - f.x0)}" height="${px(f.y0 - f.y1)}" fill="#fbfbfb"/>`,
    `<text x="${px(f.width / 2)}" y="30" text-anchor="middle" font-size="17" font-weight="bold" fill="#222">${esc(title)}</text>`,
  ];
}

/** Grid lines, the frame, tick marks and tick labels; `right` draws a second y axis on the right. */
function axes(f: Frame, x: Axis, y: Axis, right?: Axis): string[] {
  const out: string[] = ['<g stroke="#e3e3e3" stroke-width="1">'];
  for (const t of x.ticks) out.push(`<line x1="${px(f.sx(x, t))}" y1="${px(f.y1)}" x2="${px(f.sx(x, t))}" y2="${px(f.y0)}"/>`);
  for (const t of y.ticks) out.push(`<line x1="${px(f.x0)}" y1="${px(f.sy(y, t))}" x2="${px(f.x1)}" y2="${px(f.sy(y, t))}"/>`);
  out.push('</g>');
  out.push(`<rect x="${px(f.x0)}" y="${px(f.y1)}" width="${px(f.x1 - f.x0)}" height="${px(f.y0 - f.y1)}" fill="none" stroke="#444" stroke-width="1"/>`);
  out.push('<g stroke="#444" stroke-width="1">');
  for (const t of x.ticks) out.push(`<line x1="${px(f.sx(x, t))}" y1="${px(f.y0)}" x2="${px(f.sx(x, t))}" y2="${px(f.y0 + 5)}"/>`);
  for (const t of y.ticks) out.push(`<line x1="${px(f.x0 - 5)}" y1="${px(f.sy(y, t))}" x2="${px(f.x0)}" y2="${px(f.sy(y, t))}"/>`);
  if (right) for (const t of right.ticks) out.push(`<line x1="${px(f.x1)}" y1="${px(f.sy(right, t))}" x2="${px(f.x1 + 5)}" y2="${px(f.sy(right, t))}"/>`);
  out.push('</g>');
  out.push('<g font-size="12" fill="#333">');
  for (const t of x.ticks) out.push(`<text x="${px(f.sx(x, t))}" y="${px(f.y0 + 19)}" text-anchor="middle">${esc(x.label(t))}</text>`);
  for (const t of y.ticks) out.push(`<text x="${px(f.x0 - 8)}" y="${px(f.sy(y, t) + 4)}" text-anchor="end">${esc(y.label(t))}</text>`);
  if (right) for (const t of right.ticks) out.push(`<text x="${px(f.x1 + 8)}" y="${px(f.sy(right, t) + 4)}" text-anchor="start">${esc(right.label(t))}</text>`);
  out.push('</g>');
  return out;
}

function axisLabels(f: Frame, xLabel?: string, yLabel?: string, y2Label?: string): string[] {
  const out: string[] = [];
  const midY = (f.y0 + f.y1) / 2;
  if (xLabel) out.push(`<text x="${px((f.x0 + f.x1) / 2)}" y="${px(f.height - 16)}" text-anchor="middle" font-size="14" fill="#222">${esc(xLabel)}</text>`);
  if (yLabel) out.push(`<text transform="translate(20 ${px(midY)}) rotate(-90)" text-anchor="middle" font-size="14" fill="#222">${esc(yLabel)}</text>`);
  if (y2Label) out.push(`<text transform="translate(${px(f.width - 16)} ${px(midY)}) rotate(90)" text-anchor="middle" font-size="14" fill="#222">${esc(y2Label)}</text>`);
  return out;
}

/** An SVG path through the points, broken wherever a value is missing. */
function pathData(points: Array<[number, number] | null>): string {
  let d = '';
  let pen = false;
  for (const p of points) {
    if (!p) { pen = false; continue; }
    d += `${pen ? 'L' : 'M'}${px(p[0])} ${px(p[1])}`;
    pen = true;
  }
  return d;
}

/**
 * Predicted score (x) against MOS (y): one semi-transparent dot per image, the fitted mapping as a curve
 * when `fit` is given, and a legend box in the top-left corner with the figures (`legend` lines).
 * Pairs with a non-finite value are left out.
 */
export function scatterPlotSvg(opts: { pred: number[]; mos: number[]; title: string; xLabel?: string; yLabel?: string; fit?: (x: number) => number; legend: string[] }): string {
  const { pred, mos, title, fit, legend } = opts;
  if (pred.length !== mos.length) throw new Error(`scatterPlotSvg: ${pred.length} predictions but ${mos.length} MOS values`);
  const keep = pred.map((p, i) => Number.isFinite(p) && Number.isFinite(mos[i]));
  const xs = pred.filter((_, i) => keep[i]);
  const ys = mos.filter((_, i) => keep[i]);

  const f = new Frame(720, 540, 76, 52, 28, 62);
  const x = niceAxis(...extent(xs));
  const y = niceAxis(...extent(ys));
  const clip = clipId(`scatter\u0000${title}`);
  const out = open(f, title, clip);
  out.push(...axes(f, x, y));

  // Dense clouds get smaller, fainter dots so that the density still shows.
  const r = xs.length > 2000 ? 1.8 : xs.length > 300 ? 2.6 : 3.4;
  const alpha = xs.length > 2000 ? 0.25 : xs.length > 300 ? 0.4 : 0.55;
  out.push(`<g clip-path="url(#${clip})" fill="${POINT_COLOUR}" fill-opacity="${alpha}" stroke="${POINT_COLOUR}" stroke-opacity="0.8" stroke-width="0.5">`);
  for (let i = 0; i < xs.length; i++) out.push(`<circle cx="${px(f.sx(x, xs[i]!))}" cy="${px(f.sy(y, ys[i]!))}" r="${r}"/>`);
  out.push('</g>');

  if (fit) {
    // Sample densely across the x axis; values far outside the y range are held just beyond it (the clip
    // path hides them) so a steep logistic cannot produce huge coordinates.
    const span = y.hi - y.lo;
    const samples: Array<[number, number] | null> = [];
    for (let k = 0; k <= 240; k++) {
      const xv = x.lo + ((x.hi - x.lo) * k) / 240;
      const yv = fit(xv);
      samples.push(Number.isFinite(yv) ? [f.sx(x, xv), f.sy(y, Math.min(y.hi + span, Math.max(y.lo - span, yv)))] : null);
    }
    const d = pathData(samples);
    if (d) out.push(`<path d="${d}" clip-path="url(#${clip})" fill="none" stroke="${FIT_COLOUR}" stroke-width="2.2" stroke-linejoin="round"/>`);
  }

  // Legend: the fitted-curve swatch, then the figures, in a white box over the grid.
  const fontSize = 13;
  const lineHeight = 19;
  const rows: Array<{ text: string; swatch: boolean }> = [
    ...(fit ? [{ text: 'fitted mapping', swatch: true }] : []),
    ...legend.map((text) => ({ text, swatch: false })),
  ];
  if (rows.length) {
    const swatchW = fit ? 26 : 0;
    const w = 20 + swatchW + Math.max(...rows.map((row) => textWidth(row.text, fontSize)));
    const h = 12 + rows.length * lineHeight;
    const bx = f.x0 + 12;
    const by = f.y1 + 12;
    out.push(`<g font-size="${fontSize}" fill="#222">`);
    out.push(`<rect x="${px(bx)}" y="${px(by)}" width="${px(w)}" height="${px(h)}" rx="4" fill="#ffffff" fill-opacity="0.9" stroke="#999" stroke-width="1"/>`);
    rows.forEach((row, k) => {
      const baseline = by + 6 + lineHeight * (k + 1) - 5;
      if (row.swatch) out.push(`<line x1="${px(bx + 10)}" y1="${px(baseline - 4)}" x2="${px(bx + 10 + swatchW - 6)}" y2="${px(baseline - 4)}" stroke="${FIT_COLOUR}" stroke-width="2.2"/>`);
      out.push(`<text x="${px(bx + 10 + swatchW)}" y="${px(baseline)}">${esc(row.text)}</text>`);
    });
    out.push('</g>');
  }

  out.push(...axisLabels(f, opts.xLabel ?? 'Predicted score', opts.yLabel ?? 'MOS'));
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/**
 * One line per series over a shared x axis (e.g. epochs); series with `axis: 'right'` use a second y
 * axis on the right (e.g. validation SRCC beside the training loss). Series with at most 60 points get
 * a dot per point. A non-finite y breaks the line. The legend runs above the plot, so it never hides
 * data. When every series is on the right axis they are drawn on the left one instead.
 */
export function linePlotSvg(opts: { title: string; xLabel: string; series: Array<{ name: string; x: number[]; y: number[]; axis?: 'left' | 'right' }>; yLabel?: string; y2Label?: string }): string {
  const { title, series } = opts;
  for (const s of series) {
    if (s.x.length !== s.y.length) throw new Error(`linePlotSvg: series "${s.name}" has ${s.x.length} x values but ${s.y.length} y values`);
  }
  const allRight = series.length > 0 && series.every((s) => s.axis === 'right');
  const onRight = (s: (typeof series)[number]): boolean => s.axis === 'right' && !allRight;
  const hasRight = series.some(onRight);

  // Legend entries wrap into rows above the plot area; the top margin grows with them.
  const fontSize = 13;
  const entries = series.map((s, k) => ({ text: onRight(s) ? `${s.name} (right axis)` : s.name, colour: PALETTE[k % PALETTE.length]!, dashed: onRight(s) }));
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
  const f = new Frame(width, 500 + 20 * legendRows.length, 80, 48 + 20 * legendRows.length + 8, hasRight ? 80 : 30, 62);

  const xAll = series.flatMap((s) => s.x.filter((v, i) => Number.isFinite(v) && Number.isFinite(s.y[i])));
  const integerX = xAll.length > 0 && xAll.every(Number.isInteger);
  const x = niceAxis(...extent(xAll), 6, integerX);
  const yOf = (right: boolean): Axis =>
    niceAxis(...extent(series.filter((s) => onRight(s) === right).flatMap((s) => s.y.filter((v, i) => Number.isFinite(s.x[i]) && Number.isFinite(v)))));
  const y = yOf(false);
  const y2 = hasRight ? yOf(true) : undefined;

  const clip = clipId(`line\u0000${title}`);
  const out = open(f, title, clip);
  out.push(...axes(f, x, y, y2));

  series.forEach((s, k) => {
    const axis = onRight(s) ? y2! : y;
    const { colour, dashed } = entries[k]!;
    const pts = s.x.map((xv, i): [number, number] | null =>
      Number.isFinite(xv) && Number.isFinite(s.y[i]) ? [f.sx(x, xv), f.sy(axis, s.y[i]!)] : null);
    const d = pathData(pts);
    out.push(`<g clip-path="url(#${clip})">`);
    if (d) out.push(`<path d="${d}" fill="none" stroke="${colour}" stroke-width="2"${dashed ? ' stroke-dasharray="7 4"' : ''} stroke-linejoin="round" stroke-linecap="round"/>`);
    if (s.x.length <= 60) {
      for (const p of pts) if (p) out.push(`<circle cx="${px(p[0])}" cy="${px(p[1])}" r="2.8" fill="${colour}"/>`);
    }
    out.push('</g>');
  });

  if (entries.length) {
    out.push(`<g font-size="${fontSize}" fill="#222">`);
    legendRows.forEach((row, r) => {
      const rowWidth = row.length ? row[row.length - 1]!.x + 30 + textWidth(row[row.length - 1]!.entry.text, fontSize) : 0;
      const left = (width - rowWidth) / 2;
      const baseline = 52 + 20 * r;
      for (const { entry, x: dx } of row) {
        out.push(`<line x1="${px(left + dx)}" y1="${px(baseline - 4)}" x2="${px(left + dx + 24)}" y2="${px(baseline - 4)}" stroke="${entry.colour}" stroke-width="2.5"${entry.dashed ? ' stroke-dasharray="7 4"' : ''}/>`);
        out.push(`<text x="${px(left + dx + 30)}" y="${px(baseline)}">${esc(entry.text)}</text>`);
      }
    });
    out.push('</g>');
  }

  out.push(...axisLabels(f, opts.xLabel, opts.yLabel, hasRight ? opts.y2Label : undefined));
  out.push('</svg>');
  return out.join('\n') + '\n';
}
