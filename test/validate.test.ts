import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors.ts';
import {
  validateBind,
  validateBindDecisionArgs,
  validateDelete,
  validateHost,
  validateId,
  validatePort,
  validateSegment,
  validateUnbind,
  validateUpdate,
} from '../src/validate.ts';

const MAC = 'FA:16:3e:00:00:01';
const port = (): Record<string, unknown> => ({
  id: '3f2a9c1e-0b7d-4d5e-9f00-123456789abc',
  mac_address: MAC,
  device_owner: 'compute:nova',
  device_id: 'vm-1',
  status: 'DOWN',
  security_groups: ['sg-a', 'sg-b'],
  allowed_address_pairs: [{ ip_address: '10.0.0.0/24', mac_address: 'fa:16:3e:00:00:02' }, { ip_address: '2001:db8::/64' }],
  fixed_ips: [
    { subnet_id: 'sub-1', ip_address: '10.0.0.5' },
    { subnet_id: 'sub-6', ip_address: '2001:db8::5' },
    { subnet_id: 'sub-7', ip_address: '192.168.0.1' },
  ],
  port_security_enabled: true,
  'binding:profile': { migrating_to: 'compute-2', pci: { slot: '0000:00:01.0' } },
  'binding:vnic_type': 'normal',
  'binding:host_id': 'compute-1',
  name: 'web',
  admin_state_up: true,
  description: 'line one\nline two',
  tags: ['a', 1, null, { x: [1.5] }],
});
const vlan = () => ({ id: 'seg-1', network_type: 'vlan', physical_network: 'physnet1', segmentation_id: 100 });
const level = () => ({ bound_driver: 'vpp', bound_segment: vlan() });
const bind = () => ({ port: port(), segment: vlan(), host: 'compute-1', binding_type: 'vhostuser' });
const unbind = () => ({ port: port(), host: 'compute-1', segment: vlan() });
const update = () => ({
  current: port(),
  original: port(),
  host: 'compute-2',
  original_host: 'compute-1',
  binding_levels: [level()],
  original_binding_levels: [null, level()],
});
const del = () => ({ port: port(), host: 'compute-1', binding_levels: [level()] });
const decision = () => ({
  port: port(),
  segments: [vlan(), { id: 'seg-2', network_type: 'gpe', physical_network: null, segmentation_id: 5000 }],
  host: 'compute-1',
});

const validators: Record<string, [(v: unknown) => unknown, () => Record<string, unknown>]> = {
  port: [(v) => validatePort(v), port],
  segment: [(v) => validateSegment(v), vlan],
  bind: [validateBind, bind],
  unbind: [validateUnbind, unbind],
  update: [validateUpdate, update],
  delete: [validateDelete, del],
  bindPortDecision: [validateBindDecisionArgs, decision],
};

const DELETE = Symbol('delete');
/** A copy of `base` with the value at `path` replaced (or deleted). */
function withValue(base: Record<string, unknown>, path: (string | number)[], value: unknown) {
  const root = structuredClone(base);
  let obj: any = root;
  for (const k of path.slice(0, -1)) obj = obj[k];
  const last = path[path.length - 1];
  if (value === DELETE) delete obj[last];
  else Object.defineProperty(obj, last, { value, enumerable: true, writable: true, configurable: true });
  return root;
}

function refusal(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return err as ValidationError;
  }
  throw new Error('accepted');
}

const HUGE = 'a'.repeat(1 << 20);
const BAD_ID = ['', '.', '..', 'a/b', '../etc', 'a b', 'x\u0000', 'x\u007f', 'é', 'x'.repeat(256), HUGE, 5, null, [], {}, true];
const BAD_HOST = ['', '.', '..', 'a/b', 'a:b', 'a b', 'h\n', 'x'.repeat(256), HUGE, 5, null, {}];
const BAD_STRING = [5, null, {}, [], 'x\u0000', 'x\u0085', 'x\ud800', 'x'.repeat(256), HUGE];

