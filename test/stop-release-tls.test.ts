/**
 * A clean stop over TLS resigns every role: the election keys are deleted and
 * their leases revoked before `stop()` returns, so another process can take
 * over at once. Closing a watch stream must not disturb the calls in flight
 * on the same client (etcd3 would otherwise reset the member's channels).
 */
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient, deadline } from '../src/etcd.ts';
import { createPki, type Pki } from '../src/etcd-pki.ts';
import { FORWARDER_ROLE } from '../src/forwarder.ts';
import { watchRange } from '../src/list-watch.ts';
import { startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import { RESYNC_ROLE } from '../src/resync.ts';
import { RETURN_WATCHER_ROLE } from '../src/return-watcher.ts';
import { createRuntime } from '../src/runtime.ts';
import { readPrefix, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { withTimeout } from './helpers/events.ts';
import { tempDir } from './helpers/temp.ts';

const ROLES = [FORWARDER_ROLE, RESYNC_ROLE, RETURN_WATCHER_ROLE];
const ROOT_PASSWORD = 'root-secret';

let dir: string;
let pki: Pki;

beforeAll(async () => {
  dir = tempDir('pw-stop-tls-');
  pki = await createPki(join(dir, 'pki'), { clients: ['root'] });
});

/** A pino logger whose JSON lines are kept in `lines`. */
function capturedLogger() {
  const lines: { level: number; msg: string; role?: string; err?: string }[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, dest), lines };
}

describe.each([
  { name: 'TLS', auth: false },
  { name: 'TLS and authentication', auth: true },
])('$name', ({ auth }) => {
  let etcd: ManagedEtcd;
  let root: Etcd3;

  beforeAll(async () => {
    etcd = await startManagedEtcd({
      tls: { ...pki.server, clientCertAuth: true },
      ...(auth ? { auth: { rootPassword: ROOT_PASSWORD } } : {}),
    });
    root = createEtcdClient(etcd.connection());
  });
  afterAll(async () => {
    root?.close();
    await etcd?.stop();
  });

  it('stop() deletes the election keys and revokes their leases', async () => {
    const prefix = uniquePrefix('stop-tls');
    const { logger, lines } = capturedLogger();
    const rt = createRuntime({
      etcd: etcd.connection(),
      prefix,
      dataDir: join(dir, `rt-${auth ? 'auth' : 'plain'}`),
      poolSize: 1,
      electionTtlMs: 10_000,
      logger,
    });
    let leases: string[] = [];
    try {
      await rt.start();
      await waitFor(() => ROLES.every((r) => rt.status().roles[r]?.leader), { what: 'leading every role' });
      const held = await root.getAll().prefix(`${prefix}/election/`).exec();
      expect(held.kvs.map((kv) => kv.key.toString()).sort()).toEqual(ROLES.map((r) => `${prefix}/election/${r}`).sort());
      leases = held.kvs.map((kv) => kv.lease);
      expect(leases.every((l) => l !== '0')).toBe(true);
    } finally {
      await rt.stop();
    }

    expect([...(await readPrefix(root, `${prefix}/election/`)).keys()]).toEqual([]);
    for (const id of leases) {
      const ttl = await root.leaseClient.leaseTimeToLive({ ID: id }, deadline(5000));
      expect(ttl.TTL, `lease ${id}`).toBe('-1');
    }
    const live = new Set((await root.leaseClient.leaseLeases(deadline(5000))).leases.map((l) => l.ID));
    expect(leases.filter((l) => live.has(l))).toEqual([]);
    expect(lines.filter((l) => l.msg === 'release failed; the lease will expire')).toEqual([]);
    expect(lines.filter((l) => ROLES.includes(l.role ?? '') && l.msg === 'elected')).toHaveLength(ROLES.length);
  });

  it('closing a watch leaves the calls in flight on the same client untouched', async () => {
    const prefix = uniquePrefix('stop-tls-watch');
    const client = createEtcdClient(etcd.connection());
    try {
      // a connected client with a live watch stream
      await client.put(`${prefix}/w`).value('0');
      let watch: ReturnType<typeof watchRange> | undefined;
      try {
        await withTimeout(
          new Promise<void>((resolve, reject) => {
            watch = watchRange(client, { key: `${prefix}/w`, startRevision: 1 }, {
              onChanges: () => resolve(),
              onEnd: (reason) => reject(new Error(reason)),
            });
          }),
          10_000,
          'the watch delivering the first change',
        );
      } catch (err) {
        watch?.close();
        throw err;
      }
      const writes = Array.from({ length: 8 }, (_, i) => client.put(`${prefix}/k${i}`).value(String(i)).exec());
      watch!.close();
      await Promise.all(writes);
      expect((await readPrefix(root, `${prefix}/k`)).size).toBe(8);
    } finally {
      client.close();
    }
  });
});
