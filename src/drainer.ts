/**
 * One drain of the journal into etcd, run by the forwarder while it leads.
 *
 * Windows are prepared in the pool (read, coalesce, encode, batch: see
 * `drain-window.ts`), the next one while the current one is sent. Batches go
 * out as fenced txns, several in flight; a batch waits for any in-flight batch
 * holding one of its keys, so a key's values reach etcd in journal order.
 * Entries leave the journal only after their txn was acknowledged.
 *
 * Failures: a refused fence (NotLeaderError) or an unknown outcome
 * (EtcdUnavailableError: timeout, lost connection) ends the drain and is
 * rethrown — nothing is counted against an entry and the cursor rewinds. A
 * batch etcd rejects for its content is bisected down to the entry at fault,
 * which gets an attempt recorded and a backoff with jitter; after
 * `maxAttempts` it moves to the dead letters. Other keys keep flowing; a newer
 * entry for a deferred key supersedes it.
 */
import type { Etcd3, IRequestOp } from 'etcd3';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { EtcdRejectedError, PortwireError } from './errors.ts';
import { fencedTxn, prefixEnd, type Fence } from './etcd.ts';
import type { Journal } from './journal.ts';
import {
  ancestors,
  OP_DELETE,
  OP_DELETE_PREFIX,
  OP_OVERSIZE,
  type DrainWindow,
  type DrainWindowTask,
} from './drain-window.ts';

/** Limits and policies of the drain. All have defaults in `options.ts`. */
export interface DrainLimits {
  /** Ops per txn (etcd's `--max-txn-ops`, read from the server). */
  maxOps: number;
  /** Bytes of keys + values per txn. */
  maxTxnBytes: number;
  /** Bytes of one request etcd accepts (`--max-request-bytes`). */
  maxRequestBytes: number;
  /** Journal entries read per window. */
  windowEntries: number;
  /** Txns in flight at once. */
  inFlight: number;
  /** Deadline of one txn, ms. */
  callTimeoutMs: number;
  /** Attempts before an entry is dead-lettered. */
  maxAttempts: number;
  /** First retry delay of a failing entry, ms (doubles each attempt, with jitter). */
  retryBaseMs: number;
  /** Largest retry delay, ms. */
  retryMaxMs: number;
}

/** What the drainer reports while it works. */
export type DrainEvent =
  | { type: 'applied'; keys: number; entries: number; revision: string }
  | { type: 'entryFailed'; key: string; attempts: number; error: string; retryInMs: number }
  | { type: 'deadLettered'; key: string; attempts: number; error: string };

/** Result of one {@link Drainer.drain}. */
export interface DrainResult {
  /** Keys written or deleted in etcd. */
  keys: number;
  /** Journal entries removed after acknowledgement. */
  entries: number;
  /** When deferred entries remain: ms until the earliest is due. */
  retryInMs?: number;
}

interface Op {
  key: string;
  flag: number;
  value?: Buffer;
  seqs: number[];
}

interface Deferred {
  op: Op;
  dueAt: number;
}

/** Dependencies of a {@link Drainer}. */
export interface DrainerDeps {
  journal: Journal;
  pool: Piscina;
  client: Etcd3;
  log: Logger;
  limits: DrainLimits;
  now: () => number;
  random: () => number;
  onEvent?: (event: DrainEvent) => void;
}

/** Drains the journal into etcd under a fence. See the module comment. */
export class Drainer {
  private cursor = 0;
  private readonly deferred = new Map<string, Deferred>();

  constructor(private readonly deps: DrainerDeps) {}

  /** Forgets the cursor and deferrals (a new leadership term starts from the journal's head). */
  reset(): void {
    this.cursor = 0;
    this.deferred.clear();
  }

  /** Number of keys waiting for a retry. */
  get deferredCount(): number {
    return this.deferred.size;
  }

  /**
   * Drains until the journal holds nothing but deferred entries.
   * @throws NotLeaderError when the fence was refused
   * @throws EtcdUnavailableError when etcd did not answer (unknown outcome)
   */
  async drain(fence: Fence, signal?: AbortSignal): Promise<DrainResult> {
    const run = new DrainRun(this.deps, fence, this.deferred, signal);
    try {
      this.cursor = await run.execute(this.cursor);
    } catch (err) {
      this.cursor = 0;
      throw err;
    }
    let retryInMs: number | undefined;
    const now = this.deps.now();
    for (const d of this.deferred.values()) {
      retryInMs = Math.min(retryInMs ?? Infinity, Math.max(0, d.dueAt - now));
    }
    return { keys: run.keys, entries: run.entries, retryInMs };
  }
}

