/**
 * Scripted port workloads (bind, rebind to another host, unbind, delete, change
 * of security groups) and the etcd state they must leave, computed from a
 * model of each port's life. Ports are owned by one script, as a Neutron API
 * worker owns a request; several scripts may share one journal.
 */
import { bindingValue, vifType } from '../../src/mech.ts';
import type { KeyLayout } from '../../src/keys.ts';
import type { BindingLevel, Port, Segment } from '../../src/types.ts';
import type { ScriptOp } from './runtime-child.ts';
import { rng } from './rng.ts';


export const segment: Segment = { id: 'seg-1', network_type: 'vlan', physical_network: 'physnet1', segmentation_id: 100 };
const ours: BindingLevel = { bound_driver: 'vpp', bound_segment: segment };

interface PortModel {
  port: Port;
  host?: string;
  deleted: boolean;
}

function mkPort(id: string, i: number, version: number, sgs: string[]): Port {
  const b = i % 250;
  return {
    id,
    mac_address: `fa:16:3e:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
    device_owner: i % 10 === 0 ? 'network:dhcp' : 'compute:nova',
    device_id: `vm-${id}-v${version}`,
    security_groups: sgs,
    fixed_ips: [{ subnet_id: 'subnet-1', ip_address: `10.${(i >> 8) & 255}.${b}.${(i % 200) + 1}` }],
    allowed_address_pairs: [],
  };
}

/** A workload and the etcd content it must produce. */
export interface Workload {
  ops: ScriptOp[];
  /** Full etcd key → JSON value the workload leaves. */
  expected(keys: KeyLayout): Map<string, string>;
}

/**
 * Generates `count` API calls over ports named `<owner>-<n>`, each port's calls
 * in order: bind, then rebinds (sometimes with other security groups), unbinds,
 * re-binds, and finally sometimes a delete.
 */
export function portWorkload(owner: string, count: number, hosts: string[], seed: number): Workload {
  const r = rng(seed);
  const pick = <T>(a: T[]) => a[Math.floor(r() * a.length)];
  const groups = ['sg-web', 'sg-db', 'sg-ssh'];
  const models: PortModel[] = [];
  const ops: ScriptOp[] = [];
  let n = 0;
  while (ops.length < count) {
    const id = `${owner}-${n}`;
    const model: PortModel = { port: mkPort(id, n + seed * 7919, 0, [pick(groups)]), deleted: false };
    models.push(model);
    n++;
    const steps = 1 + Math.floor(r() * 4);
    for (let s = 0; s < steps && ops.length < count && !model.deleted; s++) {
      const roll = r();
      if (!model.host) {
        const host = pick(hosts);
        ops.push({ kind: 'updatePort', port: id, args: { current: model.port, original: null, host, original_host: null, binding_levels: [ours], original_binding_levels: null } });
        model.host = host;
      } else if (roll < 0.45) {
        const host = pick(hosts.filter((h) => h !== model.host));
        const original = model.port;
        const sgs = r() < 0.5 ? original.security_groups! : [pick(groups)];
        const current = mkPort(id, n + seed * 7919, s + 1, sgs);
        ops.push({ kind: 'updatePort', port: id, args: { current, original, host, original_host: model.host, binding_levels: [ours], original_binding_levels: [ours] } });
        model.port = current;
        model.host = host;
      } else if (roll < 0.75) {
        ops.push({ kind: 'unbindPort', port: id, args: { port: model.port, host: model.host, segment } });
        model.host = undefined;
      } else {
        ops.push({ kind: 'deletePort', port: id, args: { port: model.port, host: model.host, binding_levels: [ours] } });
        model.host = undefined;
        model.deleted = true;
      }
    }
  }
  return {
    ops,
    expected(keys) {
      const out = new Map<string, string>();
      for (const m of models) {
        if (!m.host) continue;
        out.set(keys.port(m.host, m.port.id), JSON.stringify(bindingValue(m.port, segment, vifType(m.port))));
        for (const sg of m.port.security_groups ?? []) {
          out.set(keys.remoteGroup(sg, m.port.id), JSON.stringify(m.port.fixed_ips!.map((f) => f.ip_address)));
        }
      }
      return out;
    },
  };
}

/** Merges expected maps. */
export function mergeExpected(...maps: Map<string, string>[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of maps) for (const [k, v] of m) out.set(k, v);
  return out;
}
