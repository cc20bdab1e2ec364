/**
 * The inspector: portwire's live visualizer, a local HTTP server (node:http
 * only) serving one page and its assets from memory, a JSON API over an
 * {@link InspectorSource}, and a Server-Sent Events stream of live updates.
 * Nothing is fetched from elsewhere: the page's Content-Security-Policy
 * allows its own origin only.
 *
 * Endpoints (GET):
 * - `/` the page; `/assets/app.js`, `/assets/charts.js`, `/assets/style.css`
 * - `/api/machines` `machines()`; `/api/layout` their laid-out charts
 * - `/api/roles` roles, each with `active` (its state paths)
 * - `/api/port-counts`; `/api/ports?state=&filter=&offset=&limit=`; `/api/ports/:id`
 * - `/api/journal` the journal now plus `series` (samples of the last minutes)
 * - `/events` SSE: `hello`, then `batch` (coalesced events) and `journal` (a sample a second)
 *
 * starting ──listen──▶ listening ──close()──▶ closed (SSE clients ended, sockets destroyed, no timer left)
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { PortwireError, ValidationError } from '../errors.ts';
import { silentLogger } from '../logger.ts';
import { Broadcaster, withActive } from './broadcaster.ts';
import { ASSETS, PAGE_CSP } from './page.ts';
import type { InspectorSource, PortQuery } from './source.ts';
import { layoutCharts, type ChartLayout } from './statechart-layout.ts';

export * from './source.ts';
export type { JournalSample } from './broadcaster.ts';
export type { ChartLayout, LayoutBox, LayoutEdge } from './statechart-layout.ts';

/** Options of {@link startInspector}. */
export interface InspectorOptions {
  /** What to show. */
  source: InspectorSource;
  /** Address to listen on; must be a loopback address unless `allowPublic`. @default '127.0.0.1' */
  host?: string;
  /** TCP port; 0 picks a free one. @default 0 */
  port?: number;
  /** Allow a non-loopback `host` (the inspector has no authentication). @default false */
  allowPublic?: boolean;
  /** @default a silent logger */
  logger?: Logger;
  /** Clock of the journal samples, epoch ms. @default Date.now */
  now?: () => number;
  /** Least time between two SSE batches. @default 100 */
  flushIntervalMs?: number;
  /** Most events in one SSE batch. @default 500 */
  maxBatch?: number;
  /** Journal sampling period. @default 1000 */
  sampleIntervalMs?: number;
  /** Journal history kept for new clients. @default 300_000 */
  historyMs?: number;
}

/** A running inspector. */
export interface Inspector {
  /** The page's URL, e.g. `http://127.0.0.1:40123/`. */
  readonly url: string;
  /** The underlying server (for tests: `listening` is false after close). */
  readonly server: Server;
  /** Ends the SSE clients, closes every socket and the server, clears every timer. Idempotent. */
  close(): Promise<void>;
}

/** Default and largest page size of `/api/ports`. */
export const PORTS_PAGE = { default: 50, max: 1000 } as const;

/** True for 127.0.0.0/8, ::1 (also IPv4-mapped) and `localhost`. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) {
    if (/^(0{0,4}:){2,7}0{0,3}1$/.test(h) || h === '::1') return true;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
    return mapped !== null && mapped[1].startsWith('127.');
  }
  return false;
}

/**
 * Validates where an inspector would listen, without opening anything (what
 * {@link startInspector} checks first; a runtime checks it before it starts).
 * @throws ValidationError `inspector.host` when the host is empty, or not a
 *   loopback address and `allowPublic` is not set; `inspector.port` when the
 *   port is not an integer from 0 to 65535
 */
