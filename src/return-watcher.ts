/**
 * The return-watcher machine provided with its implementations: a list-watch
 * of `nodes/` and `state/` (see `list-watch.ts`) feeding the host cache and
 * the port registry, and the etcd election. Every process runs the stream
 * (the host cache answers the segment check everywhere); the leader's
 * registry runs the port actors and notifies the host.
 */
import type { IKeyValue } from 'etcd3';
import type { Logger } from 'pino';
import type { EventObject } from 'xstate';
import { fromCallback } from 'xstate';
import { returnWatcherMachine } from '../machines/return-watcher.ts';
import { isRefusalCode } from '../machines/refusal.ts';
import type { PortFacts, PortStatus } from '../machines/port.ts';
import { etcdElection, type ElectionDeps } from './election.ts';
import type { HostCache } from './host-cache.ts';
import type { KeyLayout } from './keys.ts';
import { prefixEnd } from './etcd.ts';
import { listWatch, type WatchChange, type WatchFault } from './list-watch.ts';
import type { PortRegistry } from './port-registry.ts';

/** The role name of the return watcher (its election key is `election/return-watcher`). */
export const RETURN_WATCHER_ROLE = 'return-watcher';

/**
 * The status an agent's state value reports: networking-calico's
 * `{"status": "up" | "down" | "error"}`; a networking-vpp value (interface
 * properties, no status) means up; anything else (empty, unparsable, an
 * unknown status) means error.
 */
export function agentStatus(value: Buffer | string): PortStatus {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString());
  } catch {
    return 'error';
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return 'error';
  if (!('status' in parsed)) return 'up';
  const s = (parsed as { status: unknown }).status;
  return s === 'up' || s === 'down' || s === 'error' ? s : 'error';
}

/** What the return watcher needs. */
export interface ReturnWatcherDeps {
  client: ElectionDeps['client'];
  keys: KeyLayout;
  hosts: HostCache;
  ports: PortRegistry;
  election: ElectionDeps;
  log: Logger;
  callTimeoutMs: number;
  progressIntervalMs: number;
  silentMs: number;
  onFault?: (fault: WatchFault) => void;
}

type Parsed =
  | { kind: 'binding'; host: string; port: string }
  | { kind: 'state'; host: string; port: string }
  | { kind: 'alive'; host: string }
  | { kind: 'physnet'; host: string; physnet: string };

/** A string that does not share memory with the one it was cut from. */
const flat = (s: string): string => Buffer.from(s, 'utf8').toString('utf8');

/** Builds the key parser for one layout; host names are interned (100k ports share a few hosts). */
function keyParser(keys: KeyLayout): (key: string) => Parsed | undefined {
  const nodes = `${keys.nodes}/`;
  const state = `${keys.state}/`;
  const interned = new Map<string, string>();
  const intern = (h: string) => {
    let v = interned.get(h);
    if (v === undefined) interned.set(h, (v = h));
    return v;
  };
  return (key) => {
    const isNodes = key.startsWith(nodes);
    if (!isNodes && !key.startsWith(state)) return undefined;
    const rest = key.slice(isNodes ? nodes.length : state.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) return undefined;
    const host = intern(rest.slice(0, slash));
    const tail = rest.slice(slash + 1);
    if (tail.startsWith('ports/') && tail.length > 6) {
      // a flat copy: a slice would keep the whole key string alive for as long as the port is tracked
      return { kind: isNodes ? 'binding' : 'state', host, port: flat(tail.slice(6)) };
    }
    if (isNodes) return undefined;
    if (tail === 'alive') return { kind: 'alive', host };
    if (tail.startsWith('physnets/') && tail.length > 9) return { kind: 'physnet', host, physnet: tail.slice(9) };
    return undefined;
  };
}

/** `facts` with `host`'s binding or state replaced (or removed when `entry` is undefined). */
function withEntry<T extends { host: string; rev: number }>(list: T[], host: string, entry: T | undefined): T[] {
  const out = list.filter((x) => x.host !== host);
  if (entry) {
    out.push(entry);
    out.sort((a, b) => a.rev - b.rev);
  }
  return tight(out);
}

/** `list` in an array of exactly its length (a pushed-to array keeps room for 17: 100k ports notice). */
function tight<T>(list: T[]): T[] {
  return list.length === 0 ? (NO_ENTRIES as T[]) : list.slice();
}
const NO_ENTRIES: never[] = [];

