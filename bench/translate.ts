/**
 * Benchmark of issue 3: security-group rule translation, on the same realistic
 * rules (default 1,000,000 in groups of 100), in one run:
 *   (a) the networking-vpp reference under python3 (bench/reference_acl_bench.py),
 *       translation alone and translation + json.dumps of every group value;
 *   (b) portwire inline on the main thread, the same two figures;
 *   (c) portwire through the Piscina pool, over pool sizes 1, 2, 3, 4;
 * and the inline-vs-pool latency curve behind INLINE_THRESHOLD.
 *
 * `npx tsx bench/translate.ts [--rules N] [--group-size N] [--pools 1,2,3,4] [--repeat N] [--quick]`
 * or `npm run bench -- translate [--quick] [--rules=N …]` (the harness needs `=`).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Etcd3, type IRequestOp } from 'etcd3';
import { pino } from 'pino';
import { createEtcdClient, deadline, prefixEnd, probeMaxTxnOps } from '../src/etcd.ts';
import { keyLayout } from '../src/keys.ts';
import { startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import { resolveOptions, type RuntimeOptions } from '../src/options.ts';
import { createPool } from '../src/pool.ts';
import { createRuntime } from '../src/runtime.ts';
import type { SecurityGroup } from '../src/secgroups.ts';
import {
  encodeSecurityGroup, securityGroupToAclUnchecked, securityGroupToJson, securityGroupToJsonUnchecked, validateRule, type NeutronRule,
} from '../src/translate.ts';
import { INLINE_THRESHOLD, streamGroupsInPool, translateGroupsInPool, type GroupRules } from '../src/translate-pool.ts';
import { formatTable } from './drain.ts';
import type { TargetCheck } from './index.ts';
import { rng } from '../test/helpers/rng.ts';

/** Options of {@link runTranslate}; the harness's flags (`quick`, `flags`) are read too. */
export interface TranslateBenchOptions {
  /** @default 1,000,000 (100,000 with `quick`) */
  rules?: number;
  /** @default 100 */
  groupSize?: number;
  /** @default [1, 2, 3, 4] */
  poolSizes?: number[];
  /** Timed rounds of each figure (the median is reported; python runs at most 3). @default 5 */
  repeat?: number;
  quick?: boolean;
  /** Run the end-to-end part alone (`--e2e-only`). @default false */
  e2eOnly?: boolean;
  /** Skip the end-to-end part (`--skip-e2e`). @default false */
  skipE2e?: boolean;
  /** The end-to-end part's sizes (see {@link EndToEndOptions}). */
  e2e?: Partial<EndToEndOptions>;
  flags?: Record<string, string | boolean | undefined>;
}


/**
 * Realistic Neutron groups: mostly TCP/UDP single ports and ranges, ICMP,
 * any-protocol default rules, numeric protocol text as Neutron stores it,
 * IPv4/IPv6 prefixes and remote groups.
 */
