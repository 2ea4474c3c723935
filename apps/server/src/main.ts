/** `cryo-server --config FILE`: load the config, start, and shut down cleanly on SIGTERM/SIGINT. */
import { parseArgs } from 'node:util';
import { ConfigError } from '@cryo/registry-auth';
import { SERVER_VERSION } from './app';
import { loadServerConfig } from './config';
import { startServer } from './server';

const HELP = `Usage: cryo-server --config FILE

The cryo control-plane server: REST API (/v1), executor protocol (/internal/v1),
SQLite state, snapshot TTL reaper. Logs are JSON lines on stdout.

Options:
  -c, --config FILE   server configuration (YAML); see configs/server-config.yaml.
                      \${VAR} in any value is replaced from the environment.
  -h, --help          show this help
  -v, --version       print the version

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
      },
      strict: true,
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
    process.stderr.write(`cryo-server: ${message}\n`);
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

process.exitCode = await main();
