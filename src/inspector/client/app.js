// The inspector page: loads the charts and the first page of ports, then
// follows the server's Server-Sent Events (/events): `hello` (roles, port
// counts, journal series; again after every reconnect), `batch` (coalesced
// events, with authoritative port counts when ports moved) and `journal`
// (one sample a second). Plain browser JavaScript, no framework.
import { drawChart, drawJournal, highlightChart } from './charts.js';

const PAGE = 50;
const LOG_MAX = 500;
const HISTORY_MS = 5 * 60_000;
const REFRESH_MS = 2000;
const GROW_MS = 250;

const $ = (id) => document.getElementById(id);
const ui = {
  roles: $('roles'),
  charts: $('charts'),
  counts: $('port-counts'),
  rows: $('port-rows'),
  filter: $('port-filter'),
  prev: $('ports-prev'),
  next: $('ports-next'),
  range: $('ports-range'),
  total: $('ports-total'),
  detail: $('port-detail'),
  log: $('event-log'),
  pause: $('log-pause'),
  journal: $('journal-chart'),
  connection: $('connection'),
};

const model = {
  charts: new Map(), // machine → drawn chart
  roles: new Map(), // role id → role (with active paths)
  fired: new Map(), // machine → { from: Set, event } of the last role event
  counts: {},
  countButtons: new Map(),
  query: { state: '', filter: '', offset: 0 },
  total: 0,
  rows: new Map(), // port id → <tr>
  selected: null,
  series: [],
  seq: 0,
  lastRefresh: 0,
  refreshTimer: 0,
  ready: { charts: false, ports: false, live: false },
};