class DrainRun {
  keys = 0;
  entries = 0;
  private error: unknown;
  private readonly inflight = new Set<Promise<void>>();
  private readonly locks = new Map<string, Promise<void>>();
  private readonly prefixLocks = new Map<string, Promise<void>>();
  /** in-flight batches holding a key under each ancestor prefix */
  private readonly under = new Map<string, Set<Promise<void>>>();

  constructor(
    private readonly deps: DrainerDeps,
    private readonly fence: Fence,
    private readonly deferred: Map<string, Deferred>,
    private readonly signal?: AbortSignal,
  ) {}

  async execute(cursor: number): Promise<number> {
    await this.sendDue();
    let window = await this.read(cursor);
    while (window.entries > 0 && !this.stopped()) {
      const next = this.read(window.lastSeq);
      next.catch(() => undefined);
      await this.sendWindow(window);
      cursor = window.lastSeq;
      window = await next;
    }
    await Promise.all(this.inflight);
    if (this.error) throw this.error;
    if (this.signal?.aborted) throw new PortwireError('drain aborted');
    return cursor;
  }

  private stopped(): boolean {
    return this.error !== undefined || this.signal?.aborted === true;
  }

  private async read(afterSeq: number): Promise<DrainWindow> {
    const { limits, pool, journal } = this.deps;
    const task: DrainWindowTask = {
      kind: 'drainWindow',
      path: journal.path,
      afterSeq,
      maxEntries: limits.windowEntries,
      maxOps: limits.maxOps,
      maxBytes: Math.min(limits.maxTxnBytes, limits.maxRequestBytes - 1024),
      maxOpBytes: limits.maxRequestBytes - 512,
    };
    return (await pool.run(task)) as DrainWindow;
  }

  private async sendDue(): Promise<void> {
    const now = this.deps.now();
    const due: Op[] = [];
    for (const [key, d] of this.deferred) {
      if (d.dueAt <= now) {
        due.push(d.op);
        this.deferred.delete(key);
      }
    }
    for (const op of due) await this.submit([op]);
  }

  private async sendWindow(w: DrainWindow): Promise<void> {
    for (let b = 0; b + 1 < w.batchStarts.length && !this.stopped(); b++) {
      const ops: Op[] = [];
      for (let i = w.batchStarts[b]; i < w.batchStarts[b + 1]; i++) {
        const op = this.opAt(w, i);
        if (op) ops.push(op);
      }
      if (ops.length === 0) continue;
      const oversize = ops.filter((o) => o.flag & OP_OVERSIZE);
      const normal = oversize.length ? ops.filter((o) => !(o.flag & OP_OVERSIZE)) : ops;
      if (normal.length) await this.submit(normal);
      for (const op of oversize) await this.submit([op]);
    }
  }

  /** Builds op `i`; merges or skips a deferred entry of the same key. */
  private opAt(w: DrainWindow, i: number): Op | undefined {
    const key = w.keys[i];
    const seqs = Array.from(w.seqs.subarray(w.seqOffsets[i], w.seqOffsets[i + 1]));
    const flag = w.flags[i];
    const op: Op = { key, flag, seqs };
    if ((flag & 3) === 0) op.value = Buffer.from(w.values.subarray(w.valueOffsets[i], w.valueOffsets[i + 1]));
    if ((flag & 3) === OP_DELETE_PREFIX) this.absorbDeferredUnder(op);
    const d = this.deferred.get(key);
    if (d) {
      const newest = Math.max(...d.op.seqs);
      if (seqs[seqs.length - 1] <= newest) return undefined;
      op.seqs = [...new Set([...d.op.seqs, ...seqs])].sort((a, b) => a - b);
      this.deferred.delete(key);
    }
    return op;
  }

  private absorbDeferredUnder(op: Op): void {
    for (const [key, d] of this.deferred) {
      if (key.startsWith(op.key)) {
        op.seqs.push(...d.op.seqs);
        this.deferred.delete(key);
      }
    }
  }

