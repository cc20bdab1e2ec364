/**
 * Neutron security-group rule → networking-vpp ACL rule, the reference's
 * `_neutron_rule_to_vpp_acl` and `get_secgroup_from_rules` (mech_vpp.py), with
 * its bugs fixed as listed in {@link FIXES}. Pure: no I/O, no clock.
 *
 * Rules are validated once at the API door ({@link validateRule}); the
 * `…Unchecked` fast paths used by the pool and the benchmark trust that.
 */
import { ValidationError } from './errors.ts';
import { ANY_V4, ANY_V6, grow, JSON_PARTS as P, PORT_KIND, put, RULE_BYTES, writeNumber, writeTail } from './translate-task.ts';

/** A Neutron security-group rule, as the host passes it (Neutron's field names). */
export interface NeutronRule {
  id: string;
  security_group_id: string;
  direction: 'ingress' | 'egress';
  ethertype: 'IPv4' | 'IPv6';
  /** A Neutron protocol name, a number 0–255 (or its decimal text), or null for any. */
  protocol?: string | number | null;
  port_range_min?: number | null;
  port_range_max?: number | null;
  remote_ip_prefix?: string | null;
  remote_group_id?: string | null;
}

/** One rule of `global/secgroups/<sg>`: exactly these keys, in this order. */
export interface AclRule {
  is_ipv6: 0 | 1;
  remote_ip_addr: string | null;
  ip_prefix_len: number;
  remote_group_id: string | null;
  protocol: number;
  port_min: number;
  port_max: number;
}

/** The value of `global/secgroups/<sg>`. */
export interface SecurityGroupAcl {
  ingress_rules: AclRule[];
  egress_rules: AclRule[];
}

/**
 * Every deliberate difference from the reference, by class. The differential
 * test attributes each difference it sees to one of these and counts them.
 */
export const FIXES = [
  { id: 'RULE_ID_INVALID', summary: '`id` and `security_group_id` must be non-empty strings (the reference never reads `id`).' },
  { id: 'DIRECTION_INVALID', summary: 'a `direction` other than `ingress`/`egress` is refused (the reference files it under egress).' },
  { id: 'ETHERTYPE_INVALID', summary: 'an `ethertype` other than exactly `IPv4`/`IPv6` is refused (the reference silently makes it IPv6).' },
  { id: 'WRONG_TYPE', summary: 'a field of the wrong JSON type is refused: protocol `true` or `6.5`, ports `"80"`, `true` or `80.5`, a non-string remote prefix or group (the reference reads `true` as 1, truncates floats, and copies strings and booleans into the ACL).' },
  { id: 'PROTOCOL_NAME_ADDED', summary: 'Neutron protocol names the reference lacks are translated instead of crashing with ValueError: `ipip` → 4, `hopopt` and `ip` → 0, which the agent reads as any protocol, as Neutron itself applies protocol 0.' },
  { id: 'PROTOCOL_NAME_CASE', summary: 'protocol names match case-insensitively, as in Neutron\'s API (`TCP` → 6; the reference raises ValueError).' },
  { id: 'PROTOCOL_TEXT_NOT_PLAIN', summary: 'numeric protocol text must be plain ASCII digits (the reference\'s `int()` also takes spaces, signs, underscores and non-ASCII digits).' },
  { id: 'PROTOCOL_OUT_OF_RANGE', summary: 'a protocol number outside 0–255 is refused (the reference copies it).' },
  { id: 'PREFIX_WITHOUT_LENGTH', summary: 'a remote prefix without `/len` is a host prefix, /32 or /128, as Neutron normalises it (the reference raises ValueError).' },
  { id: 'PREFIX_INVALID', summary: 'a remote prefix whose address is not an IP literal, or whose length is not plain digits within 0–32 / 0–128, is refused (the reference copies any text). The address text is otherwise kept as given.' },
  { id: 'PREFIX_FAMILY_MISMATCH', summary: 'a remote prefix of the other address family than the ethertype is refused (the reference writes it with the ethertype\'s is_ipv6).' },
  { id: 'PORT_OUT_OF_RANGE', summary: 'a port outside 0–65535 is refused; -1 stays accepted as "unset" (the reference copies other values).' },
  { id: 'ICMP_OUT_OF_RANGE', summary: 'an ICMP type or code outside 0–255 is refused; -1 stays "all" (the reference copies other values).' },
  { id: 'PORT_MAX_WITHOUT_MIN', summary: 'a `port_range_max` (ICMP code) without a `port_range_min` (type) is refused (the reference drops it and allows all).' },
  { id: 'PORT_MAX_MISSING', summary: 'a non-ICMP `port_range_min` without `port_range_max` is refused (the reference writes `port_max: null`, or all ports when min is 0).' },
  { id: 'PORT_RANGE_REVERSED', summary: '`port_range_min` > `port_range_max` is refused (the reference copies the empty range).' },
  { id: 'PORT_ZERO_WIDENED', summary: '`port_range_min` 0 is port 0, not "unset": TCP/UDP/UDPLite 0–N stays 0–N (the reference widens it to 0–65535, and drops other protocols\' ranges to 0,0).' },
  { id: 'ICMP_TYPE_ZERO_WIDENED', summary: 'ICMP type 0 with a code stays type 0 (the reference widens it to all ICMP, -1/-1).' },
  { id: 'MISSING_KEY_AS_NULL', summary: 'a missing `protocol`, `port_range_*`, `remote_ip_prefix` or `remote_group_id` reads as null (the reference raises KeyError).' },
] as const;

