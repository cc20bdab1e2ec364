/**
 * Batch translation through the Piscina pool. The main thread translates each
 * rule while packing it into columns (the steps of translate.ts's decoder,
 * inlined: the main thread bounds the pool's throughput); a worker encodes
 * every group's JSON value. Both the columns and the
 * output live in shared memory reused from call to call (a few slots per
 * pool), so that a batch allocates nothing per task: fresh ArrayBuffers
 * would count as external memory and start full GCs of the caller's heap.
 */
import type { Piscina } from 'piscina';
import { protocolOf, securityGroupToJsonBytesUnchecked, securityGroupToJsonUnchecked, type NeutronRule } from './translate.ts';
import { KIND, outputBound, PORT_KIND, type TranslateGroupsTask } from './translate-task.ts';

/** A security group and its rules (rules of other groups are skipped, as the reference does). */
export interface GroupRules {
  id: string;
  rules: readonly NeutronRule[];
}

/**
 * Below this many rules (in one call), encoding inline on the main thread is
 * as fast as the pool or faster. Measured on this 2-core machine (Node 20.20,
 * load average ~1.4 from other work, realistic groups of 100 rules, pool of 2,
 * `translateGroupsInPool` vs `securityGroupToJson` per group, medians of 15–41
 * runs; ms: latency inline / latency pool / main-thread time of the pool path):
 *      2,000 rules   0.37 /  0.50 /  0.47
 *     10,000 rules   1.84 /  2.22 /  1.63
 *     20,000 rules   3.82 /  4.87 /  4.01
 *     50,000 rules   9.63 / 11.00 /  8.67
 *    100,000 rules  28.7  / 23.8  / 23.8
 *    200,000 rules  60.7  / 56.9  / 55.5
 * The main thread packs every rule for the workers (~45% of the inline cost)
 * and shares the two cores with them, so one call only gains from about
 * 50,000 rules on (a whole-cloud resync streamed through the pool: up to
 * 1.7× inline, see bench/translate.ts).
 */
export const INLINE_THRESHOLD = 50_000;

/** Shared memory one task packs into and the worker writes to. */
interface Slot {
  meta: Int32Array;
  bytes: Uint8Array;
  out: Uint8Array;
}

const shared = (n: number): SharedArrayBuffer => new SharedArrayBuffer(Math.max(64, n));
const freeSlots = new WeakMap<Piscina, Slot[]>();

/** Rules per task: enough to amortise a round trip, small enough that every thread gets several. */
const chunkRules = (total: number, threads: number): number => Math.max(1024, Math.min(16384, Math.ceil(total / (threads * 4))));

function growBytes(b: Uint8Array, used: number, need: number): Uint8Array {
  const next = new Uint8Array(shared(Math.max(b.length * 2, used + need)));
  next.set(b.subarray(0, used));
  return next;
}

/**
 * Packs groups[from, to) into a task (layout in `translate-task.ts`), in the
 * slot's memory when one is given. The rules must have passed `validateRule`.
 * @internal
 */
