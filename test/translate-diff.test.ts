/**
 * Differential test: the reference `_neutron_rule_to_vpp_acl` (networking-vpp,
 * run under python3 from test/fixtures/reference_acl.py) against portwire's
 * translation over 120,000 seeded random rules. Every difference must be
 * attributed to one deliberate fix of FIXES; nothing may be left unexplained.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { isIPv4, isIPv6 } from 'node:net';
import { fileURLToPath } from 'node:url';
import { ValidationError } from '../src/errors.ts';
import { FIXES, securityGroupToAcl, securityGroupToJson, translateRule, type AclRule, type FixId, type NeutronRule } from '../src/translate.ts';
import { rng } from './helpers/rng.ts';

const RULES = 120_000;
const SCRIPT = fileURLToPath(new URL('./fixtures/reference_acl.py', import.meta.url));


const MISSING = Symbol('missing');
/** The reference's `protocols` table, and neutron_lib names it lacks. */
const REF_TABLE: Record<string, number> = {
  tcp: 6, udp: 17, icmp: 1, icmpv6: 58, ah: 51, dccp: 33, egp: 8, esp: 50, gre: 47, igmp: 2, 'ipv6-encap': 41, 'ipv6-frag': 44,
  'ipv6-icmp': 58, 'ipv6-nonxt': 59, 'ipv6-opts': 60, 'ipv6-route': 43, ospf: 89, pgm: 113, rsvp: 46, sctp: 132, udplite: 136, vrrp: 112,
};
const REF_NAMES = Object.keys(REF_TABLE);
const ADDED_NAMES: Record<string, number> = { hopopt: 0, ip: 0, ipip: 4 };

/** Generates one rule: each field drawn from its corner cases, mostly valid values. */
function generator(seed: number): () => Record<string, unknown> {
  const r = rng(seed);
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const often = <T,>(p: number, good: () => T, bad: readonly unknown[]): unknown => (r() < p ? good() : pick(bad));
  const ports = () => [null, MISSING, -1, 0, 0, 1, 8, 22, 80, 255, 256, 1024, 65535, 65536, -2, -100, 70000, 80.5, '80', '', '0', true, false];
  const port = (): unknown =>
    often(0.7, () => (r() < 0.5 ? pick([null, 0, -1, 22, 80, 443, 65535]) : r() < 0.5 ? int(0, 255) : int(0, 65535)), ports());
  const protocol = (): unknown =>
    often(0.75, () => pick([null, MISSING, 'tcp', 'udp', 'icmp', pick(REF_NAMES), String(int(0, 255)), int(0, 255), 6, 17, 1, 58, '6', '1', '58']), [
      'hopopt', 'ip', 'ipip', 'TCP', 'Icmp', 'IPIP', 'HopOpt', '006', '256', '300', '-1', ' 6', '+6', '6_0', '\u0666', '\uff16',
      '', 'foo', 'ipencap', 256, -1, 1000, 6.5, true, false, [], {},
    ]);
  const v4 = () => `${int(0, 255)}.${int(0, 255)}.${int(0, 255)}.${int(0, 255)}`;
  const v6 = () => pick(['2001:db8::', '::', '::1', 'fe80::1', '2001:DB8:0:1::', '::ffff:1.2.3.4', '1:2:3:4:5:6:7:8', `2001:db8:${int(0, 65535).toString(16)}::`]);
  const prefix = (): unknown =>
    often(0.75, () => pick([null, MISSING, '', `${v4()}/${int(0, 32)}`, `${v6()}/${int(0, 128)}`, '0.0.0.0/0', '::/0', '10.0.0.0/8']), [
      v4(), v6(), `${v4()}/33`, `${v6()}/129`, '10.0.0.0/08', '10.0.0.0/ 8', '10.0.0.0/-1', '10.0.0.0/', '10.0.0.0/8/9', 'foo/8', '/8',
      '10.0.0/8', '10.0.0.256/24', '01.2.3.4/8', '1:2:3:4:5:6:7:8:9/64', '2001:db8::/abc', 'fe80::1%eth0/64', 'foo', 5, true, false, 0,
    ]);
  const group = (): unknown => often(0.85, () => pick([null, MISSING, 'rg1', 'b7c1e5d2-0000-4000-8000-000000000001', '']), ['rg"x\\y', 'é', 5, false, true]);
  return () => {
    const rule: Record<string, unknown> = {
      id: often(0.97, () => `r${int(0, 1e6)}`, [null, '', 5, MISSING]),
      security_group_id: often(0.97, () => 'sg1', ['', null, 7, MISSING]),
      direction: often(0.93, () => pick(['ingress', 'egress']), ['INGRESS', 'in', '', null, MISSING]),
      ethertype: often(0.93, () => pick(['IPv4', 'IPv6']), ['ipv4', 'ipv6', 'IPV4', '', null, 4, MISSING]),
      protocol: protocol(),
      port_range_min: port(),
      port_range_max: port(),
      remote_ip_prefix: prefix(),
      remote_group_id: group(),
    };
    for (const k of Object.keys(rule)) if (rule[k] === MISSING) delete rule[k];
    return rule;
  };
}

