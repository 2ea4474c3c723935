/**
 * The whole contract between the executor and a way of running sandboxes (the shape of Nomad's
 * DriverPlugin): create / exec / snapshot / remove / observe for sandboxes, recover() after a
 * restart, capabilities() for what this host can do with it, and an optional image cache.
 * `docker` runs sandboxes with a Docker engine; `runc-lazy` (lazy restore) runs them from a
 * FUSE-mounted clip index. The executor holds a list of drivers and routes by `owns()`.
 */
import {
  SNAPSHOT_LABELS,
  type CachedImage,
  type ExcludedMount,
  type ExecResult,
  type ObservedSandbox,
  type OperationOf,
  type Progress,
  type RestoreMode,
  type RuntimeName,
  type SnapshotCapture,
  type Timings,
} from '@cryo/snapshot';

/** A sandbox to create: from an image, or restored from a snapshot. */
export interface SandboxSpec {
  sandboxId: string;
  namespace: string;
  image: string;
  command: string[] | null;
  env: Record<string, string>;
  labels: Record<string, string>;
  resources: { cpus?: number | undefined; memory_mb?: number | undefined };
  /** Restore from this snapshot (`mode` picks the driver) instead of creating from `image`. */
  restore: RestoreSpec | null;
}

/** The driver's view of a create_sandbox or rollback_sandbox payload. */
export function sandboxSpecOf(p: OperationOf<'create_sandbox'>['payload'] | OperationOf<'rollback_sandbox'>['payload']): SandboxSpec {
  return {
    sandboxId: p.sandbox_id, namespace: p.namespace, image: p.image, command: p.command, env: p.env, labels: p.labels, resources: p.resources,
    restore: p.restore === null ? null : {
      snapshotId: p.restore.snapshot_id, imageRef: p.restore.image_ref, digest: p.restore.digest, clipIndexRef: p.restore.clip_index_ref, mode: p.restore.mode,
    },
  };
}

export interface RestoreSpec {
  snapshotId: string;
  /** The snapshot image (registry ref, or a local ref of the executor that made it) and its manifest digest. */
  imageRef: string;
  digest: string | null;
  /** Where the snapshot image's clip index was pushed (needed for a lazy restore). */
  clipIndexRef: string | null;
  mode: RestoreMode;
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
  /** layers of the snapshot image */
  layers: number;
  /** its layers were squashed into one (snapshots.max_layers reached) */
  flattened: boolean;
  timings: Timings;
  /** the clip index, when the driver built and pushed it with the image (no build_index follows) */
  clipIndexRef?: string | null;
  /** how it was taken: method, copy passes, bytes pushed, volumes */
  capture?: SnapshotCapture | null;
  /** mounts of the sandbox the snapshot does not hold */
  excludedMounts?: ExcludedMount[];
}

export type ProgressSink = (progress: Progress) => void;

/** What a driver can do on this host. An unavailable driver takes no sandboxes. */
export interface DriverCapabilities {
  available: boolean;
  /** Why not, when unavailable (shown to users: "install runc", "needs snapshot_registry"...). */
  reason: string | null;
  /** The restore modes this driver serves; a create without a snapshot counts as `eager`. */
  restoreModes: readonly RestoreMode[];
}

/** What recover() did with one sandbox after a restart. */
export interface Recovery {
  sandbox_id: string;
  /** `unpaused`/`resumed`: a snapshot interrupted by the crash had left it paused; it runs again. */
  action: 'unpaused' | 'resumed' | 'adopted' | 'restarted' | 'ended' | 'exited';
  reason: string;
}

/** Images a driver keeps on this host (snapshot images committed or pulled), reported in heartbeats. */
export interface ImageCache {
  list(): Promise<CachedImage[]>;
  /** Remove these refs (snapshot images); returns those that are gone now (already gone counts). */
  remove(refs: string[]): Promise<string[]>;
}

export interface RuntimeDriver {
  readonly name: RuntimeName;
  /** The probe runs once, at start; the answer is cached by the executor. */
  capabilities(): Promise<DriverCapabilities>;
  /** Whether this driver runs `sandboxId` now (routing of exec, snapshot and remove). */
  owns(sandboxId: string): Promise<boolean>;
  /** Create and start a sandbox; idempotent for the same sandbox id. Returns the container id. */
  create(spec: SandboxSpec, progress: ProgressSink): Promise<string>;
  exec(sandboxId: string, command: string[], timeoutSecs: number): Promise<ExecResult>;
  /** Remove the sandbox and everything it holds; false when there was nothing to remove. */
  remove(sandboxId: string): Promise<boolean>;
  /** Pause, capture, resume (always), push. The sandbox keeps running whatever happens. */
  snapshot(spec: SnapshotSpec, progress: ProgressSink): Promise<SnapshotOutcome>;
  observe(): Promise<ObservedSandbox[]>;
  /** Undo what a crash left half-done (paused sandboxes, broken mounts); called once before work starts. */
  recover(): Promise<Recovery[]>;
  /** Let go of helpers the driver keeps (not the sandboxes: they outlive the executor); when the executor stops. */
  close?(): Promise<void>;
  readonly images?: ImageCache;
}

/** The labels every snapshot image carries, whichever driver made it. */
export function snapshotLabels(spec: Pick<SnapshotSpec, 'snapshotId' | 'sandboxId' | 'namespace' | 'baseImage'>): Record<string, string> {
  return {
    [SNAPSHOT_LABELS.snapshotId]: spec.snapshotId,
    [SNAPSHOT_LABELS.sandboxId]: spec.sandboxId,
    [SNAPSHOT_LABELS.namespace]: spec.namespace,
    [SNAPSHOT_LABELS.baseImage]: spec.baseImage,
  };
}
