/** pino, with secrets removed by configuration: REDACT_PATHS from registry-auth, plus request headers. */
import { pino, type DestinationStream, type Logger } from 'pino';
import { REDACT_PATHS } from '@cryo/registry-auth';

export const SERVER_REDACT_PATHS: readonly string[] = [
  ...REDACT_PATHS,
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'config.auth',
  // A postgres:// URL carries its password; paths are harmless but one rule covers both.
  'config.database',
  'auth.api_keys',
  'auth.executor_token',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: 'cryo-server' },
    redact: { paths: [...SERVER_REDACT_PATHS], censor: '[REDACTED]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}