/** [field path, bad values]: every port field, relative to the port. */
const PORT_CASES: [(string | number)[], unknown[]][] = [
  [['id'], [...BAD_ID, DELETE]],
  [['mac_address'], ['', 'fa:16:3e:00:00', 'fa:16:3e:00:00:0g', 'fa-16-3e-00-00-01', 'fa:16:3e:00:00:01 ', HUGE, 1, null, DELETE]],
  [['device_owner'], BAD_STRING],
  [['device_id'], ['a/b', '..', 'x'.repeat(256), 7, {}]],
  [['status'], BAD_STRING],
  [['security_groups'], ['sg', null, {}, new Array(1001).fill('sg')]],
  [['security_groups', 1], BAD_ID],
  [['allowed_address_pairs'], [null, 'x', {}, new Array(1001).fill({ ip_address: '10.0.0.1' })]],
  [['allowed_address_pairs', 0], [null, 'x', [], 5]],
  [['allowed_address_pairs', 0, 'ip_address'], ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/08', '::/129', 'fe80::1%eth0', 'x', 5, DELETE]],
  [['allowed_address_pairs', 0, 'mac_address'], ['xx', null, 5]],
  [['fixed_ips'], [5, null, {}, new Array(1001).fill({ subnet_id: 's', ip_address: '10.0.0.1' })]],
  [['fixed_ips', 1], [null, 'x', []]],
  [['fixed_ips', 1, 'subnet_id'], [...BAD_ID, DELETE]],
  [['fixed_ips', 2, 'ip_address'], ['10.0.0.256', '10.0.0.0/24', '01.2.3.4', ' 10.0.0.1', 'fe80::1%eth0', '1.2.3.4/x', HUGE, 5, DELETE]],
  [['port_security_enabled'], [[], 'true', 1, null]],
  [['binding:profile'], [[], 'x', null, 5]],
  [['binding:profile', 'migrating_to'], BAD_HOST],
  [['binding:vnic_type'], BAD_STRING],
  [['binding:host_id'], ['a/b', '..', '.', 'x'.repeat(256), 5, null]],
  [['name'], ['x\u0000', 'x\u001b[31m', HUGE, NaN, Infinity, () => 1, 1n, Symbol('s'), new Date(0), new Map()]],
  [['tags', 0], [undefined, NaN, -Infinity]],
  [['tags', 3, 'x', 0], [NaN, 'x\u0007', () => 1]],
];

const field = (prefix: string, path: (string | number)[]) =>
  path.reduce<string>((f, k) => (typeof k === 'number' ? `${f}[${k}]` : f ? `${f}.${k}` : k), prefix);

/** [validator, path, bad values] for the fields outside the port. */
const OTHER_CASES: [string, (string | number)[], unknown[]][] = [
  ['segment', ['id'], [...BAD_ID, DELETE]],
  ['segment', ['network_type'], ['vxlanx', 'VLAN', '', 5, null, HUGE, DELETE]],
  ['segment', ['physical_network'], ['a/b', '..', 'x'.repeat(65), 'a b', 5, null, DELETE]],
  ['segment', ['segmentation_id'], [0, 4095, 1.5, '100', NaN, null, -1, DELETE]],
  ['bind', ['host'], [...BAD_HOST, DELETE]],
  ['bind', ['binding_type'], ['vhost', null, 5]],
  ['bind', ['segment'], [null, 'x', [], DELETE]],
  ['bind', ['segment', 'segmentation_id'], [0, 4095]],
  ['bind', ['port'], [null, 'x', [], DELETE]],
  ['unbind', ['host'], [...BAD_HOST, DELETE]],
  ['unbind', ['segment'], ['x', []]],
  ['unbind', ['segment', 'id'], BAD_ID],
  ['update', ['host'], ['a/b', '..', 5, null, DELETE]],
  ['update', ['original_host'], ['a/b', 5]],
  ['update', ['current'], [null, 'x', DELETE]],
  ['update', ['original'], ['x', []]],
  ['update', ['binding_levels'], ['x', {}, new Array(11).fill(null)]],
  ['update', ['binding_levels', 0], [5, 'x', []]],
  ['update', ['binding_levels', 0, 'bound_driver'], [5, null, 'x\u0000', DELETE]],
  ['update', ['binding_levels', 0, 'bound_segment'], [null, 'fake_segment', DELETE]],
  ['update', ['binding_levels', 0, 'bound_segment', 'segmentation_id'], [0, 'fake_segId']],
  ['update', ['original_binding_levels', 1, 'bound_segment', 'physical_network'], ['a/b', null]],
  ['delete', ['host'], ['a/b', 5]],
  ['delete', ['port'], [null, DELETE]],
  ['delete', ['binding_levels', 0, 'bound_segment', 'id'], BAD_ID],
  ['bindPortDecision', ['segments'], ['x', null, {}, new Array(1001).fill(vlan()), DELETE]],
  ['bindPortDecision', ['segments', 1, 'network_type'], ['none', 5]],
  ['bindPortDecision', ['host'], [...BAD_HOST, DELETE]],
];

const PORT_HOLDERS: [string, (string | number)[]][] = [
  ['port', []],
  ['bind', ['port']],
  ['unbind', ['port']],
  ['update', ['current']],
  ['update', ['original']],
  ['delete', ['port']],
  ['bindPortDecision', ['port']],
];

const rows: [string, string, (string | number)[], unknown][] = [];
for (const [name, at] of PORT_HOLDERS) {
  for (const [path, bads] of PORT_CASES) for (const bad of bads) rows.push([name, field(name === 'port' ? 'port' : '', [...at, ...path]), [...at, ...path], bad]);
}
for (const [name, path, bads] of OTHER_CASES) {
  for (const bad of bads) rows.push([name, field(name === 'segment' ? 'segment' : '', path), path, bad]);
}
const show = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v.slice(0, 20)) : typeof v === 'symbol' ? 'symbol' : v === DELETE ? 'absent' : typeof v);

