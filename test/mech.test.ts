import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { keyLayout } from '../src/keys.ts';
import {
  bindingValue,
  bindOps,
  bindPortDecision,
  checkSegment,
  checkVlanTransparency,
  defaultMechConfig,
  deletePortOps,
  removeFromRemoteGroupsOps,
  unbindOps,
  updatePortOps,
  vifType,
  type MechConfig,
} from '../src/mech.ts';
import type { BindingLevel, JournalOp, Port, PortUpdate, Segment } from '../src/types.ts';

// The reference's unit-test fixtures, used verbatim. Some of their values
// (`port_security_enabled: []`, `segmentation_id: 'fake_segId'`, a binding
// level whose `bound_segment` is the string 'fake_segment') would be refused by
// src/validate.ts at the API door; here they go straight to the pure functions.
const vectors = JSON.parse(readFileSync(new URL('./fixtures/mech-test-vectors.json', import.meta.url), 'utf8'));
const fixtures = () => structuredClone(vectors.fixtures);
const FAKE_PORT_etcdcom = (): Port => fixtures().FAKE_PORT_etcdcom;
const FAKE_PORT_mech = (): Port => {
  const port = FAKE_PORT_etcdcom();
  delete port.port_security_enabled;
  return port;
};
const validSegment = (): Segment => fixtures().valid_segment;
const invalidSegment = (): Segment => fixtures().invalid_segment;
/** The reference's tests pass `valid_segment` as a binding level too (it has bound_driver/bound_segment). */
const validLevel = (): BindingLevel => fixtures().valid_segment;
const FAKE_SEGMENT = 'fake_segment' as unknown as Segment;

const keys = keyLayout();
const cfg: MechConfig = defaultMechConfig(keys);
const always = () => true;
const testCase = (name: string) => vectors.tests.find((t: { name: string }) => t.name === name);
const expectedKey = (template: string, host: string) => template.replace('<host>', host);

/** What each reference test case maps to; cases of reference plumbing name their replacement. */
const mapped = new Map<string, string>();
const ref = (name: string, replacement?: string) => {
  mapped.set(name, replacement ?? 'pure function');
  return replacement ? `${name} → replaced: ${replacement}` : name;
};

