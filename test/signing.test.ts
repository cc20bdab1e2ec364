/**
 * Signed values: the compact JWS encoding (round trip, kid, path binding,
 * tampering), the drain's size accounting of signed values, and, against the
 * real etcd with simulated agents holding the public key: every value the
 * runtime writes verifies (with an independent JOSE library) and carries
 * exactly the unsigned value; forged values are rejected by the agents and
 * never confirmed; the resync leaves correct signed values alone and repairs
 * forged ones.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compactVerify, decodeProtectedHeader } from 'jose';
import type { Etcd3 } from 'etcd3';
import { createRuntime, type Runtime, type RuntimeEvents } from '../src/runtime.ts';
import { main } from '../src/cli.ts';
import { createAgents, type AgentEvents, type Agents } from '../src/agents.ts';
import { JwsSigner, JwsVerifier, resolveSigning, signValue } from '../src/jws.ts';
import { SignatureError, ValidationError } from '../src/errors.ts';
import { Journal } from '../src/journal.ts';
import drainWindow, { OP_OVERSIZE } from '../src/drain-window.ts';
import { keyLayout, type KeyLayout } from '../src/keys.ts';
import type { RuntimeOptions } from '../src/options.ts';
import type { Port, Segment } from '../src/types.ts';
import { etcdEndpoints, newClient, readPrefix, uniquePrefix, waitFor } from './helpers/etcd.ts';
import { tempDir } from './helpers/temp.ts';
import { nextEvent } from './helpers/events.ts';

const ed = () => generateKeyPairSync('ed25519');
const ours = ed();
const other = ed();
const pem = (k: KeyObject, type: 'pkcs8' | 'spki') => k.export({ type, format: 'pem' }).toString();
const KEY_ID = 'controller-2025';

const segment: Segment = { id: 'seg-1', network_type: 'vlan', physical_network: 'physnet1', segmentation_id: 100 };
const HOSTS = ['h1', 'h2'];
const port = (i: number, sgs: string[] = ['sg-web']): Port => ({
  id: `p-${i}`,
  mac_address: `fa:16:3e:00:01:${i.toString(16).padStart(2, '0')}`,
  device_owner: 'compute:nova',
  device_id: `vm-${i}`,
  security_groups: sgs,
  fixed_ips: [{ subnet_id: 'subnet-1', ip_address: `10.0.1.${i + 1}` }],
  allowed_address_pairs: [],
});

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await Promise.resolve(cleanups.pop()!()).catch(() => undefined);
});

/** Splits a compact JWS without the code under test. */
function parts(value: string): { header: Record<string, unknown>; payload: string } {
  const [h, p, s] = value.split('.');
  expect(s).toMatch(/^[A-Za-z0-9_-]{86}$/);
  return { header: JSON.parse(Buffer.from(h, 'base64url').toString()), payload: Buffer.from(p, 'base64url').toString() };
}

