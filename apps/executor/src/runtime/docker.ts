/**
 * The Docker runtime driver: sandboxes are containers of one Docker engine. A snapshot is a
 * pre-copy of the container's writable layer (paused only for what changed meanwhile) pushed
 * without the engine, or pause -> commit -> unpause -> push through the engine (docker/).
 */
import Docker from 'dockerode';
import type { ImagePushOptions } from 'dockerode';
import type { Logger } from 'pino';
import { constants } from 'node:fs';
import { access, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PassThrough } from 'node:stream';
import { familiarName, parseImageReference } from '@cryo/oci';
import {
  CryoError,
  SANDBOX_LABELS,
  SNAPSHOT_LABELS,
  containerName,
  isLocalSnapshotRef,
  localSnapshotRef,
  registrySnapshotRef,
  type CachedImage,
  type ContainerState,
  type ExecResult,
  type ObservedSandbox,
} from '@cryo/snapshot';
import type { RegistryAccessSettings, SnapshotRegistry } from '@cryo/registry-auth';
import {
  type DriverCapabilities,
  type ImageCache,
  type ProgressSink,
  type Recovery,
  type RuntimeDriver,
  type SandboxSpec,
  type SnapshotOutcome,
  type SnapshotSpec,
} from './driver';
import { ProgressTracker, followDockerStream } from './docker-progress';
import { CappedOutput, EXEC_OUTPUT_LIMIT } from './exec-output';
import { resumeWithRetries } from './pause-window';
import { commitSnapshot } from './docker/commit-snapshot';
import { precopySnapshot, type PrecopySettings } from './docker/precopy-snapshot';
import type { ClipArtifacts } from '../clip-artifacts';
import type { RegistryCredentialSource } from '../registry-credentials';
import { daemonText, dockerFailure, dockerRegistryProblem, registryFailure } from '../errors';
import type { PauseJournal } from '../state/pause-journal';

export interface DockerDriverOptions {
  docker: Docker;
  executorId: string;
  network: string;
  /** mounts every sandbox gets (the operator's: they are never captured, and snapshots list them) */
  mounts: Docker.MountConfig;
  registry: SnapshotRegistry | undefined;
  credentials: RegistryCredentialSource;
  /** registry access for pushes without the engine (pre-copy) */
  access: RegistryAccessSettings;
  clip: ClipArtifacts;
  stateDir: string;
  snapshots: PrecopySettings & { method: 'precopy' | 'commit' | 'auto' };
  pauseJournal: PauseJournal;
  log: Logger;
  /** Fault injection for tests: hold the container paused this long before committing. */
  holdPausedMs?: number;
}

export function dockerFromHost(host: string): Docker {
  if (host.startsWith('unix://')) return new Docker({ socketPath: host.slice('unix://'.length) });
  if (host.startsWith('/')) return new Docker({ socketPath: host });
  const url = new URL(host.replace(/^tcp:/, 'http:'));
  return new Docker({ host: url.hostname, port: Number(url.port || 2375), protocol: url.protocol === 'https:' ? 'https' : 'http' });
}

function statusCode(err: unknown): number | undefined {
  if (typeof err === 'object' && err !== null && 'statusCode' in err && typeof err.statusCode === 'number') return err.statusCode;
  return undefined;
}

function mapState(state: string): ContainerState {
  switch (state) {
    case 'running':
    case 'restarting':
      return 'running';
    case 'paused':
      return 'paused';
    case 'created':
      return 'created';
    default:
      return 'exited';
  }
}

export class DockerDriver implements RuntimeDriver {
  readonly name = 'docker' as const;
  readonly images: ImageCache = {
    list: () => this.cachedSnapshotImages(),
    remove: (refs) => this.removeSnapshotImages(refs),
  };

  /** Snapshot images still being loaded into the engine, by ref (pre-copy loads after reporting). */
  private readonly localLoads = new Map<string, Promise<void>>();

  constructor(private readonly opts: DockerDriverOptions) {}

  async capabilities(): Promise<DriverCapabilities> {
    return { available: true, reason: null, restoreModes: ['eager'] };
  }

  async owns(sandboxId: string): Promise<boolean> {
    return (await this.findContainer(sandboxId)) !== undefined;
  }

  private get docker(): Docker {
    return this.opts.docker;
  }

