/**
 * A runtime against a 3-member etcd cluster on loopback, TLS and auth on, the
 * controller as a least-privilege user, under a steady stream of port
 * operations while members fail: the leader killed, a follower killed (quorum
 * lost), both restarted, a member paused (SIGSTOP) past the election timeout.
 * After each fault: everything journaled reaches etcd (read back by an
 * independent client and compared to the test's model of the desired state),
 * no entry lost, no dead letter, and the stall is measured and printed.
 *
 * etcd timing: heartbeat 10 ms, election timeout 100 ms (`fastElection`);
 * runtime: call timeout 2 s, election lease TTL 2 s, watch progress every 500 ms.
 */
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from '../src/etcd.ts';
import { createPki } from '../src/etcd-pki.ts';
import { applyRoles } from '../src/etcd-roles.ts';
import { keyLayout } from '../src/keys.ts';
import { startManagedCluster, type ClusterMember, type ManagedCluster } from '../src/managed-cluster.ts';
import { bindingValue, vifType } from '../src/mech.ts';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import type { BindingLevel, Port } from '../src/types.ts';
import { readPrefix } from './helpers/etcd.ts';
import { rng } from './helpers/rng.ts';
import { segment } from './helpers/workload.ts';
import { tempDir } from './helpers/temp.ts';

const PREFIX = '/networking-vpp';
const keys = keyLayout(PREFIX);
const HOSTS = ['compute-1', 'compute-2', 'compute-3', 'compute-4'];
const GROUPS = ['sg-web', 'sg-db'];
const PORTS = 120;
/** Pace of the operation stream: one call every OP_EVERY_MS. */
const OP_EVERY_MS = 5;
/** How long a member stays paused (the election timeout is 100 ms). */
const PAUSE_MS = 8000;
/** How long the cluster stays without quorum before the two members come back. */
const NO_QUORUM_MS = 3000;
const ours: BindingLevel = { bound_driver: 'vpp', bound_segment: segment };

interface PortModel {
  port: Port;
  host?: string;
  version: number;
}

/** A stream of binds, rebinds and unbinds over a fixed set of ports, and the etcd state it must leave. */
class Workload {
  private readonly r = rng(7);
  private readonly models: PortModel[] = Array.from({ length: PORTS }, (_, i) => ({ port: this.mkPort(i, 0), version: 0 }));
  ops = 0;

  constructor(private readonly rt: Runtime) {}

