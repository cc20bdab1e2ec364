/**
 * Security groups end to end against the real etcd: groups created with their
 * default rules, rules added and deleted, ports bound into groups, moved
 * between groups and migrated, a group deleted with its remote-group subtree.
 * The expected group values come from the reference translation itself,
 * run under python3 (test/fixtures/reference_acl.py).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Etcd3 } from 'etcd3';
import { createRuntime, type Runtime } from '../src/runtime.ts';
import { ValidationError } from '../src/errors.ts';
import { keyLayout } from '../src/keys.ts';
import { defaultRules } from '../src/secgroups.ts';
import type { NeutronRule } from '../src/translate.ts';
import type { BindingLevel, Port } from '../src/types.ts';
import type { Journal } from '../src/journal.ts';
import { etcdEndpoints, newClient, readPrefix, uniquePrefix } from './helpers/etcd.ts';
import { segment } from './helpers/workload.ts';
import { tempDir } from './helpers/temp.ts';

const prefix = uniquePrefix('secgroups');
const keys = keyLayout(prefix);
let rt: Runtime;
let client: Etcd3;
let dataDir: string;

beforeAll(async () => {
  dataDir = tempDir('pw-sg-');
  rt = createRuntime({ etcd: { endpoints: etcdEndpoints() }, dataDir, prefix, poolSize: 1, electionTtlMs: 2000 });
  await rt.start();
  client = newClient();
});
afterAll(async () => {
  await rt?.stop();
  client?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/** The reference's value for a group: its rules translated by the Python function, split by direction. */
function referenceGroup(rules: NeutronRule[]): string {
  const script = fileURLToPath(new URL('./fixtures/reference_acl.py', import.meta.url));
  const out = execFileSync('python3', [script], { input: rules.map((r) => JSON.stringify(r)).join('\n') + '\n' })
    .toString()
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
  const group = { ingress_rules: [] as unknown[], egress_rules: [] as unknown[] };
  for (const o of out) {
    expect(o.error).toBeUndefined();
    (o.dir === 'ingress' ? group.ingress_rules : group.egress_rules).push(o.rule);
  }
  return JSON.stringify(group);
}

const rule = (sg: string, id: string, over: Partial<NeutronRule>): NeutronRule => ({
  id,
  security_group_id: sg,
  direction: 'ingress',
  ethertype: 'IPv4',
  protocol: 'tcp',
  port_range_min: null,
  port_range_max: null,
  remote_ip_prefix: null,
  remote_group_id: null,
  ...over,
});

const ours: BindingLevel = { bound_driver: 'vpp', bound_segment: segment };
const port = (id: string, sgs: string[], ips: string[]): Port => ({
  id,
  mac_address: 'fa:16:3e:11:22:33',
  device_owner: 'compute:nova',
  security_groups: sgs,
  fixed_ips: ips.map((ip_address) => ({ subnet_id: 'subnet-1', ip_address })),
});