describe('compact JWS encoding', () => {
  const material = resolveSigning({ privateKey: pem(ours.privateKey, 'pkcs8'), keyId: KEY_ID })!;
  const path = '/networking-vpp/nodes/h1/ports/p-1';
  const json = '{"mac_address":"fa:16:3e:00:00:01","mtu":1500,"name":"é ü ✓"}';

  it('round trip: deterministic, kid and path in the header, payload byte-exact, standard JOSE verifies it', async () => {
    const a = signValue(path, json, { privateKey: ours.privateKey, keyId: KEY_ID });
    const b = signValue(path, json, { privateKey: pem(ours.privateKey, 'pkcs8'), keyId: KEY_ID });
    expect(a).toBe(b); // Ed25519 is deterministic: same value, same bytes
    expect(parts(a).header).toEqual({ alg: 'EdDSA', kid: KEY_ID, path });
    expect(parts(a).payload).toBe(json);
    const v = new JwsVerifier(pem(ours.publicKey, 'spki')).verify(path, a);
    expect(v).toEqual({ ok: true, payload: Buffer.from(json), keyId: KEY_ID });
    const std = await compactVerify(a, ours.publicKey);
    expect(Buffer.from(std.payload).toString()).toBe(json);
    expect(std.protectedHeader).toEqual({ alg: 'EdDSA', kid: KEY_ID, path });
    const noKid = new JwsSigner(ours.privateKey).sign(path, Buffer.from(json)).toString();
    expect(decodeProtectedHeader(noKid)).toEqual({ alg: 'EdDSA', path });
    expect(new JwsVerifier(ours.privateKey).verify(path, noKid)).toEqual({ ok: true, payload: Buffer.from(json) });
  });

  it('rejects unsigned, malformed, tampered, moved, other-key and other-algorithm values', () => {
    const good = signValue(path, json, { privateKey: ours.privateKey });
    const [h, p, s] = good.split('.');
    const verifier = new JwsVerifier(ours.publicKey);
    const reason = (value: string, key = path) => {
      const r = verifier.verify(key, value);
      return r.ok ? 'ok' : r.reason;
    };
    const tamperedPayload = Buffer.from(json.replace('1500', '9000')).toString('base64url');
    const flipped = Buffer.from(s, 'base64url');
    flipped[10] ^= 1;
    const noneHeader = Buffer.from(JSON.stringify({ alg: 'none', path })).toString('base64url');
    const critHeader = Buffer.from(JSON.stringify({ alg: 'EdDSA', path, crit: ['b64'], b64: false })).toString('base64url');
    expect(reason(good)).toBe('ok');
    expect(reason(json)).toBe('unsigned');
    expect(reason('')).toBe('malformed');
    expect(reason(`${h}.${p}`)).toBe('malformed');
    expect(reason(`${h}.${p}.${s}.x`)).toBe('malformed');
    expect(reason(`${h}.${p}+.${s}`)).toBe('malformed');
    expect(reason(`${h}.${tamperedPayload}.${s}`)).toBe('signature');
    expect(reason(`${h}.${p}.${flipped.toString('base64url')}`)).toBe('signature');
    expect(reason(`${h}.${p}.${s.slice(0, 40)}`)).toBe('signature');
    expect(reason(signValue(path, json, { privateKey: other.privateKey }))).toBe('signature');
    expect(reason(good, '/networking-vpp/nodes/h2/ports/p-1')).toBe('path');
    expect(reason(`${noneHeader}.${p}.`)).toBe('algorithm');
    expect(reason(`${critHeader}.${p}.${s}`)).toBe('malformed');
    expect(() => verifier.payload(path, json)).toThrow(SignatureError);
    expect(() => verifier.payload(path, `${h}.${tamperedPayload}.${s}`)).toThrow(
      expect.objectContaining({ code: 'BAD_SIGNATURE', key: path, reason: 'signature', recoverable: false }),
    );
  });

  it('refuses keys that are not Ed25519, naming the option', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const field = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        expect(err).toBeInstanceOf(ValidationError);
        return (err as ValidationError).field;
      }
      return 'accepted';
    };
    expect(field(() => resolveSigning({ privateKey: rsa.privateKey }))).toBe('signing.privateKey');
    expect(field(() => resolveSigning({ privateKey: 'not a key' }))).toBe('signing.privateKey');
    expect(field(() => resolveSigning({ privateKey: ours.publicKey }))).toBe('signing.privateKey');
    expect(field(() => resolveSigning({ privateKey: ours.privateKey, keyId: '' }))).toBe('signing.keyId');
    expect(field(() => createRuntime({ signing: { privateKey: pem(rsa.privateKey, 'pkcs8') } }))).toBe('signing.privateKey');
    expect(field(() => createAgents({ etcd: {}, hosts: 1, verifyKey: pem(rsa.publicKey, 'spki') }))).toBe('verifyKey');
    expect(field(() => createAgents({ etcd: {}, hosts: 1, verifyKey: 'garbage' }))).toBe('verifyKey');
  });

  it('the drain window counts the signed size: a value that fits unsigned is oversize signed', async () => {
    const dir = tempDir('pw-sign-window-');
    const journal = Journal.open(dir);
    cleanups.push(() => journal.close());
    const value = { blob: 'x'.repeat(900) };
    await journal.append([{ key: path, value }]);
    const unsignedSize = Buffer.byteLength(path) + JSON.stringify(value).length + 16;
    const task = { kind: 'drainWindow' as const, path: journal.path, afterSeq: 0, maxEntries: 10, maxOps: 128, maxBytes: 1 << 20, maxOpBytes: unsignedSize + 100 };
    const plain = drainWindow(task);
    const signed = drainWindow({ ...task, signing: material });
    expect(plain.flags[0] & OP_OVERSIZE).toBe(0);
    expect(signed.flags[0] & OP_OVERSIZE).toBe(OP_OVERSIZE);
    const sent = Buffer.from(signed.values.subarray(signed.valueOffsets[0], signed.valueOffsets[1])).toString();
    expect(sent).toBe(signValue(path, JSON.stringify(value), { privateKey: ours.privateKey, keyId: KEY_ID }));
    expect(sent.length).toBeGreaterThan(JSON.stringify(value).length * 1.3);
  });
});