describe('reference test vectors (test_etcdcom.py, test_mech.py)', () => {
  it(ref('test_port_path'), () => {
    const { input, expect: want } = testCase('test_port_path');
    expect(keys.port(input.host, input.port.id)).toBe(want);
  });

  it(ref('test_bind'), () => {
    const [, key, value] = testCase('test_bind').expect_journal_write_called_once_with;
    const ops = bindOps(cfg, FAKE_PORT_etcdcom(), validSegment(), 'vpp0', 'vhostuser');
    expect(ops).toEqual([{ key: expectedKey(key, 'vpp0'), value }]);
  });

  it(ref('test_unbind'), () => {
    const [, key, value] = testCase('test_unbind').expect_journal_write_called_once_with;
    const ops = unbindOps(cfg, FAKE_PORT_etcdcom(), 'vpp0', validSegment());
    expect(ops).toEqual([{ key: expectedKey(key, 'vpp0'), value }]);
  });

  const forwarder = 'the forwarder turns a journal op with value null into an etcd delete, and a value into a put (forwarder tests against a real etcd); here: the ops carry null / the value';
  it(ref('test_do_etcd_update_delete', forwarder), () => {
    const ops = unbindOps(cfg, FAKE_PORT_etcdcom(), 'vpp0', validSegment());
    expect(ops.map((op) => op.value)).toEqual([null]);
  });

  it(ref('test_do_etcd_update_write', forwarder), () => {
    const [op] = bindOps(cfg, FAKE_PORT_etcdcom(), validSegment(), 'vpp0', 'vhostuser');
    expect(op.value).toEqual(bindingValue(FAKE_PORT_etcdcom(), validSegment(), 'vhostuser'));
  });

  it(ref('test_get_vif_type'), () => {
    const port = FAKE_PORT_mech();
    const got = [vifType(port), vifType({ ...port, device_owner: 'neutron:fake_owner' })];
    expect(got).toEqual(testCase('test_get_vif_type').expect);
  });

  it(ref('test_bind_port'), () => {
    const [segment_id, vif_type, vif_details] = testCase('test_bind_port').expect_set_binding_once;
    const got = bindPortDecision(cfg, FAKE_PORT_mech(), [validSegment(), invalidSegment()], 'vpp0', always);
    expect(got).toEqual({ segment_id, vif_type, vif_details });
  });

  it(ref('test_bind_port_with_vhost_dir'), () => {
    const [segment_id, vif_type, vif_details] = testCase('test_bind_port_with_vhost_dir').expect_set_binding_once;
    const got = bindPortDecision({ ...cfg, vhostUserDir: '/vhostdir1' }, FAKE_PORT_mech(), [validSegment()], 'vpp0', always);
    expect(got).toEqual({ segment_id, vif_type, vif_details });
  });

  it(ref('test_check_segment'), () => {
    const want = testCase('test_check_segment').expect;
    expect(checkSegment(cfg, validSegment(), 'vpp0', always)).toBe(want['valid_segment(flat)']);
    expect(checkSegment(cfg, invalidSegment(), 'vpp0', always)).toBe(want['invalid_segment(none)']);
  });

  it(ref('test_check_vlan_transparency'), () => {
    expect(checkVlanTransparency()).toBe(testCase('test_check_vlan_transparency').expect);
  });

  const updateCtx = (host: string, originalHost: string): PortUpdate => ({
    current: FAKE_PORT_mech(),
    original: FAKE_PORT_mech(),
    host,
    original_host: originalHost,
    binding_levels: [validLevel()],
    original_binding_levels: [validLevel()],
  });

  it(ref('test_update_port_precommit (a)'), () => {
    const ctx = updateCtx('host', 'original_host');
    const { ops } = updatePortOps(cfg, ctx);
    // unbind(original, original_host, 'fake_segment') once, bind(current, 'fake_segment', host, 'vhostuser') once
    expect(ops).toEqual([
      ...unbindOps(cfg, FAKE_PORT_mech(), 'original_host', FAKE_SEGMENT),
      ...bindOps(cfg, FAKE_PORT_mech(), FAKE_SEGMENT, 'host', 'vhostuser'),
    ]);
    expect(ops.map((op) => [op.key, op.value === null])).toEqual([
      [keys.port('original_host', '1'), true],
      [keys.port('host', '1'), false],
    ]);
  });

  it(ref('test_update_port_precommit (b)'), () => {
    const { ops, provisioningBlock } = updatePortOps(cfg, updateCtx('hostA', 'hostA'));
    expect(ops).toEqual(bindOps(cfg, FAKE_PORT_mech(), FAKE_SEGMENT, 'hostA', 'vhostuser'));
    expect(provisioningBlock).toBe(true);
  });

  const kick = 'the runtime kicks the forwarder whenever an operation journals ops (runtime tests); here: the operation journals ops';
  it(ref('test_update_port_postcommit', kick), () => {
    expect(updatePortOps(cfg, updateCtx('host', 'original_host')).ops.length).toBeGreaterThan(0);
    const unboundNow = { ...updateCtx('host', 'original_host'), binding_levels: [null] };
    expect(updatePortOps(cfg, unboundNow).ops).toEqual(unbindOps(cfg, FAKE_PORT_mech(), 'original_host', FAKE_SEGMENT));
  });

  it(ref('test_delete_port_precommit'), () => {
    const ctx = { port: FAKE_PORT_mech(), host: 'vpp0', binding_levels: [validLevel()] };
    expect(deletePortOps(cfg, ctx)).toEqual(unbindOps(cfg, FAKE_PORT_mech(), 'vpp0', FAKE_SEGMENT));
  });

  it(ref('test_delete_port_postcommit', kick), () => {
    const ctx = { port: FAKE_PORT_mech(), host: 'vpp0', binding_levels: [validLevel()] };
    expect(deletePortOps(cfg, ctx).length).toBeGreaterThan(0);
  });

  // The reference builds a python-etcd (v2) client from etcd_host/etcd_port; portwire takes a list of
  // etcd3 endpoint URLs in createRuntime's options instead, covered by the runtime option tests.
  ref('etcd client config', 'etcd endpoints are createRuntime options (runtime option tests)');

  it('maps every test case of the vectors file', () => {
    expect(vectors.tests.map((t: { name: string }) => t.name).filter((n: string) => !mapped.has(n))).toEqual([]);
  });
});