export function realisticGroups(rules: number, groupSize: number, seed = 42): GroupRules[] {
  const r = rng(seed);
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const int = (n: number) => Math.floor(r() * n);
  const uuid = () => {
    let s = '';
    for (let i = 0; i < 32; i++) s += '0123456789abcdef'[int(16)] + (i === 7 || i === 11 || i === 15 || i === 19 ? '-' : '');
    return s;
  };
  const remoteGroups = Array.from({ length: 500 }, uuid);
  const groups: GroupRules[] = [];
  for (let made = 0; made < rules; ) {
    const id = uuid();
    const list: NeutronRule[] = [];
    for (let i = 0; i < groupSize && made < rules; i++, made++) {
      const v6 = r() < 0.2;
      const x = r();
      const protocol = x < 0.45 ? 'tcp' : x < 0.65 ? 'udp' : x < 0.75 ? (v6 ? 'ipv6-icmp' : 'icmp') : x < 0.85 ? null : x < 0.93 ? pick(['6', '17', '1']) : pick(['gre', 'esp', 'sctp', 'vrrp', 'ah', '4']);
      let min: number | null = null;
      let max: number | null = null;
      if (protocol === 'tcp' || protocol === 'udp' || protocol === '6' || protocol === '17' || protocol === 'sctp') {
        const y = r();
        if (y < 0.6) min = max = pick([22, 80, 443, 3306, 5432, 8080, 53, 123, 6443, 9090]);
        else if (y < 0.85) max = (min = 1024 + int(30000)) + int(2000);
      } else if (protocol === 'icmp' || protocol === 'ipv6-icmp' || protocol === '1') {
        const y = r();
        if (y < 0.25) min = v6 ? 128 : 8;
        else if (y < 0.45) [min, max] = [v6 ? 135 : 3, int(4)];
      }
      let prefix: string | null = null;
      let remoteGroup: string | null = null;
      const z = r();
      if (z < 0.55) {
        prefix = v6
          ? r() < 0.2 ? '::/0' : `2001:db8:${int(65536).toString(16)}:${int(65536).toString(16)}::/64`
          : r() < 0.2 ? '0.0.0.0/0' : r() < 0.5 ? `10.${int(256)}.${int(256)}.0/24` : `192.168.${int(256)}.${int(256)}/32`;
      } else if (z < 0.85) {
        remoteGroup = r() < 0.3 ? id : pick(remoteGroups);
      }
      list.push({
        id: uuid(), security_group_id: id, direction: r() < 0.65 ? 'ingress' : 'egress', ethertype: v6 ? 'IPv6' : 'IPv4',
        protocol, port_range_min: min, port_range_max: max, remote_ip_prefix: prefix, remote_group_id: remoteGroup,
      });
    }
    groups.push({ id, rules: list });
  }
  return groups;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Median milliseconds of each function over `rounds` rounds, after `warm`
 * untimed ones; one run of each function per round, interleaved, so that a
 * shared machine's load falls on all of them alike.
 */
async function timeAll(rounds: number, warm: number, fns: Record<string, () => unknown>): Promise<Record<string, number>> {
  const times: Record<string, number[]> = {};
  for (let r = 0; r < warm + rounds; r++) {
    for (const [name, fn] of Object.entries(fns)) {
      const t = performance.now();
      await fn();
      if (r >= warm) (times[name] ??= []).push(performance.now() - t);
    }
  }
  return Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
}

/** Runs the reference under python3 over the groups file; returns median seconds. */
async function runPython(file: string, repeat: number): Promise<{ translate: number; json: number; python: string }> {
  const script = fileURLToPath(new URL('./reference_acl_bench.py', import.meta.url));
  const child = spawn('python3', [script, file, '--repeat', String(repeat)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  if (code !== 0) throw new Error(`reference_acl_bench.py exited with ${code}`);
  const res = JSON.parse(out) as { translate_s: number[]; translate_json_s: number[]; python: string };
  return { translate: median(res.translate_s), json: median(res.translate_json_s), python: res.python };
}

/** Rules/s of `rules` rules done in `ms`. */
const rate = (rules: number, ms: number): number => Math.round((rules / ms) * 1000);
const fmt = (n: number): string => n.toLocaleString('en-US');
const load = (): string => loadavg().map((l) => l.toFixed(2)).join(' ');
const ratio = (x: number, y: number): number => Math.round((x / y) * 100) / 100;

interface CurvePoint {
  rules: number;
  inlineMs: number;
  poolMs: number;
  /** Main-thread time (event-loop active) of the pool path. */
  poolMainMs: number;
}

/**
 * One batch, inline vs through a pool of 2, for batch sizes around the
 * threshold: latency of each, and the main thread's busy time with the pool.
 */
async function thresholdCurve(all: GroupRules[], groupSize: number): Promise<CurvePoint[]> {
  const pool = createPool({ size: 2 });
  const curve: CurvePoint[] = [];
  const ms = (x: number) => Math.round(x * 1000) / 1000;
  try {
    const total = all.reduce((n, g) => n + g.rules.length, 0);
    for (const rules of [100, 500, 1000, 2000, 5000, 10000, 20000, 50000].filter((n) => n <= total)) {
      const batch = all.slice(0, Math.max(1, Math.ceil(rules / groupSize)));
      const input = rules < groupSize ? [{ id: batch[0].id, rules: batch[0].rules.slice(0, rules) }] : batch;
      const busy: number[] = [];
      const t = await timeAll(rules >= 20000 ? 15 : 41, 10, {
        inline: () => input.map((g) => securityGroupToJsonUnchecked(g.id, g.rules)),
        pool: async () => {
          const elu = performance.eventLoopUtilization();
          await translateGroupsInPool(pool, input);
          busy.push(performance.eventLoopUtilization(elu).active);
        },
      });
      curve.push({ rules, inlineMs: ms(t.inline), poolMs: ms(t.pool), poolMainMs: ms(median(busy)) });
    }
  } finally {
    await pool.destroy();
  }
  return curve;
}

/**
 * Parts (a), (b), (c) and the threshold curve: prints their table and returns
 * their figures and targets.
 */
async function runTranslation(opts: TranslateBenchOptions): Promise<PartReport> {
  const flag = (name: string) => opts.flags?.[name];
  const rules = opts.rules ?? (flag('rules') ? Number(flag('rules')) : opts.quick ? 100_000 : 1_000_000);
  const groupSize = opts.groupSize ?? (flag('group-size') ? Number(flag('group-size')) : 100);
  const poolSizes = opts.poolSizes ?? (typeof flag('pools') === 'string' ? String(flag('pools')).split(',').map(Number) : [1, 2, 3, 4]);
  const repeat = opts.repeat ?? (flag('repeat') ? Number(flag('repeat')) : 5);
  const loads: Record<string, string> = { start: load() };

  const dir = mkdtempSync(join(tmpdir(), 'portwire-translate-'));
  const pools = new Map(poolSizes.map((size) => [size, createPool({ size })]));
  try {
    const file = join(dir, 'groups.jsonl');
    const lines = realisticGroups(rules, groupSize).map((g) => JSON.stringify(g));
    writeFileSync(file, lines.join('\n') + '\n');
    // The host's rules arrive as parsed JSON: use the very text python reads.
    const groups = lines.map((l) => JSON.parse(l) as GroupRules);
    lines.length = 0;
    console.log(`translate: ${fmt(rules)} rules in ${fmt(groups.length)} groups of ${groupSize}; load ${loads.start}`);

    const py = await runPython(file, Math.min(repeat, 3));
    loads.afterPython = load();
    const a = { translate: rules / py.translate, json: rules / py.json };

    const validateMs = (await timeAll(3, 1, {
      validate: () => {
        for (const g of groups) for (let i = 0; i < g.rules.length; i++) validateRule(g.rules[i]);
      },
    })).validate;
    const inline = await timeAll(repeat, 1, {
      translate: () => {
        for (const g of groups) securityGroupToAclUnchecked(g.id, g.rules);
      },
      onePass: () => {
        for (const g of groups) securityGroupToJsonUnchecked(g.id, g.rules);
      },
      encoder: () => {
        for (const g of groups) encodeSecurityGroup(securityGroupToAclUnchecked(g.id, g.rules));
      },
      stringify: () => {
        for (const g of groups) JSON.stringify(securityGroupToAclUnchecked(g.id, g.rules));
      },
    });
    loads.afterInline = load();

    // (c) against the inline one-pass encoder, interleaved in the same rounds.
    const poolFns: Record<string, () => unknown> = {
      inline: () => {
        for (const g of groups) securityGroupToJsonUnchecked(g.id, g.rules);
      },
    };
    for (const [size, pool] of pools) poolFns[`stream${size}`] = () => streamGroupsInPool(pool, groups, () => {});
    const owned = pools.get(2) ?? pools.values().next().value;
    if (owned) poolFns.owned = () => translateGroupsInPool(owned, groups);
    poolFns.inlineKept = () => groups.map((g) => securityGroupToJsonUnchecked(g.id, g.rules));
    const viaPool = await timeAll(repeat, 2, poolFns);
    loads.afterPool = load();
    for (const pool of pools.values()) await pool.destroy();
    pools.clear();
    const curve = await thresholdCurve(groups, groupSize);

    const b = { translate: rate(rules, inline.translate), json: rate(rules, Math.min(inline.onePass, inline.encoder, inline.stringify)) };
    const c = Object.fromEntries(poolSizes.map((size) => [size, rate(rules, viaPool[`stream${size}`])]));
    const bSameRounds = rate(rules, viaPool.inline);
    const figures = {
      rules, groups: groups.length, groupSize, python: py.python, node: process.version, loadAverage: loads,
      a_reference_rules_per_s: { translate: Math.round(a.translate), translate_json: Math.round(a.json) },
      b_inline_rules_per_s: {
        translate: b.translate, translate_json_one_pass: rate(rules, inline.onePass),
        translate_then_encodeSecurityGroup: rate(rules, inline.encoder), translate_then_JSON_stringify: rate(rules, inline.stringify),
        validateRule: rate(rules, validateMs), one_pass_in_pool_rounds: bSameRounds,
      },
      c_pool_rules_per_s: { streamed: c, strings_pool2: viaPool.owned ? rate(rules, viaPool.owned) : null, inline_strings_kept: rate(rules, viaPool.inlineKept) },
      ratios: {
        b_over_a_translate: ratio(b.translate, a.translate), b_over_a_json: ratio(b.json, a.json),
        c2_over_b: ratio(c[2] ?? Math.max(...Object.values(c)), bSameRounds),
        c_best_over_b: ratio(Math.max(...Object.values(c)), bSameRounds),
        c2_strings_over_b_strings_kept: viaPool.owned ? ratio(viaPool.inlineKept, viaPool.owned) : null,
        encodeSecurityGroup_over_JSON_stringify: ratio(inline.stringify, inline.encoder),
      },
      threshold: { chosen: INLINE_THRESHOLD, curve },
    };
    const targets = [
      { name: 'b/a translation', value: figures.ratios.b_over_a_translate, target: '>= 10', pass: figures.ratios.b_over_a_translate >= 10 },
      { name: 'b/a translation + JSON', value: figures.ratios.b_over_a_json, target: '>= 5', pass: figures.ratios.b_over_a_json >= 5 },
      { name: 'c(2 threads)/b', value: figures.ratios.c2_over_b, target: '>= 1.6', pass: figures.ratios.c2_over_b >= 1.6 },
    ];

    const row = (what: string, t: number | string, j?: number) =>
      console.log(`  ${what.padEnd(46)} ${(typeof t === 'number' ? fmt(t) : t).padStart(12)}${j === undefined ? '' : fmt(j).padStart(14)}`);
    row('rules/s', 'translate', undefined);
    console.log(`  ${''.padEnd(46)} ${''.padStart(12)}${'+ JSON'.padStart(14)}`);
    row(`(a) reference, python ${py.python}`, Math.round(a.translate), Math.round(a.json));
    row('(b) inline, one pass (securityGroupToJson)', b.translate, rate(rules, inline.onePass));
    row('    inline, then encodeSecurityGroup', '', rate(rules, inline.encoder));
    row('    inline, then JSON.stringify', '', rate(rules, inline.stringify));
    row('    inline one pass, in the pool rounds', '', bSameRounds);
    row('    validateRule alone (the API door)', rate(rules, validateMs));
    for (const size of poolSizes) row(`(c) pool of ${size}, streamed`, '', c[size]);
    if (viaPool.owned) row('    pool of 2, strings kept (translateGroupsInPool)', '', rate(rules, viaPool.owned));
    row('    inline, strings kept (same rounds)', '', rate(rules, viaPool.inlineKept));
    console.log('  one batch (median ms):   inline   pool of 2   its main-thread time');
    for (const p of curve) {
      console.log(`    ${String(p.rules).padStart(6)} rules ${p.inlineMs.toFixed(3).padStart(9)} ${p.poolMs.toFixed(3).padStart(11)} ${p.poolMainMs.toFixed(3).padStart(11)}`);
    }
    for (const t of targets) console.log(`  ${t.pass ? 'PASS' : 'FAIL'} ${t.name} = ${t.value} (target ${t.target})`);
    console.log(`  load average (1, 5, 15 min): ${JSON.stringify(loads)}`);
    return { figures, targets, params: { rules, groupSize, poolSizes, repeat } };
  } finally {
    for (const pool of pools.values()) await pool.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- end to end

/** What each part of this scenario returns (bench/index.ts's `ScenarioReport`). */
interface PartReport {
  figures: Record<string, unknown>;
  targets: TargetCheck[];
  params: Record<string, unknown>;
}

/** Options of the end-to-end part (flags: `--e2e-groups=N --e2e-rules-per-group=N --e2e-in-flight=N --e2e-batch=N`). */
export interface EndToEndOptions {
  /** Groups created and drained. @default 10,000 (1,000 with `quick`) */
  groups: number;
  /** Realistic rules per group. @default 50 */
  rulesPerGroup: number;
  /** `createSecurityGroup` calls in flight in (i) (a sliding window). @default 100 */
  callsInFlight: number;
  /** Groups per `createSecurityGroups` call in (ii) (calls made one at a time). @default 500 */
  batchGroups: number;
  /** Groups whose etcd value is read back and compared. @default 200 */
  sample: number;
}

const E2E_CALL_TIMEOUT_MS = 5000;
/** Txns in flight of the raw baseline (the drainer's default `batch.inFlight`). */
const RAW_IN_FLIGHT = 16;

/** The groups of the end-to-end part, as the host passes them, and their expected etcd values. */
interface E2eData {
  groups: { id: string; rules: NeutronRule[] }[];
  sgs: SecurityGroup[];
  /** `securityGroupToJson(id, rules)` of each group. */
  values: string[];
  rules: number;
}

interface JournalFigures {
  groups: number;
  rules: number;
  /** API calls made. */
  calls: number;
  callsInFlight: number;
  groupsPerCall: number;
  ms: number;
  groupsPerSec: number;
  rulesPerSec: number;
  callMs: { p50: number; p99: number; max: number };
  /** CPU ms of this process (all threads) while journaling. */
  cpuMs: number;
  journalDepth: number;
}

interface DrainFigures {
  keys: number;
  rules: number;
  /** From the `leader` event to `drained()`. */
  ms: number;
  keysPerSec: number;
  rulesPerSec: number;
  /** MB (10^6 bytes) of keys and values per second. */
  mbPerSec: number;
  msFromStart: number;
  startToLeaderMs: number;
  leaderToFirstAppliedMs: number;
  /** `applied` events: txns etcd acknowledged. */
  txnsApplied: number;
  appliedKeys: number;
  keysPerTxn: number;
  bytesPerTxn: number;
  deadLetters: number;
  eventLoopDelayMs: { p50: number; p99: number; max: number };
  cpuMs: number;
}

interface VerifyFigures {
  /** Keys under `global/secgroups/`. */
  secgroupKeys: number;
  /** Keys under the prefix that are neither secgroup nor election keys. */
  otherKeys: number;
  sampled: number;
  equal: number;
  wrong: number;
  missing: number;
  ok: boolean;
}

interface ModeFigures {
  journal: JournalFigures;
  drain: DrainFigures;
  verify: VerifyFigures;
}

interface RawFigures {
  keys: number;
  rules: number;
  txns: number;
  inFlight: number;
  ms: number;
  keysPerSec: number;
  rulesPerSec: number;
  mbPerSec: number;
}

/** Runs `n` tasks with at most `width` running at once (a sliding window, not waves). */
async function slidingWindow(n: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(width, n) }, lane));
}

const pct = (sorted: Float64Array, p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
const ms2 = (x: number): number => Math.round(x * 100) / 100;
const cpuMsSince = (c0: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(c0);
  return Math.round((c.user + c.system) / 1000);
};

/** Empties what the run wrote, compacts and defragments: every part starts from the same etcd state. */
async function resetEtcd(client: Etcd3, runPrefix: string): Promise<void> {
  const res = await client.kv.deleteRange({ key: Buffer.from(runPrefix), range_end: prefixEnd(Buffer.from(runPrefix)) }, deadline(60_000));
  await client.kv.compact({ revision: res.header.revision, physical: true }, deadline(60_000));
  await client.maintenance.defragment(deadline(120_000));
}

/** The groups, built (and their expected values encoded) before any clock starts. */
function e2eData(o: EndToEndOptions): E2eData {
  const groups = realisticGroups(o.groups * o.rulesPerGroup, o.rulesPerGroup, 4242).map((g) => ({ id: g.id, rules: [...g.rules] }));
  return {
    groups,
    sgs: groups.map((g) => ({ id: g.id, security_group_rules: g.rules })),
    values: groups.map((g) => securityGroupToJson(g.id, g.rules)),
    rules: o.groups * o.rulesPerGroup,
  };
}

/**
 * Journals every group through the API in a runtime without forwarder:
 * (i) `perCall`: one `createSecurityGroup` per group, `callsInFlight` at a time;
 * (ii) `batched`: `createSecurityGroups` with `batchGroups` groups, one call at a time.
 */
async function journalGroups(mode: 'perCall' | 'batched', common: RuntimeOptions, data: E2eData, o: EndToEndOptions): Promise<JournalFigures> {
  // the resync role is benchmarked separately and would otherwise run a full resync when it gains leadership in the middle of the measured drain
  const writer = createRuntime({ ...common, forwarder: false, resync: { enabled: false } });
  await writer.start();
  try {
    const n = data.sgs.length;
    const calls = mode === 'perCall' ? n : Math.ceil(n / o.batchGroups);
    const latency = new Float64Array(calls);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    if (mode === 'perCall') {
      await slidingWindow(n, o.callsInFlight, async (i) => {
        const t = performance.now();
        await writer.createSecurityGroup(data.sgs[i]);
        latency[i] = performance.now() - t;
      });
    } else {
      for (let c = 0; c < calls; c++) {
        const batch = data.sgs.slice(c * o.batchGroups, (c + 1) * o.batchGroups);
        const t = performance.now();
        await writer.createSecurityGroups(batch);
        latency[c] = performance.now() - t;
      }
    }
    const ms = performance.now() - t0;
    const cpuMs = cpuMsSince(c0);
    const journalDepth = writer.status().journalDepth;
    latency.sort();
    return {
      groups: n,
      rules: data.rules,
      calls,
      callsInFlight: mode === 'perCall' ? o.callsInFlight : 1,
      groupsPerCall: mode === 'perCall' ? 1 : o.batchGroups,
      ms: ms2(ms),
      groupsPerSec: rate(n, ms),
      rulesPerSec: rate(data.rules, ms),
      callMs: { p50: ms2(pct(latency, 50)), p99: ms2(pct(latency, 99)), max: ms2(latency[calls - 1]) },
      cpuMs,
      journalDepth,
    };
  } finally {
    await writer.stop();
  }
}

/** A runtime with the forwarder opens the same data directory and drains it; timed from `leader` to `drained()`. */
async function drainGroups(common: RuntimeOptions, data: E2eData, totalBytes: number): Promise<DrainFigures> {
  // the resync role is benchmarked separately and would otherwise run a full resync when it gains leadership in the middle of the measured drain
  const drainer = createRuntime({ ...common, forwarder: true, resync: { enabled: false } });
  const eld = monitorEventLoopDelay({ resolution: 1 });
  let tLeader = NaN;
  let tFirstApplied = NaN;
  let c0: NodeJS.CpuUsage | undefined;
  let txnsApplied = 0;
  let appliedKeys = 0;
  drainer.on('leader', () => {
    if (!Number.isNaN(tLeader)) return;
    tLeader = performance.now();
    c0 = process.cpuUsage();
    eld.enable();
  });
  drainer.on('applied', (e) => {
    if (Number.isNaN(tFirstApplied)) tFirstApplied = performance.now();
    txnsApplied++;
    appliedKeys += e.keys;
  });
  try {
    const s0 = performance.now();
    await drainer.start();
    await drainer.drained({ timeoutMs: 600_000 });
    const tDrained = performance.now();
    eld.disable();
    if (!c0) throw new Error('drained without a leader event');
    const cpuMs = cpuMsSince(c0);
    const ms = tDrained - tLeader;
    const n = data.groups.length;
    const eldMs = (x: number): number => Math.round(x / 1e4) / 100;
    return {
      keys: n,
      rules: data.rules,
      ms: ms2(ms),
      keysPerSec: rate(n, ms),
      rulesPerSec: rate(data.rules, ms),
      mbPerSec: Math.round(totalBytes / 1e6 / (ms / 1000)),
      msFromStart: ms2(tDrained - s0),
      startToLeaderMs: ms2(tLeader - s0),
      leaderToFirstAppliedMs: ms2(tFirstApplied - tLeader),
      txnsApplied,
      appliedKeys,
      keysPerTxn: Math.round((appliedKeys / txnsApplied) * 10) / 10,
      bytesPerTxn: Math.round(totalBytes / txnsApplied),
      deadLetters: drainer.status().deadLetters,
      eventLoopDelayMs: { p50: eldMs(eld.percentile(50)), p99: eldMs(eld.percentile(99)), max: eldMs(eld.max) },
      cpuMs,
    };
  } finally {
    await drainer.stop();
  }
}

/**
 * Reads etcd back with an independent client (plain etcd3, not the project's
 * settings): counts every key under the prefix, and compares the values of
 * `sample` groups, evenly spread, with `securityGroupToJson(id, rules)` text.
 */
async function verifyGroups(endpoints: string[], prefix: string, data: E2eData, sample: number): Promise<VerifyFigures> {
  const reader = new Etcd3({
    hosts: endpoints.map((e) => e.replace(/^https?:\/\//, '')),
    grpcOptions: { 'grpc.max_receive_message_length': 64 * 1024 * 1024 },
  });
  try {
    const keys = keyLayout(prefix);
    const count = async (p: string): Promise<number> => {
      const res = await reader.kv.range({ key: Buffer.from(p), range_end: prefixEnd(Buffer.from(p)), count_only: true }, deadline(30_000));
      return Number(res.count);
    };
    const secgroupKeys = await count(`${keys.secgroups}/`);
    const otherKeys = (await count(`${keys.prefix}/`)) - secgroupKeys - (await count(`${keys.election}/`));
    const n = data.groups.length;
    const sampled = Math.min(sample, n);
    let equal = 0;
    let wrong = 0;
    let missing = 0;
    for (let j = 0; j < sampled; j++) {
      const g = data.groups[Math.floor((j * n) / sampled)];
      const res = await reader.kv.range({ key: Buffer.from(keys.secgroup(g.id)) }, deadline(30_000));
      if (res.kvs.length === 0) missing++;
      else if (res.kvs[0].value.toString() === securityGroupToJson(g.id, g.rules)) equal++;
      else wrong++;
    }
    return { secgroupKeys, otherKeys, sampled, equal, wrong, missing, ok: secgroupKeys === n && otherKeys === 0 && equal === sampled };
  } finally {
    reader.close();
  }
}

/**
 * The physical limit for these values: the same keys and values put by plain
 * txns (no compare), cut as the drainer cuts them (at most `maxOps` ops and
 * `maxBytes` of key + value + 16 per op), `RAW_IN_FLIGHT` in flight.
 */
async function rawBaseline(client: Etcd3, prefix: string, data: E2eData, maxOps: number, maxBytes: number): Promise<RawFigures> {
  const layout = keyLayout(prefix);
  const keys = data.groups.map((g) => Buffer.from(layout.secgroup(g.id)));
  const values = data.values.map((v) => Buffer.from(v));
  const starts = [0];
  let bytes = 0;
  let total = 0;
  for (let i = 0, ops = 0; i < keys.length; i++) {
    const size = keys[i].length + values[i].length + 16;
    if (ops > 0 && (ops + 1 > maxOps || bytes + size > maxBytes)) {
      starts.push(i);
      ops = 0;
      bytes = 0;
    }
    ops++;
    bytes += size;
    total += keys[i].length + values[i].length;
  }
  starts.push(keys.length);
  const txns = starts.length - 1;
  const t0 = performance.now();
  await slidingWindow(txns, RAW_IN_FLIGHT, async (b) => {
    const success: IRequestOp[] = [];
    for (let i = starts[b]; i < starts[b + 1]; i++) success.push({ request_put: { key: keys[i], value: values[i] } });
    await client.kv.txn({ compare: [], success, failure: [] }, deadline(E2E_CALL_TIMEOUT_MS * 4));
  });
  const ms = performance.now() - t0;
  return {
    keys: keys.length,
    rules: data.rules,
    txns,
    inFlight: RAW_IN_FLIGHT,
    ms: ms2(ms),
    keysPerSec: rate(keys.length, ms),
    rulesPerSec: rate(data.rules, ms),
    mbPerSec: Math.round(total / 1e6 / (ms / 1000)),
  };
}

/**
 * The end-to-end part (issue 3's last sentence): `groups` groups of
 * `rulesPerGroup` realistic rules created through the API, (i) one
 * `createSecurityGroup` per group, `callsInFlight` in flight, and (ii)
 * `createSecurityGroups` in batches of `batchGroups`; each journaled by a
 * runtime without forwarder, then drained into a private etcd by a second
 * runtime on the same data directory (as bench/drain.ts), then read back
 * with an independent client. A raw-txn baseline puts the same values.
 * Between parts etcd is emptied, compacted and defragmented.
 */
async function runEndToEnd(o: EndToEndOptions): Promise<PartReport> {
  const step = (s: string): void => void process.stderr.write(`translate e2e: ${s}\n`);
  const data = e2eData(o);
  const n = data.groups.length;
  const valueBytes = data.values.map((v) => Buffer.byteLength(v));
  const run = `/bench-translate-${Date.now().toString(36)}`;
  const keyBytes = Buffer.byteLength(keyLayout(`${run}/perCall`).secgroup(data.groups[0].id));
  const totalBytes = valueBytes.reduce((t, b) => t + b, 0) + n * keyBytes;
  const limits = resolveOptions().batch;
  const maxBytes = Math.min(limits.maxTxnBytes, limits.maxRequestBytes - 1024);
  const logger = pino({ level: 'warn' }, pino.destination(2));
  const dirs: string[] = [];
  let etcd: ManagedEtcd | undefined;
  let client: Etcd3 | undefined;
  const loadBefore = load();
  try {
    step(`${fmt(n)} groups × ${o.rulesPerGroup} rules; starting etcd`);
    etcd = await startManagedEtcd({ fastElection: true });
    client = createEtcdClient({ endpoints: etcd.endpoints, callTimeoutMs: E2E_CALL_TIMEOUT_MS });
    const maxOps = await probeMaxTxnOps(client, { timeoutMs: E2E_CALL_TIMEOUT_MS });
    // warm-up (connection, JIT, etcd's first writes); not measured
    const warm = Math.min(n, 1000);
    await rawBaseline(client, `${run}/warmup`, { ...data, groups: data.groups.slice(0, warm), values: data.values.slice(0, warm) }, maxOps, maxBytes);
    await resetEtcd(client, `${run}/`);

    const modes: Record<'perCall' | 'batched', ModeFigures> = {} as Record<'perCall' | 'batched', ModeFigures>;
    for (const mode of ['perCall', 'batched'] as const) {
      const dataDir = mkdtempSync(join(tmpdir(), `portwire-translate-e2e-${mode}-`));
      dirs.push(dataDir);
      const prefix = `${run}/${mode}`;
      const common: RuntimeOptions = { etcd: { endpoints: etcd.endpoints, callTimeoutMs: E2E_CALL_TIMEOUT_MS }, prefix, dataDir, logger };
      step(mode === 'perCall' ? `(i) ${fmt(n)} createSecurityGroup calls, ${o.callsInFlight} in flight` : `(ii) createSecurityGroups × ${o.batchGroups}`);
      const journal = await journalGroups(mode, common, data, o);
      step(`    drain of ${fmt(journal.journalDepth)} entries`);
      const drain = await drainGroups(common, data, totalBytes);
      const verify = await verifyGroups(etcd.endpoints, prefix, data, o.sample);
      modes[mode] = { journal, drain, verify };
      await resetEtcd(client, `${run}/`);
      rmSync(dataDir, { recursive: true, force: true });
    }
    step(`raw etcd baseline: the same ${fmt(n)} values, ${RAW_IN_FLIGHT} txns in flight`);
    const raw = await rawBaseline(client, `${run}/raw`, data, maxOps, maxBytes);
    await resetEtcd(client, `${run}/`);
    const loadAfter = load();

    const mean = Math.round(valueBytes.reduce((t, b) => t + b, 0) / n);
    const values = { meanBytes: mean, minBytes: Math.min(...valueBytes), maxBytes: Math.max(...valueBytes), keyBytes, totalBytes };
    const batching = {
      maxTxnOps: maxOps,
      maxTxnBytes: maxBytes,
      maxRequestBytes: limits.maxRequestBytes,
      minTxnsByOps: Math.ceil(n / maxOps),
      minTxnsByBytes: Math.ceil(totalBytes / maxBytes),
      groupsPerTxnByBytes: Math.floor(maxBytes / (mean + keyBytes + 16)),
    };
    const { perCall, batched } = modes;
    const rows = [
      ['measure', 'groups', 'rules', 'time s', 'groups/s (keys/s)', 'rules/s', 'MB/s', 'notes'],
      ...(
        [
          ['(i)', perCall, `createSecurityGroup, ${o.callsInFlight} in flight`],
          ['(ii)', batched, `createSecurityGroups × ${o.batchGroups}, 1 at a time`],
        ] as const
      ).flatMap(([tag, m, how]) => [
        [
          `${tag} journal: ${how}`,
          fmt(m.journal.groups),
          fmt(m.journal.rules),
          (m.journal.ms / 1000).toFixed(2),
          fmt(m.journal.groupsPerSec),
          fmt(m.journal.rulesPerSec),
          fmt(Math.round(totalBytes / 1e6 / (m.journal.ms / 1000))),
          `call p50 ${m.journal.callMs.p50} / p99 ${m.journal.callMs.p99} / max ${m.journal.callMs.max} ms`,
        ],
        [
          `${tag} drain: leader → drained()`,
          fmt(m.drain.keys),
          fmt(m.drain.rules),
          (m.drain.ms / 1000).toFixed(2),
          fmt(m.drain.keysPerSec),
          fmt(m.drain.rulesPerSec),
          fmt(m.drain.mbPerSec),
          `${m.drain.txnsApplied} txns applied (${m.drain.keysPerTxn} keys, ${fmt(Math.round(m.drain.bytesPerTxn / 1024))} KiB each); ` +
            `start→leader ${fmt(Math.round(m.drain.startToLeaderMs))} ms; event loop p99 ${m.drain.eventLoopDelayMs.p99} / max ${m.drain.eventLoopDelayMs.max} ms`,
        ],
      ]),
      [
        `raw etcd: same values, plain txns, ${RAW_IN_FLIGHT} in flight`,
        fmt(raw.keys),
        fmt(raw.rules),
        (raw.ms / 1000).toFixed(2),
        fmt(raw.keysPerSec),
        fmt(raw.rulesPerSec),
        fmt(raw.mbPerSec),
        `${raw.txns} txns, cut as the drainer cuts`,
      ],
    ];
    console.log(`end-to-end: ${fmt(n)} groups × ${o.rulesPerGroup} rules = ${fmt(data.rules)} rules through the API, drained to etcd`);
    console.log(
      `  value: ${fmt(mean)} bytes per group (min ${fmt(values.minBytes)}, max ${fmt(values.maxBytes)}), key ${keyBytes} bytes; ` +
        `${(totalBytes / 1e6).toFixed(1)} MB in all`,
    );
    console.log(
      `  txn limits: ${maxOps} ops (read from etcd), ${fmt(maxBytes)} bytes (request limit ${fmt(limits.maxRequestBytes)}) ` +
        `→ ${batching.groupsPerTxnByBytes} groups per txn by bytes; at least ${batching.minTxnsByBytes} txns by bytes, ${batching.minTxnsByOps} by ops`,
    );
    for (const line of formatTable(rows).split('\n')) console.log(`  ${line}`);
    for (const [tag, m] of [['(i)', perCall], ['(ii)', batched]] as const) {
      const v = m.verify;
      console.log(
        `  ${tag} verified with an independent client: ${fmt(v.secgroupKeys)} secgroup keys (expected ${fmt(n)}), ${v.otherKeys} other keys; ` +
          `${v.equal}/${v.sampled} sampled values equal securityGroupToJson, ${v.wrong} wrong, ${v.missing} missing; ` +
          `${m.drain.appliedKeys} keys in applied events, ${m.drain.deadLetters} dead letters`,
      );
    }
    console.log(`  drain / raw etcd: (i) ${ratio(perCall.drain.keysPerSec, raw.keysPerSec)}, (ii) ${ratio(batched.drain.keysPerSec, raw.keysPerSec)}`);
    console.log(`  load average: before ${loadBefore}, after ${loadAfter}`);

    const targets: TargetCheck[] = (
      [
        ['(i)', perCall],
        ['(ii)', batched],
      ] as const
    ).map(([tag, m]) => ({
      name: `e2e ${tag}: etcd holds exactly the groups, sampled values equal`,
      value: m.verify.ok && m.drain.deadLetters === 0 ? 1 : 0,
      target: '= 1',
      pass: m.verify.ok && m.drain.deadLetters === 0,
    }));
    for (const t of targets) console.log(`  ${t.pass ? 'PASS' : 'FAIL'} ${t.name}`);
    return {
      figures: {
        groups: n,
        rulesPerGroup: o.rulesPerGroup,
        rules: data.rules,
        values,
        batching,
        perCall,
        batched,
        raw,
        ratios: { perCallDrainOverRaw: ratio(perCall.drain.keysPerSec, raw.keysPerSec), batchedDrainOverRaw: ratio(batched.drain.keysPerSec, raw.keysPerSec) },
        loadAverage: { before: loadBefore, after: loadAfter },
      },
      targets,
      params: { ...o, rawInFlight: RAW_IN_FLIGHT, etcdFastElection: true, etcdResetBetweenParts: true },
    };
  } finally {
    client?.close();
    await etcd?.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
}

/**
 * Runs the benchmark: parts (a), (b), (c) and the threshold curve, then the
 * end-to-end part; prints their tables and returns their figures and targets
 * (the shape bench/index.ts writes to bench/results/translate.json).
 * `--e2e-only` runs the end-to-end part alone, `--skip-e2e` the others alone.
 * @example
 * const report = await runTranslate({ rules: 100_000 });
 */
export async function runTranslate(opts: TranslateBenchOptions = {}): Promise<PartReport> {
  const flag = (name: string) => opts.flags?.[name];
  const num = (name: string, fallback: number): number => {
    const v = flag(name);
    if (v === undefined || v === false) return fallback;
    const x = Number(v);
    if (!Number.isInteger(x) || x <= 0) throw new Error(`--${name} must be a positive integer, got ${String(v)}`);
    return x;
  };
  const e2eOnly = opts.e2eOnly ?? flag('e2e-only') === true;
  const skipE2e = opts.skipE2e ?? flag('skip-e2e') === true;
  const e2e: EndToEndOptions = {
    groups: opts.e2e?.groups ?? num('e2e-groups', opts.quick ? 1_000 : 10_000),
    rulesPerGroup: opts.e2e?.rulesPerGroup ?? num('e2e-rules-per-group', 50),
    callsInFlight: opts.e2e?.callsInFlight ?? num('e2e-in-flight', 100),
    batchGroups: opts.e2e?.batchGroups ?? num('e2e-batch', 500),
    sample: opts.e2e?.sample ?? 200,
  };
  const parts = e2eOnly ? undefined : await runTranslation(opts);
  if (skipE2e && parts) return parts;
  const end = await runEndToEnd(e2e);
  return {
    figures: { ...parts?.figures, e2e: end.figures },
    targets: [...(parts?.targets ?? []), ...end.targets],
    params: { ...parts?.params, e2e: end.params, e2eOnly },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    strict: false,
    options: {
      rules: { type: 'string' }, 'group-size': { type: 'string' }, pools: { type: 'string' }, repeat: { type: 'string' }, quick: { type: 'boolean' },
      'e2e-only': { type: 'boolean' }, 'skip-e2e': { type: 'boolean' }, 'e2e-groups': { type: 'string' }, 'e2e-rules-per-group': { type: 'string' },
      'e2e-in-flight': { type: 'string' }, 'e2e-batch': { type: 'string' },
    },
  });
  runTranslate({ quick: values.quick === true, flags: values }).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
