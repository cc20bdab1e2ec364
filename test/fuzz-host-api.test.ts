/**
 * Fuzzing the whole host API of a runtime with generated calls: valid ones
 * (must succeed), calls with one known-bad field (must be refused with a
 * ValidationError naming that field, journaling nothing) and chaos (any
 * hostile value, missing or extra field anywhere: either accepted or refused
 * with a ValidationError, never anything else). Then: `Object.prototype` is
 * untouched, the journal holds only entries the layout allows with values of
 * the right shape, and once drained into a private etcd no key outside the
 * prefix exists and every key under it is one the layout allows.
 *
 * Reproduce a failure with the seed it prints: PORTWIRE_FUZZ_SEED=<seed>.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isIP } from 'node:net';
import type { Etcd3 } from 'etcd3';
import { PortwireError, ValidationError } from '../src/errors.ts';
import { Journal } from '../src/journal.ts';
import { startManagedEtcd, type ManagedEtcd } from '../src/managed-etcd.ts';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import { newClient, waitFor } from './helpers/etcd.ts';
import { tempDir } from './helpers/temp.ts';

const SEED = Number(process.env.PORTWIRE_FUZZ_SEED ?? 20_260_611);
const RUNS = Number(process.env.PORTWIRE_FUZZ_RUNS ?? 6000);
const PREFIX = '/pw-fuzz';
const GROUPS = ['sg-a', 'sg-b', 'sg-c'];

// ── valid values ─────────────────────────────────────────────────────────────

const idArb = fc.oneof(
  { weight: 4, arbitrary: fc.uuid() },
  { weight: 4, arbitrary: fc.stringMatching(/^[\w:@-][\w.:@-]{0,24}$/) },
  { weight: 1, arbitrary: fc.constantFrom('...', '.x', 'a..b', '@', ':', '-', '_', 'x'.repeat(255)) },
);
const hostArb = fc.oneof(
  { weight: 5, arbitrary: fc.stringMatching(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,24}$/) },
  { weight: 1, arbitrary: fc.constantFrom('...', '.h', 'compute-1.example.org', 'h'.repeat(255)) },
);
const physnetArb = fc.stringMatching(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}$/);
const hex = (n: number) => n.toString(16).padStart(2, '0');
const macArb = fc
  .tuple(fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 }), fc.boolean())
  .map(([b, upper]) => (upper ? b.map(hex).join(':').toUpperCase() : b.map(hex).join(':')));
const ipArb = fc.oneof(fc.ipV4(), fc.ipV6());
const cidrArb = fc.oneof(
  ipArb,
  fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([a, l]) => `${a}/${l}`),
  fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([a, l]) => `${a}/${l}`),
);
/** Text the validators accept: no control characters, no lone surrogates (unicode oddities welcome). */
const textArb = fc.oneof(
  fc.string({ maxLength: 16 }),
  fc.constantFrom('ünïcödé', '日本語', '🙂👍🏽', 'a\u200Db', 'rtl\u202Eltr', '\uFEFFbom', 'x'.repeat(255), '', ' ', '__proto__', '../..'),
);
const KEYS_OK = fc
  .stringMatching(/^[a-z][a-z0-9_]{0,8}$/)
  .filter((k) => k !== 'constructor' && k !== 'prototype');
/** Plain JSON values of the kind a port's extra fields hold. */
const jsonArb: fc.Arbitrary<unknown> = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    textArb,
    fc.constantFrom('line\nbreak', 'tab\there', 'cr\r'),
    fc.array(tie('v'), { maxLength: 3 }),
    fc.dictionary(KEYS_OK, tie('v'), { maxKeys: 3 }),
  ),
})).v;

const portArb = fc.record(
  {
    id: idArb,
    mac_address: macArb,
    device_owner: fc.oneof(fc.constantFrom('compute:nova', 'network:dhcp', 'neutron:LOADBALANCERV2', ''), textArb),
    device_id: fc.oneof(idArb, fc.constant(''), fc.constant(null)),
    status: fc.constantFrom('ACTIVE', 'DOWN', 'BUILD'),
    security_groups: fc.array(fc.oneof(fc.constantFrom(...GROUPS), idArb), { minLength: 1, maxLength: 3 }),
    allowed_address_pairs: fc.array(fc.record({ ip_address: cidrArb, mac_address: macArb }, { requiredKeys: ['ip_address'] }), {
      minLength: 1,
      maxLength: 2,
    }),
    fixed_ips: fc.array(fc.record({ subnet_id: idArb, ip_address: ipArb }), { minLength: 1, maxLength: 3 }),
    port_security_enabled: fc.boolean(),
    'binding:profile': fc.record({ migrating_to: hostArb, pci: jsonArb }, { requiredKeys: [] }),
    'binding:vnic_type': fc.constantFrom('normal', 'direct', 'macvtap'),
    'binding:host_id': fc.oneof(hostArb, fc.constant('')),
    name: textArb,
    description: textArb,
    tags: fc.array(jsonArb, { maxLength: 3 }),
  },
  { requiredKeys: ['id', 'mac_address', 'security_groups', 'allowed_address_pairs', 'fixed_ips', 'binding:profile'] },
);

const segmentArb = fc.oneof(
  fc.record({ id: idArb, network_type: fc.constant('vlan'), physical_network: physnetArb, segmentation_id: fc.integer({ min: 1, max: 4094 }) }),
  fc.record(
    { id: idArb, network_type: fc.constant('flat'), physical_network: physnetArb, segmentation_id: fc.constant(null) },
    { requiredKeys: ['id', 'network_type', 'physical_network'] },
  ),
  fc.record(
    {
      id: idArb,
      network_type: fc.constantFrom('gpe', 'vxlan', 'geneve'),
      physical_network: fc.oneof(fc.constant(null), physnetArb),
      segmentation_id: fc.integer({ min: 1, max: 16_777_215 }),
    },
    { requiredKeys: ['id', 'network_type', 'segmentation_id'] },
  ),
  fc.record({ id: idArb, network_type: fc.constant('gre'), segmentation_id: fc.integer({ min: 1, max: 4_294_967_295 }) }),
  fc.record(
    { id: idArb, network_type: fc.constant('local'), physical_network: fc.constant(null), segmentation_id: fc.constant(null) },
    { requiredKeys: ['id', 'network_type'] },
  ),
);
const levelArb = segmentArb.map((s) => ({ bound_driver: 'vpp', bound_segment: s }));