const MAC = 'fa:16:3e:00:00:01';
const vlan: Segment = { id: 'seg-vlan', network_type: 'vlan', physical_network: 'physnet1', segmentation_id: 100 };
const gpe: Segment = { id: 'seg-gpe', network_type: 'gpe', physical_network: null, segmentation_id: 5000 };
const mkPort = (over: Partial<Port> = {}): Port => ({
  id: 'p1',
  mac_address: MAC,
  device_owner: 'compute:nova',
  device_id: 'vm-1',
  status: 'DOWN',
  security_groups: ['sg-a', 'sg-b'],
  allowed_address_pairs: [],
  fixed_ips: [{ subnet_id: 'sub-1', ip_address: '10.0.0.5' }, { subnet_id: 'sub-6', ip_address: '2001:db8::5' }],
  port_security_enabled: true,
  'binding:profile': {},
  ...over,
});
const ours = (segment: Segment = vlan): BindingLevel => ({ bound_driver: 'vpp', bound_segment: segment });
const theirs: BindingLevel = { bound_driver: 'ovs', bound_segment: vlan };
const del = (key: string): JournalOp => ({ key, value: null });
const IPS = ['10.0.0.5', '2001:db8::5'];
const bindA = (host: string, port = mkPort()) => [
  { key: keys.port(host, 'p1'), value: bindingValue(port, vlan, 'vhostuser') },
  ...(port.security_groups ?? []).map((sg) => ({ key: keys.remoteGroup(sg, 'p1'), value: IPS })),
];
/** GPE deletes of the reference's unbind: for ANY segment type with a (truthy) segmentation id. */
const gpeDel = (segId: number, host: string): JournalOp[] => {
  const dir = keys.gpeDir(segId, host, MAC);
  return [...IPS.map((ip) => del(`${dir}/${ip}`)), { key: `${dir}/`, value: null, prefix: true }];
};
const unbindA = (host: string, segId: number | null = 100) => [
  del(keys.remoteGroup('sg-a', 'p1')),
  del(keys.remoteGroup('sg-b', 'p1')),
  del(keys.port(host, 'p1')),
  ...(segId === null ? [] : gpeDel(segId, host)),
];

