/**
 * One drain of the journal into etcd, run by the forwarder while it leads.
 *
 * Windows are prepared in the pool (read, coalesce, encode, batch: see
 * `drain-window.ts`), the next one while the current one is sent; a window of
 * a few entries is prepared on the main thread. Batches go out as fenced
 * txns, several in flight; a batch waits for any in-flight batch holding one
 * of its keys, so a key's values reach etcd in journal order.
 * A run goes on in rounds while appends keep landing, and waits `lingerMs`
 * for more before it ends (no new run, and no forwarder event, per append):
 * {@link Drainer.takesAppends} tells the runtime a run in progress will read
 * the journal again (for a second at most: then the forwarder starts another
 * run, so its figures move). Entries leave the journal only after their txn was
 * acknowledged, recorded in batches (`applied-recorder.ts`).
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
import { EtcdRejectedError, EtcdUnavailableError, NotLeaderError, PortwireError } from './errors.ts';
import { fencedTxn, prefixEnd, renewEpoch, type Fence } from './etcd.ts';
import type { Journal } from './journal.ts';
import { AppliedRecorder } from './applied-recorder.ts';
import type { SigningMaterial } from './jws.ts';

import {
  ancestors,
  OP_DELETE,
  OP_DELETE_PREFIX,
  OP_OVERSIZE,
  type DrainWindow,
  type DrainWindowTask,
} from './drain-window.ts';

/**
 * A window of at most this many entries is read on the main thread: posting a
 * pool task costs more than reading a few entries (at a trickle of appends,
 * most rounds read one or two).
 */
const INLINE_WINDOW_ENTRIES = 32;
/**
 * An entry appended this long ago, ms, is drained even when its writer has
 * not said it is on disk (see `Journal.durableSeq`): the writer crashed before
 * its kick, and the system has long written what it committed.
 */
const AGED_MS = 1000;
/**
 * A run takes appends (see {@link Drainer.takesAppends}) for this long, ms;
 * then the next append wakes the forwarder, which starts another run once
 * this one ended: under a steady stream of binds the forwarder's figures (and
 * the inspector's view of them) move at least this often.
 */
const RUN_TAKES_APPENDS_MS = 1000;
/** Acknowledged entries that are recorded at once, in one transaction (see `applied-recorder.ts`). */
const RECORD_MAX_ENTRIES = 65536;
/** Acknowledged entries are recorded once none came for this long, ms ... */
const RECORD_QUIET_MS = 20;
/** ... or once the oldest waited this long, ms. */
const RECORD_MAX_AGE_MS = 200;

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
  /**
   * How long a run that found the journal drained waits for another append
   * (see {@link Drainer.takesAppends}) before it ends, ms: at a steady trickle
   * of binds the run goes on, instead of a new run (a forwarder transition and
   * a promise actor) per append.
   */
  lingerMs: number;
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
  | { type: 'deadLettered'; key: string; attempts: number; error: string }
  | { type: 'recorded'; entries: number };

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
  /** the key's UTF-8 bytes */
  keyBuf: Buffer;
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
  /** Sign every value written (see `jws.ts`). @default off */
  signing?: SigningMaterial;
}

/** Drains the journal into etcd under a fence. See the module comment. */
export class Drainer {
  private cursor = 0;
  private claimed: string | undefined;
  private readonly deferred = new Map<string, Deferred>();
  /** Mod revision of the election key this term's txns are fenced on; renewed after an unknown outcome. */
  private epoch: string | undefined;
  /** Records acknowledged entries in batches; outlives the runs that feed it. */
  private readonly recorder: AppliedRecorder;
  /** The run in progress. */
  private run?: DrainRun;

  constructor(private readonly deps: DrainerDeps) {
    this.recorder = new AppliedRecorder({
      pool: deps.pool,
      path: deps.journal.path,
      quietMs: RECORD_QUIET_MS,
      maxAgeMs: RECORD_MAX_AGE_MS,
      now: deps.now,
      maxEntries: RECORD_MAX_ENTRIES,
      onRecorded: (entries) => deps.onEvent?.({ type: 'recorded', entries }),
    });
  }

