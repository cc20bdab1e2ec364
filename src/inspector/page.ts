/**
 * The inspector page, served from memory: the HTML shell and its stylesheet
 * (here), and the browser scripts `client/app.js` (data, live updates, ports,
 * log) and `client/charts.js` (SVG drawing), read once at load. Plain
 * JavaScript modules and SVG, no framework, nothing fetched from elsewhere.
 *
 * Stable `data-testid`s: `chart-<machine>`, `state-<machine>-<path>` (with
 * `data-active`), `role-<role>`, `leader-<role>`, `port-count-<state>`,
 * `port-count-all`, `port-filter`, `ports-prev`, `ports-next`, `ports-range`,
 * `port-row-<id>` (with `data-state`), `port-detail`, `event-log`,
 * `journal-chart`, `journal-depth`, `journal-rate`, `journal-dead`,
 * `connection`. The root element gets `data-ready="true"` (and the
 * performance mark `portwire:ready`) once charts, ports and the live stream
 * are in.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** The Content-Security-Policy of the page: its own origin only. */
export const PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>portwire inspector</title>
<link rel="stylesheet" href="/assets/style.css">
<script type="module" src="/assets/app.js"></script>
</head>
<body>
<header>
  <h1>portwire inspector</h1>
  <span id="connection" data-testid="connection" data-state="connecting">connecting…</span>
</header>
<main>
  <section id="charts-panel">
    <h2>Statecharts</h2>
    <div id="charts" data-testid="charts"></div>
  </section>
  <div class="side">
    <section id="roles-panel">
      <h2>Roles</h2>
      <table class="grid"><thead><tr><th>role</th><th>machine</th><th>state</th><th>leadership</th></tr></thead>
      <tbody id="roles" data-testid="roles"></tbody></table>
    </section>
    <section id="journal-panel">
      <h2>Journal</h2>
      <div class="figures">
        depth <b id="journal-depth" data-testid="journal-depth">–</b>
        drain <b id="journal-rate" data-testid="journal-rate">–</b> keys/s
        applied <b id="journal-applied" data-testid="journal-applied">–</b>
        dead letters <b id="journal-dead" data-testid="journal-dead">–</b>
      </div>
      <svg id="journal-chart" data-testid="journal-chart" viewBox="0 0 600 150" role="img" aria-label="journal depth and drain rate"></svg>
    </section>
    <section id="log-panel">
      <h2>Events <label class="muted"><input type="checkbox" id="log-pause" data-testid="log-pause"> pause</label></h2>
      <div id="event-log" data-testid="event-log" role="log" aria-live="off"></div>
    </section>
    <section id="ports-panel">
      <h2>Ports <span id="ports-total" class="muted"></span></h2>
      <div id="port-counts" class="counts" data-testid="port-counts"></div>
      <div class="toolbar">
        <input id="port-filter" data-testid="port-filter" type="search" placeholder="filter by id or host" autocomplete="off">
        <button id="ports-prev" data-testid="ports-prev" type="button">‹ prev</button>
        <span id="ports-range" data-testid="ports-range"></span>
        <button id="ports-next" data-testid="ports-next" type="button">next ›</button>
      </div>
      <div id="port-detail" data-testid="port-detail" hidden></div>
      <table class="grid ports"><thead><tr><th>port</th><th>state</th><th>host</th></tr></thead>
      <tbody id="port-rows" data-testid="port-rows"></tbody></table>
    </section>
  </div>