/** A valid rule of group `sg` (ids made unique by the caller). */
const ruleArb = (sg: string) =>
  fc
    .record({
      id: idArb,
      direction: fc.constantFrom('ingress', 'egress'),
      v6: fc.boolean(),
      protocol: fc.constantFrom(null, 'tcp', 'udp', 'icmp', 'TCP', 6, 17, 1, '6', 'gre', 47),
      ports: fc.option(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }))),
      prefix: fc.option(fc.integer({ min: 0, max: 32 })),
      group: fc.option(fc.constantFrom(...GROUPS)),
    })
    .map((x) => {
      const icmp = x.protocol === 'icmp' || x.protocol === 1;
      const ported = x.protocol !== null && !icmp && x.protocol !== 'gre' && x.protocol !== 47;
      const [a, b] = x.ports ?? [0, 0];
      return {
        id: x.id,
        security_group_id: sg,
        direction: x.direction,
        ethertype: x.v6 ? 'IPv6' : 'IPv4',
        protocol: x.protocol,
        port_range_min: x.ports && (icmp || ported) ? Math.min(a, b) : null,
        port_range_max: x.ports && (icmp || ported) ? Math.max(a, b) : null,
        remote_ip_prefix: x.prefix === null ? null : x.v6 ? `2001:db8::/${x.prefix}` : `10.0.0.0/${x.prefix}`,
        remote_group_id: x.prefix === null ? x.group : null,
      };
    });
const rulesArb = (sg: string) =>
  fc.array(ruleArb(sg), { maxLength: 4 }).map((rules) => rules.map((r, i) => ({ ...r, id: `${i}-${r.id}`.slice(0, 255) })));
const groupArb = fc
  .oneof(fc.constantFrom(...GROUPS), idArb)
  .chain((id) => fc.record({ id: fc.constant(id), security_group_rules: rulesArb(id), name: textArb }, { requiredKeys: ['id'] }));

// ── known-bad values, by kind of field ───────────────────────────────────────

class Opaque {
  x = 1;
}
const deep = (n: number): unknown => (n === 0 ? 1 : { a: deep(n - 1) });
const huge = 'x'.repeat(100_000);
const ID_BAD = fc.oneof(
  fc.constantFrom(
    '.', '..', 'a/b', '/', '../../etc/passwd', 'a b', 'a\u0000b', '\u0000', 'x\u0001', 'x\u001f', 'x\u007f', 'x\u0085',
    'é', '日本', '🙂', 'a\u202Eb', '\uFEFF', '\uD800', 'a\uDC00', 'x'.repeat(256), huge, 'a\nb', 'a\tb', 'a%2Fb', 'a\\b',
    'a*b', 'a?b', 'a#b', '${x}', 0, 1, -1, NaN, true, [], ['a'], {}, { id: 'x' },
  ),
  fc.tuple(idArb, fc.constantFrom('/', ' ', '\u0000', '\n', '#', '\u00e9', '\uD83D'), idArb).map(([a, c, b]) => a + c + b),
);
/** For ids that may not be '' or null (device_id and remote_group_id may). */
const ID_BAD_REQUIRED = fc.oneof(ID_BAD, fc.constantFrom('', null));
const HOST_BAD = fc.oneof(
  fc.constantFrom('.', '..', 'a/b', '/', 'a:b', 'a@b', 'a b', 'é', 'a\u0000', 'h\u0001', 'h'.repeat(256), huge, '\uD800', 5, [], {}, true),
  fc.tuple(hostArb, fc.constantFrom('/', ':', '@', ' ', '\u0000', '*'), hostArb).map(([a, c, b]) => a + c + b),
);
const HOST_BAD_REQUIRED = fc.oneof(HOST_BAD, fc.constantFrom('', null));
const MAC_BAD = fc.constantFrom(
  'fa:16:3e:00:00', 'fa:16:3e:00:00:0g', 'fa-16-3e-00-00-01', 'fa:16:3e:00:00:01:02', 'fa16.3e00.0001', '', ' fa:16:3e:00:00:01',
  'fa:16:3e:00:00:01\n', '\uFF46a:16:3e:00:00:01', null, 0x123456, ['fa'], {}, huge,
);
const IP_BAD_COMMON = [
  '10.0.0.256', '1.2.3', 'fe80::1%eth0', '::ffff:1.2.3', '', 'localhost', '10.0.0.1 ', '10.0.0.1\u0000', '\uFF10.0.0.0',
  '1'.repeat(100), 167_772_161, null, [], '01.2.3.4', '::1::', huge, 'a/b',
];
const IP_BAD = fc.constantFrom(...IP_BAD_COMMON, '10.0.0.1/24', '::/0');
const CIDR_BAD = fc.constantFrom(
  ...IP_BAD_COMMON, '10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0.0/08', '10.0.0.0/-1', '10.0.0.0/24/24', '10.0.0.0/ 24',
  '10.0.0.0/1e1', '/24',
);
const BOOL_BAD = fc.constantFrom('true', 1, 0, null, [], {});
const TEXT_BAD = fc.constantFrom(5, null, [], {}, 'x'.repeat(256), huge, 'a\u0000', 'a\u0007', '\uD800', 'a\r\nb', true);
const JSON_BAD = fc.constantFrom<unknown>(
  NaN, Infinity, -Infinity, 10n, () => 1, Symbol('s'), new Date(0), new Map(), new Opaque(), Object.create({ a: 1 }),
  'x'.repeat(16_385), 'a\u0000b', '\uDFFF', Array(1001).fill(0), deep(40), { get x() { return 1; } }, [1, { y: NaN }],
);
const NETTYPE_BAD = fc.constantFrom('VLAN', 'vlan ', ' vlan', 'ovs', '', 'vlan\u0000', 5, null, [], {}, huge);
const PHYSNET_BAD = fc.constantFrom('', '.', '..', 'a/b', 'a b', 'a:b', 'x'.repeat(65), 5, [], 'é', 'p\u0000', true);
const SEGID_BAD = fc.constantFrom(0, -1, 1.5, '100', NaN, Infinity, 2 ** 32, 2 ** 53, true, [], {});
const BINDTYPE_BAD = fc.constantFrom('ovs', '', 'VHOSTUSER', 1, null, [], 'tap ');
const LIST_BAD = fc.constantFrom<unknown>('x', 5, {}, true, { length: 1, 0: 'a' }, new Set(['a']), 'a,b');
const LIST_BAD_REQUIRED = fc.oneof(LIST_BAD, fc.constant(null));
const OBJ_BAD = fc.constantFrom<unknown>('x', 5, true, [], [{}], new Date(0), Object.create({}), new Map(), new Opaque(), huge);
const OBJ_BAD_REQUIRED = fc.oneof(OBJ_BAD, fc.constant(null));
const DIRECTION_BAD = fc.constantFrom('in', '', 'INGRESS', null, 1, []);
const ETHERTYPE_BAD = fc.constantFrom('ipv4', 'IPv5', 'IPv4 ', '', null, 4);
const PROTOCOL_BAD = fc.constantFrom('nope', 256, -1, 1.5, [], {}, 'tcp ', '1e2', '0x6', true);
const PORT_BAD = fc.constantFrom(65_536, -2, 1.5, '22', NaN, [], {}, true);
const PREFIX_BAD = fc.constantFrom('x', '10.0.0.0/33', '::/129', 5, '10.0.0.1/', '10.0.0.0/8/8', [], {}, true);
const FORBIDDEN = ['__proto__', 'constructor', 'prototype'] as const;

