/**
 * The `resync` scenario (issue 5): in one run, on one private etcd,
 *
 *  setup: N port binds (realistic values, 20 hosts, no security group, so
 *      one key each) journaled through `rt.bindPort` and drained by a runtime
 *      without the resync role; then a second runtime opens the same data
 *      directory with the resync role (interval of a day: only on-demand
 *      runs after the one it makes when it gains leadership, which must find
 *      nothing to do); then 1% drift written with an independent plain
 *      `etcd3` client, spread evenly over the key space: missing keys
 *      (deleted), changed keys (another segmentation id) and extra keys
 *      (bindings of ports nobody desires);
 *  (a) alone: the raw read below, 3 times back to back, for comparison;
 *  where the time goes: the parts of a run measured one by one on the same
 *      drifted data with the project's own functions (snapshot read, packing
 *      the columns, desired-state read from LMDB, the diff, the task through
 *      a pool worker, the task's copy to a worker and back, and the repairs
 *      replayed directly with the leader's fence), medians of 3;
 *  then 3 rounds of, back to back:
 *  (a) the raw time to read the whole owned prefix (`<prefix>/nodes/` then
 *      `<prefix>/global/`, one pinned revision) with `readPrefixAt`, the
 *      project's client (`createEtcdClient`) and pages of 10,000 — the
 *      physical limit of a resync;
 *  (c) a dry run (`rt.resync({ dryRun: true })`) on the drifted data: the same
 *      read and diff as (b), no writes;
 *  (b) the repair run (`rt.resync()`): report.durationMs and wall clock,
 *      with this process's RSS sampled every 50 ms. The report must count the
 *      drift exactly (repaired = drift, no conflict, nothing skipped), and an
 *      independent read afterwards must find exactly the desired keys and
 *      values; then the same drift is written again for the next round.
 *  The runs (c) and (b) are split at the runtime's own `resyncDiff` pool task
 *  (see {@link tracePoolTasks}). A final dry run must find nothing. Figures
 *  are the medians of the 3 rounds.
 *
 * Targets: (b) ≤ 2 × (a) — (a) of the rounds, read at the same moment and
 * with the same heap as (b) — and (b) < 5 s; the ratio against (a) alone is
 * printed beside it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { isDeepStrictEqual } from 'node:util';
import { Etcd3, type ICompare, type IRequestOp } from 'etcd3';
import { Piscina } from 'piscina';
import { pino } from 'pino';
import { createEtcdClient, deadline, fencedTxn, probeMaxTxnOps, readPrefixAt, type KeyValue } from '../src/etcd.ts';
import { Journal } from '../src/journal.ts';
import { keyLayout, type KeyLayout } from '../src/keys.ts';
import { startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import { bindingValue, vifType } from '../src/mech.ts';
import { createPool } from '../src/pool.ts';
import resyncDiff, { type ResyncDiff, type ResyncDiffTask } from '../src/resync-diff.ts';
import { ownedPrefixes, RESYNC_ROLE, toColumns, type ResyncReport } from '../src/resync.ts';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import { formatTable } from './drain.ts';
import type { ScenarioReport, TargetCheck } from './index.ts';
import { bindArgs, HOSTS } from './ports-data.ts';

/** Options of {@link runResync}. */
export interface ResyncBenchOptions {
  /** A smaller run for a smoke test (20,000 keys). @default false */
  quick?: boolean;
  /** Desired keys. @default 100000 (20000 with `quick`) */
  keys?: number;
  /** Fraction of the keys that drift. @default 0.01 */
  drift?: number;
  /** API calls in flight while journaling. @default 1000 */
  callsInFlight?: number;
  /** Repeats of the raw read and of the dry run (the median is used). @default 3 */
  repeats?: number;
  /** Flags from the harness: `--keys=N` is read from here. */
  flags?: Record<string, string | boolean | undefined>;
}

const PAGE_SIZE = 10_000;
/** The runtime's default call deadline; the snapshot read uses 4× it per page, as here. */
const CALL_TIMEOUT_MS = 5000;
const SAMPLE_MS = 50;

// ---------------------------------------------------------------- the data

/** The key and value portwire writes for bind `i`; `segmentationShift` makes a drifted value. */
function keyValue(keys: KeyLayout, i: number, segmentationShift = 0): { key: string; value: unknown } {
  const a = bindArgs(i);
  const segment = { ...a.segment, segmentation_id: Number(a.segment.segmentation_id) + segmentationShift };
  return { key: keys.port(a.host, a.port.id), value: bindingValue(a.port, segment, vifType(a.port)) };
}

/** The drift: indices of the missing and changed desired keys, and of the extra (undesired) binds. */
interface Drift {
  missing: number[];
  changed: number[];
  extra: number[];
}

