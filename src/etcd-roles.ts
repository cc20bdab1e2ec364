/**
 * The least privilege the key layout allows, as etcd roles: what the
 * controller and each agent may read and write, as data
 * ({@link controllerPermissions}, {@link agentPermissions}), applied to a
 * cluster ({@link applyRoles}) or rendered as etcdctl commands
 * ({@link etcdctlCommands}).
 *
 * Controller (`portwire-controller`):
 * - readwrite `P/nodes/` and `P/global/`: the forwarder writes bindings and
 *   security groups; resync reads them back and repairs them.
 * - readwrite `P/election/`: each role's election key (created on a lease;
 *   revoking a lease needs write on the keys attached to it) and the never
 *   written key the txn-op limit probe reads.
 * - read `P/nodes/` … `P/state/`: the return watcher lists and watches the
 *   agents' `state/` and the bindings with one watch over that span (etcd
 *   checks a watch against the whole range; the layout has no key between).
 *
 * Agent of host H (`portwire-agent-H`): read `P/nodes/H/` and `P/global/`,
 * readwrite `P/state/H/` (its lease-held `alive` key, physnets and ports).
 *
 * etcd 3.4 caveat: the ops of a txn nested in a txn are not checked against
 * the roles (an upstream RBAC bypass, fixed in later releases); signed values
 * (`signing`) let agents tell the controller's writes from forged ones.
 */
import type { Etcd3, IPermission } from 'etcd3';
import { prefixEnd } from './etcd.ts';
import { fromEtcdError, ValidationError } from './errors.ts';
import { keyLayout } from './keys.ts';
import { validateHost } from './validate.ts';

/** An access etcd grants on a key range. */
export type EtcdPermissionType = 'read' | 'write' | 'readwrite';

/** One permission of a role: `[key, rangeEnd)`. */
export interface RolePermission {
  permission: EtcdPermissionType;
  /** First key of the range. */
  key: string;
  /** End of the range (exclusive). */
  rangeEnd: string;
  /** True when the range is every key starting with `key` (etcdctl `--prefix`). */
  prefix: boolean;
  /** What needs it, for the docs. */
  why: string;
}

/** A user to create (or update) and bind to its role. */
export interface EtcdIdentity {
  user: string;
  password: string;
  /** Role name. @default 'portwire-controller', or 'portwire-agent-<host>' */
  role?: string;
}

/** Options of {@link applyRoles} and {@link etcdctlCommands}. */
export interface RolesOptions {
  /** Key prefix. @default '/networking-vpp' */
  prefix?: string;
  /** The controller's user. */
  controller?: EtcdIdentity;
  /** One user per agent host. */
  agents?: (EtcdIdentity & { host: string })[];
}

/** The role name of the controller. */
export const CONTROLLER_ROLE = 'portwire-controller';

/** The role name of the agent of `host`. */
export function agentRole(host: string): string {
  return `portwire-agent-${host}`;
}

const dir = (key: string): string => `${key}/`;
const endOf = (key: string): string => prefixEnd(Buffer.from(key)).toString();
const onPrefix = (permission: EtcdPermissionType, key: string, why: string): RolePermission => ({
  permission,
  key,
  rangeEnd: endOf(key),
  prefix: true,
  why,
});

/**
 * The controller's permissions under `prefix`.
 * @example controllerPermissions('/networking-vpp')[0] // { permission: 'readwrite', key: '/networking-vpp/nodes/', … }
 */
export function controllerPermissions(prefix = '/networking-vpp'): RolePermission[] {
  const k = keyLayout(prefix);
  return [
    onPrefix('readwrite', dir(k.nodes), 'port bindings (forwarder writes, resync reads and repairs)'),
    onPrefix('readwrite', `${k.prefix}/global/`, 'security groups and remote groups (forwarder writes, resync reads and repairs)'),
    onPrefix('readwrite', dir(k.election), "roles' election keys on leases, and the txn-op limit probe key"),
    {
      permission: 'read',
      key: dir(k.nodes),
      rangeEnd: endOf(dir(k.state)),
      prefix: false,
      why: "agents' state/ and the bindings: the return watcher lists both and watches nodes/ … state/ with one watch",
    },
  ];
}

/**
 * The permissions of the agent of `host` under `prefix`.
 * @throws ValidationError when `host` is not a valid host name
 */
export function agentPermissions(prefix: string, host: string): RolePermission[] {
  const h = validateHost(host);
  const k = keyLayout(prefix);
  return [
    onPrefix('read', dir(`${k.nodes}/${h}`), 'its port bindings'),
    onPrefix('read', `${k.prefix}/global/`, 'security groups and remote groups'),
    onPrefix('readwrite', dir(`${k.state}/${h}`), 'its alive key (on a lease), physnets and port state'),
  ];
}

