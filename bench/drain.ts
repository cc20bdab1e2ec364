/**
 * The `drain` scenario (issue 2): in one run, on one private etcd,
 *
 *  (a) raw etcd: 128-op put txns (no compare) with the project's own client
 *      (`createEtcdClient`), 4 and 16 in flight — the physical limit;
 *  (b) portwire: N port binds journaled through `rt.bindPort` with 1,000 calls
 *      in flight (a sliding window), then drained into etcd by the forwarder
 *      (the resync and return-watcher roles off: they are measured apart);
 *      the result is read back with an independent client; without
 *      `--quick`, (b) runs again with the return watcher on in the draining
 *      process, which then also tracks every binding it drains as a port;
 *  (c) the reference's strategy: one put per entry, awaited one at a time.
 *
 * Between parts etcd is emptied, compacted and defragmented (see
 * `resetEtcd`), so every part starts from the same etcd state. (a) at 16 in
 * flight runs again at the end; the ratio uses the higher of the two runs.
 * Keys and values have the same shape everywhere: the real
 * `nodes/<host>/ports/<port>` binding of a port with one fixed IP (~360 bytes
 * of JSON). Every part writes under its own fresh prefix.
 *
 * With `sign` (`--sign`), (b) runs a second time with signed values (an
 * Ed25519 compact JWS per value, see `src/jws.ts`) and the signed drain is
 * compared with the unsigned one of the same run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { isDeepStrictEqual } from 'node:util';
import { Etcd3, type IRequestOp } from 'etcd3';
import { pino } from 'pino';
import { generateKeyPairSync } from 'node:crypto';
import { createEtcdClient, deadline, prefixEnd } from '../src/etcd.ts';
import { JwsVerifier, type SigningOptions } from '../src/jws.ts';
import { keyLayout } from '../src/keys.ts';
import { startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import type { ScenarioReport, TargetCheck } from './index.ts';
import { bindArgs, keyValue } from './ports-data.ts';
import { machineBusyMs, procCpuMs } from './cpu.ts';

/** Options of {@link runDrain}. */
export interface DrainBenchOptions {
  /** Port binds journaled and drained in (b). @default 100000 (20000 with `quick`) */
  ports?: number;
  /** A smaller run for a smoke test. @default false */
  quick?: boolean;
  /** Keys per raw run in (a). @default 200000 (40000 with `quick`) */
  rawKeys?: number;
  /** Keys written one at a time in (c). @default 5000 (2000 with `quick`) */
  referenceKeys?: number;
  /** API calls in flight while journaling. @default 1000 */
  callsInFlight?: number;
  /** Also run (b) with signed values and report the ratio. @default false */
  sign?: boolean;
}

const OPS_PER_TXN = 128;
const CALL_TIMEOUT_MS = 5000;

// ---------------------------------------------------------------- the data

