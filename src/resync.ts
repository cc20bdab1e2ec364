/**
 * One resync run and the resync role.
 *
 * A run reads every key the runtime owns (`nodes/`, `global/`) at one pinned
 * revision, in pages; then the desired state (read after the snapshot, so a
 * value the forwarder applied meanwhile is never mistaken for drift to undo);
 * diffs them in the pool; and repairs with compare-and-swap: a missing key is
 * created only if it still does not exist, a changed key rewritten and an
 * extra key deleted only if its mod revision is still the one read. A failed
 * compare means someone newer wrote the key: counted, logged, left alone.
 * Repairs go as nested txns inside fenced txns, so one conflict does not sink
 * its batch and a deposed leader's repairs are refused.
 */
import type { Etcd3, IRequestOp } from 'etcd3';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { fromPromise } from 'xstate';
import { resyncMachine, type ResyncOutput } from '../machines/resync.ts';
import type { Term } from '../machines/election.ts';
import { etcdElection, type ElectionDeps } from './election.ts';
import { fencedTxn, readPrefixAt, type Fence, type KeyValue } from './etcd.ts';
import type { Journal } from './journal.ts';
import type { SigningMaterial } from './jws.ts';
import type { KeyLayout } from './keys.ts';
import type { EtcdColumns, ResyncDiff, ResyncDiffTask } from './resync-diff.ts';

/** The role name of resync (its election key is `election/resync`). */
export const RESYNC_ROLE = 'resync';

/** An authoritative desired state: key → value (JSON-serializable, or JSON text). */
export type DesiredSource = () => AsyncIterable<readonly [string, unknown]>;

/** What a run found and did. */
export interface ResyncReport extends ResyncOutput {
  dryRun: boolean;
  /** the etcd revision the snapshot was read at */
  revision: string;
  skipped: number;
  /** etcd held none of the owned keys while some are desired (data loss, an old backup) */
  emptied: boolean;
  durationMs: number;
  /** the differences (at most 1,000), for `--dry-run` */
  differences: { kind: 'missing' | 'extra' | 'changed'; key: string }[];
}

/** What a run needs. */
export interface ResyncDeps {
  client: Etcd3;
  journal: Journal;
  pool: Piscina;
  keys: KeyLayout;
  log: Logger;
  callTimeoutMs: number;
  /** ops per repair txn */
  maxOps: () => Promise<number>;
  /** bytes per repair txn */
  maxTxnBytes: number;
  source?: DesiredSource;
  now: () => number;
  /** Sign desired values (see `jws.ts`): an unsigned or forged value in etcd is a difference. @default off */
  signing?: SigningMaterial;
}

/** The key prefixes a runtime owns in etcd. */
export function ownedPrefixes(keys: KeyLayout): string[] {
  return [`${keys.nodes}/`, `${keys.prefix}/global/`];
}

async function snapshot(deps: ResyncDeps, prefixes: string[]): Promise<{ revision: string; columns: EtcdColumns }> {
  let revision: string | undefined;
  const kvs = [];
  for (const p of prefixes) {
    const r = await readPrefixAt(deps.client, p, { pageSize: 10_000, revision, timeoutMs: deps.callTimeoutMs * 4 });
    revision = r.revision;
    kvs.push(...r.kvs);
  }
  return { revision: revision!, columns: toColumns(kvs) };
}

/** Packs a snapshot into the compact columns the pool diff takes. */
export function toColumns(kvs: readonly KeyValue[]): EtcdColumns {
  let total = 0;
  for (const kv of kvs) total += kv.value.length;
  const values = Buffer.allocUnsafe(total);
  const offsets = new Uint32Array(kvs.length + 1);
  const modRevisions = new Float64Array(kvs.length);
  let o = 0;
  kvs.forEach((kv, i) => {
    o += kv.value.copy(values, o);
    offsets[i + 1] = o;
    modRevisions[i] = Number(kv.modRevision);
  });
  return { keys: kvs.map((kv) => kv.key), values, offsets, modRevisions };
}

async function sourceColumns(source: DesiredSource): Promise<{ keys: string[]; values: string[] }> {
  const keys: string[] = [];
  const values: string[] = [];
  for await (const [k, v] of source()) {
    keys.push(k);
    values.push(typeof v === 'string' ? v : JSON.stringify(v));
  }
  return { keys, values };
}

/** A guarded repair: a nested txn whose compare protects a newer writer. */
interface Repair {
  key: string;
  bytes: number;
  op: IRequestOp;
}

