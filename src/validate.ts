/**
 * Validation at the API door. Every validator returns a sanitized deep copy
 * of its input, so that later mutation by the host cannot change what is
 * journaled, or throws a {@link ValidationError} naming the dotted field (e.g.
 * `current.fixed_ips[2].ip_address`). Known fields are checked; other fields
 * must be plain JSON within {@link LIMITS} and are kept in a port and its
 * `binding:profile`, dropped elsewhere (segments, fixed IPs, contexts…).
 *
 * Objects must be plain (prototype `Object.prototype` or null) with data
 * properties only; the keys `__proto__`, `constructor` and `prototype` are
 * refused anywhere. An `undefined` property counts as absent.
 */
import { isIP } from 'node:net';
import { ValidationError } from './errors.ts';
import type {
  AddressPair,
  BindingLevel,
  BindingType,
  FixedIp,
  Port,
  PortBind,
  PortDelete,
  PortUnbind,
  PortUpdate,
  Segment,
} from './types.ts';

/** The network types the validators accept by default. */
export const KNOWN_NETWORK_TYPES: readonly string[] = ['flat', 'vlan', 'gpe', 'vxlan', 'geneve', 'gre', 'local'];

/** Limits of the validators (counts are array entries or object keys). */
export const LIMITS = {
  idLength: 255,
  stringLength: 255,
  securityGroups: 1000,
  fixedIps: 1000,
  addressPairs: 1000,
  bindingLevels: 10,
  segments: 1000,
  /** Extra (free-form JSON) values: per string, per array/object, nesting depth, nodes per call. */
  extraStringLength: 16_384,
  extraEntries: 1000,
  extraDepth: 32,
  extraNodes: 100_000,
} as const;

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const ID_RE = /^[\w.:@-]+$/;
const HOST_RE = /^[A-Za-z0-9._-]+$/;
const PHYSNET_RE = /^[A-Za-z0-9._-]{1,64}$/;
const MAC_RE = /^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$/;
const CONTROL_RE = /\p{Cc}/u;
const CONTROL_EXCEPT_WHITESPACE_RE = /(?![\t\n\r])\p{Cc}/u;
const LONE_SURROGATE_RE = /[\uD800-\uDFFF]/u;
const PLAIN_KEY_RE = /^[A-Za-z0-9_:@-]+$/;
const SEGMENTATION_RANGES: Record<string, readonly [number, number]> = {
  vlan: [1, 4094],
  gpe: [1, 16_777_215],
  vxlan: [1, 16_777_215],
  geneve: [1, 16_777_215],
  gre: [1, 4_294_967_295],
};

/** Per-call state: what is left of the budget for extra JSON values. */
interface Ctx {
  /** The field named when the argument itself is refused (its children are named without it). */
  root: string;
  nodes: number;
}

function fail(field: string, reason: string): never {
  throw new ValidationError(field, reason);
}

function child(field: string, key: string): string {
  if (key.length > 64 || !PLAIN_KEY_RE.test(key)) return `${field}[${JSON.stringify(key.slice(0, 64))}]`;
  return field === '' ? key : `${field}.${key}`;
}

function isPlainObject(v: unknown, field: string): v is object {
  if (typeof v !== 'object' || v === null) return false;
  try {
    if (Array.isArray(v)) return false;
    const proto = Object.getPrototypeOf(v);
    return proto === Object.prototype || proto === null;
  } catch {
    return fail(field, 'cannot be read');
  }
}

/** The own enumerable data properties of a plain object, `undefined` ones left out. */
function entries(v: unknown, field: string, ctx: Ctx, what = 'an object'): [string, unknown][] {
  const self = field || ctx.root;
  if (!isPlainObject(v, self)) fail(self, `must be ${what}`);
  let keys: string[];
  try {
    keys = Object.keys(v);
  } catch {
    return fail(self, 'cannot be read');
  }
  if (keys.length > LIMITS.extraEntries) fail(self, `has more than ${LIMITS.extraEntries} keys`);
  const out: [string, unknown][] = [];
  for (const key of keys) {
    const f = child(field, key);
    if (FORBIDDEN_KEYS.has(key)) fail(f, 'forbidden key');
    text(key, f, LIMITS.stringLength);
    let d: PropertyDescriptor | undefined;
    try {
      d = Object.getOwnPropertyDescriptor(v, key);
    } catch {
      return fail(f, 'cannot be read');
    }
    if (d === undefined) continue;
    if (!('value' in d)) fail(f, 'must be a data property, not an accessor');
    if (d.value !== undefined) out.push([key, d.value]);
  }
  return out;
}

