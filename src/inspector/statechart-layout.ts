/**
 * A deterministic layout of one exported statechart (`machineToJson` output)
 * for the inspector page: states as nested boxes, transitions as labelled
 * paths. Pure: same chart in, same numbers out; the page only draws it.
 *
 * - an atomic or final state is a box sized to its name (and invoked actors);
 * - a compound state lays its children out in a grid, in definition order,
 *   with gaps wide enough for transition labels;
 * - a parallel state lays its regions side by side, in rows of at most 1300 px;
 * - a transition is a straight or gently curved path between the two boxes'
 *   borders (curved apart when several join the same pair), a loop on the
 *   box's right edge when it targets its own state, and a short path from the
 *   nearest inner border when a state targets one of its own descendants;
 * - labels move to the nearest place where they cover no other label, no
 *   atomic state and no compound state's title.
 */
import type { ExportedState } from '../machine-export.ts';

/** One state's box. `path` is relative to the root (`''` for the root), e.g. `leader.idle`. */
export interface LayoutBox {
  path: string;
  id: string;
  key: string;
  type: ExportedState['type'];
  depth: number;
  x: number;
  y: number;
  w: number;
  h: number;
  /** True when this is its parent's initial state. */
  initial: boolean;
  invokes: string[];
}

/**
 * The transitions from one state to another, drawn as one SVG path with one
 * label line per transition; `labelX`, `labelY` are the label block's centre.
 */
export interface LayoutEdge {
  from: string;
  to: string;
  /** The events, one per transition. */
  events: string[];
  /** The label lines: `event` or `event [guard]`, one per transition. */
  labels: string[];
  d: string;
  labelX: number;
  labelY: number;
}

/** A laid-out chart; every coordinate is within the rectangle at (`x`, `y`) of `width` × `height` (the SVG viewBox). */
export interface ChartLayout {
  x: number;
  y: number;
  width: number;
  height: number;
  boxes: LayoutBox[];
  edges: LayoutEdge[];
}

/** Approximate advance of one character of the page's 11 px monospace font. */
export const CHAR_W = 7;
const LINE_H = 14;
const ATOMIC_H = 30;
const MIN_W = 84;
const PAD = 14;
const HEADER = 24;
const HGAP = 84;
const VGAP = 52;
const REGION_GAP = 14;
/** Widest row of parallel regions before wrapping. */
const MAX_ROW_W = 1300;
const MARGIN = 12;
const LOOP = 26;
/** Left room in a compound state for the initial-state marker. */
const INITIAL_ROOM = PAD + 14;

interface Sized {
  s: ExportedState;
  path: string;
  w: number;
  h: number;
  children: { node: Sized; dx: number; dy: number }[];
}

const textW = (t: string) => t.length * CHAR_W;
const invokeLine = (s: ExportedState) => (s.invokes.length ? `⟳ ${s.invokes.join(', ')}` : '');

/**
 * Pairs of children `[from, to]` (indices, from ≠ to) linked by a transition
 * between their subtrees, each pair once, in definition order.
 */
function siblingLinks(s: ExportedState): [number, number][] {
  const kids = Object.values(s.states);
  const owner = (id: string) => kids.findIndex((c) => id === c.id || id.startsWith(`${c.id}.`));
  const seen = new Set<string>();
  const out: [number, number][] = [];
  const walk = (n: ExportedState) => {
    for (const t of n.transitions) {
      for (const target of t.targets) {
        const [a, b] = [owner(n.id), owner(target)];
        if (a < 0 || b < 0 || a === b || seen.has(`${a}>${b}`)) continue;
        seen.add(`${a}>${b}`);
        out.push([a, b]);
      }
    }
    for (const c of Object.values(n.states)) walk(c);
  };
  for (const c of kids) walk(c);
  return out;
}

/**
 * Layered: each child's column is its distance from the initial child along
 * transitions (unreached children in one last column), stacked in definition
 * order, columns centred vertically.
 */
function arrangeLayered(kids: Sized[], links: [number, number][], initial: number, top: number): Arranged {
  const rank = kids.map(() => -1);
  rank[initial] = 0;
  const queue = [initial];
  while (queue.length > 0) {
    const i = queue.shift()!;
    for (const [a, b] of links) {
      if (a === i && rank[b] < 0) {
        rank[b] = rank[i] + 1;
        queue.push(b);
      }
    }
  }
  const last = Math.max(...rank) + 1;
  const cols: number[][] = [];
  kids.forEach((_, i) => (cols[rank[i] < 0 ? last : rank[i]] ??= []).push(i));
  const columns = cols.filter((c) => c !== undefined);
  const colW = columns.map((c) => Math.max(...c.map((i) => kids[i].w)));
  const colH = columns.map((c) => c.reduce((a, i) => a + kids[i].h, 0) + VGAP * (c.length - 1));
  const height = Math.max(...colH);
  const children: Arranged['children'] = [];
  let x = INITIAL_ROOM;
  columns.forEach((c, ci) => {
    let y = top + (height - colH[ci]) / 2;
    for (const i of c) {
      children.push({ node: kids[i], dx: x + (colW[ci] - kids[i].w) / 2, dy: y });
      y += kids[i].h + VGAP;
    }
    x += colW[ci] + HGAP;
  });
  return { children, w: x - HGAP + PAD + LOOP, h: top + height + VGAP / 2 };
}

