// promptiqa's page: score dropped images, open score outputs, compare two, open eval and train runs.
// Views are chosen by the address's hash (#/score, #/browse?path=, #/output?path=, #/compare?a=&b=, #/run?path=).
import { curves, fmt, histogram, scatter, srcc } from './plots.js';

const view = document.getElementById('view');
const statusLine = document.getElementById('status');
const viewer = document.getElementById('viewer');

/** Builds an element: h('p', {class: 'x'}, 'text', child, …). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

function say(text) {
  statusLine.textContent = text;
}

/** The JSON of a GET or POST; a non-2xx answer throws its `error` message (or the status). */
/** A server that asks for a token (bound beyond this machine) gets it as a bearer token, kept for this tab only. */
const TOKEN_KEY = 'promptiqa-token';
const authHeaders = () => {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { authorization: `Bearer ${t}` } : {};
};
class AuthError extends Error {}

async function api(url, init = {}) {
  let res;
  try {
    res = await fetch(url, { ...init, headers: { ...init.headers, ...authHeaders() } });
  } catch (err) {
    throw new Error(`the server did not answer (${err.message})`);
  }
  let body;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  const message = body?.error ?? body?.message ?? `HTTP ${res.status} ${res.statusText}`;
  if (res.status === 401) throw new AuthError(message);
  if (!res.ok) throw new Error(message);
  return body;
}

const fileUrl = (path) => `/v1/file?path=${encodeURIComponent(path)}`;
/** A gallery's thumbnail: small enough for thousands, sharp on a 2× screen. */
const thumbUrl = (path) => `${fileUrl(path)}&size=320`;
const hashFor = (name, params) => `#/${name}?${new URLSearchParams(params)}`;

function showError(where, err) {
  where.append(h('p', { class: 'error', role: 'alert' }, err instanceof Error ? err.message : String(err)));
  if (err instanceof AuthError) where.append(tokenForm());
}

/** Asks for the server's token; the view is shown again with it. */
function tokenForm() {
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', required: true });
  const form = h('form', { class: 'controls' }, h('label', {}, 'Token', input), h('button', { type: 'submit' }, 'Use token'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value);
    setupsCache = undefined;
    route();
  });
  return form;
}

/** Shows a server image in `img`: with a token it is fetched with it (an <img> cannot send one) and shown from a blob: URL. */
async function setImage(img, url, where) {
  if (url.startsWith('blob:') || !sessionStorage.getItem(TOKEN_KEY)) {
    img.src = url;
    return;
  }
  try {
    const res = await fetch(url, { headers: authHeaders() });
    if (res.ok) {
      img.src = URL.createObjectURL(await res.blob());
      return;
    }
  } catch {
    // explained below
  }
  explainImageError(img, url, where);
}

/** Shows an image (and what is known of it) in the dialog. */
function showImage(title, src, lines = []) {
  document.getElementById('viewer-title').textContent = title;
  const body = document.getElementById('viewer-body');
  body.replaceChildren(...lines.map((l) => h('p', {}, l)));
  if (src) {
    const img = h('img', { alt: title });
    img.addEventListener('error', () => explainImageError(img, src, body));
    body.append(img);
    setImage(img, src, body);
  } else body.append(h('p', { class: 'error' }, 'no image to show (it lies outside --root)'));
  if (!viewer.open) viewer.showModal();
}

/** An image that did not load: ask the server why (its JSON error), and show that. */
async function explainImageError(img, src, where) {
  let why = 'the image could not be shown';
  try {
    const res = await fetch(src, { headers: authHeaders() });
    if (!res.ok) why = (await res.json().catch(() => undefined))?.error ?? `HTTP ${res.status}`;
    else why = 'the browser cannot decode this image';
  } catch (err) {
    why = `the server did not answer (${err.message})`;
  }
  const p = h('span', { class: 'why', role: 'note' }, why);
  img.replaceWith(p);
  where?.setAttribute?.('data-failed', '');
}

// ---------------------------------------------------------------------------------------------------------
// The gallery: tiles sorted by score, a histogram and a threshold slider, CSV export of the kept list.

/**
 * items: [{name, score?, error?, src?, lazySrc?, why?, mos?}]; opts: {lo, hi, higherIsBetter, label, exportName}.
 * Returns {element, add(items), done()} so that pages of an output can be appended as they arrive.
 */