export function packGroups(groups: readonly GroupRules[], from: number, to: number, slot?: Slot): TranslateGroupsTask {
  let n = 0;
  for (let g = from; g < to; g++) n += groups[g].rules.length;
  const s: Slot = slot ?? { meta: new Int32Array(0), bytes: new Uint8Array(0), out: new Uint8Array(0) };
  if (s.meta.length < 2 + (to - from) + 4 * n) s.meta = new Int32Array(shared(4 * (2 + (to - from) + 4 * n)));
  if (s.bytes.length < 24 * n) s.bytes = new Uint8Array(shared(32 * n));
  const { meta } = s;
  let bytes = s.bytes;
  const escapes: string[] = [];
  let bp = 0;
  let w = 2 + (to - from);
  let total = 0;
  for (let g = from; g < to; g++) {
    const { id, rules } = groups[g];
    let count = 0;
    for (let i = 0; i < rules.length; i++) {
      const r = rules[i];
      if (r.security_group_id !== id) continue;
      const v6 = r.ethertype === 'IPv6' ? 1 : 0;
      const p = r.protocol;
      let proto = p === null || p === undefined ? 0 : typeof p === 'number' ? p : protocolOf(p);
      if (proto === 1 && v6 === 1) proto = 58;
      let kind: number = KIND.ANY;
      let len = 0;
      let plen = 0;
      const prefix = r.remote_ip_prefix;
      if (prefix) {
        kind = KIND.ADDR;
        const n = prefix.length;
        if (bp + n > bytes.length) bytes = s.bytes = growBytes(bytes, bp, n);
        let k = 0;
        for (; k < n; k++) {
          const c = prefix.charCodeAt(k);
          if (c === 47) break;
          bytes[bp + k] = c;
        }
        len = k;
        bp += k;
        if (k === n) plen = v6 === 1 ? 128 : 32;
        else for (k++; k < n; k++) plen = plen * 10 + prefix.charCodeAt(k) - 48;
      } else {
        const group = r.remote_group_id;
        if (group) {
          kind = KIND.GROUP;
          len = group.length;
          if (bp + len > bytes.length) bytes = s.bytes = growBytes(bytes, bp, len);
          let k = 0;
          for (; k < len; k++) {
            const c = group.charCodeAt(k);
            if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) break;
            bytes[bp + k] = c;
          }
          if (k === len) bp += len;
          else {
            kind = KIND.ESCAPED_GROUP;
            len = escapes.push(JSON.stringify(group)) - 1;
          }
        }
      }
      const min = r.port_range_min;
      const pk = PORT_KIND[proto];
      let portMin: number;
      let portMax: number;
      if (min === null || min === undefined || min === -1) {
        portMin = pk === 2 ? -1 : 0;
        portMax = pk === 1 ? 65535 : pk === 2 ? -1 : 0;
      } else {
        const max = r.port_range_max;
        portMin = min;
        portMax = max === null || max === undefined ? -1 : max;
      }
      meta[w] = proto | (v6 << 8) | (r.direction === 'ingress' ? 512 : 0) | (kind << 10) | (plen << 13);
      meta[w + 1] = portMin;
      meta[w + 2] = portMax;
      meta[w + 3] = len;
      w += 4;
      count++;
    }
    meta[2 + g - from] = count;
    total += count;
  }
  meta[0] = to - from;
  meta[1] = total;
  const bound = outputBound(to - from, total, bp, escapes);
  if (s.out.length < bound) s.out = new Uint8Array(shared(Math.ceil(bound * 1.25)));
  return { kind: 'translateGroups', meta, bytes, escapes, out: s.out };
}

/**
 * Runs groups through the pool in tasks, a few in flight per thread, taking
 * them from the front; calls `done(at, count, out, ascii)` as each task
 * completes, with groups[at, at+count) encoded in `out` (reused as soon as
 * `done` returns; `ascii` when no string needed escaping). While every slot
 * is busy the main thread encodes groups from the back itself (`inline(i)`),
 * so that a pool starved of CPU is never much slower than the main thread alone.
 */
async function runTasks(
  pool: Piscina, groups: readonly GroupRules[],
  done: (at: number, count: number, out: Uint8Array, ascii: boolean) => void, inline: (index: number) => void,
): Promise<void> {
  let total = 0;
  for (const g of groups) total += g.rules.length;
  const threads = Math.max(1, pool.options.maxThreads);
  const size = chunkRules(total, threads);
  let free = freeSlots.get(pool);
  if (!free) freeSlots.set(pool, (free = []));
  const inflight = new Set<Promise<void>>();
  let failure: unknown;
  let back = groups.length;
  for (let from = 0; from < back && failure === undefined; ) {
    if (inflight.size > 2 * threads) {
      for (let n = 0; n < size / 4 && back > from; n += groups[back].rules.length) inline(--back);
      await new Promise(setImmediate);
      continue;
    }
    let to = from;
    let n = 0;
    while (to < back && (n === 0 || n + groups[to].rules.length <= size)) n += groups[to++].rules.length;
    const slot = free.pop() ?? { meta: new Int32Array(0), bytes: new Uint8Array(0), out: new Uint8Array(0) };
    const task = packGroups(groups, from, to, slot);
    const at = from;
    const p: Promise<void> = pool
      .run(task)
      .then((res: { ok: boolean; code?: string; message?: string }) => {
        if (!res?.ok) throw new Error(`translateGroups failed in the pool: ${res?.code ?? 'UNKNOWN'} ${res?.message ?? ''}`);
        done(at, to - at, slot.out, task.escapes.length === 0);
      })
      .catch((err: unknown) => {
        failure ??= err;
      })
      .finally(() => {
        free.push(slot);
        inflight.delete(p);
      });
    inflight.add(p);
    from = to;
  }
  await Promise.all(inflight);
  if (failure !== undefined) throw failure;
}