// ---------------------------------------------------------------- against etcd

interface Setup {
  rt: Runtime;
  agents: Agents;
  client: Etcd3;
  keys: KeyLayout;
}

async function setup(name: string, options: RuntimeOptions, verifyKey?: KeyObject | string): Promise<Setup> {
  const dataDir = tempDir(`pw-${name}-`);
  const prefix = uniquePrefix(name);
  const client = newClient();
  cleanups.push(() => client.close());
  const agents = createAgents({ etcd: { endpoints: etcdEndpoints() }, prefix, hosts: HOSTS, aliveTtlSec: 2, verifyKey });
  cleanups.push(() => agents.stop());
  await agents.start();
  const rt = createRuntime({ etcd: { endpoints: etcdEndpoints() }, prefix, dataDir, electionTtlMs: 2000, poolSize: 1, ...options });
  cleanups.push(() => rt.stop());
  // the run the resync leader starts on election must be over before a test asks for its own
  const firstRun = options.resync?.enabled !== false ? nextEvent<RuntimeEvents, 'resync'>(rt, 'resync', () => true, 20_000) : undefined;
  firstRun?.catch(() => undefined); // awaited below; a failed start() leaves no stray rejection
  await rt.start();
  await firstRun;
  return { rt, agents, client, keys: keyLayout(prefix) };
}

/** Security groups, then ports bound on the agents' hosts: port, remote-group and secgroup keys. */
async function workload(rt: Runtime, n: number): Promise<void> {
  await rt.createSecurityGroup({ id: 'sg-web' });
  await rt.createSecurityGroup({
    id: 'sg-db',
    security_group_rules: [{ id: 'r-db', security_group_id: 'sg-db', direction: 'ingress', ethertype: 'IPv4', protocol: 'tcp', port_range_min: 5432, port_range_max: 5432, remote_ip_prefix: '10.0.0.0/8' }],
  });
  for (let i = 0; i < n; i++) await rt.bindPort({ port: port(i, i % 2 ? ['sg-web', 'sg-db'] : ['sg-web']), segment, host: HOSTS[i % HOSTS.length] });
  await rt.drained();
}

/** Everything the runtime owns in etcd, keyed by the path below the prefix. */
async function owned(s: Setup): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const p of [`${s.keys.nodes}/`, `${s.keys.prefix}/global/`]) {
    for (const [k, v] of await readPrefix(s.client, p)) out.set(k.slice(s.keys.prefix.length), v);
  }
  return out;
}

const signing = { privateKey: pem(ours.privateKey, 'pkcs8'), keyId: KEY_ID };

