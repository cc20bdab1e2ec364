/**
 * The pool task that prepares one drain window: it reads journal entries after
 * a cursor straight from LMDB, coalesces them per key (last write wins, every
 * seq of the key kept so all leave the journal together), takes the
 * values' JSON text (signed as a compact JWS when `signing` is given) and
 * cuts the result into txn batches within etcd's op and byte limits. The
 * result is compact columnar data (a few arrays and one buffer), cheap to
 * pass back to the main thread.
 *
 * A prefix delete supersedes the window's earlier entries under its prefix
 * (their seqs join it); a later entry under a prefix deleted in the window
 * ends the window, so no txn ever holds a put and a delete of the same key
 * and every key still reaches etcd in journal order.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { entryFlags, entryTime, FLAG_DELETE, FLAG_PREFIX, keyEnd, keyStart } from './journal-entry.ts';
import { signerFor, type JwsSigner, type SigningMaterial } from './jws.ts';

/** Input of the `drainWindow` task. */
export interface DrainWindowTask {
  kind: 'drainWindow';
  /** Path of the journal's LMDB environment. */
  path: string;
  /** Read entries with a sequence number greater than this. */
  afterSeq: number;
  /** Read at most this many entries. */
  maxEntries: number;
  /** At most this many ops per txn batch. */
  maxOps: number;
  /** At most this many bytes (keys + values) per txn batch. */
  maxBytes: number;
  /** A single op whose key + value exceeds this is flagged oversize (never sent). */
  maxOpBytes: number;
  /** When given, every value is sent as a compact JWS (see `jws.ts`); sizes count the signed value. */
  signing?: SigningMaterial;
  /**
   * The journal's entries after this one are not known to be on disk yet
   * (see `Journal.durableSeq`): the window ends before the first of them
   * appended at or after `agedBefore`. @default no bound
   */
  durableSeq?: number;
  /** Append time (ms) before which an entry counts as on disk anyway: its writer had long enough to sync it. */
  agedBefore?: number;
}

/** Op flags in {@link DrainWindow.flags}. */
export const OP_PUT = 0;
export const OP_DELETE = 1;
export const OP_DELETE_PREFIX = 2;
/** Set on an op too large for one etcd request: it can only fail. */
export const OP_OVERSIZE = 4;

/** Output of the `drainWindow` task: `n` coalesced ops in `batches`. */
export interface DrainWindow {
  ok: true;
  /** Highest sequence number read (the next cursor). */
  lastSeq: number;
  /** Journal entries read. */
  entries: number;
  keys: string[];
  /** UTF-8 keys, op i at `keyBytes[keyOffsets[i] .. keyOffsets[i+1]]`. */
  keyBytes: Uint8Array;
  keyOffsets: Uint32Array;
  flags: Uint8Array;
  /** Encoded values, op i at `values[valueOffsets[i] .. valueOffsets[i+1]]`. */
  values: Uint8Array;
  valueOffsets: Uint32Array;
  /** Seqs of op i at `seqs[seqOffsets[i] .. seqOffsets[i+1]]`. */
  seqs: Float64Array;
  seqOffsets: Uint32Array;
  /** Batch b holds ops `batchStarts[b] .. batchStarts[b+1]`. */
  batchStarts: Uint32Array;
}

let cached: { path: string; root: RootDatabase; entries: Database<Buffer, number> } | undefined;

function entriesDb(path: string): Database<Buffer, number> {
  if (cached?.path !== path) {
    const root = open({ path, maxDbs: 8 });
    cached = { path, root, entries: root.openDB<Buffer, number>({ name: 'journal', encoding: 'binary' }) };
  }
  return cached.entries;
}

interface Coalesced {
  key: string;
  /** the newest encoded entry of the key */
  raw: Buffer;
  seqs: number[];
}

/** The prefixes a key lies under: `a/b/c` → `a/`, `a/b/`. */
export function* ancestors(key: string): Generator<string> {
  for (let i = key.indexOf('/'); i !== -1 && i < key.length - 1; i = key.indexOf('/', i + 1)) {
    yield key.slice(0, i + 1);
  }
}

/** The pool task: {@link readDrainWindow} over the journal at `task.path`, opened once per worker. */
export default function drainWindow(task: DrainWindowTask): DrainWindow {
  return readDrainWindow(entriesDb(task.path), task);
}

/**
 * Reads, coalesces, encodes and batches one window from the journal's entry
 * table `db` (`task.path` is not used). See the module comment.
 */