</main>
</body>
</html>
`;

const CSS = `
:root { --bg: #f7f7f5; --fg: #1d232b; --muted: #6b7480; --line: #c9cdd3; --box: #ffffff; --active: #1f7a4d;
  --active-bg: #ddf3e6; --accent: #2756a8; --fired: #d9822b; font: 13px/1.4 system-ui, sans-serif; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); }
header { display: flex; align-items: baseline; gap: 16px; padding: 8px 16px; background: var(--fg); color: #fff; }
header h1 { font-size: 16px; margin: 0; }
#connection { font-size: 12px; color: #f0c36d; }
#connection[data-state="live"] { color: #8fe0ac; }
main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(440px, 2fr); gap: 12px; padding: 12px 16px; align-items: start; }
.side { display: flex; flex-direction: column; gap: 12px; min-width: 0; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 0; }
h2 { font-size: 14px; margin: 0 0 8px; display: flex; gap: 12px; align-items: baseline; }
.muted { color: var(--muted); font-weight: normal; font-size: 12px; }
table.grid { border-collapse: collapse; width: 100%; font-size: 12px; }
table.grid th { text-align: left; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); padding: 2px 6px; }
table.grid td { padding: 2px 6px; border-bottom: 1px solid #eef0f2; font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
#roles td:nth-child(-n+2), table.ports td:first-child { white-space: nowrap; }
td.leader-yes { color: var(--active); font-weight: 600; }
.figures { font-size: 12px; color: var(--muted); display: flex; gap: 6px; flex-wrap: wrap; align-items: baseline; }
.figures b { color: var(--fg); font-family: ui-monospace, monospace; margin-right: 10px; }
#journal-chart { width: 100%; height: 150px; }
#journal-chart .depth { stroke: var(--accent); fill: none; stroke-width: 1.5; }
#journal-chart .rate { stroke: var(--active); fill: none; stroke-width: 1.5; }
#journal-chart .axis { stroke: var(--line); }
#journal-chart text { font: 10px ui-monospace, monospace; fill: var(--muted); }
#journal-chart text.depth-legend { fill: var(--accent); }
#journal-chart text.rate-legend { fill: var(--active); }
#charts { display: flex; flex-direction: column; gap: 12px; }
figure.chart { margin: 0; border: 1px solid #eef0f2; border-radius: 4px; padding: 4px; max-width: 100%; overflow: auto; }
figure.chart figcaption { font-weight: 600; font-size: 12px; padding: 2px 4px; }
figure.chart figcaption .muted { margin-left: 8px; }
svg.statechart { display: block; font: 11px ui-monospace, monospace; max-width: 100%; height: auto; }
svg.statechart .state rect.frame { fill: var(--box); stroke: #8d96a3; stroke-width: 1; }
svg.statechart .state[data-type="compound"] > rect.frame, svg.statechart .state[data-type="parallel"] > rect.frame { fill: #fbfbfa; }
svg.statechart .state[data-type="parallel"] > g > .state > rect.frame { stroke-dasharray: 4 3; }
svg.statechart .state[data-active="true"] > rect.frame { stroke: var(--active); stroke-width: 2; fill: var(--active-bg); }
svg.statechart .state[data-active="true"][data-type="compound"] > rect.frame { fill: #f0faf4; }
svg.statechart .state text { fill: var(--fg); }
svg.statechart .state text.invokes { fill: var(--muted); font-size: 10px; }
svg.statechart .state rect.final { fill: none; stroke: #8d96a3; }
svg.statechart .initial { fill: var(--fg); stroke: var(--fg); }
svg.statechart .edge path { fill: none; stroke: #7d8794; stroke-width: 1; }
svg.statechart .edge[data-fired="true"] path { stroke: var(--fired); stroke-width: 2; }
svg.statechart .label rect { fill: #ffffffd9; }
svg.statechart .label text { fill: #3c4653; font-size: 10px; }
svg.statechart .label[data-fired="true"] text { fill: var(--fired); font-weight: 700; }
svg.statechart marker path { fill: #7d8794; }
.counts { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 8px; }
.counts button { font: 12px ui-monospace, monospace; border: 1px solid var(--line); background: #fff; border-radius: 12px; padding: 2px 10px; cursor: pointer; }
.counts button[aria-pressed="true"] { background: var(--accent); color: #fff; border-color: var(--accent); }
.toolbar { display: flex; gap: 8px; align-items: center; margin-bottom: 6px; }
.toolbar input { flex: 1; padding: 3px 6px; }
table.ports tbody tr { cursor: pointer; }
table.ports tbody tr:hover { background: #f1f4f9; }
table.ports tbody tr[aria-selected="true"] { background: #e3ebf8; }
#port-detail { margin: 4px 0 8px; border: 1px solid var(--line); border-radius: 4px; padding: 6px; font-size: 12px; background: #fafbfc; }
#port-detail pre { background: #f4f5f6; padding: 6px; max-height: 160px; overflow: auto; margin: 4px 0; }
#event-log { height: 360px; overflow-y: auto; font: 11px/1.45 ui-monospace, monospace; background: #fbfbfa; border: 1px solid #eef0f2; padding: 4px; }
#event-log .entry { white-space: nowrap; }
#event-log .entry[data-kind="role"] { color: #6a3fb0; }
#event-log .entry[data-kind="leader"] { color: #b0533f; font-weight: 600; }
#event-log .entry[data-kind="host"] { color: var(--accent); }
#event-log .entry[data-kind="note"] { color: var(--muted); font-style: italic; }
@media (max-width: 1000px) { main { grid-template-columns: minmax(0, 1fr); } }
`;

/** One asset: its content type, body and ETag. */
export interface Asset {
  type: string;
  body: Buffer;
  etag: string;
}

function asset(type: string, body: string | Buffer): Asset {
  const buf = typeof body === 'string' ? Buffer.from(body) : body;
  return { type, body: buf, etag: `"${createHash('sha1').update(buf).digest('base64url')}"` };
}

const client = (name: string) => readFileSync(new URL(`./client/${name}`, import.meta.url));

/** Every asset of the page by URL path. */
export const ASSETS: ReadonlyMap<string, Asset> = new Map([
  ['/', asset('text/html; charset=utf-8', HTML)],
  ['/assets/style.css', asset('text/css; charset=utf-8', CSS)],
  ['/assets/app.js', asset('text/javascript; charset=utf-8', client('app.js'))],
  ['/assets/charts.js', asset('text/javascript; charset=utf-8', client('charts.js'))],
]);
