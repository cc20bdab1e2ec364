/**
 * The forwarder across processes sharing one data directory, against the real
 * etcd: many operations from two processes, a SIGKILLed leader mid-drain, and
 * a SIGSTOPped leader whose late writes etcd must refuse (fencing).
 */
import { afterEach, describe, expect, it } from 'vitest';


import type { IKeyValue } from 'etcd3';
import { keyLayout } from '../src/keys.ts';
import type { RuntimeOptions } from '../src/options.ts';
import { RuntimeChild, killAllChildren, type ChildEvent } from './helpers/child.ts';
import { etcdEndpoints, newClient, readPrefix, uniquePrefix } from './helpers/etcd.ts';
import { mergeExpected, portWorkload, segment } from './helpers/workload.ts';
import { tempDir } from './helpers/temp.ts';

const TTL_MS = 2000;

function setup(name: string): { options: RuntimeOptions; prefix: string } {
  const dataDir = tempDir(`pw-${name}-`);
  const prefix = uniquePrefix(name);
  return {
    prefix,
    options: { etcd: { endpoints: etcdEndpoints(), callTimeoutMs: 3000 }, dataDir, prefix, electionTtlMs: TTL_MS, poolSize: 1 },
  };
}

afterEach(async () => {
  await killAllChildren();
});

/** Drain intervals per (process, term), from the children's `applied` events. */
function drainIntervals(children: RuntimeChild[]): { who: string; from: number; to: number }[] {
  const by = new Map<string, { who: string; from: number; to: number }>();
  for (const c of children) {
    for (const e of c.events.filter((x) => x.event === 'applied')) {
      const who = `${c.name}@${e.data.token}`;
      const iv = by.get(who) ?? { who, from: e.t, to: e.t };
      iv.from = Math.min(iv.from, e.t);
      iv.to = Math.max(iv.to, e.t);
      by.set(who, iv);
    }
  }
  return [...by.values()].sort((a, b) => a.from - b.from);
}

async function expectEtcd(prefix: string, expected: Map<string, string>): Promise<void> {
  const client = newClient();
  try {
    const actual = await readPrefix(client, `${prefix}/`);
    actual.forEach((_v, k) => {
      if (k.startsWith(`${prefix}/election/`)) actual.delete(k);
    });
    expect(actual.size).toBe(expected.size);
    expect(Object.fromEntries(actual)).toEqual(Object.fromEntries(expected));
  } finally {
    client.close();
  }
}

const hosts = Array.from({ length: 8 }, (_, i) => `compute-${i}`);

