/**
 * Resync against the real etcd: drift of every kind repaired exactly (and a
 * newer write made during the run survives), dry runs write nothing, a wiped
 * etcd is rebuilt while the runtime runs, a resync racing the forwarder never
 * regresses a key, and a deposed leader's repairs are refused.
 */
import { afterEach, describe, expect, it } from 'vitest';


import type { Etcd3, IKeyValue } from 'etcd3';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import { NotLeaderError } from '../src/errors.ts';
import { keyLayout, type KeyLayout } from '../src/keys.ts';
import { resyncOnce, RESYNC_ROLE, type ResyncReport } from '../src/resync.ts';
import type { RuntimeOptions } from '../src/options.ts';
import type { Port } from '../src/types.ts';
import { roleLogger, silentLogger } from '../src/logger.ts';
import { etcdEndpoints, newClient, readPrefix, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { segment } from './helpers/workload.ts';
import { tempDir } from './helpers/temp.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(name: string, options: RuntimeOptions = {}) {
  const dataDir = tempDir(`pw-${name}-`);
  const prefix = uniquePrefix(name);
  const rt = createRuntime({ etcd: { endpoints: etcdEndpoints() }, dataDir, prefix, electionTtlMs: 2000, poolSize: 1, ...options });
  cleanups.push(() => rt.stop());
  const client = newClient();
  cleanups.push(() => client.close());
  const resyncLeader = new Promise<void>((resolve) => rt.on('leader', (e) => e.role === RESYNC_ROLE && resolve()));
  await rt.start();
  if (options.resync?.enabled !== false) await resyncLeader;
  return { rt, client, prefix, keys: keyLayout(prefix) };
}

const port = (i: number, version = 0): Port => ({
  id: `p-${i}`,
  mac_address: 'fa:16:3e:00:00:01',
  device_id: `vm-${i}-v${version}`,
  security_groups: ['sg-1'],
  fixed_ips: [{ subnet_id: 's', ip_address: `10.0.${i >> 8}.${i & 255}` }],
});

async function bindAll(rt: Runtime, n: number, version = 0): Promise<void> {
  await rt.transaction((tx) => {
    for (let i = 0; i < n; i++) tx.bindPort({ port: port(i, version), segment, host: `h${i % 4}` });
  });
  await rt.drained();
}

/** What the runtime owns in etcd. */
async function owned(client: Etcd3, keys: KeyLayout): Promise<Map<string, string>> {
  const nodes = await readPrefix(client, `${keys.nodes}/`);
  const global = await readPrefix(client, `${keys.prefix}/global/`);
  return new Map([...nodes, ...global]);
}