/** The name of one class of {@link FIXES}. */
export type FixId = (typeof FIXES)[number]['id'];

/** The reference's `protocols` table. */
const REFERENCE_PROTOCOLS: Record<string, number> = {
  tcp: 6, udp: 17, icmp: 1, icmpv6: 58, ah: 51, dccp: 33, egp: 8, esp: 50, gre: 47, igmp: 2,
  'ipv6-encap': 41, 'ipv6-frag': 44, 'ipv6-icmp': 58, 'ipv6-nonxt': 59, 'ipv6-opts': 60,
  'ipv6-route': 43, ospf: 89, pgm: 113, rsvp: 46, sctp: 132, udplite: 136, vrrp: 112,
};

/** neutron_lib's `IP_PROTOCOL_MAP` names the reference lacks (see FIXES: PROTOCOL_NAME_ADDED). */
const ADDED_PROTOCOLS: Record<string, number> = { hopopt: 0, ip: 0, ipip: 4 };

/** Every Neutron protocol name, and the canonical text of every number 0–255. */
const PROTOCOL_TABLE = new Map<string, number>([
  ...Object.entries(REFERENCE_PROTOCOLS),
  ...Object.entries(ADDED_PROTOCOLS),
  ...Array.from({ length: 256 }, (_, n) => [String(n), n] as [string, number]),
]);

/** Value of plain ASCII decimal text s[from, to) (capped near 1e9), or -1 when it is not that. */
function plainDigits(s: string, from: number, to: number): number {
  if (to <= from) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    if (n < 1e9) n = n * 10 + c;
  }
  return n;
}

/** The IANA number of a validated protocol text (names in any case, digits with leading zeros), or -1. */
function protocolText(p: string): number {
  const n = PROTOCOL_TABLE.get(p) ?? PROTOCOL_TABLE.get(p.toLowerCase());
  return n ?? plainDigits(p, 0, p.length);
}

/**
 * The IANA number of a validated rule's protocol text (before ICMP → ICMPv6).
 * @internal
 */
export const protocolOf = (p: string): number => PROTOCOL_TABLE.get(p) ?? protocolText(p);

/** True when s[from, to) is a dotted-quad IPv4 address (no leading zeros). */
function isIPv4(s: string, from: number, to: number): boolean {
  let parts = 0;
  let i = from;
  while (parts < 4) {
    let j = i;
    while (j < to && j - i < 4 && s.charCodeAt(j) >= 48 && s.charCodeAt(j) <= 57) j++;
    const n = plainDigits(s, i, j);
    if (n < 0 || n > 255 || (j - i > 1 && s.charCodeAt(i) === 48)) return false;
    parts++;
    if (j === to) return parts === 4;
    if (s.charCodeAt(j) !== 46 || parts === 4) return false;
    i = j + 1;
  }
  return false;
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
}

