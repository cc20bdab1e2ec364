import 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Client URLs of the etcd shared by all tests (from global-etcd.ts). */
    etcdEndpoints: string[];
  }
}
