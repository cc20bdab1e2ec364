/**
 * The live half of the inspector: the Server-Sent Events clients, the event
 * coalescing and the journal sampler.
 *
 * Events from the source are buffered and pushed as one `batch` message at
 * most every `flushIntervalMs`; a batch holds at most `maxBatch` events (role,
 * leader and host events first, then the newest port events); port events
 * that do not fit are dropped and counted, and the batch then carries the
 * authoritative port counts so that the page stays exact without seeing every
 * move. A client whose socket is congested is skipped (its drops are counted
 * for it) until the socket drains.
 *
 * The journal is sampled every `sampleIntervalMs` into a ring buffer covering
 * `historyMs`; each sample is pushed as a `journal` message, and a new client
 * gets the whole series (and the roles and counts) in a `hello` message.
 *
 * stopped ──start()──▶ running ──close()──▶ closed (timers cleared, unsubscribed, clients ended)
 */
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { activePaths, type InspectorEvent, type InspectorRole, type InspectorSource } from './source.ts';

/** One journal sample. `rate` is keys applied per second since the previous sample. */
export interface JournalSample {
  at: number;
  depth: number;
  rate: number;
  appliedKeys: number;
  deadLetters: number;
}

/** Options of {@link Broadcaster}. */
export interface BroadcasterOptions {
  source: InspectorSource;
  log: Logger;
  /** Clock of the journal samples (epoch ms). */
  now: () => number;
  /** Least time between two batches. @default 100 */
  flushIntervalMs?: number;
  /** Most events in one batch. @default 500 */
  maxBatch?: number;
  /** Journal sampling period. @default 1000 */
  sampleIntervalMs?: number;
  /** How much journal history is kept and sent to new clients. @default 300_000 (5 minutes) */
  historyMs?: number;
}

interface Client {
  res: ServerResponse;
  congested: boolean;
  dropped: number;
}

/** A role as sent to the page: with the state paths it is in. */
export type WireRole = InspectorRole & { active: string[] };

/** Adds the active state paths to a role (or role event), for the page. */
export function withActive<T extends { state: unknown }>(r: T): T & { active: string[] } {
  return { ...r, active: activePaths(r.state) };
}

/** SSE fan-out, coalescing and journal sampling; see the file comment. */
export class Broadcaster {
  private readonly clients = new Set<Client>();
  private readonly others: InspectorEvent[] = [];
  private ports: InspectorEvent[] = [];
  private dropped = 0;
  private flushTimer?: NodeJS.Timeout;
  private sampleTimer?: NodeJS.Timeout;
  private lastFlush = -Infinity;
  private unsubscribe?: () => void;
  private readonly history: JournalSample[] = [];
  private readonly flushIntervalMs: number;
  private readonly maxBatch: number;
  private readonly sampleIntervalMs: number;
  private readonly historySize: number;

  constructor(private readonly o: BroadcasterOptions) {
    this.flushIntervalMs = o.flushIntervalMs ?? 100;
    this.maxBatch = o.maxBatch ?? 500;
    this.sampleIntervalMs = o.sampleIntervalMs ?? 1000;
    this.historySize = Math.max(1, Math.ceil((o.historyMs ?? 300_000) / this.sampleIntervalMs));
  }

  /** Subscribes to the source and starts sampling the journal. */
  start(): void {
    this.unsubscribe = this.o.source.subscribe((e) => this.onEvent(e));
    this.sample();
    this.sampleTimer = setInterval(() => this.sample(), this.sampleIntervalMs);
  }

  /** The journal samples kept, oldest first. */
  series(): JournalSample[] {
    return [...this.history];
  }

  /** Connected SSE clients. */
  get size(): number {
    return this.clients.size;
  }

  /** Takes over `res` as an SSE stream: headers, a `hello` message, then live messages. */
  add(res: ServerResponse): void {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.socket?.setNoDelay(true);
    const client: Client = { res, congested: false, dropped: 0 };
    this.clients.add(client);
    res.on('close', () => this.clients.delete(client));
    // a congested client missed messages: once its socket drains, it gets a fresh hello
    res.on('drain', () => {
      if (!client.congested) return;
      client.congested = false;
      client.dropped = 0;
      this.write(client, this.hello());
    });
    this.write(client, `retry: 2000\n${this.hello()}`);
  }

