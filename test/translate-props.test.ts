/**
 * Properties of the translation: ranges, address family, group = rules one by
 * one, encodings = JSON.stringify, pool = inline, and a typed error naming the
 * field for every kind of bad rule.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { Piscina } from 'piscina';
import { isIPv4, isIPv6 } from 'node:net';
import { ValidationError } from '../src/errors.ts';
import { createPool } from '../src/pool.ts';
import {
  encodeSecurityGroup, securityGroupToAcl, securityGroupToJson, translateRule, validateRule, type NeutronRule,
} from '../src/translate.ts';
import { streamGroupsInPool, translateGroupsInPool } from '../src/translate-pool.ts';

const NAMES: Record<string, number> = {
  tcp: 6, udp: 17, icmp: 1, icmpv6: 58, ah: 51, dccp: 33, egp: 8, esp: 50, gre: 47, igmp: 2, 'ipv6-encap': 41, 'ipv6-frag': 44,
  'ipv6-icmp': 58, 'ipv6-nonxt': 59, 'ipv6-opts': 60, 'ipv6-route': 43, ospf: 89, pgm: 113, rsvp: 46, sctp: 132, udplite: 136,
  vrrp: 112, hopopt: 0, ip: 0, ipip: 4,
};

const isIcmp = (protocol: unknown): boolean => {
  const n = protocol === null ? 0 : typeof protocol === 'number' ? protocol : (NAMES[String(protocol).toLowerCase()] ?? Number(protocol));
  return n === 1 || n === 58;
};

const protocolArb = fc.oneof(
  fc.constant(null),
  fc.constantFrom(...Object.keys(NAMES)),
  fc.constantFrom('TCP', 'Udp', 'ICMP', 'IPv6-ICMP'),
  fc.integer({ min: 0, max: 255 }),
  fc.integer({ min: 0, max: 255 }).map(String),
  fc.constantFrom(6, 17, 1, 58, 136, '6', '17', '1', '58', '006'),
);

const groupIdArb = fc.oneof(fc.uuid(), fc.string({ minLength: 1, maxLength: 12 }), fc.constantFrom('rg"1', 'grüppe', 'a\\b', 'x\u0001y'));

/** A valid Neutron rule of group `sg`: every field within what validateRule accepts. */
const ruleArb = (sg: fc.Arbitrary<string>) =>
  fc
    .record({
      id: fc.uuid(),
      security_group_id: sg,
      direction: fc.constantFrom('ingress', 'egress'),
      v6: fc.boolean(),
      protocol: protocolArb,
      mode: fc.constantFrom('null', 'minus', 'set', 'noMax', 'minusMax'),
      a: fc.integer({ min: 0, max: 65535 }),
      b: fc.integer({ min: 0, max: 65535 }),
      remote: fc.constantFrom('none', 'prefix', 'bare', 'group', 'both', 'empty'),
      v4addr: fc.ipV4(),
      v6addr: fc.ipV6(),
      len: fc.integer({ min: 0, max: 128 }),
      group: groupIdArb,
    })
    .map((x): NeutronRule => {
      const icmp = isIcmp(x.protocol);
      let min: number | null = null;
      let max: number | null = null;
      if (x.mode === 'minus') min = max = -1;
      else if (x.mode !== 'null' && icmp) {
        min = x.a % 256;
        max = x.mode === 'noMax' ? null : x.mode === 'minusMax' ? -1 : x.b % 256;
      } else if (x.mode !== 'null') {
        min = Math.min(x.a, x.b);
        max = Math.max(x.a, x.b);
      }
      const addr = x.v6 ? x.v6addr : x.v4addr;
      const len = x.len % (x.v6 ? 129 : 33);
      const prefix = { none: null, prefix: `${addr}/${len}`, bare: addr, group: null, both: `${addr}/${len}`, empty: '' }[x.remote];
      const group = x.remote === 'group' || x.remote === 'both' ? x.group : null;
      return {
        id: x.id, security_group_id: x.security_group_id, direction: x.direction, ethertype: x.v6 ? 'IPv6' : 'IPv4',
        protocol: x.protocol, port_range_min: min, port_range_max: max, remote_ip_prefix: prefix, remote_group_id: group,
      } as NeutronRule;
    });

