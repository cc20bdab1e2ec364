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
import { agentRole, applyRoles, CONTROLLER_ROLE } from './etcd-roles.ts';
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

/** The agent user of `host`. */
const agentUser = (host: string): string => agentRole(host);

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
  const users = [DEMO_CONTROLLER_USER, ...o.hosts.map(agentUser)];
  const pki = await createPki(o.pkiDir, { clients: users });
  const passwords = new Map(users.map((u) => [u, secret()]));
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
    await applyRoles(root, {
      prefix: o.prefix,
      controller: { user: DEMO_CONTROLLER_USER, password: passwords.get(DEMO_CONTROLLER_USER) as string, role: CONTROLLER_ROLE },
      agents: o.hosts.map((host) => ({ host, user: agentUser(host), password: passwords.get(agentUser(host)) as string })),
    });
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
    agent: (host) => connect(agentUser(host)),
  };
}
