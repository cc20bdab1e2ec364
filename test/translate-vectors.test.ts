/**
 * Every vector of acl-vectors.json (produced by running the unmodified
 * networking-vpp reference): same output, except where the reference has a
 * bug we fix on purpose — those tests say so and assert the fixed behaviour.
 */
import { describe, expect, it } from 'vitest';
import vectors from './fixtures/acl-vectors.json' with { type: 'json' };
import { ValidationError } from '../src/errors.ts';
import {
  FIXES, encodeSecurityGroup, securityGroupToAcl, securityGroupToJson, translateRule,
  type AclRule, type FixId, type NeutronRule,
} from '../src/translate.ts';

interface Vector {
  name: string;
  input: Record<string, unknown>;
  etcd_rule?: AclRule;
  error?: string;
}

const any4 = { is_ipv6: 0, remote_ip_addr: '0.0.0.0', ip_prefix_len: 0, remote_group_id: null } as const;

/**
 * The vectors whose reference output we deliberately do not reproduce: the
 * fix that explains it, and what we give instead (an AclRule, or the field of
 * the ValidationError).
 */
const FIXED: Record<string, { fix: FixId; ours: AclRule | { field: string } }> = {
  'tcp 0-1024 (BUG: widened to 0-65535)': { fix: 'PORT_ZERO_WIDENED', ours: { ...any4, protocol: 6, port_min: 0, port_max: 1024 } },
  'icmp type 0 code 0 (BUG: widened to all ICMP)': { fix: 'ICMP_TYPE_ZERO_WIDENED', ours: { ...any4, protocol: 1, port_min: 0, port_max: 0 } },
  'ethertype other than IPv4 treated as IPv6': { fix: 'ETHERTYPE_INVALID', ours: { field: 'rule.ethertype' } },
  'unknown name "ipip" -> ValueError': { fix: 'PROTOCOL_NAME_ADDED', ours: { ...any4, protocol: 4, port_min: 0, port_max: 0 } },
  'unknown name "hopopt" -> ValueError': { fix: 'PROTOCOL_NAME_ADDED', ours: { ...any4, protocol: 0, port_min: 0, port_max: 0 } },
};

function outcome(input: Record<string, unknown>): AclRule | { field: string } {
  try {
    return translateRule(input as unknown as NeutronRule);
  } catch (e) {
    if (e instanceof ValidationError) return { field: e.field };
    throw e;
  }
}

const derived = vectors.derived_vectors as Vector[];

describe('acl-vectors.json: derived_vectors (reference _neutron_rule_to_vpp_acl)', () => {
  const same = derived.filter((v) => !(v.name in FIXED));
  it.each(same.filter((v) => v.etcd_rule).map((v) => [v.name, v] as const))('%s: same etcd rule as the reference', (_, v) => {
    expect(outcome(v.input)).toEqual(v.etcd_rule);
  });

  it.each(Object.entries(FIXED))('%s: deliberately fixed (%s)', (name, { fix, ours }) => {
    const v = derived.find((d) => d.name === name);
    expect(v, `vector "${name}" exists`).toBeDefined();
    expect(FIXES.map((f) => f.id)).toContain(fix);
    const got = outcome(v!.input);
    expect(got).toEqual(ours);
    if (v!.etcd_rule) expect(got).not.toEqual(v!.etcd_rule);
  });

  it('every vector marked BUG, and every reference error, is listed as a fix or refused with a named field', () => {
    for (const v of derived) {
      if (/BUG/.test(v.name)) expect(FIXED[v.name], v.name).toBeDefined();
      if (v.error && !FIXED[v.name]) expect(outcome(v.input)).toHaveProperty('field');
    }
    expect(derived.filter((v) => v.error).map((v) => v.name).sort()).toEqual(
      Object.keys(FIXED).filter((n) => derived.find((d) => d.name === n)?.error).sort(),
    );
  });

  it('the string and one-pass JSON encodings equal JSON.stringify for every accepted vector', () => {
    for (const v of derived) {
      const got = outcome(v.input);
      if ('field' in got) continue;
      const rule = v.input as unknown as NeutronRule;
      const acl = securityGroupToAcl(rule.security_group_id, [rule]);
      expect(encodeSecurityGroup(acl)).toBe(JSON.stringify(acl));
      expect(securityGroupToJson(rule.security_group_id, [rule])).toBe(JSON.stringify(acl));
    }
  });
});

describe('acl-vectors.json: derived_get_secgroup_from_rules', () => {
  const g = vectors.derived_get_secgroup_from_rules;
  const rules = g.rules as unknown as NeutronRule[];

  it('filters by group, splits by direction and keeps order, as the reference wrote it', () => {
    expect(securityGroupToAcl(g.sgid, rules)).toEqual(g.etcd_value_written);
  });

  it('encodes to the JSON of the value the reference wrote, keys in the reference order', () => {
    const text = JSON.stringify(g.etcd_value_written);
    expect(securityGroupToJson(g.sgid, rules)).toBe(text);
    expect(encodeSecurityGroup(securityGroupToAcl(g.sgid, rules))).toBe(text);
  });

  it('names the bad rule by its index, and skips other groups\' rules without validating them', () => {
    const bad = [...rules, { ...rules[0], id: 'e', protocol: 'nope' }] as NeutronRule[];
    expect(() => securityGroupToAcl(g.sgid, bad)).toThrow(expect.objectContaining({ field: `rules[${rules.length}].protocol` }));
    const other = [...rules, { ...rules[0], id: 'f', security_group_id: 'other', protocol: 'nope' }] as NeutronRule[];
    expect(securityGroupToAcl(g.sgid, other)).toEqual(g.etcd_value_written);
  });
});

describe('acl-vectors.json: unit_test_vectors', () => {
  it('the Neutron rules behind the agent test\'s input translate to exactly that etcd value', () => {
    const [v] = vectors.unit_test_vectors;
    const rule = (id: string, direction: string, ethertype: string, min: number, max: number, prefix: string | null) => ({
      id, security_group_id: v.secgroup_id, direction, ethertype, protocol: 'tcp', port_range_min: min, port_range_max: max,
      remote_ip_prefix: prefix, remote_group_id: prefix ? null : 'remote-group1',
    }) as NeutronRule;
    const rules = [
      rule('a', 'ingress', 'IPv6', 80, 81, null),
      rule('b', 'ingress', 'IPv4', 80, 81, null),
      rule('c', 'ingress', 'IPv6', 8080, 8080, '2001:aa12::/64'),
      rule('d', 'egress', 'IPv6', 443, 1000, null),
    ];
    expect(securityGroupToAcl(v.secgroup_id, rules)).toEqual(v.input_etcd_value);
    expect(securityGroupToJson(v.secgroup_id, rules)).toBe(JSON.stringify(v.input_etcd_value));
  });
});