function repairs(diff: ResyncDiff): Repair[] {
  const out: Repair[] = [];
  diff.missing.keys.forEach((key, i) => {
    const k = Buffer.from(key);
    const value = Buffer.from(diff.missing.values[i]);
    out.push({
      key,
      bytes: k.length + value.length,
      op: { request_txn: { compare: [{ key: k, result: 'Equal', target: 'Version', version: '0' }], success: [{ request_put: { key: k, value } }], failure: [] } },
    });
  });
  diff.changed.keys.forEach((key, i) => {
    const k = Buffer.from(key);
    const value = Buffer.from(diff.changed.values[i]);
    const mod = String(diff.changed.modRevisions[i]);
    out.push({
      key,
      bytes: k.length + value.length,
      op: { request_txn: { compare: [{ key: k, result: 'Equal', target: 'Mod', mod_revision: mod }], success: [{ request_put: { key: k, value } }], failure: [] } },
    });
  });
  diff.extra.keys.forEach((key, i) => {
    const k = Buffer.from(key);
    const mod = String(diff.extra.modRevisions[i]);
    out.push({
      key,
      bytes: k.length,
      op: { request_txn: { compare: [{ key: k, result: 'Equal', target: 'Mod', mod_revision: mod }], success: [{ request_delete_range: { key: k } }], failure: [] } },
    });
  });
  return out;
}

/**
 * Runs one resync. Without `fence` nothing is written (a dry run).
 * @throws NotLeaderError when etcd refused the fence
 * @throws EtcdUnavailableError when etcd did not answer
 */
export async function resyncOnce(deps: ResyncDeps, fence?: Fence): Promise<ResyncReport> {
  const started = deps.now();
  const prefixes = ownedPrefixes(deps.keys);
  const { revision, columns } = await snapshot(deps, prefixes);
  const task: ResyncDiffTask = { kind: 'resyncDiff', path: deps.journal.path, prefixes, etcd: columns };
  if (deps.source) task.desired = await sourceColumns(deps.source);
  if (deps.signing) task.signing = deps.signing;
  const diff = (await deps.pool.run(task)) as ResyncDiff;
  const emptied = diff.scanned === 0 && diff.missing.keys.length > 0;
  if (emptied) deps.log.warn({ desired: diff.missing.keys.length }, 'etcd holds none of the desired keys: rebuilding');
  let repaired = 0;
  let conflicts = 0;
  if (fence) {
    const todo = repairs(diff);
    // etcd counts a nested txn's ops against what its parent leaves: n nested txns of one op each fit when n + 1 <= limit
    const maxOps = (await deps.maxOps()) - 1;
    for (let i = 0; i < todo.length; ) {
      const batch: Repair[] = [];
      let bytes = 0;
      while (i < todo.length && batch.length < maxOps && (batch.length === 0 || bytes + todo[i].bytes <= deps.maxTxnBytes)) {
        bytes += todo[i].bytes;
        batch.push(todo[i++]);
      }
      const res = await fencedTxnResponses(deps, fence, batch.map((r) => r.op));
      res.forEach((ok, j) => {
        if (ok) repaired++;
        else {
          conflicts++;
          deps.log.info({ key: batch[j].key }, 'resync conflict: a newer write is kept');
        }
      });
    }
  }
  const differences: ResyncReport['differences'] = [];
  const note = (kind: 'missing' | 'extra' | 'changed', keys: string[]) => {
    for (const key of keys) if (differences.length < 1000) differences.push({ kind, key });
  };
  note('missing', diff.missing.keys);
  note('changed', diff.changed.keys);
  note('extra', diff.extra.keys);
  const report: ResyncReport = {
    dryRun: !fence,
    revision,
    scanned: diff.scanned,
    missing: diff.missing.keys.length,
    extra: diff.extra.keys.length,
    changed: diff.changed.keys.length,
    repaired,
    skipped: diff.skipped,
    conflicts,
    emptied,
    durationMs: deps.now() - started,
    differences,
  };
  const { differences: _d, ...summary } = report;
  deps.log.info(summary, 'resync done');
  return report;
}

/** Sends nested repair txns under the fence; resolves with each one's success. */
async function fencedTxnResponses(deps: ResyncDeps, fence: Fence, ops: IRequestOp[]): Promise<boolean[]> {
  const results: boolean[] = [];
  await fencedTxn(deps.client, fence, ops, deps.callTimeoutMs, (res) => {
    for (const r of res.responses) results.push(r.response_txn?.succeeded === true);
  });
  return results;
}

/** What the resync role needs besides a run's dependencies. */
export interface ResyncRoleDeps extends ResyncDeps {
  election: ElectionDeps;
  random: () => number;
  onReport: (report: ResyncReport) => void;
}

/** Builds the resync machine provided with etcd, the journal and the pool. */
export function etcdResync(deps: ResyncRoleDeps) {
  return resyncMachine.provide({
    actors: {
      election: etcdElection({ ...deps.election, log: deps.log.child({ sub: 'election' }) }),
      resync: fromPromise<ResyncOutput, { term: Term }>(async ({ input }) => {
        const report = await resyncOnce(deps, { key: deps.keys.electionKey(RESYNC_ROLE), token: input.term.token });
        deps.onReport(report);
        return report;
      }),
    },
    delays: {
      interval: ({ context }) => Math.round(context.intervalMs * (0.8 + 0.4 * deps.random())),
    },
  });
}
