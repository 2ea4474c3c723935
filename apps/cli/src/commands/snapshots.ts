import { Option, type Command } from 'commander';
import {
  LOCAL_SNAPSHOT_REPOSITORY,
  MAX_KEEP_LAST,
  SnapshotStatusSchema,
  TtlFromSchema,
  type OnExpired,
  type RestoreMode,
  type Snapshot,
  type TtlFrom,
} from '@cryo/snapshot';
import { collectKeyValue, parseInteger } from '../args';
import type { Cli, CommandContext } from '../cli';
import { CryoApiError, CryoClientError } from '../client-errors';
import { formatTtl, fullTime } from '../format';
import { ProgressLine } from '../progress';
import { snapshotFields, snapshotProgressLine, snapshotTable } from '../views';
import { pollUntil } from '../wait';
import { waitUntilStarted } from './sandboxes';
import { addForkOptions, forkBody, modeOption, onExpiredOption, reportForks, type ForkFlags } from './lifecycle';
import {
  addListOptions,
  addWaitOptions,
  examples,
  listPage,
  printPage,
  waitTimeoutMs,
  type ListFlags,
  type WaitFlags,
} from './shared';

const MAX_TTL_SECS = 10 * 365 * 24 * 3600;

interface CreateFlags extends WaitFlags {
  ttlSecs?: number;
  tag?: string;
  label?: Record<string, string>;
  keepLast?: number;
  ttlFrom?: TtlFrom;
}

/** How a snapshot is named on the command line: its id, or tag:NAME. */
const SNAPSHOT_REF = 'snapshot id, or tag:NAME for the snapshot tagged NAME';

interface RestoreFlags extends WaitFlags {
  mode?: RestoreMode;
  executor?: string;
  env?: Record<string, string>;
  label?: Record<string, string>;
  timeoutSecs?: number;
  onExpired?: OnExpired;
}