/** `d` differences spread evenly over `n` keys, round-robin over the three kinds. */
function planDrift(n: number, d: number): Drift {
  const drift: Drift = { missing: [], changed: [], extra: [] };
  for (let j = 0; j < d; j++) {
    const i = Math.floor(((j + 0.5) * n) / d);
    if (j % 3 === 0) drift.missing.push(i);
    else if (j % 3 === 1) drift.changed.push(i);
    else drift.extra.push(n + j); // a port nobody desires, on one of the same hosts
  }
  return drift;
}

// ---------------------------------------------------------------- helpers

/** Runs `n` tasks with at most `width` running at once (a sliding window, not waves). */
async function slidingWindow(n: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(width, n) }, lane));
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const ms2 = (x: number): number => Math.round(x * 100) / 100;
const mib = (bytes: number): number => Math.round((bytes / 1024 ** 2) * 10) / 10;
const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : String(n);
const cpuMsSince = (c0: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(c0);
  return Math.round((c.user + c.system) / 1000);
};

/** Times `fn` once: wall ms and CPU ms of this process (all threads). */
async function timed<T>(fn: () => Promise<T> | T): Promise<{ ms: number; cpuMs: number; value: T }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, cpuMs: cpuMsSince(c0), value };
}

/** Reads every owned prefix at one revision (the first page pins it), as a resync's snapshot does. */
async function readOwned(client: Etcd3, keys: KeyLayout): Promise<{ revision: string; kvs: KeyValue[] }> {
  let revision: string | undefined;
  const kvs: KeyValue[] = [];
  for (const p of ownedPrefixes(keys)) {
    const r = await readPrefixAt(client, p, { pageSize: PAGE_SIZE, revision, timeoutMs: CALL_TIMEOUT_MS * 4 });
    revision = r.revision;
    for (const kv of r.kvs) kvs.push(kv);
  }
  return { revision: revision!, kvs };
}


/** RSS sampled every {@link SAMPLE_MS} ms until stopped. */
function rssSampler(): () => { samples: number; maxBytes: number; startBytes: number } {
  const startBytes = process.memoryUsage.rss();
  let maxBytes = startBytes;
  let samples = 1;
  const timer = setInterval(() => {
    samples++;
    maxBytes = Math.max(maxBytes, process.memoryUsage.rss());
  }, SAMPLE_MS);
  return () => {
    clearInterval(timer);
    samples++;
    maxBytes = Math.max(maxBytes, process.memoryUsage.rss());
    return { samples, maxBytes, startBytes };
  };
}

/** When the last pool task of `kind` started and ended (performance.now()), in any pool of this process. */
interface PoolTrace {
  last(): { start: number; end: number } | undefined;
  restore(): void;
}

/**
 * Wraps `Piscina.prototype.run` to note when the runtime's own `resyncDiff`
 * task starts and ends: this splits a real run into its snapshot (read and
 * columns), its pool task (copy in, desired state, diff, copy out) and what
 * follows (repairs, report), without touching the runtime.
 */
function tracePoolTasks(kind: string): PoolTrace {
  const proto = Piscina.prototype as unknown as { run: (task: unknown, options?: unknown) => Promise<unknown> };
  const original = proto.run;
  let last: { start: number; end: number } | undefined;
  proto.run = function (this: unknown, task: unknown, options?: unknown): Promise<unknown> {
    if ((task as { kind?: string } | null)?.kind !== kind) return original.call(this, task, options);
    const start = performance.now();
    return original.call(this, task, options).finally(() => {
      last = { start, end: performance.now() };
    });
  };
  return {
    last: () => last,
    restore: () => {
      proto.run = original;
    },
  };
}

/** A run split at its pool task: [start, pool start, pool end, end] → ms of each part. */
function split(t0: number, t1: number, pool: { start: number; end: number } | undefined): { snapshotMs: number; poolMs: number; afterMs: number } {
  if (!pool || pool.start < t0 || pool.end > t1) throw new Error('no resyncDiff pool task inside the run');
  return { snapshotMs: ms2(pool.start - t0), poolMs: ms2(pool.end - pool.start), afterMs: ms2(t1 - pool.end) };
}

/** Waits for the next `resync` report of `rt` (the run it makes when it gains leadership). */
function nextReport(rt: Runtime, timeoutMs: number): Promise<ResyncReport> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      rt.off('resync', done);
      reject(new Error(`no resync report within ${timeoutMs} ms`));
    }, timeoutMs);
    const done = (r: ResyncReport): void => {
      clearTimeout(timer);
      resolve(r);
    };
    rt.once('resync', done);
  });
}

