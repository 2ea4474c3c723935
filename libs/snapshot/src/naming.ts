/** Image names of snapshots. One place decides them so every host derives the same refs. */
export const LOCAL_SNAPSHOT_REPOSITORY = 'cryo-snapshots';

export function snapshotTag(sandboxId: string, snapshotId: string): string {
  return `sb-${sandboxId}-snap-${snapshotId}`;
}

export function localSnapshotRef(tag: string): string {
  return `${LOCAL_SNAPSHOT_REPOSITORY}:${tag}`;
}

/** `cryo-snapshots:...` images exist only in the image store of the executor that committed them. */
export function isLocalSnapshotRef(ref: string): boolean {
  return ref.startsWith(`${LOCAL_SNAPSHOT_REPOSITORY}:`);
}

export function registrySnapshotRef(registry: { url: string; repository: string }, tag: string): string {
  return `${registry.url}/${registry.repository}:${tag}`;
}

/** The clip index of a snapshot image is pushed next to it under this tag. */
export function clipIndexTag(tag: string): string {
  return `${tag}.clip`;
}

/** What the image's program read on its first lazy start (an access record) is pushed next to it under this tag. */
export function accessRecordTag(tag: string): string {
  return `${tag}.access`;
}

/** Prefix of every sandbox's container name (Docker) and container id (runc). */
export const CONTAINER_NAME_PREFIX = 'cryo-';

/** The container of a sandbox is named after it, whichever runtime runs it: `cryo-<sandbox id>`. */
export function containerName(sandboxId: string): string {
  return `${CONTAINER_NAME_PREFIX}${sandboxId}`;
}

/** Docker labels written on every snapshot image. */
export const SNAPSHOT_LABELS = {
  snapshotId: 'dev.cryo.snapshot-id',
  sandboxId: 'dev.cryo.sandbox-id',
  baseImage: 'dev.cryo.base-image',
  namespace: 'dev.cryo.namespace',
} as const;

/** Docker labels written on every sandbox container. */
export const SANDBOX_LABELS = {
  sandboxId: 'dev.cryo.sandbox-id',
  namespace: 'dev.cryo.namespace',
  executorId: 'dev.cryo.executor-id',
} as const;

export const TAG_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
