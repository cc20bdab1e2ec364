/**
 * The demo with `--secure` (managed etcd with TLS, client certificates and
 * authentication; least-privilege users) and `--sign` (signed values the
 * agents verify): it completes, and stops and removes everything it started,
 * also on SIGINT. Waits on output lines and exits, never on sleeps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runDemo, type DemoSummary } from '../src/demo.ts';
import { createEtcdClient } from '../src/etcd.ts';
import { EtcdPermissionError, EtcdTlsError, fromEtcdError, ValidationError } from '../src/errors.ts';
import type { ProgressStream } from '../src/progress.ts';
import { processGone } from './helpers/process.ts';
import { waitFor } from './helpers/etcd.ts';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'src', 'bin.mjs');
const TIMEOUT_MS = 45_000;

/** Live children and their exits. */
const children = new Map<ChildProcess, Promise<unknown>>();
afterEach(async () => {
  // SIGTERM first: the demo then stops the etcd it started (SIGKILL would orphan it)
  await Promise.all(
    [...children].map(async ([c, exit]) => {
      c.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise((res) => (timer = setTimeout(res, 20_000, 'late')));
      if ((await Promise.race([exit, late])) === 'late') c.kill('SIGKILL');
      clearTimeout(timer);
    }),
  );
  children.clear();
});

/** Collects what the demo writes. */
function collector(): ProgressStream & { text(): string } {
  let text = '';
  return {
    isTTY: false,
    write(s: string) {
      text += s;
      return true;
    },
    text: () => text,
  } as ProgressStream & { text(): string };
}

/** The temporary directory named in the summary's data dir. */
const tempDirOf = (s: DemoSummary): string => s.dataDir.replace(/ \(temporary.*$/, '');

/** `portwire demo …` as a child process: its output, a wait for a line, its exit. */
function demoChild(args: string[]) {
  const child = spawn(process.execPath, [BIN, 'demo', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exit = new Promise<number | string>((res) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      res(code ?? signal ?? -1);
    }),
  );
  children.set(child, exit);
  const bounded = <T>(p: Promise<T>, what: string): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_r, rej) => {
      timer = setTimeout(() => rej(new Error(`${what} not seen within ${TIMEOUT_MS} ms\nstdout:\n${out}\nstderr:\n${err}`)), TIMEOUT_MS);
    });
    return Promise.race([p, limit]).finally(() => clearTimeout(timer));
  };
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited: () => bounded(exit, 'exit'),
    line: (re: RegExp) =>
      bounded(
        new Promise<void>((res, rej) => {
          const check = (): void => {
            if (out.split('\n').some((l) => re.test(l))) {
              child.stdout.off('data', check);
              res();
            }
          };
          child.stdout.on('data', check);
          void exit.then(() => rej(new Error(`exited before ${re}\nstdout:\n${out}\nstderr:\n${err}`)));
          check();
        }),
        `line ${re}`,
      ),
  };
}

function summaryField(stdout: string, name: string): string {
  const m = new RegExp(`^\\s+${name}\\s+(.*)$`, 'm').exec(stdout);
  if (!m) throw new Error(`no '${name}' in the summary:\n${stdout}`);
  return m[1];
}

/** What a read of `key` with `options` raises (undefined when allowed), converted as portwire converts it. */
async function refusalOf(options: Parameters<typeof createEtcdClient>[0], key = '/networking-vpp/state/x'): Promise<unknown> {
  const client = createEtcdClient({ ...options, callTimeoutMs: 3000 });
  try {
    await client.get(key).string();
    return undefined;
  } catch (err) {
    return fromEtcdError(err);
  } finally {
    client.close();
  }
}

