/** @cryo/cli as a library: the typed REST client, for e2e tests, benchmarks and scripts. */
export {
  CryoClient,
  DEFAULT_NAMESPACE,
  DEFAULT_SERVER,
  collectPages,
  type CreateSandboxResponse,
  type CreateSnapshotResponse,
  type CryoClientOptions,
  type Health,
  type ListOptions,
  type Page,
  type SnapshotListOptions,
} from './client';
export {
  CryoApiError,
  CryoClientError,
  CryoConnectionError,
  CryoResponseError,
  CryoWaitTimeoutError,
} from './client-errors';
export type { WaitOptions } from './wait';
