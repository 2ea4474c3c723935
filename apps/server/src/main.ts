/**
 * `cryo-server --config FILE`: load the config, start, and shut down cleanly on SIGTERM/SIGINT.
 * `cryo-server db copy --from PATH.db --to postgres://...`: move a SQLite catalogue to PostgreSQL.
 */
import { parseArgs } from 'node:util';
import { ConfigError } from '@cryo/registry-auth';
import { SERVER_VERSION } from './app';
import { loadServerConfig } from './config';
import { copyDatabase, CopyError } from './db/copy';
import { databasePassword, scrubSecret } from './db/target';
import { createLogger } from './logger';
import { startServer } from './server';

const HELP = `Usage: cryo-server --config FILE
       cryo-server db copy --from PATH.db --to postgres://USER:PASSWORD@HOST:5432/DB

The cryo control-plane server: REST API (/v1), executor protocol (/internal/v1),
state in SQLite (one server) or PostgreSQL (several replicas), snapshot TTL reaper.
Logs are JSON lines on stdout.

Options:
  -c, --config FILE   server configuration (YAML); see configs/server-config.yaml.
                      \${VAR} in any value is replaced from the environment.
  -h, --help          show this help
  -v, --version       print the version

db copy               copies a SQLite catalogue into PostgreSQL (stop the server first);
                      safe to run again: rows already there are kept, and every source row
                      is counted in the target before it reports success.
  --from PATH.db      the SQLite file (the old \`database\` setting)
  --to URL            the PostgreSQL URL (\${VAR} is not expanded here: use the shell)

Endpoints: GET /healthz, GET /metrics (Prometheus), GET /docs (API reference;
OpenAPI at /docs/json), GET /ui (web dashboard).
Stops gracefully on SIGTERM or SIGINT.
`;

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
        from: { type: 'string' },
        to: { type: 'string' },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (err) {
    process.stderr.write(`cryo-server: ${err instanceof Error ? err.message : String(err)}\n\n${HELP}`);
    return 2;
  }
  if (args.values.help === true) {
    process.stdout.write(HELP);
    return 0;
  }
  if (args.values.version === true) {
    process.stdout.write(`cryo-server ${SERVER_VERSION}\n`);
    return 0;
  }
  if (args.positionals.length > 0) return runCommand(args.positionals, args.values);
  const file = args.values.config;
  if (file === undefined) {
    process.stderr.write(`cryo-server: --config FILE is required\n\n${HELP}`);
    return 2;
  }

  let running;
  try {
    running = await startServer(loadServerConfig(file));
  } catch (err) {
    const message = err instanceof ConfigError ? `invalid configuration:\n${err.message}` : err instanceof Error ? err.message : String(err);
    // Start-up errors name the database; its password never reaches the terminal.
    process.stderr.write(`cryo-server: ${scrubSecret(message, passwordOf(file))}\n`);
    return 1;
  }

  const server = running;
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      server.server.logger.info({ signal }, 'shutting down');
      server.close().then(resolve, (err: unknown) => {
        server.server.logger.error({ err }, 'error during shutdown');
        resolve();
      });
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  return 0;
}

/** The database password of a config file, to scrub it from a start-up error (null when none). */
function passwordOf(file: string): string | null {
  try {
    return databasePassword(loadServerConfig(file).database);
  } catch {
    return null;
  }
}

async function runCommand(positionals: string[], values: { from?: string | undefined; to?: string | undefined }): Promise<number> {
  if (positionals.join(' ') !== 'db copy') {
    process.stderr.write(`cryo-server: unknown command "${positionals.join(' ')}"\n\n${HELP}`);
    return 2;
  }
  if (values.from === undefined || values.to === undefined) {
    process.stderr.write(`cryo-server: db copy needs --from PATH.db and --to postgres://...\n\n${HELP}`);
    return 2;
  }
  const password = databasePassword(values.to);
  try {
    const counts = await copyDatabase(values.from, values.to, { logger: createLogger('warn') });
    process.stdout.write('table             rows  inserted  verified\n');
    for (const c of counts) {
      process.stdout.write(`${c.table.padEnd(16)} ${String(c.source).padStart(5)} ${String(c.inserted).padStart(9)} ${String(c.verified).padStart(9)}\n`);
    }
    process.stdout.write('copy complete: every row of the SQLite file is in PostgreSQL\n');
    return 0;
  } catch (err) {
    const message = scrubSecret(err instanceof Error ? err.message : String(err), password);
    process.stderr.write(`cryo-server: db copy failed: ${message}${err instanceof CopyError ? '' : ' (nothing is lost: run it again)'}\n`);
    return 1;
  }
}

process.exitCode = await main();
