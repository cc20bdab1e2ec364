/**
 * The port binds the benchmarks journal: deterministic, realistic (UUID ids,
 * one fixed IPv4, a VLAN segment), one etcd key per bind (no security group).
 */
import { bindingValue, vifType } from '../src/mech.ts';
import { keyLayout } from '../src/keys.ts';
import type { Port, PortBind, Segment } from '../src/types.ts';

/** Compute hosts the binds are spread over. */
export const HOSTS = 20;

export const hex = (n: number, width: number): string => (n >>> 0).toString(16).padStart(width, '0').slice(-width);

/** A deterministic UUID-shaped id: `tag` tells the kinds apart. */
export function uuid(tag: number, i: number): string {
  const h = Math.imul(i + 1, 2654435761);
  return `${hex(h, 8)}-${hex(tag, 4)}-4${hex(i >>> 12, 3)}-a${hex(i, 3)}-${hex(i, 12)}`;
}

/** The i-th port bind of the benchmark: one fixed IPv4, no security group (one key per bind). */
export function bindArgs(i: number): PortBind {
  const port: Port = {
    id: uuid(1, i),
    mac_address: `fa:16:3e:${hex(i >>> 16, 2)}:${hex(i >>> 8, 2)}:${hex(i, 2)}`,
    device_owner: 'compute:nova',
    device_id: uuid(2, i),
    fixed_ips: [{ subnet_id: uuid(3, i % 64), ip_address: `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}` }],
    allowed_address_pairs: [],
    security_groups: [],
    port_security_enabled: true,
  };
  const segment: Segment = {
    id: uuid(4, i % 1000),
    network_type: 'vlan',
    physical_network: 'physnet1',
    segmentation_id: 100 + (i % 1000),
  };
  return { port, segment, host: `compute-${String(i % HOSTS).padStart(3, '0')}` };
}

/** The key and value portwire writes for bind `i` under `prefix`. */
export function keyValue(prefix: string, i: number): { key: string; value: unknown } {
  const a = bindArgs(i);
  return {
    key: keyLayout(prefix).port(a.host, a.port.id),
    value: bindingValue(a.port, a.segment, vifType(a.port)),
  };
}
