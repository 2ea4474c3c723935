/**
 * The rollback_sandbox operation (rollback in place, docs/architecture.md "Snapshot lifecycle"):
 * the sandbox's container is replaced by one restored from a snapshot, eagerly or lazily, keeping
 * the sandbox id.
 *
 * Contract, in order:
 * 1. everything runs under the sandbox's busy mark (the reconciler leaves a busy sandbox alone,
 *    so the moment between the two containers is never taken for an unwanted sandbox);
 * 2. the driver of the requested mode is chosen, and its availability checked, before anything
 *    is removed: a mode this host cannot serve fails (UNPROCESSABLE) with the old container
 *    still running;
 * 3. the old container is removed with the driver that owns it (none: nothing to remove), then
 *    the new one is created with the target driver (docker -> runc-lazy and back). The old
 *    container is not kept until the new one runs: both have the sandbox's name. A failure after
 *    the removal propagates with its reason; the server then ends the sandbox with it and asks
 *    for what is left to be removed.
 * The operation loop runs it once per op id (journalled on disk).
 */
import type { Logger } from 'pino';
import type { OperationOf, OperationResultOf } from '@cryo/snapshot';
import type { BusySandboxes } from '../busy-sandboxes';
import { sandboxSpecOf, type ProgressSink, type RuntimeDriver, type SandboxSpec } from '../runtime/driver';
import type { DriverSet } from '../runtime/driver-set';

export interface RollbackContext {
  drivers: Pick<DriverSet, 'forMode' | 'owner'>;
  busy: BusySandboxes;
  /** Create and start the sandbox with `driver` (the executor's create, which also feeds the metrics); returns the container id. */
  create: (driver: RuntimeDriver, spec: SandboxSpec, progress: ProgressSink) => Promise<string>;
  /** The sandboxes changed: heartbeat soon. */
  changed: () => void;
}

/** Run one rollback_sandbox operation; the result names the new container and the driver that runs it. */
export function rollbackSandbox(
  ctx: RollbackContext,
  payload: OperationOf<'rollback_sandbox'>['payload'],
  log: Logger,
  progress: ProgressSink,
): Promise<OperationResultOf<'rollback_sandbox'>> {
  return ctx.busy.hold(payload.sandbox_id, async () => {
    const spec = sandboxSpecOf(payload);
    const target = ctx.drivers.forMode(payload.restore.mode);
    const current = await ctx.drivers.owner(payload.sandbox_id);
    if (current !== undefined) {
      await current.remove(payload.sandbox_id);
      log.info({ from: current.name, to: target.name, snapshot_id: payload.restore.snapshot_id }, 'rollback: old container removed');
    }
    const containerId = await ctx.create(target, spec, progress);
    ctx.changed();
    return { container_id: containerId, runtime: target.name };
  });
}
