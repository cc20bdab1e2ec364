/**
 * A throwaway PKI for a loopback etcd: one CA, one server certificate every
 * member of a loopback cluster can use (also as its peer certificate), client
 * certificates whose CN etcd maps to a user under `--client-cert-auth`, and,
 * for negative tests, certificates from an unrelated CA or already expired.
 * ECDSA P-256 keys, SHA-256 signatures, PEM files (keys in PKCS#8). Pure JS
 * over Node's webcrypto: no openssl binary needed.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { ValidationError } from './errors.ts';

const crypto = webcrypto as unknown as Crypto;
x509.cryptoProvider.set(crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** TLS material a client passes to etcd (the shape of `EtcdConnectionOptions.tls`). */
export interface ClientTls {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** One issued client certificate. */
export interface ClientCert {
  /** The certificate's CN: the etcd user it stands for under `--client-cert-auth`. */
  name: string;
  certFile: string;
  keyFile: string;
  /** CA of the etcd servers, this certificate and its key, ready for a client. */
  tls: ClientTls;
  /** The CA certificate (PEM) that signed this one: the unrelated CA for {@link Pki.untrustedClient}. */
  issuerCa: Buffer;
}

/** The files a managed etcd member is started with (the shape of `ManagedEtcdOptions.tls` without its flags). */
export interface ServerTlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** A PKI written by {@link createPki}. */
export interface Pki {
  readonly dir: string;
  /** `ca.crt`, the CA every member and client trusts. */
  readonly caFile: string;
  /** The CA certificate (PEM). */
  readonly ca: Buffer;
  /** Server certificate and key for SAN IP 127.0.0.1 and DNS localhost, server and client auth. */
  readonly server: ServerTlsFiles;
  /** The client certificates issued so far, by name. */
  readonly clients: ReadonlyMap<string, ClientCert>;
  /**
   * Issues a client certificate with CN `name` signed by the CA (or returns the one already issued).
   * @example const { tls } = await pki.client('portwire'); createEtcdClient({ endpoints, tls });
   */
  client(name: string): Promise<ClientCert>;
  /** A client certificate with CN `name` signed by a second, unrelated CA: etcd must refuse it. */
  untrustedClient(name: string): Promise<ClientCert>;
  /** A client certificate with CN `name` signed by the CA whose validity ended yesterday. */
  expiredClient(name: string): Promise<ClientCert>;
  /**
   * Client TLS options: the CA alone, or with the certificate and key of the
   * client `name` (issued before, by `createPki`'s `clients` or {@link Pki.client}).
   * @throws {ValidationError} when `name` was never issued
   */
  clientTls(name?: string): ClientTls;
}

/** Options of {@link createPki}. */
export interface PkiOptions {
  /** Client certificates to issue at once (CN = name). @default [] */
  clients?: string[];
  /** Validity of the CA and of every certificate it issues, in days. @default 7 */
  validityDays?: number;
}

interface Issuer {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
}

const generateKeys = (): Promise<CryptoKeyPair> =>
  crypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;

async function keyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

async function createCa(commonName: string, notBefore: Date, notAfter: Date): Promise<Issuer> {
  const keys = await generateKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${commonName}`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

interface LeafSpec {
  commonName: string;
  usages: string[];
  notBefore: Date;
  notAfter: Date;
  ips?: string[];
  dns?: string[];
}

async function issue(ca: Issuer, spec: LeafSpec): Promise<{ certPem: string; keyPem: string }> {
  const keys = await generateKeys();
  const names: x509.JsonGeneralNames = [
    ...(spec.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(spec.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(spec.usages, false),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false));
  const cert = await x509.X509CertificateGenerator.create({
    subject: `CN=${spec.commonName}`,
    issuer: ca.cert.subject,
    notBefore: spec.notBefore,
    notAfter: spec.notAfter,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: ALG,
    extensions,
  });
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey) };
}

const safeName = (name: string): string => name.replace(/[^A-Za-z0-9_.-]/g, '_');

/**
 * Creates a fresh PKI and writes it as PEM files into `dir` (created if
 * missing): `ca.crt`, `ca.key`, `server.crt`, `server.key`, and
 * `client-<name>.crt`/`.key` per client (`untrusted-…`, `expired-…` for the
 * negative ones). Keys are written with mode 0600.
 * @example
 * const pki = await createPki(dir, { clients: ['root'] });
 * const etcd = await startManagedEtcd({ tls: { ...pki.server, clientCertAuth: true } });
 * const client = createEtcdClient({ endpoints: etcd.endpoints, tls: pki.clientTls('root') });
 */
export async function createPki(dir: string, options: PkiOptions = {}): Promise<Pki> {
  const validityMs = (options.validityDays ?? 7) * DAY_MS;
  const notBefore = new Date(Date.now() - DAY_MS);
  const notAfter = new Date(Date.now() + validityMs);
  await mkdir(dir, { recursive: true });
  const write = async (file: string, pem: string, secret = false): Promise<string> => {
    const path = join(dir, file);
    await writeFile(path, pem, { mode: secret ? 0o600 : 0o644 });
    return path;
  };

  const ca = await createCa('portwire test CA', notBefore, notAfter);
  const caPem = ca.cert.toString('pem');
  const caFile = await write('ca.crt', caPem);
  await write('ca.key', await keyPem(ca.keys.privateKey), true);
  const caBuf = Buffer.from(caPem);

  const server = await issue(ca, {
    commonName: 'etcd',
    usages: [SERVER_AUTH, CLIENT_AUTH],
    notBefore,
    notAfter,
    ips: ['127.0.0.1'],
    dns: ['localhost'],
  });
  const serverFiles: ServerTlsFiles = {
    caFile,
    certFile: await write('server.crt', server.certPem),
    keyFile: await write('server.key', server.keyPem, true),
  };

  let otherCa: Promise<Issuer> | undefined;
  const clients = new Map<string, ClientCert>();
  const writeClient = async (prefix: string, name: string, signer: Issuer, from: Date, to: Date): Promise<ClientCert> => {
    const pair = await issue(signer, { commonName: name, usages: [CLIENT_AUTH], notBefore: from, notAfter: to });
    const base = `${prefix}-${safeName(name)}`;
    return {
      name,
      certFile: await write(`${base}.crt`, pair.certPem),
      keyFile: await write(`${base}.key`, pair.keyPem, true),
      tls: { ca: caBuf, cert: Buffer.from(pair.certPem), key: Buffer.from(pair.keyPem) },
      issuerCa: Buffer.from(signer.cert.toString('pem')),
    };
  };

  const pki: Pki = {
    dir,
    caFile,
    ca: caBuf,
    server: serverFiles,
    clients,
    async client(name) {
      const known = clients.get(name);
      if (known) return known;
      const issued = await writeClient('client', name, ca, notBefore, notAfter);
      clients.set(name, issued);
      return issued;
    },
    async untrustedClient(name) {
      otherCa ??= createCa('unrelated CA', notBefore, notAfter);
      return writeClient('untrusted', name, await otherCa, notBefore, notAfter);
    },
    expiredClient(name) {
      return writeClient('expired', name, ca, new Date(Date.now() - 3 * DAY_MS), new Date(Date.now() - DAY_MS));
    },
    clientTls(name) {
      if (name === undefined) return { ca: caBuf };
      const issued = clients.get(name);
      if (!issued) throw new ValidationError('name', `no client certificate issued for ${JSON.stringify(name)}`);
      return issued.tls;
    },
  };
  for (const name of options.clients ?? []) await pki.client(name);
  return pki;
}
