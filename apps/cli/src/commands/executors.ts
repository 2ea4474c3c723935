import type { Command } from 'commander';
import type { Cli } from '../cli';
import { executorTable, healthFields } from '../views';
import { examples } from './shared';

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
      const answer = await ctx.client.listExecutorsResponse();
      const items = Array.isArray(answer) ? answer : answer.items;
      ctx.out.result(answer, {
        ids: items.map((ex) => ex.executor_id),
        human: () => (items.length === 0 ? 'no executors' : executorTable(items, ctx.now)),
      });
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
      ctx.out.result(health, { human: () => `${ctx.client.server}: ok\n${healthFields(health)}` });
    });
}