// ── calls, and where they can be broken ──────────────────────────────────────

type Key = string | number;
/** A place in a call's arguments where a known-bad value must be refused, naming `field`. */
interface Site {
  path: Key[];
  field: string;
  bad?: fc.Arbitrary<unknown>;
  /** Removing it must be refused. */
  required?: boolean;
  /** An object: a forbidden own key in it must be refused. */
  object?: boolean;
}
interface Call {
  api: string;
  /** The arguments: one object, or a record of positional arguments for the APIs taking several. */
  args: Record<string, unknown>;
  sites: Site[];
}
type Expect = { kind: 'ok' } | { kind: 'bad'; field: string; what: string } | { kind: 'chaos'; what: string };

const fieldOf = (root: string, path: Key[]): string =>
  path.reduce<string>((f, k) => (typeof k === 'number' ? `${f}[${k}]` : f === '' ? k : `${f}.${k}`), root);

/** A builder of the sites under `at` (a path), their field names rooted at `root`. */
const siteAt =
  (at: Key[], root: string) =>
  (rel: Key[], bad?: fc.Arbitrary<unknown>, extra: Partial<Site> = {}): Site => ({
    path: [...at, ...rel],
    field: fieldOf(root, [...at, ...rel]),
    bad,
    ...extra,
  });

/** The sites of a port at `at` (a path), its field names rooted at `root`. */
function portSites(at: Key[], root = ''): Site[] {
  const s = siteAt(at, root);
  return [
    s([], OBJ_BAD_REQUIRED, { object: true }),
    s(['id'], ID_BAD_REQUIRED, { required: true }),
    s(['mac_address'], MAC_BAD, { required: true }),
    s(['device_id'], ID_BAD),
    s(['device_owner'], TEXT_BAD),
    s(['status'], TEXT_BAD),
    s(['binding:vnic_type'], TEXT_BAD),
    s(['binding:host_id'], HOST_BAD),
    s(['port_security_enabled'], BOOL_BAD),
    s(['security_groups'], LIST_BAD_REQUIRED),
    s(['security_groups', 0], ID_BAD_REQUIRED),
    s(['fixed_ips'], LIST_BAD_REQUIRED),
    s(['fixed_ips', 0], OBJ_BAD_REQUIRED, { object: true }),
    s(['fixed_ips', 0, 'subnet_id'], ID_BAD_REQUIRED, { required: true }),
    s(['fixed_ips', 0, 'ip_address'], IP_BAD, { required: true }),
    s(['allowed_address_pairs'], LIST_BAD_REQUIRED),
    s(['allowed_address_pairs', 0], OBJ_BAD_REQUIRED, { object: true }),
    s(['allowed_address_pairs', 0, 'ip_address'], CIDR_BAD, { required: true }),
    s(['allowed_address_pairs', 0, 'mac_address'], MAC_BAD),
    s(['binding:profile'], OBJ_BAD_REQUIRED, { object: true }),
    s(['binding:profile', 'migrating_to'], HOST_BAD_REQUIRED),
    s(['binding:profile', 'pci'], JSON_BAD),
    s(['name'], JSON_BAD),
    s(['tags'], JSON_BAD),
  ];
}

function segmentSites(at: Key[], root = '', nullable = false): Site[] {
  const s = siteAt(at, root);
  return [
    s([], nullable ? OBJ_BAD : OBJ_BAD_REQUIRED, { object: true }),
    s(['id'], ID_BAD_REQUIRED, { required: true }),
    s(['network_type'], NETTYPE_BAD, { required: true }),
    s(['physical_network'], PHYSNET_BAD),
    s(['segmentation_id'], SEGID_BAD),
  ];
}

function levelSites(at: Key[]): Site[] {
  const s = siteAt(at, '');
  return [
    s([], LIST_BAD),
    s([0], fc.constantFrom('x', 5, [], true), { object: true }),
    s([0, 'bound_driver'], TEXT_BAD, { required: true }),
    ...segmentSites([...at, 0, 'bound_segment']),
    s([0, 'bound_segment'], undefined, { required: true }),
  ];
}

