/**
 * Spawns and drives a runtime in a child process (test/helpers/runtime-child.ts):
 * requests with replies, the child's events with timestamps, and waits on
 * events with bounded timeouts.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { RuntimeOptions } from '../../src/options.ts';
import type { ScriptOp } from './runtime-child.ts';

/** An event the child reported, with its wall-clock time. */
export interface ChildEvent {
  event: string;
  data: any;
  t: number;
  pid: number;
}

const entry = fileURLToPath(new URL('./runtime-child.ts', import.meta.url));
const live = new Set<RuntimeChild>();

/** A runtime running in a child process. */
export class RuntimeChild {
  readonly events: ChildEvent[] = [];
  readonly exited: Promise<number | null>;
  private readonly proc: ChildProcess;
  private nextId = 1;
  private pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private listeners = new Set<() => void>();

  private constructor(readonly name: string) {
    this.proc = fork(entry, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    live.add(this);
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => {
      live.delete(this);
      for (const p of this.pending.values()) p.reject(new Error(`${name} exited`));
      this.pending.clear();
      resolve(code);
    }));
    this.proc.on('message', (m: any) => {
      if (m.event) {
        this.events.push(m);
        for (const l of this.listeners) l();
      } else if (m.id) {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.ok) p?.resolve(m.result);
        else p?.reject(Object.assign(new Error(m.error.message), m.error));
      }
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** Spawns a child and starts a runtime in it with `options`. */
  static async start(name: string, options: RuntimeOptions): Promise<RuntimeChild> {
    const child = new RuntimeChild(name);
    await child.waitForEvent((e) => e.event === 'ready', 30_000);
    await child.request({ cmd: 'start', options });
    return child;
  }

  /** Sends a request and resolves with the child's reply. */
  request(msg: Record<string, unknown>): Promise<any> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.proc.send({ ...msg, id });
    });
  }

  /** Runs scripted API calls (same-port calls in order) with `concurrency` ports at a time. */
  run(ops: ScriptOp[], concurrency = 100): Promise<number> {
    return this.request({ cmd: 'run', ops, concurrency });
  }

  drained(timeoutMs = 60_000): Promise<void> {
    return this.request({ cmd: 'drained', timeoutMs });
  }

  /** Resolves with the first event (already seen or future) matching `pred`. */
  waitForEvent(pred: (e: ChildEvent) => boolean, timeoutMs = 30_000, from = 0): Promise<ChildEvent> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.events.slice(from).find(pred);
        if (!hit) return false;
        cleanup();
        resolve(hit);
        return true;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.name}: no matching event within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  signal(sig: NodeJS.Signals): void {
    this.proc.kill(sig);
  }

  /** Stops the runtime cleanly and waits for the process to exit. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    await Promise.race([this.request({ cmd: 'stop' }).catch(() => undefined), this.exited]);
    await this.exited;
  }

  /** SIGKILLs the child (if alive) and waits for its exit. */
  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGCONT');
      this.proc.kill('SIGKILL');
    }
    await this.exited;
  }
}

/** Kills every child still alive (for afterEach/afterAll). */
export async function killAllChildren(): Promise<void> {
  await Promise.all([...live].map((c) => c.kill()));
}
