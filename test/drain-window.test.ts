/**
 * The drain window over a real LMDB journal: per-key coalescing, prefix
 * deletes, batch limits by ops and bytes, and oversize flags.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';


import { Journal } from '../src/journal.ts';
import drainWindow, { OP_DELETE, OP_DELETE_PREFIX, OP_OVERSIZE, OP_PUT, type DrainWindow } from '../src/drain-window.ts';
import { createPool } from '../src/pool.ts';
import { tempDir } from './helpers/temp.ts';

let dir: string;
let journal: Journal;

beforeEach(() => {
  dir = tempDir('pw-window-');
  journal = Journal.open(dir);
});
afterEach(async () => {
  await journal.close();
});

const task = (over: Partial<Parameters<typeof drainWindow>[0]> = {}) => ({
  kind: 'drainWindow' as const,
  path: journal.path,
  afterSeq: 0,
  maxEntries: 1000,
  maxOps: 128,
  maxBytes: 1 << 20,
  maxOpBytes: 1 << 20,
  ...over,
});

/** The window's ops as readable records. */
function ops(w: DrainWindow) {
  return w.keys.map((key, i) => ({
    key,
    flag: w.flags[i],
    value: w.flags[i] & 3 ? undefined : Buffer.from(w.values.subarray(w.valueOffsets[i], w.valueOffsets[i + 1])).toString(),
    seqs: Array.from(w.seqs.subarray(w.seqOffsets[i], w.seqOffsets[i + 1])),
  }));
}

describe('drain window', () => {
  it('coalesces per key, last write wins, keeping every seq', async () => {
    await journal.append([
      { key: '/p/a', value: { v: 1 } },
      { key: '/p/b', value: { v: 1 } },
      { key: '/p/a', value: { v: 2 } },
      { key: '/p/b', value: null },
    ]);
    const w = drainWindow(task());
    expect(w.entries).toBe(4);
    expect(w.lastSeq).toBe(4);
    expect(ops(w)).toEqual([
      { key: '/p/a', flag: OP_PUT, value: '{"v":2}', seqs: [1, 3] },
      { key: '/p/b', flag: OP_DELETE, value: undefined, seqs: [2, 4] },
    ]);
  });

  it('reads after the cursor and at most maxEntries', async () => {
    await journal.append(Array.from({ length: 10 }, (_, i) => ({ key: `/p/${i}`, value: i })));
    const w = drainWindow(task({ afterSeq: 3, maxEntries: 4 }));
    expect(ops(w).map((o) => o.key)).toEqual(['/p/3', '/p/4', '/p/5', '/p/6']);
    expect(w.lastSeq).toBe(7);
  });

  it('a prefix delete supersedes earlier keys under it; a later key under it ends the window', async () => {
    await journal.append([
      { key: '/g/dir/1', value: 'x' },
      { key: '/other', value: 'y' },
      { key: '/g/dir/2', value: null },
      { key: '/g/dir/', value: null, prefix: true },
      { key: '/another', value: 'z' },
      { key: '/g/dir/3', value: 'new' },
      { key: '/after', value: 'w' },
    ]);
    const w = drainWindow(task());
    expect(w.lastSeq).toBe(5);
    expect(ops(w)).toEqual([
      { key: '/other', flag: OP_PUT, value: '"y"', seqs: [2] },
      { key: '/another', flag: OP_PUT, value: '"z"', seqs: [5] },
      { key: '/g/dir/', flag: OP_DELETE_PREFIX, value: undefined, seqs: [4, 1, 3] },
    ]);
    const next = drainWindow(task({ afterSeq: w.lastSeq }));
    expect(ops(next).map((o) => o.key)).toEqual(['/g/dir/3', '/after']);
  });

  it('cuts batches by op count and by bytes, and flags an op too large for one request', async () => {
    const big = 'x'.repeat(3000);
    await journal.append([
      ...Array.from({ length: 5 }, (_, i) => ({ key: `/k/${i}`, value: 1 })),
      { key: '/k/big1', value: big },
      { key: '/k/big2', value: big },
      { key: '/k/huge', value: 'y'.repeat(10_000) },
    ]);
    const w = drainWindow(task({ maxOps: 3, maxBytes: 4000, maxOpBytes: 8000 }));
    const batches = [];
    for (let b = 0; b + 1 < w.batchStarts.length; b++) batches.push(w.keys.slice(w.batchStarts[b], w.batchStarts[b + 1]));
    expect(batches).toEqual([['/k/0', '/k/1', '/k/2'], ['/k/3', '/k/4', '/k/big1'], ['/k/big2'], ['/k/huge']]);
    expect(ops(w).filter((o) => o.flag & OP_OVERSIZE).map((o) => o.key)).toEqual(['/k/huge']);
  });

  it('an empty journal gives an empty window', () => {
    const w = drainWindow(task());
    expect(w.entries).toBe(0);
    expect(w.keys).toEqual([]);
    expect(Array.from(w.batchStarts)).toEqual([0]);
  });

  it('the main thread prepares the same window from its own handle', async () => {
    await journal.append([
      { key: '/p/a', value: { v: 1 } },
      { key: '/p/', value: null, prefix: true },
      { key: '/q/b', value: { v: 2 } },
      { key: '/q/b', value: { v: 3 } },
    ]);
    for (const t of [task(), task({ afterSeq: 1, maxEntries: 2 }), task({ maxOps: 1 })]) {
      expect(ops(journal.drainWindow(t))).toEqual(ops(drainWindow(t)));
    }
  });

  it("a pool worker's window sees every append made before the task, however soon after its last one", async () => {
    // lmdb-js keeps a thread's read snapshot until a timer tick: without a fresh one, about half were stale here
    const pool = createPool({ size: 1 });
    try {
      const stale: number[] = [];
      for (let i = 1; i <= 100; i++) {
        await journal.append([{ key: `/k/${i}`, value: i }]);
        const w = (await pool.run(task({ afterSeq: i - 1 }))) as DrainWindow;
        if (w.entries !== 1) stale.push(i);
      }
      expect(stale).toEqual([]);
    } finally {
      await pool.destroy();
    }
  });
});

