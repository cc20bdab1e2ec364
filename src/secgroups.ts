/**
 * Security groups through the journal, with the reference's semantics: the
 * whole group value (`global/secgroups/<sg>`) is rewritten from the group's
 * rules on every change; deleting a group deletes its key and its
 * `global/remote_group/<sg>/` subtree. The rules of each group are kept beside
 * the journal, in the same LMDB environment, so that processes sharing a data
 * directory see one truth.
 *
 * A change is read → translate → write-if-unchanged: the group record carries
 * a revision, and the journal transaction aborts and the change is retried
 * when another process changed the group in between. Translation runs inline
 * for small groups and in the pool for large ones or many groups
 * (`INLINE_THRESHOLD`, measured).
 */
import type { Piscina } from 'piscina';
import { ValidationError } from './errors.ts';
import type { Journal } from './journal.ts';
import type { KeyLayout } from './keys.ts';
import { encodeGroups, type GroupRules } from './translate-pool.ts';
import { validateRule, type NeutronRule } from './translate.ts';
import { validateId, validatePlainArray, validatePlainObject } from './validate.ts';
import type { JournalOp } from './types.ts';

/** A security group as Neutron passes it on creation. */
export interface SecurityGroup {
  id: string;
  /** The group's rules, its default rules included. @default Neutron's defaults: egress to any, IPv4 and IPv6 */
  security_group_rules?: NeutronRule[];
  [extra: string]: unknown;
}

/** Neutron's default rules of a new group: all egress traffic, IPv4 and IPv6. */
export function defaultRules(sgId: string): NeutronRule[] {
  return (['IPv4', 'IPv6'] as const).map((ethertype) => ({
    id: `${sgId}-default-egress-${ethertype.toLowerCase()}`,
    security_group_id: sgId,
    direction: 'egress',
    ethertype,
    protocol: null,
    port_range_min: null,
    port_range_max: null,
    remote_ip_prefix: null,
    remote_group_id: null,
  }));
}

/** Validates a group; returns its id and a copy of its rules. */
function validateGroup(sg: unknown, field: string): GroupRules & { rules: NeutronRule[] } {
  const g = validatePlainObject(sg, field) as SecurityGroup;
  const id = validateId(g.id, `${field}.id`);
  if (g.security_group_rules === undefined) return { id, rules: defaultRules(id) };
  const seen = new Set<string>();
  const rules = validatePlainArray(g.security_group_rules, `${field}.security_group_rules`).map((r, i) => {
    const f = `${field}.security_group_rules[${i}]`;
    const rule = checkRule(r, f);
    if (rule.security_group_id !== id) throw new ValidationError(`${f}.security_group_id`, `belongs to another group than ${id}`);
    if (seen.has(rule.id)) throw new ValidationError(`${f}.id`, 'duplicate rule id');
    seen.add(rule.id);
    return rule;
  });
  return { id, rules };
}

/** Validates one rule (translation rules and id syntax) and returns a plain copy. */
function checkRule(rule: unknown, field: string): NeutronRule {
  const r: unknown = validatePlainObject(rule, field);
  validateRule(r, field);
  validateId(r.id, `${field}.id`);
  validateId(r.security_group_id, `${field}.security_group_id`);
  if (r.remote_group_id != null && r.remote_group_id !== '') validateId(r.remote_group_id, `${field}.remote_group_id`);
  const { id, security_group_id, direction, ethertype, protocol, port_range_min, port_range_max, remote_ip_prefix, remote_group_id } = r;
  return { id, security_group_id, direction, ethertype, protocol, port_range_min, port_range_max, remote_ip_prefix, remote_group_id };
}

/** Security-group operations of a runtime. */
export class SecurityGroups {
  constructor(
    private readonly journal: Journal,
    private readonly pool: Piscina,
    private readonly keys: KeyLayout,
  ) {}

  /**
   * Creates (or replaces) groups with their rules: one transaction, values
   * encoded in the pool when the batch is large.
   * @throws ValidationError naming the field; nothing is journaled
   */
  async create(groups: unknown[]): Promise<number> {
    const valid = validatePlainArray(groups, 'groups').map((g, i, list) => validateGroup(g, list.length === 1 ? 'sg' : `groups[${i}]`));
    const values = await encodeGroups(this.pool, valid);
    const seq = await this.journal.appendWith((store) => {
      const ops: JournalOp[] = [];
      valid.forEach((g, i) => {
        store.put(g.id, g.rules);
        ops.push({ key: this.keys.secgroup(g.id), value: null, json: values[i] });
      });
      return ops;
    });
    return seq!;
  }

  /**
   * Deletes a group: its key and its remote-group subtree (`delete_secgroup_from_etcd`).
   * @throws ValidationError for a bad id; nothing is journaled
   */
  async delete(sgId: unknown): Promise<number> {
    const id = validateId(sgId, 'sgId');
    const seq = await this.journal.appendWith((store) => {
      store.remove(id);
      return [
        { key: this.keys.secgroup(id), value: null },
        { key: this.keys.remoteGroupDir(id), value: null, prefix: true },
      ];
    });
    return seq!;
  }

  /**
   * Adds a rule to its group and rewrites the group.
   * @throws ValidationError naming the field (an unknown group is `rule.security_group_id`); nothing is journaled
   */
  async createRule(rule: unknown): Promise<number> {
    const r = checkRule(rule, 'rule');
    return this.change(r.security_group_id, 'rule.security_group_id', (rules) => {
      if (rules.some((x) => x.id === r.id)) throw new ValidationError('rule.id', 'a rule with this id exists in the group');
      return [...rules, r];
    });
  }

  /**
   * Removes a rule from its group and rewrites the group (a rule the group
   * lacks changes nothing but still rewrites it, as the reference does).
   * @throws ValidationError naming the field; nothing is journaled
   */
  async deleteRule(ruleId: unknown, sgId: unknown): Promise<number> {
    const rid = validateId(ruleId, 'ruleId');
    const id = validateId(sgId, 'sgId');
    return this.change(id, 'sgId', (rules) => rules.filter((x) => x.id !== rid));
  }

  /** The rules portwire holds for a group, or undefined. */
  rules(sgId: string): NeutronRule[] | undefined {
    return this.journal.group(sgId)?.rules as NeutronRule[] | undefined;
  }

  private async change(sgId: string, field: string, edit: (rules: NeutronRule[]) => NeutronRule[]): Promise<number> {
    for (;;) {
      const record = this.journal.group(sgId);
      if (!record) throw new ValidationError(field, `unknown security group ${sgId}`);
      const rules = edit(record.rules as NeutronRule[]);
      const [json] = await encodeGroups(this.pool, [{ id: sgId, rules }]);
      const seq = await this.journal.appendWith((store) => {
        if (store.get(sgId)?.rev !== record.rev) return undefined;
        store.put(sgId, rules);
        return [{ key: this.keys.secgroup(sgId), value: null, json }];
      });
      if (seq !== undefined) return seq;
    }
  }
}
