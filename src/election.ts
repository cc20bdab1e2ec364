/**
 * The etcd side of `machines/election.ts`: campaign, keepalive and release,
 * written against the raw lease/KV/watch RPCs (not etcd3's Election helper,
 * whose observer can name the wrong leader and whose lease `lost` event
 * fires late).
 *
 * Campaign: grant a lease and create the role's election key with it only if
 * the key does not exist (create revision 0); the txn's revision is the key's
 * create revision, the term's fence token. If someone holds it, wait for its
 * deletion (watch, with a TTL-long re-check) and try again.
 */
import type { Etcd3 } from 'etcd3';
import { fromCallback, fromPromise, type EventObject } from 'xstate';
import type { Logger } from 'pino';
import { electionMachine, type Term } from '../machines/election.ts';
import { deadline } from './etcd.ts';
import { watchRange } from './list-watch.ts';
import { fromEtcdError } from './errors.ts';
import type { KeyLayout } from './keys.ts';

/** What the election implementation needs. */
export interface ElectionDeps {
  client: Etcd3;
  keys: KeyLayout;
  holderId: string;
  ttlMs: number;
  keepaliveIntervalMs: number;
  callTimeoutMs: number;
  log: Logger;
  /** Called on every term change, for status and the "one leader" audit. */
  onTerm?: (role: string, term: Term | undefined) => void;
  /** Called when a campaign finds the role held: with the holder id written in its election key. */
  onHolder?: (role: string, holder: string) => void;
}

/** Resolves when `key` is deleted after `revision`, after `maxWaitMs`, or on abort. */
function keyDeleted(client: Etcd3, key: string, revision: string, maxWaitMs: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      watcher.close();
      resolve();
    };
    let timer = setTimeout(done, maxWaitMs);
    signal.addEventListener('abort', done);
    const watcher = watchRange(
      client,
      { key, startRevision: Number(revision) + 1 },
      {
        onChanges: (changes) => changes.some((c) => c.type === 'delete') && done(),
        // a broken watch: look again soon (not at once: the campaign would spin while the watch fails)
        onEnd: () => {
          clearTimeout(timer);
          timer = setTimeout(done, Math.min(500, maxWaitMs));
        },
      },
    );
    if (signal.aborted) done();
  });
}

/** Builds the election machine provided with its etcd implementation. */
export function etcdElection(deps: ElectionDeps) {
  const { client, keys, holderId, callTimeoutMs, log } = deps;
  const ttlSeconds = Math.max(2, Math.ceil(deps.ttlMs / 1000));

  const campaign = fromPromise<Term, { role: string }>(async ({ input, signal }) => {
    const key = Buffer.from(keys.electionKey(input.role));
    for (;;) {
      if (signal.aborted) throw new Error('campaign aborted');
      let leaseId: string | undefined;
      try {
        const lease = await client.leaseClient.leaseGrant({ TTL: ttlSeconds }, deadline(callTimeoutMs));
        leaseId = lease.ID;
        const res = await client.kv.txn(
          {
            compare: [{ key, result: 'Equal', target: 'Create', create_revision: '0' }],
            success: [{ request_put: { key, value: Buffer.from(holderId), lease: leaseId } }],
            failure: [{ request_range: { key } }],
          },
          deadline(callTimeoutMs),
        );
        if (res.succeeded) {
          const term = { token: res.header.revision, leaseId };
          if (signal.aborted) {
            await release(input.role, term);
            throw new Error('campaign aborted');
          }
          log.info({ token: term.token }, 'elected');
          deps.onTerm?.(input.role, term);
          return term;
        }
        await client.leaseClient.leaseRevoke({ ID: leaseId }, deadline(callTimeoutMs)).catch(() => undefined);
        const holder = res.responses[0]?.response_range?.kvs?.[0]?.value.toString();
        log.debug({ holder }, 'follower');
        if (holder !== undefined) deps.onHolder?.(input.role, holder);
        await keyDeleted(client, key.toString(), res.header.revision, deps.ttlMs, signal);
      } catch (err) {
        if (leaseId) client.leaseClient.leaseRevoke({ ID: leaseId }).catch(() => undefined);
        throw fromEtcdError(err, { access: 'write', range: key.toString() });
      }
    }
  });

  const keepalive = fromCallback<EventObject, { role: string; term: Term }>(({ input, sendBack }) => {
    let stopped = false;
    const key = keys.electionKey(input.role);
    const once = async () => {
      try {
        const stream = await client.leaseClient.leaseKeepAlive(deadline(deps.keepaliveIntervalMs));
        const res = await new Promise<{ TTL: string }>((resolve, reject) => {
          stream.on('data', resolve);
          stream.on('error', reject);
          stream.on('end', () => reject(new Error('keepalive stream ended')));
          stream.write({ ID: input.term.leaseId });
        });
        stream.end();
        if (stopped) return;
        if (Number(res.TTL) <= 0) sendBack({ type: 'LOST', reason: 'lease expired' });
        else sendBack({ type: 'KEEPALIVE_OK' });
      } catch (err) {
        log.warn({ err: String((err as Error)?.message ?? err) }, 'keepalive failed');
      }
    };
    const timer = setInterval(once, deps.keepaliveIntervalMs);
    void once();
    // an ended watch is not a loss: the keepalive watchdog decides
    const watcher = watchRange(
      client,
      { key: key.toString(), startRevision: Number(input.term.token) },
      {
        onChanges: (changes) => {
          for (const c of changes) {
            if (stopped) return;
            if (c.type === 'delete') sendBack({ type: 'LOST', reason: 'election key deleted' });
            else if (String(c.createRevision) !== input.term.token) sendBack({ type: 'LOST', reason: 'election key replaced' });
          }
        },
        onEnd: () => undefined,
      },
    );
    return () => {
      stopped = true;
      clearInterval(timer);
      watcher.close();
    };
  });

  async function release(role: string, term?: Term): Promise<void> {
    deps.onTerm?.(role, undefined);
    if (!term) return;
    const key = Buffer.from(keys.electionKey(role));
    try {
      await client.kv.txn(
        {
          compare: [{ key, result: 'Equal', target: 'Create', create_revision: term.token }],
          success: [{ request_delete_range: { key } }],
          failure: [],
        },
        deadline(callTimeoutMs),
      );
      await client.leaseClient.leaseRevoke({ ID: term.leaseId }, deadline(callTimeoutMs));
    } catch (err) {
      log.warn({ err: String((err as Error)?.message ?? err) }, 'release failed; the lease will expire');
    }
  }

  return electionMachine.provide({
    actors: {
      campaign,
      keepalive,
      release: fromPromise<void, { role: string; term?: Term }>(({ input }) => release(input.role, input.term)),
    },
  });
}