describe('security groups, end to end', () => {
  it('ends exactly as the reference would leave etcd', async () => {
    const web: NeutronRule[] = defaultRules('sg-web');
    const db: NeutronRule[] = [
      rule('sg-db', 'db-1', { port_range_min: 5432, port_range_max: 5432, remote_group_id: 'sg-web' }),
      rule('sg-db', 'db-2', { protocol: 'icmp', port_range_min: 8, port_range_max: 0 }),
      rule('sg-db', 'db-3', { direction: 'egress', ethertype: 'IPv6', protocol: null }),
    ];
    await rt.createSecurityGroup({ id: 'sg-web' });
    await rt.createSecurityGroup({ id: 'sg-db', security_group_rules: db });
    const http = rule('sg-web', 'web-http', { port_range_min: 80, port_range_max: 80, remote_ip_prefix: '0.0.0.0/0' });
    const https6 = rule('sg-web', 'web-https6', { ethertype: 'IPv6', port_range_min: 443, port_range_max: 443, remote_ip_prefix: '2001:db8::/32' });
    await rt.createRule(http);
    await rt.createRule(https6);
    await rt.deleteRule(web[1].id, 'sg-web');
    const webFinal = [web[0], http, https6];

    // ports join groups on bind, move between groups, migrate
    const p1 = port('p1', ['sg-web'], ['10.0.0.11', '2001:db8::11']);
    const p2 = port('p2', ['sg-web', 'sg-db'], ['10.0.0.12']);
    const p3 = port('p3', ['sg-db'], ['10.0.0.13']);
    await rt.updatePort({ current: p1, host: 'h1', binding_levels: [ours] });
    await rt.updatePort({ current: p2, host: 'h2', binding_levels: [ours] });
    await rt.updatePort({ current: p3, host: 'h2', binding_levels: [ours] });
    await rt.drained();
    expect(await readPrefix(client, keys.remoteGroupDir('sg-db'))).toEqual(
      new Map([
        [keys.remoteGroup('sg-db', 'p2'), '["10.0.0.12"]'],
        [keys.remoteGroup('sg-db', 'p3'), '["10.0.0.13"]'],
      ]),
    );
    const p2b = { ...p2, security_groups: ['sg-web'] };
    await rt.updatePort({ current: p2b, original: p2, host: 'h2', original_host: 'h2', binding_levels: [ours], original_binding_levels: [ours] });
    await rt.updatePort({ current: p1, original: p1, host: 'h3', original_host: 'h1', binding_levels: [ours], original_binding_levels: [ours] });
    await rt.deleteSecurityGroup('sg-db');
    await rt.drained();

    const expected = new Map<string, string>([
      [keys.secgroup('sg-web'), referenceGroup(webFinal)],
      [keys.remoteGroup('sg-web', 'p1'), '["10.0.0.11","2001:db8::11"]'],
      [keys.remoteGroup('sg-web', 'p2'), '["10.0.0.12"]'],
    ]);
    const global = await readPrefix(client, `${prefix}/global/`);
    expect(Object.fromEntries(global)).toEqual(Object.fromEntries(expected));
    const nodes = await readPrefix(client, `${prefix}/nodes/`);
    expect([...nodes.keys()].sort()).toEqual([keys.port('h2', 'p2'), keys.port('h2', 'p3'), keys.port('h3', 'p1')].sort());
    expect(JSON.parse(nodes.get(keys.port('h2', 'p2'))!).security_groups).toEqual(['sg-web']);
    expect(rt.deadLetters()).toEqual([]);
  });

  it('a large group (2,000 rules) equals the reference', async () => {
    const rules = Array.from({ length: 2000 }, (_, i) =>
      rule('sg-big', `big-${i}`, { port_range_min: 1000 + i, port_range_max: 1000 + i, remote_ip_prefix: `10.${i >> 8}.${i & 255}.0/24` }),
    );
    await rt.createSecurityGroup({ id: 'sg-big', security_group_rules: rules });
    await rt.drained();
    const res = await client.kv.range({ key: Buffer.from(keys.secgroup('sg-big')) });
    expect(res.kvs[0].value.toString()).toBe(referenceGroup(rules));
  });

  it('rules from two concurrent changes of one group both land (no lost update)', async () => {
    await rt.createSecurityGroup({ id: 'sg-race', security_group_rules: [] });
    const added = Array.from({ length: 20 }, (_, i) => rule('sg-race', `race-${i}`, { port_range_min: i + 1, port_range_max: i + 1 }));
    await Promise.all(added.map((r) => rt.createRule(r)));
    await rt.drained();
    const res = await client.kv.range({ key: Buffer.from(keys.secgroup('sg-race')) });
    const value = JSON.parse(res.kvs[0].value.toString());
    expect(value.ingress_rules.map((r: { port_min: number }) => r.port_min).sort((a: number, b: number) => a - b)).toEqual(
      added.map((r) => r.port_range_min),
    );
  });
});

describe('bad rules are refused with nothing journaled', () => {
  const good = () => rule('sg-web', 'bad-x', { port_range_min: 22, port_range_max: 22 });
  const cases: [string, () => Promise<unknown>, string][] = [
    ['unknown ethertype', () => rt.createRule({ ...good(), ethertype: 'ipv4' as 'IPv4' }), 'rule.ethertype'],
    ['unknown direction', () => rt.createRule({ ...good(), direction: 'sideways' as 'ingress' }), 'rule.direction'],
    ['unknown protocol name', () => rt.createRule({ ...good(), protocol: 'tcpp' }), 'rule.protocol'],
    ['protocol above 255', () => rt.createRule({ ...good(), protocol: 256 }), 'rule.protocol'],
    ['port above 65535', () => rt.createRule({ ...good(), port_range_max: 65536 }), 'rule.port_range_max'],
    ['min above max', () => rt.createRule({ ...good(), port_range_min: 90, port_range_max: 80 }), 'rule.port_range_max'],
    ['ICMP type above 255', () => rt.createRule({ ...good(), protocol: 'icmp', port_range_min: 300, port_range_max: null }), 'rule.port_range_min'],
    ['prefix of the other family', () => rt.createRule({ ...good(), remote_ip_prefix: '2001:db8::/32' }), 'rule.remote_ip_prefix'],
    ['prefix that is not an address', () => rt.createRule({ ...good(), remote_ip_prefix: 'ten/8' }), 'rule.remote_ip_prefix'],
    ['rule id with a slash', () => rt.createRule({ ...good(), id: 'a/b' }), 'rule.id'],
    ['unknown group', () => rt.createRule({ ...good(), security_group_id: 'sg-nope' }), 'rule.security_group_id'],
    ['duplicate rule id', () => rt.createRule({ ...good(), id: 'web-http' }), 'rule.id'],
    ['group id with ..', () => rt.createSecurityGroup({ id: '..' }), 'sg.id'],
    ['group rule of another group', () => rt.createSecurityGroup({ id: 'sg-z', security_group_rules: [good()] }), 'sg.security_group_rules[0].security_group_id'],
    ['group with a bad rule', () => rt.createSecurityGroup({ id: 'sg-z', security_group_rules: [{ ...good(), security_group_id: 'sg-z', protocol: -1 }] }), 'sg.security_group_rules[0].protocol'],
    ['delete rule of an unknown group', () => rt.deleteRule('r', 'sg-nope'), 'sgId'],
  ];
  it.each(cases)('%s → ValidationError naming the field', async (_name, call, field) => {
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
