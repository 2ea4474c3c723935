/**
 * Issue 12 in the CLI: `cryo snapshots fork`, `cryo sandboxes fork` and `cryo sandboxes rollback`,
 * with the options and output they share.
 */
import { Option, type Command } from 'commander';
import { MAX_FORK_COUNT, OnExpiredSchema, RestoreModeSchema, type ForkResponse, type OnExpired, type RestoreMode, type Sandbox } from '@cryo/snapshot';
import { collectKeyValue, collectList, parseInteger } from '../args';
import type { CommandContext } from '../cli';
import { CryoClientError } from '../client-errors';
import { renderTable } from '../format';
import { describeOutcome } from '../views';
import { waitTimeoutMs, type WaitFlags } from './shared';

const MAX_TIMEOUT_SECS = 10 * 365 * 24 * 3600;

export interface ForkFlags extends WaitFlags {
  count: number;
  mode?: RestoreMode;
  executor?: string[];
  env?: Record<string, string>;
  label?: Record<string, string>;
  timeoutSecs?: number;
  onExpired?: OnExpired;
}

/** The options of both fork commands. */
export function addForkOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--count <n>', `how many sandboxes to start, 1-${MAX_FORK_COUNT}`, parseInteger(1, MAX_FORK_COUNT))
    .addOption(modeOption())
    .option('--executor <id>', 'spread the forks over these executors only (repeatable, or comma-separated; default: all, those holding the image first)', collectList)
    .option('-e, --env <KEY=VALUE>', 'environment variable of every fork (repeatable)', collectKeyValue)
    .option('-l, --label <KEY=VALUE>', 'label of every fork (repeatable)', collectKeyValue)
    .option('--timeout-secs <n>', 'lifetime limit of every fork', parseInteger(0, MAX_TIMEOUT_SECS))
    .option('--wait', 'wait until every fork runs or has terminated; exits 1 if any terminated')
    .option('--wait-timeout-secs <n>', 'with --wait: give up (exit 1) after this many seconds', parseInteger(1));
}

export function modeOption(): Option {
  return new Option(
    '--mode <mode>',
    'eager: run from the whole image, pulled if the executor lacks it; lazy: mount its clip index and fetch files on demand (default eager)',
  ).choices(RestoreModeSchema.options);
}

export function onExpiredOption(): Option {
  return new Option(
    '--on-expired <what>',
    'when the snapshot expired or was deleted: fail (default, the server answers 410) or base_image (start its base image instead, and say so)',
  ).choices(OnExpiredSchema.options);
}

/** The body fields both fork calls take, from the flags. */
export function forkBody(command: string[], flags: ForkFlags) {
  return {
    count: flags.count,
    mode: flags.mode,
    executor_ids: flags.executor,
    command: command.length > 0 ? command : undefined,
    env: flags.env,
    labels: flags.label,
    timeout_secs: flags.timeoutSecs,
  };
}

/** Prints a fork's answer (a fallback is said on stderr), or with --wait the forks once settled. */
export async function reportForks(ctx: CommandContext, answer: ForkResponse, flags: WaitFlags): Promise<void> {
  if (answer.fallback !== undefined) ctx.out.note(`snapshot ${answer.snapshot_id} is gone: ${answer.fallback.reason}`);
  if (flags.wait !== true) {
    ctx.out.result(answer, {
      ids: answer.sandboxes.map((s) => s.sandbox_id),
      human: () => `${answer.sandboxes.length} forks of snapshot ${answer.snapshot_id}:\n${forkTable(answer.sandboxes.map((s) => ({ ...s, detail: '' })))}`,
    });
    const unplaced = answer.sandboxes.filter((s) => s.status === 'terminated').length;
    if (unplaced > 0) {
      throw new CryoClientError('FORKS_TERMINATED', `${unplaced} of ${answer.sandboxes.length} forks could not be placed (cryo sandboxes get ID says why); the others start`);
    }
    return;
  }
  const settled = await Promise.all(answer.sandboxes.map((s) => ctx.client.waitForSandbox(s.sandbox_id, {
    intervalMs: ctx.pollIntervalMs,
    timeoutMs: waitTimeoutMs(flags),
  })));
  const failed = settled.filter((s) => s.status === 'terminated');
  ctx.out.result({ ...answer, sandboxes: settled }, {
    ids: settled.map((s) => s.sandbox_id),
    human: () => `${settled.length - failed.length} of ${settled.length} forks of snapshot ${answer.snapshot_id} running:\n` +
      forkTable(settled.map(forkRow)),
  });
  if (failed.length > 0) {
    throw new CryoClientError('FORKS_TERMINATED', `${failed.length} of ${settled.length} forks terminated; the others run`);
  }
}

function forkRow(sandbox: Sandbox): { sandbox_id: string; status: string; executor_id: string | null; detail: string } {
  return { sandbox_id: sandbox.sandbox_id, status: sandbox.status, executor_id: sandbox.executor_id, detail: describeOutcome(sandbox.outcome) ?? '' };
}

function forkTable(rows: ReadonlyArray<{ sandbox_id: string; status: string; executor_id: string | null; detail: string }>): string {
  return renderTable(['SANDBOX', 'STATUS', 'EXECUTOR', 'DETAIL'], rows.map((r) => [r.sandbox_id, r.status, r.executor_id ?? '-', r.detail]));
}
