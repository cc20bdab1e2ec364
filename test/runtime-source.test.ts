/**
 * The inspector over real runtimes (real etcd, simulated agents): the
 * `inspector` option (refused public address, nothing left open when the
 * server cannot listen, served while running, closed by stop), and
 * `runtimeSource`: roles from the supervisor's children, live role events
 * from XState inspection, leader changes between two runtimes, port moves,
 * host events, applied keys, and close() removing every listener; and, on
 * an etcd with authentication on, a role's election refused while the role
 * stays a follower, shown live.
 */
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { Range, type Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { machines } from '../machines/index.ts';
import { startAgents } from '../src/agents.ts';
import { createEtcdClient } from '../src/etcd.ts';
import { applyRoles, CONTROLLER_ROLE } from '../src/etcd-roles.ts';
import { PortwireError, ValidationError } from '../src/errors.ts';
import { runtimeSource } from '../src/inspector/runtime-source.ts';
import type { InspectorEvent } from '../src/inspector/source.ts';
import { JOURNAL_FILE } from '../src/journal.ts';
import { startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import type { RuntimeOptions } from '../src/options.ts';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import type { Port } from '../src/types.ts';
import { etcdEndpoints, newClient, readPrefix, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { segment } from './helpers/workload.ts';
import { tempDir } from './helpers/temp.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await Promise.resolve(cleanups.pop()!()).catch(() => undefined);
});

function options(prefix: string, more: RuntimeOptions = {}): RuntimeOptions {
  return { etcd: { endpoints: etcdEndpoints() }, prefix, dataDir: tempDir('pw-rt-source-'), electionTtlMs: 2000, poolSize: 1, resync: { enabled: false }, ...more };
}

async function started(opts: RuntimeOptions): Promise<Runtime> {
  const rt = createRuntime(opts);
  cleanups.push(() => rt.stop());
  await rt.start();
  return rt;
}

const port = (id: string): Port => ({
  id,
  mac_address: 'fa:16:3e:00:00:01',
  device_owner: 'compute:nova',
  device_id: `vm-${id}`,
  security_groups: [],
  fixed_ips: [{ subnet_id: 'subnet-1', ip_address: '10.0.0.5' }],
  allowed_address_pairs: [],
});

const leaderOf = (rt: Runtime, role: string) => rt.status().roles[role]?.leader === true;

describe('the inspector option', () => {
  it('refuses a public address (or a bad port) before opening anything', async () => {
    for (const [inspector, field] of [
      [{ host: '0.0.0.0' }, 'inspector.host'],
      [{ port: 70_000 }, 'inspector.port'],
    ] as const) {
      const opts = options(uniquePrefix('rt-source'), { inspector });
      const rt = createRuntime(opts);
      const err = await rt.start().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).field).toBe(field);
      expect(existsSync(join(opts.dataDir!, JOURNAL_FILE))).toBe(false);
      expect(rt.status().running).toBe(false);
      expect(rt.inspectorUrl).toBeUndefined();
    }
  });

  it('stops what start() opened when the inspector cannot listen', async () => {
    const taken: Server = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => taken.close(resolve)));
    const prefix = uniquePrefix('rt-source');
    const rt = createRuntime(options(prefix, { inspector: { port: (taken.address() as { port: number }).port } }));
    await expect(rt.start()).rejects.toBeInstanceOf(PortwireError);
    expect(rt.status().running).toBe(false);
    // no election key is left behind: the roles resigned
    const client = newClient();
    cleanups.push(() => client.close());
    expect([...(await readPrefix(client, `${prefix}/election/`)).keys()]).toEqual([]);
  });

  it('serves the page while the runtime runs; stop() closes it', async () => {
    const rt = await started(options(uniquePrefix('rt-source'), { inspector: {} }));
    const url = rt.inspectorUrl!;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const roles = (await (await fetch(new URL('/api/roles', url))).json()) as { id: string; machine: string }[];
    expect(roles.map((r) => r.id)).toEqual(['supervisor', 'forwarder', 'resync', 'return-watcher']);
    for (const r of roles) expect(Object.keys(machines)).toContain(r.machine);
    await rt.stop();
    expect(rt.inspectorUrl).toBeUndefined();
    await expect(fetch(url)).rejects.toThrow();
  });
});