/** Compares etcd's owned keys (read with `client`) with the desired state `expected`. */
async function compare(
  client: Etcd3,
  keys: KeyLayout,
  expected: Map<string, unknown>,
): Promise<{ keys: number; missing: number; unexpected: number; wrong: number; ok: boolean }> {
  const { kvs } = await readOwned(client, keys);
  let unexpected = 0;
  let wrong = 0;
  let found = 0;
  for (const kv of kvs) {
    const want = expected.get(kv.key);
    if (want === undefined) unexpected++;
    else {
      found++;
      if (!isDeepStrictEqual(JSON.parse(kv.value.toString('utf8')), want)) wrong++;
    }
  }
  const missing = expected.size - found;
  return { keys: kvs.length, missing, unexpected, wrong, ok: missing === 0 && unexpected === 0 && wrong === 0 && kvs.length === expected.size };
}

/** The guarded repairs of `diff`, as `repairs()` in src/resync.ts builds them. */
function repairOpsOf(diff: ResyncDiff): { bytes: number; op: IRequestOp }[] {
  const out: { bytes: number; op: IRequestOp }[] = [];
  const txn = (compare: ICompare[], success: IRequestOp[]): IRequestOp => ({
    request_txn: { compare, success, failure: [] },
  });
  diff.missing.keys.forEach((key, i) => {
    const k = Buffer.from(key);
    const value = Buffer.from(diff.missing.values[i]);
    out.push({ bytes: k.length + value.length, op: txn([{ key: k, result: 'Equal', target: 'Version', version: '0' }], [{ request_put: { key: k, value } }]) });
  });
  diff.changed.keys.forEach((key, i) => {
    const k = Buffer.from(key);
    const value = Buffer.from(diff.changed.values[i]);
    const mod = String(diff.changed.modRevisions[i]);
    out.push({ bytes: k.length + value.length, op: txn([{ key: k, result: 'Equal', target: 'Mod', mod_revision: mod }], [{ request_put: { key: k, value } }]) });
  });
  diff.extra.keys.forEach((key, i) => {
    const k = Buffer.from(key);
    const mod = String(diff.extra.modRevisions[i]);
    out.push({ bytes: k.length, op: txn([{ key: k, result: 'Equal', target: 'Mod', mod_revision: mod }], [{ request_delete_range: { key: k } }]) });
  });
  return out;
}

/** Checks a report's counts against the drift. */
function checkReport(r: ResyncReport, n: number, drift: Drift, dryRun: boolean): string[] {
  const bad: string[] = [];
  const want: Record<string, number | boolean> = {
    dryRun,
    scanned: n - drift.missing.length + drift.extra.length,
    missing: drift.missing.length,
    changed: drift.changed.length,
    extra: drift.extra.length,
    repaired: dryRun ? 0 : drift.missing.length + drift.changed.length + drift.extra.length,
    skipped: 0,
    conflicts: 0,
    emptied: false,
  };
  for (const [k, v] of Object.entries(want)) {
    const got = (r as unknown as Record<string, unknown>)[k];
    if (got !== v) bad.push(`${k} ${String(got)} (want ${String(v)})`);
  }
  return bad;
}

// ---------------------------------------------------------------- the scenario

/**
 * Runs the resync benchmark, prints its tables and returns its figures.
 * Starts (and always stops) a private etcd; removes its temp directory.
 * @throws when etcd cannot start, a report does not count the drift exactly,
 *   or etcd does not hold exactly the desired state after the repair
 */
