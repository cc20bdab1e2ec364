/**
 * The managed etcd with TLS and authentication: a single member and a
 * 3-member cluster, the client (and a whole runtime) over TLS with root
 * credentials, and the connections etcd must refuse.
 */
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from '../src/etcd.ts';
import { createPki, type Pki } from '../src/etcd-pki.ts';
import { startManagedCluster, type ManagedCluster } from '../src/managed-cluster.ts';
import { startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import { createRuntime } from '../src/runtime.ts';
import { readPrefix, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { processGone } from './helpers/process.ts';
import { tempDir } from './helpers/temp.ts';

const ROOT_PASSWORD = 'root-secret';
let dir: string;
let pki: Pki;
const clients: Etcd3[] = [];
const client = (...args: Parameters<typeof createEtcdClient>): Etcd3 => {
  const c = createEtcdClient(...args);
  clients.push(c);
  return c;
};

beforeAll(async () => {
  dir = tempDir('pw-secure-');
  pki = await createPki(join(dir, 'pki'), { clients: ['root', 'nobody'] });
});

afterAll(() => {
  for (const c of clients) c.close();
});

describe('single member, TLS without --client-cert-auth', () => {
  it("its own connection() works: etcd 3.4 asks for a client certificate as soon as a trusted CA is set", async () => {
    const etcd = await startManagedEtcd({ tls: pki.server });
    try {
      const c = client(etcd.connection());
      const key = `${uniquePrefix('tls-only')}/k`;
      await c.put(key).value('v');
      expect(await c.get(key).string()).toBe('v');
    } finally {
      await etcd.stop();
    }
  });
});

describe('single member, TLS with client certificates and auth', () => {
  let etcd: ManagedEtcd;

  beforeAll(async () => {
    etcd = await startManagedEtcd({ tls: { ...pki.server, clientCertAuth: true }, auth: { rootPassword: ROOT_PASSWORD } });
  });
  afterAll(() => etcd?.stop());

  it('serves https endpoints to an authorized client', async () => {
    expect(etcd.endpoints).toEqual([expect.stringMatching(/^https:\/\/127\.0\.0\.1:\d+$/)]);
    const c = client({ endpoints: etcd.endpoints, tls: pki.clientTls('root'), auth: { username: 'root', password: ROOT_PASSWORD } });
    const key = `${uniquePrefix('secure')}/k`;
    await c.put(key).value('v');
    expect(await c.get(key).string()).toBe('v');
    // the managed etcd's own full-rights connection sees it too
    expect(await client(etcd.connection()).get(key).string()).toBe('v');
  });

  it('refuses a client trusting another CA, without a certificate, with a certificate of another CA or an expired one', async () => {
    const auth = { username: 'root', password: ROOT_PASSWORD };
    const root = pki.clientTls('root');
    const other = await pki.untrustedClient('root');
    const untrusted = other.tls;
    const expired = (await pki.expiredClient('root')).tls;
    const attempts = {
      'another CA': { cert: root.cert, key: root.key, ca: other.issuerCa /* the server certificate is not trusted */ },
      'no client certificate': { ca: pki.ca },
      'untrusted client certificate': { ca: pki.ca, cert: untrusted.cert, key: untrusted.key },
      'expired client certificate': { ca: pki.ca, cert: expired.cert, key: expired.key },
    };
    for (const [what, tls] of Object.entries(attempts)) {
      const c = client({ endpoints: etcd.endpoints, tls, auth, callTimeoutMs: 1000 });
      const outcome = await c.get('/any').string().then((v) => `read ${v}`, (err: Error) => err.message);
      expect(outcome, what).toMatch(/UNAVAILABLE|certificate|handshake|deadline/i);
    }
  });

  it('refuses a wrong password, and a user without permission', async () => {
    const wrong = client({ endpoints: etcd.endpoints, tls: pki.clientTls('root'), auth: { username: 'root', password: 'nope' } });
    await expect(wrong.get('/any').string()).rejects.toThrow(/authentication failed/);
    // CN=nobody is no etcd user: with no password, the certificate names the user
    const nobody = client({ endpoints: etcd.endpoints, tls: pki.clientTls('nobody') });
    await expect(nobody.put('/any').value('x')).rejects.toThrow(/permission denied/);
  });

  it('keeps auth and data across a restart', async () => {
    const c = client(etcd.connection());
    const key = `${uniquePrefix('secure')}/restart`;
    await c.put(key).value('kept');
    const pid = etcd.pid;
    await etcd.restart();
    expect(processGone(pid)).toBe(true);
    expect(await waitFor(() => c.get(key).string(), { what: 'read after restart' })).toBe('kept');
    const anon = client({ endpoints: etcd.endpoints, tls: pki.clientTls('nobody') });
    await expect(anon.get(key).string()).rejects.toThrow(/permission denied/);
  });

  it('carries a runtime: binds a port and drains over TLS with root credentials', async () => {
    const prefix = uniquePrefix('secure-rt');
    const dataDir = join(dir, 'rt');
    const rt = createRuntime({ etcd: etcd.connection(), dataDir, prefix, poolSize: 1, electionTtlMs: 2000 });
    try {
      await rt.start();
      const port = {
        id: 'p1', mac_address: 'fa:16:3e:00:00:01', mtu: 1500, device_id: 'vm1', device_owner: 'compute:nova',
        fixed_ips: [{ subnet_id: 's', ip_address: '10.0.0.1' }], security_groups: [], allowed_address_pairs: [],
        port_security_enabled: false,
      };
      await rt.bindPort({ port, segment: { id: 'seg', network_type: 'vlan', physical_network: 'physnet', segmentation_id: 100 }, host: 'h1' });
      await rt.drained({ timeoutMs: 10_000 });
      const stored = await readPrefix(client(etcd.connection()), `${prefix}/nodes/`);
      expect([...stored.keys()]).toEqual([`${prefix}/nodes/h1/ports/p1`]);
      expect(JSON.parse(stored.get(`${prefix}/nodes/h1/ports/p1`)!)).toMatchObject({ mac_address: 'fa:16:3e:00:00:01', segmentation_id: 100 });
      expect(rt.deadLetters()).toEqual([]);
    } finally {
      await rt.stop();
    }
  });
});

describe('3-member cluster, TLS and auth', () => {
  let cluster: ManagedCluster;

  beforeAll(async () => {
    cluster = await startManagedCluster({ size: 3, tls: { ...pki.server, clientCertAuth: true }, auth: { rootPassword: ROOT_PASSWORD } });
  });
  afterAll(() => cluster?.stop());

  it('elects a new leader when the leader dies, and every member serves the data after a restart', async () => {
    expect(cluster.endpoints).toHaveLength(3);
    const c = client({ ...cluster.connection(), callTimeoutMs: 2000 });
    const prefix = uniquePrefix('cluster');
    await c.put(`${prefix}/before`).value('1');

    const old = await cluster.leader();
    await old.kill('SIGKILL');
    expect(old.running).toBe(false);
    const next = await cluster.leader();
    expect(next.name).not.toBe(old.name);
    await waitFor(() => c.put(`${prefix}/after`).value('2').then(() => true), { what: 'write after the leader died' });

    await old.restart();
    expect(old.running).toBe(true);
    for (const m of cluster.members) {
      const one = client({ ...cluster.connection(), endpoints: [m.endpoint] });
      const seen = await waitFor(() => readPrefix(one, prefix).then((kv) => kv.size === 2 && kv), { what: `${m.name} caught up` });
      expect(Object.fromEntries(seen)).toEqual({ [`${prefix}/before`]: '1', [`${prefix}/after`]: '2' });
    }
  });

  it('stop() leaves no member behind', async () => {
    const pids = cluster.members.map((m) => m.pid);
    await cluster.stop();
    await cluster.stop();
    expect(pids.every(processGone)).toBe(true);
  });
});
