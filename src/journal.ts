/**
 * The durable journal: one LMDB environment per data directory with named
 * databases — `journal` (seq → entry), `applied` (key → the value etcd
 * acknowledged last, updated in the same transaction that removes the applied
 * entries), `dead` (dead letters), `attempts` (seq → failed attempts),
 * `groups` (security-group rules) and `meta` (the sequence counter). Several
 * processes may open the same directory: all append, the elected forwarder drains.
 *
 * The desired state — what etcd must converge to — is `applied`, overlaid by
 * the dead letters and then by the waiting entries, in sequence order. Keeping
 * it that way, rather than rewriting a key → value table on every append,
 * keeps appends to sequential pages: an append transaction with random keys
 * dirties a page per key and halved throughput (measured: ~25k vs ~50k
 * appends/s with 1,000 calls in flight).
 *
 * Appends are group-committed (lmdb-js batches the transactions of one event
 * turn) and resolve only after the commit is fsync'd. lmdb-js makes a commit
 * visible before its fsync (overlapping sync), so the journal also tracks the
 * highest sequence number known to be on disk ({@link Journal.durableSeq}):
 * this process's appends once fsync'd, other processes' from the kick file
 * they write after theirs, everything present at open. The drain reads no
 * further, or a port could become active before its `bindPort` call resolved.
 * Entries leave the
 * journal only through {@link Journal.applied} (after etcd acknowledged them)
 * or {@link Journal.fail} (to the dead letters).
 *
 * Size limit: lmdb-js grows the LMDB map by itself when it fills (it never
 * reports MDB_MAP_FULL), so the limit is the journal's own. An append that
 * would take the live pages past `mapSize` less a reserve is refused with a
 * JournalFullError and writes nothing; the reserve is left for the drain,
 * whose writes (applied values, removals) are never refused. Appends work
 * again once the drain has freed pages, or after reopening with a larger
 * `mapSize`. The live bytes are measured at most every 50 ms (what was
 * appended since is counted on top), and again before an append is refused.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { closeSync, mkdirSync, openSync, readFileSync, watch, writeFileSync, writeSync, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { JournalFullError, PortwireError, ValidationError } from './errors.ts';
import { decodeEntry, encodeEntry, type StoredEntry } from './journal-entry.ts';
import { appliedDbsOf, DRAIN_TOKEN, holdsDrain, recordApplied, type AppliedDbs } from './apply-applied.ts';
import { readDrainWindow, type DrainWindow, type DrainWindowTask } from './drain-window.ts';
import type { JournalOp } from './types.ts';

export type { StoredEntry } from './journal-entry.ts';

/** The security-group records kept beside the journal (the rules each group's value is built from). */
export interface GroupRecord {
  rules: unknown[];
  /** bumped on every change, for optimistic updates */
  rev: number;
}

/** Access to the group records inside an {@link Journal.appendWith} transaction. */
export interface GroupAccess {
  get(sgId: string): GroupRecord | undefined;
  put(sgId: string, rules: unknown[]): void;
  remove(sgId: string): void;
}

/** Group access whose changes are staged (null removes) until the append is accepted. */
class StagedGroups implements GroupAccess {
  readonly changes = new Map<string, GroupRecord | null>();
  constructor(private readonly groups: Database<GroupRecord, string>) {}
  get(sgId: string): GroupRecord | undefined {
    return this.changes.has(sgId) ? (this.changes.get(sgId) ?? undefined) : this.groups.get(sgId);
  }
  put(sgId: string, rules: unknown[]): void {
    this.changes.set(sgId, { rules, rev: (this.get(sgId)?.rev ?? 0) + 1 });
  }
  remove(sgId: string): void {
    this.changes.set(sgId, null);
  }
}

/** A dead letter: an entry that kept failing for its own reasons. */
export interface DeadLetter {
  id: number;
  key: string;
  /** JSON text of the value; null for a delete */
  value: string | null;
  prefix: boolean;
  seqs: number[];
  attempts: number;
  error: string;
  at: number;
}

