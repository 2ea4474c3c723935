import { pino, type Logger } from 'pino';
import { REDACT_PATHS } from '@cryo/registry-auth';

export function createLogger(name: string, level: string): Logger {
  return pino({ name, level, redact: { paths: [...REDACT_PATHS], censor: '[redacted]' } });
}