export function checkInspectorAddress(a: { host: string; port: number; allowPublic: boolean }): void {
  const { host, port, allowPublic } = a;
  if (typeof host !== 'string' || host.trim() === '') throw new ValidationError('inspector.host', 'must be a non-empty string');
  if (!allowPublic && !isLoopback(host)) {
    throw new ValidationError('inspector.host', `${host} is not a loopback address (127.0.0.0/8, ::1, localhost); set allowPublic to expose the inspector`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ValidationError('inspector.port', 'must be an integer from 0 to 65535');
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

function intParam(sp: URLSearchParams, name: string, dflt: number, min: number, max: number): number {
  const raw = sp.get(name);
  if (raw === null || raw === '') return dflt;
  if (!/^\d{1,10}$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new HttpError(400, `invalid ${name}: must be an integer from ${min} to ${max}`, name);
  }
  return Number(raw);
}

function strParam(sp: URLSearchParams, name: string): string | undefined {
  const raw = sp.get(name);
  if (raw === null || raw === '') return undefined;
  if (raw.length > 256) throw new HttpError(400, `invalid ${name}: longer than 256 characters`, name);
  return raw;
}

function portQuery(sp: URLSearchParams): PortQuery {
  return {
    state: strParam(sp, 'state'),
    filter: strParam(sp, 'filter'),
    offset: intParam(sp, 'offset', 0, 0, 1e9),
    limit: intParam(sp, 'limit', PORTS_PAGE.default, 1, PORTS_PAGE.max),
  };
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': String(Buffer.byteLength(body)),
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

const json = (res: ServerResponse, status: number, value: unknown) =>
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value), { 'Cache-Control': 'no-store' });

/**
 * Starts the inspector.
 * @throws ValidationError `inspector.host` when the host is not a loopback
 *   address and `allowPublic` is not set; `inspector.port` when the port is
 *   not an integer from 0 to 65535
 * @throws PortwireError when the server cannot listen (e.g. the port is taken)
 * @example
 * const inspector = await startInspector({ source });
 * console.log(`inspector at ${inspector.url}`);
 * await inspector.close();
 */
export async function startInspector(options: InspectorOptions): Promise<Inspector> {
  const { source, host = '127.0.0.1', port = 0, allowPublic = false } = options;
  checkInspectorAddress({ host, port, allowPublic });
  const log = (options.logger ?? silentLogger()).child({ component: 'inspector' });
  const hub = new Broadcaster({
    source,
    log,
    now: options.now ?? Date.now,
    flushIntervalMs: options.flushIntervalMs,
    maxBatch: options.maxBatch,
    sampleIntervalMs: options.sampleIntervalMs,
    historyMs: options.historyMs,
  });
  let layouts: Record<string, ChartLayout> | undefined;

  const route = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'method not allowed');
    // refuse other names for this server (DNS rebinding) unless it is meant to be public
    const hostHeader = req.headers.host ?? '';
    if (!allowPublic && !isLoopback(hostHeader.replace(/:\d+$/, ''))) throw new HttpError(403, 'forbidden host');
    const url = new URL(req.url ?? '/', 'http://inspector.invalid');
    const path = url.pathname;
    const asset = ASSETS.get(path);
    if (asset) {
      send(res, 200, asset.type, asset.body, { 'Cache-Control': 'no-cache', ETag: asset.etag, ...(path === '/' ? { 'Content-Security-Policy': PAGE_CSP } : {}) });
      return;
    }
    if (path === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (path === '/events') {
      if (req.method === 'HEAD') return void res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8' }).end();
      hub.add(res);
      return;
    }
    if (path === '/api/machines') return json(res, 200, source.machines());
    if (path === '/api/layout') return json(res, 200, (layouts ??= layoutCharts(source.machines())));
    if (path === '/api/roles') return json(res, 200, source.roles().map(withActive));
    if (path === '/api/port-counts') return json(res, 200, source.portCounts());
    if (path === '/api/journal') return json(res, 200, { ...source.journal(), series: hub.series() });
    if (path === '/api/ports') return json(res, 200, source.ports(portQuery(url.searchParams)));
    if (path.startsWith('/api/ports/')) {
      let id: string;
      try {
        id = decodeURIComponent(path.slice('/api/ports/'.length));
      } catch {
        throw new HttpError(400, 'invalid port id', 'id');
      }
      const detail = source.port(id);
      if (!detail) throw new HttpError(404, `no port ${id}`);
      return json(res, 200, detail);
    }
    throw new HttpError(404, 'not found');
  };

  const server = createServer((req, res) => {
    try {
      route(req, res);
    } catch (err) {
      if (err instanceof HttpError) {
        json(res, err.status, err.field ? { error: err.message, field: err.field } : { error: err.message });
        return;
      }
      log.error({ err, url: req.url }, 'inspector request failed');
      if (!res.headersSent) json(res, 500, { error: 'internal error' });
      else res.end();
    }
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(new PortwireError(`inspector could not listen on ${host}:${port}: ${err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'inspector server error'));
  hub.start();
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  const urlHost = isIP(host) === 6 ? `[${host}]` : host;
  const url = `http://${urlHost}:${bound}/`;
  log.info({ url }, 'inspector listening');

  let closing: Promise<void> | undefined;
  return {
    url,
    server,
    close() {
      closing ??= new Promise<void>((resolve) => {
        hub.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }).then(() => log.info({ url }, 'inspector closed'));
      return closing;
    },
  };
}
