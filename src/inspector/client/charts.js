// The inspector page's SVG drawing: statecharts from the server's layout
// (/api/layout, see statechart-layout.ts) and the journal line chart. Plain
// browser JavaScript; every text goes through textContent (names are data).

const SVG = 'http://www.w3.org/2000/svg';
const CHAR_W = 7;
const LINE_H = 14;

/** Creates an SVG element with attributes. */
function el(name, attrs = {}, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

function text(parent, x, y, content, attrs = {}) {
  const t = el('text', { x, y, ...attrs }, parent);
  t.textContent = content;
  return t;
}

/**
 * Draws one machine's chart. Returns `{ figure, states, edges, caption }`:
 * `states` maps a state path to its `<g>`, `edges` lists `{ from, events, path, label }`.
 */
export function drawChart(name, layout) {
  const figure = document.createElement('figure');
  figure.className = 'chart';
  figure.dataset.testid = `chart-${name}`;
  figure.dataset.machine = name;
  const caption = document.createElement('figcaption');
  const title = document.createElement('span');
  title.textContent = name;
  const roles = document.createElement('span');
  roles.className = 'muted';
  caption.append(title, roles);
  figure.appendChild(caption);

  const svg = el('svg', {
    class: 'statechart',
    width: layout.width,
    height: layout.height,
    viewBox: `${layout.x} ${layout.y} ${layout.width} ${layout.height}`,
    role: 'img',
    'aria-label': `statechart of ${name}`,
  });
  const markerId = `arrow-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const marker = el('marker', { id: markerId, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, el('defs', {}, svg));
  el('path', { d: 'M0,0 L10,5 L0,10 z' }, marker);

  const states = new Map();
  const groupOf = new Map();
  for (const b of layout.boxes) {
    const parent = b.path === '' ? svg : groupOf.get(b.path.includes('.') ? b.path.slice(0, b.path.lastIndexOf('.')) : '');
    const g = el('g', { class: 'state', 'data-path': b.path, 'data-type': b.type, 'data-active': 'false' }, parent ?? svg);
    g.dataset.testid = b.path === '' ? `state-${name}` : `state-${name}-${b.path}`;
    const compound = b.type === 'compound' || b.type === 'parallel';
    el('rect', { class: 'frame', x: b.x, y: b.y, width: b.w, height: b.h, rx: compound ? 10 : 6 }, g);
    if (b.type === 'final') el('rect', { class: 'final', x: b.x + 3, y: b.y + 3, width: b.w - 6, height: b.h - 6, rx: 4 }, g);
    const label = b.key;
    if (compound) text(g, b.x + 10, b.y + 16, label, { 'font-weight': 600 });
    else text(g, b.x + b.w / 2, b.y + 19, label, { 'text-anchor': 'middle' });
    if (b.invokes.length > 0) {
      const line = `⟳ ${b.invokes.join(', ')}`;
      if (compound) text(g, b.x + 10, b.y + 30, line, { class: 'invokes' });
      else text(g, b.x + b.w / 2, b.y + 33, line, { class: 'invokes', 'text-anchor': 'middle' });
    }
    if (b.initial) {
      const cy = b.y + Math.min(b.h / 2, 15);
      el('circle', { class: 'initial', cx: b.x - 16, cy, r: 3.5 }, g);
      el('path', { class: 'initial', d: `M${b.x - 12},${cy} L${b.x - 1},${cy}`, 'marker-end': `url(#${markerId})` }, g);
    }
    states.set(b.path, g);
    const kids = el('g', {}, g);
    groupOf.set(b.path, kids);
  }

  const edgeLayer = el('g', { class: 'edges' }, svg);
  const labelLayer = el('g', { class: 'labels' }, svg);
  const edges = [];
  for (const e of layout.edges) {
    const g = el('g', { class: 'edge', 'data-from': e.from, 'data-to': e.to }, edgeLayer);
    g.dataset.events = e.events.join(' ');
    el('path', { d: e.d, 'marker-end': `url(#${markerId})` }, g);
    const lg = el('g', { class: 'label' }, labelLayer);
    const w = Math.max(...e.labels.map((l) => l.length)) * CHAR_W * 0.92 + 6;
    const h = e.labels.length * LINE_H;
    const top = e.labelY - h / 2;
    el('rect', { x: e.labelX - w / 2, y: top, width: w, height: h, rx: 2 }, lg);
    e.labels.forEach((line, i) => text(lg, e.labelX, top + i * LINE_H + 10, line, { 'text-anchor': 'middle' }));
    edges.push({ from: e.from, events: e.events, path: g, label: lg });
  }
  figure.appendChild(svg);
  return { figure, states, edges, caption: roles };
}

/**
 * Highlights a chart: `active` is a Set of state paths, `fired` the
 * `{ from: Set, event }` of the last transition (or null).
 */
export function highlightChart(chart, active, fired) {
  for (const [path, g] of chart.states) {
    const on = path === '' || active.has(path);
    if ((g.dataset.active === 'true') !== on) g.dataset.active = String(on);
  }
  for (const e of chart.edges) {
    const hit = fired !== null && e.events.includes(fired.event) && fired.from.has(e.from);
    e.path.dataset.fired = String(hit);
    e.label.dataset.fired = String(hit);
  }
}

const fmt = (n) => (n >= 10_000 ? `${Math.round(n / 1000)}k` : String(Math.round(n)));

/** Redraws the journal chart: depth and drain rate over `windowMs` up to the last sample. */
export function drawJournal(svg, samples, windowMs) {
  svg.replaceChildren();
  const [W, H, L, R, T, B] = [600, 150, 44, 44, 10, 22];
  el('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }, svg);
  if (samples.length === 0) {
    text(svg, W / 2, H / 2, 'no samples yet', { 'text-anchor': 'middle' });
    return;
  }
  const end = samples[samples.length - 1].at;
  const start = end - windowMs;
  const shown = samples.filter((s) => s.at >= start);
  const maxDepth = Math.max(1, ...shown.map((s) => s.depth));
  const maxRate = Math.max(1, ...shown.map((s) => s.rate));
  const x = (at) => L + ((at - start) / windowMs) * (W - L - R);
  const y = (v, max) => H - B - (v / max) * (H - T - B);
  const line = (key, max) => shown.map((s) => `${x(s.at).toFixed(1)},${y(s[key], max).toFixed(1)}`).join(' ');
  el('polyline', { class: 'depth', points: line('depth', maxDepth) }, svg);
  el('polyline', { class: 'rate', points: line('rate', maxRate) }, svg);
  text(svg, L - 4, T + 8, fmt(maxDepth), { 'text-anchor': 'end' });
  text(svg, L - 4, H - B, '0', { 'text-anchor': 'end' });
  text(svg, W - R + 4, T + 8, fmt(maxRate));
  text(svg, L, H - 6, `-${Math.round(windowMs / 60_000)} min`);
  text(svg, W - R, H - 6, 'now', { 'text-anchor': 'end' });
  text(svg, L + 80, H - 6, '— depth', { class: 'depth-legend' });
  text(svg, L + 160, H - 6, '— drain keys/s', { class: 'rate-legend' });
}
