/**
 * The pool task that prepares one drain window: it reads journal entries after
 * a cursor straight from LMDB, coalesces them per key (last write wins, every
 * seq of the key kept so all leave the journal together), JSON-encodes the
 * values and cuts the result into txn batches within etcd's op and byte
 * limits. The result is compact columnar data (a few arrays and one buffer),
 * cheap to pass back to the main thread.
 *
 * A prefix delete supersedes the window's earlier entries under its prefix
 * (their seqs join it); a later entry under a prefix deleted in the window
 * ends the window, so no txn ever holds a put and a delete of the same key
 * and every key still reaches etcd in journal order.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import type { StoredEntry } from './journal.ts';

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

let cached: { path: string; root: RootDatabase; entries: Database<StoredEntry, number> } | undefined;

function entriesDb(path: string): Database<StoredEntry, number> {
  if (cached?.path !== path) {
    const root = open({ path, maxDbs: 8 });
    cached = { path, root, entries: root.openDB<StoredEntry, number>({ name: 'journal', encoding: 'msgpack' }) };
  }
  return cached.entries;
}

interface Coalesced {
  entry: StoredEntry;
  seqs: number[];
}

/** The prefixes a key lies under: `a/b/c` → `a/`, `a/b/`. */
export function* ancestors(key: string): Generator<string> {
  for (let i = key.indexOf('/'); i !== -1 && i < key.length - 1; i = key.indexOf('/', i + 1)) {
    yield key.slice(0, i + 1);
  }
}

/** Reads, coalesces, encodes and batches one window. See the module comment. */
export default function drainWindow(task: DrainWindowTask): DrainWindow {
  const db = entriesDb(task.path);
  const byKey = new Map<string, Coalesced>();
  const prefixes = new Map<string, Coalesced>();
  /** keys of the window under each ancestor prefix, to find what a prefix delete supersedes */
  const under = new Map<string, Set<string>>();
  let lastSeq = task.afterSeq;
  let entries = 0;
  const coveredByPrefix = (key: string): boolean => {
    if (prefixes.size === 0) return false;
    for (const a of ancestors(key)) if (prefixes.has(a)) return true;
    return false;
  };
  for (const { key: seq, value: entry } of db.getRange({
    start: task.afterSeq + 1,
    limit: task.maxEntries,
    snapshot: false,
  })) {
    if (entry.p === 1) {
      if (coveredByPrefix(entry.k)) break;
      const c = prefixes.get(entry.k) ?? { entry, seqs: [] };
      c.entry = entry;
      c.seqs.push(seq);
      for (const k of under.get(entry.k) ?? []) {
        const sup = byKey.get(k) ?? prefixes.get(k);
        if (!sup) continue;
        c.seqs.push(...sup.seqs);
        byKey.delete(k);
        prefixes.delete(k);
      }
      under.delete(entry.k);
      prefixes.set(entry.k, c);
      for (const a of ancestors(entry.k)) {
        let set = under.get(a);
        if (!set) under.set(a, (set = new Set()));
        set.add(entry.k);
      }
    } else {
      if (coveredByPrefix(entry.k)) break;
      const c = byKey.get(entry.k);
      if (c) {
        c.entry = entry;
        c.seqs.push(seq);
      } else {
        byKey.set(entry.k, { entry, seqs: [seq] });
        for (const a of ancestors(entry.k)) {
          let set = under.get(a);
          if (!set) under.set(a, (set = new Set()));
          set.add(entry.k);
        }
      }
    }
    lastSeq = seq;
    entries++;
  }
  for (const [k, c] of prefixes) byKey.set(`\0${k}`, c);
  return encode(byKey, lastSeq, entries, task);
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
  const valueOffsets = new Uint32Array(n + 1);
  const seqOffsets = new Uint32Array(n + 1);
  const encoded: (Buffer | undefined)[] = new Array(n);
  let seqTotal = 0;
  let valueTotal = 0;
  let i = 0;
  for (const c of byKey.values()) {
    const { entry } = c;
    keys[i] = entry.k;
    if (entry.p === 1) flags[i] = OP_DELETE_PREFIX;
    else if (entry.v === null || entry.v === undefined) flags[i] = OP_DELETE;
    else {
      const buf = Buffer.from(entry.j === 1 ? (entry.v as string) : JSON.stringify(entry.v));
      encoded[i] = buf;
      valueTotal += buf.length;
    }
    seqTotal += c.seqs.length;
    i++;
  }
  const values = Buffer.allocUnsafe(valueTotal);
  const seqs = new Float64Array(seqTotal);
  const starts: number[] = [0];
  let vo = 0;
  let so = 0;
  let batchOps = 0;
  let batchBytes = 0;
  i = 0;
  for (const c of byKey.values()) {
    const buf = encoded[i];
    const size = Buffer.byteLength(keys[i]) + (buf?.length ?? 0) + 16;
    if (size > task.maxOpBytes) flags[i] |= OP_OVERSIZE;
    if (buf) {
      buf.copy(values, vo);
      vo += buf.length;
    }
    valueOffsets[i + 1] = vo;
    for (const s of c.seqs) seqs[so++] = s;
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
    flags,
    values,
    valueOffsets,
    seqs,
    seqOffsets,
    batchStarts: Uint32Array.from(n > 0 ? starts : [0]),
  };
}
