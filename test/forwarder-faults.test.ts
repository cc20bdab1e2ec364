/**
 * The forwarder under faults, each against an etcd of its own: etcd down for
 * 20 s while operations keep coming, and a poison entry (a value over etcd's
 * request size) that must be dead-lettered without holding back other keys.
 */
import { afterEach, describe, expect, it } from 'vitest';


import { startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import { createRuntime } from '../src/runtime.ts';
import { keyLayout } from '../src/keys.ts';
import { bindingValue, vifType } from '../src/mech.ts';
import type { Port } from '../src/types.ts';
import { newClient, readPrefix } from './helpers/etcd.ts';
import { segment } from './helpers/workload.ts';
import { tempDir } from './helpers/temp.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(name: string, etcdArgs: string[] = [], options: Parameters<typeof createRuntime>[0] = {}) {
  const etcd = await startManagedEtcd({ extraArgs: etcdArgs });
  cleanups.push(() => etcd.stop());
  const dataDir = tempDir(`pw-${name}-`);
  const prefix = `/pw-${name}`;
  const rt = createRuntime({
    etcd: { endpoints: etcd.endpoints, callTimeoutMs: 1000 },
    dataDir,
    prefix,
    electionTtlMs: 2000,
    poolSize: 1,
    ...options,
  });
  cleanups.push(() => rt.stop());
  await rt.start();
  return { etcd, rt, prefix, keys: keyLayout(prefix) };
}

const port = (i: number, extra: Partial<Port> = {}): Port => ({
  id: `p-${i}`,
  mac_address: 'fa:16:3e:00:00:01',
  security_groups: [],
  fixed_ips: [{ subnet_id: 's', ip_address: `10.0.${(i >> 8) & 255}.${i & 255}` }],
  ...extra,
});

async function etcdState(etcd: ManagedEtcd, prefix: string): Promise<Map<string, string>> {
  const client = newClient(etcd.endpoints);
  try {
    const all = await readPrefix(client, `${prefix}/nodes/`);
    return all;
  } finally {
    client.close();
  }
}

const bindValue = (p: Port) => JSON.stringify(bindingValue(p, segment, vifType(p)));

describe('forwarder under faults', () => {
  it('etcd stopped for 20 s: calls keep succeeding, draining resumes, nothing lost, nothing dead-lettered', async () => {
    const { etcd, rt, prefix, keys } = await setup('outage');
    const expected = new Map<string, string>();
    let i = 0;
    const bindOne = async () => {
      const p = port(i++);
      await rt.bindPort({ port: p, segment, host: 'compute-1' });
      expected.set(keys.port('compute-1', p.id), bindValue(p));
    };
    for (let n = 0; n < 200; n++) await bindOne();
    await rt.drained();

    await etcd.kill('SIGKILL');
    const depthAtStop = rt.status().journalDepth;
    // a steady stream of operations while etcd is gone (load generation, not a wait)
    const stream = setInterval(() => void bindOne(), 20);
    await new Promise((r) => setTimeout(r, 20_000));
    clearInterval(stream);
    await bindOne();
    const depthDuringOutage = rt.status().journalDepth;
    expect(depthDuringOutage).toBeGreaterThan(depthAtStop + 500);

    const restartedAt = Date.now();
    await etcd.restart();
    await rt.drained({ timeoutMs: 30_000 });
    const convergeMs = Date.now() - restartedAt;
    expect(rt.deadLetters()).toEqual([]);
    const actual = await etcdState(etcd, prefix);
    expect(actual.size).toBe(expected.size);
    expect(Object.fromEntries(actual)).toEqual(Object.fromEntries(expected));
    console.info(`outage: ${depthDuringOutage} entries queued, converged ${convergeMs} ms after etcd returned`);
  }, 90_000);

  it('a poison entry is dead-lettered after its attempts; other keys flow meanwhile; retry re-queues it', async () => {
    // an etcd that refuses requests over 64 KiB, and a runtime that does not know it (the batch is bisected)
    const { etcd, rt, prefix, keys } = await setup('poison', ['--max-request-bytes', '65536'], {
      retry: { maxAttempts: 3, baseMs: 50, maxMs: 200 },
    });
    const applied: number[] = [];
    rt.on('applied', (e) => applied.push(e.keys));
    const deadAt = new Promise<number>((resolve) => rt.once('deadLettered', () => resolve(applied.reduce((a, b) => a + b, 0))));
    const huge = port(100_000, {
      fixed_ips: Array.from({ length: 1000 }, (_, k) => ({ subnet_id: `subnet-${k}`, ip_address: `10.9.${k >> 8}.${k & 255}` })),
      allowed_address_pairs: Array.from({ length: 1000 }, (_, k) => ({ ip_address: `10.8.${k >> 8}.${k & 255}`, mac_address: 'fa:16:3e:00:00:02' })),
    });
    expect(bindValue(huge).length).toBeGreaterThan(65536);

    const expected = new Map<string, string>();
    await rt.transaction((tx) => {
      for (let n = 0; n < 300; n++) {
        const p = port(n);
        tx.bindPort({ port: p, segment, host: 'compute-1' });
        expected.set(keys.port('compute-1', p.id), bindValue(p));
      }
      tx.bindPort({ port: huge, segment, host: 'compute-1' });
      for (let n = 300; n < 600; n++) {
        const p = port(n);
        tx.bindPort({ port: p, segment, host: 'compute-1' });
        expected.set(keys.port('compute-1', p.id), bindValue(p));
      }
    });
    await rt.drained({ timeoutMs: 20_000 });

    // the 600 good keys were applied before the poison entry ran out of attempts
    expect(await deadAt).toBeGreaterThanOrEqual(600);
    const dead = rt.deadLetters();
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ key: keys.port('compute-1', huge.id), attempts: 3 });
    expect(dead[0].error).toMatch(/too large/i);
    expect(Object.fromEntries(await etcdState(etcd, prefix))).toEqual(Object.fromEntries(expected));

    // retry re-queues the key's current desired value: it fails again and returns to the dead letters
    expect(await rt.retryDeadLetters()).toBe(1);
    expect(rt.deadLetters()).toEqual([]);
    expect(rt.status().journalDepth).toBe(1);
    await rt.drained({ timeoutMs: 20_000 });
    expect(rt.deadLetters()).toHaveLength(1);

    // the host fixes the port: the small value supersedes, and the retried letter brings it to etcd
    const fixed = port(100_000);
    await rt.unbindPort({ port: huge, host: 'compute-1' });
    await rt.bindPort({ port: fixed, segment, host: 'compute-1' });
    await rt.drained({ timeoutMs: 20_000 });
    expected.set(keys.port('compute-1', fixed.id), bindValue(fixed));
    expect(Object.fromEntries(await etcdState(etcd, prefix))).toEqual(Object.fromEntries(expected));
  }, 60_000);
});
