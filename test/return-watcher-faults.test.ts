/**
 * Watch faults, each detected and relisted (or resumed) without losing or
 * duplicating a transition: a compacted revision, an etcd restart, a
 * silently stalled stream (a paused proxy between the runtime and etcd), and
 * an etcd that lost its data (wiped and restarted: its revisions start again).
 * The agents talk to etcd directly and keep confirming during each fault.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';



import { createRuntime, type Runtime } from '../src/runtime.ts';
import { startAgents, type Agents } from '../src/agents.ts';
import { createEtcdClient } from '../src/etcd.ts';
import { startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import type { Port, Segment } from '../src/types.ts';
import { uniquePrefix, waitFor } from './helpers/etcd.ts';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts';
import { tempDir } from './helpers/temp.ts';

const segment: Segment = { id: 'seg-1', network_type: 'vlan', physical_network: 'physnet1', segmentation_id: 100 };
const port = (id: string, i: number): Port => ({
  id,
  mac_address: `fa:16:3e:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
  device_owner: 'compute:nova',
  device_id: `vm-${id}`,
  security_groups: [],
  fixed_ips: [{ subnet_id: 'subnet-1', ip_address: `10.0.${(i >> 8) & 255}.${i & 255}` }],
  allowed_address_pairs: [],
});

let etcd: ManagedEtcd;
let proxy: TcpProxy;
let rt: Runtime | undefined;
let ag: Agents | undefined;
const bound: string[] = [];
const faults: { reason: string; at: number }[] = [];

beforeAll(async () => {
  etcd = await startManagedEtcd({});
});
afterAll(async () => {
  await etcd?.stop();
});
afterEach(async () => {
  await rt?.stop();
  await ag?.stop();
  await proxy?.close();
  rt = undefined;
  ag = undefined;
  bound.length = 0;
  faults.length = 0;
});

async function setup(name: string): Promise<{ prefix: string; rt: Runtime; ag: Agents }> {
  const prefix = uniquePrefix(name);
  proxy = await startTcpProxy(etcd.endpoints[0]);
  ag = await startAgents({ etcd: { endpoints: etcd.endpoints }, prefix, hosts: ['h1', 'h2'], aliveTtlSec: 5 });
  rt = createRuntime({
    etcd: { endpoints: [proxy.url], callTimeoutMs: 1000 },
    prefix,
    dataDir: tempDir('pw-rwf-'),
    electionTtlMs: 2000,
    resync: { enabled: false },
    returnWatcher: { stallMs: 600_000, progressIntervalMs: 200, silentMs: 1000, backoffBaseMs: 50 },
  });
  rt.on('portBound', (e) => bound.push(e.port));
  rt.on('watchFault', (e) => faults.push({ reason: e.reason, at: Date.now() }));
  await rt.start();
  return { prefix, rt, ag };
}

/** Binds `ids` on h1 while h1's agent holds its confirmations; resolves once they are in etcd. */
async function bindHeld(r: Runtime, a: Agents, ids: string[], offset: number): Promise<void> {
  a.agent('h1').pause();
  for (const [i, id] of ids.entries()) await r.bindPort({ port: port(id, offset + i), segment, host: 'h1' });
  await r.drained();
}

const announcedOnce = (ids: string[]) => ids.every((id) => bound.filter((p) => p === id).length === 1);

