/**
 * The `cryo` command tree. `run` is the whole CLI as a function of argv and IO, so tests drive
 * it in-process against a fake server; main.ts only binds it to the real process.
 */
import { Command, CommanderError } from 'commander';
import packageJson from '../package.json' with { type: 'json' };
import { Cli, processIO, type CliIO } from './cli';
import { DEFAULT_NAMESPACE, DEFAULT_SERVER } from './client';
import { registerClipCommands } from './clip/index';
import { registerExecutorCommands, registerHealthCommand } from './commands/executors';
import { registerSandboxCommands } from './commands/sandboxes';
import { examples } from './commands/shared';
import { registerSnapshotCommands } from './commands/snapshots';
import { describeError } from './describe-error';

export function buildProgram(cli: Cli): Command {
  const program = new Command('cryo')
    .description('cryo: snapshot running sandboxes into an OCI registry and restore them on any host')
    .option('--server <url>', `cryo server URL (env CRYO_SERVER, default ${DEFAULT_SERVER})`)
    .option('-n, --namespace <ns>', `namespace (env CRYO_NAMESPACE, default ${DEFAULT_NAMESPACE})`)
    .option('--api-key-file <path>', 'read the API key from this file (otherwise env CRYO_API_KEY)')
    .option('--json', "print the server's JSON answer instead of tables")
    .option('-q, --quiet', 'print only ids, and no progress')
    .version(packageJson.version, '-V, --version', 'print the version of the cryo CLI')
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .showSuggestionAfterError(true)
    .addHelpText(
      'after',
      `
Environment:
  CRYO_SERVER      server URL, when --server is not given
  CRYO_NAMESPACE   namespace, when --namespace is not given
  CRYO_API_KEY     API key, sent as "Authorization: Bearer <key>" (never a flag, so it stays out of ps and shell history)
${examples([
  'cryo health',
  'cryo sandboxes create busybox:latest --wait -- sleep 3600',
  'cryo snapshots create sbx-0123abcd4567 --wait',
  'cryo snapshots restore snap-0123abcd4567 --mode lazy --wait',
  'cryo -n team-a sandboxes list --json',
])}`,
    );

  registerSandboxCommands(program, cli);
  registerSnapshotCommands(program, cli);
  registerExecutorCommands(program, cli);
  registerHealthCommand(program, cli);
  registerClipCommands(program);

  // Every command, also those registered elsewhere, reports to the injected IO and throws instead of exiting.
  forEachCommand(program, (cmd) => {
    cmd.exitOverride().configureOutput({
      writeOut: (s) => cli.io.stdout.write(s),
      writeErr: (s) => cli.io.stderr.write(s),
    });
  });
  return program;
}

function forEachCommand(cmd: Command, visit: (cmd: Command) => void): void {
  visit(cmd);
  for (const sub of cmd.commands) forEachCommand(sub, visit);
}

/** Runs the CLI once; resolves to the exit code. Never throws. */
export async function run(argv: readonly string[], io: CliIO = processIO): Promise<number> {
  const cli = new Cli(io);
  try {
    const program = buildProgram(cli);
    if (argv.length === 0) {
      program.outputHelp();
      return 0;
    }
    await program.parseAsync([...argv], { from: 'user' });
    return cli.exitCode;
  } catch (err) {
    // commander has printed its own message (usage error) or the help/version text already.
    if (err instanceof CommanderError) return err.exitCode;
    io.stderr.write(describeError(err, { apiKeySent: cli.apiKeySent }));
    return 1;
  }
}
