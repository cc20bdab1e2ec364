/**
 * A loopback TCP proxy in front of etcd, to fault the path between a runtime
 * and etcd without touching etcd itself:
 *
 * open ──pause()──▶ paused (connections stay up, no byte moves) ──resume()──▶ open
 * open ──cut()──▶ cut (connections reset, new ones refused) ──restore()──▶ open
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

/** A running proxy. */
export interface TcpProxy {
  /** Client URL of the proxy, e.g. `http://127.0.0.1:40123`. */
  readonly url: string;
  pause(): void;
  resume(): void;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

/** Starts a proxy to `target` (`http://host:port`) on a free loopback port. */
export async function startTcpProxy(target: string): Promise<TcpProxy> {
  const { hostname, port } = new URL(target);
  const pairs = new Set<[Socket, Socket]>();
  let paused = false;
  let refusing = false;
  const server: Server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(port), hostname);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
    if (paused) {
      client.pause();
      upstream.pause();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('proxy has no address');
  const each = (fn: (s: Socket) => void) => {
    for (const [a, b] of pairs) {
      fn(a);
      fn(b);
    }
  };
  return {
    url: `http://127.0.0.1:${address.port}`,
    pause() {
      paused = true;
      // unpipe so that buffered bytes stay put, then stop reading
      each((s) => s.pause());
      for (const [a, b] of pairs) {
        a.unpipe(b);
        b.unpipe(a);
      }
    },
    resume() {
      paused = false;
      for (const [a, b] of pairs) {
        a.pipe(b);
        b.pipe(a);
      }
      each((s) => s.resume());
    },
    cut() {
      refusing = true;
      each((s) => s.resetAndDestroy());
      pairs.clear();
    },
    restore() {
      refusing = false;
    },
    async close() {
      refusing = true;
      each((s) => s.destroy());
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
