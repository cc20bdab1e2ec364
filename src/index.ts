/**
 * portwire's public surface: the runtime a host process embeds, its options,
 * errors and input types, the security-group translation, and the managed
 * etcd used by demos and tests.
 */
export { createRuntime, Runtime } from './runtime.ts';
export type { RuntimeEvents, RuntimeStatus, TransactionOps } from './runtime.ts';
export type { RuntimeOptions } from './options.ts';
export type { EtcdConnectionOptions } from './etcd.ts';
export {
  PortwireError,
  ValidationError,
  JournalFullError,
  RuntimeStateError,
  EtcdUnavailableError,
  EtcdRejectedError,
  NotLeaderError,
  TimeoutError,
  EtcdAuthError,
  EtcdTlsError,
  EtcdPermissionError,
  SignatureError,
  isEtcdRefusal,
  isRecoverable,
  type SignatureRejection,
} from './errors.ts';
export {
  applyRoles,
  agentPermissions,
  agentRole,
  controllerPermissions,
  CONTROLLER_ROLE,
  etcdctlCommands,
  type EtcdIdentity,
  type RolePermission,
  type RolesOptions,
} from './etcd-roles.ts';
export { checkEtcdAccess, type EtcdAccessOptions, type EtcdAccessResult } from './etcd-preflight.ts';
export type {
  AddressPair,
  BindDecision,
  BindingLevel,
  BindingType,
  FixedIp,
  Port,
  PortBind,
  PortBindingValue,
  PortDelete,
  PortUnbind,
  PortUpdate,
  Segment,
} from './types.ts';
export type { DeadLetter, JournalUsage } from './journal.ts';
export { JwsSigner, JwsVerifier, signValue, type SigningOptions, type VerifyResult } from './jws.ts';
export { keyLayout, type KeyLayout } from './keys.ts';
export {
  translateRule,
  securityGroupToAcl,
  securityGroupToJson,
  encodeSecurityGroup,
  validateRule,
  FIXES,
  type NeutronRule,
  type AclRule,
  type SecurityGroupAcl,
} from './translate.ts';
export { translateGroupsInPool, streamGroupsInPool, INLINE_THRESHOLD } from './translate-pool.ts';
export { defaultRules, type SecurityGroup } from './secgroups.ts';
export { createPool } from './pool.ts';
export { createLogger } from './logger.ts';
export { startManagedEtcd, type ManagedEtcd, type ManagedEtcdOptions, type ManagedEtcdTls, type ManagedEtcdAuth } from './managed-etcd.ts';
export { startManagedCluster, type ManagedCluster, type ManagedClusterOptions, type ClusterMember } from './managed-cluster.ts';
export { createPki, type Pki, type PkiOptions, type ClientCert, type ClientTls } from './etcd-pki.ts';