describe('signed values in etcd', () => {
  it('every value written verifies and carries exactly the unsigned value; agents confirm the ports', async () => {
    const N = 12;
    const plain = await setup('sign-plain', { resync: { enabled: false } });
    const signed = await setup('sign-on', { signing, resync: { enabled: false } }, pem(ours.publicKey, 'spki'));
    await workload(plain.rt, N);
    await workload(signed.rt, N);
    await Promise.all(Array.from({ length: N }, (_, i) => plain.rt.whenActive(`p-${i}`, { timeoutMs: 20_000 })));
    await Promise.all(Array.from({ length: N }, (_, i) => signed.rt.whenActive(`p-${i}`, { timeoutMs: 20_000 })));
    // the agent counts a confirmation once its write is acknowledged, which may come after the runtime saw it
    await waitFor(() => signed.agents.stats().confirmed >= N, { what: 'agents counted every confirmation' });
    expect(signed.agents.stats()).toMatchObject({ confirmed: N, rejected: 0, failed: 0 });

    const want = await owned(plain);
    const got = await owned(signed);
    expect(want.size).toBe(N + N + N / 2 + 2); // ports, sg-web members, sg-db members, two groups
    expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [path, value] of got) {
      const key = `${signed.keys.prefix}${path}`;
      const std = await compactVerify(value, ours.publicKey);
      expect(std.protectedHeader).toEqual({ alg: 'EdDSA', kid: KEY_ID, path: key });
      expect(Buffer.from(std.payload).toString(), path).toBe(want.get(path));
      await expect(compactVerify(value, other.publicKey)).rejects.toThrow();
    }
    // the state the agents wrote is the same in both runs
    const state = async (s: Setup) => [...(await readPrefix(s.client, `${s.keys.state}/`)).keys()].map((k) => k.slice(s.keys.prefix.length)).sort();
    expect(await state(signed)).toEqual(await state(plain));
  });

  it('forged values (unsigned, another key, moved from another port, tampered in place) are rejected by the agent, never confirmed', async () => {
    const s = await setup('sign-forge', { signing, resync: { enabled: false } }, ours.publicKey);
    await s.rt.bindPort({ port: port(0), segment, host: 'h1' });
    await s.rt.whenActive('p-0', { timeoutMs: 20_000 });
    await waitFor(() => s.agents.stats().confirmed === 1, { what: 'p-0 confirmed' });
    const genuine = (await s.client.get(s.keys.port('h1', 'p-0')).string())!;
    const unsignedValue = Buffer.from(genuine.split('.')[1], 'base64url').toString();
    const [h, , sig] = genuine.split('.');
    const forgeries: [string, string, string][] = [
      ['f-unsigned', unsignedValue, 'unsigned'],
      ['f-otherkey', signValue(s.keys.port('h1', 'f-otherkey'), unsignedValue, { privateKey: other.privateKey, keyId: KEY_ID }), 'signature'],
      ['f-moved', genuine, 'path'],
    ];
    const rejected: AgentEvents['rejected'][0][] = [];
    s.agents.on('rejected', (e) => rejected.push(e));
    for (const [id, value] of forgeries) await s.client.put(s.keys.port('h1', id)).value(value);
    // tampering in place: the genuine key's own value with its payload changed
    const inPlace = `${h}.${Buffer.from(unsignedValue.replace('"mtu":1500', '"mtu":9000')).toString('base64url')}.${sig}`;
    await s.client.put(s.keys.port('h1', 'p-0')).value(inPlace);
    await waitFor(() => rejected.length >= forgeries.length + 1, { what: 'every forgery rejected' });
    expect(rejected.map((e) => [e.portId, e.reason])).toEqual([...forgeries.map(([id, , r]) => [id, r]), ['p-0', 'signature']]);
    expect(rejected.every((e) => e.host === 'h1' && e.key === s.keys.port('h1', e.portId) && e.detail.length > 0)).toBe(true);
    expect(s.agents.stats()).toMatchObject({ rejected: forgeries.length + 1, confirmed: 1 });

    // a signed binding written after the forgeries is confirmed: the agent has seen and passed them all
    await s.rt.bindPort({ port: port(1), segment, host: 'h1' });
    await s.rt.whenActive('p-1', { timeoutMs: 20_000 });
    const state = await readPrefix(s.client, `${s.keys.state}/h1/ports/`);
    expect([...state.keys()].map((k) => k.slice(k.lastIndexOf('/') + 1)).sort()).toEqual(['p-0', 'p-1']);
    // p-0 keeps the state of its last verified binding (mtu 1500, not acted on the tampered one)
    await waitFor(() => s.agents.agent('h1').stats().confirmedNow === 2, { what: 'p-1 confirmed' });
    expect(s.agents.agent('h1').stats()).toMatchObject({ bound: 2, confirmedNow: 2, rejected: forgeries.length + 1 });
  });

  it('resync with signing: no repair when etcd is as desired; forged values are found and rewritten signed', async () => {
    const s = await setup('sign-resync', { signing, resync: { intervalMs: 3_600_000 } }, ours.publicKey);
    await workload(s.rt, 6);
    await Promise.all(Array.from({ length: 6 }, (_, i) => s.rt.whenActive(`p-${i}`, { timeoutMs: 20_000 })));
    const clean = await s.rt.resync();
    expect(clean).toMatchObject({ missing: 0, extra: 0, changed: 0, repaired: 0, conflicts: 0 });
    expect(clean.scanned).toBe(6 + 6 + 3 + 2);

    const before = await readPrefix(s.client, `${s.keys.prefix}/`);
    const portKey = s.keys.port('h2', 'p-1');
    const sgKey = s.keys.secgroup('sg-db');
    const unsignedPort = parts(before.get(portKey)!).payload;
    const rejected = nextEvent<AgentEvents, 'rejected'>(s.agents, 'rejected', (e) => e.key === portKey);
    await s.client.put(portKey).value(unsignedPort); // unsigned
    await s.client.put(sgKey).value(signValue(sgKey, parts(before.get(sgKey)!).payload, { privateKey: other.privateKey })); // another key
    await s.client.delete().key(s.keys.remoteGroup('sg-web', 'p-2')); // missing
    expect((await rejected).reason).toBe('unsigned');

    const dry = await s.rt.resync({ dryRun: true });
    expect(dry).toMatchObject({ changed: 2, missing: 1, extra: 0, repaired: 0 });
    const confirmedAgain = nextEvent<AgentEvents, 'confirmed'>(s.agents, 'confirmed', (e) => e.portId === 'p-1');
    const repaired = await s.rt.resync();
    expect(repaired).toMatchObject({ changed: 2, missing: 1, extra: 0, repaired: 3, conflicts: 0 });
    const after = await readPrefix(s.client, `${s.keys.prefix}/`);
    for (const [k, v] of before) if (!k.startsWith(`${s.keys.state}/`) && !k.startsWith(`${s.keys.election}/`)) expect(after.get(k), k).toBe(v);
    await compactVerify(after.get(portKey)!, ours.publicKey);
    // the agent acts on the repaired (signed) binding again
    await confirmedAgain;
    expect(await s.rt.resync()).toMatchObject({ changed: 0, missing: 0, repaired: 0 });
  });
});