describe('journal', () => {
  it('the desired state is the acknowledged values overlaid by dead letters and waiting entries', async () => {
    await journal.append([
      { key: '/g/d/1', value: 1 },
      { key: '/g/d/2', value: 2 },
      { key: '/g/e', value: 3 },
    ]);
    expect(journal.desiredEntries('/g/')).toEqual([['/g/d/1', '1'], ['/g/d/2', '2'], ['/g/e', '3']]);
    await journal.applied([[1], [2]]);
    await journal.append([{ key: '/g/d/', value: null, prefix: true }, { key: '/g/d/3', value: 33 }]);
    expect(journal.desiredEntries('/g/')).toEqual([['/g/d/3', '33'], ['/g/e', '3']]);
    expect(journal.desiredJson('/g/d/1')).toBeUndefined();
    expect(journal.desiredJson('/g/d/3')).toBe('33');
    // /g/e fails for good: still desired (a dead letter), until a newer value is applied
    await journal.fail([3], 'boom', 1);
    expect(journal.desiredJson('/g/e')).toBe('3');
    await journal.append([{ key: '/g/e', value: 4 }]);
    expect(journal.desiredJson('/g/e')).toBe('4');
    await journal.applied([[6]]);
    expect(journal.deadLetters()).toEqual([]);
    expect(journal.desiredEntries('/g/')).toEqual([['/g/d/3', '33'], ['/g/e', '4']]);
  });

  it('dead-letters after max attempts and re-queues the current desired value', async () => {
    await journal.append([{ key: '/k', value: 'old' }]);
    expect(await journal.fail([1], 'boom', 2)).toEqual({ attempts: 1, dead: false });
    expect(await journal.fail([1], 'boom', 2)).toEqual({ attempts: 2, dead: true });
    expect(journal.depth()).toBe(0);
    expect(journal.deadLetters()).toMatchObject([{ key: '/k', value: '"old"', attempts: 2, error: 'boom', seqs: [1] }]);
    await journal.append([{ key: '/k', value: 'new' }]);
    expect(await journal.retryDead()).toBe(1);
    expect(journal.deadLetters()).toEqual([]);
    expect(journal.read(0, 10).map((r) => r.entry.v)).toEqual(['"new"', '"new"']);
  });

  it('is fenced like etcd: after a newer term claims it, a deposed term can neither remove nor dead-letter', async () => {
    await journal.append([{ key: '/k', value: 1 }, { key: '/j', value: 2 }]);
    await journal.claimDrain('7');
    await journal.claimDrain('9');
    expect(await journal.applied([[1]], '7')).toBe(false);
    expect(await journal.fail([2], 'boom', 1, '7')).toEqual({ attempts: 0, dead: false, fenced: true });
    expect(journal.depth()).toBe(2);
    expect(journal.deadLetters()).toEqual([]);
    expect(await journal.applied([[1]], '9')).toBe(true);
    expect(journal.depth()).toBe(1);
  });
});
