/**
 * The inspector page in headless Chromium (Debian's, via playwright-core)
 * against the server over a synthetic source of 100,000 ports: statecharts
 * drawn and highlighted live, ports moving, leadership changing, the journal
 * chart, responsiveness while every port moves — and not one request leaving
 * the inspector's own origin. Skipped (with a message) only when Chromium is
 * absent and CI is not set.
 */
import { mkdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { machines } from '../machines/index.ts';
import { machineToJson, type ExportedState } from '../src/machine-export.ts';
import { startInspector, type Inspector } from '../src/inspector/server.ts';
import { chromiumMissing, launchChromium } from './helpers/browser.ts';
import { fakePortId, FakeInspectorSource } from './helpers/inspector-source.ts';

const N = 100_000;
const WAIT = { timeout: 15_000 };
const missing = chromiumMissing();
const skip = missing !== undefined && !process.env.CI;
if (skip) console.warn(`inspector-browser.test.ts skipped: ${missing}`);

const tid = (id: string) => `[data-testid="${id}"]`;

/** Every state path of an exported chart, relative to its root. */
function statePaths(s: ExportedState, prefix = ''): string[] {
  return Object.entries(s.states).flatMap(([k, c]) => {
    const p = prefix ? `${prefix}.${k}` : k;
    return [p, ...statePaths(c, p)];
  });
}

describe.skipIf(skip)('inspector page in Chromium', () => {
  const source = new FakeInspectorSource({ ports: N, hosts: 20 });
  const external: string[] = [];
  let inspector: Inspector;
  let browser: Browser | undefined;
  let context: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    inspector = await startInspector({ source });
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
    page = await context.newPage();
    const origin = new URL(inspector.url).origin;
    await page.route('**', (route) => {
      const url = route.request().url();
      if (new URL(url).origin === origin) return route.continue();
      external.push(url);
      return route.abort();
    });
    // long tasks, for the responsiveness report
    await page.addInitScript(() => {
      const w = window as unknown as { longTasks: number[] };
      w.longTasks = [];
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) w.longTasks.push(e.duration);
      }).observe({ type: 'longtask', buffered: true });
    });
  });

  afterAll(async () => {
    await browser?.close();
    await inspector?.close();
  });

  it('loads with 100,000 ports (load time reported)', async ({ annotate }) => {
    await page.goto(inspector.url, { waitUntil: 'load' });
    await page.waitForSelector('html[data-ready="true"]', WAIT);
    const t = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming;
      const ready = performance.getEntriesByName('portwire:ready')[0];
      return { domContentLoaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, ready: ready.startTime };
    });
    const line = `page load with ${N.toLocaleString('en')} ports: DOMContentLoaded ${t.domContentLoaded.toFixed(0)} ms, load ${t.load.toFixed(0)} ms, ready (charts + first page + live stream) ${t.ready.toFixed(0)} ms`;
    console.log(line);
    await annotate(line);
    expect(await page.locator(`${tid('port-rows')} tr`).count()).toBe(50);
    await expect.poll(() => page.locator(tid('port-count-all')).getAttribute('data-count')).toBe(String(N));
    expect(await page.locator(tid('port-count-active')).getAttribute('data-count')).toBe(String((7 * N) / 10));
    expect(await page.locator(tid('ports-range')).textContent()).toBe('1–50 of 100,000');
    expect(await page.locator(tid('connection')).getAttribute('data-state')).toBe('live');
  });

  it("draws the forwarder's statechart from machines/index.ts and highlights its current state", async () => {
    const chart = page.locator(tid('chart-forwarder'));
    await chart.waitFor({ state: 'visible', ...WAIT });
    for (const p of statePaths(machineToJson(machines.forwarder))) {
      expect(await chart.locator(tid(`state-forwarder-${p}`)).count(), p).toBe(1);
    }
    const labels = await chart.locator('.label text').allTextContents();
    expect(labels).toEqual(expect.arrayContaining(['ELECTED', 'DEPOSED', 'KICK', 'after idleDelay']));
    for (const name of Object.keys(machines)) await page.locator(tid(`chart-${name}`)).waitFor(WAIT);
    const idle = chart.locator(tid('state-forwarder-leader.idle'));
    await expect.poll(() => idle.getAttribute('data-active')).toBe('true');
    expect(await chart.locator(tid('state-forwarder-follower')).getAttribute('data-active')).toBe('false');

    source.setRole('forwarder', { leader: 'draining' }, 'KICK');
    await page.waitForSelector(`${tid('state-forwarder-leader.draining')}[data-active="true"]`, WAIT);
    expect(await idle.getAttribute('data-active')).toBe('false');
    expect(await chart.locator('.edge[data-fired="true"]').count()).toBeGreaterThan(0);
    await page.waitForSelector(`${tid('role-state-forwarder')}:text("leader.draining")`, WAIT);
  });

  it('shows a port moving from wired to active, and its transitions', async () => {
    await page.locator(tid('port-count-wired')).click();
    const id = fakePortId(1); // ports i ≡ 1 (mod 10) start wired
    const row = page.locator(tid(`port-row-${id}`));
    await page.waitForSelector(`${tid(`port-row-${id}`)}[data-state="wired"]`, WAIT);
    expect(await page.locator(tid('ports-range')).textContent()).toBe('1–50 of 10,000');
    expect(await page.locator(`${tid('port-rows')} tr:not([data-state="wired"])`).count()).toBe(0);
    const active = Number(await page.locator(tid('port-count-active')).getAttribute('data-count'));

    source.movePort(id, 'active', 'PORT_UP');
    await page.waitForSelector(`${tid(`port-row-${id}`)}[data-state="active"]`, WAIT);
    expect(await row.locator('td.state').textContent()).toBe('active');
    await expect.poll(() => page.locator(tid('port-count-active')).getAttribute('data-count'), WAIT).toBe(String(active + 1));

    await row.click();
    await page.locator(tid('port-detail'), { hasText: 'wired → active' }).waitFor(WAIT);
    expect(await page.locator(`${tid('port-transitions')} tr`).count()).toBe(1);
    await page.waitForSelector(`${tid('event-log')} .entry[data-kind="port"]:text("wired → active")`, WAIT);
  });

  it('filters and pages the port list', async () => {
    await page.locator(tid('port-count-all')).click();
    await page.locator(tid('port-filter')).fill('compute-007');
    await page.waitForSelector(`${tid('ports-range')}:text("1–50 of 5,000")`, WAIT);
    await page.locator(tid('ports-next')).click();
    await page.waitForSelector(`${tid('ports-range')}:text("51–100 of 5,000")`, WAIT);
    const hosts = await page.locator(`${tid('port-rows')} td.host`).allTextContents();
    expect(new Set(hosts)).toEqual(new Set(['compute-007']));
    await page.locator(tid('port-filter')).fill('');
    await page.waitForSelector(`${tid('ports-range')}:text("1–50 of 100,000")`, WAIT);
  });

  it('shows the leader of each role, and its change', async () => {
    const label = page.locator(tid('leader-forwarder'));
    expect(await label.textContent()).toBe('leader (host-a)');
    expect(await page.locator(tid('leader-resync')).textContent()).toBe('follower — leader host-b');
    source.setLeader('forwarder', false, 'host-c');
    await page.waitForSelector(`${tid('leader-forwarder')}[data-leader="false"]`, WAIT);
    expect(await label.textContent()).toBe('follower — leader host-c');
    source.setLeader('forwarder', true, 'host-a');
    await page.waitForSelector(`${tid('leader-forwarder')}[data-leader="true"]`, WAIT);
  });

  it('charts the journal depth and drain rate', async () => {
    source.journalFigures = { depth: 1234, appliedKeys: 50_000, deadLetters: 3 };
    await page.waitForSelector(`${tid('journal-depth')}:text("1,234")`, WAIT);
    expect(await page.locator(tid('journal-dead')).textContent()).toBe('3');
    expect(await page.locator(`${tid('journal-chart')} polyline.depth`).count()).toBe(1);
    expect(await page.locator(`${tid('journal-chart')} polyline.rate`).count()).toBe(1);
  });

  it('stays responsive while all 100,000 ports move (figures reported)', async ({ annotate }) => {
    const before = await page.evaluate(() => (window as unknown as { longTasks: number[] }).longTasks.length);
    const started = performance.now();
    const rtts: number[] = [];
    // ten bursts of 10,000 moves, the page answering between them
    for (let burst = 0; burst < 10; burst++) {
      for (let i = burst * 10_000; i < (burst + 1) * 10_000; i++) {
        const p = source.portAt(i);
        source.movePort(p.id, p.state === 'active' ? 'down' : 'active', 'AGENT_STATE');
      }
      const t0 = performance.now();
      await page.evaluate(() => document.querySelectorAll('#event-log .entry').length);
      rtts.push(performance.now() - t0);
    }
    const expected = source.portCounts();
    for (const [state, n] of Object.entries(expected)) {
      await expect.poll(() => page.locator(tid(`port-count-${state}`)).getAttribute('data-count'), WAIT).toBe(String(n));
    }
    const converged = performance.now() - started;
    const longTasks = await page.evaluate((n) => (window as unknown as { longTasks: number[] }).longTasks.slice(n), before);
    const logEntries = await page.locator(`${tid('event-log')} .entry`).count();
    const line =
      `100,000 port moves: counts exact after ${converged.toFixed(0)} ms; page round trip during the storm ` +
      `max ${Math.max(...rtts).toFixed(0)} ms; long tasks ${longTasks.length} (max ${Math.max(0, ...longTasks).toFixed(0)} ms); log entries ${logEntries}`;
    console.log(line);
    await annotate(line);
    expect(logEntries).toBeLessThanOrEqual(500);
  });

  it('made no request outside its own origin; screenshot saved', async () => {
    mkdirSync('test-results', { recursive: true });
    await page.locator(tid('port-count-all')).click();
    await page.screenshot({ path: 'test-results/inspector.png', fullPage: true });
    expect(external).toEqual([]);
  });
});