/** Circular, for dense graphs of atomic states: every transition a chord, none through a box. */
function arrangeCircle(kids: Sized[], initial: number, top: number): Arranged {
  const n = kids.length;
  const maxW = Math.max(...kids.map((k) => k.w));
  const maxH = Math.max(...kids.map((k) => k.h));
  const r = (maxW + 40) / (2 * Math.sin(Math.PI / n));
  const [rx, ry] = [r, r * 0.8];
  const [cx, cy] = [INITIAL_ROOM + rx + maxW / 2, top + ry + maxH / 2];
  const children = kids.map((k, i) => {
    // the initial child at the left, then clockwise in definition order
    const a = Math.PI + (2 * Math.PI * ((i - initial + n) % n)) / n;
    return { node: k, dx: cx + rx * Math.cos(a) - k.w / 2, dy: cy + ry * Math.sin(a) - k.h / 2 };
  });
  return { children, w: cx + rx + maxW / 2 + PAD + LOOP + 40, h: cy + ry + maxH / 2 + VGAP / 2 };
}

interface Arranged {
  children: Sized['children'];
  w: number;
  h: number;
}

function size(s: ExportedState, path: string): Sized {
  const entries = Object.entries(s.states);
  const kids = entries.map(([k, c]) => size(c, path ? `${path}.${k}` : k));
  const own = Math.max(MIN_W, textW(s.id.split('.').pop() ?? s.id) + 2 * PAD, textW(invokeLine(s)) + 2 * PAD);
  if (kids.length === 0) {
    return { s, path, w: own, h: ATOMIC_H + (s.invokes.length ? LINE_H : 0), children: [] };
  }
  const header = HEADER + (s.invokes.length ? LINE_H : 0);
  if (s.type === 'parallel') {
    // regions side by side, wrapped into rows of at most MAX_ROW_W
    const children: Sized['children'] = [];
    let [x, y, rowH, w] = [PAD, header, 0, 0];
    for (const k of kids) {
      if (x > PAD && x + k.w > MAX_ROW_W) [x, y, rowH] = [PAD, y + rowH + REGION_GAP, 0];
      children.push({ node: k, dx: x, dy: y });
      x += k.w + REGION_GAP;
      rowH = Math.max(rowH, k.h);
      w = Math.max(w, x - REGION_GAP + PAD);
    }
    return { s, path, w: Math.max(w, own), h: y + rowH + PAD, children };
  }
  const links = siblingLinks(s);
  const initial = Math.max(0, entries.findIndex(([k]) => k === s.initial));
  const pairs = new Set(links.map(([a, b]) => (a < b ? `${a}-${b}` : `${b}-${a}`))).size;
  const dense = kids.length >= 5 && pairs > 1.5 * kids.length && kids.every((k) => k.children.length === 0);
  const a = dense ? arrangeCircle(kids, initial, header + VGAP / 2) : arrangeLayered(kids, links, initial, header + VGAP / 2);
  return { s, path, w: Math.max(a.w, own), h: a.h, children: a.children };
}

function place(n: Sized, x: number, y: number, depth: number, initial: boolean, out: LayoutBox[]): void {
  const key = n.path ? (n.path.split('.').pop() ?? n.path) : n.s.id;
  out.push({ path: n.path, id: n.s.id, key, type: n.s.type, depth, x, y, w: n.w, h: n.h, initial, invokes: n.s.invokes });
  for (const c of n.children) {
    const childKey = c.node.path.split('.').pop();
    place(c.node, x + c.dx, y + c.dy, depth + 1, n.s.type === 'compound' && n.s.initial === childKey, out);
  }
}

interface Pt {
  x: number;
  y: number;
}

const r1 = (v: number) => Math.round(v * 10) / 10;
const centre = (b: LayoutBox): Pt => ({ x: b.x + b.w / 2, y: b.y + b.h / 2 });

/** Where the ray from `b`'s centre towards `to` leaves the box. */
function border(b: LayoutBox, to: Pt): Pt {
  const c = centre(b);
  const dx = to.x - c.x;
  const dy = to.y - c.y;
  if (dx === 0 && dy === 0) return c;
  const t = Math.min(dx === 0 ? Infinity : b.w / 2 / Math.abs(dx), dy === 0 ? Infinity : b.h / 2 / Math.abs(dy));
  return { x: c.x + dx * t, y: c.y + dy * t };
}

