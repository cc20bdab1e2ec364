/**
 * A drain run and the appends that land while it runs, against real etcd, a
 * real LMDB journal and a real pool: a run in progress takes them (the
 * runtime then sends the forwarder no KICK), lingers `lingerMs` for more, and
 * once it has ended says so, so the runtime wakes the forwarder again. And
 * it reads no entry before it is known to be on disk: a port must not become
 * active before its bindPort call resolved.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import type { Etcd3, Lease } from 'etcd3';
import type { Piscina } from 'piscina';
import { Drainer, type DrainEvent, type DrainLimits, type DrainResult } from '../src/drainer.ts';
import { Journal } from '../src/journal.ts';
import { createPool } from '../src/pool.ts';
import type { Fence } from '../src/etcd.ts';
import { newClient, uniquePrefix } from './helpers/etcd.ts';
import { tempDir } from './helpers/temp.ts';
import { withTimeout } from './helpers/events.ts';

let client: Etcd3;
let lease: Lease;
let pool: Piscina;
let journal: Journal;
let dataDir: string;
let prefix: string;
let fence: Fence;
let drainers: Drainer[];
let applied: (() => void)[];
let lingering: { run: Promise<unknown>; controller: AbortController }[];

const limits = (lingerMs: number): DrainLimits => ({
  maxOps: 128,
  maxTxnBytes: 1 << 20,
  maxRequestBytes: 1.5 * (1 << 20),
  windowEntries: 8192,
  inFlight: 4,
  callTimeoutMs: 5000,
  maxAttempts: 3,
  retryBaseMs: 50,
  retryMaxMs: 1000,
  lingerMs,
});

function drainer(lingerMs: number, now: () => number = Date.now): Drainer {
  const onEvent = (e: DrainEvent) => {
    if (e.type === 'applied') for (const wake of applied.splice(0)) wake();
  };
  const d = new Drainer({ journal, pool, client, log: pino({ level: 'silent' }), limits: limits(lingerMs), now, random: Math.random, onEvent });
  drainers.push(d);
  return d;
}

/** Resolves at the next txn etcd acknowledges; rejects if none comes within 10 s. */
const nextApplied = (): Promise<void> => {
  const acked = withTimeout(new Promise<void>((resolve) => applied.push(resolve)), 10_000, 'the next applied txn');
  // the test awaits it; one that failed before it did reports no second error
  acked.catch(() => undefined);
  return acked;
};

/**
 * Starts a drain run that can linger for long, with an abort controller that
 * afterEach uses to end it should the test not get that far.
 */
function lingeringRun(d: Drainer): { run: Promise<DrainResult>; abort: () => void } {
  const ac = new AbortController();
  const run = d.drain(fence, ac.signal);
  run.catch(() => undefined);
  lingering.push({ run, controller: ac });
  return { run, abort: () => ac.abort() };
}

const value = async (key: string): Promise<unknown> => {
  const s = await client.get(`${prefix}/${key}`).string();
  return s === null ? null : JSON.parse(s);
};
const append = (key: string, v: unknown) => journal.append([{ key: `${prefix}/${key}`, value: v }]);

beforeEach(async () => {
  client = newClient();
  prefix = uniquePrefix('drainer');
  const electionKey = `${prefix}/election/forwarder`;
  lease = client.lease(10, { autoKeepAlive: false });
  await client.put(electionKey).value('holder-1').lease(await lease.grant());
  fence = { key: electionKey, token: (await client.get(electionKey).exec()).kvs[0].create_revision };
  dataDir = tempDir('pw-drainer-');
  journal = Journal.open(dataDir);
  pool = createPool({ size: 1 });
  drainers = [];
  applied = [];
  lingering = [];
});
afterEach(async () => {
  for (const { controller } of lingering) controller.abort();
  await Promise.allSettled(lingering.map(({ run }) => run));
  for (const d of drainers) await d.idle();
  await pool.destroy();
  await journal.close();
  await lease.revoke();
  client.close();
});

