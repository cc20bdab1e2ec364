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
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createPool } from '../src/pool.ts';
import {
  encodeSecurityGroup, securityGroupToAclUnchecked, securityGroupToJsonUnchecked, validateRule, type NeutronRule,
} from '../src/translate.ts';
import { INLINE_THRESHOLD, streamGroupsInPool, translateGroupsInPool, type GroupRules } from '../src/translate-pool.ts';

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
  flags?: Record<string, string | boolean | undefined>;
}

/** mulberry32. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
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
 * Runs the benchmark; prints a table and returns its figures and targets
 * (the shape bench/index.ts writes to bench/results/translate.json).
 * @example
 * const report = await runTranslate({ rules: 100_000 });
 */
export async function runTranslate(opts: TranslateBenchOptions = {}): Promise<Record<string, unknown>> {
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

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    strict: false,
    options: { rules: { type: 'string' }, 'group-size': { type: 'string' }, pools: { type: 'string' }, repeat: { type: 'string' }, quick: { type: 'boolean' } },
  });
  runTranslate({ quick: values.quick === true, flags: values }).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