/** Encoded keys and values for `n` binds (built before any clock starts). */
function encoded(prefix: string, n: number): { keys: Buffer[]; values: Buffer[] } {
  const keys: Buffer[] = new Array(n);
  const values: Buffer[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const kv = keyValue(prefix, i);
    keys[i] = Buffer.from(kv.key);
    values[i] = Buffer.from(JSON.stringify(kv.value));
  }
  return { keys, values };
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

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

const rate = (n: number, ms: number): number => Math.round(n / (ms / 1000));
const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : String(n);

/** Wall time, and CPU time of this process (all threads) and of the etcd server. */
export interface Measured {
  ms: number;
  /** CPU ms of this process: main thread, pool workers, everything. */
  clientCpuMs: number;
  /** CPU ms of the etcd process (from /proc; NaN where unavailable). */
  etcdCpuMs: number;
  /** CPU ms of every other process on the machine: other people's work (from /proc/stat; NaN where unavailable). */
  otherCpuMs: number;
}

/** Starts a measurement; call the result to end it. */
function meter(etcdPid: number): () => Measured {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const e0 = procCpuMs(etcdPid);
  const m0 = machineBusyMs();
  return () => {
    const c = process.cpuUsage(c0);
    const clientCpuMs = (c.user + c.system) / 1000;
    const etcdCpuMs = procCpuMs(etcdPid) - e0;
    const otherCpuMs = Math.max(0, machineBusyMs() - m0 - clientCpuMs - etcdCpuMs);
    return { ms: performance.now() - t0, clientCpuMs, etcdCpuMs, otherCpuMs };
  };
}

/** A throughput figure with its CPU cost per key (µs) in this process and in etcd. */
export interface Throughput {
  keys: number;
  ms: number;
  keysPerSec: number;
  clientCpuUsPerKey: number;
  etcdCpuUsPerKey: number;
  /** Cores' worth of CPU other processes used meanwhile (noise: 0 on a quiet machine). */
  otherCores: number;
}

function throughput(keys: number, m: Measured): Throughput {
  return {
    keys,
    ms: m.ms,
    keysPerSec: rate(keys, m.ms),
    clientCpuUsPerKey: Math.round((m.clientCpuMs * 1000) / keys),
    etcdCpuUsPerKey: Math.round((m.etcdCpuMs * 1000) / keys),
    otherCores: Math.round((m.otherCpuMs / m.ms) * 100) / 100,
  };
}

/** Formats rows as an aligned text table (first row is the header). */
export function formatTable(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]): string =>
    r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(rows[0]), sep, ...rows.slice(1).map(line)].join('\n');
}

/**
 * Reads every key under `prefix` (but those starting with `ignore`) in pages
 * at one revision, and compares keys and values with `expected`.
 */
async function verify(
  client: Etcd3,
  prefix: string,
  expected: Map<string, unknown>,
  ignore: string,
  verifier?: JwsVerifier,
): Promise<{ keys: number; missing: number; unexpected: number; wrong: number }> {
  const end = prefixEnd(Buffer.from(prefix));
  let start = Buffer.from(prefix);
  let revision = '0';
  let keys = 0;
  let unexpected = 0;
  let wrong = 0;
  const seen = new Set<string>();
  for (;;) {
    const res = await client.kv.range({ key: start, range_end: end, limit: 5000, revision }, deadline(30_000));
    if (revision === '0') revision = res.header.revision;
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      if (key.startsWith(ignore)) continue;
      keys++;
      seen.add(key);
      if (!expected.has(key)) unexpected++;
      else if (verifier && !verifier.verify(key, kv.value).ok) wrong++;
      else if (!isDeepStrictEqual(JSON.parse((verifier ? verifier.payload(key, kv.value) : kv.value).toString()), expected.get(key))) wrong++;
    }
    if (!res.more || res.kvs.length === 0) break;
    start = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
  }
  let missing = 0;
  for (const k of expected.keys()) if (!seen.has(k)) missing++;
  return { keys, missing, unexpected, wrong };
}

// ---------------------------------------------------------------- (a) and (c)

/**
 * Puts etcd back on an equal footing between parts: deletes everything the
 * run wrote, compacts to the current revision and defragments. Random keys
 * make etcd's key index and backend costlier as they grow (here ~20 → ~30 µs
 * of etcd CPU per key over 1.4M keys), which would otherwise favour whichever
 * part runs first.
 */
async function resetEtcd(client: Etcd3, runPrefix: string): Promise<void> {
  const res = await client.kv.deleteRange(
    { key: Buffer.from(runPrefix), range_end: prefixEnd(Buffer.from(runPrefix)) },
    deadline(60_000),
  );
  await client.kv.compact({ revision: res.header.revision, physical: true }, deadline(60_000));
  await client.maintenance.defragment(deadline(120_000));
}

