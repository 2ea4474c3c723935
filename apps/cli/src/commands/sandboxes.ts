import { Option, type Command } from 'commander';
import { SandboxStatusSchema, type CreateSandboxBody, type RestoreMode, type Sandbox } from '@cryo/snapshot';
import { collectKeyValue, parseInteger, parsePositiveNumber } from '../args';
import type { Cli, CommandContext } from '../cli';
import { CryoClientError } from '../client-errors';
import { ProgressLine } from '../progress';
import { describeOutcome, sandboxFields, sandboxProgressLine, sandboxTable } from '../views';
import { addForkOptions, forkBody, modeOption, reportForks, type ForkFlags } from './lifecycle';
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

interface CreateFlags extends WaitFlags {
  env?: Record<string, string>;
  label?: Record<string, string>;
  cpus?: number;
  memoryMb?: number;
  timeoutSecs?: number;
  executor?: string;
}

export function registerSandboxCommands(program: Command, cli: Cli): void {
  const sandboxes = program
    .command('sandboxes')
    .aliases(['sandbox', 'sb'])
    .description('create, list, inspect, exec in, fork, roll back and delete sandboxes')
    .addHelpText(
      'after',
      examples([
        'cryo sandboxes create busybox:latest --wait -- sleep 3600',
        'cryo sb list --status running',
        'cryo sb exec sbx-0123abcd4567 -- cat /etc/hostname',
        'cryo sb rollback sbx-0123abcd4567 tag:before-upgrade --wait',
      ]),
    );

  addWaitOptions(
    sandboxes
      .command('create')
      .description('start a sandbox from an image; the server answers at once and starts it in the background')
      .argument('<image>', 'container image, e.g. busybox:latest')
      .argument('[command...]', 'command to run instead of the image default; put it after --')
      .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', collectKeyValue)
      .option('-l, --label <KEY=VALUE>', 'label (repeatable)', collectKeyValue)
      .option('--cpus <n>', 'CPU limit, e.g. 0.5', parsePositiveNumber)
      .option('--memory-mb <n>', 'memory limit in MiB', parseInteger(1))
      .option('--timeout-secs <n>', 'lifetime limit; the sandbox is terminated (outcome timeout) after it', parseInteger(0))
      .option('--executor <id>', 'run on this executor instead of letting the server place it'),
    'until the sandbox is running, printing why it is pending; exits 1 if it terminated instead',
  )
    .addHelpText(
      'after',
      examples([
        'cryo sandboxes create busybox:latest -- sleep 3600',
        'cryo sb create python:3.12-slim --env MODE=test --label team=ml --cpus 1 --memory-mb 512 --wait',
        'ID=$(cryo sb create busybox:latest --quiet -- sleep 600)',
      ]),
    )
    .action(async (image: string, command: string[], flags: CreateFlags, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const resources =
        flags.cpus === undefined && flags.memoryMb === undefined
          ? undefined
          : { cpus: flags.cpus, memory_mb: flags.memoryMb };
      const body: CreateSandboxBody = {
        image,
        command: command.length > 0 ? command : undefined,
        env: flags.env,
        labels: flags.label,
        resources,
        timeout_secs: flags.timeoutSecs,
        executor_id: flags.executor,
      };
      const created = await ctx.client.createSandbox(body);
      if (flags.wait === true) {
        await waitUntilStarted(ctx, created.sandbox_id, flags);
        return;
      }
      ctx.out.result(created, {
        ids: [created.sandbox_id],
        human: () => `created sandbox ${created.sandbox_id} (${created.status})`,
      });
    });

  addListOptions(
    sandboxes
      .command('list')
      .alias('ls')
      .description('list the sandboxes of the namespace, newest first')
      .addOption(new Option('--status <status>', 'only sandboxes in this status').choices(SandboxStatusSchema.options)),
    'sandboxes',
  )
    .addHelpText('after', examples(['cryo sandboxes list', 'cryo sb ls --status running --label team=ml --all']))
    .action(async (flags: ListFlags & { status?: string }, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const page = await listPage(flags, (options) => ctx.client.listSandboxes(options));
      printPage(ctx.out, page, {
        noun: 'sandboxes',
        id: (sb) => sb.sandbox_id,
        table: (items) => sandboxTable(items, ctx.now),
      });
    });

  sandboxes
    .command('get')
    .description('show one sandbox')
    .argument('<id>', 'sandbox id')
    .addHelpText('after', examples(['cryo sandboxes get sbx-0123abcd4567', 'cryo sb get sbx-0123abcd4567 --json']))
    .action(async (id: string, _flags: object, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const sandbox = await ctx.client.getSandbox(id);
      ctx.out.result(sandbox, { ids: [sandbox.sandbox_id], human: () => sandboxFields(sandbox, ctx.now) });
    });

  sandboxes
    .command('delete')
    .alias('rm')
    .description('terminate a sandbox (outcome user); deleting a terminated sandbox again succeeds')
    .argument('<id>', 'sandbox id')
    .addHelpText('after', examples(['cryo sandboxes delete sbx-0123abcd4567']))
    .action(async (id: string, _flags: object, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const answer = await ctx.client.deleteSandbox(id);
      ctx.out.result(answer, { human: () => `sandbox ${id} is ${answer.status}` });
    });

  sandboxes
    .command('exec')
    .description(
      "run a command in a running sandbox and wait for it; its stdout and stderr are printed to this process's, and cryo exits with its exit code",
    )
    .argument('<id>', 'sandbox id')
    .argument('<command...>', 'the command and its arguments, after --')
    .option('--timeout-secs <n>', 'kill the command after this many seconds', parseInteger(1, 24 * 3600))
    .addHelpText(
      'after',
      examples([
        'cryo sandboxes exec sbx-0123abcd4567 -- ls -la /',
        "cryo sb exec sbx-0123abcd4567 --timeout-secs 30 -- sh -c 'echo hi > /tmp/x'",
        'cryo sb exec sbx-0123abcd4567 --json -- cat /etc/os-release   # {"exit_code","stdout","stderr"}',
      ]),
    )
    .action(async (id: string, command: string[], flags: { timeoutSecs?: number }, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const result = await ctx.client.exec(id, { command, timeout_secs: flags.timeoutSecs });
      if (ctx.out.json) {
        ctx.out.result(result, { human: () => '' });
      } else {
        ctx.out.stdout.write(result.stdout);
        ctx.out.stderr.write(result.stderr);
      }
      // An exit status outside 0..255 cannot be passed on; it still must not read as success.
      cli.exitCode = result.exit_code >= 0 && result.exit_code <= 255 ? result.exit_code : 1;
    });

  addForkOptions(
    sandboxes
      .command('fork')
      .description('snapshot a running sandbox and start --count sandboxes from it in one call (they start once the snapshot is active)')
      .argument('<id>', 'the running sandbox to fork')
      .argument('[command...]', 'command for every fork instead of the sandbox\'s; put it after --'),
  )
    .addHelpText(
      'after',
      examples([
        'cryo sandboxes fork sbx-0123abcd4567 --count 3',
        'cryo sb fork sbx-0123abcd4567 --count 10 --executor exec-a,exec-b --wait',
      ]),
    )
    .action(async (id: string, command: string[], flags: ForkFlags, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const answer = await ctx.client.forkSandbox(id, forkBody(command, flags));
      ctx.out.note(`snapshot ${answer.snapshot_id} of ${id} is being taken; the forks start once it is active`);
      await reportForks(ctx, answer, flags);
    });

  addWaitOptions(
    sandboxes
      .command('rollback')
      .description(
        'roll a running sandbox back in place to a snapshot: same id, labels, command and timeout; its container is replaced by one restored from the snapshot',
      )
      .argument('<id>', 'the running sandbox')
      .argument('<snapshot>', 'an active snapshot of the namespace: its id, or tag:NAME')
      .addOption(modeOption()),
    'until the sandbox runs again; exits 1 if the rollback failed (the sandbox then terminated, with the reason)',
  )
    .addHelpText(
      'after',
      examples([
        'cryo sandboxes rollback sbx-0123abcd4567 snap-0123abcd4567',
        'cryo sb rollback sbx-0123abcd4567 tag:before-upgrade --mode lazy --wait',
      ]),
    )
    .action(async (id: string, ref: string, flags: WaitFlags & { mode?: RestoreMode }, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const snapshotId = await ctx.client.resolveSnapshotId(ref);
      const answer = await ctx.client.rollbackSandbox(id, { snapshot_id: snapshotId, mode: flags.mode });
      if (flags.wait !== true) {
        ctx.out.result(answer, {
          ids: [answer.sandbox_id],
          human: () => `sandbox ${id} is ${answer.status}: rolling back to snapshot ${snapshotId} (${answer.restore_mode})`,
        });
        return;
      }
      const sandbox = await waitWithProgress(ctx, id, flags);
      ctx.out.result(sandbox, {
        ids: [sandbox.sandbox_id],
        human: () => sandbox.status === 'terminated'
          ? sandboxFields(sandbox, ctx.now)
          : `sandbox ${id} rolled back to snapshot ${snapshotId} (${answer.restore_mode}); running on ${sandbox.executor_id ?? 'an executor'}`,
      });
      if (sandbox.status === 'terminated') {
        throw new CryoClientError('SANDBOX_TERMINATED', `sandbox ${id} terminated: ${describeOutcome(sandbox.outcome) ?? 'no outcome given'}`);
      }
    });
}