describe('a drain run and the appends that land while it runs', () => {
  it('a run takes every append made while it lingers, in order, without another drain; it ends on abort', async () => {
    const d = drainer(600_000);
    await append('k', { n: 0 });
    const first = nextApplied();
    const { run, abort } = lingeringRun(d);
    await first;
    expect(await value('k')).toEqual({ n: 0 });

    // one key updated 30 times and another written: each append is taken by the lingering run
    for (let n = 1; n <= 30; n++) {
      const ack = nextApplied();
      await append('k', { n });
      expect(d.takesAppends()).toBe(true);
      await ack;
    }
    const last = nextApplied();
    await append('other', { n: 1 });
    expect(d.takesAppends()).toBe(true);
    await last;
    expect(await value('k')).toEqual({ n: 30 });
    expect(await value('other')).toEqual({ n: 1 });

    abort();
    await expect(run).rejects.toThrow(/aborted/);
    expect(d.takesAppends()).toBe(false);
    await d.idle();
    expect(journal.depth()).toBe(0);
  });

  it('a run takes appends for a second at most, then ends at the next one (the forwarder starts another)', async () => {
    let ahead = 0;
    const d = drainer(600_000, () => Date.now() + ahead);
    await append('k', { n: 0 });
    const first = nextApplied();
    const { run } = lingeringRun(d);
    await first;
    const ack = nextApplied();
    await append('k', { n: 1 });
    expect(d.takesAppends()).toBe(true);
    await ack;

    ahead += 1000;
    await append('k', { n: 2 });
    // refused, and the lingering run ends at once (its linger would last 600 s)
    expect(d.takesAppends()).toBe(false);
    expect(await run).toMatchObject({ keys: 2, entries: 2 });
    expect(await value('k')).toEqual({ n: 1 });
    // the forwarder's next run takes it
    const last = nextApplied();
    const { run: next, abort } = lingeringRun(d);
    await last;
    expect(await value('k')).toEqual({ n: 2 });
    abort();
    await expect(next).rejects.toThrow(/aborted/);
  });

  it('a run that has ended takes nothing: the append waits for the next drain', async () => {
    const d = drainer(0);
    await append('a', { n: 1 });
    expect((await d.drain(fence)).keys).toBe(1);
    expect(d.takesAppends()).toBe(false);

    await append('b', { n: 1 });
    expect(d.takesAppends()).toBe(false);
    expect(await value('b')).toBeNull();
    expect((await d.drain(fence)).keys).toBe(1);
    expect(await value('b')).toEqual({ n: 1 });
  });

  it("reads no entry another writer has not said is on disk, until the writer's kick says so or the entry is old", async () => {
    // another handle on the data directory, as another process's journal; it does not kick yet
    const other = Journal.open(dataDir);
    try {
      other.setDrainsLocally(true);
      await other.append([{ key: `${prefix}/x`, value: { n: 1 } }]);
      expect(journal.lastSeq()).toBe(1);
      expect(journal.durableSeq()).toBe(0);
      let ahead = 0;
      const d = drainer(0, () => Date.now() + ahead);
      expect((await d.drain(fence)).keys).toBe(0);
      expect(await value('x')).toBeNull();

      // the writer's kick carries what it has on disk
      const kicked = new Promise<void>((resolve) => {
        const off = journal.onKick(() => {
          off();
          resolve();
        });
      });
      other.setDrainsLocally(false);
      other.kick();
      await kicked;
      expect(journal.durableSeq()).toBe(1);
      expect((await d.drain(fence)).keys).toBe(1);
      expect(await value('x')).toEqual({ n: 1 });

      // a writer that never tells (it crashed): its entry goes once it is old
      other.setDrainsLocally(true);
      await other.append([{ key: `${prefix}/y`, value: { n: 1 } }]);
      expect((await d.drain(fence)).keys).toBe(0);
      ahead = 1000;
      expect((await d.drain(fence)).keys).toBe(1);
      expect(await value('y')).toEqual({ n: 1 });
    } finally {
      await other.close();
    }
  });

  it('a window larger than the main-thread read is prepared in the pool; all of it arrives', async () => {
    const d = drainer(0);
    await journal.append(Array.from({ length: 500 }, (_, i) => ({ key: `${prefix}/bulk/${i}`, value: { i } })));
    const r = await d.drain(fence);
    expect(r).toMatchObject({ keys: 500, entries: 500 });
    const kvs = await client.getAll().prefix(`${prefix}/bulk/`).strings();
    expect(Object.keys(kvs)).toHaveLength(500);
    expect(JSON.parse(kvs[`${prefix}/bulk/499`])).toEqual({ i: 499 });
  });
});