/** True when s[from, to) is an IPv6 address in RFC 4291 text form (no zone). */
function isIPv6(s: string, from: number, to: number): boolean {
  let groups = 0;
  let compressed = false;
  let i = from;
  if (s.startsWith('::', from)) {
    compressed = true;
    i += 2;
    if (i === to) return true;
  }
  for (;;) {
    let j = i;
    while (j < to && isHex(s.charCodeAt(j))) j++;
    if (j < to && s.charCodeAt(j) === 46) {
      if (!isIPv4(s, i, to)) return false;
      groups += 2;
      break;
    }
    if (j === i || j - i > 4) return false;
    groups++;
    if (j === to) break;
    if (s.charCodeAt(j) !== 58) return false;
    if (s.charCodeAt(j + 1) === 58) {
      if (compressed) return false;
      compressed = true;
      i = j + 2;
      if (i === to) break;
    } else {
      i = j + 1;
      if (i === to) return false;
    }
  }
  return compressed ? groups <= 7 : groups === 8;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
const nullish = (v: unknown): v is null | undefined => v === null || v === undefined;
function fail(field: string, key: string, reason: string): never {
  throw new ValidationError(`${field}.${key}`, reason);
}

/**
 * Checks that a value is a rule the translation accepts (see {@link FIXES} for
 * everything refused that the reference let through).
 * @param field dotted path of the rule in the caller's input, used in errors
 * @throws {ValidationError} naming the first offending field, e.g. `rule.port_range_min`
 * @example
 * validateRule(body.security_group_rule, 'security_group_rule');
 */
export function validateRule(rule: unknown, field = 'rule'): asserts rule is NeutronRule {
  if (typeof rule !== 'object' || rule === null || Array.isArray(rule)) throw new ValidationError(field, 'must be an object');
  const r = rule as Record<string, unknown>;
  if (typeof r.id !== 'string' || r.id === '') fail(field, 'id', 'must be a non-empty string');
  if (typeof r.security_group_id !== 'string' || r.security_group_id === '') fail(field, 'security_group_id', 'must be a non-empty string');
  if (r.direction !== 'ingress' && r.direction !== 'egress') fail(field, 'direction', 'must be "ingress" or "egress"');
  if (r.ethertype !== 'IPv4' && r.ethertype !== 'IPv6') fail(field, 'ethertype', 'must be "IPv4" or "IPv6"');
  const v6 = r.ethertype === 'IPv6';

  const p = r.protocol;
  const n = typeof p === 'number' ? (isInt(p) ? p : NaN) : typeof p === 'string' ? protocolText(p) : nullish(p) ? 0 : NaN;
  if (Number.isNaN(n)) fail(field, 'protocol', 'must be a protocol name, an integer or null');
  if (typeof p === 'string' && n === -1) fail(field, 'protocol', 'must be a Neutron protocol name or decimal digits');
  if (n < 0 || n > 255) fail(field, 'protocol', 'must be within 0-255');

  const prefix = r.remote_ip_prefix;
  if (typeof prefix === 'string' && prefix !== '') {
    const slash = prefix.indexOf('/');
    const end = slash < 0 ? prefix.length : slash;
    const addrV6 = isIPv6(prefix, 0, end);
    if (!addrV6 && !isIPv4(prefix, 0, end)) fail(field, 'remote_ip_prefix', 'address is not an IP address');
    const len = slash < 0 ? 0 : plainDigits(prefix, slash + 1, prefix.length);
    if (len < 0) fail(field, 'remote_ip_prefix', 'prefix length must be a decimal number');
    if (addrV6 !== v6) fail(field, 'remote_ip_prefix', `address family contradicts ethertype ${String(r.ethertype)}`);
    if (len > (v6 ? 128 : 32)) fail(field, 'remote_ip_prefix', `prefix length must be within 0-${v6 ? 128 : 32}`);
  } else if (!nullish(prefix) && prefix !== '') {
    fail(field, 'remote_ip_prefix', 'must be a string or null');
  }
  if (!nullish(r.remote_group_id) && typeof r.remote_group_id !== 'string') fail(field, 'remote_group_id', 'must be a string or null');

  const min = r.port_range_min;
  const max = r.port_range_max;
  if (!nullish(min) && !isInt(min)) fail(field, 'port_range_min', 'must be an integer or null');
  if (!nullish(max) && !isInt(max)) fail(field, 'port_range_max', 'must be an integer or null');
  const icmp = PORT_KIND[n === 1 && v6 ? 58 : n] === 2;
  if (nullish(min) || min === -1) {
    if (!nullish(max) && max !== -1) fail(field, 'port_range_max', `is set without port_range_min (${icmp ? 'ICMP type' : 'port'})`);
  } else if (icmp) {
    if (min < 0 || min > 255) fail(field, 'port_range_min', 'ICMP type must be within 0-255');
    if (!nullish(max) && max !== -1 && (max < 0 || max > 255)) fail(field, 'port_range_max', 'ICMP code must be within 0-255, -1 or null');
  } else {
    if (min < 0 || min > 65535) fail(field, 'port_range_min', 'port must be within 0-65535');
    if (nullish(max)) fail(field, 'port_range_max', 'is required with port_range_min');
    if (max < 0 || max > 65535) fail(field, 'port_range_max', 'port must be within 0-65535');
    if (min > max) fail(field, 'port_range_max', 'must not be below port_range_min');
  }
}

/**
 * The fields of the last rule given to {@link decodeRule}: the ACL rule, with
 * the address as `addr[0, addrTo)` so that nothing is allocated.
 */
const decoded = { v6: 0, addr: null as string | null, addrTo: 0, len: 0, group: null as string | null, proto: 0, portMin: 0, portMax: 0 };

/**
 * Translates a validated rule into {@link decoded}: the whole translation,
 * shared by both output forms (objects, JSON text). The pool's packer
 * (translate-pool.ts) inlines the same steps; tests pin it to this one.
 */
function decodeRule(r: NeutronRule): void {
  const d = decoded;
  const v6 = r.ethertype === 'IPv6' ? 1 : 0;
  const p = r.protocol;
  let proto = p === null || p === undefined ? 0 : typeof p === 'number' ? p : (PROTOCOL_TABLE.get(p) ?? protocolText(p));
  if (proto === 1 && v6 === 1) proto = 58;
  d.v6 = v6;
  d.proto = proto;
  d.len = 0;
  d.group = null;
  const prefix = r.remote_ip_prefix;
  if (prefix) {
    d.addr = prefix;
    const slash = prefix.indexOf('/');
    if (slash < 0) {
      d.addrTo = prefix.length;
      d.len = v6 === 1 ? 128 : 32;
    } else {
      let len = 0;
      for (let i = slash + 1; i < prefix.length; i++) len = len * 10 + prefix.charCodeAt(i) - 48;
      d.addrTo = slash;
      d.len = len;
    }
  } else if (r.remote_group_id) {
    d.addr = null;
    d.addrTo = 0;
    d.group = r.remote_group_id;
  } else {
    const any = v6 === 1 ? ANY_V6 : ANY_V4;
    d.addr = any;
    d.addrTo = any.length;
  }
  const min = r.port_range_min;
  const kind = PORT_KIND[proto];
  if (min === null || min === undefined || min === -1) {
    d.portMin = kind === 2 ? -1 : 0;
    d.portMax = kind === 1 ? 65535 : kind === 2 ? -1 : 0;
  } else {
    const max = r.port_range_max;
    d.portMin = min;
    d.portMax = max === null || max === undefined ? -1 : max;
  }
}

/**
 * Translates a rule that already passed {@link validateRule}. No checks.
 * @internal
 */
export function translateRuleUnchecked(r: NeutronRule): AclRule {
  decodeRule(r);
  const d = decoded;
  const a = d.addr;
  return {
    is_ipv6: d.v6 as 0 | 1, remote_ip_addr: a === null || d.addrTo === a.length ? a : a.slice(0, d.addrTo), ip_prefix_len: d.len,
    remote_group_id: d.group, protocol: d.proto, port_min: d.portMin, port_max: d.portMax,
  };
}

/**
 * Translates one Neutron rule into the agent's ACL rule.
 * @throws {ValidationError} when the rule is refused (see {@link validateRule})
 * @example
 * translateRule({ id: 'r1', security_group_id: 'sg', direction: 'ingress', ethertype: 'IPv4',
 *   protocol: 'tcp', port_range_min: 22, port_range_max: 22, remote_ip_prefix: '10.0.0.0/8', remote_group_id: null });
 * // → { is_ipv6: 0, remote_ip_addr: '10.0.0.0', ip_prefix_len: 8, remote_group_id: null, protocol: 6, port_min: 22, port_max: 22 }
 */
export function translateRule(rule: NeutronRule): AclRule {
  validateRule(rule);
  return translateRuleUnchecked(rule);
}

/**
 * {@link securityGroupToAcl} for rules that already passed {@link validateRule}.
 * @internal
 */
export function securityGroupToAclUnchecked(sgId: string, rules: readonly NeutronRule[]): SecurityGroupAcl {
  const ingress: AclRule[] = [];
  const egress: AclRule[] = [];
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    if (r.security_group_id !== sgId) continue;
    if (r.direction === 'ingress') ingress.push(translateRuleUnchecked(r));
    else egress.push(translateRuleUnchecked(r));
  }
  return { ingress_rules: ingress, egress_rules: egress };
}