describe('runtimeSource', () => {
  it('shows roles, role and port moves, host events and applied keys live', async () => {
    const prefix = uniquePrefix('rt-source');
    const agents = await startAgents({ etcd: { endpoints: etcdEndpoints() }, prefix, hosts: ['compute-1'], confirmDelayMs: 200 });
    cleanups.push(() => agents.stop());
    const rt = await started(options(prefix));
    const source = runtimeSource(rt);
    cleanups.push(() => source.close());
    const events: InspectorEvent[] = [];
    source.subscribe((e) => events.push(e));
    await waitFor(() => leaderOf(rt, 'forwarder') && leaderOf(rt, 'return-watcher'), { what: 'leadership' });
    const fwd = source.roles().find((r) => r.id === 'forwarder')!;
    expect(fwd).toMatchObject({ machine: 'forwarder', leader: true, holder: rt.options.holderId });

    await rt.bindPort({ port: port('p-1'), segment, host: 'compute-1' });
    await waitFor(() => events.some((e) => e.kind === 'host' && e.type === 'portBound'), { what: 'portBound' });
    const moves = events.filter((e) => e.kind === 'port' && e.port === 'p-1').map((e) => (e.kind === 'port' ? `${e.from}→${e.to}` : ''));
    expect(moves).toEqual(['unbound→wired', 'wired→active']);
    // the forwarder drained; role events carry the event that moved the actor
    expect(events).toContainEqual(expect.objectContaining({ kind: 'role', role: 'forwarder', state: { leader: 'draining' } }));
    for (const e of events) if (e.kind === 'role') expect(e.event).toMatch(/^[\w.]+$/);
    expect(source.portCounts()).toEqual({ active: 1 });
    expect(source.ports({ filter: 'compute-1', offset: 0, limit: 10 })).toEqual({ total: 1, items: [{ id: 'p-1', state: 'active', host: 'compute-1' }] });
    expect(source.port('p-1')).toMatchObject({ id: 'p-1', state: 'active', host: 'compute-1', facts: { bindings: [{ host: 'compute-1' }] } });
    expect(source.port('nope')).toBeUndefined();
    await waitFor(() => source.journal().appliedKeys === 1, { what: 'applied keys' });
    expect(source.journal()).toEqual({ depth: 0, appliedKeys: 1, deadLetters: 0 });

    const before = rt.listenerCount('portBound');
    source.close();
    expect(rt.listenerCount('portBound')).toBe(before - 1);
    expect(rt.ports!.listenerCount('portTransition')).toBe(0);
  });

  it('shows who leads from a follower, and the change when the leader stops', async () => {
    const prefix = uniquePrefix('rt-source');
    const a = await started(options(prefix, { holderId: 'runtime-a' }));
    await waitFor(() => leaderOf(a, 'forwarder'), { what: 'a leads' });
    const b = createRuntime(options(prefix, { holderId: 'runtime-b' }));
    cleanups.push(() => b.stop());
    const seen = new Promise((resolve) => b.once('leaderSeen', resolve));
    await b.start();
    const source = runtimeSource(b);
    cleanups.push(() => source.close());
    const events: InspectorEvent[] = [];
    source.subscribe((e) => events.push(e));
    await seen;
    await waitFor(() => source.roles().find((r) => r.id === 'forwarder')?.holder === 'runtime-a', { what: 'holder a seen by b' });
    expect(source.roles().find((r) => r.id === 'forwarder')?.leader).toBe(false);

    await a.stop();
    await waitFor(() => leaderOf(b, 'forwarder'), { what: 'b leads' });
    expect(source.roles().find((r) => r.id === 'forwarder')).toMatchObject({ leader: true, holder: 'runtime-b' });
    expect(events).toContainEqual(expect.objectContaining({ kind: 'leader', role: 'forwarder', leader: true, holder: 'runtime-b' }));
  });
});

describe('runtimeSource under etcd authentication', () => {
  let etcd: ManagedEtcd | undefined;
  let admin: Etcd3 | undefined;

  beforeAll(async () => {
    etcd = await startManagedEtcd({ auth: { rootPassword: 'root-secret' } });
    admin = createEtcdClient(etcd.connection());
  });

  afterAll(async () => {
    admin?.close();
    await etcd?.stop();
  });

  it("shows a follower's refused election live, though the role's own state does not change", async () => {
    const prefix = '/pw-src-refused';
    const controller = { user: 'ctl-src', password: 'ctl-src-pw', role: `${CONTROLLER_ROLE}-src` };
    await applyRoles(admin!, { prefix, controller });
    // runtime-a (full rights) leads every role; runtime-b, least-privilege, follows
    const a = await started(options(prefix, { etcd: etcd!.connection(), holderId: 'runtime-a' }));
    await waitFor(() => leaderOf(a, 'forwarder'), { what: 'a leads' });
    const b = await started(
      options(prefix, {
        etcd: { endpoints: etcd!.endpoints, auth: { username: controller.user, password: controller.password }, callTimeoutMs: 3000 },
        holderId: 'runtime-b',
        refusedRetryMs: 300,
      }),
    );
    const source = runtimeSource(b);
    cleanups.push(() => source.close());
    const events: InspectorEvent[] = [];
    source.subscribe((e) => events.push(e));
    await waitFor(() => b.status().roles.forwarder.holder === 'runtime-a', { what: 'holder a seen by b' });
    expect(source.roles().find((r) => r.id === 'forwarder')).toMatchObject({ state: 'follower', leader: false });
    expect(source.roles().find((r) => r.id === 'forwarder')?.error).toBeUndefined();

    // the controller keeps reading election/ but may no longer write it: b's next campaign is refused
    const election = Range.prefix(`${prefix}/election/`);
    await admin!.role(controller.role).revoke({ permission: 'Readwrite', range: election });
    await admin!.role(controller.role).grant({ permission: 'Read', range: election });
    await a.stop();

    const refused = await waitFor(() => events.find((e) => e.kind === 'role' && e.role === 'forwarder' && e.error), { what: 'refusal event', timeoutMs: 5000 });
    expect(refused).toMatchObject({ kind: 'role', role: 'forwarder', state: 'follower' });
    expect(refused.kind === 'role' && refused.error).toBe(`ETCD_PERMISSION: etcd permission denied: write ${prefix}/election/forwarder`);
    // the role machine itself never left follower: only its election moved
    const forwarderStates = events.filter((e) => e.kind === 'role' && e.role === 'forwarder').map((e) => (e.kind === 'role' ? e.state : undefined));
    expect(new Set(forwarderStates)).toEqual(new Set(['follower']));
    expect(b.status().roles.forwarder).toMatchObject({ state: 'follower', leader: false, error: { code: 'ETCD_PERMISSION' } });
    expect(source.roles().find((r) => r.id === 'forwarder')?.error).toBe(refused.kind === 'role' ? refused.error : '');
    // the return watcher's election is refused the same way
    await waitFor(() => events.some((e) => e.kind === 'role' && e.role === 'return-watcher' && e.error?.includes(`${prefix}/election/return-watcher`)), {
      what: 'return-watcher refusal event',
    });
  });
});