describe('every field: a bad value is refused with its exact field name', () => {
  it.each(rows.map(([n, f, p, bad]) => [n, f, show(bad), p, bad] as const))('%s %s = %s', (name, want, _show, path, bad) => {
    const [fn, valid] = validators[name];
    const err = refusal(() => fn(withValue(valid(), path, bad)));
    expect(err.field).toBe(want);
    expect(err.reason).toMatch(/\S/);
    expect(err.code).toBe('INVALID_INPUT');
  });
});

describe('hostile shapes', () => {
  it.each([
    ['port', [], JSON.parse('{"id":"p","mac_address":"fa:16:3e:00:00:01","__proto__":{"x":1}}'), 'port.__proto__'],
    ['port', [], { ...port(), constructor: 1 }, 'port.constructor'],
    ['port', ['binding:profile'], JSON.parse('{"prototype": 1}'), 'port.binding:profile.prototype'],
    ['port', ['fixed_ips', 0], JSON.parse('{"subnet_id":"s","ip_address":"10.0.0.1","__proto__":1}'), 'port.fixed_ips[0].__proto__'],
    ['port', ['name'], JSON.parse('{"a":[{"constructor":{}}]}'), 'port.name.a[0].constructor'],
    ['segment', [], JSON.parse('{"id":"s","network_type":"local","__proto__":null}'), 'segment.__proto__'],
    ['update', [], JSON.parse(`{"current":${JSON.stringify(port())},"host":"h","__proto__":{}}`), '__proto__'],
  ])('%s %j: forbidden keys refused', (name, path, value, want) => {
    const [fn, valid] = validators[name];
    const input = path.length === 0 ? value : withValue(valid(), path as string[], value);
    expect(refusal(() => fn(input)).field).toBe(want);
    expect(({} as any).polluted).toBeUndefined();
  });

  it.each([
    ['control character', 'a\u0001', 'port["a\\u0001"]'],
    ['dot', 'a.b', 'port["a.b"]'],
    ['300 characters', 'x'.repeat(300), `port[${JSON.stringify('x'.repeat(64))}]`],
  ])('extra key with a %s is named safely', (_what, key, want) => {
    const input = { ...port(), [key]: 'x\u0000' };
    expect(refusal(() => validatePort(input)).field).toBe(want);
  });

  it.each([null, undefined, 'port', 5, [], new Map(), new (class Port {})(), Object.create({ id: 'p', mac_address: MAC })])(
    'the argument itself must be a plain object: %s',
    (v) => {
      for (const [name, [fn]] of Object.entries(validators)) expect(refusal(() => fn(v)).field).toBe(name);
    },
  );

  it('refuses accessors without calling them, deep nesting, and oversized extras', () => {
    let called = false;
    const getter = Object.defineProperty(port(), 'status', { get: () => ((called = true), 'ACTIVE'), enumerable: true });
    expect(refusal(() => validatePort(getter)).field).toBe('port.status');
    expect(called).toBe(false);
    let deep: unknown = 1;
    for (let i = 0; i < 40; i++) deep = [deep];
    expect(refusal(() => validatePort({ ...port(), deep })).field).toMatch(/^port\.deep(\[0\])+$/);
    const wide = Array.from({ length: 200 }, () => new Array(1000).fill(0));
    expect(refusal(() => validatePort({ ...port(), wide })).reason).toBe('is too large');
    const revoked = Proxy.revocable({}, {});
    revoked.revoke();
    expect(refusal(() => validatePort(revoked.proxy)).field).toBe('port');
  });

  it('checks host and id directly, with the field name given', () => {
    for (const bad of BAD_HOST) expect(refusal(() => validateHost(bad, 'x.host')).field).toBe('x.host');
    for (const bad of BAD_ID) expect(refusal(() => validateId(bad, 'x.id')).field).toBe('x.id');
    expect(validateHost('compute-1.example.org')).toBe('compute-1.example.org');
    expect(validateId('reserved_dhcp_port', 'port.device_id')).toBe('reserved_dhcp_port');
    expect(validateId('user@domain:1', 'id')).toBe('user@domain:1');
  });
});