  private async imageExists(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).inspect();
      return true;
    } catch (err) {
      if (statusCode(err) === 404) return false;
      throw err;
    }
  }

  /** Pull with the credentials for the image's registry; every progress line is scanned. */
  private async pull(ref: string, progress: ProgressSink): Promise<void> {
    const host = parseImageReference(ref).host;
    const authconfig = await this.opts.credentials.dockerAuth(host);
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.pull(ref, authconfig === undefined ? {} : { authconfig });
    } catch (err) {
      throw await this.registryFailure('pull', ref, host, daemonText(err));
    }
    const tracker = new ProgressTracker('pull');
    await followDockerStream(stream, tracker, () => progress(tracker.progress()));
    if (tracker.error !== undefined) throw await this.registryFailure('pull', ref, host, tracker.error);
  }

  /** A failed pull or push, worded as every registry failure is (errors.ts), whichever driver hit it. */
  private async registryFailure(action: 'pull' | 'push', ref: string, host: string, message: string): Promise<CryoError> {
    const problem = dockerRegistryProblem(message);
    if (problem === 'unauthorized' || problem === 'denied') {
      const who = await this.opts.credentials.describeUser(host);
      const verb = problem === 'unauthorized' ? 'rejected credentials for' : 'denied access to';
      return registryFailure(problem, host, `registry ${host} ${verb} ${who} (${action} ${ref}: ${message})`);
    }
    if (problem === 'unreachable') return registryFailure(problem, host, `registry ${host} is unreachable (${action} ${ref}: ${message})`);
    if (problem === 'not_found') return registryFailure(problem, host, `image ${ref} not found in registry ${host} (${message})`);
    return dockerFailure(message, `${action} ${ref}`);
  }

  private async findContainer(sandboxId: string): Promise<Docker.ContainerInspectInfo | undefined> {
    try {
      return await this.docker.getContainer(containerName(sandboxId)).inspect();
    } catch (err) {
      if (statusCode(err) === 404) return undefined;
      throw err;
    }
  }

  async create(spec: SandboxSpec, progress: ProgressSink): Promise<string> {
    const existing = await this.findContainer(spec.sandboxId);
    if (existing !== undefined) {
      if (!existing.State.Running) await this.docker.getContainer(existing.Id).start();
      return existing.Id;
    }
    const image = spec.restore === null ? spec.image : await this.ensureSnapshotImage(spec.restore.imageRef, spec.restore.digest, progress);
    if (spec.restore === null && !(await this.imageExists(image))) await this.pull(image, progress);
    const labels: Record<string, string> = {
      ...spec.labels,
      [SANDBOX_LABELS.sandboxId]: spec.sandboxId,
      [SANDBOX_LABELS.namespace]: spec.namespace,
      [SANDBOX_LABELS.executorId]: this.opts.executorId,
    };
    const container = await this.docker.createContainer({
      name: containerName(spec.sandboxId),
      Image: image,
      ...(spec.command === null ? {} : { Cmd: spec.command }),
      Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      Labels: labels,
      // An open stdin keeps shells (the usual sandbox command) alive without a TTY.
      OpenStdin: true,
      StdinOnce: false,
      Tty: false,
      HostConfig: {
        NetworkMode: this.opts.network,
        ...(this.opts.mounts.length === 0 ? {} : { Mounts: this.opts.mounts }),
        ...(spec.resources.cpus === undefined ? {} : { NanoCpus: Math.round(spec.resources.cpus * 1e9) }),
        ...(spec.resources.memory_mb === undefined ? {} : { Memory: spec.resources.memory_mb * 1024 * 1024 }),
      },
    });
    try {
      await container.start();
    } catch (err) {
      await container.remove({ force: true }).catch(() => undefined);
      const failure = dockerFailure(err, `start the container of sandbox ${spec.sandboxId}`);
      throw failure.code === 'UNAVAILABLE' ? new CryoError('UNPROCESSABLE', failure.message) : failure;
    }
    return container.id;
  }

  async exec(sandboxId: string, command: string[], timeoutSecs: number): Promise<ExecResult> {
    const info = await this.findContainer(sandboxId);
    if (info === undefined) throw new CryoError('NOT_FOUND', `sandbox ${sandboxId} has no container on this executor`);
    if (!info.State.Running) throw new CryoError('CONFLICT', `sandbox ${sandboxId} is not running (container is ${info.State.Status})`);
    const container = this.docker.getContainer(info.Id);
    const exec = await container.exec({ Cmd: command, AttachStdout: true, AttachStderr: true, AttachStdin: false, Tty: false });
    const stream = await exec.start({ hijack: true, stdin: false });
    const stdout = new CappedOutput(EXEC_OUTPUT_LIMIT);
    const stderr = new CappedOutput(EXEC_OUTPUT_LIMIT);
    const outStream = new PassThrough();
    const errStream = new PassThrough();
    outStream.on('data', (c: Buffer) => stdout.push(c));
    errStream.on('data', (c: Buffer) => stderr.push(c));
    this.docker.modem.demuxStream(stream, outStream, errStream);
    const finished = new Promise<void>((resolve, reject) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', reject);
    });
    const timedOut = await Promise.race([finished.then(() => false), sleep(timeoutSecs * 1000).then(() => true)]);
    if (timedOut) {
      stream.destroy();
      throw new CryoError('TIMEOUT', `command did not finish within ${timeoutSecs} s`);
    }
    let exitCode: number | null = null;
    for (let i = 0; i < 50; i++) {
      const state = await exec.inspect();
      if (!state.Running) {
        exitCode = state.ExitCode;
        break;
      }
      await sleep(20);
    }
    return { exit_code: exitCode ?? -1, stdout: stdout.text(), stderr: stderr.text() };
  }

  async remove(sandboxId: string): Promise<boolean> {
    try {
      await this.docker.getContainer(containerName(sandboxId)).remove({ force: true, v: true });
      return true;
    } catch (err) {
      if (statusCode(err) === 404) return false;
      if (statusCode(err) === 409 && /already in progress/.test(daemonText(err))) return true;
      throw err;
    }
  }

  /**
   * Snapshot in phases (docker/precopy-snapshot.ts, docker/commit-snapshot.ts): pre-copy where
   * the engine's overlay2 upper dir is on this host, else (or when configured) docker commit.
   */
  async snapshot(spec: SnapshotSpec, progress: ProgressSink): Promise<SnapshotOutcome> {
    const info = await this.findContainer(spec.sandboxId);
    if (info === undefined) throw new CryoError('NOT_FOUND', `sandbox ${spec.sandboxId} has no container on this executor`);
    if (info.State.Paused) throw new CryoError('CONFLICT', `sandbox ${spec.sandboxId} is already paused`);
    if (!info.State.Running) throw new CryoError('CONFLICT', `sandbox ${spec.sandboxId} is not running (container is ${info.State.Status})`);
    const container = this.docker.getContainer(info.Id);
    const control = {
      // Written down before the pause (outside the pause window): a crash while paused is undone at the next start.
      prepare: () => this.opts.pauseJournal.willPause({
        container_id: info.Id, sandbox_id: spec.sandboxId, op_id: spec.opId, paused_at: new Date().toISOString(), pid: process.pid,
      }),
      pause: () => container.pause(),
      resume: () => this.unpause(container, info.Id),
      onStuck: (err: unknown) => this.opts.log.error({ err: daemonText(err), container_id: info.Id }, 'unpause failed; recovery at the next start retries'),
    };
    const workDir = join(this.opts.stateDir, 'snapshots');
    const recordDir = join(this.opts.stateDir, 'base-images');
    const hold = this.opts.holdPausedMs === undefined ? {} : { holdPausedMs: this.opts.holdPausedMs };
    const { method, reason } = await this.methodFor(info);
    const log = this.opts.log.child({ snapshot_id: spec.snapshotId });
    log.info({ method, reason }, `snapshot method: ${method}`);
    if (method === 'precopy') {
      return precopySnapshot({
        docker: this.docker, registry: this.opts.registry, access: this.opts.access, clip: this.opts.clip, workDir, recordDir,
        settings: this.opts.snapshots, methodReason: reason, log, ...hold,
        inBackground: (refs, work) => this.loadingInBackground(refs, work),
        push: (localRef, sink) => this.pushLocal(localRef, spec.tag, sink),
        removeImages: (refs) => this.removeImages(refs),
      }, spec, info, control, progress);
    }
    return commitSnapshot({
      docker: this.docker, workDir, recordDir, log: this.opts.log, maxLayers: this.opts.snapshots.maxLayers, methodReason: reason, ...hold,
      push: (localRef, sink) => this.pushLocal(localRef, spec.tag, sink),
      removeImages: (refs) => this.removeImages(refs),
    }, repoAndTag, spec, info, control, progress);
  }

  /**
   * A snapshot image being loaded into this engine after its snapshot was reported: a restore of
   * it waits for the load (no pull), a delete waits too (no tags left behind). A failed load is
   * logged and undone; a restore then pulls.
   */
  private loadingInBackground(refs: string[], work: Promise<void>): void {
    const settled = work.catch(async (err: unknown) => {
      this.opts.log.warn({ refs, err: err instanceof Error ? err.message : String(err) }, 'loading the snapshot image into the local engine failed; a restore here pulls it');
      await this.removeImages(refs);
    });
    for (const ref of refs) this.localLoads.set(ref, settled);
    void settled.finally(() => {
      for (const ref of refs) if (this.localLoads.get(ref) === settled) this.localLoads.delete(ref);
    });
  }

  /**
   * The configured method; `auto` is pre-copy when the container's overlay2 upper dir is readable
   * here, else commit. `reason` says why, for the log and the snapshot's `capture.method_reason`:
   * a user whose snapshot paused for a commit sees what kept it from being pre-copied.
   */
  private async methodFor(info: Docker.ContainerInspectInfo): Promise<{ method: 'precopy' | 'commit'; reason: string }> {
    const configured = this.opts.snapshots.method;
    if (configured !== 'auto') return { method: configured, reason: `the executor's snapshots.method is ${configured}` };
    const auto = 'snapshots.method is auto';
    const storage = info.GraphDriver.Name;
    if (storage !== 'overlay2') {
      return { method: 'commit', reason: `${auto}, and the Docker engine's storage driver is ${storage}, not overlay2: pre-copy reads the container's overlay2 upper dir, so the sandbox was paused for a docker commit` };
    }
    const upper = (info.GraphDriver.Data as Record<string, string | undefined> | undefined)?.UpperDir;
    if (upper === undefined) {
      return { method: 'commit', reason: `${auto}, and the engine did not name the container's overlay2 upper dir: the sandbox was paused for a docker commit` };
    }
    try {
      await access(upper, constants.R_OK);
      return { method: 'precopy', reason: `${auto}, and the container's overlay2 upper dir is readable on this host` };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      return { method: 'commit', reason: `${auto}, and the container's overlay2 upper dir is not readable on this host (${code}; is the engine on another host?): the sandbox was paused for a docker commit` };
    }
  }

  /** Tag a committed image for the snapshot registry and push it with the engine (commit method). */
  private async pushLocal(localRef: string, tag: string, progress: ProgressSink): Promise<{ imageRef: string; digest: string; pushMs: number } | undefined> {
    const registry = this.opts.registry;
    if (registry === undefined) return undefined;
    const remoteRef = registrySnapshotRef(registry, tag);
    const pushStart = performance.now();
    await this.docker.getImage(localRef).tag(repoAndTag(remoteRef));
    const digest = await this.push(remoteRef, registry.url, progress);
    return { imageRef: remoteRef, digest, pushMs: performance.now() - pushStart };
  }

  /**
   * Unpause, and strike it from the pause journal; a container that is not paused (any more) or
   * gone counts as unpaused. One call to the engine: it is inside the pause window.
   */
  private async unpause(container: Docker.Container, containerId: string): Promise<void> {
    try {
      await container.unpause();
    } catch (err) {
      const notPaused = /is not paused/i.test(daemonText(err));
      if (statusCode(err) !== 404 && !notPaused) throw err;
    }
    this.opts.pauseJournal.unpaused(containerId);
  }

  private async push(ref: string, host: string, progress: ProgressSink): Promise<string> {
    // dockerd refuses a push without an X-Registry-Auth header, even for an open registry.
    const authconfig = (await this.opts.credentials.dockerAuth(host)) ?? { serveraddress: host };
    const options: ImagePushOptions = { authconfig };
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.getImage(ref).push(options);
    } catch (err) {
      throw await this.registryFailure('push', ref, host, daemonText(err));
    }
    const tracker = new ProgressTracker('push');
    let lastSent = 0;
    await followDockerStream(stream, tracker, () => {
      const now = Date.now();
      if (now - lastSent > 250) {
        lastSent = now;
        progress(tracker.progress());
      }
    });
    if (tracker.error !== undefined) throw await this.registryFailure('push', ref, host, tracker.error);
    if (tracker.digest === undefined) throw new CryoError('UNAVAILABLE', `push of ${ref} ended without a manifest digest from registry ${host}`);
    progress({ ...tracker.progress(), phase: 'pushed' });
    return tracker.digest;
  }

  /** Remove image refs (tags); a ref that is already gone counts as removed. */
  private async removeImages(refs: string[]): Promise<string[]> {
    const removed: string[] = [];
    for (const ref of refs) {
      try {
        await this.docker.getImage(ref).remove({ noprune: false });
        removed.push(ref);
      } catch (err) {
        if (statusCode(err) === 404) removed.push(ref);
        else this.opts.log.warn({ ref, err: daemonText(err) }, 'could not remove image');
      }
    }
    return removed;
  }

  /** Restore: use the snapshot image if this engine has it, else pull it (pinned by digest). */
  private async ensureSnapshotImage(imageRef: string, digest: string | null, progress: ProgressSink): Promise<string> {
    await this.localLoads.get(imageRef);
    if (await this.imageExists(imageRef)) return imageRef;
    if (isLocalSnapshotRef(imageRef)) {
      throw new CryoError('NOT_FOUND', `snapshot image ${imageRef} is local to another executor and not on this one`);
    }
    const { repo, tag } = repoAndTag(imageRef);
    const pinned = digest !== null && digest.startsWith('sha256:') ? `${repo}@${digest}` : imageRef;
    await this.pull(pinned, progress);
    if (pinned !== imageRef) await this.docker.getImage(pinned).tag({ repo, tag });
    return imageRef;
  }

  async observe(): Promise<ObservedSandbox[]> {
    const containers = await this.docker.listContainers({
      all: true,
      filters: { label: [`${SANDBOX_LABELS.executorId}=${this.opts.executorId}`] },
    });
    return containers.flatMap((c): ObservedSandbox[] => {
      const sandboxId = c.Labels[SANDBOX_LABELS.sandboxId];
      if (sandboxId === undefined) return [];
      return [{ sandbox_id: sandboxId, container_id: c.Id, state: mapState(c.State), exit_code: null, runtime: 'docker' }];
    });
  }

  private async cachedSnapshotImages(): Promise<CachedImage[]> {
    const images = await this.docker.listImages({ filters: { label: [SNAPSHOT_LABELS.snapshotId] } });
    return images.flatMap((img) => (img.RepoTags ?? [])
      .filter((t) => t !== '<none>:<none>')
      .map((ref) => ({ ref, snapshot_id: img.Labels?.[SNAPSHOT_LABELS.snapshotId] ?? null, size_bytes: img.Size })));
  }

  /** Snapshot images go with their local twin: a commit is tagged `cryo-snapshots:<tag>` before it is pushed. */
  private async removeSnapshotImages(refs: string[]): Promise<string[]> {
    const all = new Set(refs);
    for (const ref of refs) all.add(localSnapshotRef(repoAndTag(ref).tag));
    await Promise.all([...all].map((ref) => this.localLoads.get(ref)));
    return this.removeImages([...all]);
  }

  /** Unpause every container a crashed snapshot left paused (from the on-disk journal). */
  async recover(): Promise<Recovery[]> {
    // Copies of snapshots a crash interrupted (nothing runs yet at this point).
    await rm(join(this.opts.stateDir, 'snapshots'), { recursive: true, force: true });
    const recovered: Recovery[] = [];
    for (const record of this.opts.pauseJournal.pending()) {
      const stuck = await resumeWithRetries(() => this.unpause(this.docker.getContainer(record.container_id), record.container_id));
      if (stuck !== undefined) {
        this.opts.log.error({ err: daemonText(stuck), sandbox_id: record.sandbox_id }, 'cannot unpause a container left paused by an interrupted snapshot');
        continue;
      }
      recovered.push({ sandbox_id: record.sandbox_id, action: 'unpaused', reason: `snapshot operation ${record.op_id} was interrupted while it was paused` });
      this.opts.log.warn({ sandbox_id: record.sandbox_id, op_id: record.op_id }, 'unpaused a container left paused by an interrupted snapshot');
    }
    return recovered;
  }
}

/** `host:5000/cryo/snapshots:tag` -> repo `host:5000/cryo/snapshots`, tag `tag`, as Docker's tag and commit calls take them. */
function repoAndTag(ref: string): { repo: string; tag: string } {
  const parsed = parseImageReference(ref);
  return { repo: familiarName(parsed), tag: parsed.tag ?? 'latest' };
}