type Expected = { ok: false; field: string; fix: FixId | null } | { ok: true; fixes: FixId[] };

/** Our expected outcome, derived from the input alone, in validation order. */
function expected(r: Record<string, unknown>): Expected {
  const fail = (field: string, fix: FixId | null): Expected => ({ ok: false, field: `rule.${field}`, fix });
  const nullish = (v: unknown) => v === null || v === undefined;
  const fixes: FixId[] = [];
  for (const k of ['id', 'security_group_id']) if (typeof r[k] !== 'string' || r[k] === '') return fail(k, 'RULE_ID_INVALID');
  if (r.direction !== 'ingress' && r.direction !== 'egress') return fail('direction', 'DIRECTION_INVALID');
  if (r.ethertype !== 'IPv4' && r.ethertype !== 'IPv6') return fail('ethertype', 'ETHERTYPE_INVALID');
  const ipv6 = r.ethertype === 'IPv6';
  let proto = 0;
  const p = r.protocol;
  if (typeof p === 'number') {
    if (!Number.isInteger(p)) return fail('protocol', 'WRONG_TYPE');
    if (p < 0 || p > 255) return fail('protocol', 'PROTOCOL_OUT_OF_RANGE');
    proto = p;
  } else if (typeof p === 'string') {
    const lower = p.toLowerCase();
    const known = (name: string) => (Object.hasOwn(REF_TABLE, name) ? REF_TABLE[name] : Object.hasOwn(ADDED_NAMES, name) ? ADDED_NAMES[name] : -1);
    if (Object.hasOwn(REF_TABLE, p)) proto = REF_TABLE[p];
    else if (known(p) >= 0) {
      proto = known(p);
      fixes.push('PROTOCOL_NAME_ADDED');
    } else if (known(lower) >= 0) {
      proto = known(lower);
      fixes.push('PROTOCOL_NAME_CASE');
    } else if (/^[0-9]+$/.test(p)) {
      if (Number(p) > 255) return fail('protocol', 'PROTOCOL_OUT_OF_RANGE');
      proto = Number(p);
    } else return fail('protocol', 'PROTOCOL_TEXT_NOT_PLAIN');
  } else if (!nullish(p)) return fail('protocol', 'WRONG_TYPE');
  if (proto === 1 && ipv6) proto = 58;

  const prefix = r.remote_ip_prefix;
  if (typeof prefix === 'string' && prefix !== '') {
    const [addr, len, ...rest] = prefix.split('/');
    const fam = !addr.includes('%') && isIPv6(addr) ? 6 : isIPv4(addr) ? 4 : 0;
    if (fam === 0) return fail('remote_ip_prefix', 'PREFIX_INVALID');
    if (len === undefined) fixes.push('PREFIX_WITHOUT_LENGTH');
    else if (rest.length > 0 || !/^[0-9]+$/.test(len)) return fail('remote_ip_prefix', 'PREFIX_INVALID');
    if ((fam === 6) !== ipv6) return fail('remote_ip_prefix', 'PREFIX_FAMILY_MISMATCH');
    if (len !== undefined && Number(len) > (ipv6 ? 128 : 32)) return fail('remote_ip_prefix', 'PREFIX_INVALID');
  } else if (!nullish(prefix) && prefix !== '') return fail('remote_ip_prefix', 'WRONG_TYPE');
  if (!nullish(r.remote_group_id) && typeof r.remote_group_id !== 'string') return fail('remote_group_id', 'WRONG_TYPE');

  const min = r.port_range_min as number | null | undefined;
  const max = r.port_range_max as number | null | undefined;
  if (!nullish(min) && !Number.isInteger(min)) return fail('port_range_min', 'WRONG_TYPE');
  if (!nullish(max) && !Number.isInteger(max)) return fail('port_range_max', 'WRONG_TYPE');
  for (const k of ['protocol', 'port_range_min', 'port_range_max', 'remote_ip_prefix', 'remote_group_id']) {
    if (!(k in r)) fixes.push('MISSING_KEY_AS_NULL');
  }
  const icmp = proto === 1 || proto === 58;
  if (nullish(min) || min === -1) {
    if (!nullish(max) && max !== -1) return fail('port_range_max', 'PORT_MAX_WITHOUT_MIN');
    return { ok: true, fixes };
  }
  if (icmp) {
    if (min! < 0 || min! > 255) return fail('port_range_min', 'ICMP_OUT_OF_RANGE');
    if (!nullish(max) && max !== -1 && (max! < 0 || max! > 255)) return fail('port_range_max', 'ICMP_OUT_OF_RANGE');
    if (min === 0 && !nullish(max)) fixes.push('ICMP_TYPE_ZERO_WIDENED');
    return { ok: true, fixes };
  }
  if (min! < 0 || min! > 65535) return fail('port_range_min', 'PORT_OUT_OF_RANGE');
  if (nullish(max)) return fail('port_range_max', 'PORT_MAX_MISSING');
  if (max! < 0 || max! > 65535) return fail('port_range_max', 'PORT_OUT_OF_RANGE');
  if (min! > max!) return fail('port_range_max', 'PORT_RANGE_REVERSED');
  if (min === 0) fixes.push('PORT_ZERO_WIDENED');
  return { ok: true, fixes };
}