describe('segment rules by network type', () => {
  const seg = (over: Record<string, unknown>) => ({ id: 's', ...over });
  it.each([
    [{ network_type: 'vlan', physical_network: 'pn', segmentation_id: 4094 }, null],
    [{ network_type: 'vlan', segmentation_id: 1 }, 'segment.physical_network'],
    [{ network_type: 'flat', physical_network: 'pn' }, null],
    [{ network_type: 'flat', physical_network: 'pn', segmentation_id: null }, null],
    [{ network_type: 'flat', physical_network: 'pn', segmentation_id: 5 }, 'segment.segmentation_id'],
    [{ network_type: 'flat', physical_network: null }, 'segment.physical_network'],
    [{ network_type: 'gpe', segmentation_id: 16_777_215 }, null],
    [{ network_type: 'gpe', segmentation_id: 16_777_216 }, 'segment.segmentation_id'],
    [{ network_type: 'vxlan', physical_network: null, segmentation_id: 0 }, 'segment.segmentation_id'],
    [{ network_type: 'geneve' }, 'segment.segmentation_id'],
    [{ network_type: 'gre', segmentation_id: 4_294_967_295 }, null],
    [{ network_type: 'gre', segmentation_id: 4_294_967_296 }, 'segment.segmentation_id'],
    [{ network_type: 'local' }, null],
    [{ network_type: 'local', segmentation_id: 3 }, 'segment.segmentation_id'],
    [{ network_type: 'local', physical_network: 'pn' }, 'segment.physical_network'],
  ])('%j → %s', (over, want) => {
    if (want === null) expect(validateSegment(seg(over))).toEqual(seg(over));
    else expect(refusal(() => validateSegment(seg(over))).field).toBe(want);
  });

  it('keeps absent and null segmentation ids apart, and honours knownTypes', () => {
    expect('segmentation_id' in validateSegment(seg({ network_type: 'flat', physical_network: 'p' }))).toBe(false);
    expect(validateSegment(seg({ network_type: 'flat', physical_network: 'p', segmentation_id: null })).segmentation_id).toBeNull();
    expect(refusal(() => validateSegment(seg({ network_type: 'gpe', segmentation_id: 1 }), 'seg', ['vlan'])).field).toBe('seg.network_type');
    expect(validateSegment(seg({ network_type: 'opflex', segmentation_id: 7 }), 'seg', ['opflex'])).toEqual(seg({ network_type: 'opflex', segmentation_id: 7 }));
  });
});

describe('cross-field rules', () => {
  it('a binding needs a host; unbound ports may have empty hosts and device ids', () => {
    expect(refusal(() => validateUpdate({ ...update(), host: '' })).field).toBe('host');
    expect(refusal(() => validateUpdate({ ...update(), original_host: null })).field).toBe('original_host');
    const unbound = { current: { ...port(), device_id: '', 'binding:host_id': '' }, host: '', binding_levels: [null], original_binding_levels: null };
    expect(validateUpdate(unbound)).toEqual(unbound);
    expect(validateDelete({ port: port(), host: '', binding_levels: [] })).toEqual({ port: port(), host: '', binding_levels: [] });
  });
});

/** Every object reachable from `v`. */
function objects(v: unknown, out = new Set<object>()): Set<object> {
  if (typeof v === 'object' && v !== null && !out.has(v)) {
    out.add(v);
    for (const x of Object.values(v)) objects(x, out);
  }
  return out;
}