  /** Forgets the cursor and deferrals (a new leadership term starts from the journal's head). */
  private reset(): void {
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
    if (fence.token !== this.claimed) {
      // a new term: the last term's recordings land (or are refused) first, then claim the journal's head
      await this.idle();
      this.recorder.takeError();
      this.reset();
      await this.deps.journal.claimDrain(fence.token);
      this.claimed = fence.token;
      this.epoch = undefined;
    }
    if (this.recorder.error !== undefined) {
      // a recording of this term was refused: the journal was claimed by a newer term
      await this.idle();
      const err = this.recorder.takeError();
      this.cursor = 0;
      throw err;
    }
    // txns of an earlier run whose outcome is unknown may still land: a new epoch fences them out
    this.epoch ??= await renewEpoch(this.deps.client, fence, this.deps.limits.callTimeoutMs);
    const run = new DrainRun(this.deps, { ...fence, epoch: this.epoch }, this.deferred, this.recorder, signal);
    this.run = run;
    // once the run has decided to end (or failed) it takes no more appends: it is let go at once
    const ran = run.execute(this.cursor).finally(() => {
      if (this.run === run) this.run = undefined;
    });
    try {
      this.cursor = await ran;
    } catch (err) {
      // the next run reads from the head again: what was acknowledged must have left the journal by then,
      // or a window cut between two acknowledged values of a key would send the older one again
      await this.idle();
      this.cursor = 0;
      if (err instanceof EtcdUnavailableError) this.epoch = undefined;
      throw err;
    }
    let retryInMs: number | undefined;
    const now = this.deps.now();
    for (const d of this.deferred.values()) {
      retryInMs = Math.min(retryInMs ?? Infinity, Math.max(0, d.dueAt - now));
    }
    return { keys: run.keys, entries: run.entries, retryInMs };
  }

  /**
   * Called after an append was made durable: true when the run in progress
   * takes it (it reads the journal again before it ends), so the forwarder
   * need not be woken; false when a wake-up is needed.
   */
  takesAppends(): boolean {
    return this.run?.takeAppends() ?? false;
  }

  /** Records the acknowledged entries gathered so far; resolves once every recording has landed or been refused. */
  idle(): Promise<void> {
    return this.recorder.settle();
  }
}

class DrainRun {
  keys = 0;
  entries = 0;
  private error: unknown;
  private readonly inflight = new Set<Promise<void>>();
  private windowSize = 256;
  private readonly startedAt: number;
  /** An append was taken since the round began: another round reads it. */
  private appended = false;
  /** Ends a linger early (an append was taken, or the run aborted). */
  private wake?: () => void;
  private readonly locks = new Map<string, Promise<void>>();
  private readonly prefixLocks = new Map<string, Promise<void>>();

  constructor(
    private readonly deps: DrainerDeps,
    private readonly fence: Fence,
    private readonly deferred: Map<string, Deferred>,
    private readonly recorder: AppliedRecorder,
    private readonly signal?: AbortSignal,
  ) {
    this.startedAt = deps.now();
  }

  async execute(cursor: number): Promise<number> {
    // rounds until the journal holds nothing past the cursor: appends that land while a round's
    // txns are in flight are taken by the next round, without a new run (and a new kick) per append
    for (;;) {
      this.appended = false;
      await this.sendDue();
      const first = await this.read(cursor);
      let window = first;
      while (window.entries > 0 && !this.stopped()) {
        // the next window is read while this one is sent, unless the journal held nothing more
        const next = this.deps.journal.durableSeq() > window.lastSeq ? this.read(window.lastSeq) : undefined;
        next?.catch(() => undefined);
        await this.sendWindow(window);
        cursor = window.lastSeq;
        if (!next) break;
        window = await next;
      }
      await Promise.all(this.inflight);
      if (this.stopped()) break;
      // appends taken since the round began: read them
      if (this.appended) continue;
      // an old run takes no appends: the forwarder was woken for every one since, and starts another run
      if (this.old()) break;
      if (first.entries === 0 || this.deps.journal.durableSeq() <= cursor) {
        await this.linger();
        if (!this.appended || this.stopped()) break;
      }
    }
    this.error ??= this.recorder.error;
    if (this.error) throw this.error;
    if (this.signal?.aborted) throw new PortwireError('drain aborted');
    return cursor;
  }

  /** See {@link Drainer.takesAppends}. */
  takeAppends(): boolean {
    if (this.stopped()) return false;
    const taken = !this.old();
    if (taken) this.appended = true;
    // a lingering run reads the append, or (old) ends now and the forwarder's next run takes it
    this.wake?.();
    return taken;
  }

  /** True once the run no longer takes appends: it ends after the round that reads the last one it took. */
  private old(): boolean {
    return this.deps.now() - this.startedAt >= RUN_TAKES_APPENDS_MS;
  }

  /** Waits up to `lingerMs` for an append taken by {@link takeAppends}. */
  private linger(): Promise<void> {
    if (this.deps.limits.lingerMs <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.signal?.removeEventListener('abort', done);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, this.deps.limits.lingerMs);
      this.signal?.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
  }

