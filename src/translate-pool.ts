/**
 * Batch translation through the Piscina pool: groups are packed into compact
 * columns (an Int32Array, transferred, and one joined string of the rules'
 * prefixes and group ids), each worker writes the groups' JSON values into one
 * buffer that is moved back, and the caller gets one byte view per group.
 */
import type { Piscina } from 'piscina';
import { protocolNumber, securityGroupToJsonUnchecked, type NeutronRule } from './translate.ts';
import { dataStart, UNSET, type TranslateGroupsTask } from './translate-task.ts';

/** A security group and its rules (rules of other groups are skipped, as the reference does). */
export interface GroupRules {
  id: string;
  rules: readonly NeutronRule[];
}

/**
 * Below this many rules, translating inline on the main thread is cheaper than
 * a pool round trip. Measured with `npx tsx bench/translate.ts --threshold`
 * (2 cores, Node 20.20, one batch of realistic groups of 100 rules, pool of 2,
 * median latency inline vs pool):
 *   100 rules 0.03 ms vs 0.16 ms; 500: 0.12 vs 0.22; 1,000: 0.24 vs 0.30;
 *   2,000: 0.47 vs 0.42; 5,000: 1.2 vs 0.85; 20,000: 4.8 vs 2.9.
 * The pool starts to win between 1,000 and 2,000 rules.
 */
export const INLINE_THRESHOLD = 1500;

/**
 * Rules per pool task: big enough to amortise a round trip (~0.1 ms), small
 * enough that every thread gets several tasks.
 * @default between 2,048 and 32,768, about a quarter of the work per thread
 */
function chunkRules(total: number, threads: number): number {
  return Math.max(2048, Math.min(32768, Math.ceil(total / (threads * 4))));
}

/** Packs groups[from, to) into a task; main-thread cost is a few property reads per rule. */
export function packGroups(groups: readonly GroupRules[], from: number, to: number): TranslateGroupsTask {
  let n = 0;
  for (let g = from; g < to; g++) n += groups[g].rules.length;
  const meta = new Int32Array(2 + (to - from) + 4 * n);
  const parts: string[] = [];
  let w = 2 + (to - from);
  let total = 0;
  for (let g = from; g < to; g++) {
    const { id, rules } = groups[g];
    let count = 0;
    for (let i = 0; i < rules.length; i++) {
      const r = rules[i];
      if (r.security_group_id !== id) continue;
      const v6 = r.ethertype === 'IPv6';
      let word = protocolNumber(r.protocol, v6) | (v6 ? 256 : 0) | (r.direction === 'ingress' ? 512 : 0);
      let strLen = 0;
      const prefix = r.remote_ip_prefix;
      if (prefix) {
        word |= 1 << 10;
        strLen = prefix.length;
        parts.push(prefix);
      } else {
        const group = r.remote_group_id;
        if (group) {
          word |= 2 << 10;
          strLen = group.length;
          parts.push(group);
        }
      }
      const min = r.port_range_min;
      const max = r.port_range_max;
      meta[w] = word;
      meta[w + 1] = min === null || min === undefined ? UNSET : min;
      meta[w + 2] = max === null || max === undefined ? UNSET : max;
      meta[w + 3] = strLen;
      w += 4;
      count++;
    }
    meta[2 + g - from] = count;
    total += count;
  }
  meta[0] = to - from;
  meta[1] = total;
  return { kind: 'translateGroups', meta, strings: parts.join('') };
}

/** Splits a worker's output buffer into one view per group. */
function unpack(result: unknown, views: Uint8Array[], at: number): void {
  if (!(result instanceof ArrayBuffer)) {
    const r = result as { code?: string; message?: string };
    throw new Error(`translateGroups failed in the pool: ${r?.code ?? 'UNKNOWN'} ${r?.message ?? ''}`);
  }
  const groups = new Uint32Array(result, 0, 1)[0];
  const offsets = new Uint32Array(result, 4, groups + 1);
  const start = dataStart(groups);
  for (let g = 0; g < groups; g++) views[at + g] = new Uint8Array(result, start + offsets[g], offsets[g + 1] - offsets[g]);
}

/**
 * Translates and encodes many groups in the pool: element i of the result is
 * the JSON value of `global/secgroups/<groups[i].id>`, as UTF-8 bytes (the same
 * text as `securityGroupToJson`). The rules must have passed `validateRule`:
 * the pool trusts them.
 * @throws {Error} when a worker fails (a bug: validated rules always translate)
 * @example
 * const pool = createPool({ size: 2 });
 * const values = await translateGroupsInPool(pool, [{ id: sg.id, rules }]);
 * journal.put(keys.secgroup(sg.id), values[0]);
 */
export async function translateGroupsInPool(pool: Piscina, groups: readonly GroupRules[]): Promise<Uint8Array[]> {
  let total = 0;
  for (const g of groups) total += g.rules.length;
  const size = chunkRules(total, Math.max(1, pool.options.maxThreads));
  const views = new Array<Uint8Array>(groups.length);
  const pending: Promise<void>[] = [];
  for (let from = 0; from < groups.length; ) {
    let to = from;
    let n = 0;
    while (to < groups.length && (n === 0 || n + groups[to].rules.length <= size)) n += groups[to++].rules.length;
    const task = packGroups(groups, from, to);
    const at = from;
    pending.push(pool.run(task, { transferList: [task.meta.buffer as ArrayBuffer] }).then((res) => unpack(res, views, at)));
    from = to;
  }
  await Promise.all(pending);
  return views;
}

/**
 * Encodes groups inline when they hold fewer than {@link INLINE_THRESHOLD}
 * rules in all, through the pool otherwise. Rules must have passed `validateRule`.
 * @example
 * const values = await encodeGroups(pool, changedGroups);
 */
export async function encodeGroups(pool: Piscina, groups: readonly GroupRules[]): Promise<Uint8Array[]> {
  let total = 0;
  for (const g of groups) total += g.rules.length;
  if (total >= INLINE_THRESHOLD) return translateGroupsInPool(pool, groups);
  return groups.map((g) => Buffer.from(securityGroupToJsonUnchecked(g.id, g.rules)));
}