describe('translation properties', () => {
  it('output stays within the agent\'s ranges and is_ipv6 agrees with the address family', () => {
    fc.assert(
      fc.property(ruleArb(fc.constant('sg')), (rule) => {
        const acl = translateRule(rule);
        expect(Object.keys(acl)).toEqual(['is_ipv6', 'remote_ip_addr', 'ip_prefix_len', 'remote_group_id', 'protocol', 'port_min', 'port_max']);
        expect([0, 1]).toContain(acl.is_ipv6);
        expect(acl.protocol).toBeGreaterThanOrEqual(0);
        expect(acl.protocol).toBeLessThanOrEqual(255);
        for (const p of [acl.port_min, acl.port_max]) {
          expect(Number.isInteger(p) && p >= -1 && p <= 65535).toBe(true);
        }
        expect(acl.ip_prefix_len).toBeGreaterThanOrEqual(0);
        expect(acl.ip_prefix_len).toBeLessThanOrEqual(acl.is_ipv6 ? 128 : 32);
        if (acl.remote_ip_addr !== null) expect(acl.is_ipv6 ? isIPv6(acl.remote_ip_addr) : isIPv4(acl.remote_ip_addr)).toBe(true);
        expect((acl.remote_ip_addr === null) !== (acl.remote_group_id === null)).toBe(true);
        expect(acl.is_ipv6).toBe(rule.ethertype === 'IPv6' ? 1 : 0);
      }),
      { numRuns: 3000 },
    );
  });

  it('translating a group equals translating its rules one by one; every encoding equals JSON.stringify', () => {
    fc.assert(
      fc.property(fc.array(ruleArb(fc.constantFrom('sg', 'other')), { maxLength: 40 }), (rules) => {
        const acl = securityGroupToAcl('sg', rules);
        const mine = rules.filter((r) => r.security_group_id === 'sg');
        expect(acl.ingress_rules).toEqual(mine.filter((r) => r.direction === 'ingress').map(translateRule));
        expect(acl.egress_rules).toEqual(mine.filter((r) => r.direction === 'egress').map(translateRule));
        const text = JSON.stringify(acl);
        expect(encodeSecurityGroup(acl)).toBe(text);
        expect(securityGroupToJson('sg', rules)).toBe(text);
      }),
      { numRuns: 500 },
    );
  });

  it('encodeSecurityGroup equals JSON.stringify for any value of the AclRule shape', () => {
    const num = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -0, -1, 65535, 2 ** 31, -(2 ** 31), 1e21));
    const str = fc.oneof(fc.constant(null), fc.string(), fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary' }));
    const acl = fc.record({
      is_ipv6: fc.oneof(fc.constantFrom(0, 1), num), remote_ip_addr: str, ip_prefix_len: num,
      remote_group_id: str, protocol: num, port_min: num, port_max: num,
    });
    fc.assert(
      fc.property(fc.array(acl, { maxLength: 8 }), fc.array(acl, { maxLength: 8 }), (ingress, egress) => {
        const value = { ingress_rules: ingress, egress_rules: egress } as unknown as Parameters<typeof encodeSecurityGroup>[0];
        expect(encodeSecurityGroup(value)).toBe(JSON.stringify(value));
      }),
      { numRuns: 2000 },
    );
  });

  describe('through a real pool (1 thread)', () => {
    let pool: Piscina;
    beforeAll(() => {
      pool = createPool({ size: 1 });
    });
    afterAll(async () => {
      await pool.destroy();
    });

    it('pool translation (owned and streamed) equals inline translation, slots reused across calls', async () => {
      const groupsArb = fc.array(
        fc.uuid().chain((id) => fc.record({ id: fc.constant(id), rules: fc.array(ruleArb(fc.constantFrom(id, id, id, 'other')), { maxLength: 60 }) })),
        { minLength: 1, maxLength: 30 },
      );
      await fc.assert(
        fc.asyncProperty(groupsArb, async (groups) => {
          const values = await translateGroupsInPool(pool, groups);
          expect(values).toHaveLength(groups.length);
          const inline = groups.map((g) => securityGroupToJson(g.id, g.rules));
          expect(values).toEqual(inline);
          const streamed = new Array<string>(groups.length);
          await streamGroupsInPool(pool, groups, (i, json) => (streamed[i] = Buffer.from(json).toString('utf8')));
          expect(streamed).toEqual(inline);
        }),
        { numRuns: 60 },
      );
    });

    it('a batch larger than the slots in flight (the main thread helps from the back) equals inline', async () => {
      const rules = fc.sample(ruleArb(fc.constant('x')), { numRuns: 12_000, seed: 7 });
      const groups = Array.from({ length: 120 }, (_, g) => {
        const id = `sg-${g}`;
        return { id, rules: rules.slice(g * 100, g * 100 + 100).map((r) => ({ ...r, security_group_id: id })) };
      });
      const inline = groups.map((g) => securityGroupToJson(g.id, g.rules));
      expect(await translateGroupsInPool(pool, groups)).toEqual(inline);
      const streamed = new Array<string>(groups.length);
      await streamGroupsInPool(pool, groups, (i, json) => (streamed[i] = Buffer.from(json).toString('utf8')));
      expect(streamed).toEqual(inline);
    });
  });

  describe('bad rules: a ValidationError naming the field', () => {
    const tcp = { protocol: 'tcp' };
    const icmp = { protocol: 'icmp' };
    /** One corruption of a valid rule each: [what, patch, field]. */
    const BAD: [string, Record<string, unknown>, string][] = [
      ['id missing', { id: undefined }, 'id'],
      ['id empty', { id: '' }, 'id'],
      ['group id not a string', { security_group_id: 7 }, 'security_group_id'],
      ['direction', { direction: 'sideways' }, 'direction'],
      ['ethertype lower case', { ethertype: 'ipv4', remote_ip_prefix: null }, 'ethertype'],
      ['ethertype missing', { ethertype: undefined }, 'ethertype'],
      ['protocol unknown', { protocol: 'ipencap' }, 'protocol'],
      ['protocol 256', { protocol: 256 }, 'protocol'],
      ['protocol "-1"', { protocol: '-1' }, 'protocol'],
      ['protocol 6.5', { protocol: 6.5 }, 'protocol'],
      ['protocol true', { protocol: true }, 'protocol'],
      ['protocol " 6"', { protocol: ' 6' }, 'protocol'],
      ['prefix not an address', { remote_ip_prefix: 'foo/8' }, 'remote_ip_prefix'],
      ['prefix too long', { ethertype: 'IPv4', remote_ip_prefix: '10.0.0.0/33' }, 'remote_ip_prefix'],
      ['prefix of the other family', { ethertype: 'IPv4', remote_ip_prefix: '2001:db8::/32' }, 'remote_ip_prefix'],
      ['prefix v4 on IPv6', { ethertype: 'IPv6', remote_ip_prefix: '10.0.0.1' }, 'remote_ip_prefix'],
      ['prefix length not digits', { ethertype: 'IPv4', remote_ip_prefix: '10.0.0.0/ 8' }, 'remote_ip_prefix'],
      ['prefix a number', { remote_ip_prefix: 5 }, 'remote_ip_prefix'],
      ['remote group a number', { remote_group_id: 5 }, 'remote_group_id'],
      ['port above 65535', { ...tcp, port_range_min: 80, port_range_max: 65536 }, 'port_range_max'],
      ['port min negative', { ...tcp, port_range_min: -5, port_range_max: 80 }, 'port_range_min'],
      ['port as text', { ...tcp, port_range_min: '80', port_range_max: 80 }, 'port_range_min'],
      ['port fractional', { ...tcp, port_range_min: 80, port_range_max: 80.5 }, 'port_range_max'],
      ['min above max', { ...tcp, port_range_min: 90, port_range_max: 80 }, 'port_range_max'],
      ['max without min', { ...tcp, port_range_min: null, port_range_max: 80 }, 'port_range_max'],
      ['min without max', { ...tcp, port_range_min: 80, port_range_max: null }, 'port_range_max'],
      ['ICMP type 256', { ...icmp, port_range_min: 256, port_range_max: null }, 'port_range_min'],
      ['ICMP code 256', { ...icmp, port_range_min: 8, port_range_max: 256 }, 'port_range_max'],
      ['ICMP code without type', { ...icmp, port_range_min: null, port_range_max: 0 }, 'port_range_max'],
    ];

    it.each(BAD)('%s', (_, patch, field) => {
      fc.assert(
        fc.property(ruleArb(fc.constant('sg')), fc.nat(5), (base, at) => {
          const bad = { ...base, ...patch } as Record<string, unknown>;
          for (const k of Object.keys(patch)) if (patch[k] === undefined) delete bad[k];
          const errorOf = (f: () => unknown) => {
            try {
              f();
            } catch (e) {
              return e;
            }
            return undefined;
          };
          const e1 = errorOf(() => translateRule(bad as unknown as NeutronRule));
          expect(e1).toBeInstanceOf(ValidationError);
          expect((e1 as ValidationError).field).toBe(`rule.${field}`);
          expect(errorOf(() => validateRule(bad, 'body.rule'))).toMatchObject({ field: `body.rule.${field}` });
          const rules = Array.from({ length: at }, () => base);
          const inGroup = { ...bad, security_group_id: 'sg' };
          if (field !== 'security_group_id') {
            expect(errorOf(() => securityGroupToAcl('sg', [...rules, inGroup as unknown as NeutronRule]))).toMatchObject({ field: `rules[${at}].${field}` });
          }
        }),
        { numRuns: 40 },
      );
    });
  });
});