export function readDrainWindow(db: Database<Buffer, number>, task: DrainWindowTask): DrainWindow {
  // lmdb-js keeps a thread's read snapshot until a timer tick, against other threads' and processes'
  // commits: a window must see every append made before it was asked for
  db.resetReadTxn();
  const byKey = new Map<string, Coalesced>();
  const prefixes = new Map<string, Coalesced>();
  /**
   * keys of the window under each ancestor prefix, to find what a prefix
   * delete supersedes; built when the window's first prefix delete is read
   */
  let under: Map<string, Set<string>> | undefined;
  let lastSeq = task.afterSeq;
  let entries = 0;
  const durableSeq = task.durableSeq ?? Infinity;
  const agedBefore = task.agedBefore ?? Infinity;
  if (task.maxEntries <= 0) return encode(byKey, lastSeq, 0, task);
  for (const { key: seq, value: raw } of db.getRange({
    start: task.afterSeq + 1,
    limit: task.maxEntries,
  })) {
    // not on disk yet: a port must not become active before its bindPort call resolved
    if (seq > durableSeq && entryTime(raw) >= agedBefore) break;
    const key = raw.toString('utf8', keyStart, keyEnd(raw));
    if (entryFlags(raw) & FLAG_PREFIX) {
      if (coveredByPrefix(prefixes, key)) break;
      if (!under) {
        under = new Map();
        for (const k of byKey.keys()) index(under, k);
      }
      const c = prefixes.get(key) ?? { key, raw, seqs: [] };
      c.raw = raw;
      c.seqs.push(seq);
      for (const k of under.get(key) ?? []) {
        const sup = byKey.get(k) ?? prefixes.get(k);
        if (!sup) continue;
        c.seqs.push(...sup.seqs);
        byKey.delete(k);
        prefixes.delete(k);
      }
      under.delete(key);
      prefixes.set(key, c);
      index(under, key);
    } else {
      if (coveredByPrefix(prefixes, key)) break;
      const c = byKey.get(key);
      if (c) {
        c.raw = raw;
        c.seqs.push(seq);
      } else {
        byKey.set(key, { key, raw, seqs: [seq] });
        if (under) index(under, key);
      }
    }
    lastSeq = seq;
    entries++;
  }
  for (const [k, c] of prefixes) byKey.set(`\0${k}`, c);
  return encode(byKey, lastSeq, entries, task);
}

/** Files `key` under each of its ancestor prefixes in `under`. */
function index(under: Map<string, Set<string>>, key: string): void {
  for (const a of ancestors(key)) {
    let set = under.get(a);
    if (!set) under.set(a, (set = new Set()));
    set.add(key);
  }
}

/** True when one of `key`'s ancestors is a prefix deleted in the window. */
function coveredByPrefix(prefixes: Map<string, Coalesced>, key: string): boolean {
  if (prefixes.size === 0) return false;
  for (const a of ancestors(key)) if (prefixes.has(a)) return true;
  return false;
}

function encode(
  byKey: Map<string, Coalesced>,
  lastSeq: number,
  entries: number,
  task: DrainWindowTask,
): DrainWindow {
  const n = byKey.size;
  const keys: string[] = new Array(n);
  const flags = new Uint8Array(n);
  const keyOffsets = new Uint32Array(n + 1);
  const valueOffsets = new Uint32Array(n + 1);
  const seqOffsets = new Uint32Array(n + 1);
  let seqTotal = 0;
  let keyTotal = 0;
  let valueTotal = 0;
  const signer: JwsSigner | undefined = task.signing && signerFor(task.signing);
  const signed: Buffer[] | undefined = signer && new Array<Buffer>(n);
  let i = 0;
  for (const c of byKey.values()) {
    keys[i] = c.key;
    const f = entryFlags(c.raw);
    flags[i] = f & FLAG_PREFIX ? OP_DELETE_PREFIX : f & FLAG_DELETE ? OP_DELETE : OP_PUT;
    const ke = keyEnd(c.raw);
    keyTotal += ke - keyStart;
    if (flags[i] === OP_PUT) {
      if (signed) valueTotal += (signed[i] = signer!.sign(c.key, c.raw.subarray(ke))).length;
      else valueTotal += c.raw.length - ke;
    }
    seqTotal += c.seqs.length;
    i++;
  }
  const keyBytes = Buffer.allocUnsafe(keyTotal);
  const values = Buffer.allocUnsafe(valueTotal);
  const seqs = new Float64Array(seqTotal);
  const starts: number[] = [0];
  let ko = 0;
  let vo = 0;
  let so = 0;
  let batchOps = 0;
  let batchBytes = 0;
  i = 0;
  for (const c of byKey.values()) {
    const ke = keyEnd(c.raw);
    ko += c.raw.copy(keyBytes, ko, keyStart, ke);
    keyOffsets[i + 1] = ko;
    if (flags[i] === OP_PUT) vo += signed ? signed[i].copy(values, vo) : c.raw.copy(values, vo, ke);
    valueOffsets[i + 1] = vo;
    const size = ke - keyStart + (valueOffsets[i + 1] - valueOffsets[i]) + 16;
    if (size > task.maxOpBytes) flags[i] |= OP_OVERSIZE;
    for (const seq of c.seqs) seqs[so++] = seq;
    seqOffsets[i + 1] = so;
    if (batchOps > 0 && (batchOps + 1 > task.maxOps || batchBytes + size > task.maxBytes)) {
      starts.push(i);
      batchOps = 0;
      batchBytes = 0;
    }
    batchOps++;
    batchBytes += size;
    i++;
  }
  if (n > 0) starts.push(n);
  return {
    ok: true,
    lastSeq,
    entries,
    keys,
    keyBytes,
    keyOffsets,
    flags,
    values,
    valueOffsets,
    seqs,
    seqOffsets,
    batchStarts: Uint32Array.from(n > 0 ? starts : [0]),
  };
}