  private mkPort(i: number, version: number): Port {
    return {
      id: `port-${i}`,
      mac_address: `fa:16:3e:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
      device_owner: 'compute:nova',
      device_id: `vm-${i}-v${version}`,
      security_groups: [GROUPS[(i + version) % GROUPS.length]],
      fixed_ips: [{ subnet_id: 'subnet-1', ip_address: `10.0.${i >> 8}.${(i & 255) + 1}` }],
      allowed_address_pairs: [],
    };
  }

  /** Issues one call (acknowledged once durable in the journal) and updates the model. */
  async step(): Promise<void> {
    const i = Math.floor(this.r() * PORTS);
    const m = this.models[i];
    const pick = (hosts: string[]) => hosts[Math.floor(this.r() * hosts.length)];
    if (!m.host) {
      const host = pick(HOSTS);
      await this.rt.updatePort({ current: m.port, original: null, host, original_host: null, binding_levels: [ours], original_binding_levels: null });
      m.host = host;
    } else if (this.r() < 0.6) {
      const host = pick(HOSTS.filter((h) => h !== m.host));
      const current = this.mkPort(i, m.version + 1);
      await this.rt.updatePort({ current, original: m.port, host, original_host: m.host, binding_levels: [ours], original_binding_levels: [ours] });
      Object.assign(m, { port: current, host, version: m.version + 1 });
    } else {
      await this.rt.unbindPort({ port: m.port, host: m.host, segment });
      m.host = undefined;
    }
    this.ops++;
  }

  /** Every key and value under `nodes/` and `global/` the calls so far must leave in etcd. */
  expected(): Map<string, string> {
    const out = new Map<string, string>();
    for (const m of this.models) {
      if (!m.host) continue;
      out.set(keys.port(m.host, m.port.id), JSON.stringify(bindingValue(m.port, segment, vifType(m.port))));
      for (const sg of m.port.security_groups ?? []) out.set(keys.remoteGroup(sg, m.port.id), JSON.stringify(m.port.fixed_ips!.map((f) => f.ip_address)));
    }
    return out;
  }
}

/** Runs `workload.step()` one after another, one every OP_EVERY_MS, until stopped. */
function streamOf(workload: Workload): { stop(): Promise<void>; errors: unknown[] } {
  const errors: unknown[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t = Date.now();
      await workload.step().catch((err: unknown) => errors.push(err));
      const rest = OP_EVERY_MS - (Date.now() - t);
      if (rest > 0) await new Promise((r) => setTimeout(r, rest)); // pacing of the load, not a wait for a condition
    }
  })();
  return {
    errors,
    async stop() {
      running = false;
      await loop;
    },
  };
}

interface FaultReport {
  fault: string;
  /** Fault injected → the first call issued after it is acknowledged by etcd (left the journal). */
  stallMs: number;
  /** Longest time without any batch applied, in the window from the fault to that acknowledgement. */
  longestGapMs: number;
  /** Calls issued while the fault lasted. */
  opsDuring: number;
  /** The stream stopped → journal empty (everything acknowledged). */
  drainMs: number;
  keys: number;
}

describe('a runtime on a 3-member TLS+auth etcd cluster, under member faults', () => {
  let dir: string;
  let cluster: ManagedCluster;
  let root: Etcd3;
  let rt: Runtime;
  let workload: Workload;
  const reports: FaultReport[] = [];
  const applied: number[] = [];
  let recorded = 0;

  beforeAll(async () => {
    dir = tempDir('pw-cluster-faults-');
    const pki = await createPki(join(dir, 'pki'), { clients: ['portwire'] });
    cluster = await startManagedCluster({ size: 3, tls: { ...pki.server, clientCertAuth: true }, auth: { rootPassword: 'root-pw' } });
    root = createEtcdClient({ ...cluster.connection(), callTimeoutMs: 2000 });
    await applyRoles(root, { prefix: PREFIX, controller: { user: 'portwire', password: 'controller-pw' } });
    rt = createRuntime({
      etcd: {
        endpoints: cluster.endpoints,
        tls: pki.clientTls('portwire'),
        auth: { username: 'portwire', password: 'controller-pw' },
        callTimeoutMs: 2000,
      },
      dataDir: join(dir, 'journal'),
      prefix: PREFIX,
      poolSize: 1,
      electionTtlMs: 2000,
      returnWatcher: { progressIntervalMs: 500 },
    });
    rt.on('applied', () => applied.push(Date.now()));
    rt.on('recorded', (e) => (recorded += e.entries));
    await rt.start();
    workload = new Workload(rt);
  });

  afterAll(async () => {
    await rt?.stop();
    root?.close();
    await cluster?.stop();
    for (const r of reports) {
      console.info(
        `cluster fault: ${r.fault}: stall ${r.stallMs} ms, longest gap between applied batches ${r.longestGapMs} ms, ` +
          `${r.opsDuring} calls during the fault, drained ${r.drainMs} ms after the stream stopped, ${r.keys} keys match`,
      );
    }
  });

  /**
   * Injects `fault` under the operation stream, measures the stall (a call
   * issued right after the fault, until etcd acknowledged it), lets `recover`
   * run, then stops the stream and checks etcd against the model.
   */
  async function underFault(name: string, fault: () => Promise<void> | void, recover?: () => Promise<void>): Promise<void> {
    const stream = streamOf(workload);
    try {
      await rt.drained({ timeoutMs: 20_000 }); // the stream flows
      const opsBefore = workload.ops;
      const t0 = Date.now();
      await fault();
      await workload.step(); // the marker call
      const acked = rt.drained({ timeoutMs: 30_000 }).then(() => Date.now());
      acked.catch(() => {}); // awaited below; a failing recover() leaves no stray rejection
      if (recover) await recover();
      const tAck = await acked;
      const opsDuring = workload.ops - opsBefore;
      const window = [t0, ...applied.filter((t) => t > t0 && t <= tAck), tAck];
      const longestGapMs = Math.max(...window.slice(1).map((t, k) => t - window[k]));
      const stopped = Date.now();
      await stream.stop();
      await rt.drained({ timeoutMs: 30_000 });
      const drainMs = Date.now() - stopped;
      expect(stream.errors).toEqual([]);
      const n = await expectConverged();
      reports.push({ fault: name, stallMs: tAck - t0, longestGapMs, opsDuring, drainMs, keys: n });
    } finally {
      await stream.stop();
    }
  }

  /** etcd holds exactly the model's state, the journal is empty, nothing dead-lettered. */
  async function expectConverged(): Promise<number> {
    expect(rt.deadLetters()).toEqual([]);
    expect(rt.status().journalDepth).toBe(0);
    const actual = new Map([...(await readPrefix(root, `${PREFIX}/nodes/`)), ...(await readPrefix(root, `${PREFIX}/global/`))]);
    const expected = workload.expected();
    expect(actual.size).toBe(expected.size);
    expect(Object.fromEntries(actual)).toEqual(Object.fromEntries(expected));
    return actual.size;
  }

  let killedLeader: ClusterMember;
  let killedFollower: ClusterMember;

  it('the leader member is killed (SIGKILL)', async () => {
    killedLeader = await cluster.leader();
    await underFault('etcd leader killed (SIGKILL)', () => killedLeader.kill('SIGKILL'));
    expect((await cluster.leader()).name).not.toBe(killedLeader.name);
  });

  it('a follower is killed too: no quorum, calls still acknowledged; both restarted: everything reaches etcd', async () => {
    const leader = await cluster.leader();
    killedFollower = cluster.members.find((m) => m.running && m !== leader)!;
    await underFault(
      'a follower killed as well (1 of 3 left: no quorum) for 3 s, then both restarted',
      () => killedFollower.kill('SIGKILL'),
      async () => {
        await new Promise((r) => setTimeout(r, NO_QUORUM_MS)); // the outage lasts this long (load runs meanwhile)
        await Promise.all([killedLeader.restart(), killedFollower.restart()]);
      },
    );
    expect(cluster.members.every((m) => m.running)).toBe(true);
  });

  it(`the leader member is paused (SIGSTOP) for ${PAUSE_MS / 1000} s, then resumed`, async () => {
    const paused = await cluster.leader();
    await underFault(
      `etcd leader paused (SIGSTOP) for ${PAUSE_MS / 1000} s`,
      () => paused.pause(),
      async () => {
        await new Promise((r) => setTimeout(r, PAUSE_MS)); // the pause lasts this long (load runs meanwhile)
        paused.resume();
      },
    );
  });

  it('no journal entry was lost: every entry left the journal acknowledged', () => {
    const journal = (rt as unknown as { journal: { lastSeq(): number } }).journal;
    expect(recorded).toBe(journal.lastSeq());
    expect(reports).toHaveLength(3);
  });
});
