/**
 * Simulated agents against the shared test etcd: bindings are written straight
 * into `nodes/<host>/ports/`, and the agents' answers read back from `state/`.
 * Tests wait on agent events and etcd conditions, never on sleeps.
 */
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAgents, portStateValue, startAgents, type AgentEvents, type Agents, type AgentsOptions } from '../src/agents.ts';
import { ValidationError } from '../src/errors.ts';
import { createEtcdClient } from '../src/etcd.ts';
import { createPki } from '../src/etcd-pki.ts';
import { keyLayout, type KeyLayout } from '../src/keys.ts';
import { startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import { etcdEndpoints, newClient, readPrefix, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { startTcpProxy } from './helpers/tcp-proxy.ts';
import { nextEvent } from './helpers/events.ts';
import { tempDir } from './helpers/temp.ts';

let client: Etcd3;
let prefix: string;
let keys: KeyLayout;
let running: Agents[] = [];

beforeAll(() => {
  client = newClient();
});
afterAll(() => client.close());
beforeEach(() => {
  prefix = uniquePrefix('agents');
  keys = keyLayout(prefix);
});
afterEach(async () => {
  await Promise.all(running.map((a) => a.stop()));
  running = [];
});

async function start(o: Partial<AgentsOptions> = {}): Promise<Agents> {
  const agents = createAgents({ etcd: { endpoints: etcdEndpoints() }, prefix, hosts: ['h1'], ...o });
  running.push(agents);
  await agents.start();
  return agents;
}

/** A port binding object shaped like the layout's (keys in the reference's order). */
function binding(n: number, over: Record<string, unknown> = {}): string {
  return JSON.stringify({
    mac_address: `fa:16:3e:00:00:${n.toString(16).padStart(2, '0')}`,
    mtu: 1500,
    physnet: 'physnet1',
    network_type: 'flat',
    segmentation_id: null,
    binding_type: 'vhostuser',
    security_groups: [],
    allowed_address_pairs: [],
    fixed_ips: [{ subnet_id: 'subnet-1', ip_address: `10.0.0.${n}` }],
    port_security_enabled: true,
    device_id: `vm-${n}`,
    ...over,
  });
}

const bind = (host: string, port: string, value: string) => client.put(keys.port(host, port)).value(value);
const unbind = (host: string, port: string) => client.delete().key(keys.port(host, port));
const get = (key: string) => client.get(key).string();

/** The first `name` event of `agents` matching `match`, within `timeoutMs` (see {@link nextEvent}). */
const next = <N extends keyof AgentEvents>(agents: Agents, name: N, match?: (e: AgentEvents[N][0]) => boolean, timeoutMs?: number) =>
  nextEvent<AgentEvents, N>(agents, name, match, timeoutMs);
const confirmedOf = (agents: Agents, portId: string) => next(agents, 'confirmed', (e) => e.portId === portId);

describe('simulated agents', () => {
  it('start: alive on a lease, physnets and ports/ rewritten, hosts named by count', async () => {
    await client.put(keys.statePhysnet('compute-1', 'stale-net')).value('1');
    await client.put(keys.statePort('compute-1', 'ghost')).value('{}');
    const agents = await start({ hosts: 2, physnets: ['physnet1', 'physnet2'], aliveTtlSec: 7 });
    expect(agents.hosts).toEqual(['compute-1', 'compute-2']);
    for (const host of agents.hosts) {
      const { kvs } = await client.kv.range({ key: Buffer.from(keys.stateAlive(host)) });
      expect(kvs[0].value.toString()).toBe('1');
      expect(kvs[0].lease).not.toBe('0');
      const ttl = await client.leaseClient.leaseTimeToLive({ ID: kvs[0].lease });
      expect(ttl.grantedTTL).toBe('7');
      const physnets = await readPrefix(client, keys.statePhysnet(host, ''));
      expect(Object.fromEntries(physnets)).toEqual({ [keys.statePhysnet(host, 'physnet1')]: '1', [keys.statePhysnet(host, 'physnet2')]: '1' });
      expect(agents.agent(host).state).toBe('running');
    }
    expect((await readPrefix(client, keys.statePort('compute-1', ''))).size).toBe(0);
    await agents.agent('compute-2').setPhysnets(['physnet3']);
    expect([...(await readPrefix(client, keys.statePhysnet('compute-2', ''))).keys()]).toEqual([keys.statePhysnet('compute-2', 'physnet3')]);
  });

  it('confirms bound ports with vpp interface props; unbinding deletes the state key', async () => {
    const agents = await start();
    const confirmed = [confirmedOf(agents, 'p1'), confirmedOf(agents, 'p2')];
    await bind('h1', 'p1', binding(1));
    await bind('h1', 'p2', binding(2, { binding_type: 'tap' }));
    const [e1, e2] = await Promise.all(confirmed);
    const v1 = JSON.parse((await get(keys.statePort('h1', 'p1')))!);
    const v2 = JSON.parse((await get(keys.statePort('h1', 'p2')))!);
    expect(Object.keys(v1)).toEqual(['bind_type', 'mac', 'iface_idx', 'path']);
    expect(v1).toEqual({ bind_type: 'vhostuser', mac: 'fa:16:3e:00:00:01', iface_idx: expect.any(Number), path: '/tmp/p1' });
    expect(v2).toEqual({ bind_type: 'tap', mac: 'fa:16:3e:00:00:02', iface_idx: expect.any(Number) });
    expect(v1.iface_idx).not.toBe(v2.iface_idx);
    expect(e1.value).toEqual(v1);
    expect(e2).toMatchObject({ host: 'h1', key: keys.statePort('h1', 'p2') });

    const removed = next(agents, 'removed', (e) => e.portId === 'p1');
    await unbind('h1', 'p1');
    expect(await removed).toMatchObject({ host: 'h1', wasConfirmed: true });
    expect(await get(keys.statePort('h1', 'p1'))).toBeNull();
    expect(await get(keys.statePort('h1', 'p2'))).not.toBeNull();
    expect(agents.stats()).toMatchObject({ confirmed: 2, removed: 1, failed: 0 });
  });

  it('confirms the bindings that existed before start', async () => {
    for (let i = 1; i <= 3; i++) await bind('h1', `pre-${i}`, binding(i));
    const agents = createAgents({ etcd: { endpoints: etcdEndpoints() }, prefix, hosts: ['h1'] });
    running.push(agents);
    const started = next(agents, 'started');
    const all = Promise.all([1, 2, 3].map((i) => confirmedOf(agents, `pre-${i}`)));
    await agents.start();
    expect((await started).ports).toBe(3);
    await all;
    expect((await readPrefix(client, keys.statePort('h1', ''))).size).toBe(3);
  });

  it('waits confirmDelayMs + jitter before confirming', async () => {
    const slow = await start({ hosts: ['slow'], confirmDelayMs: 300, jitterMs: 600, random: () => 0.5 });
    const fast = await start({ hosts: ['fast'] });
    const stateKey = keys.statePort('slow', 'p1');
    const watcher = await client.watch().key(stateKey).create();
    const written = new Promise<number>((res) => watcher.once('put', () => res(Date.now())));
    try {
      const slowDone = confirmedOf(slow, 'p1');
      const fastDone = confirmedOf(fast, 'p2');
      const t0 = Date.now();
      await bind('slow', 'p1', binding(1));
      await bind('fast', 'p2', binding(2));
      await fastDone;
      expect(await get(stateKey)).toBeNull(); // a later binding was answered, the delayed one not yet
      const e = await slowDone;
      expect(e.latencyMs).toBeGreaterThanOrEqual(600);
      expect((await written) - t0).toBeGreaterThanOrEqual(600);
    } finally {
      await watcher.cancel();
    }
  });

  it('an unbind before the delay cancels the confirmation', async () => {
    const agents = await start({ confirmDelayMs: 800 });
    const removed = next(agents, 'removed', (e) => e.portId === 'p1');
    const confirmedIds: string[] = [];
    agents.on('confirmed', (e) => confirmedIds.push(e.portId));
    await bind('h1', 'p1', binding(1));
    await unbind('h1', 'p1');
    expect((await removed).wasConfirmed).toBe(false);
    const p2 = confirmedOf(agents, 'p2');
    await bind('h1', 'p2', binding(2)); // bound after p1, so confirmed after p1 would have been
    await p2;
    expect(confirmedIds).toEqual(['p2']);
    expect(await get(keys.statePort('h1', 'p1'))).toBeNull();
  });

  it('restart clears ports/ and rewrites it from the current bindings', async () => {
    const agents = await start();
    const agent = agents.agent('h1');
    const both = Promise.all([confirmedOf(agents, 'p1'), confirmedOf(agents, 'p2')]);
    await bind('h1', 'p1', binding(1));
    await bind('h1', 'p2', binding(2));
    await both;
    const before = (await client.kv.range({ key: Buffer.from(keys.statePort('h1', 'p1')) })).kvs[0];
    await agent.kill();
    await unbind('h1', 'p2'); // missed while down
    await client.put(keys.statePort('h1', 'ghost')).value('{"bind_type":"tap"}');
    const again = confirmedOf(agents, 'p1');
    await agent.restart();
    expect(agent.state).toBe('running');
    await again;
    const state = await readPrefix(client, keys.statePort('h1', ''));
    expect([...state.keys()]).toEqual([keys.statePort('h1', 'p1')]);
    const after = (await client.kv.range({ key: Buffer.from(keys.statePort('h1', 'p1')) })).kvs[0];
    expect(BigInt(after.create_revision)).toBeGreaterThan(BigInt(before.create_revision));
  });

  it('kill lets the alive key expire after the TTL; stop removes it at once', async () => {
    const agents = await start({ hosts: ['killed', 'stopped'], aliveTtlSec: 2 });
    const t0 = Date.now();
    await agents.agent('killed').kill();
    await agents.agent('stopped').stop();
    expect(await get(keys.stateAlive('stopped'))).toBeNull();
    expect(await get(keys.stateAlive('killed'))).toBe('1');
    expect(agents.agent('killed').state).toBe('killed');
    await waitFor(async () => (await get(keys.stateAlive('killed'))) === null, { timeoutMs: 8000, what: 'alive key expired' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
  });

  it('puts alive back on a new lease when its lease is lost', async () => {
    const agents = await start({ aliveTtlSec: 2 });
    const aliveLease = async () => (await client.kv.range({ key: Buffer.from(keys.stateAlive('h1')) })).kvs[0]?.lease;
    const old = await aliveLease();
    const lost = next(agents, 'error', (e) => e.op === 'lease');
    await client.leaseClient.leaseRevoke({ ID: old! });
    await lost;
    const renewed = await waitFor(async () => { const l = await aliveLease(); return l !== undefined && l !== old && l; }, { what: 'alive on a new lease' });
    expect((await client.leaseClient.leaseTimeToLive({ ID: renewed })).grantedTTL).toBe('2');
  });

  it('failureRate 1: bindings are never confirmed and failed is emitted', async () => {
    const failing = await start({ hosts: ['f'], failureRate: 1 });
    const ok = await start({ hosts: ['ok'] });
    const failed = next(failing, 'failed');
    const p2 = confirmedOf(ok, 'p2');
    await bind('f', 'p1', binding(1));
    await bind('ok', 'p2', binding(2));
    expect(await failed).toEqual({ host: 'f', portId: 'p1', reason: 'failure-draw' });
    await p2;
    expect(await get(keys.statePort('f', 'p1'))).toBeNull();
    expect(failing.stats()).toMatchObject({ confirmed: 0, failed: 1 });
  });

  it('pause holds confirmations until resume', async () => {
    const agents = await start({ hosts: ['paused', 'live'] });
    agents.agent('paused').pause();
    const p2 = confirmedOf(agents, 'p2');
    await bind('paused', 'p1', binding(1));
    await bind('live', 'p2', binding(2));
    await p2;
    expect(await get(keys.statePort('paused', 'p1'))).toBeNull();
    const held = confirmedOf(agents, 'p1');
    agents.agent('paused').resume();
    expect((await held).host).toBe('paused');
  });

  it('calico style writes {"status":"up"}; setStatus rewrites it, garbage included', async () => {
    const agents = await start({ style: 'calico' });
    const agent = agents.agent('h1');
    const confirmed = confirmedOf(agents, 'p1');
    await bind('h1', 'p1', binding(1));
    expect((await confirmed).value).toEqual({ status: 'up' });
    expect(await get(keys.statePort('h1', 'p1'))).toBe('{"status":"up"}');
    await agent.setStatus('p1', 'down');
    expect(await get(keys.statePort('h1', 'p1'))).toBe('{"status":"down"}');
    await agent.setStatus('p1', 'bogus!');
    expect(JSON.parse((await get(keys.statePort('h1', 'p1')))!)).toEqual({ status: 'bogus!' });
    await agent.setState('p1', 'not json');
    expect(await get(keys.statePort('h1', 'p1'))).toBe('not json');
  });

  it('a binding that is not a JSON object fails as invalid-binding', async () => {
    const agents = await start();
    const failed = next(agents, 'failed');
    await bind('h1', 'bad', '[1,2');
    expect(await failed).toMatchObject({ portId: 'bad', reason: 'invalid-binding' });
  });

  it('an unreachable etcd emits error events, never throws, and stop() ends the retries', async () => {
    const agents = createAgents({ etcd: { endpoints: ['http://127.0.0.1:1'], callTimeoutMs: 300 }, prefix, hosts: ['lonely'] });
    running.push(agents);
    const error = next(agents, 'error');
    const started = agents.start();
    expect(await error).toMatchObject({ host: 'lonely', op: 'alive', attempt: 1, error: { recoverable: true } });
    await agents.stop();
    await started;
    expect(agents.agent('lonely').state).toBe('stopped');
    await expect(agents.start()).rejects.toThrow(/stopped/);
  });

  it('refuses bad options with a ValidationError naming the option', () => {
    const etcd = { endpoints: etcdEndpoints() };
    expect(() => createAgents({ etcd, hosts: 0 })).toThrow(ValidationError);
    expect(() => createAgents({ etcd, hosts: ['a/b'] })).toThrow(/hosts\[0\]/);
    expect(() => createAgents({ etcd, hosts: 1, failureRate: 2 })).toThrow(/failureRate/);
    expect(() => createAgents({ etcd, hosts: 1, physnets: [''] })).toThrow(/physnets\[0\]/);
    expect(() => createAgents({ etcd, hosts: 1, style: 'ovs' as never })).toThrow(/style/);
  });

  it('portStateValue gives the vpp and calico shapes', () => {
    expect(portStateValue('vpp', 'p', { binding_type: 'vhostuser', mac_address: 'm' }, 4, '/run/vpp/')).toEqual({ bind_type: 'vhostuser', mac: 'm', iface_idx: 4, path: '/run/vpp/p' });
    expect(portStateValue('calico', 'p', {}, 1)).toEqual({ status: 'up' });
  });
});

describe('simulated agents on a private etcd', () => {
  let etcd: ManagedEtcd;
  let own: Etcd3;
  beforeAll(async () => {
    etcd = await startManagedEtcd();
    own = newClient(etcd.endpoints);
  });
  afterAll(async () => {
    own.close();
    await etcd.stop();
  });

  it('keeps watching and stays alive across an etcd crash and restart', async () => {
    const agents = await start({ etcd: { endpoints: etcd.endpoints, callTimeoutMs: 1000 } });
    const first = confirmedOf(agents, 'p1');
    await own.put(keys.port('h1', 'p1')).value(binding(1));
    await first;
    await etcd.kill('SIGKILL');
    await etcd.restart();
    const second = confirmedOf(agents, 'p2');
    await own.put(keys.port('h1', 'p2')).value(binding(2));
    await second;
    expect(await own.get(keys.statePort('h1', 'p2')).string()).not.toBeNull();
    expect(await own.get(keys.stateAlive('h1')).string()).toBe('1');
  });

  it('relists and re-watches when its watch revision was compacted while cut off', async () => {
    const proxy = await startTcpProxy(etcd.endpoints[0]);
    try {
      const agents = await start({ etcd: { endpoints: [proxy.url], callTimeoutMs: 1000 }, hosts: ['h1', 'h2'] });
      const first = confirmedOf(agents, 'p1');
      await own.put(keys.port('h1', 'p1')).value(binding(1));
      await first;
      proxy.cut();
      await own.delete().key(keys.port('h1', 'p1'));
      await own.put(keys.port('h1', 'p2')).value(binding(2));
      await own.put(keys.port('h2', 'p3')).value(binding(3));
      const { header } = await own.kv.range({ key: Buffer.from(keys.port('h1', 'p2')) });
      await own.kv.compact({ revision: header.revision, physical: true });
      const watchError = next(agents, 'error', (e) => e.op === 'watch', 20_000);
      const caughtUp = Promise.all([confirmedOf(agents, 'p2'), confirmedOf(agents, 'p3'), next(agents, 'removed', (e) => e.portId === 'p1', 20_000)]);
      proxy.restore();
      await watchError;
      await caughtUp;
      expect([...(await readPrefix(own, keys.statePort('h1', ''))).keys()]).toEqual([keys.statePort('h1', 'p2')]);
      const later = confirmedOf(agents, 'p4');
      await own.put(keys.port('h2', 'p4')).value(binding(4)); // the new watch delivers
      await later;
    } finally {
      await Promise.all(running.map((a) => a.stop()));
      running = [];
      await proxy.close();
    }
  });
});

describe('simulated agents over TLS', () => {
  let etcd: ManagedEtcd | undefined;
  let own: Etcd3 | undefined;
  beforeAll(async () => {
    const pki = await createPki(join(tempDir('pw-agents-tls-'), 'pki'), { clients: ['root'] });
    etcd = await startManagedEtcd({ tls: { ...pki.server, clientCertAuth: true } });
    own = createEtcdClient(etcd.connection());
  });
  afterAll(async () => {
    own?.close();
    await etcd?.stop();
  });

  it('agents restarting (their watches closed) leave the writes in flight on the shared client untouched', async () => {
    // one client for all agents: h5 confirms one port per txn while h1..h4 restart together, five times
    const restarting = ['h1', 'h2', 'h3', 'h4'];
    const agents = await start({ etcd: { ...etcd!.connection(), callTimeoutMs: 3000 }, hosts: [...restarting, 'h5'], maxTxnOps: 1 });
    const errors: string[] = [];
    agents.on('error', (e) => errors.push(`${e.host} ${e.op}: ${e.error.message}`));
    let bound = 0;
    let restarted = false;
    const bindings = (async () => {
      while (!restarted || bound < 20) await own!.put(keys.port('h5', `p${++bound}`)).value(binding(bound % 250));
    })();
    try {
      for (let round = 0; round < 5; round++) await Promise.all(restarting.map((h) => agents.agent(h).restart()));
    } finally {
      restarted = true;
      await bindings;
    }
    await waitFor(async () => (await readPrefix(own!, keys.statePort('h5', ''))).size === bound, { what: 'every h5 port confirmed' });
    expect(errors).toEqual([]);
    for (const h of restarting) {
      expect(agents.agent(h).state).toBe('running');
      expect(await own!.get(keys.stateAlive(h)).string()).toBe('1');
    }
    // the restarted agents still watch: a new binding is confirmed
    const later = confirmedOf(agents, 'q1');
    await own!.put(keys.port('h1', 'q1')).value(binding(1));
    await later;
  });
});

describe('startAgents', () => {
  it('resolves with running agents and stop() leaves nothing alive', async () => {
    const agents = await startAgents({ etcd: { endpoints: etcdEndpoints() }, prefix, hosts: 3 });
    running.push(agents);
    expect((await readPrefix(client, keys.state)).size).toBe(6); // alive + physnet1 per host
    await agents.stop();
    const left = await readPrefix(client, keys.state);
    expect([...left.keys()].filter((k) => k.endsWith('/alive'))).toEqual([]);
  });
});
