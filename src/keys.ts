/**
 * The etcd key layout of networking-vpp, under a configurable prefix
 * (default `/networking-vpp`). See `etcd-layout` in the README.
 */

/** Every key and key space portwire reads or writes, for one prefix. */
export interface KeyLayout {
  readonly prefix: string;
  readonly nodes: string;
  readonly state: string;
  readonly secgroups: string;
  readonly remoteGroups: string;
  readonly election: string;
  port(host: string, portId: string): string;
  secgroup(sgId: string): string;
  remoteGroup(sgId: string, portId: string): string;
  /** The directory of one group's remote-group keys, ending with `/`. */
  remoteGroupDir(sgId: string): string;
  stateAlive(host: string): string;
  statePhysnet(host: string, physnet: string): string;
  statePort(host: string, portId: string): string;
  /** The election key of a role, e.g. `forwarder`. */
  electionKey(role: string): string;
  /** The GPE directory of one port's MAC on one host, without trailing `/`. */
  gpeDir(segmentationId: number | string, host: string, mac: string): string;
}

/** Builds the key layout for `prefix` (trailing slashes removed). */
export function keyLayout(prefix = '/networking-vpp'): KeyLayout {
  const p = prefix.replace(/\/+$/, '');
  const nodes = `${p}/nodes`;
  const state = `${p}/state`;
  const secgroups = `${p}/global/secgroups`;
  const remoteGroups = `${p}/global/remote_group`;
  const election = `${p}/election`;
  const gpe = `${p}/global/networks/gpe`;
  return {
    prefix: p,
    nodes,
    state,
    secgroups,
    remoteGroups,
    election,
    port: (host, portId) => `${nodes}/${host}/ports/${portId}`,
    secgroup: (sgId) => `${secgroups}/${sgId}`,
    remoteGroup: (sgId, portId) => `${remoteGroups}/${sgId}/${portId}`,
    remoteGroupDir: (sgId) => `${remoteGroups}/${sgId}/`,
    stateAlive: (host) => `${state}/${host}/alive`,
    statePhysnet: (host, physnet) => `${state}/${host}/physnets/${physnet}`,
    statePort: (host, portId) => `${state}/${host}/ports/${portId}`,
    electionKey: (role) => `${election}/${role}`,
    gpeDir: (segId, host, mac) => `${gpe}/${segId}/${host}/${mac}`,
  };
}
