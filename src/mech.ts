/**
 * The ML2 decisions of networking-vpp's `mech_vpp.py`, as pure functions: what
 * to bind, and which etcd keys to write or delete (as journal ops, in the
 * order the reference journals them). No I/O: the caller journals the ops.
 *
 * Python's `dict.get(key, default)` is mirrored by {@link pyGet}: an absent
 * (or `undefined`) key gives the default, a key present with `null` gives
 * `null`. Inputs are expected to have passed `src/validate.ts`; the functions
 * still tolerate the reference's odd test fixtures without throwing.
 */
import path from 'node:path';
import type { KeyLayout } from './keys.ts';
import type {
  BindDecision,
  BindingType,
  JournalOp,
  Port,
  PortBindingValue,
  PortDelete,
  PortUpdate,
  Segment,
} from './types.ts';

/** Configuration of the mechanism decisions. */
export interface MechConfig {
  /** The etcd key layout. */
  keys: KeyLayout;
  /** Directory of vhost-user sockets (`ml2_vpp.vhost_user_dir`). @default '/tmp' */
  vhostUserDir: string;
  /** Network types this driver binds (`ml2_vpp.network_types`). @default ['vlan','flat','gpe'] */
  allowedNetworkTypes: readonly string[];
}

/** Tells whether `host` is alive and has attached `physnet`. */
export type PhysnetKnown = (host: string, physnet: string) => boolean;

/** Device-owner prefixes of network-service ports (neutron_lib `DEVICE_OWNER_PREFIXES`). */
export const DEVICE_OWNER_PREFIXES: readonly string[] = ['network:', 'neutron:'];

/** The only vnic type the reference binds (`portbindings.VNIC_NORMAL`). */
export const VNIC_NORMAL = 'normal';

/**
 * The reference's defaults for one key layout.
 * @example defaultMechConfig(keyLayout()) // vhostUserDir '/tmp', types vlan, flat, gpe
 */
export function defaultMechConfig(keys: KeyLayout): MechConfig {
  return { keys, vhostUserDir: '/tmp', allowedNetworkTypes: ['vlan', 'flat', 'gpe'] };
}

/** Python's `obj.get(key, dflt)`: default when the key is absent or undefined. */
function pyGet(obj: unknown, key: string, dflt: unknown): unknown {
  if (typeof obj !== 'object' || obj === null || !Object.hasOwn(obj, key)) return dflt;
  const v = (obj as Record<string, unknown>)[key];
  return v === undefined ? dflt : v;
}

function asArray<T>(v: unknown): T[] {
  return Array.isArray(v) ? (v as T[]) : [];
}

/** Python truthiness for the scalars a segmentation id can be. */
function truthy(v: unknown): boolean {
  return v !== 0 && v !== null && v !== undefined && v !== '' && v !== false;
}

/**
 * The VIF type of a port (the reference's `get_vif_type`): `tap` for
 * network-service ports (DHCP, router…), else `vhostuser`.
 * @example vifType({ id: '1', mac_address: m, device_owner: 'network:dhcp' }) // 'tap'
 */
export function vifType(port: Port): BindingType {
  const owner = pyGet(port, 'device_owner', '');
  if (typeof owner !== 'string') return 'vhostuser';
  return DEVICE_OWNER_PREFIXES.some((p) => owner.startsWith(p)) ? 'tap' : 'vhostuser';
}

/**
 * The value of `nodes/<host>/ports/<port>`: the reference's `bind` data dict,
 * with the same keys in the same order. The value shares the port's arrays
 * (pass a validated copy, not the host's object).
 */
export function bindingValue(port: Port, segment: Segment, bindingType: BindingType): PortBindingValue {
  return {
    mac_address: port.mac_address,
    mtu: 1500,
    physnet: pyGet(segment, 'physical_network', null) as string | null,
    network_type: pyGet(segment, 'network_type', undefined) as string,
    segmentation_id: pyGet(segment, 'segmentation_id', 0) as number | string | null,
    binding_type: bindingType,
    security_groups: pyGet(port, 'security_groups', []) as string[],
    allowed_address_pairs: pyGet(port, 'allowed_address_pairs', []) as PortBindingValue['allowed_address_pairs'],
    fixed_ips: pyGet(port, 'fixed_ips', []) as PortBindingValue['fixed_ips'],
    port_security_enabled: pyGet(port, 'port_security_enabled', true),
    device_id: pyGet(port, 'device_id', null) as string | null,
  };
}

