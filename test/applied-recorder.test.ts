/**
 * The recorder of acknowledged entries, over a real LMDB journal and a real
 * pool, with its timers and clock driven by the test: when it records (quiet,
 * age, size, settle), and that a term's acknowledgements are recorded under
 * its own token, so a deposed term's are refused.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Piscina } from 'piscina';
import { AppliedRecorder, type RecorderTimers } from '../src/applied-recorder.ts';
import { NotLeaderError } from '../src/errors.ts';
import { Journal } from '../src/journal.ts';
import { createPool } from '../src/pool.ts';
import { tempDir } from './helpers/temp.ts';

/** Timers and a clock that move only when the test says so. */
class ManualTime implements RecorderTimers {
  now = 1_000;
  private next = 1;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();
  setTimeout = (fn: () => void, ms: number): unknown => {
    const id = this.next++;
    this.pending.set(id, { at: this.now + ms, fn });
    return id;
  };
  clearTimeout = (handle: unknown): void => void this.pending.delete(handle as number);
  get armed(): number {
    return this.pending.size;
  }
  /** Moves the clock by `ms`, firing what falls due in time order. */
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      const due = [...this.pending].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.pending.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = until;
  }
}

let pool: Piscina;
let dir: string;
let journal: Journal;
let time: ManualTime;
let recorded: number[];

beforeAll(() => {
  pool = createPool({ size: 1 });
});
afterAll(async () => {
  await pool.destroy();
});
beforeEach(async () => {
  dir = tempDir('pw-recorder-');
  journal = Journal.open(dir);
  time = new ManualTime();
  recorded = [];
  await journal.append(Array.from({ length: 30 }, (_, i) => ({ key: `/t/k${i}`, value: { v: i } })));
  await journal.claimDrain('term-a');
});
afterEach(async () => {
  await journal.close();
});

function recorder(over: { maxEntries?: number } = {}): AppliedRecorder {
  return new AppliedRecorder({
    pool,
    path: journal.path,
    quietMs: 20,
    maxAgeMs: 200,
    maxEntries: over.maxEntries ?? 1000,
    now: () => time.now,
    timers: time,
    onRecorded: (n) => recorded.push(n),
  });
}

/** Seqs still in the journal. */
const waiting = () => journal.read(0, 100).map((e) => e.seq);
/** The seqs `from` .. `to`. */
const seqs = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('AppliedRecorder', () => {
  it('records once no acknowledgement came for quietMs, in one transaction', async () => {
    const r = recorder();
    r.add('term-a', [[1], [2]]);
    time.advance(10);
    r.add('term-a', [[3]]);
    time.advance(19);
    // 19 ms after the last one: not quiet yet, nothing handed to a recording
    expect(r.gathered).toBe(3);
    time.advance(1);
    expect(r.gathered).toBe(0);
    await r.settle();
    expect(recorded).toEqual([3]);
    expect(waiting()).toEqual(seqs(4, 30));
    expect(journal.desiredValue('/t/k0')).toEqual({ v: 0 });
    expect(r.error).toBeUndefined();
  });

  it('an unbroken stream of acknowledgements is recorded once the oldest waited maxAgeMs', async () => {
    const r = recorder();
    // one acknowledgement every 15 ms: never quiet for 20 ms
    for (let seq = 1; seq <= 20; seq++) {
      r.add('term-a', [[seq]]);
      time.advance(15);
    }
    expect(r.gathered).toBe(6);
    await r.settle();
    // the first 14 came within 200 ms of the first; the rest were recorded by settle()
    expect(recorded).toEqual([14, 6]);
    expect(waiting()).toEqual(seqs(21, 30));
  });

  it('records at once when maxEntries are gathered, and settle() records the rest at once', async () => {
    const r = recorder({ maxEntries: 4 });
    r.add('term-a', [[1, 2], [3, 4]]);
    expect(r.gathered).toBe(0);
    expect(time.armed).toBe(0);
    r.add('term-a', [[5]]);
    expect(time.armed).toBe(1);
    await r.settle();
    expect(time.armed).toBe(0);
    expect(recorded).toEqual([4, 1]);
    expect(waiting()).toEqual(seqs(6, 30));
  });

  it("a deposed term's acknowledgements are refused; the new term's are recorded", async () => {
    const r = recorder();
    r.add('term-a', [[1]]);
    await journal.claimDrain('term-b');
    r.add('term-b', [[2]]);
    await r.settle();
    expect(r.error).toBeInstanceOf(NotLeaderError);
    expect(recorded).toEqual([1]);
    expect(waiting()).toEqual([1, ...seqs(3, 30)]);
  });
});
