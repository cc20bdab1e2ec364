/**
 * The journal's size limit with real LMDB files and a real runtime: a runtime
 * that cannot reach etcd fills its journal until appends are refused with
 * JournalFullError (every acknowledged entry intact, a refused transaction and
 * a refused group leave nothing), a restart with a larger `mapSize` accepts
 * more, and a runtime that reaches etcd drains it: etcd then holds exactly the
 * desired state and appends succeed again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { JournalFullError, ValidationError } from '../src/errors.ts';
import { Journal, JOURNAL_FILE } from '../src/journal.ts';
import { keyLayout } from '../src/keys.ts';
import { bindingValue } from '../src/mech.ts';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import type { RuntimeOptions } from '../src/options.ts';
import type { Port, Segment } from '../src/types.ts';
import { etcdEndpoints, newClient, readPrefix, uniquePrefix } from './helpers/etcd.ts';
import { tempDir } from './helpers/temp.ts';

const MiB = 1024 ** 2;
const PORTS = 64;
const prefix = uniquePrefix('journal-limits');
const keys = keyLayout(prefix);
const segment: Segment = { id: 'seg-flat', network_type: 'flat', physical_network: 'physnet1', segmentation_id: null };

let dataDir: string;
let deadEndpoint: string;
let client: Etcd3;
const running = new Set<Runtime>();
/** Every acknowledged call: seq → the entry it journaled (JSON text; null deletes). */
const acked = new Map<number, { key: string; json: string | null }>();
let version = 0;

function port(i: number, v: number): Port {
  const hex = (n: number) => n.toString(16).padStart(2, '0');
  return {
    id: `port-${i}`,
    mac_address: `fa:16:3e:00:${hex(i >> 8)}:${hex(i & 255)}`,
    device_owner: 'compute:nova',
    device_id: `vm-${i}-v${v}`,
    security_groups: [],
    fixed_ips: Array.from({ length: 8 }, (_, k) => ({ subnet_id: `subnet-${k}`, ip_address: `10.${k}.${i}.${v % 250}` })),
    allowed_address_pairs: [],
  };
}

async function runtime(options: RuntimeOptions): Promise<Runtime> {
  const rt = createRuntime({
    dataDir,
    prefix,
    poolSize: 1,
    electionTtlMs: 2000,
    resync: { enabled: false },
    returnWatcher: { enabled: false },
    ...options,
    etcd: { callTimeoutMs: 1000, ...options.etcd },
  });
  running.add(rt);
  await rt.start();
  return rt;
}

async function stop(rt: Runtime): Promise<void> {
  await rt.stop();
  running.delete(rt);
}

/**
 * One call on port `i`: a bind with a new device id, or (one in five) an
 * unbind; records what it journaled once acknowledged.
 */
async function call(rt: Runtime, i: number): Promise<void> {
  const v = ++version;
  const p = port(i, v);
  const host = `compute-${i % 4}`;
  if (v % 5 === 0) {
    const seq = await rt.unbindPort({ port: p, host, segment });
    acked.set(seq, { key: keys.port(host, p.id), json: null });
  } else {
    const seq = await rt.bindPort({ port: p, segment, host });
    acked.set(seq, { key: keys.port(host, p.id), json: JSON.stringify(bindingValue(p, segment, 'vhostuser')) });
  }
}

/** Calls in rounds of {@link PORTS} concurrent ones until one is refused; returns the first refusal. */
async function fillUntilRefused(rt: Runtime): Promise<JournalFullError> {
  const limit = rt.options.mapSize;
  while (rt.status().journal!.usedBytes < 2 * limit) {
    const results = await Promise.allSettled(Array.from({ length: PORTS }, (_, i) => call(rt, i)));
    const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (refused) return refused.reason as JournalFullError;
  }
  throw new Error(`the journal grew past twice its ${limit} byte limit without refusing an append`);
}

/** Asserts the journal holds exactly the acknowledged entries, byte for byte. */
async function expectJournalIsAcked(): Promise<void> {
  const journal = Journal.open(dataDir);
  try {
    const stored = journal.read(0, 1_000_000);
    expect(stored.length).toBe(acked.size);
    for (const { seq, entry } of stored) {
      expect(acked.get(seq), `entry ${seq}`).toEqual({ key: entry.k, json: entry.v });
    }
    expect(journal.lastSeq()).toBe(Math.max(...acked.keys()));
  } finally {
    await journal.close();
  }
}

/** What etcd must hold: the last acknowledged value of each key. */
function desired(): Map<string, string> {
  const out = new Map<string, string>();
  for (const seq of [...acked.keys()].sort((a, b) => a - b)) {
    const { key, json } = acked.get(seq)!;
    if (json === null) out.delete(key);
    else out.set(key, json);
  }
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : 1)));
}