/**
 * Polls until the sandbox runs or has terminated, with one status line on stderr (redrawn on a
 * TTY, a line per change otherwise): the restore's progress (pull bytes, mount) once its executor
 * reports it, else the pending reason.
 */
async function waitWithProgress(ctx: CommandContext, id: string, flags: WaitFlags): Promise<Sandbox> {
  const line = new ProgressLine(ctx.out.stderr, !ctx.out.quiet);
  try {
    return await ctx.client.waitForSandbox(id, {
      intervalMs: ctx.pollIntervalMs,
      timeoutMs: waitTimeoutMs(flags),
      onUpdate: (sb) => {
        if ((sb.status === 'pending' || sb.status === 'restoring') && (sb.progress !== null || sb.pending_reason !== null)) {
          line.update(sandboxProgressLine(sb));
        }
      },
    });
  } finally {
    line.finish();
  }
}

/**
 * --wait of create and restore: poll until the sandbox runs (print it) or has terminated
 * (print it, then fail with how it ended), showing its progress on stderr meanwhile.
 */
export async function waitUntilStarted(ctx: CommandContext, id: string, flags: WaitFlags): Promise<Sandbox> {
  const sandbox = await waitWithProgress(ctx, id, flags);
  ctx.out.result(sandbox, {
    ids: [sandbox.sandbox_id],
    human: () =>
      sandbox.status === 'terminated'
        ? sandboxFields(sandbox, ctx.now)
        : `sandbox ${sandbox.sandbox_id} is running on ${sandbox.executor_id ?? 'an executor'}`,
  });
  if (sandbox.status === 'terminated') {
    // Exit status 0 after --wait means "running now", so a sandbox that already ended is a failure too.
    const how = describeOutcome(sandbox.outcome) ?? 'no outcome given';
    const when = sandbox.started_at === null ? 'before it started' : 'already';
    throw new CryoClientError('SANDBOX_TERMINATED', `sandbox ${id} terminated ${when}: ${how}`);
  }
  return sandbox;
}