describe('updatePortOps: the update_port_precommit decision table', () => {
  const base = (over: Partial<PortUpdate> = {}): PortUpdate => ({
    current: mkPort(),
    original: mkPort(),
    host: 'h2',
    original_host: 'h1',
    binding_levels: [ours()],
    original_binding_levels: [ours()],
    ...over,
  });
  const rows: [string, PortUpdate, JournalOp[], boolean][] = [
    ['not ours before or now → nothing', base({ binding_levels: [theirs], original_binding_levels: [theirs] }), [], false],
    ['no binding levels at all → nothing', base({ binding_levels: null, original_binding_levels: null }), [], false],
    ['same host rebind → bind only', base({ host: 'h1' }), bindA('h1'), true],
    ['host change → unbind old host, then bind new', base(), [...unbindA('h1'), ...bindA('h2')], true],
    ['newly bound (not ours before) → bind', base({ original_binding_levels: [theirs] }), bindA('h2'), true],
    ['ACTIVE → no provisioning block', base({ host: 'h1', current: mkPort({ status: 'ACTIVE' }) }), bindA('h1', mkPort({ status: 'ACTIVE' })), false],
    ['ours → not ours, host changed → unbind old host only', base({ binding_levels: [theirs] }), unbindA('h1'), false],
    ['original missing, host change → unbind old host with the current port', base({ original: null }), [...unbindA('h1'), ...bindA('h2')], true],
    ['original_host empty → no unbind (the reference would delete nodes//ports/p1)', base({ original_host: '' }), bindA('h2'), true],
    ['ours → not ours, same host → nothing', base({ host: 'h1', binding_levels: [theirs] }), [], false],
    ['ours → unbound (last level null) → unbind old host', base({ binding_levels: [theirs, null] }), unbindA('h1'), false],
    [
      'security group left → remote_group delete, then bind',
      base({ host: 'h1', current: mkPort({ security_groups: ['sg-b'] }) }),
      [del(keys.remoteGroup('sg-a', 'p1')), ...bindA('h1', mkPort({ security_groups: ['sg-b'] }))],
      true,
    ],
  ];
  it.each(rows)('%s', (_name, ctx, ops, provisioningBlock) => {
    expect(updatePortOps(cfg, ctx)).toEqual({ ops, provisioningBlock });
  });

  it('uses the mechanism name given', () => {
    expect(updatePortOps(cfg, base({ host: 'h1' }), 'other').ops).toEqual([]);
    const other = { bound_driver: 'other', bound_segment: vlan };
    expect(updatePortOps(cfg, base({ host: 'h1', binding_levels: [other] }), 'other').ops).toEqual(bindA('h1'));
  });

  describe('live migration', () => {
    const migrating = (over: Partial<PortUpdate> = {}) =>
      base({ original: mkPort({ 'binding:profile': { migrating_to: 'h2' } }), ...over });

    it('migration done (migrating_to === host, gone now) → unbind original host again, after the bind', () => {
      const { ops } = updatePortOps(cfg, migrating());
      // The second unbind of h1 is kept (harmless: same key deletes); its remote_group deletes
      // are dropped because the bind has just rewritten those keys, which carry no host.
      expect(ops).toEqual([...unbindA('h1'), ...bindA('h2'), del(keys.port('h1', 'p1')), ...gpeDel(100, 'h1')]);
    });

    it('previous binding not ours: only the migration unbind, with the current segment', () => {
      const ctx = migrating({ original_binding_levels: [theirs], binding_levels: [ours(gpe)] });
      const { ops } = updatePortOps(cfg, ctx);
      expect(ops.slice(3)).toEqual([del(keys.port('h1', 'p1')), ...gpeDel(5000, 'h1')]);
    });

    it.each([
      ['still migrating (current keeps migrating_to)', { current: mkPort({ 'binding:profile': { migrating_to: 'h2' } }) }],
      ['migrating_to names another host', { original: mkPort({ 'binding:profile': { migrating_to: 'h3' } }) }],
    ])('%s → no migration unbind', (_name, over) => {
      const ops = updatePortOps(cfg, migrating({ original_binding_levels: [theirs], ...over })).ops;
      expect(ops.filter((op) => op.value === null)).toEqual([]);
    });
  });
});

