import { existsSync } from 'node:fs';
import { noop } from 'cockatiel';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findEtcdBinary, startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import { etcdEndpoints, newClient, readPrefix, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { processGone } from './helpers/process.ts';

/** No retries, no circuit breaker: a failed call fails at once, the next one goes through. */
const direct = { faultHandling: { host: () => noop, global: noop } };


describe('managed etcd', () => {
  let etcd: ManagedEtcd;
  let client: Etcd3;

  beforeAll(async () => {
    etcd = await startManagedEtcd();
    client = newClient(etcd.endpoints, direct);
  });

  afterAll(async () => {
    client?.close();
    await etcd?.stop();
  });

  it('finds the binary and listens on a loopback port', () => {
    expect(findEtcdBinary()).toBeTruthy();
    expect(etcd.endpoints).toEqual([expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/)]);
    expect(etcd.running).toBe(true);
  });

  it('stores and returns a key', async () => {
    const key = `${uniquePrefix('managed')}/k`;
    await client.put(key).value('v1');
    expect(await client.get(key).string()).toBe('v1');
  });

  it('pause() makes a put time out, resume() lets it through', async () => {
    const key = `${uniquePrefix('managed')}/paused`;
    etcd.pause();
    try {
      await expect(client.put(key).value('x').options({ deadline: Date.now() + 300 })).rejects.toThrow(/deadline/i);
    } finally {
      etcd.resume();
    }
    await client.put(key).value('y').options({ deadline: Date.now() + 5000 });
    expect(await client.get(key).string()).toBe('y');
  });

  it('keeps its data across SIGKILL and restart()', async () => {
    const prefix = uniquePrefix('managed');
    await client.put(`${prefix}/a`).value('1');
    await client.put(`${prefix}/b`).value('2');
    const oldPid = etcd.pid;
    await etcd.kill('SIGKILL');
    expect(etcd.running).toBe(false);
    expect(processGone(oldPid)).toBe(true);

    await etcd.restart();
    expect(etcd.running).toBe(true);
    expect(etcd.pid).not.toBe(oldPid);
    const values = await waitFor(() => readPrefix(client, prefix).then((m) => m.size === 2 && m), { what: 'reconnect' });
    expect(Object.fromEntries(values)).toEqual({ [`${prefix}/a`]: '1', [`${prefix}/b`]: '2' });
  });

  it('stop() leaves no process and removes its private data dir', async () => {
    const own = await startManagedEtcd();
    const { pid, dataDir } = own;
    expect(existsSync(dataDir)).toBe(true);
    await own.stop();
    await own.stop();
    expect(processGone(pid)).toBe(true);
    expect(own.running).toBe(false);
    expect(existsSync(dataDir)).toBe(false);
    await expect(own.restart()).rejects.toThrow(/stopped/);
  });
});

describe('global setup', () => {
  it('provides a reachable shared etcd', async () => {
    const client = newClient(etcdEndpoints());
    try {
      const prefix = uniquePrefix('global');
      await client.put(`${prefix}/x`).value('ok');
      expect(await readPrefix(client, prefix)).toEqual(new Map([[`${prefix}/x`, 'ok']]));
    } finally {
      client.close();
    }
  });

  it('reads prefixes larger than one page', async () => {
    const client = newClient(etcdEndpoints());
    try {
      const prefix = uniquePrefix('pages');
      const n = 12_345;
      for (let i = 0; i < n; i += 128) {
        const txn = client.if(`${prefix}/guard`, 'Version', '==', 0).then(
          ...Array.from({ length: Math.min(128, n - i) }, (_, j) =>
            client.put(`${prefix}/k${String(i + j).padStart(6, '0')}`).value(String(i + j)),
          ),
        );
        await txn.commit();
      }
      const all = await readPrefix(client, prefix);
      expect(all.size).toBe(n);
      expect(all.get(`${prefix}/k012344`)).toBe('12344');
      expect([...all.keys()]).toEqual([...all.keys()].sort());
    } finally {
      client.close();
    }
  });
});
