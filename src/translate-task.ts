/**
 * The pool side of batch translation: decodes groups packed by
 * `translate-pool.ts` and writes each group's JSON value, all groups into one
 * buffer that is moved back to the main thread.
 *
 * Packed input (`meta`, an Int32Array):
 *   [groups, rules, count of group 0 … count of group n-1, rule words…]
 * four words a rule: `protocol | v6 << 8 | ingress << 9 | remote << 10`
 * (remote: 0 any, 1 prefix, 2 group), port_range_min, port_range_max (UNSET
 * for null), and the length of the rule's string (prefix or group id) in
 * `strings`, where the rules' strings follow one another in rule order.
 *
 * Output (one ArrayBuffer): [groups: u32, offsets: u32 × (groups + 1), JSON bytes…];
 * group i is bytes [offsets[i], offsets[i+1]) counted from the first JSON byte.
 */
import { Piscina } from 'piscina';
import { grow, PORT_KIND, RULE_BYTES, writeAcl, writeGroupMid, writeGroupOpen } from './translate.ts';

/** The packed `port_range_*` value of null. */
export const UNSET = -0x80000000;

/** A task of kind `translateGroups`. */
export interface TranslateGroupsTask {
  kind: 'translateGroups';
  meta: Int32Array;
  strings: string;
}

/** Byte offset of the first JSON byte in an output buffer of `groups` groups. */
export const dataStart = (groups: number): number => 4 * (groups + 2);

/** Writes the rules of one group that go in one direction; returns the new write offset. */
function writeRules(
  out: { b: Buffer }, o: number, meta: Int32Array, strings: string, w: number, count: number, s: number, ingress: number,
): number {
  let b: Buffer = out.b;
  let first = true;
  for (let k = 0; k < count; k++, w += 4) {
    const word = meta[w];
    const strLen = meta[w + 3];
    const from = s;
    s += strLen;
    if ((word & 512) !== ingress) continue;
    const room = RULE_BYTES + 6 * strLen;
    if (o + room > b.length) b = out.b = grow(b, o, room);
    if (first) first = false;
    else b[o++] = 44;
    const v6 = (word >> 8) & 1;
    const proto = word & 255;
    const remote = word >> 10;
    let addr: string | null = null;
    let addrTo = 0;
    let len = 0;
    let group: string | null = null;
    if (remote === 1) {
      addr = strings;
      addrTo = strings.indexOf('/', from);
      if (addrTo < 0 || addrTo >= s) {
        addrTo = s;
        len = v6 === 1 ? 128 : 32;
      } else {
        for (let i = addrTo + 1; i < s; i++) len = len * 10 + strings.charCodeAt(i) - 48;
      }
    } else if (remote === 2) {
      group = strings;
    } else {
      addr = v6 === 1 ? '::' : '0.0.0.0';
    }
    const kind = PORT_KIND[proto];
    const min = meta[w + 1];
    const max = meta[w + 2];
    const unset = min === UNSET || min === -1;
    const portMin = unset ? (kind === 2 ? -1 : 0) : min;
    const portMax = unset ? (kind === 1 ? 65535 : kind === 2 ? -1 : 0) : max === UNSET ? -1 : max;
    o = remote === 0
      ? writeAcl(b, o, v6, addr, 0, addr!.length, len, null, 0, 0, proto, portMin, portMax)
      : writeAcl(b, o, v6, addr, from, addrTo, len, group, from, s, proto, portMin, portMax);
  }
  return o;
}

/**
 * Encodes every packed group. Returns the output buffer, moved to the caller,
 * or `{ ok: false, code, message }` (errors do not cross the thread boundary).
 */
export default function translateGroups(task: TranslateGroupsTask): unknown {
  try {
    const { meta, strings } = task;
    const groups = meta[0];
    const rules = meta[1];
    const start = dataStart(groups);
    const out: { b: Buffer } = { b: Buffer.allocUnsafeSlow(start + rules * 160 + strings.length + groups * 40) };
    const offsets = new Uint32Array(groups + 1);
    let o = start;
    let w = 2 + groups;
    let s = 0;
    for (let g = 0; g < groups; g++) {
      const count = meta[2 + g];
      offsets[g] = o - start;
      if (o + 64 > out.b.length) out.b = grow(out.b, o, 64);
      o = writeGroupOpen(out.b, o);
      o = writeRules(out, o, meta, strings, w, count, s, 512);
      if (o + 64 > out.b.length) out.b = grow(out.b, o, 64);
      o = writeGroupMid(out.b, o);
      o = writeRules(out, o, meta, strings, w, count, s, 0);
      out.b[o++] = 93;
      out.b[o++] = 125;
      for (let k = 0; k < count; k++) s += meta[w + 4 * k + 3];
      w += 4 * count;
    }
    offsets[groups] = o - start;
    let b: Buffer = out.b;
    if (b.length > o * 1.25) {
      const exact = Buffer.allocUnsafeSlow(o);
      b.copy(exact, 0, 0, o);
      b = exact;
    }
    const head = new Uint32Array(b.buffer, b.byteOffset, groups + 2);
    head[0] = groups;
    head.set(offsets, 1);
    return Piscina.move(b.buffer as ArrayBuffer);
  } catch (err) {
    return { ok: false, code: 'TRANSLATE_FAILED', message: String((err as Error)?.message ?? err) };
  }
}
