/**
 * Encoding translated rules as JSON bytes: the primitives (constant runs copied
 * natively, numbers, port tails), shared with the inline encoder of
 * `translate.ts`, and the pool task that encodes whole batches of groups.
 *
 * The task writes the JSON value of every group it holds into the task's
 * output (shared memory, reused from task to task; written through a private
 * scratch buffer, then copied once). Its rules arrive already translated:
 * the main thread translates them while packing (`translate-pool.ts`), so a
 * worker only encodes. Input:
 * - `meta` (Int32Array): `[groups, rules, rules of group 0 … of group n-1, rule words…]`,
 *   four words a rule: `protocol | v6 << 8 | ingress << 9 | kind << 10 | prefix length << 13`,
 *   port_min, port_max, and the byte length of the rule's string in `bytes`
 *   (kinds 1 address, 2 remote group) or its index in `escapes` (kinds 3, 4: the
 *   string as JSON text, when it needs escaping); kind 0 is "any address".
 * - `bytes`: the ASCII strings of kinds 1 and 2, one after another in rule order.
 *
 * Output, in `out`: `[offsets: u32 × (groups + 1), JSON bytes…]`; group i is
 * bytes [offsets[i], offsets[i+1]) of `out`. The packer sizes `out` for the
 * worst case ({@link outputBound}), so a worker never runs out of room.
 */

/** Port semantics by protocol number: 1 TCP/UDP/UDPLite, 2 ICMP/ICMPv6, 0 the rest. */
export const PORT_KIND = new Uint8Array(256);
PORT_KIND[6] = PORT_KIND[17] = PORT_KIND[136] = 1;
PORT_KIND[1] = PORT_KIND[58] = 2;

/** The remote address of a rule that names neither prefix nor group. */
export const ANY_V4 = '0.0.0.0';
export const ANY_V6 = '::';

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const both = (s: string): Uint8Array[] => [ascii(s.replace('#', '0')), ascii(s.replace('#', '1'))];
const portsOf = (p: number): string => ['0,"port_max":0}', '0,"port_max":65535}', '-1,"port_max":-1}'][PORT_KIND[p]];
/** The constant runs of the encoded form, with every small number folded in. @internal */
export const JSON_PARTS = {
  head: both('{"is_ipv6":#,"remote_ip_addr":'),
  anyHead: [
    ascii(`{"is_ipv6":0,"remote_ip_addr":"${ANY_V4}","ip_prefix_len":0,"remote_group_id":null,"protocol":`),
    ascii(`{"is_ipv6":1,"remote_ip_addr":"${ANY_V6}","ip_prefix_len":0,"remote_group_id":null,"protocol":`),
  ],
  groupHead: both('{"is_ipv6":#,"remote_ip_addr":null,"ip_prefix_len":0,"remote_group_id":'),
  /** By prefix length 0–128: `,"ip_prefix_len":N,"remote_group_id":null,"protocol":`. */
  lenTail: Array.from({ length: 129 }, (_, n) => ascii(`,"ip_prefix_len":${n},"remote_group_id":null,"protocol":`)),
  proto: ascii(',"protocol":'),
  /** By protocol: `P,"port_min":` + the protocol's default ports (all, or none) and `}`. */
  protoDefault: Array.from({ length: 256 }, (_, p) => ascii(`${p},"port_min":${portsOf(p)}`)),
  /** By protocol: `P,"port_min":`. */
  protoMin: Array.from({ length: 256 }, (_, p) => ascii(`${p},"port_min":`)),
  ruleOpen: ascii('{"is_ipv6":'),
  keyAddr: ascii(',"remote_ip_addr":'),
  keyLen: ascii(',"ip_prefix_len":'),
  keyGroup: ascii(',"remote_group_id":'),
  noGroupProto: ascii(',"remote_group_id":null,"protocol":'),
  null: ascii('null'),
  groupOpen: ascii('{"ingress_rules":['),
  groupMid: ascii('],"egress_rules":['),
};
const P = JSON_PARTS;
const DEFAULT_MIN = Int32Array.from({ length: 256 }, (_, p) => (PORT_KIND[p] === 2 ? -1 : 0));
const DEFAULT_MAX = Int32Array.from({ length: 256 }, (_, p) => [0, 65535, -1][PORT_KIND[p]]);
const KEY_MIN = ascii(',"port_min":');
const KEY_MAX = ascii(',"port_max":');
/** Upper bound of a rule's bytes besides its two strings (which take at most 6 bytes a UTF-16 unit). */
export const RULE_BYTES = 256;

/**
 * Returns a buffer holding b[0, used) with room for `need` more bytes.
 * @internal
 */
export function grow(b: Buffer, used: number, need: number): Buffer {
  const next = Buffer.allocUnsafeSlow(Math.max(b.length * 2, used + need));
  b.copy(next, 0, 0, used);
  return next;
}

/** Copies a constant run (natively: much faster than a byte loop). @internal */
export function put(b: Uint8Array, o: number, k: Uint8Array): number {
  b.set(k, o);
  return o + k.length;
}