async function getJson(path) {
  const res = await fetch(path, { headers: { accept: 'application/json' } });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function cell(tr, content, className) {
  const td = document.createElement('td');
  td.textContent = content;
  if (className) td.className = className;
  tr.appendChild(td);
  return td;
}

function markReady(part) {
  model.ready[part] = true;
  const r = model.ready;
  if (r.charts && r.ports && r.live && document.documentElement.dataset.ready !== 'true') {
    document.documentElement.dataset.ready = 'true';
    performance.mark('portwire:ready');
  }
}

// ---- roles and charts

/** The deepest active paths of a role, e.g. `leader.idle`. */
function leafStates(active) {
  return active.filter((p) => !active.some((q) => q.startsWith(`${p}.`))).join(', ') || '–';
}

function leadership(role) {
  if (role.leader) return `leader${role.holder ? ` (${role.holder})` : ''}`;
  return role.holder ? `follower — leader ${role.holder}` : 'no leader';
}

function renderRoles() {
  const rows = [];
  for (const role of model.roles.values()) {
    const tr = document.createElement('tr');
    tr.dataset.testid = `role-${role.id}`;
    cell(tr, role.id);
    cell(tr, role.machine);
    const state = cell(tr, role.error ? `${leafStates(role.active)} — ${role.error}` : leafStates(role.active), role.error ? 'refused' : undefined);
    state.dataset.testid = `role-state-${role.id}`;
    const lead = cell(tr, leadership(role), role.leader ? 'leader-yes' : 'leader-no');
    lead.dataset.testid = `leader-${role.id}`;
    lead.dataset.leader = String(role.leader);
    rows.push(tr);
  }
  ui.roles.replaceChildren(...rows);
}

function renderCharts() {
  for (const [machine, chart] of model.charts) {
    const roles = [...model.roles.values()].filter((r) => r.machine === machine);
    const active = new Set(roles.flatMap((r) => r.active));
    highlightChart(chart, active, model.fired.get(machine) ?? null);
    chart.caption.textContent = roles.length
      ? `role${roles.length > 1 ? 's' : ''}: ${roles.map((r) => `${r.id}${r.leader ? ' ★' : ''}`).join(', ')}`
      : 'no role';
  }
}

function onRoleEvent(e) {
  const role = model.roles.get(e.role) ?? { id: e.role, machine: e.role, leader: false, active: [] };
  model.fired.set(role.machine, { from: new Set(role.active.concat('')), event: e.event });
  model.roles.set(e.role, { ...role, state: e.state, active: e.active ?? [], error: e.error });
}

function onLeaderEvent(e) {
  const role = model.roles.get(e.role) ?? { id: e.role, machine: e.role, state: null, active: [] };
  model.roles.set(e.role, { ...role, leader: e.leader, holder: e.holder });
}

// ---- ports

function renderCounts() {
  const entries = Object.entries(model.counts);
  const all = entries.reduce((a, [, n]) => a + n, 0);
  // a state left out of the counts has no port now: its button shows 0
  const gone = [...model.countButtons.keys()].filter((s) => s !== 'all' && !(s in model.counts)).map((s) => [s, 0]);
  const list = [['all', all], ...entries, ...gone];
  for (const [state, n] of list) {
    let b = model.countButtons.get(state);
    if (!b) {
      b = document.createElement('button');
      b.type = 'button';
      b.dataset.testid = `port-count-${state}`;
      b.dataset.state = state;
      b.addEventListener('click', () => {
        model.query.state = state === 'all' || model.query.state === state ? '' : state;
        model.query.offset = 0;
        loadPorts().catch(showError);
      });
      model.countButtons.set(state, b);
      ui.counts.appendChild(b);
    }
    const label = `${state} ${n.toLocaleString('en')}`;
    if (b.textContent !== label) b.textContent = label;
    b.dataset.count = String(n);
    b.setAttribute('aria-pressed', String(state === 'all' ? model.query.state === '' : model.query.state === state));
  }
  ui.total.textContent = `${all.toLocaleString('en')} in all`;
}

function portRow(p) {
  const tr = document.createElement('tr');
  tr.dataset.testid = `port-row-${p.id}`;
  tr.dataset.id = p.id;
  tr.dataset.state = p.state;
  cell(tr, p.id);
  cell(tr, p.state).className = 'state';
  cell(tr, p.host ?? '').className = 'host';
  if (model.selected === p.id) tr.setAttribute('aria-selected', 'true');
  return tr;
}

async function loadPorts() {
  const seq = ++model.seq;
  model.lastRefresh = performance.now();
  const q = model.query;
  const params = new URLSearchParams({ offset: String(q.offset), limit: String(PAGE) });
  if (q.state) params.set('state', q.state);
  if (q.filter) params.set('filter', q.filter);
  const page = await getJson(`/api/ports?${params}`);
  if (seq !== model.seq) return; // a newer query was sent meanwhile
  model.total = page.total;
  model.rows = new Map();
  const rows = page.items.map((p) => {
    const tr = portRow(p);
    model.rows.set(p.id, tr);
    return tr;
  });
  ui.rows.replaceChildren(...rows);
  const first = page.total === 0 ? 0 : q.offset + 1;
  ui.range.textContent = `${first.toLocaleString('en')}–${(q.offset + page.items.length).toLocaleString('en')} of ${page.total.toLocaleString('en')}`;
  ui.prev.disabled = q.offset === 0;
  ui.next.disabled = q.offset + PAGE >= page.total;
  renderCounts();
  markReady('ports');
}

/** Reloads the current page soon, at most once every `every` ms (after drops, reconnects, new ports). */
function refreshSoon(every = REFRESH_MS) {
  if (model.refreshTimer) return;
  const wait = Math.max(0, model.lastRefresh + every - performance.now());
  model.refreshTimer = setTimeout(() => {
    model.refreshTimer = 0;
    loadPorts().catch(showError);
  }, wait);
}

function onPortEvent(e) {
  const tr = model.rows.get(e.port);
  if (tr) {
    tr.dataset.state = e.to;
    tr.querySelector('.state').textContent = e.to;
    if (e.host !== undefined) tr.querySelector('.host').textContent = e.host;
  } else if (model.rows.size < PAGE) {
    // a port not shown while the page has room: perhaps a new one that belongs here
    refreshSoon(GROW_MS);
  }
  if (model.selected === e.port) openDetail(e.port).catch(showError);
}

async function openDetail(id) {
  model.selected = id;
  for (const tr of model.rows.values()) tr.toggleAttribute('aria-selected', tr.dataset.id === id);
  const res = await fetch(`/api/ports/${encodeURIComponent(id)}`);
  if (model.selected !== id) return;
  ui.detail.hidden = false;
  ui.detail.dataset.port = id;
  if (!res.ok) {
    ui.detail.textContent = `port ${id}: not found`;
    return;
  }
  const p = await res.json();
  const head = document.createElement('div');
  head.innerHTML = '<b></b> <span class="muted"></span> <button type="button">close</button>';
  head.querySelector('b').textContent = p.id;
  head.querySelector('span').textContent = `${p.state}${p.host ? ` on ${p.host}` : ''}`;
  head.querySelector('button').addEventListener('click', () => {
    model.selected = null;
    ui.detail.hidden = true;
  });
  const table = document.createElement('table');
  table.className = 'grid';
  table.dataset.testid = 'port-transitions';
  for (const t of [...p.transitions].reverse()) {
    const tr = document.createElement('tr');
    cell(tr, new Date(t.at).toISOString().slice(11, 23));
    cell(tr, `${t.from} → ${t.to}`);
    cell(tr, t.event);
    table.appendChild(tr);
  }
  const parts = [head, table];
  if (p.facts !== undefined) {
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify(p.facts, null, 2);
    parts.push(pre);
  }
  ui.detail.replaceChildren(...parts);
}

// ---- event log

const time = (at) => new Date(at).toISOString().slice(11, 23);

function describe(e) {
  switch (e.kind) {
    case 'role':
      return `role ${e.role} ${e.event} → ${leafStates(e.active ?? [])}`;
    case 'leader':
      return `leader ${e.role}: ${e.leader ? 'elected' : 'lost'}${e.holder ? ` (${e.holder})` : ''}`;
    case 'port':
      return `port ${e.port} ${e.from} → ${e.to} on ${e.event}${e.host ? ` @${e.host}` : ''}`;
    case 'host':
      return `host ${e.type} ${(JSON.stringify(e.data) ?? '').slice(0, 300)}`;
    default:
      return JSON.stringify(e);
  }
}

function logEntries(entries) {
  const stick = ui.log.scrollTop + ui.log.clientHeight >= ui.log.scrollHeight - 4;
  const frag = document.createDocumentFragment();
  for (const [kind, line] of entries.slice(-LOG_MAX)) {
    const div = document.createElement('div');
    div.className = 'entry';
    div.dataset.kind = kind;
    div.textContent = line;
    frag.appendChild(div);
  }
  ui.log.appendChild(frag);
  let extra = ui.log.childElementCount - LOG_MAX;
  while (extra-- > 0) ui.log.firstElementChild.remove();
  if (stick && !ui.pause.checked) ui.log.scrollTop = ui.log.scrollHeight;
}

// ---- journal

function renderJournal(j) {
  $('journal-depth').textContent = j.depth.toLocaleString('en');
  $('journal-applied').textContent = j.appliedKeys.toLocaleString('en');
  $('journal-dead').textContent = j.deadLetters.toLocaleString('en');
  if (j.rate !== undefined) $('journal-rate').textContent = j.rate.toLocaleString('en');
  drawJournal(ui.journal, model.series, HISTORY_MS);
}

// ---- the live stream

function showError(err) {
  logEntries([['note', `error: ${err.message ?? err}`]]);
}

function connect() {
  const es = new EventSource('/events');
  let hellos = 0;
  const status = (state, label) => {
    ui.connection.dataset.state = state;
    ui.connection.textContent = label;
  };
  es.onopen = () => status('live', 'live');
  es.onerror = () => status('reconnecting', 'reconnecting…');
  es.addEventListener('hello', (m) => {
    const h = JSON.parse(m.data);
    model.roles = new Map(h.roles.map((r) => [r.id, r]));
    model.counts = h.counts;
    model.series = h.series;
    renderRoles();
    renderCharts();
    renderCounts();
    const last = h.series[h.series.length - 1];
    renderJournal({ ...h.journal, rate: last ? last.rate : 0 });
    if (hellos++ > 0) refreshSoon();
    markReady('live');
  });
  es.addEventListener('batch', (m) => {
    const b = JSON.parse(m.data);
    let roles = false;
    const lines = [];
    for (const e of b.events) {
      if (e.kind === 'role') {
        onRoleEvent(e);
        roles = true;
      } else if (e.kind === 'leader') {
        onLeaderEvent(e);
        roles = true;
      } else if (e.kind === 'port') onPortEvent(e);
      lines.push([e.kind, `${time(e.at)} ${describe(e)}`]);
    }
    if (b.dropped > 0) {
      lines.push(['note', `… ${b.dropped.toLocaleString('en')} more events not shown (coalesced)`]);
      refreshSoon();
    }
    if (roles) {
      renderRoles();
      renderCharts();
    }
    if (b.counts) {
      model.counts = b.counts;
      renderCounts();
    }
    logEntries(lines);
  });
  es.addEventListener('journal', (m) => {
    const s = JSON.parse(m.data);
    model.series.push(s);
    const cut = s.at - HISTORY_MS;
    while (model.series.length > 0 && model.series[0].at < cut) model.series.shift();
    renderJournal(s);
  });
}

// ---- start

ui.prev.addEventListener('click', () => {
  model.query.offset = Math.max(0, model.query.offset - PAGE);
  loadPorts().catch(showError);
});
ui.next.addEventListener('click', () => {
  if (model.query.offset + PAGE < model.total) model.query.offset += PAGE;
  loadPorts().catch(showError);
});
let filterTimer = 0;
ui.filter.addEventListener('input', () => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    model.query.filter = ui.filter.value.trim();
    model.query.offset = 0;
    loadPorts().catch(showError);
  }, 150);
});
ui.rows.addEventListener('click', (ev) => {
  const tr = ev.target.closest('tr[data-id]');
  if (tr) openDetail(tr.dataset.id).catch(showError);
});

async function start() {
  connect();
  const layouts = await getJson('/api/layout');
  for (const [name, layout] of Object.entries(layouts)) {
    const chart = drawChart(name, layout);
    model.charts.set(name, chart);
    ui.charts.appendChild(chart.figure);
  }
  renderCharts();
  markReady('charts');
  await loadPorts();
}

start().catch(showError);