function items(v: unknown, field: string, max: number): unknown[] {
  let isArray: boolean;
  try {
    isArray = Array.isArray(v);
  } catch {
    return fail(field, 'cannot be read');
  }
  if (!isArray) fail(field, 'must be an array');
  const arr = v as unknown[];
  if (arr.length > max) fail(field, `has more than ${max} entries`);
  const out: unknown[] = [];
  for (let i = 0; i < arr.length; i++) {
    const d = Object.getOwnPropertyDescriptor(arr, i);
    if (d !== undefined && !('value' in d)) fail(`${field}[${i}]`, 'must be a data property, not an accessor');
    out.push(d?.value);
  }
  return out;
}

function text(v: unknown, field: string, max: number = LIMITS.stringLength, allowWhitespace = false): string {
  if (typeof v !== 'string') fail(field, 'must be a string');
  if (v.length > max) fail(field, `is longer than ${max} characters`);
  if ((allowWhitespace ? CONTROL_EXCEPT_WHITESPACE_RE : CONTROL_RE).test(v)) fail(field, 'contains control characters');
  if (LONE_SURROGATE_RE.test(v)) fail(field, 'contains an unpaired surrogate');
  return v;
}

function name(v: unknown, field: string, re: RegExp, max: number, what: string): string {
  // the common case: a well-formed name (the class excludes control characters and surrogates)
  if (typeof v === 'string' && v.length <= max && v !== '.' && v !== '..' && re.test(v)) return v;
  const s = text(v, field, max);
  if (s === '') fail(field, 'must not be empty');
  if (s.includes('/')) fail(field, "must not contain '/'");
  if (s === '.' || s === '..') fail(field, `must not be '${s}'`);
  if (!re.test(s)) fail(field, `may contain only ${what}`);
  return s;
}

/**
 * Checks an id (port, subnet, security group, segment, device): a non-empty
 * string of at most 255 characters among `A-Z a-z 0-9 . _ : @ -`, not `.` or `..`.
 * @throws {ValidationError} naming `field`.
 * @example validateId('3f2a…', 'port.id')
 */
export function validateId(v: unknown, field: string): string {
  return name(v, field, ID_RE, LIMITS.idLength, 'letters, digits and . _ : @ -');
}

/**
 * Checks a host name: non-empty, at most 255 characters among
 * `A-Z a-z 0-9 . _ -` (so never `/`), not `.` or `..`.
 * @throws {ValidationError} naming `field`.
 */
export function validateHost(v: unknown, field = 'host'): string {
  return name(v, field, HOST_RE, 255, 'letters, digits and . _ -');
}

function hostOrEmpty(v: unknown, field: string): string {
  return v === '' ? '' : validateHost(v, field);
}

function mac(v: unknown, field: string): string {
  const s = text(v, field);
  if (!MAC_RE.test(s)) fail(field, 'must be a MAC address of six hex pairs separated by ":"');
  return s;
}

function ip(v: unknown, field: string, cidr = false): string {
  const s = text(v, field, 64);
  const slash = cidr ? s.indexOf('/') : -1;
  const addr = slash < 0 ? s : s.slice(0, slash);
  const family = addr.includes('%') ? 0 : isIP(addr);
  if (family === 0) fail(field, cidr ? 'must be an IP address or CIDR' : 'must be an IP address');
  if (slash >= 0) {
    const len = s.slice(slash + 1);
    if (!/^(?:0|[1-9]\d{0,2})$/.test(len) || Number(len) > (family === 4 ? 32 : 128)) {
      fail(field, 'has an invalid prefix length');
    }
  }
  return s;
}

function bool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') fail(field, 'must be a boolean');
  return v;
}

/** Validates a plain-JSON value (extras), returning a copy. */
function json(v: unknown, field: string, ctx: Ctx, depth = 0): unknown {
  if (--ctx.nodes < 0) fail(field, 'is too large');
  if (depth > LIMITS.extraDepth) fail(field, 'is nested too deeply');
  if (v === null || typeof v === 'boolean') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? v + 0 : fail(field, 'must be a finite number');
  if (typeof v === 'string') return text(v, field, LIMITS.extraStringLength, true);
  if (typeof v === 'object' && Array.isArray(v)) {
    return items(v, field, LIMITS.extraEntries).map((x, i) => json(x, `${field}[${i}]`, ctx, depth + 1));
  }
  if (isPlainObject(v, field)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of entries(v, field, ctx)) {
      out[k] = json(x, child(field, k), ctx, depth + 1);
    }
    return out;
  }
  return fail(field, 'is not a JSON value');
}

