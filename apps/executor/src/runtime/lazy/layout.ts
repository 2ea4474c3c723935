/**
 * Where a lazy sandbox lives on disk, under `state_dir/lazy/<sandbox_id>/`, and the record that
 * lets a restarted executor find, remount or end it. Nothing secret is kept here: the registry
 * credentials stay with the executor's config and the mount process's memory.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CryoError, SAFE_ID_PATTERN } from '@cryo/snapshot';

export interface LazySandboxLayout {
  dir: string;
  /** FUSE mountpoint of the clip index: the overlay's lower dir */
  lower: string;
  upper: string;
  work: string;
  /** merged overlay: the bundle's root */
  rootfs: string;
  /** the bundle is `dir` itself: config.json sits here */
  config: string;
  record: string;
  hostname: string;
  hosts: string;
  stdin: string;
  stdout: string;
  stderr: string;
  initPid: string;
  mountStatus: string;
  mountLog: string;
  /** what the mount process writes on SIGUSR2: the reads it served (an access record) and its requests */
  mountAccess: string;
  /** the access record this sandbox recorded and pushed (gzip'd JSON, as in the registry) */
  accessRecord: string;
}

export interface LazySandboxRecord {
  sandbox_id: string;
  namespace: string;
  container_id: string;
  image: string;
  index_path: string;
  image_ref: string;
  digest: string | null;
  /** the image the index describes: where its layers are and which manifest */
  base: { host: string; repository: string; manifest_digest: string };
  command: string[] | null;
  env: Record<string, string>;
  labels: Record<string, string>;
  resources: { cpus?: number | undefined; memory_mb?: number | undefined };
  created_at: string;
  /**
   * The image's access record (what its program read on a first lazy start; absent in records
   * written before there were any, and for images without a `<tag>.clip` index): where it lives in
   * the registry (`ref`), the local copy this sandbox prefetched (null: there was none, so this
   * sandbox records one after its first exec), and the local copy of the one it recorded and
   * pushed (null: not yet).
   */
  access?: { ref: string; prefetched: string | null; recorded: string | null };
}

export function checkSandboxId(sandboxId: string): void {
  if (!SAFE_ID_PATTERN.test(sandboxId)) throw new CryoError('UNPROCESSABLE', `sandbox id ${JSON.stringify(sandboxId)} cannot name a directory`);
}

export function lazySandboxLayout(lazyRoot: string, sandboxId: string): LazySandboxLayout {
  checkSandboxId(sandboxId);
  const dir = join(lazyRoot, sandboxId);
  return {
    dir,
    lower: join(dir, 'lower'),
    upper: join(dir, 'upper'),
    work: join(dir, 'work'),
    rootfs: join(dir, 'rootfs'),
    config: join(dir, 'config.json'),
    record: join(dir, 'sandbox.json'),
    hostname: join(dir, 'hostname'),
    hosts: join(dir, 'hosts'),
    stdin: join(dir, 'stdin.fifo'),
    stdout: join(dir, 'stdout.log'),
    stderr: join(dir, 'stderr.log'),
    initPid: join(dir, 'init.pid'),
    mountStatus: join(dir, 'mount.json'),
    mountLog: join(dir, 'mount.log'),
    mountAccess: join(dir, 'mount-access.json'),
    accessRecord: join(dir, 'access-record.json.gz'),
  };
}

export function writeRecord(layout: LazySandboxLayout, record: LazySandboxRecord): void {
  const tmp = `${layout.record}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, layout.record);
}

export function readRecord(layout: LazySandboxLayout): LazySandboxRecord | undefined {
  try {
    const value: unknown = JSON.parse(readFileSync(layout.record, 'utf8'));
    if (typeof value !== 'object' || value === null || !('sandbox_id' in value) || !('index_path' in value)) return undefined;
    return value as LazySandboxRecord;
  } catch {
    return undefined;
  }
}