/** Options of {@link Journal.open}. */
export interface JournalOptions {
  /**
   * Size limit of the LMDB environment in bytes (its live pages: waiting
   * entries, applied state, dead letters, group records). Appends that would
   * take it past `mapSize - reserveBytes` fail with JournalFullError; the
   * reserve stays free for draining. A larger value on a later open raises
   * the limit of the same data directory. Also the initial LMDB map size.
   * @default 2 GiB
   */
  mapSize?: number;
  /**
   * Bytes kept free for the drain's own writes (applied values, removals).
   * @default mapSize / 8, within 256 KiB .. 64 MiB
   */
  reserveBytes?: number;
  /** Clock, for entry and dead-letter timestamps. @default Date.now */
  now?: () => number;
}

/** How full the journal's LMDB environment is (see {@link Journal.usage}). */
export interface JournalUsage {
  /** Bytes of live pages: every table's, the free-page list's own and the two meta pages. */
  usedBytes: number;
  /** The size limit (`mapSize`). */
  limitBytes: number;
  /** Kept free for draining: appends stop at `limitBytes - reserveBytes`. */
  reserveBytes: number;
  /** Bytes of the waiting entries' pages: what draining frees. */
  waitingBytes: number;
  /** Entries waiting. */
  entries: number;
  /** Size of the data file: live pages and free pages LMDB reuses (it grows, never shrinks). */
  fileBytes: number;
  /** `usedBytes` as a fraction of the append limit `limitBytes - reserveBytes`. */
  fill: number;
  /** True when the next append of an entry is refused. */
  full: boolean;
}

/** Smallest `mapSize` accepted. */
export const MIN_MAP_SIZE = 1024 ** 2;
const DEFAULT_MAP_SIZE = 2 * 1024 ** 3;
/** LMDB's largest value kept on a leaf page (4 KiB pages); larger ones take overflow pages. */
const NODE_MAX = 2000;
/** Per-record overhead on a leaf page: node header, page index slot, number key. */
const NODE_OVERHEAD = 24;

/** The default drain reserve for a limit of `mapSize` bytes. */
export function defaultReserve(mapSize: number): number {
  return Math.min(64 * 1024 ** 2, Math.max(256 * 1024, Math.floor(mapSize / 8)));
}