function remoteGroupKeys(cfg: MechConfig, port: Port): string[] {
  return asArray<string>(pyGet(port, 'security_groups', [])).map((sg) => cfg.keys.remoteGroup(sg, port.id));
}

function fixedIpStrings(fixedIps: unknown): string[] {
  return asArray<{ ip_address: string }>(fixedIps).map((ip) => ip.ip_address);
}

/**
 * The journal ops of the reference's `bind`: the port key, then one
 * remote_group key per security group holding the port's fixed IP strings.
 */
export function bindOps(
  cfg: MechConfig,
  port: Port,
  segment: Segment,
  host: string,
  bindingType: BindingType,
): JournalOp[] {
  const value = bindingValue(port, segment, bindingType);
  const ops: JournalOp[] = [{ key: cfg.keys.port(host, port.id), value }];
  for (const key of remoteGroupKeys(cfg, port)) ops.push({ key, value: fixedIpStrings(value.fixed_ips) });
  return ops;
}

/**
 * The reference's `_gpe_remote_path`: one key per fixed IP under the port's
 * GPE directory, then the directory, only when the port has fixed IPs and the
 * segment a (truthy) segmentation id. etcd v2 deleted the directory node; in
 * etcd v3 there are no directories, so the directory becomes a prefix delete
 * of `<gpeDir>/`, which also removes IP keys the port no longer lists.
 */
function gpeDeletes(cfg: MechConfig, port: Port, host: string, segmentationId: unknown): JournalOp[] {
  const ips = pyGet(port, 'fixed_ips', []);
  if (!Array.isArray(ips) || ips.length === 0 || !truthy(segmentationId)) return [];
  const dir = cfg.keys.gpeDir(segmentationId as number | string, host, port.mac_address);
  const ops: JournalOp[] = fixedIpStrings(ips).map((ip) => ({ key: `${dir}/${ip}`, value: null }));
  ops.push({ key: `${dir}/`, value: null, prefix: true });
  return ops;
}

/**
 * The journal ops of the reference's `unbind`: remote_group deletes, the port
 * key delete, then the GPE deletes (which need the segment's segmentation id;
 * without a segment there are none).
 */
export function unbindOps(cfg: MechConfig, port: Port, host: string, segment?: Segment | null): JournalOp[] {
  const segId = segment == null ? 0 : pyGet(segment, 'segmentation_id', 0);
  const ops: JournalOp[] = remoteGroupKeys(cfg, port).map((key) => ({ key, value: null }));
  ops.push({ key: cfg.keys.port(host, port.id), value: null });
  ops.push(...gpeDeletes(cfg, port, host, segId));
  return ops;
}

/**
 * The reference's `remove_port_from_remote_groups`: deletes the remote_group
 * keys of the groups `original` had and `current` has not, in `original`'s
 * order (the reference iterates a Python set: arbitrary order).
 */
export function removeFromRemoteGroupsOps(cfg: MechConfig, original: Port | null | undefined, current: Port): JournalOp[] {
  if (original == null) return [];
  const kept = new Set(asArray<string>(pyGet(current, 'security_groups', [])));
  const left = new Set(asArray<string>(pyGet(original, 'security_groups', [])).filter((sg) => !kept.has(sg)));
  return [...left].map((sg) => ({ key: cfg.keys.remoteGroup(sg, current.id), value: null }));
}

/**
 * The reference's `check_segment`: the network type must be allowed (exact
 * membership: the reference tests a substring of its config string), and for
 * `flat` and `vlan` the host must have the segment's physnet.
 */
export function checkSegment(cfg: MechConfig, segment: Segment, host: string, physnetKnown: PhysnetKnown): boolean {
  const networkType = pyGet(segment, 'network_type', undefined);
  if (typeof networkType !== 'string' || !cfg.allowedNetworkTypes.includes(networkType)) return false;
  if (networkType === 'flat' || networkType === 'vlan') {
    const physnet = pyGet(segment, 'physical_network', null);
    if (typeof physnet !== 'string' || physnet === '') return false;
    return physnetKnown(host, physnet);
  }
  return true;
}

/** The reference's `check_vlan_transparency`: VLAN transparency is never supported. */
export function checkVlanTransparency(): boolean {
  return false;
}

