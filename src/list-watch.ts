/**
 * A consistent list of key prefixes at one revision, then a watch of the
 * same prefixes from the next revision, on a raw gRPC watch stream of its own
 * (etcd3's Watcher hides compaction and stalls; see DESIGN.md pitfalls).
 *
 * listing ──listed──▶ watching ──compacted | broken | silent | reset──▶ ended (onFault)
 * (resuming ──created──▶ watching, when started with `resumeFrom`)
 *
 * A stream is used once. After a broken stream (e.g. etcd restarted) the
 * owner may resume from the last revision it saw; after any other fault (or
 * when resuming meets a compacted revision) it must list again. Silence is
 * detected by asking etcd for a progress report every `progressIntervalMs`;
 * no answer of any kind within `silentMs` is a silent (stalled) watch.
 * An etcd whose current revision is below one already seen lost its data
 * (wiped, or restored from an older backup): a watch resumed there would wait
 * for revisions that mean something else, so it ends as `reset` (a member
 * lagging behind the one seen before can look the same for a moment: the
 * relist that follows is then merely redundant).
 */
import type { Etcd3, IKeyValue, IWatchResponse } from 'etcd3';
import { fromEtcdError } from './errors.ts';
import { deadline } from './etcd.ts';

/** One change seen by the watch. */
export interface WatchChange {
  type: 'put' | 'delete';
  key: string;
  /** Raw value (empty for a delete). */
  value: Buffer;
  createRevision: number;
  modRevision: number;
}

/** Why a watch ended; `code` is the portwire error code of the failure (e.g. `ETCD_PERMISSION`). */
export type WatchFault =
  | { reason: 'compacted'; compactRevision: number }
  | { reason: 'broken'; error: string; revision: number; code?: string }
  | { reason: 'silent'; silentMs: number }
  | { reason: 'reset'; revision: number; etcdRevision: number }
  | { reason: 'list-failed'; error: string; code?: string };

/** Options of {@link listWatch}. */
export interface ListWatchOptions {
  client: Etcd3;
  /** The ranges listed (`[key, end)`, values left out with `keysOnly`), all at one revision. */
  list: ListRange[];
  /** The range watched: it must cover the listed ones. */
  watch: { key: string; end: Buffer };
  /** Skip the list and watch from this revision + 1 (after a broken stream). */
  resumeFrom?: number;
  /** Called when watching, with the revision the watch continues from. */
  onWatching?(revision: number): void;
  /**
   * One page of the listed keys, all at `revision`; `last` on the final call
   * (which may carry no keys). All pages come before any change.
   */
  onList(kvs: IKeyValue[], revision: number, last: boolean): void | Promise<void>;
  /** Changes of one watch response, in revision order; `revision` is the last change's. */
  onChanges(changes: WatchChange[], revision: number): void;
  /** The stream ended; list again to go on. Called at most once, never after `close()`. */
  onFault(fault: WatchFault): void;
  /** Keys per range page. @default 5000 */
  pageSize?: number;
  /** Deadline of one range call. @default 5000 */
  callTimeoutMs?: number;
  /** How often to ask for a progress report. @default 2000 */
  progressIntervalMs?: number;
  /** No message at all for this long means a silent watch. @default 3 × progressIntervalMs */
  silentMs?: number;
  now?: () => number;
}

/** A running list-watch. */
export interface ListWatch {
  /** Ends the stream; no callback runs afterwards. */
  close(): void;
}

interface RawStream {
  write(msg: object): boolean;
  on(event: 'data', fn: (res: IWatchResponse) => void): RawStream;
  on(event: 'error', fn: (err: Error) => void): RawStream;
  on(event: 'end', fn: () => void): RawStream;
  cancel(): void;
  end(): void;
}

/** A key range to list: `[key, end)`, without values when `keysOnly`. */
export interface ListRange {
  key: string;
  end: Buffer;
  keysOnly?: boolean;
}

/** A raw gRPC watch stream of its own (etcd3 keeps `watchClient` out of its types). */
function openWatchStream(client: Etcd3): Promise<RawStream> {
  return (client as unknown as { watchClient: { watch(): Promise<RawStream> } }).watchClient.watch();
}

/**
 * Ends a watch stream this process no longer wants: half-closes it, then
 * cancels the call. etcd3 reports an error of a stream that is still
 * writable to the member's fault handling; the client-side CANCELLED of a
 * plain `cancel()` would count as a failure of the member and make etcd3
 * close every gRPC client of that member. Their channels then drop the
 * member's connection under the calls in flight (over TLS a call whose
 * frames the server had not read yet comes back refused, and its retry finds
 * the channel closed). Ending the write side first makes the cancellation
 * the owner's own business.
 */
function cancelStream(s: RawStream): void {
  try {
    s.end();
    s.cancel();
  } catch {
    // already ended
  }
}

/** The changes of one watch response. */
function changesOf(res: IWatchResponse): WatchChange[] {
  return res.events.map((ev) => ({
    type: ev.type === 'Delete' || (ev.type as unknown) === 1 ? 'delete' : 'put',
    key: ev.kv.key.toString(),
    value: ev.kv.value,
    createRevision: Number(ev.kv.create_revision),
    modRevision: Number(ev.kv.mod_revision),
  }));
}

/**
 * Reads every key of `ranges` at one revision, page by page.
 * @returns the revision of the read
 */