  /** Sends one batch once its keys are free and a slot is available. */
  private async submit(ops: Op[]): Promise<void> {
    const waits = this.conflicts(ops);
    if (waits.size) await Promise.all(waits);
    while (this.inflight.size >= this.deps.limits.inFlight) await Promise.race(this.inflight);
    if (this.stopped()) return;
    const p = this.send(ops).finally(() => {
      this.inflight.delete(p);
      for (const op of ops) this.unlock(op, p);
    });
    this.inflight.add(p);
    for (const op of ops) this.lock(op, p);
  }

  private lock(op: Op, p: Promise<void>): void {
    if ((op.flag & 3) === OP_DELETE_PREFIX) {
      this.prefixLocks.set(op.key, p);
      return;
    }
    this.locks.set(op.key, p);
    for (const a of ancestors(op.key)) {
      let set = this.under.get(a);
      if (!set) this.under.set(a, (set = new Set()));
      set.add(p);
    }
  }

  private unlock(op: Op, p: Promise<void>): void {
    if ((op.flag & 3) === OP_DELETE_PREFIX) {
      if (this.prefixLocks.get(op.key) === p) this.prefixLocks.delete(op.key);
      return;
    }
    if (this.locks.get(op.key) === p) this.locks.delete(op.key);
    for (const a of ancestors(op.key)) {
      const set = this.under.get(a);
      set?.delete(p);
      if (set?.size === 0) this.under.delete(a);
    }
  }

  /**
   * In-flight batches `ops` must follow: those holding one of its keys, a
   * prefix delete covering one of them, or (for a prefix delete) any key under it.
   */
  private conflicts(ops: Op[]): Set<Promise<void>> {
    const waits = new Set<Promise<void>>();
    const prefixes = this.prefixLocks.size > 0;
    for (const op of ops) {
      if ((op.flag & 3) === OP_DELETE_PREFIX) {
        for (const p of this.under.get(op.key) ?? []) waits.add(p);
        const same = this.prefixLocks.get(op.key);
        if (same) waits.add(same);
      } else {
        const lock = this.locks.get(op.key);
        if (lock) waits.add(lock);
      }
      if (prefixes) {
        for (const a of ancestors(op.key)) {
          const p = this.prefixLocks.get(a);
          if (p) waits.add(p);
        }
      }
    }
    return waits;
  }

  private async send(ops: Op[]): Promise<void> {
    try {
      const revision = await fencedTxn(
        this.deps.client,
        this.fence,
        ops.map(toRequest),
        this.deps.limits.callTimeoutMs,
      );
      const seqs = ops.flatMap((o) => o.seqs);
      await this.deps.journal.remove(seqs);
      this.keys += ops.length;
      this.entries += seqs.length;
      this.deps.onEvent?.({ type: 'applied', keys: ops.length, entries: seqs.length, revision });
    } catch (err) {
      if (!(err instanceof EtcdRejectedError) || this.stopped()) {
        this.error ??= err;
        return;
      }
      if (ops.length > 1) {
        const mid = ops.length >> 1;
        await Promise.all([this.send(ops.slice(0, mid)), this.send(ops.slice(mid))]);
        return;
      }
      await this.failEntry(ops[0], err.message);
    }
  }

  private async failEntry(op: Op, error: string): Promise<void> {
    const { journal, limits, now, random, log, onEvent } = this.deps;
    const { attempts, dead } = await journal.fail(op.seqs, error, limits.maxAttempts);
    if (dead) {
      log.warn({ key: op.key, attempts, error }, 'entry dead-lettered');
      onEvent?.({ type: 'deadLettered', key: op.key, attempts, error });
      return;
    }
    const base = Math.min(limits.retryMaxMs, limits.retryBaseMs * 2 ** (attempts - 1));
    const retryInMs = Math.round(base / 2 + (random() * base) / 2);
    this.deferred.set(op.key, { op, dueAt: now() + retryInMs });
    log.info({ key: op.key, attempts, error, retryInMs }, 'entry failed');
    onEvent?.({ type: 'entryFailed', key: op.key, attempts, error, retryInMs });
  }
}

function toRequest(op: Op): IRequestOp {
  const key = Buffer.from(op.key);
  const kind = op.flag & 3;
  if (kind === OP_DELETE_PREFIX) return { request_delete_range: { key, range_end: prefixEnd(key) } };
  if (kind === OP_DELETE) return { request_delete_range: { key } };
  return { request_put: { key, value: op.value } };
}