beforeAll(async () => {
  dataDir = tempDir('pw-journal-limits-');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: closed } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  deadEndpoint = `http://127.0.0.1:${closed}`;
  client = newClient();
});

afterAll(async () => {
  for (const rt of running) await rt.stop();
  client?.close();
});

describe('journal size limit', () => {
  it('refuses appends with JournalFullError at the limit; acknowledged entries intact, refused ones absent', async () => {
    const rt = await runtime({ mapSize: 4 * MiB, etcd: { endpoints: [deadEndpoint] } });
    const err = await fillUntilRefused(rt);
    expect(err).toBeInstanceOf(JournalFullError);
    expect(err.code).toBe('JOURNAL_FULL');
    expect(err.recoverable).toBe(true);
    expect(err.message).toMatch(/journal is full: .* used of the .* append limit/);
    expect(err.message).toMatch(/drain .* or restart with a larger mapSize/);
    expect(err.usage!.limitBytes).toBe(4 * MiB);
    // filled up to the append limit (an estimate: within a few pages), the reserve left for draining
    const appendLimit = 4 * MiB - err.usage!.reserveBytes;
    expect(err.usage!.usedBytes).toBeGreaterThan(appendLimit * 0.95);
    expect(err.usage!.usedBytes).toBeLessThan(appendLimit + err.usage!.reserveBytes / 8);
    expect(err.usage!.entries).toBeGreaterThan(1000);

    const status = rt.status();
    expect(status.journal!.full).toBe(true);
    expect(status.journal!.fill).toBeGreaterThan(0.99);
    expect(status.journalDepth).toBe(acked.size);
    expect(statSync(join(dataDir, JOURNAL_FILE)).size).toBeLessThanOrEqual(4 * MiB);

    // a transaction of several ops is all or nothing
    const before = status.journal!.entries;
    await expect(
      rt.transaction((tx) => {
        for (let i = 0; i < 8; i++) tx.bindPort({ port: port(200 + i, 0), segment, host: 'compute-tx' });
      }),
    ).rejects.toBeInstanceOf(JournalFullError);
    // a group is refused with its record: the rule below finds no group
    await expect(rt.createSecurityGroup({ id: 'sg-refused' })).rejects.toBeInstanceOf(JournalFullError);
    await expect(rt.bindPort({ port: port(0, 0), segment, host: 'compute-x' })).rejects.toBeInstanceOf(JournalFullError);
    expect(rt.status().journal!.entries).toBe(before);
    await stop(rt);
    await expectJournalIsAcked();
  });

  it('a restart with a larger mapSize accepts more, up to the new limit', async () => {
    const count = acked.size;
    const rt = await runtime({ mapSize: 8 * MiB, etcd: { endpoints: [deadEndpoint] } });
    expect(rt.status().journal).toMatchObject({ limitBytes: 8 * MiB, full: false });
    const err = await fillUntilRefused(rt);
    expect(err).toBeInstanceOf(JournalFullError);
    expect(err.usage!.limitBytes).toBe(8 * MiB);
    expect(acked.size).toBeGreaterThan(count * 1.8);
    await stop(rt);
    await expectJournalIsAcked();
  });

  it('drains once etcd is reachable: etcd holds exactly the desired state and appends succeed again', async () => {
    // back to the smaller limit: the journal is over it until drained
    const rt = await runtime({ mapSize: 4 * MiB, etcd: { endpoints: etcdEndpoints() } });
    await rt.drained({ timeoutMs: 30_000 });
    const usage = rt.status().journal!;
    expect(usage).toMatchObject({ entries: 0, full: false });
    expect(usage.fill).toBeLessThan(0.2);
    // the drain itself stayed within the 8 MiB the journal had grown to
    expect(usage.fileBytes).toBeLessThanOrEqual(8 * MiB);
    expect(rt.deadLetters()).toEqual([]);
    expect(await readPrefix(client, `${prefix}/nodes/`)).toEqual(desired());

    // appends work again, and the refused group was never recorded
    for (let r = 0; r < 5; r++) await Promise.all(Array.from({ length: PORTS }, (_, i) => call(rt, i)));
    await rt.drained({ timeoutMs: 30_000 });
    expect(await readPrefix(client, `${prefix}/nodes/`)).toEqual(desired());
    const rule = rt.createRule({
      id: 'r1', security_group_id: 'sg-refused', direction: 'ingress', ethertype: 'IPv4', protocol: 'tcp',
      port_range_min: 22, port_range_max: 22, remote_ip_prefix: null, remote_group_id: null,
    });
    await expect(rule).rejects.toBeInstanceOf(ValidationError);
    await expect(rule).rejects.toMatchObject({ field: 'rule.security_group_id' });
    await stop(rt);
  });
});