describe('portwire agents --verify-key', () => {
  it('confirms the signed binding, rejects the unsigned one and reports it', async () => {
    const dir = tempDir('pw-sign-cli-');
    const keyFile = join(dir, 'controller.pub.pem');
    writeFileSync(keyFile, pem(ours.publicKey, 'spki'));
    const prefix = uniquePrefix('sign-cli');
    const keys = keyLayout(prefix);
    const client = newClient();
    cleanups.push(() => client.close());
    const value = JSON.stringify({ mac_address: 'fa:16:3e:00:00:01', binding_type: 'tap', fixed_ips: [] });
    await client.put(keys.port('compute-1', 'good')).value(signValue(keys.port('compute-1', 'good'), value, signing));
    await client.put(keys.port('compute-1', 'bad')).value(value);
    let out = '';
    let err = '';
    const io = { stdout: { write: (t: string) => ((out += t), true) }, stderr: { write: (t: string) => ((err += t), true) } };
    const code = await main(['agents', '--hosts', '1', '--verify-key', keyFile, '--exit-after', '2500', '--etcd', etcdEndpoints().join(','), '--prefix', prefix], io);
    expect(code, err).toBe(0);
    expect(out).toMatch(/^agents stopped: confirmed 1, failed 0, removed 0, errors 0, rejected 1$/m);
    expect(err).toContain(`portwire agents: compute-1: rejected ${keys.port('compute-1', 'bad')} (unsigned)`);
    const state = await readPrefix(client, `${keys.state}/compute-1/ports/`);
    expect([...state.keys()]).toEqual([keys.statePort('compute-1', 'good')]);
    expect(await main(['agents', '--verify-key', join(dir, 'missing.pem'), '--exit-after', '1'], io)).not.toBe(0);
  });
});