export async function listRanges(
  client: Etcd3,
  ranges: ListRange[],
  onPage: (kvs: IKeyValue[], revision: number) => void,
  options: { pageSize?: number; callTimeoutMs?: number } = {},
): Promise<number> {
  const pageSize = options.pageSize ?? 5000;
  const timeout = options.callTimeoutMs ?? 5000;
  let revision: number | undefined;
  for (const range of ranges) {
    let key = Buffer.from(range.key);
    for (;;) {
      let res;
      try {
        res = await client.kv.range(
          { key, range_end: range.end, limit: pageSize, revision, keys_only: range.keysOnly === true },
          deadline(timeout),
        );
      } catch (err) {
        throw fromEtcdError(err, { access: 'read', range: range.key });
      }
      revision ??= Number(res.header.revision);
      if (res.kvs.length > 0) onPage(res.kvs, revision);
      if (!res.more || res.kvs.length === 0) break;
      key = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
    }
  }
  return revision ?? 0;
}

/**
 * Lists `prefixes` at one revision and watches them from the next. Every
 * fault ends the stream with one `onFault` call.
 */
export function listWatch(o: ListWatchOptions): ListWatch {
  const now = o.now ?? Date.now;
  const progressMs = o.progressIntervalMs ?? 2000;
  const silentMs = o.silentMs ?? 3 * progressMs;
  let closed = false;
  let stream: RawStream | undefined;
  let timer: NodeJS.Timeout | undefined;
  let lastHeard = now();
  let revision = o.resumeFrom ?? 0;

  const end = (fault?: WatchFault) => {
    if (closed) return;
    closed = true;
    if (timer) clearInterval(timer);
    if (stream) {
      const s = stream;
      stream = undefined;
      cancelStream(s);
    }
    if (fault) o.onFault(fault);
  };
  /** Ends with `err` (as a portwire error: its message and code) as the reason's fault. */
  const fail = (reason: 'list-failed' | 'broken', err: unknown) => {
    const e = fromEtcdError(err);
    end(reason === 'list-failed' ? { reason, error: e.message, code: e.code } : { reason, error: e.message, revision, code: e.code });
  };

  const start = async () => {
    if (o.resumeFrom === undefined) {
      try {
        revision = await listRanges(o.client, o.list, (kvs, rev) => void (closed || o.onList(kvs, rev, false)), o);
      } catch (err) {
        fail('list-failed', err);
        return;
      }
      if (closed) return;
      // the watch starts once the listed state is in place
      await o.onList([], revision, true);
      if (closed) return;
    }
    let s: RawStream;
    try {
      s = await openWatchStream(o.client);
    } catch (err) {
      fail('broken', err);
      return;
    }
    if (closed) {
      cancelStream(s);
      return;
    }
    stream = s;
    lastHeard = now();
    s.on('data', (res) => {
      if (closed) return;
      lastHeard = now();
      if (res.canceled) {
        const compactRevision = Number(res.compact_revision);
        if (compactRevision > 0) {
          end({ reason: 'compacted', compactRevision });
          return;
        }
        // etcd checks a watch's permission when it is created and cancels it with the reason
        const refusal = fromEtcdError(new Error(res.cancel_reason || 'no reason'), { access: 'read', range: o.watch.key });
        end({ reason: 'broken', error: `watch canceled: ${refusal.message}`, revision, code: refusal.code });
        return;
      }
      const etcdRevision = Number(res.header?.revision);
      if (etcdRevision < revision) {
        end({ reason: 'reset', revision, etcdRevision });
        return;
      }
      if (res.created) o.onWatching?.(revision);
      if (res.events.length === 0) return;
      const changes = changesOf(res);
      // a revision's events never straddle two responses: resuming after the last one is exact
      revision = changes[changes.length - 1].modRevision;
      o.onChanges(changes, revision);
    });
    s.on('error', (err) => fail('broken', err));
    s.on('end', () => end({ reason: 'broken', error: 'watch stream ended', revision }));
    s.write({
      create_request: { key: Buffer.from(o.watch.key), range_end: o.watch.end, start_revision: revision + 1 },
    });
    timer = setInterval(() => {
      const quiet = now() - lastHeard;
      if (quiet > silentMs) {
        end({ reason: 'silent', silentMs: quiet });
        return;
      }
      stream?.write({ progress_request: {} });
    }, progressMs);
  };

  void start();
  return { close: () => end() };
}

/** Handlers of {@link watchRange}. */
export interface WatchRangeHandlers {
  onChanges(changes: WatchChange[]): void;
  /**
   * The stream ended: `canceled`, `compacted`, `reset` (etcd's revision is
   * below `startRevision - 1`: its data was lost, see {@link listWatch}), or
   * the error of a broken stream; called at most once, never after `close()`.
   */
  onEnd(reason: string): void;
}

/**
 * A plain watch of `[key, end)` (one key when `end` is absent) from
 * `startRevision`, on a raw stream of its own: no shared watch manager whose
 * bookkeeping can throw on a late response for a cancelled watch.
 */
export function watchRange(
  client: Etcd3,
  range: { key: string; end?: Buffer; startRevision: number },
  handlers: WatchRangeHandlers,
): ListWatch {
  let closed = false;
  let stream: RawStream | undefined;
  const end = (reason?: string) => {
    if (closed) return;
    closed = true;
    if (stream) cancelStream(stream);
    if (reason) handlers.onEnd(reason);
  };
  void openWatchStream(client).then(
    (s) => {
      if (closed) return cancelStream(s);
      stream = s;
      s.on('data', (res) => {
        if (closed) return;
        if (res.canceled) return end(Number(res.compact_revision) > 0 ? 'compacted' : 'canceled');
        if (Number(res.header?.revision) < range.startRevision - 1) return end('reset');
        if (res.events.length === 0) return;
        handlers.onChanges(changesOf(res));
      });
      s.on('error', (err) => end(fromEtcdError(err).message));
      s.on('end', () => end('watch stream ended'));
      s.write({
        create_request: { key: Buffer.from(range.key), range_end: range.end, start_revision: range.startRevision },
      });
    },
    (err: unknown) => end(fromEtcdError(err).message),
  );
  return { close: () => end() };
}