describe('bind and unbind ops', () => {
  it('binding value keys are in the reference dict order', () => {
    const order = ['mac_address', 'mtu', 'physnet', 'network_type', 'segmentation_id', 'binding_type', 'security_groups',
      'allowed_address_pairs', 'fixed_ips', 'port_security_enabled', 'device_id'];
    const json = JSON.stringify(bindingValue(mkPort(), vlan, 'vhostuser'));
    expect(Object.keys(JSON.parse(json))).toEqual(order);
    expect(JSON.stringify(bindingValue(FAKE_PORT_etcdcom(), validSegment(), 'vhostuser'))).toBe(
      '{"mac_address":"12:34:56:78:21:b6","mtu":1500,"physnet":"fake_physnet","network_type":"flat",' +
        '"segmentation_id":"fake_segId","binding_type":"vhostuser","security_groups":[],"allowed_address_pairs":[],' +
        '"fixed_ips":[],"port_security_enabled":[],"device_id":"fake_device"}',
    );
  });

  it('mirrors dict.get defaults: absent → default, present null → null', () => {
    const bare = bindingValue({ id: 'p', mac_address: MAC }, { id: 's', network_type: 'flat' }, 'tap');
    expect(bare).toMatchObject({ physnet: null, segmentation_id: 0, security_groups: [], allowed_address_pairs: [],
      fixed_ips: [], port_security_enabled: true, device_id: null });
    const nulls = bindingValue({ id: 'p', mac_address: MAC, device_id: null, port_security_enabled: false },
      { id: 's', network_type: 'flat', physical_network: 'pn', segmentation_id: null }, 'tap');
    expect(nulls).toMatchObject({ physnet: 'pn', segmentation_id: null, port_security_enabled: false, device_id: null });
  });

  it('bind writes one remote_group key per security group with the fixed IP strings', () => {
    expect(bindOps(cfg, mkPort(), vlan, 'h1', 'vhostuser')).toEqual(bindA('h1'));
  });

  it('unbind deletes remote groups, the port key, then GPE keys and the GPE prefix', () => {
    expect(unbindOps(cfg, mkPort(), 'h1', gpe)).toEqual(unbindA('h1', 5000));
    expect(unbindOps(cfg, mkPort(), 'h1', vlan)).toEqual(unbindA('h1', 100)); // as the reference: any type
    expect(unbindOps(cfg, mkPort(), 'h1', { ...vlan, segmentation_id: null })).toEqual(unbindA('h1', null));
    expect(unbindOps(cfg, mkPort(), 'h1', { id: 's', network_type: 'flat' })).toEqual(unbindA('h1', null)); // absent → 0
    expect(unbindOps(cfg, mkPort(), 'h1')).toEqual(unbindA('h1', null));
    expect(unbindOps(cfg, mkPort({ fixed_ips: [] }), 'h1', gpe)).toEqual(unbindA('h1', null));
  });

  it('removeFromRemoteGroupsOps is a set difference in the original order', () => {
    const original = mkPort({ security_groups: ['sg-c', 'sg-a', 'sg-b', 'sg-c'] });
    const current = mkPort({ security_groups: ['sg-b'] });
    expect(removeFromRemoteGroupsOps(cfg, original, current)).toEqual([del(keys.remoteGroup('sg-c', 'p1')), del(keys.remoteGroup('sg-a', 'p1'))]);
    expect(removeFromRemoteGroupsOps(cfg, null, current)).toEqual([]);
  });

  it('deletePortOps needs a host and binding levels', () => {
    expect(deletePortOps(cfg, { port: mkPort(), host: '', binding_levels: [ours()] })).toEqual([]);
    expect(deletePortOps(cfg, { port: mkPort(), host: 'h1', binding_levels: [] })).toEqual([]);
    expect(deletePortOps(cfg, { port: mkPort(), host: 'h1', binding_levels: null })).toEqual([]);
    expect(deletePortOps(cfg, { port: mkPort(), host: 'h1', binding_levels: [ours(gpe)] })).toEqual(unbindOps(cfg, mkPort(), 'h1', gpe));
    expect(deletePortOps(cfg, { port: mkPort(), host: 'h1', binding_levels: [null] })).toEqual(unbindA('h1', null));
  });
});

describe('bind_port decision and segment check', () => {
  it('allows network types by exact membership (the reference matches substrings)', () => {
    for (const t of ['lan', 'la', 'g', 'vlan,flat', '']) {
      expect(checkSegment(cfg, { id: 's', network_type: t, physical_network: 'pn' }, 'h', always)).toBe(false);
    }
    expect(checkSegment(cfg, gpe, 'h', () => false)).toBe(true);
  });

  it('flat and vlan need the physnet on the host', () => {
    const seen: [string, string][] = [];
    const known = (host: string, physnet: string) => (seen.push([host, physnet]), physnet === 'physnet1');
    expect(checkSegment(cfg, vlan, 'h1', known)).toBe(true);
    expect(checkSegment(cfg, { ...vlan, physical_network: 'other' }, 'h1', known)).toBe(false);
    expect(checkSegment(cfg, { ...vlan, physical_network: null }, 'h1', known)).toBe(false);
    expect(seen).toEqual([['h1', 'physnet1'], ['h1', 'other']]);
  });

  it('refuses vnic types other than normal; tap ports get no details; first passing segment wins', () => {
    expect(bindPortDecision(cfg, mkPort({ 'binding:vnic_type': 'direct' }), [vlan], 'h1', always)).toBeNull();
    expect(bindPortDecision(cfg, mkPort(), [{ ...vlan, network_type: 'vxlan' }], 'h1', always)).toBeNull();
    expect(bindPortDecision(cfg, mkPort({ device_owner: 'network:dhcp' }), [{ ...vlan, network_type: 'vxlan' }, gpe, vlan], 'h1', always))
      .toEqual({ segment_id: 'seg-gpe', vif_type: 'tap', vif_details: {} });
  });
});