const ETCD_PERM: Record<EtcdPermissionType, IPermission['permType']> = {
  read: 'Read',
  write: 'Write',
  readwrite: 'Readwrite',
};

/** The roles of `options`: name → permissions. */
function rolesOf(options: RolesOptions): { role: string; user: EtcdIdentity; perms: RolePermission[] }[] {
  const prefix = options.prefix ?? '/networking-vpp';
  const out = [];
  if (options.controller) {
    out.push({ role: options.controller.role ?? CONTROLLER_ROLE, user: options.controller, perms: controllerPermissions(prefix) });
  }
  for (const [i, a] of (options.agents ?? []).entries()) {
    if (!a || typeof a.host !== 'string') throw new ValidationError(`agents[${i}].host`, 'is required');
    out.push({ role: a.role ?? agentRole(a.host), user: a, perms: agentPermissions(prefix, a.host) });
  }
  return out;
}

const permKey = (p: { permission: string; key: string; rangeEnd: string }) =>
  `${p.permission.toLowerCase()} ${p.key} ${p.rangeEnd}`;

/** Awaits an etcd call: undefined for an error class named in `tolerated`, any other error as portwire's. */
function etcdCall<T>(p: Promise<T>): Promise<T>;
function etcdCall<T>(p: Promise<T>, ...tolerated: [string, ...string[]]): Promise<T | undefined>;
async function etcdCall<T>(p: Promise<T>, ...tolerated: string[]): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if (tolerated.includes((err as Error)?.constructor?.name)) return undefined;
    throw fromEtcdError(err);
  }
}

/**
 * Creates or updates the roles and users of `options` through a client
 * authenticated as etcd's `root` (or allowed to manage auth). Idempotent:
 * each role ends with exactly its documented permissions (others revoked),
 * each user exists with the given password and has its role. Does not
 * enable authentication (`etcdctl auth enable`).
 * @throws ValidationError for a bad host name
 * @throws EtcdAuthError / EtcdPermissionError when `rootClient` may not manage auth
 */
export async function applyRoles(rootClient: Etcd3, options: RolesOptions): Promise<void> {
  for (const { role, user, perms } of rolesOf(options)) {
    await etcdCall(rootClient.role(role).create(), 'EtcdRoleExistsError');
    const current = await etcdCall(rootClient.role(role).permissions());
    const want = new Map(perms.map((p) => [permKey(p), p]));
    for (const c of current) {
      const k = permKey({ permission: c.permission, key: c.range.start.toString(), rangeEnd: c.range.end.toString() });
      if (want.has(k)) want.delete(k);
      else {
        await etcdCall(rootClient.auth.roleRevokePermission({ role, key: c.range.start, range_end: c.range.end }));
      }
    }
    for (const p of want.values()) {
      await etcdCall(
        rootClient.auth.roleGrantPermission({
          name: role,
          perm: { permType: ETCD_PERM[p.permission], key: Buffer.from(p.key), range_end: Buffer.from(p.rangeEnd) },
        }),
      );
    }
    const created = await etcdCall(rootClient.user(user.user).create(user.password), 'EtcdUserExistsError');
    if (!created) {
      await etcdCall(rootClient.user(user.user).setPassword(user.password));
    }
    await etcdCall(rootClient.user(user.user).addRole(role), 'EtcdRoleExistsError');
  }
}

/** Quotes `s` for a POSIX shell when needed. */
function sh(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The same roles and users as {@link applyRoles}, as etcdctl (v3 API)
 * commands for an operator; `user add` prompts for the password.
 * @example etcdctlCommands({ controller: { user: 'portwire', password: '' }, agents: [{ host: 'compute-1', user: 'agent-compute-1', password: '' }] })
 */
export function etcdctlCommands(options: RolesOptions): string[] {
  const lines: string[] = [];
  for (const { role, user, perms } of rolesOf(options)) {
    lines.push(`etcdctl role add ${sh(role)}`);
    for (const p of perms) {
      lines.push(
        p.prefix
          ? `etcdctl role grant-permission --prefix=true ${sh(role)} ${p.permission} ${sh(p.key)}`
          : `etcdctl role grant-permission ${sh(role)} ${p.permission} ${sh(p.key)} ${sh(p.rangeEnd)}`,
      );
    }
    lines.push(`etcdctl user add ${sh(user.user)}`);
    lines.push(`etcdctl user grant-role ${sh(user.user)} ${sh(role)}`);
  }
  return lines;
}