/** Builds the return-watcher machine provided with etcd, the host cache and the registry. */
export function etcdReturnWatcher(deps: ReturnWatcherDeps) {
  const parse = keyParser(deps.keys);
  // after a broken stream the next one resumes from here instead of listing
  let resumeFrom: number | undefined;
  const stream = fromCallback<EventObject, { attempt: number }>(({ sendBack }) => {
    const resuming = resumeFrom;
    resumeFrom = undefined;
    let staging: Map<string, PortFacts> | undefined = resuming === undefined ? new Map() : undefined;
    if (staging) deps.hosts.beginList();
    const listKv = (kv: IKeyValue) => {
      const p = parse(kv.key.toString());
      if (!p) return;
      if (p.kind === 'alive') return deps.hosts.setAlive(p.host, true);
      if (p.kind === 'physnet') return deps.hosts.setPhysnet(p.host, p.physnet, true);
      let f = staging!.get(p.port);
      if (!f) staging!.set(p.port, (f = { bindings: [], states: [] }));
      if (p.kind === 'binding') f.bindings.push({ host: p.host, rev: Number(kv.create_revision) });
      else f.states.push({ host: p.host, rev: Number(kv.mod_revision), status: agentStatus(kv.value) });
    };
    const change = (c: WatchChange, dirty: Map<string, PortFacts>) => {
      const p = parse(c.key);
      if (!p) return;
      const put = c.type === 'put';
      if (p.kind === 'alive') return deps.hosts.setAlive(p.host, put);
      if (p.kind === 'physnet') return deps.hosts.setPhysnet(p.host, p.physnet, put);
      const f = dirty.get(p.port) ?? deps.ports.facts(p.port);
      const next =
        p.kind === 'binding'
          ? { bindings: withEntry(f.bindings, p.host, put ? { host: p.host, rev: c.createRevision } : undefined), states: f.states }
          : {
              bindings: f.bindings,
              states: withEntry(f.states, p.host, put ? { host: p.host, rev: c.modRevision, status: agentStatus(c.value) } : undefined),
            };
      dirty.set(p.port, next);
    };
    const lw = listWatch({
      client: deps.client,
      // bindings without their values (only the create revision counts), then the agents' state
      list: [
        { key: `${deps.keys.nodes}/`, end: prefixEnd(Buffer.from(`${deps.keys.nodes}/`)), keysOnly: true },
        { key: `${deps.keys.state}/`, end: prefixEnd(Buffer.from(`${deps.keys.state}/`)) },
      ],
      // one watch: nodes/ … state/ (the layout has nothing in between; other keys are ignored)
      watch: { key: `${deps.keys.nodes}/`, end: prefixEnd(Buffer.from(`${deps.keys.state}/`)) },
      resumeFrom: resuming,
      onWatching: (revision) => {
        if (resuming === undefined) return;
        deps.log.info({ revision }, 'watch resumed');
        sendBack({ type: 'LISTED', revision });
      },
      callTimeoutMs: deps.callTimeoutMs,
      progressIntervalMs: deps.progressIntervalMs,
      silentMs: deps.silentMs,
      onList: async (kvs, revision, last) => {
        for (const kv of kvs) listKv(kv);
        if (!last) return;
        for (const f of staging!.values()) {
          f.bindings = tight(f.bindings.sort((a, b) => a.rev - b.rev));
          f.states = tight(f.states.sort((a, b) => a.rev - b.rev));
        }
        deps.hosts.endList();
        const next = staging!;
        staging = undefined;
        await deps.ports.reset(next);
        deps.log.info({ revision, ports: deps.ports.size }, 'listed');
        sendBack({ type: 'LISTED', revision });
      },
      onChanges: (changes) => {
        const dirty = new Map<string, PortFacts>();
        for (const c of changes) change(c, dirty);
        for (const [port, facts] of dirty) deps.ports.apply(port, facts);
      },
      onFault: (fault) => {
        const code = 'code' in fault ? fault.code : undefined;
        const refused = isRefusalCode(code);
        // after a refusal, list again: access may come back long after the watch's revision was compacted
        if (fault.reason === 'broken' && fault.revision > 0 && !refused) resumeFrom = fault.revision;
        deps.log.warn({ fault, resumeFrom }, refused ? 'etcd refused the stream' : 'watch ended');
        deps.onFault?.(fault);
        const { reason, ...detail } = fault;
        const error = 'error' in fault ? fault.error : undefined;
        sendBack({ type: 'FAULT', fault: { reason, detail: JSON.stringify(detail), code, error } });
      },
    });
    return () => lw.close();
  });
  return returnWatcherMachine.provide({
    actors: {
      election: etcdElection({ ...deps.election, log: deps.log.child({ sub: 'election' }) }),
      stream,
    },
    actions: {
      lead: () => void deps.ports.lead(),
      follow: () => deps.ports.follow(),
    },
  });
}