export function registerSnapshotCommands(program: Command, cli: Cli): void {
  const snapshots = program
    .command('snapshots')
    .aliases(['snapshot', 'snap'])
    .description('snapshot running sandboxes into images, list, restore, expire and delete them')
    .addHelpText(
      'after',
      examples([
        'cryo snapshots create sbx-0123abcd4567 --ttl-secs 86400 --wait',
        'cryo snap restore snap-0123abcd4567 --mode lazy --wait',
        'cryo snap fork tag:golden --count 10 --wait',
        'cryo snap list --sandbox sbx-0123abcd4567',
      ]),
    );

  addWaitOptions(
    snapshots
      .command('create')
      .description(
        'snapshot a running sandbox (it is paused only for the commit and keeps running); the server answers at once',
      )
      .argument('<sandbox-id>', 'the sandbox to snapshot')
      .option('--ttl-secs <n>', 'expire the snapshot this long after it was created; 0 = never (default: the server\'s snapshots.default_ttl_secs)', parseInteger(0, MAX_TTL_SECS))
      .option('--tag <tag>', 'a name for the snapshot ([A-Za-z0-9_][A-Za-z0-9._-]{0,127}), unique among the namespace\'s live snapshots; use it as tag:NAME')
      .option('-l, --label <KEY=VALUE>', 'label (repeatable)', collectKeyValue)
      .option('--keep-last <n>', 'retention: once active, delete the older snapshots of this sandbox beyond the newest N (this one counted)', parseInteger(1, MAX_KEEP_LAST))
      .addOption(new Option('--ttl-from <from>', 'count the TTL from creation (default) or from the last restore, fork or rollback').choices(TtlFromSchema.options)),
    'until the snapshot is active or failed, showing its phase and bytes pushed; exits 1 if it failed',
  )
    .addHelpText(
      'after',
      examples([
        'cryo snapshots create sbx-0123abcd4567',
        'cryo snap create sbx-0123abcd4567 --ttl-secs 3600 --tag before-upgrade --label step=3 --wait',
        'cryo snap create sbx-0123abcd4567 --keep-last 3 --ttl-secs 86400 --ttl-from last_use',
        'SNAP=$(cryo snap create sbx-0123abcd4567 --wait --quiet)',
      ]),
    )
    .action(async (sandboxId: string, flags: CreateFlags, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const created = await ctx.client.createSnapshot(sandboxId, {
        ttl_secs: flags.ttlSecs,
        tag: flags.tag,
        labels: flags.label,
        keep_last: flags.keepLast,
        ttl_from: flags.ttlFrom,
      });
      if (flags.wait !== true) {
        ctx.out.result(created, {
          ids: [created.snapshot_id],
          human: () => `created snapshot ${created.snapshot_id} of sandbox ${sandboxId} (${created.status})`,
        });
        return;
      }
      await waitUntilActive(ctx, created.snapshot_id, flags);
    });

  addListOptions(
    snapshots
      .command('list')
      .alias('ls')
      .description('list the snapshots of the namespace, or of one sandbox, newest first')
      .option('--sandbox <id>', 'only the snapshots of this sandbox')
      .option('--tag <name>', 'only the snapshots tagged NAME (live or ended)')
      .addOption(new Option('--status <status>', 'only snapshots in this status').choices(SnapshotStatusSchema.options)),
    'snapshots',
  )
    .addHelpText(
      'after',
      examples(['cryo snapshots list', 'cryo snap ls --sandbox sbx-0123abcd4567 --status active', 'cryo snap ls --tag golden', 'cryo snap ls --all --json']),
    )
    .action(async (flags: ListFlags & { sandbox?: string; tag?: string }, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const page = await listPage(flags, (options) => ctx.client.listSnapshots({ ...options, sandboxId: flags.sandbox, tag: flags.tag }));
      printPage(ctx.out, page, {
        noun: 'snapshots',
        id: (snap) => snap.snapshot_id,
        table: (items) => snapshotTable(items, ctx.now),
      });
    });

  snapshots
    .command('get')
    .description('show one snapshot: status, error, image ref, digest, size, TTL, timings')
    .argument('<id>', SNAPSHOT_REF)
    .addHelpText('after', examples(['cryo snapshots get snap-0123abcd4567', 'cryo snap get tag:golden']))
    .action(async (ref: string, _flags: object, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const snapshot = await ctx.client.getSnapshot(await ctx.client.resolveSnapshotId(ref));
      ctx.out.result(snapshot, { ids: [snapshot.snapshot_id], human: () => snapshotFields(snapshot, ctx.now) });
    });

  addWaitOptions(
    snapshots
      .command('delete')
      .alias('rm')
      .description('delete a snapshot: its image is removed from the registry and from the executors in the background')
      .argument('<id>', SNAPSHOT_REF),
    'until the deletion has finished',
  )
    .addHelpText('after', examples(['cryo snapshots delete snap-0123abcd4567 --wait', 'cryo snap rm tag:golden']))
    .action(async (ref: string, flags: WaitFlags, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const id = await ctx.client.resolveSnapshotId(ref);
      const answer = await ctx.client.deleteSnapshot(id);
      if (flags.wait !== true) {
        ctx.out.result(answer, { human: () => `snapshot ${id} is ${answer.status}` });
        return;
      }
      const gone = await waitUntilDeleted(ctx, id, flags);
      ctx.out.result(gone, { human: () => `deleted snapshot ${id}` });
    });

  snapshots
    .command('patch')
    .alias('set-ttl')
    .description('change the TTL of a snapshot, to extend or shorten it; 0 = never expires. Prints the new expiry')
    .argument('<id>', SNAPSHOT_REF)
    .requiredOption('--ttl-secs <n>', 'the new TTL in seconds', parseInteger(0, MAX_TTL_SECS))
    .addHelpText(
      'after',
      examples(['cryo snapshots patch snap-0123abcd4567 --ttl-secs 604800', 'cryo snap set-ttl snap-0123abcd4567 --ttl-secs 0']),
    )
    .action(async (ref: string, flags: { ttlSecs: number }, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const id = await ctx.client.resolveSnapshotId(ref);
      const snapshot = await ctx.client.setSnapshotTtl(id, flags.ttlSecs);
      ctx.out.result(snapshot, {
        human: () =>
          snapshot.expires_at === null
            ? `snapshot ${id} never expires`
            : `snapshot ${id} ttl ${formatTtl(snapshot.ttl_secs)}, expires ${fullTime(snapshot.expires_at, ctx.now)}`,
      });
    });

  addWaitOptions(
    snapshots
      .command('restore')
      .description('start a new sandbox from an active snapshot, on any executor')
      .argument('<id>', SNAPSHOT_REF)
      .argument('[command...]', "command to run instead of the snapshot's; put it after --")
      .addOption(modeOption())
      .addOption(onExpiredOption())
      .option('--executor <id>', 'restore on this executor (default: the server prefers one that has the image)')
      .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', collectKeyValue)
      .option('-l, --label <KEY=VALUE>', 'label of the new sandbox (repeatable)', collectKeyValue)
      .option('--timeout-secs <n>', 'lifetime limit of the new sandbox', parseInteger(0, MAX_TTL_SECS)),
    'until the new sandbox is running, printing why it is pending; exits 1 if it terminated instead (with --mode lazy, first until the clip index the executor builds after the push is there)',
  )
    .addHelpText(
      'after',
      examples([
        'cryo snapshots restore snap-0123abcd4567 --wait',
        'cryo snap restore snap-0123abcd4567 --mode lazy --executor exec-b -- python3 -m http.server',
        'cryo snap restore tag:golden --on-expired base_image --wait',
        'SB=$(cryo snap restore snap-0123abcd4567 --wait --quiet)',
      ]),
    )
    .action(async (ref: string, command: string[], flags: RestoreFlags, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const id = await ctx.client.resolveSnapshotId(ref);
      if (flags.mode === 'lazy' && flags.wait === true) await waitUntilIndexed(ctx, id, flags);
      const created = await ctx.client.restoreSnapshot(id, {
        mode: flags.mode,
        executor_id: flags.executor,
        command: command.length > 0 ? command : undefined,
        env: flags.env,
        labels: flags.label,
        timeout_secs: flags.timeoutSecs,
        on_expired: flags.onExpired,
      });
      // A fallback to the base image is never silent.
      if (created.fallback !== undefined) ctx.out.note(`snapshot ${id} is gone: ${created.fallback.reason}`);
      if (flags.wait === true) {
        await waitUntilStarted(ctx, created.sandbox_id, flags);
        return;
      }
      ctx.out.result(created, {
        ids: [created.sandbox_id],
        human: () => created.fallback === undefined
          ? `restoring snapshot ${id} into sandbox ${created.sandbox_id} (${created.status})`
          : `starting sandbox ${created.sandbox_id} from the base image of snapshot ${id} (${created.status})`,
      });
    });

  addForkOptions(
    snapshots
      .command('fork')
      .description('start --count sandboxes from one snapshot, spread over executors; each runs or fails on its own')
      .argument('<id>', SNAPSHOT_REF)
      .argument('[command...]', "command for every fork instead of the snapshot's; put it after --")
      .addOption(onExpiredOption()),
  )
    .addHelpText(
      'after',
      examples([
        'cryo snapshots fork snap-0123abcd4567 --count 10',
        'cryo snap fork tag:golden --count 4 --mode lazy --executor exec-a,exec-b --label run=7 --wait',
        'cryo snap fork snap-0123abcd4567 --count 2 --quiet -- python3 worker.py',
      ]),
    )
    .action(async (ref: string, command: string[], flags: ForkFlags, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const id = await ctx.client.resolveSnapshotId(ref);
      if (flags.mode === 'lazy' && flags.wait === true) await waitUntilIndexed(ctx, id, flags);
      const answer = await ctx.client.forkSnapshot(id, { ...forkBody(command, flags), on_expired: flags.onExpired });
      await reportForks(ctx, answer, flags);
    });
}