describe('forwarder across processes', () => {
  it('10,000 operations from two processes sharing a data directory end exactly as desired, one drainer at a time', async () => {
    const { options, prefix } = setup('two-procs');
    const keys = keyLayout(prefix);
    const a = await RuntimeChild.start('a', options);
    const b = await RuntimeChild.start('b', options);
    const wa1 = portWorkload('a', 2500, hosts, 1);
    const wb1 = portWorkload('b', 2500, hosts, 2);
    await Promise.all([a.run(wa1.ops), b.run(wb1.ops)]);

    // hand leadership over mid-stream: the leader stops cleanly, a third process joins
    const leaderEvent = await Promise.race([a, b].map((c) => c.waitForEvent((e) => e.event === 'leader').then(() => c)));
    const [leader, other] = leaderEvent === a ? [a, b] : [b, a];
    await leader.stop();
    const c = await RuntimeChild.start('c', options);
    const wo2 = portWorkload(`${other.name}2`, 2500, hosts, 3);
    const wc2 = portWorkload('c2', 2500, hosts, 4);
    await Promise.all([other.run(wo2.ops), c.run(wc2.ops)]);
    await other.drained();
    await c.drained();

    await expectEtcd(prefix, mergeExpected(wa1.expected(keys), wb1.expected(keys), wo2.expected(keys), wc2.expected(keys)));
    const intervals = drainIntervals([a, b, c]);
    expect(intervals.length).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < intervals.length; i++) expect(intervals[i].from).toBeGreaterThanOrEqual(intervals[i - 1].to);
    await Promise.all([other.stop(), c.stop()]);
  });

  it('a leader killed with SIGKILL mid-drain is replaced within 2×TTL and nothing is lost', async () => {
    const { options, prefix } = setup('kill9');
    const keys = keyLayout(prefix);
    // a slow drain, so that the kill lands in the middle of it
    const slow: RuntimeOptions = { ...options, batch: { inFlight: 1, maxTxnOps: 32, windowEntries: 256 } };
    const a = await RuntimeChild.start('a', slow);
    await a.waitForEvent((e) => e.event === 'leader');
    const b = await RuntimeChild.start('b', options);
    const w = portWorkload('k', 20_000, hosts, 5);
    const run = b.run(w.ops, 200);
    await a.waitForEvent(() => a.events.filter((x) => x.event === 'applied').length > 20);
    const killedAt = Date.now();
    await a.kill();
    const took = await b.waitForEvent((e) => e.event === 'leader', 4 * TTL_MS);
    expect(took.t - killedAt).toBeLessThan(2 * TTL_MS);
    await run;
    await b.drained();
    await expectEtcd(prefix, w.expected(keys));
    await b.stop();
  });

  it('a SIGSTOPped leader resumed after another took over has none of its writes accepted, and steps down', async () => {
    const { options, prefix } = setup('fence');
    const keys = keyLayout(prefix);
    const N = 6000;
    const ports = Array.from({ length: N }, (_, i) => ({ id: `f-${i}`, mac_address: 'fa:16:3e:00:00:01', security_groups: [], fixed_ips: [] }));
    const version = (v: number) =>
      ports.map((p) => ({
        kind: 'bindPort' as const,
        port: p.id,
        args: { port: { ...p, device_id: `v${v}` }, segment, host: 'compute-0' },
      }));

    // every write under the prefix, as etcd applied them
    const watchClient = newClient();
    const puts: IKeyValue[] = [];
    const watcher = await watchClient.watch().prefix(`${prefix}/nodes/`).create();
    watcher.on('put', (kv) => void puts.push(kv));

    const slow: RuntimeOptions = { ...options, batch: { inFlight: 1, maxTxnOps: 16, windowEntries: 512 } };
    const a = await RuntimeChild.start('a', slow);
    await a.waitForEvent((e) => e.event === 'leader');
    await a.run(version(1), 200);
    const appliedBefore = a.events.length;
    await a.waitForEvent((e) => e.event === 'applied', 10_000, appliedBefore);
    // paused mid-drain, but between two recordings of what etcd acknowledged: a process frozen inside
    // an LMDB write transaction would hold the journal's write lock, and b could not append (see README)
    await a.waitForEvent((e) => e.event === 'recorded', 10_000, a.events.length);
    a.signal('SIGSTOP');
    const pausedAt = Date.now();

    const b = await RuntimeChild.start('b', options);
    // a was paused in the middle of its drain
    expect((await b.request({ cmd: 'status' })).journalDepth).toBeGreaterThan(0);
    const lead = await b.waitForEvent((e) => e.event === 'leader', 6 * TTL_MS);
    expect(lead.t - pausedAt).toBeLessThan(3 * TTL_MS);
    await b.run(version(2), 200);
    await b.drained();
    const afterB = a.events.length;
    a.signal('SIGCONT');
    await a.waitForEvent((e: ChildEvent) => e.event === 'follower', 10_000, afterB);
    // a's drain resumed with its old window in memory: whatever it sent after b's term began was refused.
    // (An acknowledgement read after SIGCONT may belong to a txn etcd applied before the pause.)
    const firstB = Math.min(...b.events.filter((e) => e.event === 'applied').map((e) => Number(e.data.revision)));
    const lateApplied = a.events.slice(afterB).filter((e) => e.event === 'applied');
    for (const e of lateApplied) expect(Number(e.data.revision)).toBeLessThan(firstB);

    const client = newClient();
    const actual = await readPrefix(client, `${prefix}/nodes/`);
    expect([...actual.keys()].sort()).toEqual(ports.map((p) => keys.port('compute-0', p.id)).sort());
    for (const [k, v] of actual) expect(JSON.parse(v).device_id, k).toBe('v2');
    // etcd content never regressed: no key went back from v2 to v1
    const seen = new Map<string, string>();
    for (const kv of puts) {
      const k = kv.key.toString();
      const v = JSON.parse(kv.value.toString()).device_id as string;
      if (seen.get(k) === 'v2') expect(v, `${k} regressed`).toBe('v2');
      seen.set(k, v);
    }
    await watcher.cancel();
    watchClient.close();
    client.close();
    await Promise.all([a.stop(), b.stop()]);
  });
});
