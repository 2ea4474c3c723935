import { parseArgs } from 'node:util';
import { ConfigError } from '@cryo/registry-auth';
import { loadExecutorConfig } from './config';
import { createLogger } from './logger';
import { Executor } from './executor';

const HELP = `cryo-executor: the cryo daemon of one host. It runs sandboxes with Docker, snapshots them
(pause, commit, unpause, push to the configured registry) and restores them. It dials the cryo
server at server_url (or the first answering of server_urls), heartbeats its observed state and long-polls for operations.

Usage: cryo-executor --config FILE

Options:
  --config FILE   executor config (YAML), e.g. configs/executor-config.yaml
  --help          show this text

Environment:
  \${VAR} in the config file is replaced from the environment; a missing variable is an error.
`;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { config: { type: 'string' }, help: { type: 'boolean' } } });
  if (values.help === true) {
    process.stdout.write(HELP);
    return;
  }
  if (values.config === undefined) {
    process.stderr.write(`error: --config FILE is required\n\n${HELP}`);
    process.exit(2);
  }
  let config;
  try {
    config = loadExecutorConfig(values.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger('cryo-executor', config.log_level);
  const holdPausedMs = Number(process.env.CRYO_FAULT_HOLD_PAUSED_MS ?? '0');
  const failCreates = Number(process.env.CRYO_FAULT_FAIL_CREATES ?? '0');
  const executor = new Executor(config, log, {
    ...(holdPausedMs > 0 ? { holdPausedMs } : {}),
    ...(failCreates > 0 ? { failCreates } : {}),
  });
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    executor.stop().then(() => process.exit(0), () => process.exit(1));
    setTimeout(() => process.exit(1), 10_000).unref();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  await executor.start();
}

main().catch((err: unknown) => {
  process.stderr.write(`cryo-executor: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
