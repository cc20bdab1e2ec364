/**
 * The memory half of the `ports` scenario, in a fresh process run with
 * `--expose-gc`: `ports-memory-child.ts <endpoint> <prefix> <n> <dataDir>`. The
 * data directory is kept: a second run on it is a restart (every port's
 * announcement is already recorded).
 * Prints one JSON line (see `MemoryReport` in ports.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createActor } from 'xstate';
import { portMachine } from '../machines/port.ts';
import { createRuntime, type Runtime } from '../src/runtime.ts';

const [endpoint, prefix, nArg, keptDataDir] = process.argv.slice(2);
const n = Number(nArg);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

function settle(): { rss: number; heap: number } {
  for (let i = 0; i < 3; i++) gc!();
  return { rss: process.memoryUsage.rss(), heap: process.memoryUsage().heapUsed };
}

async function withRuntime(p: string, fn: (rt: Runtime) => Promise<void>, kept?: string): Promise<void> {
  const dataDir = kept ?? mkdtempSync(join(tmpdir(), 'pw-bench-mem-'));
  const rt = createRuntime({ etcd: { endpoints: [endpoint] }, prefix: p, dataDir, resync: { enabled: false }, forwarder: false });
  try {
    await rt.start();
    await fn(rt);
  } finally {
    await rt.stop();
    if (!kept) rmSync(dataDir, { recursive: true, force: true });
  }
}

const until = async (cond: () => boolean, what: string) => {
  const deadline = Date.now() + 120_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

let base = { rss: 0, heap: 0 };
await withRuntime(`${prefix}-empty`, async (rt) => {
  await until(() => rt.status().roles['return-watcher'].leader, 'leader (empty)');
  base = settle();
});
const report: Record<string, number> = {};
// a second runtime in the same process: the first one's modules and pool size are the baseline
await withRuntime(prefix, async (rt) => {
  const t0 = performance.now();
  await until(() => rt.status().roles['return-watcher'].leader && (rt.status().ports.states.active ?? 0) >= n, 'all ports active');
  const listMs = performance.now() - t0;
  const early = settle();
  if (process.env.PW_MEM_DEBUG) console.error('early', JSON.stringify(process.memoryUsage()));
  // steady state: V8 gives back the pages the initial list churned through once the process idles
  await new Promise((r) => setTimeout(r, 10_000));
  const s = settle();
  report.rssRightAfterList = early.rss;
  if (process.env.PW_MEM_DEBUG) console.error(JSON.stringify(process.memoryUsage()), JSON.stringify(base));
  const st = rt.status().ports;
  Object.assign(report, {
    ports: n,
    tracked: st.total,
    active: st.states.active ?? 0,
    liveActors: st.liveActors,
    listMs,
    baseRss: base.rss,
    baseHeap: base.heap,
    rss: s.rss,
    heap: s.heap,
  });
}, keptDataDir);
// what 20,000 live actors of an active port would cost without passivation
const before = settle().heap;
const actors = Array.from({ length: 20_000 }, (_, i) => {
  const a = createActor(portMachine, {
    input: {
      portId: `p-${i}`,
      facts: { bindings: [{ host: 'compute-001', rev: i + 1 }], states: [{ host: 'compute-001', rev: i + 2, status: 'up' as const }] },
      stallMs: 30_000,
      notified: { host: 'compute-001', rev: i + 1 },
      status: 'up' as const,
    },
  });
  a.subscribe({ error: () => undefined });
  return a.start();
});
report.actorHeapPerActor = (settle().heap - before) / actors.length;
for (const a of actors) a.stop();
console.log(JSON.stringify(report));