/** --wait of create: one progress line (redrawn on a TTY) until active; anything else fails. */
async function waitUntilActive(ctx: CommandContext, id: string, flags: WaitFlags): Promise<Snapshot> {
  const line = new ProgressLine(ctx.out.stderr, !ctx.out.quiet);
  let snapshot: Snapshot;
  try {
    snapshot = await ctx.client.waitForSnapshot(id, {
      intervalMs: ctx.pollIntervalMs,
      timeoutMs: waitTimeoutMs(flags),
      onUpdate: (snap) => line.update(snapshotProgressLine(snap)),
    });
  } finally {
    line.finish();
  }
  ctx.out.result(snapshot, { ids: [snapshot.snapshot_id], human: () => snapshotFields(snapshot, ctx.now) });
  if (snapshot.status !== 'active') {
    // failed carries the error; expired or deleted means someone else got there first.
    const message =
      snapshot.error === null ? `snapshot ${id} is ${snapshot.status}, not active` : `snapshot ${id} failed: ${snapshot.error}`;
    throw new CryoClientError(`SNAPSHOT_${snapshot.status.toUpperCase()}`, message);
  }
  return snapshot;
}

/**
 * --wait of a lazy restore: the executor that pushed a snapshot builds its clip index after the
 * snapshot is active, and the server refuses a lazy restore until the index is there. Waits while
 * the snapshot is creating or indexing; then the restore request gets the server's answer for
 * whatever state it is in (indexed, indexing failed, expired, local with no index).
 */
async function waitUntilIndexed(ctx: CommandContext, id: string, flags: WaitFlags): Promise<void> {
  let noted = false;
  await pollUntil(() => ctx.client.getSnapshot(id), (snap) => !indexPending(snap), {
    intervalMs: ctx.pollIntervalMs,
    timeoutMs: waitTimeoutMs(flags),
    onUpdate: (snap) => {
      if (noted || !indexPending(snap)) return;
      ctx.out.note(`${id}: waiting for its clip index (a lazy restore reads through it)`);
      noted = true;
    },
    describe: (snap) => `snapshot ${id} is ${snap.status} and has no clip index yet`,
  });
}

/** Creating, or active in a registry with its clip index neither built nor failed yet. */
function indexPending(snap: Snapshot): boolean {
  if (snap.status === 'creating') return true;
  const inRegistry = snap.image_ref !== null && !snap.image_ref.startsWith(`${LOCAL_SNAPSHOT_REPOSITORY}:`);
  return snap.status === 'active' && inRegistry && snap.clip_index_ref === null && snap.clip_error === null;
}

/** --wait of delete: until deleted (or expired); a snapshot the server no longer knows is deleted too. */
async function waitUntilDeleted(ctx: CommandContext, id: string, flags: WaitFlags): Promise<Snapshot | null> {
  const read = async (): Promise<Snapshot | null> => {
    try {
      return await ctx.client.getSnapshot(id);
    } catch (err) {
      if (err instanceof CryoApiError && err.status === 404) return null;
      throw err;
    }
  };
  return pollUntil(read, (snap) => snap === null || snap.status === 'deleted' || snap.status === 'expired', {
    intervalMs: ctx.pollIntervalMs,
    timeoutMs: waitTimeoutMs(flags),
    describe: (snap) => `snapshot ${id} is still ${snap?.status ?? 'there'}`,
  });
}

