/**
 * The port registry's durable announcement records, over a real LMDB journal:
 * announcements are gathered and written together, and written at once when
 * the process stops leading or flushes (a stop), so the next leader, here or
 * in another process, announces nothing twice.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import type { Database } from 'lmdb';
import { Journal } from '../src/journal.ts';
import { PortRegistry } from '../src/port-registry.ts';
import type { PortFacts } from '../machines/port.ts';
import { tempDir } from './helpers/temp.ts';

type Record = [string, number, string];

const wired: PortFacts = { bindings: [{ host: 'h1', rev: 10 }], states: [] };
const active: PortFacts = { bindings: [{ host: 'h1', rev: 10 }], states: [{ host: 'h1', rev: 11, status: 'up' }] };
const gone: PortFacts = { bindings: [], states: [] };

let journal: Journal;
let notified: Database<Record, string>;
const registries: PortRegistry[] = [];

/** A registry that never writes by its own timer during a test: only follow() and flush() write. */
function registry(): { reg: PortRegistry; bound: string[]; unbound: string[] } {
  const reg = new PortRegistry({
    stallMs: 600_000,
    notified: notified as never,
    log: pino({ level: 'silent' }),
    now: Date.now,
    notifiedWriteMs: 600_000,
  });
  registries.push(reg);
  const bound: string[] = [];
  const unbound: string[] = [];
  reg.on('portBound', (e) => bound.push(e.port));
  reg.on('portUnbound', (e) => unbound.push(e.port));
  return { reg, bound, unbound };
}

/** The record on disk, read from a fresh snapshot. */
const onDisk = async (port: string): Promise<Record | undefined> => {
  await notified.flushed;
  notified.resetReadTxn();
  return notified.get(port);
};

beforeEach(() => {
  journal = Journal.open(tempDir('pw-registry-'));
  notified = journal.table<Record>('notified');
});
afterEach(async () => {
  for (const r of registries.splice(0)) {
    r.clear();
    await r.flush();
  }
  await journal.close();
});

describe('announcement records', () => {
  it('are gathered, then written at once when the process stops leading; the next leader announces nothing twice', async () => {
    const a = registry();
    await a.reg.lead();
    a.reg.apply('p1', wired);
    a.reg.apply('p1', active);
    a.reg.apply('p2', wired);
    a.reg.apply('p2', active);
    expect(a.bound).toEqual(['p1', 'p2']);
    // gathered, not written yet (its timer is far away)
    expect(await onDisk('p1')).toBeUndefined();

    a.reg.follow();
    expect(await onDisk('p1')).toEqual(['h1', 10, 'up']);
    expect(await onDisk('p2')).toEqual(['h1', 10, 'up']);

    // the next leader (as another process sharing the data directory would) knows both were announced
    const b = registry();
    b.reg.apply('p1', active);
    b.reg.apply('p2', active);
    await b.reg.lead();
    expect(b.bound).toEqual([]);
    expect(b.reg.port('p1')?.state).toBe('active');
  });

  it('a gathered removal wins over the written record, and a flush writes it', async () => {
    const a = registry();
    await a.reg.lead();
    a.reg.apply('p1', wired);
    a.reg.apply('p1', active);
    await a.reg.flush();
    expect(await onDisk('p1')).toEqual(['h1', 10, 'up']);

    a.reg.apply('p1', gone);
    expect(a.unbound).toEqual(['p1']);
    // the port comes back with the same binding before the removal is written: it is announced again
    a.reg.apply('p1', active);
    expect(a.bound).toEqual(['p1', 'p1']);
    a.reg.apply('p1', gone);
    await a.reg.flush();
    expect(await onDisk('p1')).toBeUndefined();
  });
});