function ruleSites(at: Key[], root: string): Site[] {
  const s = siteAt(at, root);
  return [
    s([], OBJ_BAD_REQUIRED, { object: true }),
    s(['id'], ID_BAD_REQUIRED, { required: true }),
    s(['security_group_id'], ID_BAD_REQUIRED, { required: true }),
    s(['direction'], DIRECTION_BAD, { required: true }),
    s(['ethertype'], ETHERTYPE_BAD, { required: true }),
    s(['protocol'], PROTOCOL_BAD),
    s(['port_range_min'], PORT_BAD),
    s(['remote_ip_prefix'], PREFIX_BAD),
    s(['remote_group_id'], ID_BAD),
  ];
}

const rootSite = (root: string): Site => ({ path: [], field: root, bad: OBJ_BAD_REQUIRED, object: true });

const bindArb = fc
  .record({ port: portArb, segment: segmentArb, host: hostArb, binding_type: fc.constantFrom('vhostuser', 'tap') }, {
    requiredKeys: ['port', 'segment', 'host'],
  })
  .map((args): Call => ({
    api: 'bindPort',
    args,
    sites: [
      rootSite('bind'),
      ...portSites(['port']),
      { path: ['port'], field: 'port', required: true },
      ...segmentSites(['segment']),
      { path: ['segment'], field: 'segment', required: true },
      { path: ['host'], field: 'host', bad: HOST_BAD_REQUIRED, required: true },
      { path: ['binding_type'], field: 'binding_type', bad: BINDTYPE_BAD },
    ],
  }));

const unbindArb = fc
  .record({ port: portArb, host: hostArb, segment: fc.oneof(segmentArb, fc.constant(null)) }, { requiredKeys: ['port', 'host'] })
  .map((args): Call => ({
    api: 'unbindPort',
    args,
    sites: [
      rootSite('unbind'),
      ...portSites(['port']),
      { path: ['port'], field: 'port', required: true },
      { path: ['host'], field: 'host', bad: HOST_BAD_REQUIRED, required: true },
      ...(args.segment ? segmentSites(['segment'], '', true) : [{ path: ['segment'], field: 'segment', bad: OBJ_BAD }]),
    ],
  }));

const updateArb = fc
  .record(
    {
      current: portArb,
      original: fc.oneof(portArb, fc.constant(null)),
      host: hostArb,
      original_host: hostArb,
      binding_levels: fc.array(levelArb, { minLength: 1, maxLength: 2 }),
      original_binding_levels: fc.array(levelArb, { minLength: 1, maxLength: 2 }),
    },
    { requiredKeys: ['current', 'host', 'binding_levels', 'original_host'] },
  )
  .map((args): Call => ({
    api: 'updatePort',
    args,
    sites: [
      rootSite('update'),
      ...portSites(['current']),
      { path: ['current'], field: 'current', required: true },
      ...(args.original ? portSites(['original']).slice(1) : []),
      { path: ['host'], field: 'host', bad: HOST_BAD, required: true },
      { path: ['original_host'], field: 'original_host', bad: HOST_BAD },
      ...levelSites(['binding_levels']),
      ...(args.original_binding_levels ? levelSites(['original_binding_levels']) : []),
    ],
  }));

const deleteArb = fc
  .record({ port: portArb, host: hostArb, binding_levels: fc.array(levelArb, { minLength: 1, maxLength: 2 }) }, {
    requiredKeys: ['port', 'host', 'binding_levels'],
  })
  .map((args): Call => ({
    api: 'deletePort',
    args,
    sites: [
      rootSite('delete'),
      ...portSites(['port']),
      { path: ['port'], field: 'port', required: true },
      { path: ['host'], field: 'host', bad: HOST_BAD },
      ...levelSites(['binding_levels']),
    ],
  }));

const decisionArb = fc
  .record({ port: portArb, segments: fc.array(segmentArb, { minLength: 1, maxLength: 3 }), host: hostArb })
  .map((args): Call => ({
    api: 'bindPortDecision',
    args,
    sites: [
      rootSite('bindPortDecision'),
      ...portSites(['port']),
      { path: ['segments'], field: 'segments', bad: LIST_BAD_REQUIRED, required: true },
      ...segmentSites(['segments', 0]),
      { path: ['host'], field: 'host', bad: HOST_BAD_REQUIRED, required: true },
    ],
  }));

const canBindArb = fc.record({ host: hostArb, segment: segmentArb }).map((args): Call => ({
  api: 'canBind',
  args,
  sites: [{ path: ['host'], field: 'host', bad: HOST_BAD_REQUIRED }, ...segmentSites(['segment'])],
}));

const txArb = fc.array(fc.oneof(bindArb, unbindArb, updateArb, deleteArb), { minLength: 1, maxLength: 4 }).map((calls): Call => ({
  api: 'transaction',
  args: { ops: calls.map((c) => ({ api: c.api, args: c.args })) },
  sites: calls.flatMap((c, i) =>
    c.sites.filter((s) => s.path.length > 0).map((s) => ({ ...s, path: ['ops', i, 'args', ...s.path] })),
  ),
}));

const groupSites = (g: { security_group_rules?: unknown[] }, at: Key[], root: string): Site[] => [
  { path: at, field: fieldOf(root, at), bad: OBJ_BAD_REQUIRED, object: true },
  { path: [...at, 'id'], field: fieldOf(root, [...at, 'id']), bad: ID_BAD_REQUIRED, required: true },
  { path: [...at, 'security_group_rules'], field: fieldOf(root, [...at, 'security_group_rules']), bad: LIST_BAD_REQUIRED },
  ...(g.security_group_rules?.length ? ruleSites([...at, 'security_group_rules', 0], root) : []),
];

