/**
 * A runtime in a child process, driven by its parent over IPC (see child.ts).
 * Messages in: { id, cmd: 'start' | 'run' | 'drained' | 'status' | 'stop', ... }.
 * Messages out: replies { id, ok, result | error } and events { event, data, t }.
 */
import { createRuntime, type Runtime } from '../../src/runtime.ts';
import type { RuntimeOptions } from '../../src/options.ts';

/** One scripted API call; calls with the same `port` run in order. */
export interface ScriptOp {
  kind: 'bindPort' | 'unbindPort' | 'updatePort' | 'deletePort';
  port: string;
  args: any;
}

let rt: Runtime | undefined;
let token: string | undefined;
const send = (m: unknown) => process.send?.(m);
const event = (name: string, data: unknown) => send({ event: name, data, t: Date.now(), pid: process.pid });

async function runScript(ops: ScriptOp[], concurrency: number): Promise<number> {
  const byPort = new Map<string, ScriptOp[]>();
  for (const op of ops) {
    const list = byPort.get(op.port) ?? [];
    list.push(op);
    byPort.set(op.port, list);
  }
  const queues = [...byPort.values()];
  let done = 0;
  let next = 0;
  const worker = async () => {
    while (next < queues.length) {
      const q = queues[next++];
      for (const op of q) {
        await (rt as any)[op.kind](op.args);
        done++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return done;
}

process.on('message', async (m: any) => {
  try {
    let result: unknown;
    switch (m.cmd) {
      case 'start':
        rt = createRuntime(m.options as RuntimeOptions);
        rt.on('leader', (d) => {
          token = d.token;
          event('leader', d);
        });
        rt.on('follower', (d) => {
          token = undefined;
          event('follower', d);
        });
        rt.on('applied', (d) => event('applied', { ...d, token }));
        rt.on('deadLettered', (d) => event('deadLettered', d));
        rt.on('recorded', (d) => event('recorded', d));
        for (const name of ['portBound', 'portUnbound', 'portStalled', 'portRecovered', 'portStatus', 'hostAlive', 'hostDead'] as const) {
          (rt.on as (n: string, fn: (d: unknown) => void) => void)(name, (d) => event(name, d));
        }
        await rt.start();
        break;
      case 'run':
        result = await runScript(m.ops, m.concurrency ?? 100);
        break;
      case 'drained':
        await rt!.drained({ timeoutMs: m.timeoutMs });
        break;
      case 'status':
        result = rt!.status();
        break;
      case 'stop':
        await rt?.stop();
        send({ id: m.id, ok: true });
        process.disconnect?.();
        return;
    }
    send({ id: m.id, ok: true, result });
  } catch (err) {
    send({ id: m.id, ok: false, error: { message: String((err as Error)?.message), name: (err as Error)?.name, field: (err as any)?.field } });
  }
});
send({ event: 'ready', t: Date.now(), pid: process.pid });
