/**
 * Epochs within a leadership term. A txn whose outcome was unknown (it timed
 * out, or a paused member still holds it) may land later, after the leader
 * re-sent newer values for the same keys under the same term. The forwarder
 * fences its txns on the election key's mod revision and moves it (touching
 * the key) after every unknown outcome, so such a late txn is refused.
 */
import { afterEach, describe, expect, it } from 'vitest';



import type { Etcd3, Lease } from 'etcd3';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import { fencedTxn, renewEpoch } from '../src/etcd.ts';
import { NotLeaderError } from '../src/errors.ts';
import { keyLayout } from '../src/keys.ts';
import { etcdEndpoints, newClient, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts';
import { segment } from './helpers/workload.ts';
import type { Port } from '../src/types.ts';
import { tempDir } from './helpers/temp.ts';

const port = (id: string, i: number): Port => ({
  id,
  mac_address: `fa:16:3e:00:00:${i.toString(16).padStart(2, '0')}`,
  device_owner: 'compute:nova',
  device_id: `vm-${id}`,
  security_groups: [],
  fixed_ips: [{ subnet_id: 'subnet-1', ip_address: `10.0.0.${i}` }],
  allowed_address_pairs: [],
});

let client: Etcd3 | undefined;
let rt: Runtime | undefined;
let proxy: TcpProxy | undefined;

afterEach(async () => {
  await rt?.stop();
  await proxy?.close();
  client?.close();
  rt = undefined;
  proxy = undefined;
  client = undefined;
});

describe('fence epochs', () => {
  it('a txn fenced on an earlier epoch of the same term is refused; the key keeps its value and lease', async () => {
    client = newClient();
    const prefix = uniquePrefix('epoch');
    const electionKey = `${prefix}/election/forwarder`;
    const lease = client.lease(10, { autoKeepAlive: false });
    let lease2: Lease | undefined;
    try {
      await client.put(electionKey).value('holder-1').lease(await lease.grant());
      const kv = (await client.get(electionKey).exec()).kvs[0];
      const fence = { key: electionKey, token: kv.create_revision };

      const first = await renewEpoch(client, fence, 5000);
      await fencedTxn(client, { ...fence, epoch: first }, [{ request_put: { key: Buffer.from(`${prefix}/k`), value: Buffer.from('v1') } }], 5000);
      const second = await renewEpoch(client, fence, 5000);
      expect(Number(second)).toBeGreaterThan(Number(first));
      await fencedTxn(client, { ...fence, epoch: second }, [{ request_put: { key: Buffer.from(`${prefix}/k`), value: Buffer.from('v2') } }], 5000);

      // the late txn of the first epoch
      await expect(
        fencedTxn(client, { ...fence, epoch: first }, [{ request_put: { key: Buffer.from(`${prefix}/k`), value: Buffer.from('stale') } }], 5000),
      ).rejects.toBeInstanceOf(NotLeaderError);
      expect(await client.get(`${prefix}/k`).string()).toBe('v2');

      const after = (await client.get(electionKey).exec()).kvs[0];
      expect(after.value.toString()).toBe('holder-1');
      expect(after.lease).toBe(kv.lease);
      expect(after.create_revision).toBe(kv.create_revision);

      // another term (the key deleted and campaigned again) refuses the old term's epochs as well
      await lease.revoke();
      lease2 = client.lease(10, { autoKeepAlive: false });
      await client.put(electionKey).value('holder-2').lease(await lease2.grant());
      await expect(renewEpoch(client, fence, 5000)).rejects.toBeInstanceOf(NotLeaderError);
      await expect(
        fencedTxn(client, { ...fence, epoch: second }, [{ request_put: { key: Buffer.from(`${prefix}/k`), value: Buffer.from('stale') } }], 5000),
      ).rejects.toBeInstanceOf(NotLeaderError);
    } finally {
      // `lease` is revoked already once the test has got to the second term
      await lease.revoke().catch(() => undefined);
      await lease2?.revoke().catch(() => undefined);
    }
  });

  it('the forwarder starts a new epoch after a drain whose outcome was unknown', async () => {
    client = newClient();
    const prefix = uniquePrefix('epoch-rt');
    const keys = keyLayout(prefix);
    proxy = await startTcpProxy(etcdEndpoints()[0]);
    rt = createRuntime({
      etcd: { endpoints: [proxy.url], callTimeoutMs: 500 },
      prefix,
      dataDir: tempDir('pw-epoch-'),
      electionTtlMs: 10_000,
      resync: { enabled: false },
      returnWatcher: { enabled: false },
    });
    await rt.start();
    const r = rt;
    await r.bindPort({ port: port('p-1', 1), host: 'h1', segment });
    await r.drained({ timeoutMs: 10_000 });
    const electionKey = keys.electionKey('forwarder');
    const before = (await client.get(electionKey).exec()).kvs[0];

    // the txn carrying p-2 is held by the paused proxy: the drain times out (unknown outcome)
    proxy.pause();
    await r.bindPort({ port: port('p-2', 2), host: 'h1', segment });
    await waitFor(() => JSON.stringify(r.status().roles.forwarder.state).includes('backoff'), {
      timeoutMs: 10_000,
      what: 'the forwarder backs off after the timeout',
    });
    proxy.resume();
    await r.drained({ timeoutMs: 20_000 });

    const after = (await client.get(electionKey).exec()).kvs[0];
    expect(after.create_revision).toBe(before.create_revision); // the same term
    expect(Number(after.mod_revision)).toBeGreaterThan(Number(before.mod_revision)); // a new epoch
    expect(await client.get(keys.port('h1', 'p-2')).string()).toBeTruthy();
  });
});