const createGroupArb = groupArb.map((g): Call => ({ api: 'createSecurityGroup', args: { sg: g }, sites: groupSites(g, ['sg'], '') }));
const createGroupsArb = fc.array(groupArb, { minLength: 2, maxLength: 3 }).map((gs): Call => ({
  api: 'createSecurityGroups',
  args: { groups: gs },
  sites: [{ path: ['groups'], field: 'groups', bad: fc.constantFrom('x', 5, {}, null) }, ...groupSites(gs[0], ['groups', 0], '')],
}));
const deleteGroupArb = fc.oneof(fc.constantFrom(...GROUPS), idArb).map((sgId): Call => ({
  api: 'deleteSecurityGroup',
  args: { sgId },
  sites: [{ path: ['sgId'], field: 'sgId', bad: ID_BAD_REQUIRED }],
}));
const createRuleArb = fc
  .constantFrom(...GROUPS)
  .chain((sg) => ruleArb(sg))
  .map((rule): Call => ({ api: 'createRule', args: { rule }, sites: ruleSites(['rule'], '') }));
const deleteRuleArb = fc.tuple(idArb, fc.constantFrom(...GROUPS)).map(([ruleId, sgId]): Call => ({
  api: 'deleteRule',
  args: { ruleId, sgId },
  sites: [
    { path: ['ruleId'], field: 'ruleId', bad: ID_BAD_REQUIRED },
    { path: ['sgId'], field: 'sgId', bad: ID_BAD_REQUIRED },
  ],
}));

const baseCallArb = fc.oneof(
  { weight: 3, arbitrary: bindArb },
  { weight: 2, arbitrary: unbindArb },
  { weight: 3, arbitrary: updateArb },
  { weight: 2, arbitrary: deleteArb },
  { weight: 2, arbitrary: decisionArb },
  { weight: 1, arbitrary: canBindArb },
  { weight: 2, arbitrary: txArb },
  { weight: 2, arbitrary: createGroupArb },
  { weight: 1, arbitrary: createGroupsArb },
  { weight: 1, arbitrary: deleteGroupArb },
  { weight: 2, arbitrary: createRuleArb },
  { weight: 1, arbitrary: deleteRuleArb },
);

// ── mutations ────────────────────────────────────────────────────────────────

const clone = (v: Record<string, unknown>): Record<string, unknown> => structuredClone(v);

function parentOf(root: Record<string, unknown>, path: Key[]): Record<Key, unknown> | undefined {
  let cur: unknown = root;
  for (const k of path.slice(0, -1)) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as Record<Key, unknown>)[k];
  }
  return typeof cur === 'object' && cur !== null ? (cur as Record<Key, unknown>) : undefined;
}

/** A copy of `args` with `value` at `path` (the whole arguments when `path` is empty). */
function setAt(args: Record<string, unknown>, path: Key[], value: unknown): unknown {
  if (path.length === 0) return value;
  const copy = clone(args);
  const parent = parentOf(copy, path);
  if (parent) Object.defineProperty(parent, path[path.length - 1], { value, enumerable: true, writable: true, configurable: true });
  return copy;
}

function deleteAt(args: Record<string, unknown>, path: Key[]): unknown {
  const copy = clone(args);
  const parent = parentOf(copy, path);
  if (parent) delete parent[path[path.length - 1]];
  return copy;
}

/** A copy of `args` whose object at `path` has the own key `key` (through JSON.parse, as a request body would). */
function withOwnKey(args: Record<string, unknown>, path: Key[], key: string, value: unknown): unknown {
  const copy = clone(args);
  const target = path.length === 0 ? copy : (parentOf(copy, [...path, '']) as Record<string, unknown> | undefined);
  if (!target || typeof target !== 'object' || Array.isArray(target)) return copy;
  target['\u0001marker'] = value;
  return JSON.parse(JSON.stringify(copy).replace('"\\u0001marker"', JSON.stringify(key)));
}

const exists = (args: Record<string, unknown>, path: Key[]): boolean => {
  if (path.length === 0) return true;
  const parent = parentOf(args, path);
  return parent !== undefined && Object.hasOwn(parent, path[path.length - 1]);
};

interface Generated {
  call: Call;
  args: unknown;
  expect: Expect;
}

/** A short printable form of a generated call, for fast-check's counterexample. */
function show(g: Generated): string {
  let text: string;
  try {
    text = JSON.stringify(g.args, (_k, v: unknown) =>
      typeof v === 'string' && v.length > 80 ? `${v.slice(0, 40)}…(${v.length} chars)` : typeof v === 'bigint' ? `${v}n` : v,
    );
  } catch {
    text = '(not JSON)';
  }
  return `${g.call.api} [${g.expect.kind}${'what' in g.expect ? `: ${g.expect.what}` : ''}] ${String(text).slice(0, 2000)}`;
}

/** One known-bad mutation of a valid call: a bad value, a removed required field, or a forbidden own key. */
function badOf(call: Call): fc.Arbitrary<Generated> {
  const options: fc.Arbitrary<Generated>[] = [];
  for (const site of call.sites) {
    const parentExists = site.path.length === 0 || parentOf(call.args, site.path) !== undefined;
    if (!parentExists) continue;
    if (site.bad) {
      options.push(site.bad.map((v) => ({ call, args: setAt(call.args, site.path, v), expect: { kind: 'bad', field: site.field, what: `bad ${site.field}` } })));
    }
    if (site.required && exists(call.args, site.path)) {
      options.push(fc.constant({ call, args: deleteAt(call.args, site.path), expect: { kind: 'bad', field: site.field, what: `no ${site.field}` } }));
    }
    if (site.object && exists(call.args, site.path)) {
      options.push(
        fc.tuple(fc.constantFrom(...FORBIDDEN), jsonArb).map(([key, value]) => ({
          call,
          args: withOwnKey(call.args, site.path, key, value === null || typeof value !== 'object' ? { polluted: value } : value),
          // the arguments' own keys are named without a root (`port`, `host`, `__proto__`)
          expect: { kind: 'bad', field: site.path.length === 0 ? key : site.field, what: `${key} in ${site.field}` },
        })),
      );
    }
  }
  return options.length ? fc.oneof(...options) : fc.constant({ call, args: call.args, expect: { kind: 'ok' } });
}

