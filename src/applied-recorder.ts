/**
 * Records what etcd acknowledged, for the drainer: acknowledged entries leave
 * the journal and their values become the applied state in `applied` pool
 * tasks (see `apply-applied.ts`).
 *
 * Acknowledgements are gathered and recorded in one LMDB write transaction
 * once `maxEntries` are gathered, once none came for `quietMs`, or once the
 * oldest waited `maxAgeMs`: at a steady trickle of binds a drain round holds a
 * handful of entries, and a write transaction (and fsync) per round would
 * compete with the appends for LMDB's single writer. Until recorded, entries
 * stay in the journal past the drainer's cursor; a new leader would resend
 * them, which is idempotent.
 *
 * Recordings are chained: one lands before the next starts, so a key's applied
 * value never goes back to an older one. A refused recording (the journal was
 * claimed by a newer term) is kept in `error`.
 *
 * States: idle (nothing gathered) → gathering (a timer armed) → idle on
 * flush; `settle()` flushes at once and waits for the chain.
 */
import type { Piscina } from 'piscina';
import type { AppliedTask } from './apply-applied.ts';
import { NotLeaderError } from './errors.ts';

/** Timers as the recorder uses them (injected for tests). */
export interface RecorderTimers {
  setTimeout: (fn: () => void, ms: number) => unknown;
  clearTimeout: (handle: unknown) => void;
}

/** Dependencies of an {@link AppliedRecorder}. */
export interface AppliedRecorderDeps {
  pool: Piscina;
  /** Path of the journal's LMDB environment. */
  path: string;
  /** Record once no acknowledgement came for this long, ms. */
  quietMs: number;
  /** Record once the oldest gathered acknowledgement waited this long, ms. */
  maxAgeMs: number;
  now: () => number;
  /** Entries that trigger a recording at once. */
  maxEntries: number;
  /** Called once a recording landed, with its entry count. */
  onRecorded?: (entries: number) => void;
  timers?: RecorderTimers;
}

const realTimers: RecorderTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** Gathers acknowledged entries and records them in batches. See the module comment. */
export class AppliedRecorder {
  /** The first refusal of a recording, until taken by {@link takeError}. */
  error: unknown;
  private chain: Promise<void> = Promise.resolve();

  /** The refusal kept in {@link error}, cleared. */
  takeError(): unknown {
    const err = this.error;
    this.error = undefined;
    return err;
  }
  private groups: (readonly number[])[] = [];
  private entries = 0;
  private token: string | undefined;
  private timer: unknown;
  private firstAt = 0;
  private lastAt = 0;
  private readonly timers: RecorderTimers;

  constructor(private readonly deps: AppliedRecorderDeps) {
    this.timers = deps.timers ?? realTimers;
  }

  /** Entries gathered and not yet handed to a recording. */
  get gathered(): number {
    return this.entries;
  }

  /**
   * Adds the seqs of acknowledged ops (one group per coalesced key) of the
   * term `token`. Acknowledgements of an earlier term are recorded first.
   */
  add(token: string, groups: readonly (readonly number[])[]): void {
    if (this.token !== undefined && this.token !== token) this.flush();
    this.token = token;
    const now = this.deps.now();
    if (this.entries === 0) this.firstAt = now;
    this.lastAt = now;
    for (const g of groups) {
      this.groups.push(g);
      this.entries += g.length;
    }
    if (this.entries >= this.deps.maxEntries) this.flush();
    else if (this.timer === undefined && this.entries > 0) this.arm(this.deps.quietMs);
  }

  /** Checks after `ms` whether the gathered acknowledgements are due (quiet or old enough). */
  private arm(ms: number): void {
    this.timer = this.timers.setTimeout(() => {
      this.timer = undefined;
      const now = this.deps.now();
      const quietIn = this.lastAt + this.deps.quietMs - now;
      const oldIn = this.firstAt + this.deps.maxAgeMs - now;
      if (quietIn <= 0 || oldIn <= 0) this.flush();
      else this.arm(Math.min(quietIn, oldIn));
    }, ms);
  }

  /** Records what was gathered now, chained after the recordings before it. */
  flush(): void {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    if (this.groups.length === 0 || this.token === undefined) return;
    const seqs = new Float64Array(this.entries);
    const seqOffsets = new Uint32Array(this.groups.length + 1);
    let n = 0;
    this.groups.forEach((group, i) => {
      for (const s of group) seqs[n++] = s;
      seqOffsets[i + 1] = n;
    });
    this.groups = [];
    this.entries = 0;
    const task: AppliedTask = { kind: 'applied', path: this.deps.path, token: this.token, seqs, seqOffsets };
    const refused = (err: unknown) => {
      this.error ??= err;
    };
    this.chain = this.chain.then(() =>
      this.deps.pool.run(task).then((res) => {
        if (!(res as { ok: boolean }).ok) refused(new NotLeaderError('the journal was claimed by a newer term'));
        else this.deps.onRecorded?.(seqs.length);
      }, refused),
    );
  }

  /** Records what was gathered and resolves once every recording so far has landed or been refused. */
  settle(): Promise<void> {
    this.flush();
    return this.chain;
  }
}