function validateGroup(sgId: string, rules: readonly NeutronRule[]): void {
  if (typeof sgId !== 'string' || sgId === '') throw new ValidationError('sgId', 'must be a non-empty string');
  if (!Array.isArray(rules)) throw new ValidationError('rules', 'must be an array');
  for (let i = 0; i < rules.length; i++) {
    const r: unknown = rules[i];
    if (typeof r === 'object' && r !== null && (r as NeutronRule).security_group_id === sgId) validateRule(r, `rules[${i}]`);
  }
}

/**
 * The value of `global/secgroups/<sgId>`: the rules of group `sgId` (others are
 * skipped, as the reference does), translated and split by direction, in order.
 * @throws {ValidationError} naming the first bad rule's field, e.g. `rules[3].protocol`
 * @example
 * const acl = securityGroupToAcl(sg.id, sg.security_group_rules);
 * journal.put(keys.secgroup(sg.id), acl);
 */
export function securityGroupToAcl(sgId: string, rules: readonly NeutronRule[]): SecurityGroupAcl {
  validateGroup(sgId, rules);
  return securityGroupToAclUnchecked(sgId, rules);
}

// ---- JSON encoding (the primitives are in translate-task.ts, shared with the pool) ----

/** Set when a string went through the escaping path: the bytes may not be ASCII. */
let escaped = false;
let scratch: Buffer = Buffer.allocUnsafeSlow(1 << 16);