/** Writes a number as JSON.stringify does. @internal */
export function writeNumber(b: Buffer, o: number, n: number): number {
  if (n !== (n | 0)) return o + b.write(Number.isFinite(n) ? String(n) : 'null', o, 'latin1');
  if (n < 0) {
    b[o++] = 45;
    n = -n;
  }
  if (n < 10) {
    b[o] = 48 + n;
    return o + 1;
  }
  let digits = 2;
  for (let t = n; t >= 100; t = (t / 10) | 0) digits++;
  let i = o + digits;
  while (n >= 10) {
    const q = (n / 10) | 0;
    b[--i] = 48 + n - q * 10;
    n = q;
  }
  b[--i] = 48 + n;
  return o + digits;
}

/** Writes `P,"port_min":…,"port_max":…}` (what follows `"protocol":`). @internal */
export function writeTail(b: Buffer, o: number, proto: number, portMin: number, portMax: number): number {
  if (proto === (proto & 255)) {
    if (portMin === DEFAULT_MIN[proto] && portMax === DEFAULT_MAX[proto]) return put(b, o, P.protoDefault[proto]);
    o = put(b, o, P.protoMin[proto]);
  } else {
    o = put(b, writeNumber(b, o, proto), KEY_MIN);
  }
  o = writeNumber(b, put(b, writeNumber(b, o, portMin), KEY_MAX), portMax);
  b[o] = 125;
  return o + 1;
}

// ---- the pool task ----

/** A task of kind `translateGroups`. */
export interface TranslateGroupsTask {
  kind: 'translateGroups';
  meta: Int32Array;
  bytes: Uint8Array;
  escapes: string[];
  out: Uint8Array;
}

/** Rule kinds in the packed word. */
export const KIND = { ANY: 0, ADDR: 1, GROUP: 2, ESCAPED_ADDR: 3, ESCAPED_GROUP: 4 } as const;

/** Offset of the first JSON byte in the output of a task of `groups` groups. */
export const dataStart = (groups: number): number => 4 * (groups + 1);

/** Bytes of output a task may need at most. */
export const outputBound = (groups: number, rules: number, bytes: number, escapes: readonly string[]): number => {
  let escaped = 0;
  for (const e of escapes) escaped += 3 * e.length;
  return dataStart(groups) + groups * 40 + rules * RULE_BYTES + bytes + escaped;
};

/** The worker's scratch: writes to shared memory are slower, so a task is written here and copied once. */
let scratch: Buffer = Buffer.alloc(0);

/** Writes one group's rules of one direction; returns the new write offset. */
function writeRules(b: Buffer, o: number, task: TranslateGroupsTask, w: number, count: number, sp: number, ingress: number): number {
  const { meta, bytes, escapes } = task;
  for (let k = 0, first = true; k < count; k++, w += 4) {
    const word = meta[w];
    const kind = (word >> 10) & 7;
    const strLen = meta[w + 3];
    const from = sp;
    if (kind === KIND.ADDR || kind === KIND.GROUP) sp += strLen;
    if ((word & 512) !== ingress) continue;
    if (first) first = false;
    else b[o++] = 44;
    const v6 = (word >> 8) & 1;
    if (kind === KIND.ANY) o = put(b, o, P.anyHead[v6]);
    else {
      const addr = kind === KIND.ADDR || kind === KIND.ESCAPED_ADDR;
      o = put(b, o, addr ? P.head[v6] : P.groupHead[v6]);
      if (kind >= KIND.ESCAPED_ADDR) o += b.write(escapes[strLen], o, 'utf8');
      else {
        b[o++] = 34;
        for (let i = from, end = from + strLen; i < end; i++) b[o++] = bytes[i];
        b[o++] = 34;
      }
      o = put(b, o, addr ? P.lenTail[word >>> 13] : P.proto);
    }
    o = writeTail(b, o, word & 255, meta[w + 1], meta[w + 2]);
  }
  return o;
}

/**
 * Encodes every group of the task into `task.out`. Returns `{ ok: true, used }`
 * (bytes of `out` written), or `{ ok: false, code, message }`: errors do not
 * cross the thread boundary.
 */
export default function translateGroups(task: TranslateGroupsTask): unknown {
  try {
    const { meta, out } = task;
    if (scratch.length < out.length) scratch = Buffer.allocUnsafeSlow(out.length);
    const b = scratch;
    const groups = meta[0];
    const offsets = new Uint32Array(b.buffer, b.byteOffset, groups + 1);
    let o = dataStart(groups);
    let w = 2 + groups;
    let sp = 0;
    for (let g = 0; g < groups; g++) {
      const count = meta[2 + g];
      offsets[g] = o;
      o = writeRules(b, put(b, o, P.groupOpen), task, w, count, sp, 512);
      o = writeRules(b, put(b, o, P.groupMid), task, w, count, sp, 0);
      b[o++] = 93;
      b[o++] = 125;
      for (let k = 0; k < count; k++, w += 4) {
        const kind = (meta[w] >> 10) & 7;
        if (kind === KIND.ADDR || kind === KIND.GROUP) sp += meta[w + 3];
      }
    }
    offsets[groups] = o;
    out.set(b.subarray(0, o));
    return { ok: true, used: o };
  } catch (err) {
    return { ok: false, code: 'TRANSLATE_FAILED', message: String((err as Error)?.message ?? err) };
  }
}