type RefResult = { dir: 'ingress' | 'egress'; rule: AclRule } | { error: string };

/** Runs the reference over all rules in one python3 process, streaming both ways. */
async function runReference(rules: readonly Record<string, unknown>[]): Promise<RefResult[]> {
  const child = spawn('python3', [SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PYTHONIOENCODING: 'utf-8' } });
  const chunks: Buffer[] = [];
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => chunks.push(c));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? -1));
  });
  const BATCH = 4096;
  for (let i = 0; i < rules.length; i += BATCH) {
    const text = rules.slice(i, i + BATCH).map((r) => JSON.stringify(r)).join('\n') + '\n';
    if (!child.stdin.write(text)) await new Promise((resolve) => child.stdin.once('drain', resolve));
  }
  child.stdin.end();
  const code = await done;
  if (code !== 0) throw new Error(`reference_acl.py exited ${code}: ${stderr}`);
  const lines = Buffer.concat(chunks).toString('utf8').trimEnd().split('\n');
  return lines.map((l) => JSON.parse(l) as RefResult);
}

const sameRule = (a: AclRule, b: AclRule) => JSON.stringify(a) === JSON.stringify(b);
const otherFieldsSame = (a: AclRule, b: AclRule) => sameRule({ ...a, port_min: 0, port_max: 0 }, { ...b, port_min: 0, port_max: 0 });