/** A byte count for messages: `512 B`, `12.0 KiB`, `3.5 MiB`. */
function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  return n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`;
}

/** The file name of the LMDB environment inside a data directory. */
export const JOURNAL_FILE = 'journal.lmdb';
const KICK_FILE = 'kick';
/** How long a measurement of the live bytes serves the appends' limit check, ms. */
const MEASURE_EVERY_MS = 50;

/** The durable journal of one data directory. See the module comment. */
export class Journal {
  private kickPending = false;
  /** The kick file, kept open: one small positional write per wake-up. */
  private kickFd: number | undefined;
  /** Set while this process's own forwarder leads: its appends need not wake other processes. */
  private drainsLocally = false;
  private watchers = new Set<FSWatcher>();
  private closed = false;
  /** Every table of the environment, by name, for {@link usage}. */
  private readonly tables = new Map<string, Database<unknown, string | number>>();
  /** Live bytes measured in the current write transaction, and the estimate of what appends added since. */
  private txnUsed?: { txnId: number; at: number; usedBytes: number; added: number };
  /** See {@link durableSeq}. */
  private durable = 0;

  private constructor(
    readonly dataDir: string,
    readonly path: string,
    private readonly dbs: AppliedDbs,
    private readonly meta: Database<number | string, string>,
    private readonly groups: Database<GroupRecord, string>,
    private readonly now: () => number,
    /** The size limit in bytes (`mapSize`). */
    readonly limitBytes: number,
    /** Bytes kept free for draining. */
    readonly reserveBytes: number,
  ) {
    this.root = dbs.root;
    this.entries = dbs.entries;
    this.appliedValues = dbs.applied;
    this.dead = dbs.dead;
    this.attempts = dbs.attempts;
    const named: [string, Database<unknown, string | number>][] = [
      ['journal', dbs.entries],
      ['applied', dbs.applied],
      ['dead', dbs.dead],
      ['attempts', dbs.attempts],
      ['meta', meta],
      ['groups', groups],
    ];
    for (const [name, db] of named) this.tables.set(name, db);
    for (const name of this.root.getKeys({})) {
      if (typeof name === 'string' && !this.tables.has(name)) this.tables.set(name, this.root.openDB({ name }));
    }
    this.durable = this.lastSeq();
  }

  private readonly root: RootDatabase;
  private readonly entries: Database<Buffer, number>;
  private readonly appliedValues: Database<Buffer, string>;
  private readonly dead: Database<DeadLetter, number>;
  private readonly attempts: Database<number, number>;

  /**
   * Opens (creating if needed) the journal of `dataDir`.
   * @throws ValidationError when `mapSize` is below 1 MiB or `reserveBytes` leaves no room
   */
  static open(dataDir: string, options: JournalOptions = {}): Journal {
    const mapSize = options.mapSize ?? DEFAULT_MAP_SIZE;
    if (!Number.isSafeInteger(mapSize) || mapSize < MIN_MAP_SIZE) {
      throw new ValidationError('mapSize', `must be an integer of at least ${MIN_MAP_SIZE} bytes`);
    }
    const reserve = options.reserveBytes ?? defaultReserve(mapSize);
    if (!Number.isSafeInteger(reserve) || reserve < 0 || reserve > mapSize / 2) {
      throw new ValidationError('reserveBytes', 'must be an integer within 0 .. mapSize / 2');
    }
    mkdirSync(dataDir, { recursive: true });
    const path = join(dataDir, JOURNAL_FILE);
    // lmdb-js grows the map by itself when it fills (it never reports MDB_MAP_FULL): the limit is ours
    const root = open({ path, maxDbs: 8, mapSize });
    const db = <V, K extends string | number>(name: string) =>
      root.openDB<V, K>({ name, encoding: 'msgpack' });
    return new Journal(
      dataDir,
      path,
      appliedDbsOf(root),
      root.openDB<number | string, string>({ name: 'meta', encoding: 'msgpack' }),
      db<GroupRecord, string>('groups'),
      options.now ?? Date.now,
      mapSize,
      reserve,
    );
  }

  /**
   * A named msgpack table in the journal's LMDB environment, for another
   * component's durable records (the port registry's `notified`).
   */
  table<V>(name: string): Database<V, string> {
    const db = this.root.openDB<V, string>({ name, encoding: 'msgpack' });
    this.tables.set(name, db as Database<unknown, string>);
    return db;
  }

  /**
   * Appends `ops` in one transaction (journal and desired state together) and
   * resolves once it is fsync'd, with the last sequence number used.
   * @throws JournalFullError when the LMDB map is full (nothing was written)
   */
  async append(ops: readonly JournalOp[]): Promise<number> {
    const seq = await this.appendWith(() => ops);
    return seq ?? this.lastSeq();
  }

  /**
   * Runs `build` inside one write transaction (serialized with every other
   * process's) with access to the group records, and appends the ops it
   * returns in that transaction; `undefined` aborts (nothing written).
   * Resolves once fsync'd with the last sequence number, or undefined when aborted.
   * All or nothing: `build`'s group changes are staged and written only with the ops.
   * @throws JournalFullError when the entries would take the journal past its
   *   limit (`mapSize` less the drain reserve); nothing was written
   */
  async appendWith(build: (groups: GroupAccess) => readonly JournalOp[] | undefined): Promise<number | undefined> {
    if (this.closed) throw new PortwireError('journal is closed');
    const t = this.now();
    let last: number | undefined;
    let wrote = false;
    try {
      await this.root.transaction(() => {
        const staged = new StagedGroups(this.groups);
        const ops = build(staged);
        if (!ops) return;
        const records = ops.map((op) => {
          const json = op.json ?? (op.value === null || op.value === undefined || op.prefix ? null : JSON.stringify(op.value));
          return encodeEntry(op.key, json, op.prefix === true, t);
        });
        this.reserveRoom(records);
        for (const [sgId, record] of staged.changes) {
          if (record) this.groups.put(sgId, record);
          else this.groups.remove(sgId);
        }
        let seq = (this.meta.get('seq') as number | undefined) ?? 0;
        for (const record of records) this.entries.put(++seq, record);
        this.meta.put('seq', seq);
        last = seq;
        wrote = ops.length > 0;
      });
      await this.root.flushed;
      if (last !== undefined) this.markDurable(last);
    } catch (err) {
      if (err instanceof PortwireError) throw err;
      const message = String((err as Error)?.message);
      if (/MDB_MAP_FULL|map.?full/i.test(message)) {
        throw new JournalFullError('journal is full (LMDB map full): drain it or raise mapSize', { cause: err });
      }
      if (/ENOSPC|no space left/i.test(message)) {
        throw new JournalFullError(`journal cannot grow: the disk of ${this.dataDir} is full`, { cause: err });
      }
      throw err;
    }
    if (wrote) this.kick();
    return last;
  }

  /**
   * Inside the append's write transaction: refuses `records` with a
   * JournalFullError when they would take the live bytes past the append
   * limit, else counts them. The live bytes are measured at most every
   * {@link MEASURE_EVERY_MS} (what appends added since is counted on top, so
   * the estimate errs high), and measured again before anything is refused.
   */
  private reserveRoom(records: readonly Buffer[]): void {
    let add = 0;
    for (const r of records) add += r.length > NODE_MAX ? Math.ceil((r.length + 16) / 4096) * 4096 : r.length + NODE_OVERHEAD;
    const txnId = this.root.getWriteTxnId();
    const at = this.now();
    const appendLimit = this.appendLimit;
    let u = this.txnUsed;
    let measured: JournalUsage | undefined;
    if (
      !u ||
      u.added > this.reserveBytes / 4 ||
      (u.txnId !== txnId && at - u.at >= MEASURE_EVERY_MS) ||
      u.usedBytes + u.added + add > appendLimit
    ) {
      measured = this.measure();
      u = this.txnUsed = { txnId, at, usedBytes: measured.usedBytes, added: 0 };
    }
    if (u.usedBytes + u.added + add > appendLimit) {
      // an estimate over the limit was measured just above
      const now = measured ?? this.measure();
      throw new JournalFullError(
        `journal is full: ${bytes(now.usedBytes)} used of the ${bytes(appendLimit)} append limit ` +
          `(mapSize ${bytes(this.limitBytes)} less ${bytes(this.reserveBytes)} kept for draining); ` +
          `${records.length} new entries (${bytes(add)}) refused. Waiting entries take ${bytes(now.waitingBytes)} ` +
          `(${now.entries}): let the forwarder drain them to etcd, or restart with a larger mapSize`,
        { usage: now },
      );
    }
    u.added += add;
  }

  /**
   * How full the environment is: live bytes against the limit, what draining
   * would free, the file's size. Cheap enough for a status page (a few µs).
   */
  usage(): JournalUsage {
    return this.measure();
  }

  /** Live bytes appends may fill: the limit less the drain's reserve. */
  private get appendLimit(): number {
    return this.limitBytes - this.reserveBytes;
  }

  private measure(): JournalUsage {
    type Stats = { treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number; entryCount: number };
    const pages = (x: Stats) => x.treeBranchPageCount + x.treeLeafPageCount + x.overflowPages;
    const env = this.root.getStats() as Stats & { pageSize: number; lastPageNumber: number; free: Stats };
    const psize = env.pageSize;
    let used = pages(env) + pages(env.free) + 2;
    let waiting = 0;
    let entries = 0;
    for (const db of this.tables.values()) {
      const s = db.getStats() as Stats;
      used += pages(s);
      if (db === this.entries) {
        waiting = pages(s);
        entries = s.entryCount;
      }
    }
    const usedBytes = used * psize;
    const appendLimit = this.appendLimit;
    return {
      usedBytes,
      limitBytes: this.limitBytes,
      reserveBytes: this.reserveBytes,
      waitingBytes: waiting * psize,
      entries,
      fileBytes: (env.lastPageNumber + 1) * psize,
      fill: usedBytes / appendLimit,
      full: usedBytes + psize > appendLimit,
    };
  }

  /** The stored record of a security group (read outside a transaction). */
  group(sgId: string): GroupRecord | undefined {
    return this.groups.get(sgId);
  }

  /**
   * Removes entries etcd acknowledged and records the values it now holds, in
   * one transaction; dead letters they supersede are dropped. Each element is
   * the seqs of one coalesced key (see `apply-applied.ts`).
   */
  applied(ops: readonly (readonly number[])[], token?: string): Promise<boolean> {
    const seqs = ops.flat();
    const offsets = [0];
    for (const op of ops) offsets.push(offsets[offsets.length - 1] + op.length);
    return this.root.transaction(() => {
      if (!holdsDrain(this.dbs, token)) return false;
      recordApplied(this.dbs, seqs, offsets);
      return true;
    });
  }

  /**
   * Claims the journal's head for the forwarder of term `token`: from then on
   * only that term may remove entries (see `holdsDrain`). Resolves when durable.
   */
  async claimDrain(token: string): Promise<void> {
    await this.root.transaction(() => {
      this.meta.put(DRAIN_TOKEN, token);
    });
    await this.root.flushed;
  }

  /**
   * Records one failed attempt of the entry made of `seqs` (a coalesced key).
   * After `maxAttempts` the entry moves to the dead letters in the same
   * transaction. Resolves with the attempt count and whether it was dead-lettered.
   */
  async fail(
    seqs: readonly number[],
    error: string,
    maxAttempts: number,
    token?: string,
  ): Promise<{ attempts: number; dead: boolean; fenced?: boolean }> {
    const first = seqs[0];
    let result: { attempts: number; dead: boolean; fenced?: boolean } = { attempts: 0, dead: false };
    await this.root.transaction(() => {
      if (!holdsDrain(this.dbs, token)) {
        result = { attempts: 0, dead: false, fenced: true };
        return;
      }
      const attempts = (this.attempts.get(first) ?? 0) + 1;
      const raw = this.entries.get(Math.max(...seqs));
      const entry = raw && decodeEntry(raw);
      if (!entry) {
        result = { attempts, dead: false };
        return;
      }
      if (attempts < maxAttempts) {
        this.attempts.put(first, attempts);
        result = { attempts, dead: false };
        return;
      }
      const id = ((this.meta.get('deadSeq') as number | undefined) ?? 0) + 1;
      this.meta.put('deadSeq', id);
      this.dead.put(id, {
        id,
        key: entry.k,
        value: entry.v,
        prefix: entry.p,
        seqs: [...seqs],
        attempts,
        error,
        at: this.now(),
      });
      for (const s of seqs) {
        this.entries.remove(s);
        this.attempts.remove(s);
      }
      result = { attempts, dead: true };
    });
    await this.root.flushed;
    return result;
  }

  /** Attempts recorded so far for the entry whose first seq is `seq`. */
  attemptsOf(seq: number): number {
    return this.attempts.get(seq) ?? 0;
  }

  /** Every dead letter, oldest first. */
  deadLetters(): DeadLetter[] {
    return [...this.dead.getRange({}).map(({ value }) => value)];
  }

  /**
   * Re-queues dead letters (all, or those with the given ids). The key's
   * *current* desired value is journaled, never the dead (possibly superseded)
   * one, so a retry cannot regress a key. Resolves with the re-queued count.
   */
  async retryDead(ids?: readonly number[]): Promise<number> {
    let count = 0;
    let last = 0;
    await this.root.transaction(() => {
      const wanted = ids ? new Set(ids) : undefined;
      let seq = (this.meta.get('seq') as number | undefined) ?? 0;
      for (const { key: id, value: letter } of this.dead.getRange({})) {
        if (wanted && !wanted.has(id)) continue;
        seq++;
        const d = letter.prefix ? null : (this.desiredJson(letter.key) ?? null);
        this.entries.put(seq, encodeEntry(letter.key, d, letter.prefix, this.now()));
        this.dead.remove(id);
        count++;
      }
      this.meta.put('seq', seq);
      last = seq;
    });
    await this.root.flushed;
    if (count > 0) {
      this.markDurable(last);
      this.kick();
    }
    return count;
  }

  /** Number of entries waiting in the journal. */
  depth(): number {
    return this.entries.getCount();
  }

  /** The last sequence number handed out. */
  lastSeq(): number {
    return (this.meta.get('seq') as number | undefined) ?? 0;
  }

  /**
   * The highest sequence number known to be on disk (see the module comment);
   * entries after it may be visible already, their fsync still running.
   */
  durableSeq(): number {
    return this.durable;
  }

  private markDurable(seq: number): void {
    if (seq > this.durable) this.durable = seq;
  }

  /** The oldest waiting entry's append time, or undefined when empty. */
  oldestEntryTime(): number | undefined {
    for (const { value } of this.entries.getRange({ limit: 1 })) return decodeEntry(value).t;
    return undefined;
  }

  /**
   * Prepares a drain window on this thread, from this process's handle of the
   * environment: for a window of a few entries, cheaper than a pool task.
   */
  drainWindow(task: DrainWindowTask): DrainWindow {
    return readDrainWindow(this.entries, task);
  }

  /** Reads entries after `afterSeq` (for inspection and small retries). */
  read(afterSeq: number, limit: number): { seq: number; entry: StoredEntry }[] {
    return [
      ...this.entries
        .getRange({ start: afterSeq + 1, limit })
        .map(({ key, value }) => ({ seq: key, entry: decodeEntry(value) })),
    ];
  }

  /** The desired value of `key` (what etcd must converge to), or undefined. */
  desiredValue(key: string): unknown {
    const json = this.desiredJson(key);
    return json === undefined ? undefined : JSON.parse(json);
  }

  /**
   * The desired value of `key` as the JSON text etcd must hold, or undefined
   * when the key must not exist: the newest waiting entry or dead letter that
   * sets or deletes it, else the value etcd acknowledged.
   */
  desiredJson(key: string): string | undefined {
    const touches = (k: string, prefix: boolean) => (prefix ? key.startsWith(k) : k === key);
    let best: { seq: number; json: string | null } | undefined;
    for (const { key: seq, value } of this.entries.getRange({ reverse: true, snapshot: false })) {
      const e = decodeEntry(value);
      if (touches(e.k, e.p)) {
        best = { seq, json: e.p ? null : e.v };
        break;
      }
    }
    for (const letter of this.dead.getRange({}).map(({ value }) => value)) {
      const seq = Math.max(...letter.seqs);
      if (touches(letter.key, letter.prefix) && seq > (best?.seq ?? -1)) best = { seq, json: letter.prefix ? null : letter.value };
    }
    if (best) return best.json ?? undefined;
    return this.appliedValues.get(key)?.toString('utf8');
  }

  /**
   * The whole desired state under `prefix`, in key order, values as JSON text
   * (for resync and verification): the acknowledged values, overlaid by the
   * dead letters and the waiting entries in sequence order.
   */
  desiredEntries(prefix = ''): [string, string][] {
    return [...this.desiredSnapshot(prefix).state].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  /**
   * The desired state under `prefix` (as {@link desiredEntries}, unsorted) and
   * what is still unsettled: the keys and prefixes of waiting entries and dead
   * letters, which resync leaves to the forwarder and to the operator.
   */
  desiredSnapshot(prefix = ''): { state: Map<string, string>; unsettled: { keys: Set<string>; prefixes: string[] } } {
    const { state, unsettled } = this.desiredBytes(prefix);
    const text = new Map<string, string>();
    for (const [k, v] of state) text.set(k, v.toString('utf8'));
    return { state: text, unsettled };
  }

  /** {@link desiredSnapshot} with the values as UTF-8 bytes (no decoding: for large diffs). */
  desiredBytes(prefix = ''): { state: Map<string, Buffer>; unsettled: { keys: Set<string>; prefixes: string[] } } {
    const state = new Map<string, Buffer>();
    const range = prefix
      ? this.appliedValues.getRange({ start: prefix, end: `${prefix}\uffff` })
      : this.appliedValues.getRange({});
    for (const { key, value } of range) state.set(key, value);
    const changes: { seq: number; key: string; json: string | null; prefix: boolean }[] = [];
    for (const l of this.dead.getRange({}).map(({ value }) => value)) {
      changes.push({ seq: Math.max(...l.seqs), key: l.key, json: l.value, prefix: l.prefix });
    }
    for (const { key: seq, value } of this.entries.getRange({})) {
      const e = decodeEntry(value);
      changes.push({ seq, key: e.k, json: e.v, prefix: e.p });
    }
    changes.sort((a, b) => a.seq - b.seq);
    const unsettled = { keys: new Set<string>(), prefixes: [] as string[] };
    for (const c of changes) {
      if (c.prefix) {
        unsettled.prefixes.push(c.key);
        for (const k of state.keys()) if (k.startsWith(c.key)) state.delete(k);
        continue;
      }
      if (!c.key.startsWith(prefix)) continue;
      unsettled.keys.add(c.key);
      if (c.json === null) state.delete(c.key);
      else state.set(c.key, Buffer.from(c.json));
    }
    return { state, unsettled };
  }

  /**
   * Wakes the forwarders of every process sharing this data directory through
   * the kick file, at most once per event-loop turn. Skipped while this
   * process's own forwarder leads (see {@link setDrainsLocally}): the other
   * processes' forwarders are followers then.
   */
  kick(): void {
    if (this.kickPending || this.closed || this.drainsLocally) return;
    this.kickPending = true;
    setImmediate(() => {
      this.kickPending = false;
      if (this.closed) return;
      try {
        this.kickFd ??= openSync(join(this.dataDir, KICK_FILE), 'w');
        // what is on disk, for the leader's bound (see durableSeq)
        const text = Buffer.from(String(this.durable).padStart(16));
        writeSync(this.kickFd, text, 0, text.length, 0);
      } catch {
        // a lost wake is covered by the forwarder's slow poll
      }
    });
  }

  /**
   * Tells the journal whether this process's forwarder leads. While it does,
   * appends wake it directly and write no kick file; a leader elsewhere is
   * woken again as soon as this one steps down (its term starts with a drain).
   */
  setDrainsLocally(leading: boolean): void {
    this.drainsLocally = leading;
  }

  /** Calls `listener` whenever any process appends to this data directory. */
  onKick(listener: () => void): () => void {
    const file = join(this.dataDir, KICK_FILE);
    try {
      writeFileSync(file, '', { flag: 'a' });
    } catch {
      // the poll covers it
    }
    const watcher = watch(file, { persistent: false }, () => {
      // the writer's appends are on disk up to the seq it wrote
      try {
        const seq = Number.parseInt(readFileSync(file, 'utf8'), 10);
        if (Number.isSafeInteger(seq)) this.markDurable(seq);
      } catch {
        // the poll covers it: entries old enough are drained without their writer's word
      }
      listener();
    });
    watcher.on('error', () => undefined);
    this.watchers.add(watcher);
    return () => {
      watcher.close();
      this.watchers.delete(watcher);
    };
  }

  /** Closes the environment (after pending writes committed). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watchers) w.close();
    this.watchers.clear();
    if (this.kickFd !== undefined) closeSync(this.kickFd);
    this.kickFd = undefined;
    await this.root.flushed;
    await this.root.close();
  }
}