/**
 * The reference's `bind_port`: refuses vnic types other than `normal`, takes
 * the first segment passing {@link checkSegment}, and gives the VIF type and
 * details. `null` when the port cannot be bound here.
 * @example bindPortDecision(cfg, port, [seg], 'compute1', () => true)
 * // { segment_id, vif_type: 'vhostuser', vif_details: { vhostuser_socket: '/tmp/<port id>', vhostuser_mode: 'server' } }
 */
export function bindPortDecision(
  cfg: MechConfig,
  port: Port,
  segments: readonly Segment[],
  host: string,
  physnetKnown: PhysnetKnown,
): BindDecision | null {
  if (pyGet(port, 'binding:vnic_type', VNIC_NORMAL) !== VNIC_NORMAL) return null;
  for (const segment of segments) {
    if (!checkSegment(cfg, segment, host, physnetKnown)) continue;
    const vif_type = vifType(port);
    const vif_details: BindDecision['vif_details'] =
      vif_type === 'vhostuser'
        ? { vhostuser_socket: path.posix.join(cfg.vhostUserDir, port.id), vhostuser_mode: 'server' }
        : {};
    return { segment_id: segment.id, vif_type, vif_details };
  }
  return null;
}

function lastLevel(levels: PortUpdate['binding_levels']) {
  return levels == null || levels.length === 0 ? null : (levels[levels.length - 1] ?? null);
}

function profileOf(port: Port | null | undefined): Record<string, unknown> {
  const p = pyGet(port, 'binding:profile', {});
  return typeof p === 'object' && p !== null ? (p as Record<string, unknown>) : {};
}

/**
 * The reference's `update_port_precommit` decision table, as journal ops and
 * whether a provisioning block must be added:
 * 1. previous binding level ours and host changed → unbind `original` from
 *    `original_host` with the previous segment;
 * 2. current binding level ours → remove the port from the remote groups it
 *    left, bind on `host`, block provisioning unless `current.status` is ACTIVE;
 * 3. (within 2) live migration completed (original profile `migrating_to` ===
 *    host, current profile without `migrating_to`) → unbind `original` from
 *    `original_host` with the current segment.
 *
 * Steps 1 and 3 can both unbind the original host; the duplicate is kept (its
 * GPE deletes use the current segment's id, which may differ). Step 3 comes
 * after the bind, so its deletes of remote_group keys the bind has just
 * written are dropped: those keys carry no host, and last-write-wins would
 * otherwise remove a migrated port from its groups.
 */
export function updatePortOps(
  cfg: MechConfig,
  ctx: PortUpdate,
  mechName = 'vpp',
): { ops: JournalOp[]; provisioningBlock: boolean } {
  const ops: JournalOp[] = [];
  const original = ctx.original ?? null;
  const originalHost = ctx.original_host ?? null;
  const hostChanged = ctx.host !== originalHost;
  const unbindPort = original ?? ctx.current;

  const prev = lastLevel(ctx.original_binding_levels);
  if (prev !== null && prev.bound_driver === mechName && hostChanged && originalHost) {
    ops.push(...unbindOps(cfg, unbindPort, originalHost, prev.bound_segment));
  }

  const cur = lastLevel(ctx.binding_levels);
  if (cur === null || cur.bound_driver !== mechName) return { ops, provisioningBlock: false };

  const bind = bindOps(cfg, ctx.current, cur.bound_segment, ctx.host, vifType(ctx.current));
  ops.push(...removeFromRemoteGroupsOps(cfg, original, ctx.current), ...bind);
  const provisioningBlock = pyGet(ctx.current, 'status', undefined) !== 'ACTIVE';

  const was = profileOf(original);
  const migrated =
    original !== null &&
    originalHost &&
    hostChanged &&
    !Object.hasOwn(profileOf(ctx.current), 'migrating_to') &&
    Object.hasOwn(was, 'migrating_to') &&
    was.migrating_to === ctx.host;
  if (migrated) {
    const written = new Set(bind.map((op) => op.key));
    ops.push(...unbindOps(cfg, original, originalHost, cur.bound_segment).filter((op) => !written.has(op.key)));
  }
  return { ops, provisioningBlock };
}

/**
 * The reference's `delete_port_precommit`: when the port has a host and
 * binding levels, unbind it with the last level's segment.
 */
export function deletePortOps(cfg: MechConfig, ctx: PortDelete): JournalOp[] {
  const levels = ctx.binding_levels;
  if (!ctx.host || levels == null || levels.length === 0) return [];
  return unbindOps(cfg, ctx.port, ctx.host, lastLevel(levels)?.bound_segment ?? null);
}