const contains = (outer: LayoutBox, inner: LayoutBox) =>
  outer !== inner && (outer.path === '' || inner.path.startsWith(`${outer.path}.`));

interface RawEdge {
  from: LayoutBox;
  to: LayoutBox;
  events: string[];
  labels: string[];
}

function edgePath(e: RawEdge, slot: number, slots: number): { d: string; label: Pt } {
  const { from: a, to: b } = e;
  if (a === b) {
    // a loop out of the right edge, its label beside it
    const [x0, y0] = [a.x + a.w, a.y + 8];
    const d = `M${r1(x0)},${r1(y0)} C${r1(x0 + 22)},${r1(y0 - 14)} ${r1(x0 + 22)},${r1(y0 + 24)} ${r1(x0)},${r1(y0 + 10)}`;
    const w = Math.max(...e.labels.map(textW));
    return { d, label: { x: x0 + 24 + w / 2, y: y0 + 5 } };
  }
  if (contains(a, b) || contains(b, a)) {
    // from the nearest inner border of the container to the descendant (or back)
    const [outer, inner] = contains(a, b) ? [a, b] : [b, a];
    const ic = centre(inner);
    const options: [number, Pt, Pt][] = [
      [inner.x - outer.x, { x: outer.x, y: ic.y }, { x: inner.x, y: ic.y }],
      [outer.x + outer.w - inner.x - inner.w, { x: outer.x + outer.w, y: ic.y }, { x: inner.x + inner.w, y: ic.y }],
      [outer.y + outer.h - inner.y - inner.h, { x: ic.x, y: outer.y + outer.h }, { x: ic.x, y: inner.y + inner.h }],
    ];
    options.sort((p, q) => p[0] - q[0]);
    const [, o, i] = options[0];
    const [p0, p1] = outer === a ? [o, i] : [i, o];
    const shift = (slot - (slots - 1) / 2) * 12;
    const horizontal = p0.y === p1.y;
    const s0 = horizontal ? { x: p0.x, y: p0.y + shift } : { x: p0.x + shift, y: p0.y };
    const s1 = horizontal ? { x: p1.x, y: p1.y + shift } : { x: p1.x + shift, y: p1.y };
    return { d: `M${r1(s0.x)},${r1(s0.y)} L${r1(s1.x)},${r1(s1.y)}`, label: { x: (s0.x + s1.x) / 2, y: (s0.y + s1.y) / 2 - 8 } };
  }
  const ca = centre(a);
  const cb = centre(b);
  // the normal of the canonical direction, so that a→b and b→a curve apart
  const [u, v] = a.path < b.path ? [ca, cb] : [cb, ca];
  const len = Math.hypot(v.x - u.x, v.y - u.y) || 1;
  const nx = -(v.y - u.y) / len;
  const ny = (v.x - u.x) / len;
  // boxes in one column (or row) with others between them: bulge sideways, by direction
  const aligned = Math.abs(ca.x - cb.x) < 1 || Math.abs(ca.y - cb.y) < 1;
  const far = Math.abs(ca.y - cb.y) > (a.h + b.h) / 2 + VGAP + 1 || Math.abs(ca.x - cb.x) > (a.w + b.w) / 2 + HGAP + 1;
  const bulge = aligned && far ? (a.path < b.path ? 1 : -1) * 0.25 * len : 0;
  const off = bulge + (slot - (slots - 1) / 2) * 28;
  const ctrl = { x: (ca.x + cb.x) / 2 + nx * off, y: (ca.y + cb.y) / 2 + ny * off };
  const p0 = border(a, ctrl);
  const p2 = border(b, ctrl);
  const mid = { x: 0.25 * p0.x + 0.5 * ctrl.x + 0.25 * p2.x, y: 0.25 * p0.y + 0.5 * ctrl.y + 0.25 * p2.y };
  return { d: `M${r1(p0.x)},${r1(p0.y)} Q${r1(ctrl.x)},${r1(ctrl.y)} ${r1(p2.x)},${r1(p2.y)}`, label: mid };
}

interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

const overlaps = (a: Rect, b: Rect) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

/** What a label must not cover: atomic states whole, the title lines of compound ones. */
function obstacles(boxes: LayoutBox[]): Rect[] {
  return boxes.map((b) =>
    b.type === 'compound' || b.type === 'parallel'
      ? { x: b.x, y: b.y, w: textW(b.key) + 24, h: 20 + (b.invokes.length ? LINE_H : 0) }
      : { x: b.x, y: b.y, w: b.w, h: b.h },
  );
}

