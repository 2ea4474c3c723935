import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/** Random lowercase id: safe in image tags, paths, container names and URLs. */
export function randomId(length = 12): string {
  const bytes = randomBytes(length);
  let out = '';
  for (const b of bytes) out += ALPHABET[b % ALPHABET.length];
  return out;
}

export const newSandboxId = (): string => `sbx-${randomId()}`;
export const newSnapshotId = (): string => `snap-${randomId()}`;
export const newOperationId = (): string => `op-${randomId()}`;
export const newRequestId = (): string => `req-${randomId(10)}`;

export const ID_PATTERN = /^[a-z]+-[0-9a-z]{4,40}$/;
export const NAMESPACE_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/**
 * Ids that may name a file, a directory or a container on a host (executor ids, sandbox ids on
 * an executor): 1-128 letters, digits, ".", "_", "-", starting with a letter or digit.
 */
export const SAFE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/**
 * An executor id (an executor defaults to its host name). The same rule binds the executor's
 * config, the protocol's path parameter and `executor_id` in API bodies.
 */
export const EXECUTOR_ID_PATTERN = SAFE_ID_PATTERN;
export const EXECUTOR_ID_RULE = 'executor ids are 1-128 letters, digits, ".", "_", "-", starting with a letter or digit';
/** Sandbox, snapshot and operation ids in paths and bodies: what the server generates fits easily. */
export const ID_MAX_LENGTH = 64;