  private stopped(): boolean {
    return this.error !== undefined || this.recorder.error !== undefined || this.signal?.aborted === true;
  }

  private async read(afterSeq: number): Promise<DrainWindow> {
    const { limits, pool, journal } = this.deps;
    // small first windows start the pipeline fast; they double up to the limit
    this.windowSize = Math.min(limits.windowEntries, this.windowSize * 2);
    const durableSeq = journal.durableSeq();
    const task: DrainWindowTask = {
      kind: 'drainWindow',
      path: journal.path,
      afterSeq,
      maxEntries: this.windowSize,
      maxOps: limits.maxOps,
      maxBytes: Math.min(limits.maxTxnBytes, limits.maxRequestBytes - 1024),
      maxOpBytes: limits.maxRequestBytes - 512,
      durableSeq,
      agedBefore: this.deps.now() - AGED_MS,
    };
    if (this.deps.signing) {
      task.signing = this.deps.signing;
    } else if (durableSeq - afterSeq <= INLINE_WINDOW_ENTRIES) {
      // appends that land meanwhile wait for the next window
      task.maxEntries = Math.min(task.maxEntries, INLINE_WINDOW_ENTRIES);
      return journal.drainWindow(task);
    }
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
      // let responses and host calls in between batches: keeps the event loop responsive
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Builds op `i`; merges or skips a deferred entry of the same key. */
  private opAt(w: DrainWindow, i: number): Op | undefined {
    const key = w.keys[i];
    const seqs = Array.from(w.seqs.subarray(w.seqOffsets[i], w.seqOffsets[i + 1]));
    const flag = w.flags[i];
    const keyBuf = view(w.keyBytes, w.keyOffsets[i], w.keyOffsets[i + 1]);
    const op: Op = { key, keyBuf, flag, seqs };
    if ((flag & 3) === 0) op.value = view(w.values, w.valueOffsets[i], w.valueOffsets[i + 1]);
    if ((flag & 3) === OP_DELETE_PREFIX) this.absorbDeferredUnder(op);
    const d = this.deferred.get(key);
    if (d) {
      const newest = Math.max(...d.op.seqs);
      if (Math.max(...seqs) <= newest) return undefined;
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
    ((op.flag & 3) === OP_DELETE_PREFIX ? this.prefixLocks : this.locks).set(op.key, p);
  }

  private unlock(op: Op, p: Promise<void>): void {
    const locks = (op.flag & 3) === OP_DELETE_PREFIX ? this.prefixLocks : this.locks;
    if (locks.get(op.key) === p) locks.delete(op.key);
  }

  /**
   * In-flight batches `ops` must follow: those holding one of its keys, a
   * prefix delete covering one of them, or (for a prefix delete) any key or
   * prefix under it. Prefix deletes are rare: they scan the locks.
   */
  private conflicts(ops: Op[]): Set<Promise<void>> {
    const waits = new Set<Promise<void>>();
    for (const op of ops) {
      if ((op.flag & 3) === OP_DELETE_PREFIX) {
        for (const [key, p] of this.locks) if (key.startsWith(op.key)) waits.add(p);
        for (const [key, p] of this.prefixLocks) if (key.startsWith(op.key) || op.key.startsWith(key)) waits.add(p);
        continue;
      }
      const lock = this.locks.get(op.key);
      if (lock) waits.add(lock);
      if (this.prefixLocks.size > 0) {
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
      let entries = 0;
      for (const o of ops) entries += o.seqs.length;
      this.recorder.add(this.fence.token, ops.map((o) => o.seqs));
      this.keys += ops.length;
      this.entries += entries;
      this.deps.onEvent?.({ type: 'applied', keys: ops.length, entries, revision });
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
    const { attempts, dead, fenced } = await journal.fail(op.seqs, error, limits.maxAttempts, this.fence.token);
    if (fenced) {
      this.error ??= new NotLeaderError('the journal was claimed by a newer term');
      return;
    }
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

/** A Buffer view of `bytes[from, to)`, without copying. */
function view(bytes: Uint8Array, from: number, to: number): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset + from, to - from);
}

function toRequest(op: Op): IRequestOp {
  const key = op.keyBuf;
  const kind = op.flag & 3;
  if (kind === OP_DELETE_PREFIX) return { request_delete_range: { key, range_end: prefixEnd(key) } };
  if (kind === OP_DELETE) return { request_delete_range: { key } };
  return { request_put: { key, value: op.value } };
}

