/**
 * What the agents announce about their hosts, kept live from the return
 * watcher's list and watch: `state/<host>/alive` (a lease-bound key) and
 * `state/<host>/physnets/<name>`. Answers the segment check without an etcd
 * round trip, and reports hosts coming and going.
 *
 * per host: unknown ──alive put──▶ alive ──alive deleted or expired──▶ dead ──alive put──▶ alive
 */
import { EventEmitter } from 'node:events';

/** Events of a {@link HostCache}. */
export interface HostCacheEvents {
  hostAlive: [{ host: string }];
  hostDead: [{ host: string }];
  /** The first list was applied. */
  synced: [];
}

interface HostRecord {
  alive: boolean;
  physnets: Set<string>;
}

/** Live cache of host liveness and physical networks. */
export class HostCache extends EventEmitter<HostCacheEvents> {
  private hosts = new Map<string, HostRecord>();
  private staging?: Map<string, HostRecord>;
  /** True once a first list has been applied. */
  synced = false;

  /** Whether `host` has a live agent. */
  isAlive(host: string): boolean {
    return this.hosts.get(host)?.alive === true;
  }

  /** Whether `host` is alive and can attach `physnet` (the reference's segment check). */
  physnetKnown(host: string, physnet: string): boolean {
    const h = this.hosts.get(host);
    return h !== undefined && h.alive && h.physnets.has(physnet);
  }

  /** Hosts with a live agent. */
  aliveHosts(): string[] {
    return [...this.hosts].filter(([, h]) => h.alive).map(([name]) => name);
  }

  /** A host's physical networks (empty when unknown). */
  physnets(host: string): string[] {
    return [...(this.hosts.get(host)?.physnets ?? [])];
  }

  /** Starts a relist: subsequent `set` calls build the new view. */
  beginList(): void {
    this.staging = new Map();
  }

  /** Ends a relist: swaps the new view in and reports the hosts that changed. */
  endList(): void {
    const next = this.staging ?? new Map<string, HostRecord>();
    this.staging = undefined;
    const prev = this.hosts;
    this.hosts = next;
    const first = !this.synced;
    this.synced = true;
    for (const [host, h] of next) if (h.alive && !prev.get(host)?.alive) this.emit('hostAlive', { host });
    for (const [host, h] of prev) if (h.alive && !next.get(host)?.alive) this.emit('hostDead', { host });
    if (first) this.emit('synced');
  }

  private record(host: string): HostRecord {
    const map = this.staging ?? this.hosts;
    let h = map.get(host);
    if (!h) {
      h = { alive: false, physnets: new Set() };
      map.set(host, h);
    }
    return h;
  }

  /** A put (`present`) or delete of `state/<host>/alive`. */
  setAlive(host: string, present: boolean): void {
    const h = this.record(host);
    if (h.alive === present) return;
    h.alive = present;
    if (this.staging) return;
    this.emit(present ? 'hostAlive' : 'hostDead', { host });
  }

  /** A put (`present`) or delete of `state/<host>/physnets/<physnet>`. */
  setPhysnet(host: string, physnet: string, present: boolean): void {
    const h = this.record(host);
    if (present) h.physnets.add(physnet);
    else h.physnets.delete(physnet);
  }
}