function gallery(opts) {
  const items = [];
  const wrap = h('section', { class: 'gallery-view', 'aria-label': 'Gallery' });
  const summary = h('p', { class: 'summary', 'aria-live': 'polite' });
  const slider = h('input', { type: 'range', id: 'threshold', min: 0, max: 1, step: 'any', 'aria-describedby': 'threshold-help' });
  const value = h('output', { for: 'threshold', id: 'threshold-value' });
  const exportBtn = h('button', { type: 'button', id: 'export' }, 'Export kept as CSV');
  const plots = h('div', { class: 'plots' });
  const list = h('ul', { class: 'gallery', id: 'gallery' });
  const dir = opts.higherIsBetter === false ? 'lower' : 'higher';
  wrap.append(
    h(
      'div',
      { class: 'controls' },
      h('label', {}, 'Threshold', slider, value),
      h('span', { id: 'threshold-help', class: 'summary' }, `${dir} is better; images on the better side are kept`),
      exportBtn,
    ),
    summary,
    plots,
    list,
  );
  let lo = opts.lo;
  let hi = opts.hi;
  let threshold;
  const better = (s) => (opts.higherIsBetter === false ? s <= threshold : s >= threshold);

  const observer =
    'IntersectionObserver' in window
      ? new IntersectionObserver(
          (entries) => {
            for (const e of entries) {
              if (!e.isIntersecting) continue;
              const img = e.target;
              observer.unobserve(img);
              if (img.dataset.src) {
                setImage(img, img.dataset.src, img.closest('li'));
                delete img.dataset.src;
              }
            }
          },
          { rootMargin: '300px' },
        )
      : null;

  function tile(item) {
    const li = h('li', { class: 'tile', 'data-name': item.name });
    const label = `${item.name}${item.score !== undefined ? `, score ${fmt(item.score)}` : ''}`;
    const btn = h('button', { type: 'button', class: 'thumb', 'aria-label': `Show ${label}` });
    if (item.error !== undefined) btn.append(h('span', { class: 'why' }, `failed: ${item.error}`));
    else if (!item.src && !item.lazySrc) btn.append(h('span', { class: 'why' }, item.why ?? 'no image'));
    else {
      const img = h('img', { alt: item.name, loading: 'lazy', decoding: 'async', width: 150, height: 150 });
      img.addEventListener('error', () => explainImageError(img, item.src ?? item.lazySrc ?? img.src, li));
      if (item.src) img.src = item.src;
      else if (observer) {
        img.dataset.src = item.lazySrc;
        observer.observe(img);
      } else setImage(img, item.lazySrc, li);
      btn.append(img);
    }
    btn.addEventListener('click', () =>
      showImage(item.name, item.error === undefined ? (item.src ?? item.fullSrc ?? item.lazySrc) : null, [
        item.score !== undefined ? `score ${fmt(item.score)}` : `failed: ${item.error ?? item.why}`,
        item.mos !== undefined ? `MOS ${fmt(item.mos)}` : '',
      ]),
    );
    li.append(
      btn,
      h('div', {}, h('span', { class: 'score' }, item.score !== undefined ? fmt(item.score) : 'failed'), h('span', { class: 'verdict' })),
      h('div', { class: 'name', title: item.file ?? item.name }, item.name),
    );
    item.el = li;
    return li;
  }

  function classify(item) {
    if (!item.el) return;
    if (item.score === undefined) {
      item.el.classList.add('failed');
      return;
    }
    const kept = better(item.score);
    item.el.classList.toggle('kept', kept);
    item.el.classList.toggle('rejected', !kept);
    item.el.querySelector('.verdict').textContent = kept ? 'kept' : 'rejected';
  }

  function redraw() {
    const scores = items.filter((i) => i.score !== undefined).map((i) => i.score);
    for (const it of items) classify(it);
    const kept = items.filter((i) => i.score !== undefined && better(i.score)).length;
    const failed = items.filter((i) => i.score === undefined).length;
    summary.textContent = `kept ${kept} of ${items.length}${failed ? `, ${failed} failed` : ''} ${threshold === undefined ? '' : ` at threshold ${fmt(threshold)}`}`;
    value.textContent = fmt(threshold);
    plots.replaceChildren(
      scores.length
        ? histogram(scores, { lo, hi, threshold, higherIsBetter: opts.higherIsBetter !== false, label: opts.label ?? 'score' })
        : '',
    );
  }

  slider.addEventListener('input', () => {
    threshold = Number(slider.value);
    redraw();
  });
  exportBtn.addEventListener('click', () => {
    const kept = items.filter((i) => i.score !== undefined && better(i.score));
    const q = (s) => (/[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
    const csv = ['file,score', ...kept.map((i) => `${q(i.file ?? i.name)},${i.score}`)].join('\n') + '\n';
    const a = h('a', { href: URL.createObjectURL(new Blob([csv], { type: 'text/csv' })), download: opts.exportName ?? 'kept.csv' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    say(`exported ${kept.length} kept images`);
  });

  return {
    element: wrap,
    /** Items already in order (an output's pages) are appended; `sort` orders the whole gallery again. */
    add(more, { sort = false } = {}) {
      items.push(...more);
      if (sort) {
        const d = opts.higherIsBetter === false ? 1 : -1;
        items.sort((a, b) => (a.score === undefined) - (b.score === undefined) || d * ((a.score ?? 0) - (b.score ?? 0)));
      }
      const scores = items.filter((i) => i.score !== undefined).map((i) => i.score);
      if (opts.lo === undefined || opts.hi === undefined || !(opts.hi > opts.lo)) {
        lo = Math.min(...scores);
        hi = Math.max(...scores);
        if (!(hi > lo)) [lo, hi] = [lo - 0.5, hi + 0.5];
      } else {
        lo = Math.min(opts.lo, ...scores);
        hi = Math.max(opts.hi, ...scores);
      }
      slider.min = lo;
      slider.max = hi;
      if (threshold === undefined && scores.length) {
        const sorted = [...scores].sort((a, b) => a - b);
        threshold = sorted[Math.floor(sorted.length / 2)];
        slider.value = threshold;
      }
      if (sort) list.replaceChildren(...items.map((i) => i.el ?? tile(i)));
      else {
        const frag = document.createDocumentFragment();
        for (const i of more) frag.append(tile(i));
        list.append(frag);
      }
      redraw();
    },
    items,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Views

let setupsCache;
async function setups() {
  setupsCache ??= api('/v1/setups').then((b) => (Array.isArray(b) ? b : (b.setups ?? [])));
  return setupsCache;
}

async function scoreView() {
  view.replaceChildren(h('h2', {}, 'Score images'));
  const controls = h('div', { class: 'controls' });
  const select = h('select', { id: 'setup' });
  controls.append(h('label', {}, 'Set-up', select));
  const input = h('input', { type: 'file', id: 'pick', multiple: true, accept: 'image/*', class: 'visually-hidden' });
  const drop = h('label', { class: 'drop', id: 'drop', for: 'pick' }, 'Drop images here, or choose them: ', input);
  const out = h('div', { id: 'results' });
  view.append(controls, drop, out);
  try {
    const list = await setups();
    if (list.length === 0) throw new Error('the server has no set-up loaded');
    for (const s of list)
      select.append(h('option', { value: s.setup ?? s.name }, `${s.setup ?? s.name}${s.model?.name ? ` (${s.model.name})` : ''}`));
  } catch (err) {
    showError(controls, err instanceof AuthError ? err : new Error(`set-ups: ${err.message}`));
  }
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    scoreFiles([...e.dataTransfer.files], select.value, out);
  });
  input.addEventListener('change', () => scoreFiles([...input.files], select.value, out));
}

/** Images go to the server this many at a time: a large drop stays under the server's body limit, and shows progress. */
const SCORE_CHUNK = 16;

async function scoreFiles(files, setup, out) {
  out.replaceChildren();
  if (files.length === 0) return;
  const results = [];
  let meta;
  for (let i = 0; i < files.length; i += SCORE_CHUNK) {
    say(`scoring ${files.length} images… ${i} done`);
    const part = files.slice(i, i + SCORE_CHUNK);
    const form = new FormData();
    for (const f of part) form.append('file', f, f.name);
    try {
      const body = await api(`/v1/score${setup ? `?setup=${encodeURIComponent(setup)}` : ''}`, { method: 'POST', body: form });
      meta ??= body;
      part.forEach((_, k) => results.push(body.results?.[k] ?? { error: 'no result for this image' }));
    } catch (err) {
      if (err instanceof AuthError) {
        say('');
        showError(out, err);
        return;
      }
      // the images of a request that failed say so, each; the others are still shown
      for (const _ of part) results.push({ error: `the request failed: ${err.message}` });
    }
  }
  const [lo, hi] = meta?.scoreRange ?? [];
  const g = gallery({ lo, hi, higherIsBetter: meta?.higherIsBetter, label: `${meta?.setup ?? setup} score`, exportName: 'kept.csv' });
  if (meta)
    out.append(
      h(
        'p',
        { class: 'summary' },
        `${meta.setup}${meta.model?.name ? `, ${meta.model.name}` : ''}; scores from ${fmt(lo, 2)} to ${fmt(hi, 2)}, ${meta.higherIsBetter === false ? 'lower' : 'higher'} is better`,
      ),
    );
  out.append(g.element);
  const items = files.map((f, i) => {
    const r = results[i];
    return {
      name: f.name,
      score: typeof r.score === 'number' ? r.score : undefined,
      error: typeof r.score === 'number' ? undefined : (r.error ?? 'no score'),
      src: URL.createObjectURL(f),
    };
  });
  g.add(items, { sort: true });
  say(`scored ${items.filter((i) => i.score !== undefined).length} of ${files.length}`);
}

async function browseView(params) {
  const path = params.get('path') ?? '';
  view.replaceChildren(h('h2', {}, `Open files: /${path}`));
  let body;
  try {
    body = await api(`/v1/browse?path=${encodeURIComponent(path)}`);
  } catch (err) {
    showError(view, err);
    return;
  }
  const chosen = new Set();
  const compare = h('button', { type: 'button', id: 'compare', disabled: true }, 'Compare the two chosen outputs');
  compare.addEventListener('click', () => {
    const [a, b] = [...chosen];
    location.hash = hashFor('compare', { a, b });
  });
  const list = h('ul', { class: 'entries' });
  if (body.parent !== null)
    list.append(h('li', {}, h('span', { class: 'kind' }, 'folder'), h('a', { href: hashFor('browse', { path: body.parent }) }, '..')));
  for (const e of body.entries) {
    const li = h('li', {}, h('span', { class: 'kind' }, e.kind));
    if (e.kind === 'folder') li.append(h('a', { href: hashFor('browse', { path: e.path }) }, `${e.name}/`));
    else if (e.kind === 'run')
      li.append(
        h('a', { href: hashFor('run', { path: e.path }) }, `${e.name}/ (open run)`),
        h('a', { href: hashFor('browse', { path: e.path }) }, 'files'),
      );
    else if (e.kind === 'output') {
      const box = h('input', { type: 'checkbox', 'aria-label': `choose ${e.name} to compare` });
      box.addEventListener('change', () => {
        if (box.checked) chosen.add(e.path);
        else chosen.delete(e.path);
        compare.disabled = chosen.size !== 2;
      });
      li.append(box, h('a', { href: hashFor('output', { path: e.path }) }, e.name));
    } else if (e.kind === 'image') li.append(h('a', { href: fileUrl(e.path), target: '_blank', rel: 'noopener' }, e.name));
    else li.append(h('span', {}, e.name));
    list.append(li);
  }
  view.append(h('div', { class: 'controls' }, compare), list);
  if (body.truncated) view.append(h('p', { class: 'summary' }, 'only the first entries are listed'));
}

/** All records of an output, a page at a time; `onPage(body)` after each. */
async function fetchOutput(path, { sort = 'score', pageSize = 500, onPage } = {}) {
  let offset = 0;
  let first;
  const records = [];
  for (;;) {
    const body = await api(`/v1/output?path=${encodeURIComponent(path)}&offset=${offset}&limit=${pageSize}&sort=${sort}`);
    first ??= body;
    records.push(...body.records);
    onPage?.(body);
    offset += body.records.length;
    if (body.records.length === 0 || offset >= body.total) break;
  }
  return { ...first, records };
}

function describeOutput(body) {
  const range = body.scoreRange ? `, scores from ${fmt(body.scoreRange[0], 2)} to ${fmt(body.scoreRange[1], 2)}` : '';
  return `${body.setup ?? 'set-up not recorded'}${range}, ${body.higherIsBetter ? 'higher' : 'lower'} is better; ${body.scored} scored, ${body.failed} failed`;
}

function itemOf(r) {
  return {
    name: r.path ?? r.file,
    file: r.file,
    score: r.score,
    error: r.error,
    mos: r.mos,
    lazySrc: r.path !== undefined ? thumbUrl(r.path) : undefined,
    fullSrc: r.path !== undefined ? fileUrl(r.path) : undefined,
    why: r.path === undefined ? 'outside --root: not shown' : undefined,
  };
}

async function outputView(params) {
  const path = params.get('path');
  view.replaceChildren(h('h2', {}, `Output ${path}`));
  let g;
  const info = h('p', { class: 'summary', id: 'output-info' });
  view.append(info);
  try {
    await fetchOutput(path, {
      onPage(body) {
        if (!g) {
          const [lo, hi] = body.scoreRange ?? [];
          info.textContent = describeOutput(body);
          for (const p of body.problems ?? []) view.append(h('p', { class: 'error' }, p));
          g = gallery({ lo, hi, higherIsBetter: body.higherIsBetter, label: 'score', exportName: `${path.split('/').pop()}.kept.csv` });
          view.append(g.element);
        }
        g.add(body.records.map(itemOf));
        say(`loaded ${g.items.length} of ${body.total}`);
      },
    });
  } catch (err) {
    showError(view, err);
  }
}

async function compareView(params) {
  const a = params.get('a');
  const b = params.get('b');
  view.replaceChildren(h('h2', {}, 'Compare two outputs'));
  let A;
  let B;
  try {
    say('loading both outputs…');
    [A, B] = await Promise.all([fetchOutput(a, { sort: 'none', pageSize: 5000 }), fetchOutput(b, { sort: 'none', pageSize: 5000 })]);
  } catch (err) {
    say('');
    showError(view, err);
    return;
  }
  // the same image: by its path under the root where both name one there (one may name it absolute, the other relative)
  const key = (r) => r.path ?? r.file;
  const byFile = new Map(B.records.filter((r) => r.score !== undefined).map((r) => [key(r), r]));
  const pairs = [];
  for (const r of A.records) {
    const o = byFile.get(key(r));
    if (r.score !== undefined && o) pairs.push({ x: r.score, y: o.score, label: r.path ?? r.file, path: r.path ?? o.path });
  }
  view.append(
    h('p', {}, h('strong', {}, 'x: '), `${a} — ${describeOutput(A)}`),
    h('p', {}, h('strong', {}, 'y: '), `${b} — ${describeOutput(B)}`),
  );
  if (pairs.length < 3) {
    showError(view, new Error(`only ${pairs.length} images are scored in both outputs; at least 3 are needed for the SRCC`));
    say('');
    return;
  }
  const rho = srcc(
    pairs.map((p) => p.x),
    pairs.map((p) => p.y),
  );
  view.append(h('p', { class: 'srcc', id: 'srcc' }, `SRCC ${fmt(rho)} over ${pairs.length} images`));
  const pick = (p) => showImage(p.label, p.path !== undefined ? fileUrl(p.path) : null, [`x ${fmt(p.x)} (${a})`, `y ${fmt(p.y)} (${b})`]);
  const xLabel = A.setup ?? a;
  const yLabel = B.setup ?? b;
  view.append(h('div', { class: 'plots' }, scatter(pairs, { xLabel, yLabel, onPick: pick })));
  // the images the two set-ups disagree on most (by rank), as buttons: the keyboard's way into the scatter
  const rank = (vs) => {
    const order = vs.map((v, i) => [v, i]).sort((p, q) => p[0] - q[0]);
    const r = new Array(vs.length);
    order.forEach(([, i], k) => (r[i] = k / (vs.length - 1 || 1)));
    return r;
  };
  const rx = rank(pairs.map((p) => p.x));
  const ry = rank(pairs.map((p) => p.y));
  const worst = pairs
    .map((p, i) => ({ p, d: Math.abs(rx[i] - ry[i]) }))
    .sort((u, v) => v.d - u.d)
    .slice(0, 10);
  view.append(
    h('h3', {}, 'Where they disagree most'),
    h(
      'ol',
      {},
      worst.map(({ p, d }) =>
        h('li', {}, h('button', { type: 'button', onclick: () => pick(p) }, p.label), ` rank gap ${fmt(d * 100, 0)}%`),
      ),
    ),
  );
  say(`${pairs.length} images in both`);
}

function metricsTable(figures, caption) {
  const rows = Object.entries(figures ?? {}).filter(([, v]) => typeof v === 'number');
  return h(
    'table',
    {},
    h('caption', {}, caption),
    rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', { class: 'num' }, Number.isInteger(v) ? String(v) : fmt(v)))),
  );
}

function figureImages(paths) {
  return paths.map((p) => {
    const img = h('img', { class: 'figure', alt: `figure ${p}`, loading: 'lazy' });
    img.addEventListener('error', () => explainImageError(img, fileUrl(p)));
    setImage(img, fileUrl(p));
    return h('figure', {}, img, h('figcaption', {}, p));
  });
}

async function runView(params) {
  const path = params.get('path') ?? '';
  view.replaceChildren(h('h2', {}, `Run ${path}`));
  let body;
  try {
    body = await api(`/v1/run?path=${encodeURIComponent(path)}`);
  } catch (err) {
    showError(view, err);
    return;
  }
  if (body.kind === 'eval') {
    const r = body.report;
    view.append(h('p', { id: 'protocol' }, r.protocol ?? ''), metricsTable({ n: r.n, ...r.metrics }, `${r.method} on ${r.dataset}`));
    for (const n of r.notes ?? []) view.append(h('p', { class: 'summary' }, `note: ${n}`));
    if (r.failed?.length)
      view.append(
        h(
          'details',
          {},
          h('summary', { class: 'error' }, `${r.failed.length} image${r.failed.length === 1 ? '' : 's'} failed`),
          h(
            'ul',
            {},
            r.failed.slice(0, 200).map((f) => h('li', {}, f)),
          ),
        ),
      );
    const rows = (r.scores ?? []).filter((s) => Number.isFinite(s.score) && Number.isFinite(s.mos));
    const plots = h('div', { class: 'plots' });
    if (rows.length)
      plots.append(
        scatter(
          rows.map((s) => ({ x: s.score, y: s.mos, label: s.file })),
          {
            xLabel: 'predicted score',
            yLabel: `MOS (${r.target ?? ''})`,
            onPick: (p) => showImage(p.label, null, [`score ${fmt(p.x)}`, `MOS ${fmt(p.y)}`, "the dataset's images are not served"]),
          },
        ),
      );
    view.append(plots, ...figureImages(body.figures));
  } else {
    const res = body.result;
    if (res) {
      view.append(h('p', { id: 'protocol' }, res.protocol ?? ''));
      view.append(metricsTable(res.best, `chosen epoch ${res.bestEpoch} (on ${res.selectOn})`));
      if (res.test) view.append(metricsTable(res.test, 'test'));
      if (res.unreadable?.length) view.append(h('p', { class: 'error' }, `${res.unreadable.length} images could not be read`));
    } else view.append(h('p', { class: 'summary' }, 'the run has not finished (no result.json): its epochs so far'));
    const epochs = (res?.history?.length ? res.history : body.epochs) ?? [];
    const x = epochs.map((e) => e.epoch);
    view.append(
      h(
        'div',
        { class: 'plots' },
        epochs.length
          ? curves([{ name: 'loss', x, y: epochs.map((e) => e.loss) }], {
              xLabel: 'epoch',
              yLabel: 'training loss',
              title: 'training loss',
            })
          : h('p', {}, 'no epochs yet'),
        epochs.some((e) => Number.isFinite(e.val?.srcc))
          ? curves([{ name: 'srcc', x, y: epochs.map((e) => e.val?.srcc ?? NaN), color: '#1f7a3f' }], {
              xLabel: 'epoch',
              yLabel: 'SRCC',
              title: `${res?.selectOn ?? 'validation'} SRCC`,
            })
          : '',
      ),
      ...figureImages(body.figures),
    );
  }
}

const VIEWS = { score: scoreView, browse: browseView, output: outputView, compare: compareView, run: runView };

async function route() {
  const [name, query] = location.hash.replace(/^#\/?/, '').split('?');
  const show = VIEWS[name] ?? scoreView;
  say('');
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === `#/${name || 'score'}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  await show(new URLSearchParams(query ?? ''));
  document.body.dataset.ready = name || 'score';
}

window.addEventListener('hashchange', () => {
  delete document.body.dataset.ready;
  route();
});
route();
