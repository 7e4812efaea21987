// SVG plots drawn in the page (histogram, scatter, curves) and the rank correlation; no library.
const NS = 'http://www.w3.org/2000/svg';

export function svgEl(name, attrs = {}, text) {
  const el = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export function fmt(x, digits = 4) {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

function ticks(lo, hi, n = 5) {
  if (!(hi > lo)) return [lo];
  const step = (hi - lo) / (n - 1);
  return Array.from({ length: n }, (_, i) => lo + i * step);
}

function frame(w, h, label) {
  const svg = svgEl('svg', { viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: 'img', 'aria-label': label });
  svg.append(svgEl('title', {}, label));
  return svg;
}

function axes(svg, m, w, h, x, y, xLabel, yLabel, xs, ys, yDigits = 2) {
  const g = svgEl('g', { 'font-size': 10, fill: '#5a6470' });
  g.append(svgEl('line', { x1: m.l, y1: h - m.b, x2: w - m.r, y2: h - m.b, stroke: '#5a6470' }));
  g.append(svgEl('line', { x1: m.l, y1: m.t, x2: m.l, y2: h - m.b, stroke: '#5a6470' }));
  for (const t of xs)
    g.append(svgEl('text', { x: x(t), y: h - m.b + 12, 'text-anchor': 'middle' }, Number.isInteger(t) ? String(t) : fmt(t, 2)));
  for (const t of ys) g.append(svgEl('text', { x: m.l - 4, y: y(t) + 3, 'text-anchor': 'end' }, fmt(t, yDigits)));
  g.append(svgEl('text', { x: (m.l + w - m.r) / 2, y: h - 4, 'text-anchor': 'middle' }, xLabel));
  g.append(
    svgEl('text', { x: 10, y: (m.t + h - m.b) / 2, 'text-anchor': 'middle', transform: `rotate(-90 10 ${(m.t + h - m.b) / 2})` }, yLabel),
  );
  svg.append(g);
}

/** Histogram of `values` over [lo, hi] with a threshold line; bins on the kept side are green. */
export function histogram(values, { lo, hi, threshold, higherIsBetter, bins = 30, label = 'score' }) {
  const w = 420;
  const h = 180;
  const m = { l: 40, r: 18, t: 10, b: 32 };
  const span = hi > lo ? hi - lo : 1;
  const counts = new Array(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.max(0, Math.floor(((v - lo) / span) * bins)))]++;
  const top = Math.max(1, ...counts);
  const x = (v) => m.l + ((v - lo) / span) * (w - m.l - m.r);
  const y = (c) => h - m.b - (c / top) * (h - m.t - m.b);
  const svg = frame(w, h, `Histogram of ${values.length} scores`);
  axes(svg, m, w, h, x, y, label, 'images', ticks(lo, hi), ticks(0, top, 3).map(Math.round), 0);
  const bars = svgEl('g', { class: 'bars' });
  const bw = (w - m.l - m.r) / bins;
  counts.forEach((c, i) => {
    const mid = lo + ((i + 0.5) / bins) * span;
    const kept = higherIsBetter ? mid >= threshold : mid <= threshold;
    bars.append(
      svgEl('rect', {
        x: m.l + i * bw + 0.5,
        y: y(c),
        width: Math.max(0, bw - 1),
        height: h - m.b - y(c),
        fill: kept ? '#1f7a3f' : '#b3261e',
      }),
    );
  });
  svg.append(bars);
  svg.append(
    svgEl('line', {
      class: 'threshold',
      x1: x(threshold),
      x2: x(threshold),
      y1: m.t,
      y2: h - m.b,
      stroke: '#1b1f24',
      'stroke-dasharray': '4 3',
    }),
  );
  return svg;
}

/**
 * Scatter of points {x, y, label}; `onPick(point)` when a point is clicked (or chosen by keyboard where the
 * points are few enough to be focusable).
 */
export function scatter(points, { xLabel, yLabel, onPick, title }) {
  const w = 460;
  const h = 380;
  const m = { l: 46, r: 12, t: 12, b: 36 };
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const [x0, x1] = extent(xs);
  const [y0, y1] = extent(ys);
  const x = (v) => m.l + ((v - x0) / (x1 - x0 || 1)) * (w - m.l - m.r);
  const y = (v) => h - m.b - ((v - y0) / (y1 - y0 || 1)) * (h - m.t - m.b);
  const svg = frame(w, h, title ?? `${yLabel} against ${xLabel}, ${points.length} images`);
  svg.classList.add('scatter');
  axes(svg, m, w, h, x, y, xLabel, yLabel, ticks(x0, x1), ticks(y0, y1));
  const g = svgEl('g', { fill: '#1f5fbf', 'fill-opacity': 0.6 });
  const focusable = points.length <= 300;
  for (const p of points) {
    const c = svgEl('circle', { cx: x(p.x), cy: y(p.y), r: points.length > 1000 ? 2.5 : 3.5 });
    c.append(svgEl('title', {}, `${p.label}: ${fmt(p.x)}, ${fmt(p.y)}`));
    if (onPick) {
      c.addEventListener('click', () => onPick(p));
      if (focusable) {
        c.setAttribute('tabindex', '0');
        c.setAttribute('role', 'button');
        c.setAttribute('aria-label', `${p.label}: ${fmt(p.x)}, ${fmt(p.y)}`);
        c.addEventListener('keydown', (e) => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            onPick(p);
          }
        });
      }
    }
    g.append(c);
  }
  svg.append(g);
  return svg;
}