const HOSTILE_KEYS = ['', ' ', 'a.b', 'a/b', '..', '\u0000', 'k'.repeat(300), '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '🙂', '\uD800'];
const hostile = (): never => {
  throw new Error('hostile proxy');
};
const sparse: unknown[] = [];
sparse[2] = 'sg-x';
const chaosValue: fc.Arbitrary<unknown> = fc.oneof(
  ID_BAD, HOST_BAD, MAC_BAD, IP_BAD, CIDR_BAD, TEXT_BAD, JSON_BAD, LIST_BAD, OBJ_BAD, SEGID_BAD, PROTOCOL_BAD,
  jsonArb, fc.anything({ maxDepth: 3 }), idArb, hostArb, macArb, ipArb, segmentArb, fc.constant(undefined),
  fc.constant(deep(1000)),
  fc.constant(new Proxy({}, { ownKeys: hostile, getPrototypeOf: hostile, get: hostile, getOwnPropertyDescriptor: hostile })),
  fc.constant(new Proxy([], { ownKeys: hostile, get: hostile, getOwnPropertyDescriptor: hostile })),
  fc.constant(sparse), fc.constant(Array.from({ length: 1001 }, (_, i) => `sg-${i}`)),
);

/** Anything goes at one place: a chaos value, a removal, or an extra (possibly hostile) key. */
function chaosOf(call: Call): fc.Arbitrary<Generated> {
  const sites = call.sites.filter((s) => s.path.length > 0 && parentOf(call.args, s.path) !== undefined);
  if (sites.length === 0) return fc.constant({ call, args: call.args, expect: { kind: 'ok' } });
  return fc.tuple(fc.constantFrom(...sites), fc.integer({ min: 0, max: 2 }), chaosValue, fc.constantFrom(...HOSTILE_KEYS)).map(
    ([site, op, value, key]) => ({
      call,
      args:
        op === 0 ? setAt(call.args, site.path, value) : op === 1 ? deleteAt(call.args, site.path) : withOwnKey(call.args, site.path.slice(0, -1), key, jsonSafe(value)),
      expect: { kind: 'chaos', what: `${['set', 'delete', `key ${JSON.stringify(key)} in`][op]} ${site.field}` },
    }),
  );
}

/** `v` if JSON can carry it, else a string. */
function jsonSafe(v: unknown): unknown {
  try {
    return JSON.stringify(v) === undefined ? 'undefined' : JSON.parse(JSON.stringify(v));
  } catch {
    return 'unserializable';
  }
}

const generatedArb: fc.Arbitrary<Generated> = baseCallArb
  .chain((call) =>
    fc.oneof(
      { weight: 3, arbitrary: fc.constant<Generated>({ call, args: call.args, expect: { kind: 'ok' } }) },
      { weight: 5, arbitrary: badOf(call) },
      { weight: 2, arbitrary: chaosOf(call) },
    ),
  )
  .map((g) => Object.assign(g, { [fc.toStringMethod]: () => show(g) }));

// ── running a call against the model of the security groups ─────────────────

/** Rule ids of the groups the runtime knows, as the successful calls left them. */
const groups = new Map<string, Set<string>>();

function invoke(rt: Runtime, api: string, a: Record<string, unknown>): Promise<unknown> {
  switch (api) {
    case 'canBind':
      return (async () => rt.canBind(a.host as string, a.segment as never))();
    case 'transaction':
      return rt.transaction((tx) => {
        for (const op of a.ops as { api: keyof typeof tx; args: unknown }[]) (tx[op.api] as (x: unknown) => unknown)(op.args);
      });
    case 'createSecurityGroup':
      return rt.createSecurityGroup(a.sg as never);
    case 'createSecurityGroups':
      return rt.createSecurityGroups(a.groups as never);
    case 'deleteSecurityGroup':
      return rt.deleteSecurityGroup(a.sgId as string);
    case 'createRule':
      return rt.createRule(a.rule as never);
    case 'deleteRule':
      return rt.deleteRule(a.ruleId as string, a.sgId as string);
    default:
      return (rt[api as 'bindPort'] as (x: unknown) => Promise<unknown>).call(rt, a);
  }
}

/** What a valid call must do given the groups model: succeed, or be refused naming a field. */
function modelExpect(g: Generated): Expect {
  if (g.expect.kind !== 'ok') return g.expect;
  const a = g.args as Record<string, Record<string, string>>;
  if (g.call.api === 'createRule') {
    const rules = groups.get(a.rule.security_group_id);
    if (!rules) return { kind: 'bad', field: 'rule.security_group_id', what: 'rule of an unknown group' };
    if (rules.has(a.rule.id)) return { kind: 'bad', field: 'rule.id', what: 'rule id taken' };
  }
  if (g.call.api === 'deleteRule' && !groups.has(a.sgId as unknown as string)) {
    return { kind: 'bad', field: 'sgId', what: 'unknown group' };
  }
  return g.expect;
}

function updateModel(api: string, a: Record<string, unknown>): void {
  const record = (sg: { id: string; security_group_rules?: { id: string }[] }) =>
    groups.set(sg.id, new Set(sg.security_group_rules?.map((r) => r.id) ?? ['IPv4', 'IPv6'].map((e) => `${sg.id}-default-egress-${e.toLowerCase()}`)));
  if (api === 'createSecurityGroup') record(a.sg as never);
  if (api === 'createSecurityGroups') for (const sg of a.groups as never[]) record(sg);
  if (api === 'deleteSecurityGroup') groups.delete(a.sgId as string);
  if (api === 'createRule') {
    const r = a.rule as { id: string; security_group_id: string };
    groups.get(r.security_group_id)?.add(r.id);
  }
  if (api === 'deleteRule') groups.get(a.sgId as string)?.delete(a.ruleId as string);
}

// ── what may be journaled and written ────────────────────────────────────────

const ID = String.raw`(?!\.{1,2}(?:/|$))[\w.:@-]{1,255}`;
const HOST = String.raw`(?!\.{1,2}(?:/|$))[A-Za-z0-9._-]{1,255}`;
const MAC = String.raw`[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}`;
const P = PREFIX.replace(/[-/]/g, '\\$&');
const LAYOUT = {
  port: new RegExp(`^${P}/nodes/${HOST}/ports/${ID}$`),
  secgroup: new RegExp(`^${P}/global/secgroups/${ID}$`),
  remoteGroup: new RegExp(`^${P}/global/remote_group/${ID}/${ID}$`),
  remoteGroupDir: new RegExp(`^${P}/global/remote_group/${ID}/$`),
  gpeIp: new RegExp(`^${P}/global/networks/gpe/[1-9]\\d*/${HOST}/${MAC}/([0-9A-Fa-f.:]+)$`),
  gpeDir: new RegExp(`^${P}/global/networks/gpe/[1-9]\\d*/${HOST}/${MAC}/$`),
  election: new RegExp(`^${P}/election/[a-z-]+$`),
};
const BINDING_KEYS = [
  'mac_address', 'mtu', 'physnet', 'network_type', 'segmentation_id', 'binding_type',
  'security_groups', 'allowed_address_pairs', 'fixed_ips', 'port_security_enabled', 'device_id',
];
const ACL_KEYS = ['is_ipv6', 'remote_ip_addr', 'ip_prefix_len', 'remote_group_id', 'protocol', 'port_min', 'port_max'];

/** Why `key` = `json` (null: a delete) is not something the layout allows, or undefined when it is. */
function layoutViolation(key: string, json: string | null, prefix: boolean): string | undefined {
  if (prefix) return LAYOUT.remoteGroupDir.test(key) || LAYOUT.gpeDir.test(key) ? undefined : 'prefix delete outside the layout';
  const gpe = LAYOUT.gpeIp.exec(key);
  if (gpe) return json === null && isIP(gpe[1]) ? undefined : 'bad GPE key or value';
  const value = json === null ? null : (JSON.parse(json) as unknown);
  if (LAYOUT.port.test(key)) {
    if (value === null) return undefined;
    const v = value as Record<string, unknown>;
    if (JSON.stringify(Object.keys(v)) !== JSON.stringify(BINDING_KEYS)) return 'binding keys';
    if (!new RegExp(`^${MAC}$`).test(v.mac_address as string)) return 'binding mac';
    if (v.binding_type !== 'vhostuser' && v.binding_type !== 'tap') return 'binding type';
    if (!(v.security_groups as string[]).every((s) => new RegExp(`^${ID}$`).test(s))) return 'binding security groups';
    if (!(v.fixed_ips as { ip_address: string }[]).every((f) => isIP(f.ip_address) !== 0)) return 'binding fixed ips';
    return undefined;
  }
  if (LAYOUT.secgroup.test(key)) {
    if (value === null) return undefined;
    const v = value as { ingress_rules: unknown[]; egress_rules: unknown[] };
    if (JSON.stringify(Object.keys(v)) !== '["ingress_rules","egress_rules"]') return 'secgroup keys';
    for (const r of [...v.ingress_rules, ...v.egress_rules]) {
      if (JSON.stringify(Object.keys(r as object)) !== JSON.stringify(ACL_KEYS)) return 'ACL rule keys';
    }
    return undefined;
  }
  if (LAYOUT.remoteGroup.test(key)) {
    if (value === null) return undefined;
    return Array.isArray(value) && value.every((ip) => typeof ip === 'string' && isIP(ip) !== 0) ? undefined : 'remote group value';
  }
  return 'key outside the layout';
}

// ── the test ─────────────────────────────────────────────────────────────────

let etcd: ManagedEtcd;
let client: Etcd3;
let dataDir: string;
const runtimes = new Set<Runtime>();

beforeAll(async () => {
  etcd = await startManagedEtcd();
  client = newClient(etcd.endpoints);
  dataDir = tempDir('pw-fuzz-');
});

afterAll(async () => {
  for (const rt of runtimes) await rt.stop();
  client?.close();
  await etcd?.stop();
});

/** Every key in the etcd (the whole keyspace, paged). */
async function wholeKeyspace(c: Etcd3): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let key = Buffer.from([0]);
  for (;;) {
    const res = await c.kv.range({ key, range_end: Buffer.from([0]), limit: 5000 });
    for (const kv of res.kvs) out.set(kv.key.toString(), kv.value.toString());
    if (!res.more || res.kvs.length === 0) return out;
    key = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
  }
}

