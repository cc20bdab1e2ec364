/**
 * The inspector server without a browser, over real HTTP: the API pages and
 * filters 100,000 synthetic ports, the SSE stream coalesces events and sends
 * the journal series, a non-loopback host is refused, close() leaves nothing.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { machines } from '../machines/index.ts';
import { ValidationError } from '../src/errors.ts';
import { machineToJson } from '../src/machine-export.ts';
import { isLoopback, startInspector, type Inspector, type InspectorOptions } from '../src/inspector/server.ts';
import { activePaths, EventHub, queryPorts } from '../src/inspector/source.ts';
import { layoutChart } from '../src/inspector/statechart-layout.ts';
import { fakeHost, fakePortId, FakeInspectorSource } from './helpers/inspector-source.ts';

const N = 100_000;

interface SseMessage {
  event: string;
  data: any;
  /** performance.now() at arrival */
  t: number;
}

/** A Server-Sent Events client over fetch, whose messages a test waits on (bounded, no sleeps). */
async function openEvents(url: string) {
  const abort = new AbortController();
  const res = await fetch(new URL('/events', url), { signal: abort.signal });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const messages: SseMessage[] = [];
  const waiters = new Set<() => void>();
  let ended = false;
  const pump = (async () => {
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const fields = Object.fromEntries(block.split('\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]));
          if (fields.event) messages.push({ event: fields.event, data: JSON.parse(fields.data), t: performance.now() });
          for (const w of waiters) w();
        }
      }
    } catch {
      // aborted
    } finally {
      ended = true;
      for (const w of waiters) w();
    }
  })();
  /** Resolves when `pred(messages)` holds; rejects after `timeoutMs`. */
  const until = (what: string, pred: (m: SseMessage[]) => boolean, timeoutMs = 10_000) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pred(messages)) done(resolve);
        else if (ended) done(() => reject(new Error(`stream ended before ${what}`)));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`timed out waiting for ${what}`))), timeoutMs);
      const done = (f: () => void) => {
        clearTimeout(timer);
        waiters.delete(check);
        f();
      };
      waiters.add(check);
      check();
    });
  return {
    messages,
    until,
    ended: () => ended,
    /** Resolves once the server has ended the stream. */
    finished: pump,
    close: () => abort.abort(),
  };
}

const inspectors: Inspector[] = [];
async function start(o: Partial<InspectorOptions> & { source: InspectorOptions['source'] }): Promise<Inspector> {
  const ins = await startInspector(o);
  inspectors.push(ins);
  return ins;
}
afterEach(async () => {
  await Promise.all(inspectors.splice(0).map((i) => i.close()));
});

const get = async (base: string, path: string) => {
  const res = await fetch(new URL(path, base));
  return { status: res.status, headers: res.headers, body: await res.json() };
};

