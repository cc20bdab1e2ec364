/**
 * Cross-process kicks through the data directory's kick file: an append wakes
 * the forwarders of the other processes, unless this process's own forwarder
 * leads (then the file is left alone).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Journal } from '../src/journal.ts';
import { tempDir } from './helpers/temp.ts';

let dir: string;
let writer: Journal;
let other: Journal;

beforeEach(() => {
  dir = tempDir('pw-kick-');
  writer = Journal.open(dir);
  other = Journal.open(dir);
});
afterEach(async () => {
  await writer.close();
  await other.close();
});

/** Resolves after the event-loop turn in which a kick is written. */
const afterKickTurn = () => new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));
const kickFile = () => readFileSync(join(dir, 'kick'), 'utf8').trim();

describe('journal kicks', () => {
  it("an append wakes another journal's listener and leaves the last seq in the kick file", async () => {
    const woken = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no kick within 5 s')), 5_000);
      const off = other.onKick(() => {
        clearTimeout(timer);
        off();
        resolve();
      });
    });
    const seq = await writer.append([{ key: '/k/a', value: 1 }]);
    await woken;
    await afterKickTurn();
    expect(kickFile()).toBe(String(seq));
  });

  it('while this process drains locally, appends write no kick file', async () => {
    other.onKick(() => undefined);
    const first = await writer.append([{ key: '/k/a', value: 1 }]);
    await afterKickTurn();
    expect(kickFile()).toBe(String(first));
    writer.setDrainsLocally(true);
    await writer.append([{ key: '/k/b', value: 2 }]);
    await afterKickTurn();
    expect(kickFile()).toBe(String(first));
    writer.setDrainsLocally(false);
    const third = await writer.append([{ key: '/k/c', value: 3 }]);
    await afterKickTurn();
    expect(kickFile()).toBe(String(third));
  });
});