describe('portwire demo --secure --sign', () => {
  it('completes over TLS and auth with signed values, then stops its etcd and removes its temporary directory', async () => {
    const out = collector();
    const { summary, interrupted } = await runDemo({ ports: 200, hosts: 3, exit: true, secure: true, sign: true, out, inFlight: 100 });
    expect(interrupted).toBe(false);
    expect(summary).toBeDefined();
    const s = summary as DemoSummary;
    expect(s).toMatchObject({ operations: 200, active: 200, journalDepth: 0, deadLetters: 0, hostsAlive: 3 });
    expect(s.security).toEqual({ tls: true, auth: true, controllerUser: 'portwire' });
    // every binding reached an agent verifying signatures, and none was refused
    expect(s.signing).toEqual({ rejected: 0 });
    expect(s.etcd.endpoints.every((e) => e.startsWith('https://'))).toBe(true);
    expect(out.text()).toMatch(/^ {2}etcd security {4}TLS \(client certificates required\), auth on; controller user portwire/m);
    expect(out.text()).toMatch(/^ {2}signed values {4}Ed25519; agents rejected 0$/m);
    expect(s.etcd.managedPid).toBeGreaterThan(0);
    expect(processGone(s.etcd.managedPid as number)).toBe(true);
    expect(existsSync(tempDirOf(s))).toBe(false);
  });

  it('runs until SIGINT with etcd refusing a missing certificate and another host\'s reads, then cleans up', async () => {
    const c = demoChild(['--secure', '--sign', '--ports', '60', '--hosts', '2']);
    await c.line(/press Ctrl-C to stop/);
    const stdout = c.stdout();
    expect(summaryField(stdout, 'ports active')).toMatch(/^60 of 60 /);
    expect(summaryField(stdout, 'signed values')).toBe('Ed25519; agents rejected 0');
    const [, pidText, endpoint] = /managed, pid (\d+), (https:\/\/\S+)/.exec(summaryField(stdout, 'etcd')) ?? [];
    const pid = Number(pidText);
    const tempDir = summaryField(stdout, 'data dir').replace(/ \(temporary.*$/, '');
    const pkiDir = join(tempDir, 'etcd-pki');
    // one client certificate per identity: the controller and each host's agent
    expect(readdirSync(pkiDir).filter((f) => /^client-.*\.crt$/.test(f)).sort()).toEqual([
      'client-portwire-agent-compute-000.crt',
      'client-portwire-agent-compute-001.crt',
      'client-portwire.crt',
    ]);
    const ca = readFileSync(join(pkiDir, 'ca.crt'));
    const noCert = await refusalOf({ endpoints: [endpoint], tls: { ca } });
    expect(noCert).toBeInstanceOf(EtcdTlsError);
    expect((noCert as Error).message).toMatch(/client certificate/);
    // a certificate is an identity of its own under --client-cert-auth (CN = user): an agent's reads only its host
    const agentTls = {
      ca,
      cert: readFileSync(join(pkiDir, 'client-portwire-agent-compute-000.crt')),
      key: readFileSync(join(pkiDir, 'client-portwire-agent-compute-000.key')),
    };
    expect(await refusalOf({ endpoints: [endpoint], tls: agentTls }, '/networking-vpp/nodes/compute-000/ports/x')).toBeUndefined();
    const other = await refusalOf({ endpoints: [endpoint], tls: agentTls }, '/networking-vpp/nodes/compute-001/ports/x');
    expect(other).toBeInstanceOf(EtcdPermissionError);

    c.child.kill('SIGINT');
    expect(await c.exited(), c.stderr()).toBe(0);
    await waitFor(() => processGone(pid), { what: 'etcd gone' });
    expect(existsSync(tempDir)).toBe(false);
  });

  it('refuses --secure with --etcd', async () => {
    const c = demoChild(['--secure', '--etcd', 'http://127.0.0.1:2379']);
    expect(await c.exited()).toBe(2);
    expect(c.stderr()).toMatch(/--secure cannot be combined with --etcd/);
    await expect(runDemo({ secure: true, etcd: ['http://127.0.0.1:2379'], exit: true })).rejects.toThrow(ValidationError);
  });
});
