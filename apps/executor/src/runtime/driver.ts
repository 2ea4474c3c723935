/**
 * One small interface for every way the executor runs sandboxes. `docker` runs them with a
 * Docker engine; `runc-lazy` (lazy restore) runs them from a FUSE-mounted clip index.
 */
import type { ExecResult, ObservedSandbox, Progress, Timings } from '@cryo/snapshot';

export interface SandboxSpec {
  sandboxId: string;
  namespace: string;
  image: string;
  command: string[] | null;
  env: Record<string, string>;
  labels: Record<string, string>;
  resources: { cpus?: number | undefined; memory_mb?: number | undefined };
  /** Lazy restore: run from this clip index (already downloaded) instead of a pulled image. */
  lazy?: LazySource;
}

export interface LazySource {
  /** Local path of the snapshot image's clip index file. */
  indexPath: string;
  /** The snapshot image (registry ref) the index describes, and its manifest digest. */
  imageRef: string;
  digest: string | null;
}

export interface SnapshotSpec {
  opId: string;
  sandboxId: string;
  snapshotId: string;
  namespace: string;
  tag: string;
  baseImage: string;
}

export interface SnapshotOutcome {
  imageRef: string;
  digest: string | null;
  sizeBytes: number | null;
  timings: Timings;
}

export type ProgressSink = (progress: Progress) => void;

export interface RuntimeDriver {
  readonly name: 'docker' | 'runc-lazy';
  /** Create and start a sandbox; idempotent for the same sandbox id. Returns the container id. */
  create(spec: SandboxSpec, progress: ProgressSink): Promise<string>;
  exec(sandboxId: string, command: string[], timeoutSecs: number): Promise<ExecResult>;
  /** Remove the sandbox and everything it holds; false when there was nothing to remove. */
  remove(sandboxId: string): Promise<boolean>;
  snapshot(spec: SnapshotSpec, progress: ProgressSink): Promise<SnapshotOutcome>;
  observe(): Promise<ObservedSandbox[]>;
}