describe('sanitized copies', () => {
  it.each(Object.entries(validators))('%s: a valid input round-trips to an equal copy sharing no references', (_name, [fn, valid]) => {
    const input = valid();
    const out = fn(input);
    expect(out).toEqual(input);
    const inputObjects = objects(input);
    const shared = [...objects(out)].filter((o) => inputObjects.has(o));
    expect(shared).toEqual([]);
    expect(JSON.parse(JSON.stringify(out))).toEqual(out);
  });

  it('later mutation of the input does not change the copy; undefined fields and extras of nested types are dropped', () => {
    const input: Record<string, unknown> = { ...port(), device_id: undefined };
    const out = validatePort(input);
    (input.fixed_ips as { ip_address: string }[])[0].ip_address = '6.6.6.6';
    (input.security_groups as string[]).push('sg-evil');
    expect(out.fixed_ips?.[0].ip_address).toBe('10.0.0.5');
    expect(out.security_groups).toEqual(['sg-a', 'sg-b']);
    expect('device_id' in out).toBe(false);
    const seg = validateSegment({ ...vlan(), network_id: 'n1' });
    expect(seg).toEqual(vlan());
    expect(validatePort({ ...port(), fixed_ips: [{ subnet_id: 's', ip_address: '10.0.0.1', extra: 1 }] }).fixed_ips).toEqual([
      { subnet_id: 's', ip_address: '10.0.0.1' },
    ]);
    expect(validatePort(Object.assign(Object.create(null), { id: 'p', mac_address: MAC }))).toEqual({ id: 'p', mac_address: MAC });
  });
});

describe('property: validators return or throw ValidationError, never another error', () => {
  const check = (fn: (v: unknown) => unknown, v: unknown) => {
    let out: unknown;
    try {
      out = fn(v);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      return;
    }
    expect(JSON.parse(JSON.stringify(out))).toEqual(out);
  };
  const all = Object.values(validators).map(([fn]) => fn);

  it('on arbitrary JSON values', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => all.forEach((fn) => check(fn, v))), { numRuns: 500 });
  });

  it('on arbitrary JS values', () => {
    const anything = fc.anything({ withBigInt: true, withBoxedValues: true, withDate: true, withMap: true, withSet: true,
      withNullPrototype: true, withObjectString: true, withSparseArray: true, withTypedArray: true });
    fc.assert(fc.property(anything, (v) => all.forEach((fn) => check(fn, v))), { numRuns: 300 });
  });

  it('on near-valid inputs (each field valid or arbitrary)', () => {
    const or = <T>(valid: fc.Arbitrary<T>) => fc.oneof(valid, valid, fc.jsonValue(), fc.constant(undefined));
    const seg = fc.record({
      id: or(fc.constantFrom('s1', 'seg-2')),
      network_type: or(fc.constantFrom('flat', 'vlan', 'gpe', 'vxlan', 'local', 'none')),
      physical_network: or(fc.constantFrom('physnet1', null)),
      segmentation_id: or(fc.oneof(fc.integer({ min: -1, max: 20_000_000 }), fc.constant(null))),
    }, { requiredKeys: [] });
    const portArb = fc.record({
      id: or(fc.constant('p1')),
      mac_address: or(fc.constant(MAC)),
      fixed_ips: or(fc.array(fc.record({ subnet_id: or(fc.constant('s1')), ip_address: or(fc.oneof(fc.ipV4(), fc.ipV6())) }, { requiredKeys: [] }), { maxLength: 3 })),
      allowed_address_pairs: or(fc.array(fc.record({ ip_address: or(fc.ipV4()), mac_address: or(fc.constant(MAC)) }, { requiredKeys: [] }), { maxLength: 2 })),
      security_groups: or(fc.array(fc.constantFrom('sg-a', 'sg-b'), { maxLength: 3 })),
      'binding:profile': or(fc.record({ migrating_to: or(fc.constant('h2')) }, { requiredKeys: [] })),
      port_security_enabled: or(fc.boolean()),
      device_id: or(fc.constantFrom('vm-1', '', null)),
    }, { requiredKeys: [] });
    const lvl = fc.oneof(fc.constant(null), fc.record({ bound_driver: or(fc.constant('vpp')), bound_segment: or(seg) }, { requiredKeys: [] }));
    const levels = or(fc.array(lvl, { maxLength: 3 }));
    const host = or(fc.constantFrom('h1', 'h2', ''));
    const ctx = fc.record({ port: portArb, current: portArb, original: or(portArb), segment: or(seg), segments: or(fc.array(seg, { maxLength: 3 })),
      host, original_host: host, binding_levels: levels, original_binding_levels: levels }, { requiredKeys: [] });
    fc.assert(fc.property(ctx, (v) => {
      all.forEach((fn) => check(fn, v));
      check(validatePort, v.port);
      check(validateSegment, v.segment);
    }), { numRuns: 1000 });
  });
});
