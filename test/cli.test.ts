/**
 * The `portwire` CLI, run as a child process (`node src/bin.mjs …`) against the
 * shared test etcd, or with its own managed etcd. Waits on output lines and
 * process exits, never on sleeps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { Journal } from '../src/journal.ts';
import { keyLayout } from '../src/keys.ts';
import { createProgress, renderBar } from '../src/progress.ts';
import { RESYNC_ROLE } from '../src/resync.ts';
import { createRuntime } from '../src/runtime.ts';
import { etcdEndpoints, newClient, readPrefix, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { segment } from './helpers/workload.ts';
import { processGone } from './helpers/process.ts';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'src', 'bin.mjs');
const EXIT_TIMEOUT_MS = 45_000;

interface Cli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first stdout line matching `re`. */
  line(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves with the exit code (or the signal's name). */
  exited(timeoutMs?: number): Promise<number | string>;
}

const children = new Set<ChildProcess>();

function cli(args: string[], env: NodeJS.ProcessEnv = process.env): Cli {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exit = new Promise<number | string>((res) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      res(code ?? signal ?? -1);
    }),
  );
  const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
    Promise.race([
      p,
      new Promise<T>((_r, rej) => {
        const t = setTimeout(() => rej(new Error(`${what} not seen within ${ms} ms\nstdout:\n${out}\nstderr:\n${err}`)), ms);
        void exit.then(() => clearTimeout(t));
      }),
    ]);
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited: (ms = EXIT_TIMEOUT_MS) => within(exit, ms, 'exit'),
    line: (re, ms = EXIT_TIMEOUT_MS) =>
      within(
        new Promise<string>((res, rej) => {
          const check = (): void => {
            const hit = out.split('\n').find((l) => re.test(l));
            if (hit !== undefined) {
              child.stdout?.off('data', check);
              res(hit);
            }
          };
          child.stdout?.on('data', check);
          void exit.then(() => {
            check();
            rej(new Error(`exited before a line matching ${re}\nstdout:\n${out}\nstderr:\n${err}`));
          });
          check();
        }),
        ms,
        `line ${re}`,
      ),
  };
}

/** Runs the CLI to completion. */
async function runCli(args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const c = cli(args, env);
  const code = await c.exited();
  return { code, stdout: c.stdout(), stderr: c.stderr() };
}

/** The environment without ETCD_ENDPOINTS, so that the demo starts its own etcd. */
function managedEnv(): NodeJS.ProcessEnv {
  const { ETCD_ENDPOINTS: _drop, ...env } = process.env;
  return env;
}


function summaryField(stdout: string, name: string): string {
  const m = new RegExp(`^\\s+${name}\\s+(.*)$`, 'm').exec(stdout);
  if (!m) throw new Error(`no '${name}' in the summary:\n${stdout}`);
  return m[1];
}

let dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'portwire-cli-test-'));
  dirs.push(d);
  return d;
}

let client: Etcd3;
beforeAll(() => {
  client = newClient();
});
afterAll(() => client.close());
afterEach(async () => {
  for (const c of children) c.kill('SIGKILL');
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  dirs = [];
});