/** JSON string of s[from, to): plain ASCII copied, anything else through JSON.stringify as UTF-8. */
function writeString(b: Buffer, o: number, s: string, from: number, to: number): number {
  let p = o + 1;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) {
      escaped = true;
      return o + b.write(JSON.stringify(s.slice(from, to)), o, 'utf8');
    }
    b[p++] = c;
  }
  b[o] = 34;
  b[p] = 34;
  return p + 1;
}

/**
 * Writes one ACL rule as JSON.stringify would: the address is addr[0, addrTo)
 * (null for none). The caller guarantees room for {@link RULE_BYTES} plus 6
 * bytes a character of the two strings.
 */
function writeAcl(
  b: Buffer, o: number, v6: number, addr: string | null, addrTo: number, len: number, group: string | null, proto: number, portMin: number, portMax: number,
): number {
  if (v6 !== 0 && v6 !== 1) o = put(b, writeNumber(b, put(b, o, P.ruleOpen), v6), P.keyAddr);
  else if (group === null && len === 0 && addr === (v6 === 1 ? ANY_V6 : ANY_V4) && addrTo === addr.length) {
    return writeTail(b, put(b, o, P.anyHead[v6]), proto, portMin, portMax);
  } else if (group !== null && addr === null && len === 0) {
    o = put(b, writeString(b, put(b, o, P.groupHead[v6]), group, 0, group.length), P.proto);
    return writeTail(b, o, proto, portMin, portMax);
  } else if (addr !== null && group === null && len === (len | 0) && len >= 0 && len <= 128) {
    o = put(b, writeString(b, put(b, o, P.head[v6]), addr, 0, addrTo), P.lenTail[len]);
    return writeTail(b, o, proto, portMin, portMax);
  } else o = put(b, o, P.head[v6]);
  o = addr === null ? put(b, o, P.null) : writeString(b, o, addr, 0, addrTo);
  o = writeNumber(b, put(b, o, P.keyLen), len);
  o = group === null ? put(b, o, P.noGroupProto) : put(b, writeString(b, put(b, o, P.keyGroup), group, 0, group.length), P.proto);
  return writeTail(b, o, proto, portMin, portMax);
}

function writeDirection(b: Buffer, o: number, sgId: string, rules: readonly NeutronRule[], ingress: boolean): number {
  const d = decoded;
  for (let i = 0, first = true; i < rules.length; i++) {
    const r = rules[i];
    if (r.security_group_id !== sgId || (r.direction === 'ingress') !== ingress) continue;
    decodeRule(r);
    const room = RULE_BYTES + d.addrTo + (d.group === null ? 0 : 6 * d.group.length);
    if (o + room > b.length) b = scratch = grow(b, o, room);
    if (first) first = false;
    else b[o++] = 44;
    o = writeAcl(b, o, d.v6, d.addr, d.addrTo, d.len, d.group, d.proto, d.portMin, d.portMax);
  }
  return o;
}