/**
 * Moves each label, in order, to the nearest free place around its anchor
 * (on a grid of a line by three characters): free of earlier labels and of
 * {@link obstacles}. A label with no free place stays at its anchor.
 */
function separate(edges: LayoutEdge[], avoid: Rect[]): void {
  const placed: Rect[] = [];
  // candidate offsets, nearest first (a stable sort keeps ties in generation order)
  const tries: [number, number][] = [];
  for (let i = -8; i <= 8; i++) for (let j = -4; j <= 4; j++) tries.push([j * 3 * CHAR_W, i * LINE_H]);
  tries.sort((a, b) => Math.hypot(a[0], a[1]) - Math.hypot(b[0], b[1]));
  for (const e of edges) {
    const w = Math.max(...e.labels.map(textW)) + 6;
    const h = LINE_H * e.labels.length;
    const at = ([dx, dy]: [number, number]): Rect => ({ x: e.labelX + dx - w / 2, y: e.labelY + dy - h / 2, w, h });
    const free = tries.find((t) => {
      const r = at(t);
      return !placed.some((p) => overlaps(p, r)) && !avoid.some((o) => overlaps(o, r));
    });
    const [dx, dy] = free ?? [0, 0];
    e.labelX = r1(e.labelX + dx);
    e.labelY = r1(e.labelY + dy);
    placed.push(at([0, 0]));
  }
}

/**
 * Lays out one chart.
 * @example layoutChart(machineToJson(forwarderMachine)).boxes.find((b) => b.path === 'leader.idle')
 */
export function layoutChart(chart: ExportedState): ChartLayout {
  const boxes: LayoutBox[] = [];
  place(size(chart, ''), MARGIN, MARGIN, 0, false, boxes);
  const byId = new Map(boxes.map((b) => [b.id, b]));
  const raw: RawEdge[] = [];
  const walk = (s: ExportedState) => {
    const from = byId.get(s.id);
    for (const t of s.transitions) {
      for (const target of t.targets) {
        const to = byId.get(target);
        if (!from || !to) continue;
        const label = t.guard ? `${t.event} [${t.guard}]` : t.event;
        const same = raw.find((r) => r.from === from && r.to === to);
        if (same) {
          same.events.push(t.event);
          same.labels.push(label);
        } else raw.push({ from, to, events: [t.event], labels: [label] });
      }
    }
    for (const c of Object.values(s.states)) walk(c);
  };
  walk(chart);
  const pairKey = (e: RawEdge) => [e.from.path, e.to.path].sort().join('\u0000');
  const slots = new Map<string, number>();
  for (const e of raw) slots.set(pairKey(e), (slots.get(pairKey(e)) ?? 0) + 1);
  const used = new Map<string, number>();
  const edges: LayoutEdge[] = raw.map((e) => {
    const k = pairKey(e);
    const slot = used.get(k) ?? 0;
    used.set(k, slot + 1);
    const { d, label } = edgePath(e, slot, slots.get(k) ?? 1);
    return { from: e.from.path, to: e.to.path, events: e.events, labels: e.labels, d, labelX: r1(label.x), labelY: r1(label.y) };
  });
  separate(edges, obstacles(boxes));
  const root = boxes[0];
  let [x0, y0] = [0, 0];
  let [x1, y1] = [root.x + root.w + MARGIN, root.y + root.h + MARGIN];
  for (const e of edges) {
    const [hw, hh] = [Math.max(...e.labels.map(textW)) / 2, (LINE_H * e.labels.length) / 2];
    x0 = Math.min(x0, e.labelX - hw - MARGIN);
    y0 = Math.min(y0, e.labelY - hh - MARGIN);
    x1 = Math.max(x1, e.labelX + hw + MARGIN);
    y1 = Math.max(y1, e.labelY + hh + MARGIN);
  }
  return { x: Math.floor(x0), y: Math.floor(y0), width: Math.ceil(x1 - Math.floor(x0)), height: Math.ceil(y1 - Math.floor(y0)), boxes, edges };
}

/** Every chart of a `machines()` result, skipping values that are not exported charts. */
export function layoutCharts(charts: Record<string, unknown>): Record<string, ChartLayout> {
  const out: Record<string, ChartLayout> = {};
  for (const [name, chart] of Object.entries(charts)) {
    if (isChart(chart)) out[name] = layoutChart(chart);
  }
  return out;
}

/** True when `v` has the shape of a `machineToJson` result (checked one level deep per node). */
export function isChart(v: unknown): v is ExportedState {
  if (v === null || typeof v !== 'object') return false;
  const s = v as Partial<ExportedState>;
  return (
    typeof s.id === 'string' &&
    typeof s.type === 'string' &&
    Array.isArray(s.invokes) &&
    Array.isArray(s.transitions) &&
    s.states !== null &&
    typeof s.states === 'object' &&
    Object.values(s.states).every(isChart)
  );
}