/** Curves over epochs: series [{name, x, y, color}] sharing an x axis, one panel. */
export function curves(series, { xLabel, yLabel, title }) {
  const w = 420;
  const h = 220;
  const m = { l: 46, r: 12, t: 24, b: 36 };
  const all = series.flatMap((s) => s.x.map((xv, i) => [xv, s.y[i]])).filter(([, v]) => Number.isFinite(v));
  const [x0, x1] = extent(all.map((p) => p[0]));
  const [y0, y1] = extent(all.map((p) => p[1]));
  const x = (v) => m.l + ((v - x0) / (x1 - x0 || 1)) * (w - m.l - m.r);
  const y = (v) => h - m.b - ((v - y0) / (y1 - y0 || 1)) * (h - m.t - m.b);
  const svg = frame(w, h, title);
  // epochs are whole numbers: so are their ticks, where there are few
  const whole = all.every(([a]) => Number.isInteger(a)) && x1 - x0 <= 12;
  const xt = whole ? Array.from({ length: Math.round(x1 - x0) + 1 }, (_, i) => x0 + i) : ticks(x0, x1);
  axes(svg, m, w, h, x, y, xLabel, yLabel, xt, ticks(y0, y1));
  svg.append(svgEl('text', { x: m.l, y: 14, 'font-size': 11 }, title));
  for (const s of series) {
    const pts = s.x.map((xv, i) => [xv, s.y[i]]).filter(([, v]) => Number.isFinite(v));
    svg.append(
      svgEl('polyline', {
        points: pts.map(([a, b]) => `${x(a)},${y(b)}`).join(' '),
        fill: 'none',
        stroke: s.color ?? '#1f5fbf',
        'stroke-width': 2,
      }),
    );
    for (const [a, b] of pts) svg.append(svgEl('circle', { cx: x(a), cy: y(b), r: 2.5, fill: s.color ?? '#1f5fbf' }));
  }
  return svg;
}

function extent(vs) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of vs) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!Number.isFinite(lo)) return [0, 1];
  if (lo === hi) return [lo - 0.5, hi + 0.5];
  return [lo, hi];
}

/** Ranks with ties given their average rank (1-based). */
export function ranks(vs) {
  const idx = vs.map((_, i) => i).sort((a, b) => vs[a] - vs[b]);
  const r = new Array(vs.length);
  for (let i = 0; i < idx.length;) {
    let j = i;
    while (j + 1 < idx.length && vs[idx[j + 1]] === vs[idx[i]]) j++;
    for (let k = i; k <= j; k++) r[idx[k]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return r;
}

function pearson(a, b) {
  const n = a.length;
  const ma = a.reduce((s, v) => s + v, 0) / n;
  const mb = b.reduce((s, v) => s + v, 0) / n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) ** 2;
    sbb += (b[i] - mb) ** 2;
  }
  return sab / Math.sqrt(saa * sbb);
}

/** Spearman's rank correlation (Pearson's on the ranks, ties averaged). */
export function srcc(a, b) {
  return pearson(ranks(a), ranks(b));
}