  /** The `hello` message: everything the page shows besides the charts and the port list. */
  private hello(): string {
    const { source } = this.o;
    const hello = {
      series: this.history,
      roles: source.roles().map(withActive),
      counts: source.portCounts(),
      journal: source.journal(),
    };
    return `event: hello\ndata: ${JSON.stringify(hello)}\n\n`;
  }

  /** Stops timers and the subscription, ends every client. Idempotent. */
  close(): void {
    clearTimeout(this.flushTimer);
    clearInterval(this.sampleTimer);
    this.flushTimer = this.sampleTimer = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    for (const c of this.clients) c.res.end();
    this.clients.clear();
    this.others.length = 0;
    this.ports = [];
  }

  private onEvent(e: InspectorEvent): void {
    if (this.clients.size === 0) return;
    if (e.kind === 'port') {
      this.ports.push(e);
      // keep at most 2 × maxBatch buffered: amortised O(1) per event
      if (this.ports.length >= 2 * this.maxBatch) {
        this.dropped += this.ports.length - this.maxBatch;
        this.ports = this.ports.slice(-this.maxBatch);
      }
    } else {
      this.others.push(e);
      if (this.others.length > 20 * this.maxBatch) {
        const n = this.others.length - 10 * this.maxBatch;
        this.others.splice(0, n);
        this.dropped += n;
      }
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.flushTimer || !this.unsubscribe) return;
    const wait = Math.max(0, this.lastFlush + this.flushIntervalMs - performance.now());
    this.flushTimer = setTimeout(() => this.flush(), wait);
  }

  private flush(): void {
    this.flushTimer = undefined;
    this.lastFlush = performance.now();
    const events = this.others.splice(0, this.maxBatch);
    const room = this.maxBatch - events.length;
    const takePorts = Math.min(room, this.ports.length);
    this.dropped += this.ports.length - takePorts;
    const portEvents = takePorts > 0 ? this.ports.slice(-takePorts) : [];
    this.ports = [];
    const dropped = this.dropped;
    this.dropped = 0;
    const wire = [...events, ...portEvents].map((e) => (e.kind === 'role' ? withActive(e) : e));
    let counts: Record<string, number> | undefined;
    if (portEvents.length > 0 || dropped > 0) {
      try {
        counts = this.o.source.portCounts();
      } catch (err) {
        this.o.log.warn({ err }, 'inspector source failed');
      }
    }
    const body = JSON.stringify({ events: wire, counts }).slice(1);
    for (const c of this.clients) {
      const d = dropped + c.dropped;
      if (c.congested) {
        c.dropped += dropped + wire.length;
        continue;
      }
      c.dropped = 0;
      this.write(c, `event: batch\ndata: {"dropped":${d},${body}\n\n`);
    }
    if (this.others.length > 0) this.schedule();
  }

  private sample(): void {
    let j;
    try {
      j = this.o.source.journal();
    } catch (err) {
      this.o.log.warn({ err }, 'inspector source failed');
      return;
    }
    const at = this.o.now();
    const prev = this.history[this.history.length - 1];
    let rate = 0;
    if (prev) {
      const dt = at > prev.at ? (at - prev.at) / 1000 : this.sampleIntervalMs / 1000;
      rate = Math.max(0, (j.appliedKeys - prev.appliedKeys) / dt);
    }
    const s: JournalSample = { at, depth: j.depth, rate: Math.round(rate * 10) / 10, appliedKeys: j.appliedKeys, deadLetters: j.deadLetters };
    this.history.push(s);
    if (this.history.length > this.historySize) this.history.splice(0, this.history.length - this.historySize);
    if (this.clients.size === 0) return;
    const msg = `event: journal\ndata: ${JSON.stringify(s)}\n\n`;
    for (const c of this.clients) if (!c.congested) this.write(c, msg);
  }

  private write(c: Client, msg: string): void {
    if (!c.res.write(msg)) c.congested = true;
  }
}