type FieldCheck = (v: unknown, field: string, ctx: Ctx) => unknown;

/**
 * Copies a plain object field by field: known keys through their check,
 * others through {@link json} (kept when `keepExtras`, else only checked).
 */
function record(
  v: unknown,
  field: string,
  ctx: Ctx,
  checks: ReadonlyMap<string, FieldCheck>,
  required: readonly string[],
  keepExtras: boolean,
  what = 'an object',
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, x] of entries(v, field, ctx, what)) {
    const f = child(field, k);
    const check = checks.get(k);
    if (check) out[k] = check(x, f, ctx);
    else if (keepExtras) out[k] = json(x, f, ctx);
    else json(x, f, ctx);
  }
  for (const k of required) if (!Object.hasOwn(out, k)) fail(child(field, k), 'is required');
  return out;
}

function list<T>(max: number, check: (v: unknown, field: string, ctx: Ctx) => T): FieldCheck {
  return (v, field, ctx) => items(v, field, max).map((x, i) => check(x, `${field}[${i}]`, ctx));
}

const fixedIp = (v: unknown, field: string, ctx: Ctx): FixedIp =>
  record(v, field, ctx, FIXED_IP_FIELDS, ['subnet_id', 'ip_address'], false) as unknown as FixedIp;
const FIXED_IP_FIELDS = new Map<string, FieldCheck>([
  ['subnet_id', (v, f) => validateId(v, f)],
  ['ip_address', (v, f) => ip(v, f)],
]);

const addressPair = (v: unknown, field: string, ctx: Ctx): AddressPair =>
  record(v, field, ctx, PAIR_FIELDS, ['ip_address'], false) as unknown as AddressPair;
const PAIR_FIELDS = new Map<string, FieldCheck>([
  ['ip_address', (v, f) => ip(v, f, true)],
  ['mac_address', (v, f) => mac(v, f)],
]);

const PROFILE_FIELDS = new Map<string, FieldCheck>([['migrating_to', (v, f) => validateHost(v, f)]]);

const PORT_FIELDS = new Map<string, FieldCheck>([
  ['id', (v, f) => validateId(v, f)],
  ['mac_address', (v, f) => mac(v, f)],
  ['device_owner', (v, f) => text(v, f)],
  ['device_id', (v, f) => (v === null || v === '' ? v : validateId(v, f))],
  ['status', (v, f) => text(v, f)],
  ['security_groups', list(LIMITS.securityGroups, (v, f) => validateId(v, f))],
  ['allowed_address_pairs', list(LIMITS.addressPairs, addressPair)],
  ['fixed_ips', list(LIMITS.fixedIps, fixedIp)],
  ['port_security_enabled', (v, f) => bool(v, f)],
  ['binding:profile', (v, f, ctx) => record(v, f, ctx, PROFILE_FIELDS, [], true)],
  ['binding:vnic_type', (v, f) => text(v, f)],
  ['binding:host_id', (v, f) => hostOrEmpty(v, f)],
]);

function port(v: unknown, field: string, ctx: Ctx): Port {
  return record(v, field, ctx, PORT_FIELDS, ['id', 'mac_address'], true) as Port;
}