describe('resync', () => {
  it('repairs drift of every kind exactly; a dry run reports it without writing; a newer write survives', async () => {
    const writes: { key: string; value: string }[] = [];
    let concurrent: (() => Promise<void>) | undefined;
    const { rt, client, keys } = await setup('drift', {
      resync: {
        // the journal's desired state, through the authoritative-source hook, so that a newer
        // write can be made by "someone else" after the snapshot was read
        source: async function* () {
          await concurrent?.();
          for (const [k, v] of (rt as unknown as { journal: { desiredEntries(): [string, string][] } }).journal.desiredEntries()) yield [k, v] as const;
        },
      },
    });
    await bindAll(rt, 200);
    const desired = await owned(client, keys);
    expect(desired.size).toBe(400);

    // drift: 10 missing, 10 extra, 10 changed
    for (let i = 0; i < 10; i++) await client.delete().key(keys.port(`h${i % 4}`, `p-${i}`));
    for (let i = 0; i < 10; i++) await client.put(keys.port('h9', `stray-${i}`)).value('{"x":1}');
    for (let i = 10; i < 20; i++) await client.put(keys.remoteGroup('sg-1', `p-${i}`)).value('["6.6.6.6"]');

    const dry = await rt.resync({ dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, missing: 10, extra: 10, changed: 10, repaired: 0, conflicts: 0, scanned: 400 });
    expect(dry.differences).toHaveLength(30);
    const afterDry = await owned(client, keys);
    expect(afterDry.get(keys.remoteGroup('sg-1', 'p-10'))).toBe('["6.6.6.6"]');
    expect(afterDry.size).toBe(400);

    // during the repair run, another writer changes one of the drifted keys
    const raced = keys.remoteGroup('sg-1', 'p-15');
    concurrent = async () => {
      concurrent = undefined;
      await client.put(raced).value('["7.7.7.7"]');
      writes.push({ key: raced, value: '["7.7.7.7"]' });
    };
    const report: ResyncReport = await rt.resync();
    expect(report).toMatchObject({ dryRun: false, missing: 10, extra: 10, changed: 10, repaired: 29, conflicts: 1 });
    const after = await owned(client, keys);
    const expected = new Map(desired);
    expected.set(raced, '["7.7.7.7"]');
    expect(Object.fromEntries(after)).toEqual(Object.fromEntries(expected));
  });

  it('rebuilds an emptied etcd while the runtime runs', async () => {
    const { rt, client, keys } = await setup('wiped', { resync: { intervalMs: 300 } });
    await bindAll(rt, 300);
    const desired = await owned(client, keys);
    const reports: ResyncReport[] = [];
    rt.on('resync', (r) => reports.push(r));
    await client.delete().prefix(`${keys.prefix}/nodes/`);
    await client.delete().prefix(`${keys.prefix}/global/`);
    await waitFor(async () => reports.some((r) => r.emptied && r.repaired === desired.size), { timeoutMs: 15_000 });
    expect(Object.fromEntries(await owned(client, keys))).toEqual(Object.fromEntries(desired));
  });

  it('racing the forwarder, never writes a value older than the journal newest', async () => {
    const { rt, client, keys } = await setup('race', { resync: { intervalMs: 50 } });
    await bindAll(rt, 50, 0);
    const puts: IKeyValue[] = [];
    const watcher = await client.watch().prefix(`${keys.nodes}/`).create();
    watcher.on('put', (kv) => void puts.push(kv));
    cleanups.push(() => watcher.cancel());
    const reports: ResyncReport[] = [];
    rt.on('resync', (r) => reports.push(r));
    for (let v = 1; v <= 15; v++) {
      // drift that resync will want to repair, while newer versions keep coming through the journal
      await client.put(keys.port('h0', 'p-0')).value(JSON.stringify({ stale: v }));
      await bindAll(rt, 50, v);
    }
    await waitFor(async () => reports.length >= 3, { timeoutMs: 10_000 });
    await rt.drained();
    // the runs met the race: drift to repair and keys still in the journal
    expect(reports.some((r) => r.changed + r.skipped > 0)).toBe(true);
    const version = (kv: IKeyValue) => {
      const id = JSON.parse(kv.value.toString()).device_id as string | undefined;
      return id === undefined ? -1 : Number(id.split('-v')[1]);
    };
    const newest = new Map<string, number>();
    for (const kv of puts) {
      const k = kv.key.toString();
      const v = version(kv);
      if (v === -1) continue; // the test's own drift
      expect(v, `${k} went back to v${v}`).toBeGreaterThanOrEqual(newest.get(k) ?? 0);
      newest.set(k, v);
    }
    await waitFor(async () => {
      const now = await readPrefix(client, `${keys.nodes}/`);
      return [...now.values()].every((val) => JSON.parse(val).device_id?.endsWith('-v15'));
    }, { timeoutMs: 10_000 });
  });

  it("a deposed leader's repairs are refused by etcd", async () => {
    const { rt, client, keys } = await setup('fenced', { resync: { enabled: false } });
    await bindAll(rt, 20);
    await client.delete().key(keys.port('h1', 'p-1'));
    const internals = rt as unknown as { resyncDeps(log: unknown): Parameters<typeof resyncOnce>[0] };
    const deps = internals.resyncDeps(roleLogger(silentLogger(), RESYNC_ROLE));
    await expect(resyncOnce(deps, { key: keys.electionKey(RESYNC_ROLE), token: '1' })).rejects.toBeInstanceOf(NotLeaderError);
    expect((await client.kv.range({ key: Buffer.from(keys.port('h1', 'p-1')) })).kvs).toHaveLength(0);
  });

  it('a repair elsewhere than the resync leader is refused with a clear error', async () => {
    const { rt } = await setup('notleader', { resync: { enabled: false } });
    await expect(rt.resync()).rejects.toBeInstanceOf(NotLeaderError);
  });
});