/** Attributes a difference between ours and the reference, or returns null when it is unexplained. */
function attribute(rule: Record<string, unknown>, exp: Expected, ours: AclRule | ValidationError, ref: RefResult): FixId | 'identical' | null {
  if (!exp.ok) {
    if (!(ours instanceof ValidationError) || ours.field !== exp.field) return null;
    return 'error' in ref ? 'identical' : exp.fix;
  }
  if (ours instanceof ValidationError) return null;
  if ('error' in ref) {
    if (ref.error === 'KeyError') return exp.fixes.includes('MISSING_KEY_AS_NULL') ? 'MISSING_KEY_AS_NULL' : null;
    if (ref.error !== 'ValueError') return null;
    return exp.fixes.find((f) => f === 'PROTOCOL_NAME_ADDED' || f === 'PROTOCOL_NAME_CASE' || f === 'PREFIX_WITHOUT_LENGTH') ?? null;
  }
  if (ref.dir !== rule.direction) return null;
  if (sameRule(ref.rule, ours)) return 'identical';
  if (!otherFieldsSame(ref.rule, ours) || ours.port_min !== 0 || ours.port_max !== rule.port_range_max) return null;
  const r = ref.rule;
  if (exp.fixes.includes('ICMP_TYPE_ZERO_WIDENED')) return r.port_min === -1 && r.port_max === -1 ? 'ICMP_TYPE_ZERO_WIDENED' : null;
  if (!exp.fixes.includes('PORT_ZERO_WIDENED')) return null;
  const widened = [6, 17, 136].includes(ours.protocol) ? r.port_min === 0 && r.port_max === 65535 : r.port_min === 0 && r.port_max === 0;
  return widened ? 'PORT_ZERO_WIDENED' : null;
}

describe('translation against the networking-vpp reference under python3', () => {
  it(`agrees on ${RULES} random rules except for the counted deliberate fixes`, async () => {
    const next = generator(20240601);
    const rules = Array.from({ length: RULES }, next);
    const refs = await runReference(rules);
    expect(refs).toHaveLength(RULES);

    const counts = new Map<string, number>([['identical', 0], ...FIXES.map((f) => [f.id, 0] as [string, number])]);
    const unexplained: unknown[] = [];
    for (let i = 0; i < RULES; i++) {
      const rule = rules[i];
      let ours: AclRule | ValidationError;
      try {
        ours = translateRule(rule as unknown as NeutronRule);
      } catch (e) {
        if (!(e instanceof ValidationError)) throw e;
        ours = e;
      }
      const exp = expected(rule);
      const verdict = attribute(rule, exp, ours, refs[i]);
      if (verdict === null) unexplained.push({ rule, exp, ours, ref: refs[i] });
      else counts.set(verdict, counts.get(verdict)! + 1);
      if (!(ours instanceof ValidationError)) {
        const sg = rule.security_group_id as string;
        const acl = securityGroupToAcl(sg, [rule as unknown as NeutronRule]);
        expect(acl[rule.direction === 'ingress' ? 'ingress_rules' : 'egress_rules']).toEqual([ours]);
        expect(securityGroupToJson(sg, [rule as unknown as NeutronRule])).toBe(JSON.stringify(acl));
      }
    }
    console.log('differential counts', Object.fromEntries(counts));
    expect(unexplained.slice(0, 5)).toEqual([]);
    let total = 0;
    for (const n of counts.values()) total += n;
    expect(total).toBe(RULES);
    for (const fix of FIXES) expect(counts.get(fix.id), fix.id).toBeGreaterThan(0);
    expect(counts.get('identical')).toBeGreaterThan(RULES / 3);
  });

  it('reproduces every derived vector with the python fixture (the fixture is the reference)', async () => {
    const { default: vectors } = await import('./fixtures/acl-vectors.json', { with: { type: 'json' } });
    const refs = await runReference(vectors.derived_vectors.map((v) => v.input));
    vectors.derived_vectors.forEach((v, i) => {
      const ref = refs[i];
      if ('error' in v) expect(ref).toEqual({ error: String(v.error).split(':')[0] });
      else expect('rule' in ref && ref.rule).toEqual(v.etcd_rule);
    });
  });
});