function segment(v: unknown, field: string, ctx: Ctx, knownTypes: readonly string[]): Segment {
  const checks = new Map<string, FieldCheck>([
    ['id', (x, f) => validateId(x, f)],
    ['network_type', (x, f) => {
      const t = text(x, f, 64);
      return knownTypes.includes(t) ? t : fail(f, `must be one of ${knownTypes.join(', ')}`);
    }],
    ['physical_network', (x, f) => (x === null ? null : name(x, f, PHYSNET_RE, 64, 'letters, digits and . _ -'))],
    ['segmentation_id', (x, f) => {
      if (x === null) return null;
      if (typeof x !== 'number' || !Number.isSafeInteger(x)) return fail(f, 'must be an integer');
      return x + 0;
    }],
  ]);
  const out = record(v, field, ctx, checks, ['id', 'network_type'], false) as unknown as Segment;
  const type = out.network_type;
  const physnet = out.physical_network ?? null;
  const segId = out.segmentation_id ?? null;
  const segField = `${field}.segmentation_id`;
  if ((type === 'flat' || type === 'vlan') && physnet === null) {
    fail(`${field}.physical_network`, `is required for ${type}`);
  }
  if (type === 'local' && physnet !== null) fail(`${field}.physical_network`, 'must be null for local');
  const range = Object.hasOwn(SEGMENTATION_RANGES, type) ? SEGMENTATION_RANGES[type] : undefined;
  if (range) {
    if (segId === null) fail(segField, `is required for ${type}`);
    if (segId < range[0] || segId > range[1]) fail(segField, `must be within ${range[0]}..${range[1]} for ${type}`);
  } else if (type === 'flat' || type === 'local') {
    if (segId !== null) fail(segField, `must be null for ${type}`);
  } else if (segId !== null && (segId < 0 || segId > 4_294_967_295)) {
    fail(segField, 'must be within 0..4294967295');
  }
  return out;
}

const LEVEL_FIELDS = new Map<string, FieldCheck>([
  ['bound_driver', (v, f) => text(v, f)],
  ['bound_segment', (v, f, ctx) => segment(v, f, ctx, KNOWN_NETWORK_TYPES)],
]);

function bindingLevels(v: unknown, field: string, ctx: Ctx): (BindingLevel | null)[] | null {
  if (v === null) return null;
  return items(v, field, LIMITS.bindingLevels).map((x, i) =>
    x === null
      ? null
      : (record(x, `${field}[${i}]`, ctx, LEVEL_FIELDS, ['bound_driver', 'bound_segment'], false, 'null or an object') as unknown as BindingLevel),
  );
}

function bound(levels: unknown): boolean {
  return Array.isArray(levels) && levels.length > 0 && levels[levels.length - 1] !== null;
}

const optional = (check: FieldCheck): FieldCheck => (v, f, ctx) => (v === null ? null : check(v, f, ctx));

/** Converts foreign errors (a hostile proxy, say) into a ValidationError of the root field. */
function guard<T>(root: string, fn: (ctx: Ctx) => T): T {
  try {
    return fn({ root, nodes: LIMITS.extraNodes });
  } catch (err) {
    if (err instanceof ValidationError) throw err;
    throw new ValidationError(root, 'cannot be read');
  }
}

/**
 * Validates a Neutron port: `id` and `mac_address` required; ids, MAC, IPs
 * (CIDRs in `allowed_address_pairs`), lists of at most 1,000 entries,
 * `binding:profile.migrating_to` a host; other fields kept when plain JSON.
 * `device_id` and `binding:host_id` may be `''` (Neutron's unset value).
 * @throws {ValidationError} naming the field, e.g. `port.fixed_ips[0].ip_address`.
 * @example validatePort({ id: 'p1', mac_address: 'fa:16:3e:00:00:01' })
 */
export function validatePort(v: unknown, field = 'port'): Port {
  return guard(field, (ctx) => port(v, field, ctx));
}

/**
 * Validates a network segment: `id`, `network_type` among `knownTypes`;
 * vlan needs a physnet and segmentation id 1..4094, flat a physnet and no
 * segmentation id, gpe/vxlan/geneve a segmentation id 1..16777215, gre
 * 1..4294967295, local neither. Absent and `null` segmentation ids stay distinct.
 * @default knownTypes {@link KNOWN_NETWORK_TYPES}
 * @throws {ValidationError} naming the field, e.g. `segment.segmentation_id`.
 */
export function validateSegment(v: unknown, field = 'segment', knownTypes: readonly string[] = KNOWN_NETWORK_TYPES): Segment {
  return guard(field, (ctx) => segment(v, field, ctx, knownTypes));
}

const hostCheck: FieldCheck = (v, f) => validateHost(v, f);
const portCheck: FieldCheck = (v, f, ctx) => port(v, f, ctx);
const segmentCheck: FieldCheck = (v, f, ctx) => segment(v, f, ctx, KNOWN_NETWORK_TYPES);

/**
 * Validates the arguments of a direct bind: `{ port, segment, host, binding_type? }`.
 * @throws {ValidationError} naming the field (`bind` for the argument itself).
 */
