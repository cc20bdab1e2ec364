/**
 * The ML2-shaped inputs of the host API and the journal's operation record.
 * Field names follow Neutron's (snake_case, `binding:` attributes) so that a
 * host can pass Neutron dicts through unchanged.
 */

/** A fixed IP of a port. */
export interface FixedIp {
  subnet_id: string;
  ip_address: string;
}

/** An allowed address pair of a port. */
export interface AddressPair {
  ip_address: string;
  mac_address?: string;
}

/** A Neutron port, as the host knows it. Only `id` and `mac_address` are required. */
export interface Port {
  id: string;
  mac_address: string;
  device_owner?: string;
  device_id?: string | null;
  status?: string;
  security_groups?: string[];
  allowed_address_pairs?: AddressPair[];
  fixed_ips?: FixedIp[];
  port_security_enabled?: boolean;
  'binding:profile'?: Record<string, unknown>;
  'binding:vnic_type'?: string;
  'binding:host_id'?: string;
  [extra: string]: unknown;
}

/** A network segment (`api.ID`, `api.NETWORK_TYPE`, … in ML2). */
export interface Segment {
  id: string;
  network_type: string;
  physical_network?: string | null;
  segmentation_id?: number | null;
}

/** One level of a port binding (`binding_levels[-1]` in ML2). */
export interface BindingLevel {
  bound_driver: string;
  bound_segment: Segment;
}

/** The port context of `update_port_precommit`. */
export interface PortUpdate {
  current: Port;
  original?: Port | null;
  host: string;
  original_host?: string | null;
  binding_levels?: (BindingLevel | null)[] | null;
  original_binding_levels?: (BindingLevel | null)[] | null;
}

/** The port context of `delete_port_precommit`. */
export interface PortDelete {
  port: Port;
  host?: string | null;
  binding_levels?: (BindingLevel | null)[] | null;
}

/** Arguments of a direct bind: write the binding of `port` on `host`. */
export interface PortBind {
  port: Port;
  segment: Segment;
  host: string;
  /** `vhostuser` or `tap`; chosen from `device_owner` when omitted. */
  binding_type?: BindingType;
}

/** Arguments of a direct unbind. */
export interface PortUnbind {
  port: Port;
  host: string;
  segment?: Segment | null;
}

/** The VIF types the reference binds. */
export type BindingType = 'vhostuser' | 'tap';

/** Result of `bindPortDecision` (the reference's `bind_port`). */
export interface BindDecision {
  segment_id: string;
  vif_type: BindingType;
  vif_details: { vhostuser_socket?: string; vhostuser_mode?: 'server' };
}

/** The value written to `nodes/<host>/ports/<port>`: exactly these keys, in this order. */
export interface PortBindingValue {
  mac_address: string;
  mtu: number;
  physnet: string | null;
  network_type: string;
  segmentation_id: number | string | null;
  binding_type: BindingType;
  security_groups: string[];
  allowed_address_pairs: AddressPair[];
  fixed_ips: FixedIp[];
  port_security_enabled: unknown;
  device_id: string | null;
}

/**
 * One journaled change of etcd. `value` undefined/null deletes the key;
 * `prefix: true` deletes every key under `key` (which then ends with `/`);
 * `json` carries a value encoded already (security groups are encoded by the
 * translator in one pass).
 */
export interface JournalOp {
  key: string;
  value: unknown | null;
  prefix?: boolean;
  /** The value already encoded as JSON text (then `value` is ignored). */
  json?: string;
}