/** (a): `n` distinct keys as 128-op put txns, `inFlight` txns at a time. */
async function rawTxns(client: Etcd3, etcdPid: number, prefix: string, n: number, inFlight: number): Promise<Throughput> {
  const { keys, values } = encoded(prefix, n);
  const txns = Math.ceil(n / OPS_PER_TXN);
  const done = meter(etcdPid);
  await slidingWindow(txns, inFlight, async (t) => {
    const ops: IRequestOp[] = [];
    for (let i = t * OPS_PER_TXN; i < Math.min(n, (t + 1) * OPS_PER_TXN); i++) {
      ops.push({ request_put: { key: keys[i], value: values[i] } });
    }
    await client.kv.txn({ compare: [], success: ops, failure: [] }, deadline(CALL_TIMEOUT_MS));
  });
  return throughput(n, done());
}

/** (c): the reference's strategy, one put per entry awaited one at a time. */
async function onePutAtATime(client: Etcd3, etcdPid: number, prefix: string, n: number): Promise<Throughput> {
  const { keys, values } = encoded(prefix, n);
  const done = meter(etcdPid);
  for (let i = 0; i < n; i++) {
    await client.kv.put({ key: keys[i], value: values[i] }, deadline(CALL_TIMEOUT_MS));
  }
  return throughput(n, done());
}

// ---------------------------------------------------------------- (b)

interface PortwireFigures {
  ports: number;
  callsInFlight: number;
  /** `keysPerSec` here is journaled binds (ops) per second. */
  journal: Throughput & { p50Ms: number; p99Ms: number; maxMs: number; depth: number };
  /** From the forwarder's `leader` event (its drain starts) to `drained()`. */
  drain: Throughput & {
    /** From `start()` of the draining runtime (pool threads, election) to `drained()`. */
    msFromStart: number;
    keysPerSecFromStart: number;
    startToLeaderMs: number;
    leaderToFirstAppliedMs: number;
    appliedEvents: number;
    appliedKeys: number;
    eventLoopDelayMs: { p50: number; p99: number; max: number };
    /** The same monitor for 1 s with this process idle just before: the machine's own noise. */
    idleEventLoopDelayMs: { p50: number; p99: number; max: number };
  };
  verify: { keys: number; missing: number; unexpected: number; wrong: number; ok: boolean };
}

/**
 * (b). Two runtimes on one data directory, as the design's "processes that
 * only append" and the forwarder. The first has `forwarder: false`: the API
 * path is the production one (validate → decide → LMDB txn → fsync), and no
 * drain competes with the appends, so the journal figure is appends alone. It
 * is stopped; a second runtime then opens the same directory with the
 * forwarder on, is elected and drains the 100,000 waiting entries — the same
 * backlog a forwarder finds after a failover or an etcd outage. This is
 * cleaner than journaling against an unreachable etcd, where the forwarder
 * would sit in backoff and the drain start would depend on a backoff timer.
 * The drain is timed from the `leader` event (the drain begins right after
 * it) to `drained()`; the time from `start()` (pool threads, election) is
 * reported beside it.
 */
