/**
 * `portwire agents`: in-process through `main` with an io object (--exit-after),
 * and as a child process stopped by SIGINT. Waits on output and etcd, never on sleeps.
 */
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main, type CliIo } from '../src/cli.ts';
import { keyLayout } from '../src/keys.ts';
import { etcdEndpoints, newClient, readPrefix, uniquePrefix, waitFor } from './helpers/etcd.ts';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'src', 'bin.mjs');

function memoryIo(): CliIo & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    stdout: { write: (s: string) => ((out += s), true) },
    stderr: { write: (s: string) => ((err += s), true) },
    out: () => out,
    err: () => err,
  };
}

const binding = JSON.stringify({
  mac_address: 'fa:16:3e:00:00:01', mtu: 1500, physnet: 'physnet1', network_type: 'flat', segmentation_id: null,
  binding_type: 'tap', security_groups: [], allowed_address_pairs: [], fixed_ips: [], port_security_enabled: true, device_id: 'vm-1',
});

let client: Etcd3;
beforeAll(() => {
  client = newClient();
});
afterAll(() => client.close());

describe('portwire agents', () => {
  it('runs the agents until --exit-after, confirming an existing binding, then prints a summary', async () => {
    const prefix = uniquePrefix('cli-agents');
    const keys = keyLayout(prefix);
    await client.put(keys.port('compute-2', 'p1')).value(binding);
    const io = memoryIo();
    const code = await main(
      ['agents', '--hosts', '2', '--physnets', 'a,b', '--style', 'calico', '--ttl', '5', '--exit-after', '1500',
        '--etcd', etcdEndpoints().join(','), '--prefix', prefix],
      io,
    );
    expect(code, io.err()).toBe(0);
    expect(io.out()).toMatch(/^agents: 2 running \(compute-1, compute-2\), style calico, prefix \/pw-test-cli-agents-\w+; press Ctrl-C to stop$/m);
    expect(io.out()).toMatch(/^agents stopped: confirmed 1, failed 0, removed 0, errors 0$/m);
    const state = await readPrefix(client, keys.state);
    expect(state.get(keys.statePort('compute-2', 'p1'))).toBe('{"status":"up"}');
    expect(state.get(keys.statePhysnet('compute-1', 'b'))).toBe('1');
    expect([...state.keys()].filter((k) => k.endsWith('/alive'))).toEqual([]);
    expect(process.listenerCount('SIGINT')).toBe(0);
  });

  it('exits 1 when etcd cannot be reached before --exit-after, printing the retried errors', async () => {
    const io = memoryIo();
    expect(await main(['agents', '--hosts', '1', '--etcd', 'http://127.0.0.1:1', '--exit-after', '400'], io)).toBe(1);
    expect(io.err()).toMatch(/^portwire agents: compute-1: alive failed, retrying in 100 ms: /m);
    expect(io.err()).toMatch(/stopped before they could start/);
    expect(io.out()).toMatch(/^agents stopped: confirmed 0/m);
  });

  it('refuses bad flags with exit code 2', async () => {
    for (const [flag, value, msg] of [
      ['--failure-rate', '1.5', /--failure-rate must be a number from 0 to 1/],
      ['--style', 'ovs', /--style must be vpp or calico/],
      ['--hosts', '0', /--hosts must be an integer/],
    ] as const) {
      const io = memoryIo();
      expect(await main(['agents', flag, value], io)).toBe(2);
      expect(io.err()).toMatch(msg);
    }
  });

  it('as a process: answers a binding written while it runs and stops cleanly on SIGINT', async () => {
    const prefix = uniquePrefix('cli-agents-sig');
    const keys = keyLayout(prefix);
    const child = spawn(process.execPath, [BIN, 'agents', '--hosts', 'h1', '--delay', '10', '--etcd', etcdEndpoints().join(','), '--prefix', prefix], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    const exited = new Promise<number | string>((res) => child.once('exit', (c, s) => res(c ?? s ?? -1)));
    try {
      await waitFor(() => /press Ctrl-C to stop/.test(out), { timeoutMs: 30_000, what: 'started line' });
      expect(await client.get(keys.stateAlive('h1')).string()).toBe('1');
      await client.put(keys.port('h1', 'p1')).value(binding);
      const value = await waitFor(() => client.get(keys.statePort('h1', 'p1')).string(), { what: 'state key' });
      expect(JSON.parse(value)).toEqual({ bind_type: 'tap', mac: 'fa:16:3e:00:00:01', iface_idx: 1 });
      child.kill('SIGINT');
      expect(await exited, err).toBe(0);
      expect(out).toMatch(/^agents stopped: confirmed 1, failed 0, removed 0, errors 0$/m);
      expect(await client.get(keys.stateAlive('h1')).string()).toBeNull();
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
