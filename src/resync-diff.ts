/**
 * The resync diff, run in a pool worker: etcd's keys at one revision (sent as
 * compact columns) against the desired state — read by the worker straight
 * from the journal's LMDB environment, or given by the host's authoritative
 * source (signed first when signing is on). Keys with waiting journal
 * entries or dead letters are left alone (the forwarder owns them; a dead
 * letter is the operator's).
 */
import { dirname } from 'node:path';
import { Journal } from './journal.ts';
import { signerFor, type SigningMaterial } from './jws.ts';

/** etcd's keys under the owned prefixes, at one revision. */
export interface EtcdColumns {
  keys: string[];
  /** values, key i at `values[offsets[i] .. offsets[i+1]]` */
  values: Uint8Array;
  offsets: Uint32Array;
  modRevisions: Float64Array;
}

/** Input of the `resyncDiff` pool task. */
export interface ResyncDiffTask {
  kind: 'resyncDiff';
  /** the journal's LMDB path (desired state read from it unless `desired` is given) */
  path: string;
  /** the key prefixes the runtime owns, e.g. `/networking-vpp/nodes/` */
  prefixes: string[];
  etcd: EtcdColumns;
  /** the host's authoritative desired state (key → JSON text), replacing the journal's */
  desired?: { keys: string[]; values: string[] };
  /**
   * When given, the desired values are signed before the comparison (Ed25519 is
   * deterministic, so a correctly signed value compares equal byte for byte) and
   * the repairs carry signed values.
   */
  signing?: SigningMaterial;
}

/** The differences, in key order. */
export interface ResyncDiff {
  ok: true;
  scanned: number;
  /** desired keys etcd lacks: create-only puts */
  missing: { keys: string[]; values: string[] };
  /** keys whose etcd value differs: puts guarded by the mod revision read */
  changed: { keys: string[]; values: string[]; modRevisions: number[] };
  /** etcd keys nobody desires: deletes guarded by the mod revision read */
  extra: { keys: string[]; modRevisions: number[] };
  /** differences left alone because the key is still unsettled in the journal */
  skipped: number;
}

const journals = new Map<string, Journal>();

function desiredFromJournal(path: string, prefixes: string[]) {
  let journal = journals.get(path);
  if (!journal) journals.set(path, (journal = Journal.open(dirname(path))));
  const state = new Map<string, Buffer>();
  const keys = new Set<string>();
  const unsettledPrefixes: string[] = [];
  for (const p of prefixes) {
    const snap = journal.desiredBytes(p);
    for (const [k, v] of snap.state) state.set(k, v);
    for (const k of snap.unsettled.keys) keys.add(k);
    unsettledPrefixes.push(...snap.unsettled.prefixes);
  }
  return { state, unsettled: { keys, prefixes: unsettledPrefixes } };
}

function fromSource(desired: { keys: string[]; values: string[] }, owned: (k: string) => boolean) {
  const state = new Map<string, Buffer>();
  desired.keys.forEach((k, i) => {
    if (owned(k)) state.set(k, Buffer.from(desired.values[i]));
  });
  return { state, unsettled: { keys: new Set<string>(), prefixes: [] as string[] } };
}

/** Computes the diff (see the module comment). */
export default function resyncDiff(task: ResyncDiffTask): ResyncDiff {
  const owned = (k: string) => task.prefixes.some((p) => k.startsWith(p));
  const { state, unsettled } = task.desired ? fromSource(task.desired, owned) : desiredFromJournal(task.path, task.prefixes);
  if (task.signing) {
    const signer = signerFor(task.signing);
    for (const [k, v] of state) state.set(k, signer.sign(k, v));
  }
  const isUnsettled = (k: string) =>
    unsettled.keys.has(k) || (unsettled.prefixes.length > 0 && unsettled.prefixes.some((p) => k.startsWith(p)));

  const diff: ResyncDiff = {
    ok: true,
    scanned: task.etcd.keys.length,
    missing: { keys: [], values: [] },
    changed: { keys: [], values: [], modRevisions: [] },
    extra: { keys: [], modRevisions: [] },
    skipped: 0,
  };
  const { keys, values, offsets, modRevisions } = task.etcd;
  const buf = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const seen = new Set<string>();
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i];
    seen.add(key);
    const want = state.get(key);
    if (want !== undefined && buf.compare(want, 0, want.length, offsets[i], offsets[i + 1]) === 0) continue;
    if (isUnsettled(key)) {
      diff.skipped++;
    } else if (want === undefined) {
      diff.extra.keys.push(key);
      diff.extra.modRevisions.push(modRevisions[i]);
    } else {
      diff.changed.keys.push(key);
      diff.changed.values.push(want.toString('utf8'));
      diff.changed.modRevisions.push(modRevisions[i]);
    }
  }
  const missing: string[] = [];
  for (const key of state.keys()) if (!seen.has(key) && owned(key)) missing.push(key);
  missing.sort();
  for (const key of missing) {
    if (isUnsettled(key)) {
      diff.skipped++;
      continue;
    }
    diff.missing.keys.push(key);
    diff.missing.values.push(state.get(key)!.toString('utf8'));
  }
  return diff;
}