describe('inspector API over 100,000 ports', () => {
  const source = new FakeInspectorSource({ ports: N, hosts: 20 });
  let ins: Inspector;
  beforeAll(async () => {
    ins = await startInspector({ source });
  });
  afterAll(() => ins.close());

  it('serves the page and its assets from memory, referring to nothing outside', async () => {
    const res = await fetch(ins.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    const html = await res.text();
    expect(html).toContain('/assets/app.js');
    expect(html).toContain('/assets/style.css');
    for (const path of ['/assets/app.js', '/assets/charts.js', '/assets/style.css']) {
      const a = await fetch(new URL(path, ins.url));
      expect(a.status).toBe(200);
      const text = await a.text();
      // the only URL in the assets is the SVG namespace (a name, never fetched)
      expect(text.replaceAll('http://www.w3.org/2000/svg', '')).not.toMatch(/https?:\/\/|\/\/[a-z0-9.-]+\.[a-z]{2,}\//i);
    }
    expect((await fetch(new URL('/nope', ins.url))).status).toBe(404);
    expect((await fetch(ins.url, { method: 'POST' })).status).toBe(405);
  });

  it('gives the machines as machineToJson exports, and their layouts', async () => {
    const { body } = await get(ins.url, '/api/machines');
    expect(body.forwarder).toEqual(machineToJson(machines.forwarder));
    expect(Object.keys(body).sort()).toEqual(Object.keys(machines).sort());
    const layout = (await get(ins.url, '/api/layout')).body;
    const paths = layout.forwarder.boxes.map((b: { path: string }) => b.path);
    expect(paths).toEqual(expect.arrayContaining(['', 'follower', 'leader', 'leader.idle', 'leader.draining']));
    expect(layout.forwarder.edges.some((e: { events: string[] }) => e.events.includes('ELECTED'))).toBe(true);
  });

  it('gives the roles with their active state paths', async () => {
    const { body } = await get(ins.url, '/api/roles');
    const fwd = body.find((r: { id: string }) => r.id === 'forwarder');
    expect(fwd).toMatchObject({ machine: 'forwarder', leader: true, holder: 'host-a', active: ['leader', 'leader.idle'] });
  });

  it('counts every port per state', async () => {
    const { body } = await get(ins.url, '/api/port-counts');
    expect(body).toEqual({ binding: N / 10, wired: N / 10, active: (7 * N) / 10, down: N / 10 });
  });

  it('pages through all ports, 50 by default', async () => {
    const first = (await get(ins.url, '/api/ports')).body;
    expect(first.total).toBe(N);
    expect(first.items).toHaveLength(50);
    expect(first.items[0]).toEqual(source.portAt(0));
    const second = (await get(ins.url, '/api/ports?offset=50&limit=50')).body;
    expect(second.items[0].id).toBe(fakePortId(50));
    const last = (await get(ins.url, `/api/ports?offset=${N - 10}&limit=50`)).body;
    expect(last.items.map((p: { id: string }) => p.id)).toEqual(Array.from({ length: 10 }, (_, i) => fakePortId(N - 10 + i)));
    const beyond = (await get(ins.url, `/api/ports?offset=${N}`)).body;
    expect(beyond).toEqual({ total: N, items: [] });
  });

  it('filters by state, by id or host substring, and both', async () => {
    const wired = (await get(ins.url, '/api/ports?state=wired&limit=1000')).body;
    expect(wired.total).toBe(N / 10);
    expect(wired.items).toHaveLength(1000);
    expect(wired.items.every((p: { state: string }) => p.state === 'wired')).toBe(true);
    const host = (await get(ins.url, '/api/ports?filter=COMPUTE-007')).body;
    expect(host.total).toBe(N / 20);
    expect(host.items.every((p: { host: string }) => p.host === 'compute-007')).toBe(true);
    const byId = (await get(ins.url, `/api/ports?filter=${fakePortId(12345).slice(-6)}`)).body;
    expect(byId.items.map((p: { id: string }) => p.id)).toContain(fakePortId(12345));
    // ports i ≡ 1 (mod 10) are wired: half of them are on compute-011 (i ≡ 11 mod 20), none on compute-007
    const both = (await get(ins.url, '/api/ports?state=wired&filter=compute-011')).body;
    expect(both.total).toBe(N / 20);
    expect((await get(ins.url, '/api/ports?state=wired&filter=compute-007')).body.total).toBe(0);
  });

  it('refuses bad paging parameters, naming them', async () => {
    expect(await get(ins.url, '/api/ports?offset=-1')).toMatchObject({ status: 400, body: { field: 'offset' } });
    expect(await get(ins.url, '/api/ports?limit=0')).toMatchObject({ status: 400, body: { field: 'limit' } });
    expect(await get(ins.url, '/api/ports?limit=1001')).toMatchObject({ status: 400, body: { field: 'limit' } });
    expect(await get(ins.url, '/api/ports?offset=1e3')).toMatchObject({ status: 400, body: { field: 'offset' } });
    expect(await get(ins.url, `/api/ports?filter=${'x'.repeat(300)}`)).toMatchObject({ status: 400, body: { field: 'filter' } });
  });

  it('gives one port with its transitions, 404 for an unknown one', async () => {
    const id = fakePortId(1);
    source.movePort(id, 'active', 'PORT_UP');
    const { body } = await get(ins.url, `/api/ports/${encodeURIComponent(id)}`);
    expect(body).toMatchObject({ id, state: 'active', host: fakeHost(1, 20), transitions: [{ from: 'wired', to: 'active', event: 'PORT_UP' }] });
    source.movePort(id, 'wired', 'PORT_DOWN');
    expect((await get(ins.url, '/api/ports/no-such-port')).status).toBe(404);
  });

  it('gives the journal with its series', async () => {
    source.journalFigures = { depth: 7, appliedKeys: 100, deadLetters: 1 };
    const { body } = await get(ins.url, '/api/journal');
    expect(body).toMatchObject({ depth: 7, appliedKeys: 100, deadLetters: 1 });
    expect(body.series.length).toBeGreaterThanOrEqual(1);
  });

  it('answers only to loopback Host names (no DNS rebinding)', async () => {
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const u = new URL(ins.url);
      const req = request({ host: u.hostname, port: u.port, path: '/api/roles', headers: { host: 'evil.example:80' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(403);
  });
});

describe('inspector live stream', () => {
  it('sends a hello, then coalesced batches: at most one per interval, capped, counts exact', async () => {
    const source = new FakeInspectorSource({ ports: N });
    const ins = await start({ source, flushIntervalMs: 200, maxBatch: 500 });
    const sse = await openEvents(ins.url);
    await sse.until('hello', (m) => m.some((x) => x.event === 'hello'));
    const hello = sse.messages.find((m) => m.event === 'hello')!.data;
    expect(hello.counts).toEqual(source.portCounts());
    expect(hello.roles.map((r: { id: string }) => r.id)).toEqual(['supervisor', 'forwarder', 'resync']);
    expect(Array.isArray(hello.series)).toBe(true);

    // three waves of 20,000 moves each, with role, leader and host events among them
    const batches = () => sse.messages.filter((m) => m.event === 'batch');
    let moved = 0;
    for (let wave = 0; wave < 3; wave++) {
      for (let i = wave * 20_000; i < (wave + 1) * 20_000; i++) source.movePort(fakePortId(i), source.portAt(i).state === 'active' ? 'down' : 'active');
      moved += 20_000;
      source.setRole('forwarder', { leader: wave % 2 ? 'idle' : 'draining' }, wave % 2 ? 'done: drain' : 'KICK');
      source.hostEvent('portBound', { wave });
      const before = batches().length;
      await sse.until(`batch of wave ${wave}`, () => batches().slice(before).some((b) => b.data.events.some((e: { kind: string }) => e.kind === 'host')));
    }
    source.setLeader('forwarder', false, 'host-b');
    await sse.until('leader batch', () => batches().some((b) => b.data.events.some((e: { kind: string }) => e.kind === 'leader')));

    const all = batches();
    const events = all.flatMap((b) => b.data.events);
    const delivered = events.filter((e: { kind: string }) => e.kind === 'port').length;
    const dropped = all.reduce((a, b) => a + b.data.dropped, 0);
    expect(delivered + dropped).toBe(moved);
    expect(all.length).toBeLessThan(20); // 60,000 moves, a handful of pushes
    for (const b of all) expect(b.data.events.length).toBeLessThanOrEqual(500);
    // never two pushes closer than the flush interval (measured on arrival: a margin for delivery jitter)
    for (let i = 1; i < all.length; i++) expect(all[i].t - all[i - 1].t).toBeGreaterThanOrEqual(120);
    // role, leader and host events are never dropped; role events carry their active paths
    const roles = events.filter((e: { kind: string }) => e.kind === 'role');
    expect(roles.map((e: { event: string }) => e.event)).toEqual(['KICK', 'done: drain', 'KICK']);
    expect(roles[0].active).toEqual(['leader', 'leader.draining']);
    expect(events.filter((e: { kind: string }) => e.kind === 'host')).toHaveLength(3);
    expect(events.find((e: { kind: string }) => e.kind === 'leader')).toMatchObject({ role: 'forwarder', leader: false, holder: 'host-b' });
    // the last batch with ports carries the exact counts
    expect(all.filter((b) => b.data.counts).at(-1)!.data.counts).toEqual(source.portCounts());
    sse.close();
  });

  it('samples the journal every interval, derives the drain rate, sends the series to new clients', async () => {
    const source = new FakeInspectorSource({ ports: 10 });
    const t0 = 1_700_000_000_000;
    let clock = t0;
    // each sample: one simulated second later, 500 more keys applied (a drain of 500 keys/s)
    source.journal = () => ({ depth: 1000, appliedKeys: (clock - t0) / 2, deadLetters: 2 });
    const ins = await start({ source, sampleIntervalMs: 20, historyMs: 200, now: () => (clock += 1000) });
    const sse = await openEvents(ins.url);
    const samples = () => sse.messages.filter((m) => m.event === 'journal').map((m) => m.data);
    await sse.until('4 journal samples', () => samples().length >= 4);
    for (const s of samples()) {
      expect(s.rate).toBe(500);
      expect(s.deadLetters).toBe(2);
    }
    const ats = samples().map((s) => s.at);
    expect(ats).toEqual([...ats].sort((a, b) => a - b));
    // historyMs / sampleIntervalMs = 10 samples kept at most
    await sse.until('12 journal samples', () => samples().length >= 12);
    const late = await openEvents(ins.url);
    await late.until('hello', (m) => m.some((x) => x.event === 'hello'));
    const series = late.messages.find((m) => m.event === 'hello')!.data.series;
    expect(series.length).toBe(10);
    expect(series.at(-1).at).toBeGreaterThanOrEqual(samples()[11].at);
    sse.close();
    late.close();
  });
});

describe('inspector lifecycle and validation', () => {
  it.each(['0.0.0.0', '::', '10.1.2.3', '192.168.0.1', 'example.com', '128.0.0.1', '::ffff:10.0.0.1'])(
    'refuses to listen on %s without allowPublic',
    async (host) => {
      const err = await startInspector({ source: new FakeInspectorSource({ ports: 1 }), host }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).field).toBe('inspector.host');
    },
  );

  it('listens on any loopback form, and on a public address only with allowPublic', async () => {
    for (const h of ['127.0.0.1', '127.8.9.10', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1', '0:0:0:0:0:0:0:1']) expect(isLoopback(h)).toBe(true);
    const ins = await start({ source: new FakeInspectorSource({ ports: 1 }), host: '0.0.0.0', allowPublic: true });
    expect(ins.server.listening).toBe(true);
    const port = new URL(ins.url).port;
    expect((await fetch(`http://127.0.0.1:${port}/api/roles`)).status).toBe(200);
  });

  it('refuses a bad port, naming inspector.port', async () => {
    const err = await startInspector({ source: new FakeInspectorSource({ ports: 1 }), port: 70_000 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ field: 'inspector.port' });
  });

  it('close() ends SSE clients, unsubscribes, stops listening and leaves no timer', async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const baseline = timers();
    const source = new FakeInspectorSource({ ports: 100 });
    const ins = await startInspector({ source });
    const a = await openEvents(ins.url);
    const b = await openEvents(ins.url);
    await a.until('hello', (m) => m.some((x) => x.event === 'hello'));
    await b.until('hello', (m) => m.some((x) => x.event === 'hello'));
    expect(source.subscribers).toBe(1);
    source.movePort(fakePortId(3), 'down'); // a flush pending while closing
    expect(timers()).toBeGreaterThan(baseline);
    await ins.close();
    await Promise.all([a.finished, b.finished]);
    expect(a.ended() && b.ended()).toBe(true);
    expect(ins.server.listening).toBe(false);
    expect(source.subscribers).toBe(0);
    expect(timers()).toBeLessThanOrEqual(baseline);
    await expect(fetch(ins.url)).rejects.toThrow();
    await ins.close(); // idempotent
  });
});

describe('inspector helpers', () => {
  it('activePaths lists every active path of a snapshot value', () => {
    expect(activePaths('follower')).toEqual(['follower']);
    expect(activePaths({ leader: 'idle' })).toEqual(['leader', 'leader.idle']);
    expect(activePaths({ a: { b: 'c' }, d: 'e' })).toEqual(['a', 'a.b', 'a.b.c', 'd', 'd.e']);
    expect(activePaths(null)).toEqual([]);
  });

  it('queryPorts filters case-insensitively and pages in order', () => {
    const ports = [
      { id: 'A1', state: 'wired', host: 'h1' },
      { id: 'b2', state: 'active', host: 'H2' },
      { id: 'c3', state: 'wired' },
    ];
    expect(queryPorts(ports, { state: 'wired', offset: 1, limit: 5 })).toEqual({ total: 2, items: [ports[2]] });
    expect(queryPorts(ports, { filter: 'h2', offset: 0, limit: 5 }).items).toEqual([ports[1]]);
    expect(queryPorts(ports, { filter: 'a', offset: 0, limit: 5 }).total).toBe(1);
  });

  it('EventHub isolates a throwing listener', () => {
    const errors: unknown[] = [];
    const hub = new EventHub<number>((e) => errors.push(e));
    const got: number[] = [];
    hub.subscribe(() => {
      throw new Error('boom');
    });
    const off = hub.subscribe((n) => got.push(n));
    hub.emit(1);
    off();
    hub.emit(2);
    expect(got).toEqual([1]);
    expect(errors).toHaveLength(2);
  });

  it.each(Object.entries(machines))('lays out %s deterministically, every state and transition inside the chart', (_n, machine) => {
    const chart = machineToJson(machine);
    const a = layoutChart(chart);
    expect(layoutChart(chart)).toEqual(a);
    for (const b of a.boxes) {
      expect(b.x).toBeGreaterThanOrEqual(a.x);
      expect(b.y).toBeGreaterThanOrEqual(a.y);
      expect(b.x + b.w).toBeLessThanOrEqual(a.x + a.width);
      expect(b.y + b.h).toBeLessThanOrEqual(a.y + a.height);
    }
    // children inside their parents
    const byPath = new Map(a.boxes.map((b) => [b.path, b]));
    for (const b of a.boxes.filter((x) => x.path)) {
      const parent = byPath.get(b.path.includes('.') ? b.path.slice(0, b.path.lastIndexOf('.')) : '')!;
      expect(b.x).toBeGreaterThan(parent.x);
      expect(b.x + b.w).toBeLessThan(parent.x + parent.w);
      expect(b.y).toBeGreaterThan(parent.y);
      expect(b.y + b.h).toBeLessThan(parent.y + parent.h);
    }
    const count = (s: typeof chart): number =>
      s.transitions.reduce((n, t) => n + t.targets.length, 0) + Object.values(s.states).reduce((n, c) => n + count(c), 0);
    expect(a.edges.reduce((n, e) => n + e.events.length, 0)).toBe(count(chart));
    expect(new Set(a.edges.map((e) => `${e.from}>${e.to}`)).size).toBe(a.edges.length);
  });
});