describe('portwire demo', () => {
  it('binds the ports into etcd, prints the summary and exits with --exit', async () => {
    const prefix = uniquePrefix('cli-demo');
    const dataDir = await tempDir();
    const r = await runCli([
      'demo', '--ports', '300', '--exit', '--etcd', etcdEndpoints().join(','), '--data-dir', dataDir, '--prefix', prefix,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(summaryField(r.stdout, 'operations')).toMatch(/^300 port binds/);
    expect(summaryField(r.stdout, 'journal depth')).toBe('0');
    expect(summaryField(r.stdout, 'dead letters')).toBe('0');
    expect(summaryField(r.stdout, 'leader')).toMatch(/term token \d+/);
    // the simulated agents confirmed every bound port, and the runtime announced each one
    expect(summaryField(r.stdout, 'ports active')).toMatch(/^300 of 300 /);
    expect(summaryField(r.stdout, 'bind → active')).toMatch(/^p50 [\d,]+ ms, p99 [\d,]+ ms, max [\d,]+ ms$/);
    expect(summaryField(r.stdout, 'hosts alive')).toMatch(/^20 /);
    const kvs = await readPrefix(client, `${prefix}/nodes/`);
    expect([...kvs.keys()].filter((k) => /\/ports\/[^/]+$/.test(k))).toHaveLength(300);
    expect(existsSync(dataDir)).toBe(true); // a given data dir is kept
  });

  it('stops the etcd it started and removes its temporary data dir', async () => {
    const r = await runCli(['demo', '--ports', '200', '--hosts', '5', '--exit'], managedEnv());
    expect(r.code, r.stderr).toBe(0);
    expect(summaryField(r.stdout, 'ports active')).toMatch(/^200 of 200 /);
    expect(summaryField(r.stdout, 'hosts alive')).toMatch(/^5 /);
    const pid = Number(/managed, pid (\d+)/.exec(summaryField(r.stdout, 'etcd'))?.[1]);
    expect(pid).toBeGreaterThan(0);
    expect(processGone(pid)).toBe(true);
    const dataDir = summaryField(r.stdout, 'data dir').replace(/ \(temporary.*$/, '');
    expect(existsSync(dataDir)).toBe(false);
  });

  it('keeps running after the summary and stops cleanly on SIGINT', async () => {
    const c = cli(['demo', '--ports', '200'], managedEnv());
    await c.line(/press Ctrl-C to stop/);
    const pid = Number(/managed, pid (\d+)/.exec(summaryField(c.stdout(), 'etcd'))?.[1]);
    expect(processGone(pid)).toBe(false);
    c.child.kill('SIGINT');
    expect(await c.exited(), c.stderr()).toBe(0);
    await waitFor(() => processGone(pid), { what: 'etcd gone' });
    expect(c.stderr()).toBe('');
  });

  it('stops cleanly on SIGTERM with a given etcd', async () => {
    const c = cli(['demo', '--ports', '100', '--etcd', etcdEndpoints().join(','), '--prefix', uniquePrefix('cli-term')]);
    await c.line(/press Ctrl-C to stop/);
    const dataDir = summaryField(c.stdout(), 'data dir').replace(/ \(temporary.*$/, '');
    expect(existsSync(dataDir)).toBe(true);
    c.child.kill('SIGTERM');
    expect(await c.exited(), c.stderr()).toBe(0);
    expect(existsSync(dataDir)).toBe(false);
  });

  it('serves the inspector while it runs with --inspect, and closes it on exit', async () => {
    const c = cli(['demo', '--ports', '100', '--hosts', '3', '--inspect', '--etcd', etcdEndpoints().join(','), '--prefix', uniquePrefix('cli-inspect')]);
    const url = /^inspector: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(await c.line(/^inspector: /))![1];
    await c.line(/press Ctrl-C to stop/);
    expect(summaryField(c.stdout(), 'inspector')).toBe(url);
    expect(await (await fetch(new URL('/api/port-counts', url))).json()).toEqual({ active: 100 });
    const roles = (await (await fetch(new URL('/api/roles', url))).json()) as { id: string; leader: boolean }[];
    expect(roles.find((r) => r.id === 'forwarder')?.leader).toBe(true);
    c.child.kill('SIGINT');
    expect(await c.exited(), c.stderr()).toBe(0);
    await expect(fetch(url)).rejects.toThrow();
  });

  it('refuses a bad --ports with exit code 2', async () => {
    const r = await runCli(['demo', '--ports', 'many']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--ports must be an integer/);
  });
});

describe('portwire journal', () => {
  it('dead: says there are none on an empty journal', async () => {
    const dir = await tempDir();
    await Journal.open(dir).close();
    const r = await runCli(['journal', 'dead', '--data-dir', dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/no dead letters/);
    const json = await runCli(['journal', 'dead', '--data-dir', dir, '--json']);
    expect(JSON.parse(json.stdout)).toEqual([]);
  });

  it('dead lists a dead letter and retry re-queues it', async () => {
    const dir = await tempDir();
    const journal = Journal.open(dir);
    const seq = await journal.append([{ key: '/pw/nodes/h1/ports/p1', value: { mac_address: 'fa:16:3e:00:00:01' } }]);
    expect((await journal.fail([seq], 'test', 1)).dead).toBe(true);
    await journal.close();

    const listed = await runCli(['journal', 'dead', '--data-dir', dir]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/^1\s+1\s+\S+Z\s+\/pw\/nodes\/h1\/ports\/p1\s+test$/m);
    const json = JSON.parse((await runCli(['journal', 'dead', '--data-dir', dir, '--json'])).stdout);
    expect(json).toMatchObject([{ id: 1, key: '/pw/nodes/h1/ports/p1', attempts: 1, error: 'test' }]);

    const retried = await runCli(['journal', 'retry', '--data-dir', dir]);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toMatch(/re-queued 1 dead letter$/m);

    const after = Journal.open(dir);
    try {
      expect(after.depth()).toBe(1);
      expect(after.deadLetters()).toHaveLength(0);
      expect(JSON.parse(after.read(0, 1)[0].entry.v!)).toEqual({ mac_address: 'fa:16:3e:00:00:01' });
    } finally {
      await after.close();
    }
    const depth = await runCli(['journal', 'depth', '--data-dir', dir]);
    expect(depth.stdout.trim()).toBe('1');
  });

  it('retry wakes the forwarder of a running demo on the same data dir, which applies the entry', async () => {
    const prefix = uniquePrefix('cli-retry');
    const dir = await tempDir();
    const key = `${prefix}/nodes/h1/ports/poison`;
    const journal = Journal.open(dir);
    const seq = await journal.append([{ key, value: { retried: true } }]);
    await journal.fail([seq], 'test', 1);
    await journal.close();

    const demo = cli(['demo', '--ports', '50', '--etcd', etcdEndpoints().join(','), '--data-dir', dir, '--prefix', prefix]);
    await demo.line(/press Ctrl-C to stop/);
    expect(summaryField(demo.stdout(), 'dead letters')).toBe('1');
    const r = await runCli(['journal', 'retry', '--data-dir', dir, '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/re-queued 1 dead letter$/m);
    const value = await waitFor(async () => (await readPrefix(client, key)).get(key), { what: 'retried key in etcd' });
    expect(JSON.parse(value)).toEqual({ retried: true });
    demo.child.kill('SIGINT');
    expect(await demo.exited(), demo.stderr()).toBe(0);
    const depth = await runCli(['journal', 'depth', '--data-dir', dir]);
    expect(depth.stdout.trim()).toBe('0');
  });

  it('retry of an unknown id re-queues nothing and exits 1', async () => {
    const dir = await tempDir();
    await Journal.open(dir).close();
    const r = await runCli(['journal', 'retry', '--data-dir', dir, '7']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/re-queued 0 dead letters/);
    expect(r.stderr).toMatch(/no dead letter with id 7/);
  });

  it('exits 1 with a message when there is no journal', async () => {
    const dir = join(await tempDir(), 'absent');
    const r = await runCli(['journal', 'depth', '--data-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no journal in/);
    expect(existsSync(dir)).toBe(false);
  });
});

describe('portwire resync', () => {
  const PORTS = 50;
  const portKey = /\/ports\/[^/]+$/;

  /** A data dir whose journal bound PORTS ports (one key each) into etcd under a fresh prefix. */
  async function boundJournal(name: string) {
    const prefix = uniquePrefix(name);
    const dataDir = await tempDir();
    const keys = keyLayout(prefix);
    const rt = createRuntime({ etcd: { endpoints: etcdEndpoints() }, prefix, dataDir, poolSize: 1, resync: { enabled: false } });
    await rt.start();
    try {
      await rt.transaction((tx) => {
        for (let i = 0; i < PORTS; i++) {
          tx.bindPort({
            host: `h${i % 5}`,
            segment,
            port: { id: `p-${i}`, mac_address: 'fa:16:3e:00:00:01', security_groups: [], fixed_ips: [{ subnet_id: 's', ip_address: `10.0.0.${i + 2}` }] },
          });
        }
      });
      await rt.drained({ timeoutMs: 30_000 });
    } finally {
      await rt.stop();
    }
    const flags = ['--etcd', etcdEndpoints().join(','), '--data-dir', dataDir, '--prefix', prefix];
    return { prefix, dataDir, keys, flags, nodes: () => readPrefix(client, `${keys.nodes}/`) };
  }

  it('--dry-run prints the drift without writing; a repair fixes it; a dry run afterwards finds none', async () => {
    const { keys, flags, nodes } = await boundJournal('cli-resync');
    const bound = await nodes();
    expect([...bound.keys()].filter((k) => portKey.test(k))).toHaveLength(PORTS);
    const deleted = [keys.port('h0', 'p-0'), keys.port('h1', 'p-11'), keys.port('h2', 'p-22')];
    const strays = [keys.port('h9', 'stray-1'), `${keys.nodes}/h9/stray-2`];
    for (const k of deleted) expect((await client.delete().key(k)).deleted).toBe('1');
    for (const k of strays) await client.put(k).value('{"stray":true}');
    const drifted = await nodes();

    const dry = await runCli(['resync', '--dry-run', ...flags]);
    expect(dry.code, dry.stderr).toBe(0);
    const lines = dry.stdout.trim().split('\n');
    expect(lines).toHaveLength(6);
    expect(lines.slice(0, 5).sort()).toEqual(
      [...deleted.map((k) => `missing  ${k}`), ...strays.map((k) => `extra    ${k}`)].sort(),
    );
    expect(lines[5]).toMatch(/^resync \(dry run\): revision \d+, scanned 49, missing 3, extra 2, changed 0, repaired 0, skipped 0, conflicts 0, emptied no, duration \d+ ms$/);
    expect(Object.fromEntries(await nodes())).toEqual(Object.fromEntries(drifted));

    const repair = await runCli(['resync', ...flags]);
    expect(repair.code, repair.stderr).toBe(0);
    expect(repair.stdout).toMatch(/^resync: revision \d+, scanned 49, missing 3, extra 2, changed 0, repaired 5, skipped 0, conflicts 0, emptied no, duration \d+ ms$/m);
    const after = await nodes();
    expect(Object.fromEntries(after)).toEqual(Object.fromEntries(bound));
    for (const k of strays) expect(after.has(k)).toBe(false);

    const json = await runCli(['resync', '--dry-run', '--json', ...flags]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ dryRun: true, scanned: PORTS, missing: 0, extra: 0, changed: 0, repaired: 0, differences: [] });
  });

  it('exits 1 when another process leads resync', async () => {
    const { prefix, dataDir, flags } = await boundJournal('cli-resync-busy');
    // another process's runtime on a data dir of its own, leading resync for the same prefix
    const other = createRuntime({ etcd: { endpoints: etcdEndpoints() }, prefix, dataDir: await tempDir(), poolSize: 1, forwarder: false });
    const leading = new Promise<void>((res) => other.on('leader', (e) => e.role === RESYNC_ROLE && res()));
    await other.start();
    try {
      await leading;
      const r = await runCli(['resync', ...flags, '--timeout-ms', '1500']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/another process leads resync/);
      expect(existsSync(join(dataDir, 'journal.lmdb'))).toBe(true);
    } finally {
      await other.stop();
    }
  });

  it('exits 1 without creating anything when there is no journal', async () => {
    const dir = join(await tempDir(), 'absent');
    const r = await runCli(['resync', '--dry-run', '--etcd', etcdEndpoints().join(','), '--data-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no journal in/);
    expect(existsSync(dir)).toBe(false);
  });
});

describe('portwire usage', () => {
  it('exits 2 on an unknown command', async () => {
    const r = await runCli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/);
  });

  it('exits 2 on an unknown flag or subcommand', async () => {
    const flag = await runCli(['journal', 'dead', '--bogus']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/--bogus/);
    const sub = await runCli(['journal', 'nope']);
    expect(sub.code).toBe(2);
    expect(sub.stderr).toMatch(/unknown journal command 'nope'/);
  });

  it('prints help for the CLI and for each command', async () => {
    const top = await runCli(['--help']);
    expect(top.code).toBe(0);
    for (const cmd of ['demo', 'journal dead', 'journal retry', 'journal depth', 'resync']) {
      expect(top.stdout).toContain(cmd);
      const r = await runCli([...cmd.split(' '), '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^usage: portwire ${cmd}`));
    }
  });
});

describe('progress', () => {
  const sink = (isTTY: boolean) => {
    const chunks: string[] = [];
    return { chunks, stream: { isTTY, columns: 80, write: (c: string) => chunks.push(c) > 0 } };
  };

  it('prints one line per 10 % step passed when not a TTY', () => {
    const { chunks, stream } = sink(false);
    const bar = createProgress({ total: 200, label: 'x', stream });
    for (const n of [5, 20, 21, 95, 200]) bar.update(n);
    bar.done();
    expect(chunks).toEqual(['x: 10% (20/200)\n', 'x: 40% (95/200)\n', 'x: 100% (200/200)\n']);
  });

  it('redraws one line with \\r on a TTY, at most every redrawMs', () => {
    const { chunks, stream } = sink(true);
    let t = 0;
    const bar = createProgress({ total: 10, label: 'x', stream, redrawMs: 100, now: () => t });
    bar.update(1);
    bar.update(2); // within 100 ms: not drawn
    t = 150;
    bar.update(5);
    bar.done();
    expect(chunks).toEqual([`\rx ${renderBar(1, 10)}`, `\rx ${renderBar(5, 10)}`, `\rx ${renderBar(5, 10)}`, '\n']);
    expect(renderBar(5, 10, 10)).toBe('[#####-----]  50%  5/10');
  });
});