/** Closes the group in the scratch buffer; returns its length. */
function closeGroup(o: number): number {
  if (o + 2 > scratch.length) scratch = grow(scratch, o, 2);
  scratch[o++] = 93;
  scratch[o++] = 125;
  return o;
}

/** The scratch buffer's first `o` bytes as text (ASCII unless a string was escaped). */
function scratchText(o: number): string {
  const text = scratch.toString(escaped ? 'utf8' : 'latin1', 0, o);
  escaped = false;
  return text;
}

/** Writes the group's JSON value into the scratch buffer; returns its length. */
function writeGroup(sgId: string, rules: readonly NeutronRule[]): number {
  escaped = false;
  const o = writeDirection(scratch, put(scratch, 0, P.groupOpen), sgId, rules, true);
  if (o + 32 > scratch.length) scratch = grow(scratch, o, 32);
  return closeGroup(writeDirection(scratch, put(scratch, o, P.groupMid), sgId, rules, false));
}

/**
 * {@link securityGroupToJson} for rules that already passed {@link validateRule}.
 * @internal
 */
export function securityGroupToJsonUnchecked(sgId: string, rules: readonly NeutronRule[]): string {
  return scratchText(writeGroup(sgId, rules));
}

/**
 * {@link securityGroupToJsonUnchecked} as UTF-8 bytes: a view of a scratch
 * buffer, valid until the next encoding call.
 * @internal
 */
export function securityGroupToJsonBytesUnchecked(sgId: string, rules: readonly NeutronRule[]): Uint8Array {
  return scratch.subarray(0, writeGroup(sgId, rules));
}

/**
 * The JSON text of `global/secgroups/<sgId>`, translated and encoded in one
 * pass: the same text as `JSON.stringify(securityGroupToAcl(sgId, rules))`.
 * @throws {ValidationError} naming the first bad rule's field, e.g. `rules[3].protocol`
 * @example
 * const value = securityGroupToJson(sg.id, rules); // '{"ingress_rules":[…],"egress_rules":[…]}'
 */
export function securityGroupToJson(sgId: string, rules: readonly NeutronRule[]): string {
  validateGroup(sgId, rules);
  return securityGroupToJsonUnchecked(sgId, rules);
}

const isPlainAcl = (r: AclRule): boolean =>
  typeof r.is_ipv6 === 'number' && typeof r.ip_prefix_len === 'number' && typeof r.protocol === 'number' &&
  typeof r.port_min === 'number' && typeof r.port_max === 'number' &&
  (r.remote_ip_addr === null || typeof r.remote_ip_addr === 'string') && (r.remote_group_id === null || typeof r.remote_group_id === 'string');

function writeAclList(b: Buffer, o: number, list: readonly AclRule[]): number {
  for (let i = 0; i < list.length; i++) {
    const r = list[i];
    const a = r.remote_ip_addr;
    const g = r.remote_group_id;
    const room = RULE_BYTES + 6 * ((a === null ? 0 : a.length) + (g === null ? 0 : g.length));
    if (o + room > b.length) b = scratch = grow(b, o, room);
    if (i > 0) b[o++] = 44;
    o = writeAcl(b, o, r.is_ipv6, a, a === null ? 0 : a.length, r.ip_prefix_len, g, r.protocol, r.port_min, r.port_max);
  }
  return o;
}

/**
 * Encodes a security group value: the same text as `JSON.stringify(acl)` for
 * values built by this module (the seven keys, numbers, strings or null; any
 * other field type falls back to JSON.stringify), about 1.5× faster.
 * @example
 * const text = encodeSecurityGroup(securityGroupToAcl(sgId, rules));
 */
export function encodeSecurityGroup(acl: SecurityGroupAcl): string {
  const { ingress_rules: ingress, egress_rules: egress } = acl;
  for (let i = 0; i < ingress.length; i++) if (!isPlainAcl(ingress[i])) return JSON.stringify(acl);
  for (let i = 0; i < egress.length; i++) if (!isPlainAcl(egress[i])) return JSON.stringify(acl);
  escaped = false;
  const o = writeAclList(scratch, put(scratch, 0, P.groupOpen), ingress);
  if (o + 32 > scratch.length) scratch = grow(scratch, o, 32);
  return scratchText(closeGroup(writeAclList(scratch, put(scratch, o, P.groupMid), egress)));
}
