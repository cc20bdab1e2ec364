/**
 * The way back against the real etcd and simulated agents: every binding
 * announced exactly once (also across a restart and a leadership move), no
 * flapping on an agent restart, host liveness and the live segment check,
 * live migration, and agent-reported status.
 */
import { afterEach, describe, expect, it } from 'vitest';



import { createRuntime, type Runtime } from '../src/runtime.ts';
import { startAgents, type Agents } from '../src/agents.ts';
import type { RuntimeOptions } from '../src/options.ts';
import type { Port, Segment } from '../src/types.ts';
import { etcdEndpoints, newClient, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { killAllChildren, RuntimeChild } from './helpers/child.ts';
import { rng } from './helpers/rng.ts';
import { tempDir } from './helpers/temp.ts';

const segment: Segment = { id: 'seg-1', network_type: 'vlan', physical_network: 'physnet1', segmentation_id: 100 };

const port = (id: string, i: number): Port => ({
  id,
  mac_address: `fa:16:3e:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
  device_owner: 'compute:nova',
  device_id: `vm-${id}`,
  security_groups: [],
  fixed_ips: [{ subnet_id: 'subnet-1', ip_address: `10.${(i >> 8) & 255}.${i & 255}.1` }],
  allowed_address_pairs: [],
});

type Ev = { type: string; port?: string; host?: string; status?: string; at: number };

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  await killAllChildren();
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

function options(prefix: string, dataDir: string, more: RuntimeOptions = {}): RuntimeOptions {
  return {
    etcd: { endpoints: etcdEndpoints() },
    prefix,
    dataDir,
    electionTtlMs: 2000,
    resync: { enabled: false },
    ...more,
  };
}

/** Starts a runtime that records its host events. */
async function runtime(opts: RuntimeOptions): Promise<{ rt: Runtime; events: Ev[] }> {
  const rt = createRuntime(opts);
  const events: Ev[] = [];
  for (const type of ['portBound', 'portUnbound', 'portStalled', 'portRecovered', 'portStatus', 'hostAlive', 'hostDead'] as const) {
    (rt.on as (t: string, fn: (e: Omit<Ev, 'type' | 'at'>) => void) => void)(type, (e) => events.push({ type, ...e, at: Date.now() }));
  }
  await rt.start();
  cleanups.push(() => rt.stop());
  return { rt, events };
}

async function agents(prefix: string, hosts: number | string[], more: Partial<Parameters<typeof startAgents>[0]> = {}): Promise<Agents> {
  const a = await startAgents({ etcd: { endpoints: etcdEndpoints() }, prefix, hosts, aliveTtlSec: 2, ...more });
  cleanups.push(() => a.stop());
  return a;
}

/** Binds `ids`, 100 calls in flight; `onResolved` runs as each call resolves. */
async function bindAll(rt: Runtime, ids: string[], hostOf: (i: number) => string, offset = 0, onResolved?: (id: string) => void): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 100 }, async () => {
      while (next < ids.length) {
        const i = next++;
        await rt.bindPort({ port: port(ids[i], offset + i), segment, host: hostOf(i) });
        onResolved?.(ids[i]);
      }
    }),
  );
}

const boundCounts = (events: Ev[]) => {
  const m = new Map<string, number>();
  for (const e of events) if (e.type === 'portBound') m.set(e.port!, (m.get(e.port!) ?? 0) + 1);
  return m;
};

describe('return watcher', () => {
  it('announces 5,000 bindings across 20 hosts exactly once, across a restart and a leadership move', { timeout: 240_000 }, async () => {
    const prefix = uniquePrefix('rw-exactly-once');
    const dataDir = tempDir('pw-rw-');
    // a seeded 2% of bindings is never confirmed by its agent: those must never be announced
    const ag = await agents(prefix, 20, { failureRate: 0.02, random: rng(7) });
    const failed = new Set<string>();
    ag.on('failed', (e) => failed.add(e.portId));
    const confirmedAt = new Map<string, number>();
    ag.on('confirmed', (e) => confirmedAt.set(e.portId, e.at));
    const a = await runtime(options(prefix, dataDir, { returnWatcher: { stallMs: 600_000 } }));
    const ids = Array.from({ length: 5000 }, (_, i) => `p-${i}`);
    // a host adds its provisioning block when bindPort resolves: no port may be announced before that
    const resolved = new Set<string>();
    const beforeResolved: string[] = [];
    a.rt.on('portBound', (e) => void (resolved.has(e.port) || beforeResolved.push(e.port)));
    await bindAll(a.rt, ids, (i) => `compute-${(i % 20) + 1}`, 0, (id) => resolved.add(id));
    await waitFor(() => boundCounts(a.events).size + failed.size >= 5000, { timeoutMs: 120_000, what: '5,000 ports settled' });
    let counts = boundCounts(a.events);
    expect(beforeResolved).toEqual([]);
    expect(failed.size).toBeGreaterThan(50);
    for (const id of ids) expect(counts.get(id) ?? 0, id).toBe(failed.has(id) ? 0 : 1);
    for (const e of a.events.filter((x) => x.type === 'portBound')) expect(e.host).toBe(`compute-${(Number(e.port!.slice(2)) % 20) + 1}`);

    // the agent of compute-1 holds its confirmations while the runtime restarts
    ag.agent('compute-1').pause();
    const held = Array.from({ length: 20 }, (_, i) => `held-${i}`);
    await bindAll(a.rt, held, () => 'compute-1', 10_000);
    await a.rt.drained();
    await a.rt.stop();
    ag.agent('compute-1').resume();
    await waitFor(() => held.every((id) => confirmedAt.has(id) || failed.has(id)), { what: 'held ports confirmed while down' });

    const b = await runtime(options(prefix, dataDir, { returnWatcher: { stallMs: 600_000 } }));
    // a fresh binding after the restart is the barrier: the relist was processed before it
    await b.rt.bindPort({ port: port('after-restart', 20_000), segment, host: 'compute-2' });
    await b.rt.whenActive('after-restart', { timeoutMs: 20_000 });
    await waitFor(() => boundCounts(b.events).has('after-restart'), { what: 'barrier announced' });
    counts = boundCounts(b.events);
    for (const id of ids) expect(counts.get(id), `no duplicate for ${id}`).toBeUndefined();
    for (const id of held) expect(counts.get(id) ?? 0, id).toBe(failed.has(id) ? 0 : 1);

    // leadership moves to another process sharing the data directory
    const child = await RuntimeChild.start('b2', options(prefix, dataDir, { returnWatcher: { stallMs: 600_000 } }));
    ag.agent('compute-3').pause();
    const moved = Array.from({ length: 20 }, (_, i) => `moved-${i}`);
    await bindAll(b.rt, moved, () => 'compute-3', 30_000);
    await b.rt.drained();
    await b.rt.stop();
    ag.agent('compute-3').resume();
    await child.waitForEvent((e) => e.event === 'leader' && e.data.role === 'return-watcher', 30_000);
    const survivors = moved.filter((id) => !failed.has(id));
    await Promise.all(
      survivors.map((id) => child.waitForEvent((e) => e.event === 'portBound' && e.data.port === id, 30_000)),
    );
    await child.run([{ kind: 'bindPort', port: 'after-move', args: { port: port('after-move', 40_000), segment, host: 'compute-4' } }]);
    await child.waitForEvent((e) => e.event === 'portBound' && e.data.port === 'after-move', 30_000);
    const childBound = child.events.filter((e) => e.event === 'portBound').map((e) => e.data.port as string);
    expect(new Set(childBound).size).toBe(childBound.length);
    expect(childBound.sort()).toEqual([...survivors, 'after-move'].sort());
    await child.stop();
  });

  it('does not flap when an agent restarts and rewrites its ports', async () => {
    const prefix = uniquePrefix('rw-agent-restart');
    const ag = await agents(prefix, ['h1', 'h2']);
    const { rt, events } = await runtime(options(prefix, tempDir('pw-rw-'), { returnWatcher: { stallMs: 60_000 } }));
    const ids = Array.from({ length: 50 }, (_, i) => `r-${i}`);
    await bindAll(rt, ids, () => 'h1');
    await waitFor(() => boundCounts(events).size === 50, { what: '50 ports bound' });
    const before = events.length;
    const rewritten = ag.agent('h1').stats().confirmed;
    await ag.agent('h1').restart();
    await waitFor(() => ag.agent('h1').stats().confirmed >= rewritten + 50, { what: 'ports rewritten by the agent' });
    await rt.bindPort({ port: port('barrier', 99), segment, host: 'h1' });
    await waitFor(() => boundCounts(events).has('barrier'), { what: 'barrier announced' });
    // the only host events since the restart: the barrier's binding (and h1 alive again, if it was seen dead)
    const after = events.slice(before).filter((e) => e.type !== 'hostAlive' && e.type !== 'hostDead');
    expect(after.map((e) => `${e.type}:${e.port}`)).toEqual(['portBound:barrier']);
    expect(rt.status().ports.states.active).toBe(51);
  });

  it('reports a dead host within its lease TTL, refuses it at once, and takes it back', async () => {
    const prefix = uniquePrefix('rw-liveness');
    const ag = await agents(prefix, ['h1', 'h2'], { aliveTtlSec: 2 });
    const { rt, events } = await runtime(options(prefix, tempDir('pw-rw-')));
    await waitFor(() => rt.canBind('h1', segment) && rt.canBind('h2', segment), { what: 'hosts alive' });
    expect(rt.canBind('h3', segment)).toBe(false);
    expect(rt.canBind('h1', { ...segment, physical_network: 'physnet9' })).toBe(false);
    const killedAt = Date.now();
    await ag.agent('h1').kill();
    await waitFor(() => events.find((e) => e.type === 'hostDead' && e.host === 'h1'), { timeoutMs: 10_000, what: 'hostDead' });
    const deadAfter = Date.now() - killedAt;
    // etcd expires a 2 s lease within ~2-3 s; the watch adds little
    expect(deadAfter).toBeLessThan(2000 + 3000);
    expect(rt.canBind('h1', segment)).toBe(false);
    expect(await rt.bindPortDecision({ port: port('x', 1), segments: [segment], host: 'h1' })).toBeNull();
    expect(rt.canBind('h2', segment)).toBe(true);
    await ag.agent('h1').start();
    await waitFor(() => events.find((e) => e.type === 'hostAlive' && e.host === 'h1' && e.at > killedAt), { what: 'hostAlive' });
    expect(rt.canBind('h1', segment)).toBe(true);
    expect(await rt.bindPortDecision({ port: port('x', 1), segments: [segment], host: 'h1' })).toMatchObject({ segment_id: 'seg-1' });
    // physnets changes are seen as well
    await ag.agent('h1').setPhysnets(['physnet2']);
    await waitFor(() => !rt.canBind('h1', segment), { what: 'physnet1 withdrawn' });
  });

  it('follows a live migration: migrating, then active on the destination', async () => {
    const prefix = uniquePrefix('rw-migration');
    await agents(prefix, ['src', 'dst']);
    const { rt, events } = await runtime(options(prefix, tempDir('pw-rw-')));
    const transitions: string[] = [];
    rt.ports!.on('portTransition', (t) => t.port === 'vm-port' && transitions.push(t.to));
    const p = port('vm-port', 5);
    await rt.bindPort({ port: p, segment, host: 'src' });
    await rt.whenActive('vm-port', { timeoutMs: 10_000 });
    await rt.bindPort({ port: p, segment, host: 'dst' });
    await waitFor(() => rt.ports!.facts('vm-port').states.some((s) => s.host === 'dst'), { what: 'destination wired' });
    expect(rt.ports!.port('vm-port')!.state).toBe('migrating');
    await rt.unbindPort({ port: p, host: 'src' });
    await waitFor(() => events.filter((e) => e.type === 'portBound').length === 2, { what: 'bound on the destination' });
    expect(events.filter((e) => e.port === 'vm-port').map((e) => `${e.type}:${e.host}`)).toEqual([
      'portBound:src',
      'portBound:dst',
    ]);
    expect(transitions).toContain('migrating');
    expect(transitions.at(-1)).toBe('active');
    expect(await rt.whenActive('vm-port')).toEqual({ host: 'dst', status: 'up' });
    await rt.unbindPort({ port: p, host: 'dst' });
    await waitFor(() => events.find((e) => e.type === 'portUnbound'), { what: 'unbound' });
    expect(events.filter((e) => e.type === 'portUnbound').map((e) => e.host)).toEqual(['dst']);
  });

  it('waiting ports are records until their stall deadline; the same binding keeps it, another restarts it', async () => {
    const prefix = uniquePrefix('rw-deadline');
    const stallMs = 1200;
    const { rt, events } = await runtime(options(prefix, tempDir('pw-rw-'), { returnWatcher: { stallMs } }));
    await waitFor(() => rt.status().roles['return-watcher'].leader, { what: 'leading the return watcher' });
    const ids = Array.from({ length: 10 }, (_, i) => `d${i}`);
    const t0 = Date.now();
    await bindAll(rt, ids, () => 'no-agent-1');
    await waitFor(() => rt.status().ports.states.wired === 10, { what: '10 ports wired' });
    // no agent answers: every port waits, and none needs an actor for that
    expect(rt.status().ports.liveActors).toBe(0);

    // part of the wait is the scenario itself: the changes below come well inside the first deadline
    await waitFor(() => Date.now() >= t0 + stallMs / 2, { what: 'half the stall time', timeoutMs: stallMs });
    const tChange = Date.now();
    await rt.transaction((tx) => {
      tx.unbindPort({ port: port('d0', 0), host: 'no-agent-1', segment });
      tx.bindPort({ port: port('d0', 0), segment, host: 'no-agent-2' });
    });
    // d1 gets a state key from another host: its facts change, its waiting binding does not
    const client = newClient();
    cleanups.push(async () => client.close());
    await client.put(`${prefix}/state/elsewhere/ports/d1`).value(JSON.stringify({ bind_type: 'vhostuser', mac: null, iface_idx: 1 }));

    await waitFor(() => events.filter((e) => e.type === 'portStalled').length === 10, { what: '10 stalled', timeoutMs: 10_000 });
    const stalledAt = new Map(events.filter((e) => e.type === 'portStalled').map((e) => [e.port, e.at]));
    // the first deadline stands for d1..d9 (d1's unrelated change did not restart it) ...
    for (const id of ids.slice(1)) expect(stalledAt.get(id)! - tChange, id).toBeLessThan(stallMs - 100);
    // ... and d0's rebinding on another host restarted it
    expect(stalledAt.get('d0')! - tChange).toBeGreaterThanOrEqual(stallMs - 20);
    expect(events.find((e) => e.type === 'portStalled' && e.port === 'd0')?.host).toBe('no-agent-2');
    // stalled ports are live actors: they remember to announce a recovery
    expect(rt.status().ports.liveActors).toBe(10);
    expect(rt.status().ports.states.stalled).toBe(10);
  });

  it('maps agent-reported status to portStatus, and tells a stalled port and its recovery', async () => {
    const prefix = uniquePrefix('rw-status');
    const ag = await agents(prefix, ['h1'], { style: 'calico' });
    const { rt, events } = await runtime(options(prefix, tempDir('pw-rw-'), { returnWatcher: { stallMs: 300 } }));
    await rt.bindPort({ port: port('s1', 1), segment, host: 'h1' });
    expect(await rt.whenActive('s1', { timeoutMs: 10_000 })).toEqual({ host: 'h1', status: 'up' });
    await ag.agent('h1').setStatus('s1', 'down');
    await waitFor(() => events.find((e) => e.type === 'portStatus' && e.status === 'down'), { what: 'down' });
    await ag.agent('h1').setState('s1', 'not json');
    await waitFor(() => events.find((e) => e.type === 'portStatus' && e.status === 'error'), { what: 'unparsable → error' });
    await ag.agent('h1').setStatus('s1', 'sideways');
    await ag.agent('h1').setStatus('s1', 'up');
    await waitFor(() => events.filter((e) => e.type === 'portStatus').at(-1)?.status === 'up', { what: 'up again' });
    expect(events.filter((e) => e.type === 'portBound').length).toBe(1);

    ag.agent('h1').pause();
    await rt.bindPort({ port: port('s2', 2), segment, host: 'h1' });
    await waitFor(() => events.find((e) => e.type === 'portStalled' && e.port === 's2'), { what: 'stalled' });
    expect(rt.ports!.port('s2')!.state).toBe('stalled');
    ag.agent('h1').resume();
    await waitFor(() => events.find((e) => e.type === 'portRecovered' && e.port === 's2'), { what: 'recovered' });
    expect(events.filter((e) => e.port === 's2').map((e) => e.type).sort()).toEqual(['portBound', 'portRecovered', 'portStalled']);
  });
});
