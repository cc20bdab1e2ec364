/**
 * The durable journal: one LMDB environment per data directory with named
 * databases — `journal` (seq → entry), `desired` (key → value, updated in the
 * same transaction as each append), `dead` (dead letters), `attempts`
 * (seq → failed attempts) and `meta` (the sequence counter). Several processes
 * may open the same directory: all append, the elected forwarder drains.
 *
 * Appends are group-committed (lmdb-js batches the transactions of one event
 * turn) and resolve only after the commit is fsync'd. Entries leave the
 * journal only through {@link Journal.remove} (after etcd acknowledged them)
 * or {@link Journal.fail} (to the dead letters).
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { mkdirSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { JournalFullError, PortwireError } from './errors.ts';
import type { JournalOp } from './types.ts';

/** A journal entry as stored: key, value (`null` deletes), prefix flag, append time. */
export interface StoredEntry {
  k: string;
  v: unknown | null;
  p?: 1;
  /** `v` is JSON text already */
  j?: 1;
  t: number;
}

/** A desired value stored as JSON text (pre-encoded ops). */
interface EncodedValue {
  $json: string;
}

const isEncoded = (v: unknown): v is EncodedValue =>
  typeof v === 'object' && v !== null && typeof (v as EncodedValue).$json === 'string';

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

/** A dead letter: an entry that kept failing for its own reasons. */
export interface DeadLetter {
  id: number;
  key: string;
  value: unknown | null;
  prefix: boolean;
  seqs: number[];
  attempts: number;
  error: string;
  at: number;
}

/** Options of {@link Journal.open}. */
export interface JournalOptions {
  /**
   * Maximum size of the LMDB map in bytes; appends beyond it fail with JournalFullError.
   * @default 2 GiB
   */
  mapSize?: number;
  /** Clock, for entry and dead-letter timestamps. @default Date.now */
  now?: () => number;
}

/** The file name of the LMDB environment inside a data directory. */
export const JOURNAL_FILE = 'journal.lmdb';
const KICK_FILE = 'kick';

/** The durable journal of one data directory. See the module comment. */
export class Journal {
  private kickPending = false;
  private watchers = new Set<FSWatcher>();
  private closed = false;

  private constructor(
    readonly dataDir: string,
    readonly path: string,
    private readonly root: RootDatabase,
    private readonly entries: Database<StoredEntry, number>,
    private readonly desired: Database<unknown, string>,
    private readonly dead: Database<DeadLetter, number>,
    private readonly attempts: Database<number, number>,
    private readonly meta: Database<number, string>,
    private readonly groups: Database<GroupRecord, string>,
    private readonly now: () => number,
  ) {}