/**
 * Translates and encodes many groups in the pool and hands each group's JSON
 * value (UTF-8, the same text as `securityGroupToJson`) to `onValue` as soon as
 * its task completes, in no particular order. The bytes are a view of memory
 * reused once `onValue` returns: copy them to keep them. Nothing is allocated
 * per group but the view: the path for consumers that write values on at once.
 * The rules must have passed `validateRule`: the pool trusts them.
 * @throws {Error} when a worker fails (a bug: validated rules always translate)
 * @example
 * await streamGroupsInPool(pool, groups, (i, json) => batch.put(keys.secgroup(groups[i].id), Buffer.from(json)));
 */
export async function streamGroupsInPool(pool: Piscina, groups: readonly GroupRules[], onValue: (index: number, json: Uint8Array) => void): Promise<void> {
  await runTasks(
    pool,
    groups,
    (at, count, out) => {
      const offsets = new Uint32Array(out.buffer, out.byteOffset, count + 1);
      for (let g = 0; g < count; g++) onValue(at + g, out.subarray(offsets[g], offsets[g + 1]));
    },
    (i) => onValue(i, securityGroupToJsonBytesUnchecked(groups[i].id, groups[i].rules)),
  );
}

/**
 * Translates and encodes many groups in the pool: element i of the result is
 * the JSON text of `global/secgroups/<groups[i].id>`, the same as
 * `securityGroupToJson`. The workers hand back bytes in shared memory; they
 * are returned as strings because strings live in the JS heap, whereas an
 * ArrayBuffer per task counts as external memory and makes V8 run full
 * collections of the caller's heap (measured: owned buffers were 1.1–1.6×
 * slower than strings for 1M rules). The rules must have passed `validateRule`.
 * @throws {Error} when a worker fails (a bug: validated rules always translate)
 * @example
 * const pool = createPool({ size: 2 });
 * const [value] = await translateGroupsInPool(pool, [{ id: sg.id, rules }]);
 */
export async function translateGroupsInPool(pool: Piscina, groups: readonly GroupRules[]): Promise<string[]> {
  const values = new Array<string>(groups.length);
  await runTasks(
    pool,
    groups,
    (at, count, out, ascii) => {
      const offsets = new Uint32Array(out.buffer, out.byteOffset, count + 1);
      const text = Buffer.from(out.buffer, out.byteOffset, out.length);
      const encoding = ascii ? 'latin1' : 'utf8';
      for (let g = 0; g < count; g++) values[at + g] = text.toString(encoding, offsets[g], offsets[g + 1]);
    },
    (i) => (values[i] = securityGroupToJsonUnchecked(groups[i].id, groups[i].rules)),
  );
  return values;
}

/**
 * Encodes groups inline when they hold fewer than {@link INLINE_THRESHOLD}
 * rules in all, through the pool otherwise. The rules must have passed `validateRule`.
 * @example
 * const values = await encodeGroups(pool, changedGroups);
 */
export async function encodeGroups(pool: Piscina, groups: readonly GroupRules[]): Promise<string[]> {
  let total = 0;
  for (const g of groups) total += g.rules.length;
  if (total >= INLINE_THRESHOLD) return translateGroupsInPool(pool, groups);
  return groups.map((g) => securityGroupToJsonUnchecked(g.id, g.rules));
}