describe('return watcher under watch faults', () => {
  it('relists after its resume revision was compacted', { timeout: 60_000 }, async () => {
    const { rt: r, ag: a } = await setup('rwf-compact');
    const early = ['c0', 'c1', 'c2'];
    for (const [i, id] of early.entries()) await r.bindPort({ port: port(id, i), segment, host: 'h2' });
    await waitFor(() => announcedOnce(early), { what: 'early ports bound' });
    const held = Array.from({ length: 30 }, (_, i) => `held-${i}`);
    await bindHeld(r, a, held, 100);
    proxy.cut();
    await waitFor(() => faults.some((f) => f.reason === 'broken'), { what: 'broken stream seen' });
    a.agent('h1').resume();
    await waitFor(() => a.agent('h1').stats().confirmed >= held.length, { what: 'confirmed while cut off' });
    const client = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      const rev = (await client.kv.range({ key: Buffer.from('/'), limit: 1 })).header.revision;
      await client.kv.compact({ revision: rev, physical: true });
    } finally {
      client.close();
    }
    proxy.restore();
    await waitFor(() => faults.some((f) => f.reason === 'compacted'), { timeoutMs: 20_000, what: 'compaction detected' });
    await waitFor(() => announcedOnce(held), { timeoutMs: 20_000, what: 'held ports announced after the relist' });
    expect(announcedOnce(early)).toBe(true);
    expect(bound.length).toBe(early.length + held.length);
  });

  it('resumes after an etcd restart without losing a confirmation', { timeout: 60_000 }, async () => {
    const { rt: r, ag: a } = await setup('rwf-restart');
    const held = Array.from({ length: 30 }, (_, i) => `r-${i}`);
    await bindHeld(r, a, held, 0);
    await etcd.kill('SIGKILL');
    await waitFor(() => faults.some((f) => f.reason === 'broken'), { what: 'broken stream seen' });
    a.agent('h1').resume();
    await etcd.restart();
    await waitFor(() => announcedOnce(held), { timeoutMs: 30_000, what: 'confirmations made across the restart announced' });
    expect(bound.length).toBe(held.length);
    await r.bindPort({ port: port('after', 99), segment, host: 'h2' });
    await waitFor(() => announcedOnce(['after']), { what: 'a binding after the restart' });
  });

  it('detects a silently stalled stream and relists', { timeout: 60_000 }, async () => {
    const { rt: r, ag: a } = await setup('rwf-silent');
    const held = Array.from({ length: 30 }, (_, i) => `s-${i}`);
    await bindHeld(r, a, held, 0);
    const pausedAt = Date.now();
    proxy.pause();
    a.agent('h1').resume();
    const silent = await waitFor(() => faults.find((f) => f.reason === 'silent'), { timeoutMs: 10_000, what: 'silence detected' });
    // detection within silentMs plus one progress period (and scheduling slack)
    expect(silent.at - pausedAt).toBeLessThan(1000 + 200 + 2000);
    await waitFor(() => a.agent('h1').stats().confirmed >= held.length, { what: 'confirmed during the stall' });
    expect(bound.filter((p) => held.includes(p))).toEqual([]);
    proxy.resume();
    await waitFor(() => announcedOnce(held), { timeoutMs: 30_000, what: 'announced after the relist' });
    expect(bound.length).toBe(held.length);
  });

  // last: it wipes the etcd this file shares
  it('relists when etcd lost its data, so bindings made afterwards are seen', { timeout: 60_000 }, async () => {
    const { rt: r } = await setup('rwf-wipe');
    const early = ['w0', 'w1', 'w2'];
    for (const [i, id] of early.entries()) await r.bindPort({ port: port(id, i), segment, host: 'h2' });
    await waitFor(() => announcedOnce(early), { what: 'early ports bound' });
    await etcd.kill('SIGKILL');
    await waitFor(() => faults.some((f) => f.reason === 'broken'), { what: 'broken stream seen' });
    // the same member on the same ports, with none of its data: revisions start again from 1
    rmSync(join(etcd.dataDir, 'member'), { recursive: true, force: true });
    await etcd.restart();
    await waitFor(() => faults.some((f) => f.reason === 'reset'), { timeoutMs: 20_000, what: 'the lost data detected' });
    await r.bindPort({ port: port('after-wipe', 99), segment, host: 'h2' });
    await waitFor(() => announcedOnce(['after-wipe']), { timeoutMs: 30_000, what: 'a binding made after the wipe announced' });
  });
});