function prototypesClean(): string | undefined {
  for (const [name, proto] of [['Object', Object.prototype], ['Array', Array.prototype], ['Function', Function.prototype]] as const) {
    const names = Object.getOwnPropertyNames(proto);
    if (names.length !== baseline.get(name)) return `${name}.prototype gained ${names.filter((n) => !baselineNames.get(name)!.has(n))}`;
  }
  if ((({}) as Record<string, unknown>).polluted !== undefined) return 'Object.prototype.polluted';
  return undefined;
}
const baselineNames = new Map<string, Set<string>>(
  ([['Object', Object.prototype], ['Array', Array.prototype], ['Function', Function.prototype]] as const).map(([n, p]) => [
    n,
    new Set(Object.getOwnPropertyNames(p)),
  ]),
);
const baseline = new Map([...baselineNames].map(([n, s]) => [n, s.size]));

describe('host API fuzzing', () => {
  it(`thousands of generated calls (seed ${SEED}, ${RUNS} runs): typed refusals, nothing journaled for them, no pollution`, async () => {
    const rt = createRuntime({
      etcd: { endpoints: etcd.endpoints, callTimeoutMs: 2000 },
      dataDir,
      prefix: PREFIX,
      poolSize: 1,
      forwarder: false,
      resync: { enabled: false },
      returnWatcher: { enabled: false },
      physnetKnown: (_host, physnet) => physnet.length % 2 === 0,
    });
    runtimes.add(rt);
    await rt.start();
    for (const sg of GROUPS) {
      await rt.createSecurityGroup({ id: sg });
      updateModel('createSecurityGroup', { sg: { id: sg } });
    }
    const tally = { ok: 0, refused: 0, bad: 0, chaosAccepted: 0, chaosRefused: 0 };
    const depth = () => rt.status().journalDepth;

    await fc.assert(
      fc.asyncProperty(generatedArb, async (g) => {
        const expected = modelExpect(g);
        const before = depth();
        let result: { ok: true } | { ok: false; err: unknown };
        try {
          await invoke(rt, g.call.api, g.args as Record<string, unknown>);
          result = { ok: true };
        } catch (err) {
          result = { ok: false, err };
        }
        const where = `${g.call.api} (${expected.kind}${'what' in expected ? `: ${expected.what}` : ''})`;
        const polluted = prototypesClean();
        if (polluted) throw new Error(`${where}: ${polluted}`);
        if (!result.ok) {
          const err = result.err;
          if (!(err instanceof ValidationError)) {
            throw new Error(`${where}: refused with ${err instanceof PortwireError ? err.code : 'an untyped error'}: ${String(err)}`, { cause: err });
          }
          if (err.code !== 'INVALID_INPUT' || typeof err.field !== 'string' || err.field === '' || !err.message.includes(err.field)) {
            throw new Error(`${where}: malformed ValidationError ${JSON.stringify({ field: err.field, message: err.message })}`);
          }
          if (depth() !== before) throw new Error(`${where}: refused, yet the journal grew from ${before} to ${depth()}`);
          tally.refused++;
        } else {
          updateModel(g.call.api, g.args as Record<string, unknown>);
        }
        if (expected.kind === 'ok') {
          if (!result.ok) throw new Error(`${where}: a valid call was refused: ${String((result as { err: unknown }).err)}`);
          tally.ok++;
        } else if (expected.kind === 'bad') {
          if (result.ok) throw new Error(`${where}: accepted`);
          const field = (result.err as ValidationError).field;
          const f = expected.field;
          if (field !== f && !field.startsWith(`${f}.`) && !field.startsWith(`${f}[`)) {
            throw new Error(`${where}: named ${field}, expected ${f}: ${(result.err as Error).message.slice(0, 300)}`);
          }
          tally.bad++;
        } else if (result.ok) tally.chaosAccepted++;
        else tally.chaosRefused++;
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
    // calls without their arguments, and a transaction body that is no function
    const missing: [string, () => unknown, string][] = [
      ['bindPort', () => rt.bindPort(undefined as never), 'bind'],
      ['unbindPort', () => rt.unbindPort(undefined as never), 'unbind'],
      ['updatePort', () => rt.updatePort(undefined as never), 'update'],
      ['deletePort', () => rt.deletePort(undefined as never), 'delete'],
      ['bindPortDecision', () => rt.bindPortDecision(undefined as never), 'bindPortDecision'],
      ['canBind', () => rt.canBind(undefined as never, undefined as never), 'host'],
      ['createSecurityGroup', () => rt.createSecurityGroup(undefined as never), 'sg'],
      ['createSecurityGroups', () => rt.createSecurityGroups(undefined as never), 'groups'],
      ['deleteSecurityGroup', () => rt.deleteSecurityGroup(undefined as never), 'sgId'],
      ['createRule', () => rt.createRule(undefined as never), 'rule'],
      ['deleteRule', () => rt.deleteRule(undefined as never, undefined as never), 'ruleId'],
      ...[null, 5, 'x', {}, []].map((fn): [string, () => unknown, string] => ['transaction', () => rt.transaction(fn as never), 'fn']),
    ];
    for (const [api, call, field] of missing) {
      const before = depth();
      const outcome = await (async () => call())().then(
        () => 'accepted',
        (err: unknown) => (err instanceof ValidationError ? err.field : `untyped: ${String(err)}`),
      );
      expect(outcome, api).toBe(field);
      expect(depth(), api).toBe(before);
    }
    expect(tally.ok).toBeGreaterThan(RUNS / 5);
    expect(tally.bad).toBeGreaterThan(RUNS / 3);
    expect(tally.chaosAccepted + tally.chaosRefused).toBeGreaterThan(RUNS / 10);
    expect(depth()).toBeGreaterThan(RUNS / 5);
    await rt.stop();
    runtimes.delete(rt);
  });

  it('the journal holds only entries the layout allows', async () => {
    const journal = Journal.open(dataDir);
    try {
      const entries = journal.read(0, 10_000_000);
      expect(entries.length).toBeGreaterThan(RUNS / 5);
      const violations = entries
        .map(({ seq, entry }) => ({ seq, key: entry.k, why: layoutViolation(entry.k, entry.v, entry.p) }))
        .filter((x) => x.why !== undefined);
      expect(violations.slice(0, 5)).toEqual([]);
    } finally {
      await journal.close();
    }
  });

  it('drained into a private etcd: no key outside the prefix, every key one the layout allows, exactly the desired state', async () => {
    const journal = Journal.open(dataDir);
    const desired = new Map(journal.desiredEntries(`${PREFIX}/`));
    await journal.close();
    const rt = createRuntime({
      etcd: { endpoints: etcd.endpoints, callTimeoutMs: 2000 },
      dataDir,
      prefix: PREFIX,
      poolSize: 1,
      electionTtlMs: 2000,
      resync: { enabled: false },
      returnWatcher: { enabled: false },
    });
    runtimes.add(rt);
    await rt.start();
    await rt.drained({ timeoutMs: 30_000 });
    expect(rt.deadLetters()).toEqual([]);
    const all = await waitFor(async () => {
      const kv = await wholeKeyspace(client);
      return kv.size > 0 && kv;
    });
    const outside = [...all.keys()].filter((k) => !k.startsWith(`${PREFIX}/`));
    expect(outside).toEqual([]);
    const violations = [...all]
      .filter(([k]) => !LAYOUT.election.test(k))
      .map(([k, v]) => ({ key: k, why: layoutViolation(k, v, false) }))
      .filter((x) => x.why !== undefined);
    expect(violations.slice(0, 5)).toEqual([]);
    const written = new Map([...all].filter(([k]) => !LAYOUT.election.test(k)));
    expect(written.size).toBe(desired.size);
    expect(written).toEqual(desired);
    await rt.stop();
    runtimes.delete(rt);
  });
});