  /** Opens (creating if needed) the journal of `dataDir`. */
  static open(dataDir: string, options: JournalOptions = {}): Journal {
    mkdirSync(dataDir, { recursive: true });
    const path = join(dataDir, JOURNAL_FILE);
    const root = open({ path, maxDbs: 8, mapSize: options.mapSize ?? 2 * 1024 ** 3 });
    const db = <V, K extends string | number>(name: string) =>
      root.openDB<V, K>({ name, encoding: 'msgpack' });
    return new Journal(
      dataDir,
      path,
      root,
      db<StoredEntry, number>('journal'),
      db<unknown, string>('desired'),
      db<DeadLetter, number>('dead'),
      db<number, number>('attempts'),
      db<number, string>('meta'),
      db<GroupRecord, string>('groups'),
      options.now ?? Date.now,
    );
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
   * @throws JournalFullError when the LMDB map is full (nothing was written)
   */
  async appendWith(build: (groups: GroupAccess) => readonly JournalOp[] | undefined): Promise<number | undefined> {
    if (this.closed) throw new PortwireError('journal is closed');
    const t = this.now();
    let last: number | undefined;
    let wrote = false;
    try {
      await this.root.transaction(() => {
        const ops = build(this.groupAccess());
        if (!ops) return;
        let seq = this.meta.get('seq') ?? 0;
        for (const op of ops) {
          seq++;
          const entry: StoredEntry =
            op.json !== undefined ? { k: op.key, v: op.json, j: 1, t } : { k: op.key, v: op.value ?? null, t };
          if (op.prefix) entry.p = 1;
          this.entries.put(seq, entry);
          this.applyDesired(op);
        }
        this.meta.put('seq', seq);
        last = seq;
        wrote = ops.length > 0;
      });
      await this.root.flushed;
    } catch (err) {
      if (/MDB_MAP_FULL|map.?full/i.test(String((err as Error)?.message))) {
        throw new JournalFullError('journal is full: drain it or raise mapSize', { cause: err });
      }
      throw err;
    }
    if (wrote) this.kick();
    return last;
  }

  private groupAccess(): GroupAccess {
    return {
      get: (sgId) => this.groups.get(sgId),
      put: (sgId, rules) => void this.groups.put(sgId, { rules, rev: (this.groups.get(sgId)?.rev ?? 0) + 1 }),
      remove: (sgId) => void this.groups.remove(sgId),
    };
  }

  /** The stored record of a security group (read outside a transaction). */
  group(sgId: string): GroupRecord | undefined {
    return this.groups.get(sgId);
  }

  private applyDesired(op: JournalOp): void {
    if (op.prefix) {
      for (const key of this.desired.getKeys({ start: op.key, end: `${op.key}\uffff` })) {
        this.desired.remove(key);
      }
    } else if (op.json !== undefined) {
      this.desired.put(op.key, { $json: op.json } satisfies EncodedValue);
    } else if (op.value === null || op.value === undefined) {
      this.desired.remove(op.key);
    } else {
      this.desired.put(op.key, op.value);
    }
  }

  /** Removes entries that etcd acknowledged (and their attempt counters). */
  remove(seqs: ArrayLike<number>): Promise<boolean> {
    return this.root.transaction(() => {
      for (let i = 0; i < seqs.length; i++) {
        this.entries.remove(seqs[i]);
        this.attempts.remove(seqs[i]);
      }
      return true;
    });
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
  ): Promise<{ attempts: number; dead: boolean }> {
    const first = seqs[0];
    let result = { attempts: 0, dead: false };
    await this.root.transaction(() => {
      const attempts = (this.attempts.get(first) ?? 0) + 1;
      const entry = this.entries.get(seqs[seqs.length - 1]);
      if (!entry) {
        result = { attempts, dead: false };
        return;
      }
      if (attempts < maxAttempts) {
        this.attempts.put(first, attempts);
        result = { attempts, dead: false };
        return;
      }
      const id = (this.meta.get('deadSeq') ?? 0) + 1;
      this.meta.put('deadSeq', id);
      this.dead.put(id, {
        id,
        key: entry.k,
        value: entry.v,
        prefix: entry.p === 1,
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
    await this.root.transaction(() => {
      const wanted = ids ? new Set(ids) : undefined;
      let seq = this.meta.get('seq') ?? 0;
      for (const { key: id, value: letter } of this.dead.getRange({})) {
        if (wanted && !wanted.has(id)) continue;
        seq++;
        const d = letter.prefix ? null : (this.desired.get(letter.key) ?? null);
        const entry: StoredEntry = isEncoded(d)
          ? { k: letter.key, v: d.$json, j: 1, t: this.now() }
          : { k: letter.key, v: d, t: this.now() };
        if (letter.prefix) entry.p = 1;
        this.entries.put(seq, entry);
        this.dead.remove(id);
        count++;
      }
      this.meta.put('seq', seq);
    });
    await this.root.flushed;
    if (count > 0) this.kick();
    return count;
  }

  /** Number of entries waiting in the journal. */
  depth(): number {
    return this.entries.getCount();
  }

  /** The last sequence number handed out. */
  lastSeq(): number {
    return this.meta.get('seq') ?? 0;
  }

  /** The oldest waiting entry's append time, or undefined when empty. */
  oldestEntryTime(): number | undefined {
    for (const { value } of this.entries.getRange({ limit: 1 })) return value.t;
    return undefined;
  }

  /** Reads entries after `afterSeq` (for inspection and small retries). */
  read(afterSeq: number, limit: number): { seq: number; entry: StoredEntry }[] {
    return [
      ...this.entries
        .getRange({ start: afterSeq + 1, limit })
        .map(({ key, value }) => ({ seq: key, entry: value })),
    ];
  }

  /** The desired value of `key` (what etcd must converge to), or undefined. */
  desiredValue(key: string): unknown {
    const v = this.desired.get(key);
    return isEncoded(v) ? JSON.parse(v.$json) : v;
  }

  /** The desired value of `key` as the JSON text etcd must hold, or undefined. */
  desiredJson(key: string): string | undefined {
    const v = this.desired.get(key);
    if (v === undefined) return undefined;
    return isEncoded(v) ? v.$json : JSON.stringify(v);
  }

  /** Iterates the desired state in key order, values as JSON text (for resync and verification). */
  *desiredEntries(prefix = ''): Generator<[string, string]> {
    const range = prefix
      ? this.desired.getRange({ start: prefix, end: `${prefix}\uffff`, snapshot: false })
      : this.desired.getRange({ snapshot: false });
    for (const { key, value } of range) yield [key, isEncoded(value) ? value.$json : JSON.stringify(value)];
  }

  /**
   * Wakes the forwarders of every process sharing this data directory (a
   * local listener and, through the kick file, the others). Coalesced to one
   * file write per event-loop turn.
   */
  kick(): void {
    if (this.kickPending || this.closed) return;
    this.kickPending = true;
    setImmediate(() => {
      this.kickPending = false;
      if (this.closed) return;
      try {
        writeFileSync(join(this.dataDir, KICK_FILE), String(this.lastSeq()));
      } catch {
        // a lost wake is covered by the forwarder's slow poll
      }
    });
  }

  /** Calls `listener` whenever any process appends to this data directory. */
  onKick(listener: () => void): () => void {
    const file = join(this.dataDir, KICK_FILE);
    try {
      writeFileSync(file, '', { flag: 'a' });
    } catch {
      // the poll covers it
    }
    const watcher = watch(file, { persistent: false }, () => listener());
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
    await this.root.flushed;
    await this.root.close();
  }
}