export async function runResync(options: ResyncBenchOptions = {}): Promise<ScenarioReport> {
  const quick = options.quick ?? false;
  // `--keys=N` (the harness does not declare the flag, so `--keys N` would make N a scenario name)
  const flag = options.flags?.keys;
  if (flag === true) throw new Error('resync: give the key count as --keys=N');
  const n = options.keys ?? (flag !== undefined ? Number(flag) : undefined) ?? (quick ? 20_000 : 100_000);
  if (!Number.isInteger(n) || n < 100) throw new Error(`resync: --keys must be an integer >= 100, got ${String(flag ?? n)}`);
  const driftFraction = options.drift ?? 0.01;
  const callsInFlight = options.callsInFlight ?? 1000;
  const repeats = options.repeats ?? 3;
  const d = Math.round(n * driftFraction);
  const prefix = `/bench-resync-${Date.now().toString(36)}`;
  const keys = keyLayout(prefix);
  const drift = planDrift(n, d);

  const dataDir = mkdtempSync(join(tmpdir(), 'portwire-bench-resync-'));
  const onSignal = (): void => {
    rmSync(dataDir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const step = (s: string): void => void process.stderr.write(`resync: ${s}\n`);
  const load = (): number[] => loadavg().map((l) => Math.round(l * 100) / 100);
  const loadBefore = load();
  const logger = pino({ level: 'warn' }, pino.destination(2));
  let etcd: ManagedEtcd | undefined;
  let client: Etcd3 | undefined;
  let other: Etcd3 | undefined;
  let journal: Journal | undefined;
  let pool: ReturnType<typeof createPool> | undefined;
  const runtimes: Runtime[] = [];
  let trace: PoolTrace | undefined;
  try {
    step('starting etcd');
    etcd = await startManagedEtcd({ fastElection: true });
    const common = { etcd: { endpoints: etcd.endpoints, callTimeoutMs: CALL_TIMEOUT_MS }, prefix, dataDir, logger };

    // ------------------------------------------------ setup: the desired state, journaled and drained
    step(`setup: ${fmt(n)} binds journaled and drained`);
    const writer = createRuntime({ ...common, forwarder: true, resync: { enabled: false } });
    runtimes.push(writer);
    await writer.start();
    const setup = await timed(async () => {
      await slidingWindow(n, callsInFlight, async (i) => {
        await writer.bindPort(bindArgs(i));
      });
      await writer.drained({ timeoutMs: 600_000 });
    });
    const deadLetters = writer.status().deadLetters;
    await writer.stop();
    if (deadLetters > 0) throw new Error(`${deadLetters} entries were dead-lettered`);

    // ------------------------------------------------ the resync runtime: leads both roles
    step('setup: runtime with the resync role; its first run (on leadership) must find nothing');
    const rt = createRuntime({ ...common, forwarder: true, resync: { enabled: true, intervalMs: 24 * 3600_000 } });
    runtimes.push(rt);
    let tResyncLeader = NaN;
    let resyncToken = '';
    rt.on('leader', (e) => {
      if (e.role !== RESYNC_ROLE) return;
      resyncToken = e.token;
      if (Number.isNaN(tResyncLeader)) tResyncLeader = performance.now();
    });
    const firstReport = nextReport(rt, 120_000);
    const s0 = performance.now();
    await rt.start();
    const first = await firstReport;
    const firstFromStartMs = performance.now() - s0;
    const firstWall = performance.now() - tResyncLeader;
    if (Number.isNaN(tResyncLeader)) throw new Error('a resync report without a leader event');
    if (first.missing + first.extra + first.changed + first.skipped + first.repaired + first.conflicts > 0 || first.scanned !== n) {
      throw new Error(`the first run found differences before any drift: ${JSON.stringify({ ...first, differences: undefined })}`);
    }

    // ------------------------------------------------ the drift, written by someone else
    other = new Etcd3({
      hosts: etcd.endpoints.map((e) => e.replace(/^https?:\/\//, '')),
      grpcOptions: { 'grpc.max_receive_message_length': 64 * 1024 * 1024 },
    });
    const driftOps: IRequestOp[] = [
      ...drift.missing.map((i) => ({ request_delete_range: { key: Buffer.from(keyValue(keys, i).key) } })),
      ...drift.changed.map((i) => {
        const kv = keyValue(keys, i, 1);
        return { request_put: { key: Buffer.from(kv.key), value: Buffer.from(JSON.stringify(kv.value)) } };
      }),
      ...drift.extra.map((i) => {
        const kv = keyValue(keys, i);
        return { request_put: { key: Buffer.from(kv.key), value: Buffer.from(JSON.stringify(kv.value)) } };
      }),
    ];
    const applyDrift = async (): Promise<void> => {
      step(`drift: ${drift.missing.length} missing, ${drift.changed.length} changed, ${drift.extra.length} extra`);
      for (let i = 0; i < driftOps.length; i += 100) {
        await other!.kv.txn({ compare: [], success: driftOps.slice(i, i + 100), failure: [] }, deadline(30_000));
      }
    };
    await applyDrift();

    // The project's client, for (a) and the phases. (a) alone first: 3 reads back to back, for comparison
    // with (a) in the rounds (the target pairs (b) with the (a) of its own rounds: same moment, same heap).
    client = createEtcdClient({ endpoints: etcd.endpoints, callTimeoutMs: CALL_TIMEOUT_MS });
    await client.kv.range({ key: Buffer.from(`${prefix}/`), limit: 1 }, deadline(CALL_TIMEOUT_MS)); // connect; not measured
    const scannedWant = n - drift.missing.length + drift.extra.length;
    step(`(a) raw read alone, ${repeats}×`);
    const rawAlone: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const a = await timed(() => readOwned(client!, keys));
      if (a.value.kvs.length !== scannedWant) throw new Error(`etcd holds ${a.value.kvs.length} owned keys after the drift, want ${scannedWant}`);
      rawAlone.push(ms2(a.ms));
    }
    const rawAloneMs = median(rawAlone);

    // ------------------------------------------------ where the time goes, phase by phase (same data, no writes)
    step(`phases of a run, one by one, ${repeats}×`);
    journal = Journal.open(dataDir);
    pool = createPool({ size: 1 });
    const prefixes = ownedPrefixes(keys);
    const phaseRuns: Record<string, number[]> = { snapshotRead: [], columns: [], desiredRead: [], diffInThread: [], echoTask: [], poolTask: [] };
    let lastDiff: ResyncDiff | undefined;
    let desiredKeys = 0;
    await pool.run({ kind: 'echo' }); // start the thread; not measured
    for (let r = 0; r < repeats; r++) {
      const snap = await timed(() => readOwned(client!, keys));
      const cols = await timed(() => toColumns(snap.value.kvs));
      const desired = await timed(() => prefixes.map((p) => journal!.desiredSnapshot(p)));
      desiredKeys = desired.value.reduce((s, x) => s + x.state.size, 0);
      const task: ResyncDiffTask = { kind: 'resyncDiff', path: journal.path, prefixes, etcd: cols.value };
      // In this thread: the worker's own function (its desired-state read included; journal opened on the first call).
      if (r === 0) resyncDiff(task);
      const inThread = await timed(() => resyncDiff(task));
      // The copy of the task to a worker and back (the pool's `echo` task returns it): twice the copy in.
      const echo = await timed(() => pool!.run({ ...task, kind: 'echo' }));
      // In a pool worker: the same task, with the copy to the thread and back (journal opened on the first call).
      if (r === 0) await pool.run(task);
      const inPool = await timed(() => pool!.run(task) as Promise<ResyncDiff>);
      lastDiff = inPool.value;
      phaseRuns.snapshotRead.push(snap.ms);
      phaseRuns.columns.push(cols.ms);
      phaseRuns.desiredRead.push(desired.ms);
      phaseRuns.diffInThread.push(inThread.ms);
      phaseRuns.echoTask.push(echo.ms);
      phaseRuns.poolTask.push(inPool.ms);
    }
    if (!lastDiff || lastDiff.missing.keys.length !== drift.missing.length || lastDiff.extra.keys.length !== drift.extra.length || lastDiff.changed.keys.length !== drift.changed.length) {
      throw new Error('the pool diff does not count the drift');
    }
    const phase = Object.fromEntries(Object.entries(phaseRuns).map(([k, v]) => [k, ms2(median(v))])) as Record<keyof typeof phaseRuns, number>;
    await pool.destroy();
    pool = undefined;

    // The repairs alone, replayed directly: the ops `resyncOnce` builds from this diff, sent the same way
    // (fenced with the resync leader's token, one txn at a time, ≤ server limit − 1 nested txns and ≤ 1 MiB each).
    // They repair the drift, which is then written again.
    step('repairs alone, replayed directly from the diff');
    const maxNested = (await probeMaxTxnOps(client, { timeoutMs: CALL_TIMEOUT_MS })) - 1;
    const fence = { key: keys.electionKey(RESYNC_ROLE), token: resyncToken };
    const repairOps = repairOpsOf(lastDiff);
    const replay = await timed(async () => {
      let ok = 0;
      let txns = 0;
      for (let i = 0; i < repairOps.length; ) {
        const batch: IRequestOp[] = [];
        let bytes = 0;
        while (i < repairOps.length && batch.length < maxNested && (batch.length === 0 || bytes + repairOps[i].bytes <= 1024 * 1024)) {
          bytes += repairOps[i].bytes;
          batch.push(repairOps[i++].op);
        }
        txns++;
        await fencedTxn(client!, fence, batch, CALL_TIMEOUT_MS, (res) => {
          for (const r of res.responses) if (r.response_txn?.succeeded === true) ok++;
        });
      }
      return { ok, txns };
    });
    if (replay.value.ok !== d) throw new Error(`the replayed repairs applied ${replay.value.ok} of ${d}`);
    await applyDrift();

    // ------------------------------------------------ (c) then (b), `repeats` times: dry run, repair, verify, drift again
    // The desired state, built for each check and dropped after it (kept, 100,000 parsed values would weigh on every GC of the runs).
    const expected = (): Map<string, unknown> => {
      const m = new Map<string, unknown>();
      for (let i = 0; i < n; i++) {
        const kv = keyValue(keys, i);
        m.set(kv.key, kv.value);
      }
      return m;
    };
    type Split = ReturnType<typeof split>;
    const raw: { ms: number; cpuMs: number; keys: number; bytes: number }[] = [];
    const dry: ({ wallMs: number; durationMs: number; cpuMs: number } & Split)[] = [];
    const repair: ({ wallMs: number; durationMs: number; cpuMs: number; rssBeforeBytes: number; rssMaxBytes: number; rssSamples: number } & Split)[] = [];
    trace = tracePoolTasks('resyncDiff');
    let report: ResyncReport | undefined;
    let verify: Awaited<ReturnType<typeof compare>> | undefined;
    let maxRssAfterFirstBytes = NaN;
    for (let r = 0; r < repeats; r++) {
      if (r > 0) await applyDrift();
      step(`(a) raw read ${r + 1}/${repeats}: the owned prefix, pages of ${fmt(PAGE_SIZE)}`);
      const a = await timed(() => readOwned(client!, keys));
      if (a.value.kvs.length !== scannedWant) throw new Error(`raw read ${r + 1} found ${a.value.kvs.length} keys, want ${scannedWant}`);
      raw.push({ ms: ms2(a.ms), cpuMs: a.cpuMs, keys: a.value.kvs.length, bytes: a.value.kvs.reduce((t, kv) => t + kv.key.length + kv.value.length, 0) });
      step(`(c) dry run ${r + 1}/${repeats}`);
      const td = performance.now();
      const t = await timed(() => rt.resync({ dryRun: true }));
      const dSplit = split(td, performance.now(), trace.last());
      const badDry = checkReport(t.value, n, drift, true);
      if (badDry.length) throw new Error(`dry run ${r + 1} does not count the drift: ${badDry.join(', ')}`);
      dry.push({ wallMs: ms2(t.ms), durationMs: t.value.durationMs, cpuMs: t.cpuMs, ...dSplit });

      step(`(b) repair run ${r + 1}/${repeats}`);
      const rssBefore = process.memoryUsage.rss();
      const sample = rssSampler();
      const tr = performance.now();
      const rep = await timed(() => rt.resync({ timeoutMs: 120_000 }));
      const rSplit = split(tr, performance.now(), trace.last());
      const rss = sample();
      if (r === 0) maxRssAfterFirstBytes = process.resourceUsage().maxRSS * 1024;
      report = rep.value;
      const bad = checkReport(report, n, drift, false);
      if (bad.length) throw new Error(`repair run ${r + 1} does not count the drift: ${bad.join(', ')}`);
      repair.push({
        wallMs: ms2(rep.ms),
        ...rSplit,
        durationMs: report.durationMs,
        cpuMs: rep.cpuMs,
        rssBeforeBytes: rssBefore,
        rssMaxBytes: rss.maxBytes,
        rssSamples: rss.samples,
      });

      step('verify: an independent read must find exactly the desired keys and values');
      verify = await compare(other, keys, expected());
      if (!verify.ok) throw new Error(`etcd is not the desired state after repair run ${r + 1}: ${JSON.stringify(verify)}`);
    }
    trace.restore();
    trace = undefined;
    const maxRssBytes = process.resourceUsage().maxRSS * 1024;
    const after = await rt.resync({ dryRun: true });
    if (after.missing + after.extra + after.changed + after.skipped > 0 || after.scanned !== n) {
      throw new Error(`a dry run after the repair still finds differences: ${JSON.stringify({ ...after, differences: undefined })}`);
    }
    const loadAfter = load();
    const rawMs = median(raw.map((x) => x.ms));
    const dryMs = median(dry.map((x) => x.wallMs));
    const repairMs = median(repair.map((x) => Math.max(x.wallMs, x.durationMs)));
    const repairsOnlyMs = median(repair.map((x, i) => x.wallMs - dry[i].wallMs));
    const phases = {
      snapshotReadMs: phase.snapshotRead,
      columnsMs: phase.columns,
      desiredReadMs: phase.desiredRead,
      /** the diff proper: the worker function in this thread minus its desired-state read */
      diffMs: ms2(Math.max(0, phase.diffInThread - phase.desiredRead)),
      workerFunctionInThreadMs: phase.diffInThread,
      poolTaskMs: phase.poolTask,
      /** copying the columns to the worker and the diff back, and the thread hop */
      poolOverheadMs: ms2(Math.max(0, phase.poolTask - phase.diffInThread)),
      /** the task sent to a worker and returned unchanged (`echo`): about twice the copy in */
      echoTaskMs: phase.echoTask,
      /** the repair txns alone, replayed from the diff with the leader's fence */
      repairsReplayedMs: ms2(replay.ms),
      repairTxns: replay.value.txns,
      /** each repair run minus the dry run just before it (median; noisy, a difference of two ~1.3 s runs) */
      repairsMs: ms2(repairsOnlyMs),
      desiredKeys,
      runs: Object.fromEntries(Object.entries(phaseRuns).map(([k, v]) => [k, v.map(ms2)])),
    };
    const first1 = repair[0];
    const rssMaxBytes = Math.max(...repair.map((x) => x.rssMaxBytes));

    // ------------------------------------------------ report
    const ratio = repairMs / rawMs;
    const ratioAlone = repairMs / rawAloneMs;
    const ratioPerRound = median(repair.map((x, i) => Math.max(x.wallMs, x.durationMs) / raw[i].ms));
    const targets: TargetCheck[] = [
      { name: 'repair run (b) / raw read (a) of the rounds', value: ratio, target: '<= 2', pass: ratio <= 2 },
      { name: 'repair run (b), s, median', value: repairMs / 1000, target: '< 5', pass: repairMs < 5000 },
    ];
    const s = (ms: number): string => fmt(ms / 1000, 3);
    const runsOf = (xs: number[]): string => `median of ${xs.map(s).join(' / ')}`;
    const cpuOf = (xs: { cpuMs: number }[]): string => fmt(median(xs.map((x) => x.cpuMs)) / 1000, 3);
    const rows = [
      ['measure', 'keys', 'time s', 'CPU s, all threads', 'notes'],
      [
        '(a) raw read in each round: readPrefixAt',
        fmt(scannedWant),
        s(rawMs),
        cpuOf(raw),
        `${runsOf(raw.map((x) => x.ms))}; pages of ${fmt(PAGE_SIZE)}; ${fmt(mib(raw[0].bytes), 1)} MiB`,
      ],
      ['(a) raw read alone, before the rounds', fmt(scannedWant), s(rawAloneMs), '', `${runsOf(rawAlone)}; for comparison only`],
      ['(c) dry run: rt.resync({ dryRun: true })', fmt(scannedWant), s(dryMs), cpuOf(dry), `${runsOf(dry.map((x) => x.wallMs))}; durationMs ${dry.map((x) => fmt(x.durationMs)).join(' / ')}`],
      [
        '(b) repair: rt.resync(), wall clock',
        fmt(scannedWant),
        s(repairMs),
        cpuOf(repair),
        `${runsOf(repair.map((x) => x.wallMs))}; durationMs ${repair.map((x) => fmt(x.durationMs)).join(' / ')}`,
      ],
      ['first run on gaining leadership (no drift)', fmt(first.scanned), s(firstWall), '', `durationMs ${fmt(first.durationMs)}; cold (JIT, worker's journal)`],
      ['setup: journal + drain (not a target)', fmt(n), s(setup.ms), fmt(setup.cpuMs / 1000, 3), `${callsInFlight} bindPort calls in flight`],
    ];
    const phaseRows = [
      ['the parts again, measured one by one (medians)', 'time s', 'where'],
      ['snapshot: read the owned prefix', s(phases.snapshotReadMs), 'main thread ↔ etcd (= (a))'],
      ['snapshot: pack the columns', s(phases.columnsMs), 'main thread'],
      ['desired state: read from LMDB', s(phases.desiredReadMs), `Journal.desiredSnapshot, ${fmt(phases.desiredKeys)} keys`],
      ['diff proper', s(phases.diffMs), 'resyncDiff minus its desired-state read'],
      ['resyncDiff (desired read + diff)', s(phases.workerFunctionInThreadMs), 'the worker function, called in this thread'],
      ['same task through a pool worker', s(phases.poolTaskMs), `copy in and out + thread hop: ${s(phases.poolOverheadMs)} s`],
      ['the task to a worker and back (echo)', s(phases.echoTaskMs), 'the copy in, twice (the diff sent back is small)'],
      ['repairs, replayed directly', s(phases.repairsReplayedMs), `${fmt(d)} nested CAS txns in ${phases.repairTxns} fenced txns, 1 at a time`],
    ];
    const med = (xs: Split[], k: keyof Split): number => median(xs.map((x) => x[k]));
    const splitRows = [
      ['inside the runs (split at the pool task; medians)', '(c) dry s', '(b) repair s', 'of (b)'],
      ...(
        [
          ['snapshot: read + pack the columns', 'snapshotMs'],
          ['pool task: copy in, desired state, diff, copy out', 'poolMs'],
          ['after the pool task: repairs, report', 'afterMs'],
        ] as const
      ).map(([label, k]) => [label, s(med(dry, k)), s(med(repair, k)), `${fmt((100 * med(repair, k)) / repairMs)}%`]),
    ];
    console.log(formatTable(rows));
    console.log();
    console.log(formatTable(splitRows));
    console.log();
    console.log(formatTable(phaseRows));
    console.log();
    const rep = report!;
    console.log(
      `drift (each of ${repeats} rounds): ${drift.missing.length} missing, ${drift.changed.length} changed, ${drift.extra.length} extra; ` +
        `last report: scanned ${fmt(rep.scanned)}, missing ${rep.missing}, changed ${rep.changed}, extra ${rep.extra}, ` +
        `repaired ${rep.repaired}, skipped ${rep.skipped}, conflicts ${rep.conflicts}, emptied ${rep.emptied}`,
    );
    console.log(
      `verified after each repair with an independent client: ${fmt(verify!.keys)} keys, ${verify!.missing} missing, ` +
        `${verify!.unexpected} unexpected, ${verify!.wrong} wrong values; a dry run afterwards finds ${after.missing + after.extra + after.changed} differences`,
    );
    console.log(
      `memory during (b): RSS ${fmt(mib(first1.rssBeforeBytes), 1)} MiB before the first repair, max ${fmt(mib(first1.rssMaxBytes), 1)} MiB during it ` +
        `(+${fmt(mib(first1.rssMaxBytes - first1.rssBeforeBytes), 1)}; ${first1.rssSamples} samples every ${SAMPLE_MS} ms), ` +
        `max ${fmt(mib(rssMaxBytes), 1)} MiB over all ${repeats}; process.resourceUsage().maxRSS ${fmt(mib(maxRssAfterFirstBytes), 1)} MiB ` +
        `after the first repair, ${fmt(mib(maxRssBytes), 1)} MiB at the end (whole process life: setup and phases included)`,
    );
    console.log(
      `(b) / (a): ${fmt(ratio, 2)} (medians of the rounds; the target), ${fmt(ratioPerRound, 2)} (median of each round's own pair), ` +
        `${fmt(ratioAlone, 2)} against (a) alone before the rounds`,
    );
    console.log(`load average (1/5/15 min) before ${loadBefore.join(' / ')}, after ${loadAfter.join(' / ')} on ${cpus().length} cpus`);
    console.log();
    console.log(
      formatTable([
        ['target', 'value', 'target', ''],
        ...targets.map((t) => [t.name, fmt(t.value, 2), t.target, t.pass ? 'PASS' : 'FAIL']),
      ]),
    );
    const { differences: _d, ...summary } = rep;
    return {
      params: {
        keys: n,
        hosts: HOSTS,
        drift: { fraction: driftFraction, missing: drift.missing.length, changed: drift.changed.length, extra: drift.extra.length },
        pageSize: PAGE_SIZE,
        callTimeoutMs: CALL_TIMEOUT_MS,
        repeats,
        callsInFlight,
        poolSize: 2,
        quick,
        etcdFastElection: true,
        rssSampleMs: SAMPLE_MS,
      },
      figures: {
        raw: { medianMs: rawMs, runs: raw, alone: { medianMs: rawAloneMs, runs: rawAlone } },
        dryRun: { medianMs: dryMs, runs: dry },
        repair: { medianMs: repairMs, runs: repair, lastReport: summary },
        ratio,
        ratioPerRound,
        ratioAgainstRawAlone: ratioAlone,
        phases,
        insideRuns: {
          dry: { snapshotMs: med(dry, 'snapshotMs'), poolMs: med(dry, 'poolMs'), afterMs: med(dry, 'afterMs') },
          repair: { snapshotMs: med(repair, 'snapshotMs'), poolMs: med(repair, 'poolMs'), afterMs: med(repair, 'afterMs') },
        },
        firstRun: { wallMs: ms2(firstWall), durationMs: first.durationMs, startToReportMs: ms2(firstFromStartMs) },
        setup: { ms: ms2(setup.ms), cpuMs: setup.cpuMs },
        memory: {
          firstRepair: { rssBeforeBytes: first1.rssBeforeBytes, rssMaxBytes: first1.rssMaxBytes, samples: first1.rssSamples },
          rssMaxBytesAllRepairs: rssMaxBytes,
          maxRssBytesAfterFirstRepair: maxRssAfterFirstBytes,
          maxRssBytesAtEnd: maxRssBytes,
        },
        verify,
        afterDryRun: { scanned: after.scanned, differences: after.missing + after.extra + after.changed },
        loadAverage: { before: loadBefore, after: loadAfter },
      },
      targets,
    };
  } finally {
    trace?.restore();
    if (pool) await pool.destroy().catch(() => undefined);
    for (const rt of runtimes) await rt.stop().catch(() => undefined);
    await journal?.close().catch(() => undefined);
    client?.close();
    other?.close();
    await etcd?.stop();
    rmSync(dataDir, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
