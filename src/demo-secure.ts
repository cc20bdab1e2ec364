/**
 * The secured etcd of `portwire demo --secure`: a managed etcd with TLS
 * (client certificates required) and authentication on, a throwaway PKI, and
 * the least-privilege roles of `etcd-roles.ts` applied: one controller user
 * and one agent user per simulated host, each with a client certificate of
 * its own (CN = user) and a random password.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { createEtcdClient, type EtcdConnectionOptions } from './etcd.ts';
import { createPki } from './etcd-pki.ts';
import { agentRole, applyRoles } from './etcd-roles.ts';
import { startManagedEtcd, type ManagedEtcd } from './managed-etcd.ts';

/** The controller's etcd user in the secure demo. */
export const DEMO_CONTROLLER_USER = 'portwire';

/** Options of {@link startSecureDemoEtcd}. */
export interface SecureDemoEtcdOptions {
  /** Where the PKI is written (the caller removes it). */
  pkiDir: string;
  /** The simulated hosts: one agent user each. */
  hosts: string[];
  /** Key prefix the roles are scoped to. */
  prefix: string;
  logger?: Logger;
}

/** A running secured etcd and the connection of each identity. */
export interface SecureDemoEtcd {
  etcd: ManagedEtcd;
  /** The controller's user name (role `portwire-controller`). */
  controllerUser: string;
  /** The runtime's connection: TLS with the controller's certificate, as the controller user. */
  controller: EtcdConnectionOptions;
  /** The connection of the agent of `host`, as its own user. */
  agent(host: string): EtcdConnectionOptions;
}

const secret = (): string => randomBytes(18).toString('base64url');

/**
 * Writes a PKI into `pkiDir`, starts a managed etcd with TLS (client
 * certificates required) and authentication, and applies the controller's and
 * each host's roles through root. Stops the etcd again when a later step fails.
 * @throws {EtcdStartError} when etcd does not start
 * @throws {EtcdAuthError | EtcdPermissionError} when the roles cannot be applied
 * @example
 * const s = await startSecureDemoEtcd({ pkiDir, hosts: ['compute-000'], prefix: '/networking-vpp' });
 * const rt = createRuntime({ etcd: s.controller, dataDir });
 */
export async function startSecureDemoEtcd(o: SecureDemoEtcdOptions): Promise<SecureDemoEtcd> {
  const controller = { user: DEMO_CONTROLLER_USER, password: secret() };
  const agents = o.hosts.map((host) => ({ host, user: agentRole(host), password: secret() }));
  const identities = [controller, ...agents];
  const pki = await createPki(o.pkiDir, { clients: identities.map((i) => i.user) });
  const passwords = new Map(identities.map((i) => [i.user, i.password]));
  const etcd = await startManagedEtcd({
    tls: { ...pki.server, clientCertAuth: true },
    auth: { rootPassword: secret() },
    logger: o.logger?.child({ role: 'etcd' }),
  });
  const connect = (user: string): EtcdConnectionOptions => ({
    endpoints: etcd.endpoints,
    tls: pki.clientTls(user),
    auth: { username: user, password: passwords.get(user) as string },
  });
  const root = createEtcdClient(etcd.connection());
  try {
    await applyRoles(root, { prefix: o.prefix, controller, agents });
  } catch (err) {
    await etcd.stop();
    throw err;
  } finally {
    root.close();
  }
  return {
    etcd,
    controllerUser: DEMO_CONTROLLER_USER,
    controller: connect(DEMO_CONTROLLER_USER),
    agent: (host) => connect(agentRole(host)),
  };
}