export function validateBind(v: unknown): PortBind {
  const checks = new Map<string, FieldCheck>([
    ['port', portCheck],
    ['segment', segmentCheck],
    ['host', hostCheck],
    ['binding_type', (x, f): BindingType => (x === 'vhostuser' || x === 'tap' ? x : fail(f, "must be 'vhostuser' or 'tap'"))],
  ]);
  return guard('bind', (ctx) => record(v, '', ctx, checks, ['port', 'segment', 'host'], false)) as unknown as PortBind;
}

/**
 * Validates the arguments of a direct unbind: `{ port, host, segment? }`.
 * @throws {ValidationError} naming the field (`unbind` for the argument itself).
 */
export function validateUnbind(v: unknown): PortUnbind {
  const checks = new Map<string, FieldCheck>([
    ['port', portCheck],
    ['host', hostCheck],
    ['segment', optional(segmentCheck)],
  ]);
  return guard('unbind', (ctx) => record(v, '', ctx, checks, ['port', 'host'], false)) as unknown as PortUnbind;
}

/**
 * Validates an `update_port_precommit` context. `host` and `original_host`
 * may be `''` (unbound), but not when the matching binding levels end with a
 * binding.
 * @throws {ValidationError} naming the field, e.g. `binding_levels[0].bound_segment.id`.
 */
export function validateUpdate(v: unknown): PortUpdate {
  const checks = new Map<string, FieldCheck>([
    ['current', portCheck],
    ['original', optional(portCheck)],
    ['host', (x, f) => hostOrEmpty(x, f)],
    ['original_host', optional((x, f) => hostOrEmpty(x, f))],
    ['binding_levels', bindingLevels],
    ['original_binding_levels', bindingLevels],
  ]);
  const out = guard('update', (ctx) => record(v, '', ctx, checks, ['current', 'host'], false)) as unknown as PortUpdate;
  if (bound(out.binding_levels) && !out.host) fail('host', 'is required when binding_levels ends with a binding');
  if (bound(out.original_binding_levels) && !out.original_host) {
    fail('original_host', 'is required when original_binding_levels ends with a binding');
  }
  return out;
}

/**
 * Validates a `delete_port_precommit` context: `{ port, host?, binding_levels? }`.
 * @throws {ValidationError} naming the field (`delete` for the argument itself).
 */
export function validateDelete(v: unknown): PortDelete {
  const checks = new Map<string, FieldCheck>([
    ['port', portCheck],
    ['host', optional((x, f) => hostOrEmpty(x, f))],
    ['binding_levels', bindingLevels],
  ]);
  return guard('delete', (ctx) => record(v, '', ctx, checks, ['port'], false)) as unknown as PortDelete;
}

/**
 * Validates the arguments of `bindPortDecision`: `{ port, segments, host }`
 * (at most 1,000 segments).
 * @throws {ValidationError} naming the field, e.g. `segments[1].network_type`.
 */
export function validateBindDecisionArgs(v: unknown): { port: Port; segments: Segment[]; host: string } {
  const checks = new Map<string, FieldCheck>([
    ['port', portCheck],
    ['segments', list(LIMITS.segments, (x, f, ctx) => segment(x, f, ctx, KNOWN_NETWORK_TYPES))],
    ['host', hostCheck],
  ]);
  return guard('bindPortDecision', (ctx) => record(v, '', ctx, checks, ['port', 'segments', 'host'], false)) as unknown as {
    port: Port;
    segments: Segment[];
    host: string;
  };
}

/**
 * Checks that `v` is a plain object (prototype `Object.prototype` or null)
 * whose own properties are data properties, none named `__proto__`,
 * `constructor` or `prototype`, and returns a shallow copy of them (absent
 * `undefined` ones), so that what is checked next is what is used. For
 * inputs checked field by field elsewhere: security groups and their rules.
 * @throws {ValidationError} naming `field`, or the offending key under it.
 * @example const g = validatePlainObject(sg, 'sg'); validateId(g.id, 'sg.id');
 */
export function validatePlainObject(v: unknown, field: string): Record<string, unknown> {
  return guard(field, (ctx) => {
    const out: Record<string, unknown> = {};
    for (const [k, x] of entries(v, field, ctx)) out[k] = x;
    return out;
  });
}

/**
 * Checks that `v` is an array whose elements are data properties (no
 * accessors, no hostile proxy) and returns a copy of it.
 * @throws {ValidationError} naming `field`.
 */
export function validatePlainArray(v: unknown, field: string): unknown[] {
  return guard(field, () => items(v, field, Number.MAX_SAFE_INTEGER));
}
