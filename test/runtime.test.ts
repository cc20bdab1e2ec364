/**
 * The host API against the real etcd: the reference's test cases end to end,
 * JSON-identical values, transactions all or nothing, durable acknowledgement,
 * and invalid input refused with nothing journaled.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';


import type { Etcd3 } from 'etcd3';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import { Journal } from '../src/journal.ts';
import { ValidationError } from '../src/errors.ts';
import { keyLayout } from '../src/keys.ts';
import type { BindingLevel, Port, Segment } from '../src/types.ts';
import vectors from './fixtures/mech-test-vectors.json' with { type: 'json' };
import { etcdEndpoints, newClient, readPrefix, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { tempDir } from './helpers/temp.ts';

const prefix = uniquePrefix('runtime');
const keys = keyLayout(prefix);
let rt: Runtime;
let client: Etcd3;
let dataDir: string;

/** The reference's FAKE_PORT, made valid for the API door (it has `port_security_enabled: []`). */
const fakePort = (): Port => ({
  ...(vectors.fixtures.FAKE_PORT_etcdcom as unknown as Port),
  port_security_enabled: true,
});
/** The reference's valid segment, with a real VLAN id (it has `segmentation_id: 'fake_segId'`). */
const validSegment: Segment = { id: 'fake_id', network_type: 'flat', physical_network: 'fake_physnet', segmentation_id: null };
const ours = (segment: Segment): BindingLevel => ({ bound_driver: 'vpp', bound_segment: segment });

async function get(key: string): Promise<string | null> {
  const res = await client.kv.range({ key: Buffer.from(key) });
  return res.kvs[0]?.value.toString() ?? null;
}

beforeAll(async () => {
  dataDir = tempDir('pw-runtime-');
  rt = createRuntime({ etcd: { endpoints: etcdEndpoints() }, dataDir, prefix, poolSize: 1, electionTtlMs: 2000 });
  await rt.start();
  client = newClient();
});