async function portwire(
  etcd: ManagedEtcd,
  prefix: string,
  dataDir: string,
  n: number,
  callsInFlight: number,
  track: (rt: Runtime) => void,
  signing?: SigningOptions,
  returnWatcher = false,
): Promise<PortwireFigures> {
  const logger = pino({ level: 'warn' }, pino.destination(2));
  // the return watcher is off unless asked: with it, this process also tracks every binding it drains as a port
  const common = { etcd: { endpoints: etcd.endpoints }, prefix, dataDir, logger, signing, returnWatcher: { enabled: returnWatcher } };

  // the resync role is benchmarked separately and would otherwise run a full resync when it gains leadership in the middle of the measured drain
  const writer = createRuntime({ ...common, forwarder: false, resync: { enabled: false } });
  track(writer);
  await writer.start();
  const args = Array.from({ length: n }, (_, i) => bindArgs(i));
  const latency = new Float64Array(n);
  const journalDone = meter(etcd.pid);
  await slidingWindow(n, callsInFlight, async (i) => {
    const t = performance.now();
    await writer.bindPort(args[i]);
    latency[i] = performance.now() - t;
  });
  const journaled = journalDone();
  const depth = writer.status().journalDepth;
  await writer.stop();
  latency.sort();

  const ms1 = (x: number): number => Math.round(x / 1e4) / 100;
  const eld = monitorEventLoopDelay({ resolution: 1 });
  eld.enable();
  await new Promise((r) => setTimeout(r, 1000));
  const idle = { p50: ms1(eld.percentile(50)), p99: ms1(eld.percentile(99)), max: ms1(eld.max) };
  eld.reset();

  // the resync role is benchmarked separately and would otherwise run a full resync when it gains leadership in the middle of the measured drain
  const drainer = createRuntime({ ...common, forwarder: true, resync: { enabled: false } });
  track(drainer);
  let tLeader = NaN;
  let drainDone: (() => Measured) | undefined;
  let tFirstApplied = NaN;
  let appliedEvents = 0;
  let appliedKeys = 0;
  drainer.on('leader', () => {
    if (Number.isNaN(tLeader)) {
      tLeader = performance.now();
      drainDone = meter(etcd.pid);
      eld.reset();
    }
  });
  drainer.on('applied', (e) => {
    if (Number.isNaN(tFirstApplied)) tFirstApplied = performance.now();
    appliedEvents++;
    appliedKeys += e.keys;
  });
  const s0 = performance.now();
  await drainer.start();
  await drainer.drained({ timeoutMs: 600_000 });
  const tDrained = performance.now();
  const drained = drainDone?.();
  eld.disable();
  if (!drained) throw new Error('drained without a leader event');
  const status = drainer.status();
  await drainer.stop();
  if (status.deadLetters > 0) throw new Error(`${status.deadLetters} entries were dead-lettered`);

  const expected = new Map<string, unknown>();
  for (let i = 0; i < n; i++) {
    const kv = keyValue(prefix, i);
    expected.set(kv.key, kv.value);
  }
  // An independent client: plain etcd3, not the project's settings.
  const reader = new Etcd3({ hosts: etcd.endpoints.map((e) => e.replace(/^https?:\/\//, '')), grpcOptions: { 'grpc.max_receive_message_length': 64 * 1024 * 1024 } });
  let v;
  try {
    // Everything under the prefix but the election key (released on stop anyway).
    const verifier = signing && new JwsVerifier(signing.privateKey);
    v = await verify(reader, `${prefix}/`, expected, `${keyLayout(prefix).election}/`, verifier);
  } finally {
    reader.close();
  }

  const msFromStart = tDrained - s0;
  return {
    ports: n,
    callsInFlight,
    journal: {
      ...throughput(n, journaled),
      p50Ms: percentile(latency, 50),
      p99Ms: percentile(latency, 99),
      maxMs: latency[n - 1],
      depth,
    },
    drain: {
      ...throughput(n, drained),
      msFromStart,
      keysPerSecFromStart: rate(n, msFromStart),
      startToLeaderMs: tLeader - s0,
      leaderToFirstAppliedMs: tFirstApplied - tLeader,
      appliedEvents,
      appliedKeys,
      eventLoopDelayMs: { p50: ms1(eld.percentile(50)), p99: ms1(eld.percentile(99)), max: ms1(eld.max) },
      idleEventLoopDelayMs: idle,
    },
    verify: { ...v, ok: v.keys === n && v.missing === 0 && v.unexpected === 0 && v.wrong === 0 },
  };
}

// ---------------------------------------------------------------- the scenario

/**
 * Runs the drain benchmark, prints its table and returns its figures.
 * Starts (and always stops) a private etcd; removes its temp directories.
 * @throws when etcd cannot start, or etcd does not hold exactly what was journaled
 */
export async function runDrain(options: DrainBenchOptions = {}): Promise<ScenarioReport> {
  const quick = options.quick ?? false;
  const n = options.ports ?? (quick ? 20_000 : 100_000);
  const rawKeys = options.rawKeys ?? (quick ? 40_000 : 200_000);
  const refKeys = options.referenceKeys ?? (quick ? 2_000 : 5_000);
  const callsInFlight = options.callsInFlight ?? 1000;
  const run = `/bench-drain-${Date.now().toString(36)}`;

  const dirs: string[] = [];
  const runtimes: Runtime[] = [];
  const removeDirs = (): void => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };
  // On Ctrl-C: remove the temp dirs, then exit (the managed etcd kills its child on exit).
  const onSignal = (): void => {
    removeDirs();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  let etcd: ManagedEtcd | undefined;
  let client: Etcd3 | undefined;
  const step = (s: string): void => void process.stderr.write(`drain: ${s}\n`);
  const load = (): number[] => loadavg().map((l) => Math.round(l * 100) / 100);
  const loadBefore = load();
  try {
    step('starting etcd');
    etcd = await startManagedEtcd({ fastElection: true });
    client = createEtcdClient({ endpoints: etcd.endpoints, callTimeoutMs: CALL_TIMEOUT_MS });
    // Warm-up (connection, JIT); not measured.
    await rawTxns(client, etcd.pid, `${run}/warmup`, 10 * OPS_PER_TXN * 16, 16);
    const reset = (): Promise<void> => resetEtcd(client as Etcd3, `${run}/`);
    await reset();

    step(`(a) raw txns: ${fmt(rawKeys)} keys, 4 in flight`);
    const raw4 = await rawTxns(client, etcd.pid, `${run}/raw4`, rawKeys, 4);
    await reset();
    step(`(a) raw txns: ${fmt(rawKeys)} keys, 16 in flight`);
    const raw16 = await rawTxns(client, etcd.pid, `${run}/raw16`, rawKeys, 16);
    await reset();

    step(`(b) portwire: ${fmt(n)} binds journaled, then drained`);
    const dataDir = mkdtempSync(join(tmpdir(), 'portwire-bench-drain-'));
    dirs.push(dataDir);
    const pw = await portwire(etcd, `${run}/portwire`, dataDir, n, callsInFlight, (rt) => runtimes.push(rt));
    if (!pw.verify.ok) {
      throw new Error(`etcd does not hold exactly the ${n} keys: ${JSON.stringify(pw.verify)}`);
    }
    await reset();

    let signed: PortwireFigures | undefined;
    if (options.sign) {
      step(`(b) again with signed values: ${fmt(n)} binds journaled, then drained`);
      const signedDir = mkdtempSync(join(tmpdir(), 'portwire-bench-drain-signed-'));
      dirs.push(signedDir);
      const { privateKey } = generateKeyPairSync('ed25519');
      signed = await portwire(etcd, `${run}/portwire-signed`, signedDir, n, callsInFlight, (rt) => runtimes.push(rt), { privateKey, keyId: 'bench' });
      if (!signed.verify.ok) {
        throw new Error(`etcd does not hold exactly the ${n} signed keys: ${JSON.stringify(signed.verify)}`);
      }
      await reset();
    }

    let watched: PortwireFigures | undefined;
    if (!quick) {
      step(`(b) again with the return watcher on: ${fmt(n)} binds journaled, then drained`);
      const watchedDir = mkdtempSync(join(tmpdir(), 'portwire-bench-drain-watched-'));
      dirs.push(watchedDir);
      watched = await portwire(etcd, `${run}/portwire-watched`, watchedDir, n, callsInFlight, (rt) => runtimes.push(rt), undefined, true);
      if (!watched.verify.ok) {
        throw new Error(`etcd does not hold exactly the ${n} keys: ${JSON.stringify(watched.verify)}`);
      }
      await reset();
    }

    step(`(c) reference strategy: ${fmt(refKeys)} puts, one at a time`);
    const ref = await onePutAtATime(client, etcd.pid, `${run}/reference`, refKeys);
    await reset();
    step(`(a) raw txns again: ${fmt(rawKeys)} keys, 16 in flight`);
    const raw16b = await rawTxns(client, etcd.pid, `${run}/raw16-again`, rawKeys, 16);

    const raw16best = Math.max(raw16.keysPerSec, raw16b.keysPerSec);
    const vsRaw = pw.drain.keysPerSec / raw16best;
    const vsRef = pw.drain.keysPerSec / ref.keysPerSec;
    const targets: TargetCheck[] = [
      { name: 'drain / raw (a) @16, higher of 2 runs', value: vsRaw, target: '>= 0.8', pass: vsRaw >= 0.8 },
      { name: 'drain / reference (c)', value: vsRef, target: '>= 30', pass: vsRef >= 30 },
      { name: 'journal appends, ops/s', value: pw.journal.keysPerSec, target: '>= 50,000', pass: pw.journal.keysPerSec >= 50_000 },
      { name: 'event-loop delay p99 while draining, ms', value: pw.drain.eventLoopDelayMs.p99, target: '< 20', pass: pw.drain.eventLoopDelayMs.p99 < 20 },
    ];

    const cpu = (t: Throughput): string =>
      `${fmt(t.clientCpuUsPerKey)} / ${Number.isFinite(t.etcdCpuUsPerKey) ? fmt(t.etcdCpuUsPerKey) : '-'}`;
    const eldText = (e: { p50: number; p99: number; max: number }): string =>
      `event loop p50 ${fmt(e.p50, 1)} / p99 ${fmt(e.p99, 1)} / max ${fmt(e.max, 1)} ms`;
    /** A row for a rerun of (b), compared with the plain drain of the same run. */
    const variantRow = (label: string, v: PortwireFigures | undefined, than: string): string[][] =>
      v
        ? [[
            label,
            fmt(n),
            fmt(v.drain.ms / 1000, 2),
            fmt(v.drain.keysPerSec),
            cpu(v.drain),
            fmt(v.drain.otherCores, 2),
            `${fmt(v.drain.keysPerSec / pw.drain.keysPerSec, 2)} × ${than}; ${eldText(v.drain.eventLoopDelayMs)}`,
          ]]
        : [];
    const rows = [
      ['measure', 'keys', 'time s', 'keys/s', 'CPU µs/key: bench / etcd', 'others, cores', 'notes'],
      ['(a) raw 128-op txns, 4 in flight', fmt(raw4.keys), fmt(raw4.ms / 1000, 2), fmt(raw4.keysPerSec), cpu(raw4), fmt(raw4.otherCores, 2), ''],
      ['(a) raw 128-op txns, 16 in flight', fmt(raw16.keys), fmt(raw16.ms / 1000, 2), fmt(raw16.keysPerSec), cpu(raw16), fmt(raw16.otherCores, 2), ''],
      ['(a) same, again after (b) and (c)', fmt(raw16b.keys), fmt(raw16b.ms / 1000, 2), fmt(raw16b.keysPerSec), cpu(raw16b), fmt(raw16b.otherCores, 2), 'ratio uses the higher @16'],
      [
        `(b) journal: bindPort, ${callsInFlight} in flight`,
        fmt(n),
        fmt(pw.journal.ms / 1000, 2),
        fmt(pw.journal.keysPerSec),
        cpu(pw.journal),
        fmt(pw.journal.otherCores, 2),
        `ops/s; call p50 ${fmt(pw.journal.p50Ms, 1)} / p99 ${fmt(pw.journal.p99Ms, 1)} / max ${fmt(pw.journal.maxMs, 1)} ms`,
      ],
      ['(b) drain: leader → drained()', fmt(n), fmt(pw.drain.ms / 1000, 2), fmt(pw.drain.keysPerSec), cpu(pw.drain), fmt(pw.drain.otherCores, 2), eldText(pw.drain.eventLoopDelayMs)],
      [
        '(b) drain: start() → drained()',
        fmt(n),
        fmt(pw.drain.msFromStart / 1000, 2),
        fmt(pw.drain.keysPerSecFromStart),
        '',
        '',
        `start→leader ${fmt(pw.drain.startToLeaderMs)} ms, leader→1st txn acked ${fmt(pw.drain.leaderToFirstAppliedMs)} ms`,
      ],
      ['(b) this process idle, 1 s before the drain', '', '', '', '', '', eldText(pw.drain.idleEventLoopDelayMs)],
      ...variantRow('(b) drain, signed values (Ed25519 JWS)', signed, 'unsigned'),
      ...variantRow('(b) drain, return watcher on in the same process', watched, 'without'),
      ['(c) reference: 1 put, awaited 1 at a time', fmt(ref.keys), fmt(ref.ms / 1000, 2), fmt(ref.keysPerSec), cpu(ref), fmt(ref.otherCores, 2), ''],
    ];
    const loadAfter = load();
    const ratios = {
      drainOverRaw16: vsRaw,
      drainOverRaw16First: pw.drain.keysPerSec / raw16.keysPerSec,
      drainOverRaw16Again: pw.drain.keysPerSec / raw16b.keysPerSec,
      drainOverRaw4: pw.drain.keysPerSec / raw4.keysPerSec,
      drainOverReference: vsRef,
      ...(signed ? { signedOverUnsigned: signed.drain.keysPerSec / pw.drain.keysPerSec } : {}),
      ...(watched ? { returnWatcherOnOverOff: watched.drain.keysPerSec / pw.drain.keysPerSec } : {}),
    };
    console.log(formatTable(rows));
    console.log(`load average (1/5/15 min) before ${loadBefore.join(' / ')}, after ${loadAfter.join(' / ')} on ${cpus().length} cpus`);
    console.log(
      `verified with an independent client: ${fmt(pw.verify.keys)} keys, ${pw.verify.missing} missing, ` +
        `${pw.verify.unexpected} unexpected, ${pw.verify.wrong} wrong values; ${pw.drain.appliedEvents} txns applied`,
    );
    console.log(
      `drain / raw: ${fmt(ratios.drainOverRaw16First, 2)} (first @16), ${fmt(ratios.drainOverRaw16Again, 2)} (again @16), ` +
        `${fmt(ratios.drainOverRaw4, 2)} (@4)`,
    );
    console.log();
    console.log(
      formatTable([
        ['target', 'value', 'target', ''],
        ...targets.map((t) => [t.name, fmt(t.value, t.value < 100 ? 2 : 0), t.target, t.pass ? 'PASS' : 'FAIL']),
      ]),
    );

    const sample = encoded(`${run}/portwire`, 1000);
    const avg = (bufs: Buffer[]): number => Math.round(bufs.reduce((t, b) => t + b.length, 0) / bufs.length);
    return {
      params: {
        keyBytes: avg(sample.keys),
        valueBytes: avg(sample.values),
        ports: n,
        rawKeys,
        referenceKeys: refKeys,
        callsInFlight,
        opsPerTxn: OPS_PER_TXN,
        quick,
        etcdFastElection: true,
        etcdResetBetweenParts: true,
        signedRun: options.sign === true,
      },
      figures: {
        raw: { inFlight4: raw4, inFlight16: raw16, inFlight16Again: raw16b },
        portwire: pw,
        ...(signed ? { portwireSigned: signed } : {}),
        ...(watched ? { portwireReturnWatcherOn: watched } : {}),
        reference: ref,
        ratios,
        loadAverage: { before: loadBefore, after: loadAfter },
      },
      targets,
    };
  } finally {
    for (const rt of runtimes) await rt.stop().catch(() => undefined);
    client?.close();
    await etcd?.stop();
    removeDirs();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
