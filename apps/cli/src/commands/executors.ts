import type { Command } from 'commander';
import type { Cli } from '../cli';
import { executorTable } from '../views';
import { examples, printPage } from './shared';

export function registerExecutorCommands(program: Command, cli: Cli): void {
  const executors = program
    .command('executors')
    .alias('executor')
    .description('the executor daemons that run sandboxes, one per host')
    .addHelpText('after', examples(['cryo executors list']));

  executors
    .command('list')
    .alias('ls')
    .description('list executors: state, host, sandboxes, capacity, lazy-restore support, cached snapshot images, last heartbeat')
    .addHelpText('after', examples(['cryo executors list', 'cryo executors list --json']))
    .action(async (_flags: object, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const page = await ctx.client.listExecutors();
      printPage(ctx.out, page, {
        noun: 'executors',
        id: (ex) => ex.executor_id,
        table: (items) => executorTable(items, ctx.now),
      });
      if (!ctx.out.json) for (const ex of page.items) for (const warning of ex.warnings) ctx.out.note(`warning: ${warning}`);
    });
}

export function registerHealthCommand(program: Command, cli: Cli): void {
  program
    .command('health')
    .description("check that the server answers (GET /healthz); exits 0 if it does, 1 if not")
    .addHelpText('after', examples(['cryo health', 'cryo health --quiet && echo up']))
    .action(async (_flags: object, cmd: Command) => {
      const ctx = await cli.context(cmd);
      const health = await ctx.client.health();
      const version = health.version === undefined ? '' : `, version ${health.version}`;
      ctx.out.result(health, { human: () => `cryo server at ${ctx.client.server}: ${health.status}${version}` });
    });
}