afterAll(async () => {
  await rt?.stop();
  client?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('reference test cases, end to end', () => {
  it('test_port_path: the port key layout', () => {
    const t = vectors.tests.find((x) => x.name === 'test_port_path')!;
    expect(keyLayout('/networking-vpp').port('vpp0', '1234-5678-9012-3456')).toBe(t.expect);
  });

  it('test_bind: one key, JSON-identical to the reference value, in the reference key order', async () => {
    const t = vectors.tests.find((x) => x.name === 'test_bind')!;
    const expected = { ...(t.expect_journal_write_called_once_with![2] as Record<string, unknown>) };
    expected.port_security_enabled = true;
    expected.segmentation_id = null;
    await rt.bindPort({ port: fakePort(), segment: validSegment, host: 'vpp0', binding_type: 'vhostuser' });
    await rt.drained();
    const raw = await get(keys.port('vpp0', '1'));
    expect(JSON.parse(raw!)).toEqual(expected);
    // key order of the reference's `bind` dict (the vector file lists them paraphrased)
    expect(Object.keys(JSON.parse(raw!))).toEqual([
      'mac_address', 'mtu', 'physnet', 'network_type', 'segmentation_id', 'binding_type',
      'security_groups', 'allowed_address_pairs', 'fixed_ips', 'port_security_enabled', 'device_id',
    ]);
    const all = await readPrefix(client, `${prefix}/nodes/`);
    expect([...all.keys()]).toEqual([keys.port('vpp0', '1')]);
  });

  it('test_unbind: deleting the key', async () => {
    await rt.unbindPort({ port: fakePort(), host: 'vpp0', segment: validSegment });
    await rt.drained();
    expect(await get(keys.port('vpp0', '1'))).toBeNull();
  });

  it('test_update_port_precommit (a): a host change unbinds the old host and binds the new one', async () => {
    const port = { ...fakePort(), id: 'upd-a', security_groups: ['sg-1'], fixed_ips: [{ subnet_id: 's', ip_address: '10.0.0.5' }] };
    await rt.updatePort({ current: port, host: 'hostA', binding_levels: [ours(validSegment)] });
    await rt.drained();
    expect(await get(keys.port('hostA', 'upd-a'))).not.toBeNull();
    expect(await get(keys.remoteGroup('sg-1', 'upd-a'))).toBe('["10.0.0.5"]');
    const r = await rt.updatePort({
      current: { ...port, security_groups: ['sg-2'] },
      original: port,
      host: 'hostB',
      original_host: 'hostA',
      binding_levels: [ours(validSegment)],
      original_binding_levels: [ours(validSegment)],
    });
    expect(r.provisioningBlock).toBe(true);
    await rt.drained();
    expect(await get(keys.port('hostA', 'upd-a'))).toBeNull();
    expect(JSON.parse((await get(keys.port('hostB', 'upd-a')))!).security_groups).toEqual(['sg-2']);
    expect(await get(keys.remoteGroup('sg-1', 'upd-a'))).toBeNull();
    expect(await get(keys.remoteGroup('sg-2', 'upd-a'))).toBe('["10.0.0.5"]');
  });

  it('test_update_port_precommit (b): same host rebinds, provisioning block unless ACTIVE', async () => {
    const port = { ...fakePort(), id: 'upd-b' };
    const ctx = { current: port, original: port, host: 'hostA', original_host: 'hostA', binding_levels: [ours(validSegment)], original_binding_levels: [ours(validSegment)] };
    expect((await rt.updatePort(ctx)).provisioningBlock).toBe(true);
    expect((await rt.updatePort({ ...ctx, current: { ...port, status: 'ACTIVE' } })).provisioningBlock).toBe(false);
    await rt.drained();
    expect(await get(keys.port('hostA', 'upd-b'))).not.toBeNull();
  });

  it('live migration: bound on the destination, then the source unbound when migrating_to is cleared', async () => {
    const port = { ...fakePort(), id: 'mig' };
    await rt.updatePort({ current: port, host: 'src', binding_levels: [ours(validSegment)] });
    const migrating = { ...port, 'binding:profile': { migrating_to: 'dst' } };
    await rt.updatePort({ current: migrating, original: port, host: 'src', original_host: 'src', binding_levels: [ours(validSegment)], original_binding_levels: [ours(validSegment)] });
    await rt.drained();
    expect(await get(keys.port('src', 'mig'))).not.toBeNull();
    await rt.updatePort({ current: port, original: migrating, host: 'dst', original_host: 'src', binding_levels: [ours(validSegment)], original_binding_levels: [ours(validSegment)] });
    await rt.drained();
    expect(await get(keys.port('src', 'mig'))).toBeNull();
    expect(await get(keys.port('dst', 'mig'))).not.toBeNull();
  });

  it('test_delete_port_precommit: a bound port is unbound', async () => {
    const port = { ...fakePort(), id: 'del' };
    await rt.bindPort({ port, segment: validSegment, host: 'hostA' });
    await rt.drained();
    expect(await get(keys.port('hostA', 'del'))).not.toBeNull();
    await rt.deletePort({ port, host: 'hostA', binding_levels: [ours(validSegment)] });
    await rt.drained();
    expect(await get(keys.port('hostA', 'del'))).toBeNull();
  });

  it('test_bind_port / test_check_segment: the first segment that passes, from what agents wrote in etcd', async () => {
    await client.put(keys.stateAlive('vpp0')).value('1');
    await client.put(keys.statePhysnet('vpp0', 'fake_physnet')).value('1');
    // the segment check reads the return watcher's live cache: wait until the watch delivered the keys
    await waitFor(() => rt.canBind('vpp0', validSegment), { what: 'vpp0 alive with fake_physnet' });
    const invalid = vectors.fixtures.invalid_segment as unknown as Segment;
    const decision = await rt.bindPortDecision({ port: fakePort(), segments: [validSegment, { ...invalid, network_type: 'vxlan', segmentation_id: 5 }], host: 'vpp0' });
    expect(decision).toEqual({ segment_id: 'fake_id', vif_type: 'vhostuser', vif_details: { vhostuser_socket: '/tmp/1', vhostuser_mode: 'server' } });
    // a host without the physnet (or not alive) cannot bind a flat segment
    expect(await rt.bindPortDecision({ port: fakePort(), segments: [validSegment], host: 'vpp1' })).toBeNull();
    await client.delete().key(keys.stateAlive('vpp0'));
    await waitFor(() => !rt.canBind('vpp0', validSegment), { what: 'vpp0 seen dead' });
    expect(await rt.bindPortDecision({ port: fakePort(), segments: [validSegment], host: 'vpp0' })).toBeNull();
  });
});

describe('transactions and durability', () => {
  it('journals several operations in one transaction, all or nothing', async () => {
    const journal = (rt as unknown as { journal: Journal }).journal;
    const before = journal.lastSeq();
    await expect(
      rt.transaction((tx) => {
        tx.bindPort({ port: { ...fakePort(), id: 'tx-1' }, segment: validSegment, host: 'hostT' });
        tx.bindPort({ port: { ...fakePort(), id: 'tx-2', mac_address: 'not-a-mac' }, segment: validSegment, host: 'hostT' });
      }),
    ).rejects.toMatchObject({ name: 'ValidationError', field: 'port.mac_address' });
    expect(journal.lastSeq()).toBe(before);
    const seq = await rt.transaction((tx) => {
      tx.bindPort({ port: { ...fakePort(), id: 'tx-1' }, segment: validSegment, host: 'hostT' });
      tx.bindPort({ port: { ...fakePort(), id: 'tx-2' }, segment: validSegment, host: 'hostT' });
    });
    expect(seq).toBe(before + 2);
    await rt.drained();
    expect(await get(keys.port('hostT', 'tx-1'))).not.toBeNull();
    expect(await get(keys.port('hostT', 'tx-2'))).not.toBeNull();
  });

  it('an acknowledged call is on disk: another handle on the same data directory sees it', async () => {
    const other = tempDir('pw-durable-');
    const appender = createRuntime({ dataDir: other, forwarder: false });
    await appender.start();
    const seq = await appender.bindPort({ port: { ...fakePort(), id: 'durable' }, segment: validSegment, host: 'h' });
    await appender.stop();
    const reopened = Journal.open(other);
    try {
      expect(reopened.read(seq - 1, 1)[0].entry.k).toBe(keyLayout().port('h', 'durable'));
      expect(reopened.desiredValue(keyLayout().port('h', 'durable'))).toMatchObject({ mac_address: '12:34:56:78:21:b6' });
    } finally {
      await reopened.close();
      rmSync(other, { recursive: true, force: true });
    }
  });
});

describe('invalid input is refused at the door', () => {
  const port = (): Port => fakePort();
  const cases: [string, () => Promise<unknown>, string][] = [
    ['port id with a slash', () => rt.bindPort({ port: { ...port(), id: 'a/b' }, segment: validSegment, host: 'h' }), 'port.id'],
    ['port id ..', () => rt.bindPort({ port: { ...port(), id: '..' }, segment: validSegment, host: 'h' }), 'port.id'],
    ['empty port id', () => rt.bindPort({ port: { ...port(), id: '' }, segment: validSegment, host: 'h' }), 'port.id'],
    ['host with a slash', () => rt.bindPort({ port: port(), segment: validSegment, host: 'evil/host' }), 'host'],
    ['host with a control character', () => rt.bindPort({ port: port(), segment: validSegment, host: 'h\u0000' }), 'host'],
    ['bad MAC', () => rt.bindPort({ port: { ...port(), mac_address: '12:34:56' }, segment: validSegment, host: 'h' }), 'port.mac_address'],
    ['bad fixed IP', () => rt.bindPort({ port: { ...port(), fixed_ips: [{ subnet_id: 's', ip_address: '10.0.0.300' }] }, segment: validSegment, host: 'h' }), 'port.fixed_ips[0].ip_address'],
    ['bad address pair', () => rt.bindPort({ port: { ...port(), allowed_address_pairs: [{ ip_address: 'x' }] }, segment: validSegment, host: 'h' }), 'port.allowed_address_pairs[0].ip_address'],
    ['bad security group id', () => rt.bindPort({ port: { ...port(), security_groups: ['../x'] }, segment: validSegment, host: 'h' }), 'port.security_groups[0]'],
    ['unknown network type', () => rt.bindPort({ port: port(), segment: { ...validSegment, network_type: 'none' }, host: 'h' }), 'segment.network_type'],
    ['vlan without id', () => rt.bindPort({ port: port(), segment: { id: 's', network_type: 'vlan', physical_network: 'p' }, host: 'h' }), 'segment.segmentation_id'],
    ['vlan id out of range', () => rt.bindPort({ port: port(), segment: { id: 's', network_type: 'vlan', physical_network: 'p', segmentation_id: 4095 }, host: 'h' }), 'segment.segmentation_id'],
    ['flat without physnet', () => rt.bindPort({ port: port(), segment: { id: 's', network_type: 'flat' }, host: 'h' }), 'segment.physical_network'],
    ['port_security_enabled not a boolean', () => rt.bindPort({ port: { ...port(), port_security_enabled: [] as unknown as boolean }, segment: validSegment, host: 'h' }), 'port.port_security_enabled'],
    ['prototype-polluting key', () => rt.bindPort({ port: JSON.parse('{"id":"p","mac_address":"12:34:56:78:21:b6","__proto__":{"x":1}}'), segment: validSegment, host: 'h' }), 'port.__proto__'],
    ['update without current', () => rt.updatePort({ host: 'h' } as never), 'current'],
    ['update with a bad migrating_to', () => rt.updatePort({ current: { ...port(), 'binding:profile': { migrating_to: 'a/b' } }, host: 'h', binding_levels: [ours(validSegment)] }), 'current.binding:profile.migrating_to'],
    ['delete with a bad binding level', () => rt.deletePort({ port: port(), host: 'h', binding_levels: [{ bound_driver: 'vpp' } as BindingLevel] }), 'binding_levels[0].bound_segment'],
    ['unbind with a wrong type', () => rt.unbindPort({ port: 42 as unknown as Port, host: 'h' }), 'port'],
  ];

  it.each(cases)('%s → ValidationError naming the field, nothing journaled', async (_name, call, field) => {
    const journal = (rt as unknown as { journal: Journal }).journal;
    const before = journal.lastSeq();
    const err = await call().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe(field);
    expect(journal.lastSeq()).toBe(before);
  });
});
