/**
 * Recording what etcd acknowledged: the applied entries leave the journal and
 * the values they carried become the `applied` state, in one transaction; dead
 * letters they supersede are dropped. Shared by the journal (main thread) and
 * the pool task the drainer uses (so that the LMDB work stays off the main
 * thread). Each op is the seqs of one coalesced key; its newest entry is what
 * etcd now holds.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import type { DeadLetter } from './journal.ts';
import { entryFlags, FLAG_DELETE, FLAG_PREFIX, keyEnd, keyStart } from './journal-entry.ts';

/** The databases the recording touches. */
export interface AppliedDbs {
  root: RootDatabase;
  entries: Database<Buffer, number>;
  applied: Database<Buffer, string>;
  attempts: Database<number, number>;
  dead: Database<DeadLetter, number>;
  /** counters and the drain fence (`drainToken`) */
  meta: Database<number | string, string>;
}

/** The meta key holding the term token of the forwarder that may change the journal's head. */
export const DRAIN_TOKEN = 'drainToken';

/**
 * True when `token` is the term that last claimed the journal (see
 * `Journal.claimDrain`); call inside a write transaction. A deposed leader's
 * late removals would tear the view of the leader that replaced it, so they
 * are refused: the journal is fenced like etcd.
 */
export function holdsDrain(dbs: AppliedDbs, token: string | undefined): boolean {
  return token === undefined || dbs.meta.get(DRAIN_TOKEN) === token;
}

/** Opens the databases of the journal at `path` (lmdb-js shares the environment within a process). */
export function openAppliedDbs(path: string): AppliedDbs {
  return appliedDbsOf(open({ path, maxDbs: 8 }));
}

/** The databases the recording touches, in an open environment. */
export function appliedDbsOf(root: RootDatabase): AppliedDbs {
  return {
    root,
    entries: root.openDB<Buffer, number>({ name: 'journal', encoding: 'binary' }),
    applied: root.openDB<Buffer, string>({ name: 'applied', encoding: 'binary' }),
    attempts: root.openDB<number, number>({ name: 'attempts', encoding: 'msgpack' }),
    dead: root.openDB<DeadLetter, number>({ name: 'dead', encoding: 'msgpack' }),
    meta: root.openDB<number | string, string>({ name: 'meta', encoding: 'msgpack' }),
  };
}

/**
 * Records ops `seqs[seqOffsets[i] .. seqOffsets[i+1]]` as applied. Must run
 * inside a write transaction of `dbs.root`.
 */
export function recordApplied(dbs: AppliedDbs, seqs: ArrayLike<number>, seqOffsets: ArrayLike<number>): void {
  const withAttempts = dbs.attempts.getCount() > 0;
  const withDead = dbs.dead.getCount() > 0;
  for (let i = 0; i + 1 < seqOffsets.length; i++) {
    let newest = -1;
    for (let j = seqOffsets[i]; j < seqOffsets[i + 1]; j++) if (seqs[j] > newest) newest = seqs[j];
    const raw = dbs.entries.get(newest);
    for (let j = seqOffsets[i]; j < seqOffsets[i + 1]; j++) {
      dbs.entries.remove(seqs[j]);
      if (withAttempts) dbs.attempts.remove(seqs[j]);
    }
    if (!raw) continue;
    const flags = entryFlags(raw);
    const end = keyEnd(raw);
    const key = raw.toString('utf8', keyStart, end);
    if (flags & FLAG_PREFIX) {
      for (const k of dbs.applied.getKeys({ start: key, end: `${key}\uffff` })) dbs.applied.remove(k);
    } else if (flags & FLAG_DELETE) {
      dbs.applied.remove(key);
    } else {
      dbs.applied.put(key, raw.subarray(end));
    }
    if (withDead) purgeDead(dbs, key, (flags & FLAG_PREFIX) !== 0, newest);
  }
}

function purgeDead(dbs: AppliedDbs, key: string, prefix: boolean, newest: number): void {
  for (const { key: id, value: letter } of dbs.dead.getRange({})) {
    const covered = prefix ? letter.key.startsWith(key) : letter.key === key;
    if (covered && Math.max(...letter.seqs) < newest) dbs.dead.remove(id);
  }
}

/** Input of the `applied` pool task. */
export interface AppliedTask {
  kind: 'applied';
  path: string;
  /** the term token of the forwarder recording them */
  token: string;
  seqs: Float64Array;
  seqOffsets: Uint32Array;
}

let cached: { path: string; dbs: AppliedDbs } | undefined;

/** The pool task: records a batch as applied, in the worker's own write transaction. */
export default async function appliedTask(task: AppliedTask): Promise<{ ok: boolean; code?: string }> {
  if (cached?.path !== task.path) cached = { path: task.path, dbs: openAppliedDbs(task.path) };
  const { dbs } = cached;
  let ok = false;
  dbs.root.transactionSync(() => {
    ok = holdsDrain(dbs, task.token);
    if (ok) recordApplied(dbs, task.seqs, task.seqOffsets);
  });
  return ok ? { ok } : { ok, code: 'NOT_LEADER' };
}

