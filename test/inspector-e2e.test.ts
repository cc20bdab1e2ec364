/**
 * The inspector end to end, in headless Chromium: the page served by a real
 * runtime (A, this process, option `inspector`) while another process (B, a
 * child on the same data directory and prefix) leads the roles, against the
 * shared test etcd and a simulated agent that confirms after 1.5 s. The page
 * draws the forwarder's statechart, names B as the leader, shows a port bound
 * through A go wired then active (A follows: its registry keeps the facts),
 * and switches to A leading once B stops — without one request leaving the
 * inspector's origin. Skipped (with a message) only when Chromium is absent
 * and CI is not set.
 */
import { mkdirSync } from 'node:fs';


import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { startAgents, type Agents } from '../src/agents.ts';
import type { RuntimeOptions } from '../src/options.ts';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import type { Port } from '../src/types.ts';
import { chromiumMissing, launchChromium } from './helpers/browser.ts';
import { killAllChildren, RuntimeChild } from './helpers/child.ts';
import { etcdEndpoints, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { segment } from './helpers/workload.ts';
import { tempDir } from './helpers/temp.ts';

const WAIT = { timeout: 15_000 };
const HOST = 'compute-slow';
const ROLES = ['forwarder', 'return-watcher'] as const;
const missing = chromiumMissing();
const skip = missing !== undefined && !process.env.CI;
if (skip) console.warn(`inspector-e2e.test.ts skipped: ${missing}`);

const tid = (id: string) => `[data-testid="${id}"]`;

const port: Port = {
  id: 'e2e00000-0000-4000-8000-000000000001',
  mac_address: 'fa:16:3e:00:e2:01',
  device_owner: 'compute:nova',
  device_id: 'vm-e2e-1',
  security_groups: [],
  fixed_ips: [{ subnet_id: 'subnet-1', ip_address: '10.0.0.21' }],
  allowed_address_pairs: [],
};

describe.skipIf(skip)('inspector of a real runtime, in Chromium', () => {
  const prefix = uniquePrefix('inspector-e2e');
  const external: string[] = [];
  const boundInA: string[] = [];
  let dataDir: string;
  let agents: Agents | undefined;
  let b: RuntimeChild | undefined;
  let a: Runtime | undefined;
  let browser: Browser | undefined;
  let page: Page;

  const common = (): RuntimeOptions => ({
    etcd: { endpoints: etcdEndpoints() },
    prefix,
    dataDir,
    electionTtlMs: 2000,
    poolSize: 1,
    resync: { enabled: false },
  });

  beforeAll(async () => {
    dataDir = tempDir('pw-inspector-e2e-');
    agents = await startAgents({ etcd: { endpoints: etcdEndpoints() }, prefix, hosts: [HOST], confirmDelayMs: 1500 });
    // B first, so that it leads every role; A (serving the page) follows
    b = await RuntimeChild.start('runtime-b', { ...common(), holderId: 'runtime-b' });
    await Promise.all(ROLES.map((role) => b!.waitForEvent((e) => e.event === 'leader' && e.data.role === role, 15_000)));
    a = createRuntime({ ...common(), holderId: 'runtime-a', inspector: {} });
    a.on('portBound', (e) => boundInA.push(e.port));
    await a.start();
    await waitFor(() => ROLES.every((role) => a!.status().roles[role]?.holder === 'runtime-b'), { what: 'A sees B leading', timeoutMs: 15_000 });

    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
    page = await context.newPage();
    const origin = new URL(a.inspectorUrl!).origin;
    await page.route('**', (route) => {
      const url = route.request().url();
      if (new URL(url).origin === origin) return route.continue();
      external.push(url);
      return route.abort();
    });
  });

  afterAll(async () => {
    await browser?.close();
    await a?.stop();
    await b?.stop().catch(() => undefined);
    await killAllChildren();
    await agents?.stop();
  });

  it("draws the forwarder's statechart and names the other process as leader", async () => {
    await page.goto(a!.inspectorUrl!, { waitUntil: 'load' });
    await page.waitForSelector('html[data-ready="true"]', WAIT);
    const chart = page.locator(tid('chart-forwarder'));
    await chart.waitFor({ state: 'visible', ...WAIT });
    await page.locator(tid('chart-returnWatcher')).waitFor(WAIT);
    await page.waitForSelector(`${tid('state-forwarder-follower')}[data-active="true"]`, WAIT);
    expect(await chart.locator(tid('state-forwarder-leader')).getAttribute('data-active')).toBe('false');
    for (const role of ROLES) {
      const label = page.locator(tid(`leader-${role}`));
      expect(await label.getAttribute('data-leader')).toBe('false');
      expect(await label.textContent()).toBe('follower — leader runtime-b');
    }
    expect(await page.locator(tid('connection')).getAttribute('data-state')).toBe('live');
  });

  it('shows a port bound through this process appear wired, then active', async () => {
    await a!.bindPort({ port, segment, host: HOST });
    const row = tid(`port-row-${port.id}`);
    await page.waitForSelector(`${row}[data-state="wired"]`, WAIT);
    expect(await page.locator(`${row} td.host`).textContent()).toBe(HOST);
    await page.waitForSelector(`${row}[data-state="active"]`, WAIT);
    await page.waitForSelector(`${tid('port-count-active')}[data-count="1"]`, WAIT);
    expect(await page.locator(tid('port-count-wired')).getAttribute('data-count')).toBe('0');
    await page.waitForSelector(`${tid('event-log')} .entry[data-kind="port"]:text("wired → active")`, WAIT);
    // B leads the return watcher: it announced the binding, A (a follower) did not
    await b!.waitForEvent((e) => e.event === 'portBound' && e.data.port === port.id, 15_000);
    expect(boundInA).toEqual([]);
  });

  it('switches to this process leading when the leading process stops', async () => {
    await b!.stop();
    for (const role of ROLES) {
      await page.waitForSelector(`${tid(`leader-${role}`)}[data-leader="true"]`, WAIT);
      expect(await page.locator(tid(`leader-${role}`)).textContent()).toBe('leader (runtime-a)');
    }
    await page.waitForSelector(`${tid('state-forwarder-leader')}[data-active="true"]`, WAIT);
    await page.waitForSelector(`${tid('event-log')} .entry[data-kind="leader"]:text("leader forwarder: elected (runtime-a)")`, WAIT);
    // the port is still shown active, and A, leading now, does not announce it again
    expect(await page.locator(tid(`port-row-${port.id}`)).getAttribute('data-state')).toBe('active');
    expect(boundInA).toEqual([]);
  });

  it('made no request outside its own origin; screenshot saved', async () => {
    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/inspector-e2e.png', fullPage: true });
    expect(external).toEqual([]);
  });
});
