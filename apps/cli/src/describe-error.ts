/**
 * The one place where failures become what the CLI prints: one line, `error: <message> (<code>)`,
 * followed by `; <hint>` where the user can do something about it. Never includes the API key.
 */
import { CryoApiError, CryoClientError, CryoConnectionError } from './client-errors';

export interface ErrorContext {
  /** Whether a key was sent at all (a 401 then means "wrong key" rather than "no key"). */
  apiKeySent: boolean;
}

export function describeError(err: unknown, context: ErrorContext): string {
  const hint = hintFor(err, context);
  return `error: ${headline(err)}${hint === undefined ? '' : `; ${hint}`}\n`;
}

function headline(err: unknown): string {
  if (err instanceof CryoConnectionError) {
    // The message already names the server and the code: "cannot reach cryo server at URL (ECONNREFUSED)".
    return err.message.includes(err.code) ? err.message : `${err.message} (${err.code})`;
  }
  if (err instanceof CryoApiError) {
    // HTTP_<status> codes (not cryo's error shape) add nothing: the message names the status.
    const tags = err.code.startsWith('HTTP_') ? [] : [err.code];
    // The request id helps only to find a server-side failure in the server's log.
    if (err.requestId !== undefined && err.status >= 500) tags.push(`request ${err.requestId}`);
    return tags.length === 0 ? err.message : `${err.message} (${tags.join(', ')})`;
  }
  if (err instanceof CryoClientError) return `${err.message} (${err.code})`;
  if (err instanceof Error) return err.message;
  return String(err);
}

function hintFor(err: unknown, context: ErrorContext): string | undefined {
  if (err instanceof CryoConnectionError) {
    switch (err.code) {
      case 'ECONNREFUSED':
        return `is it running? start it with \`npm start\`, or point --server / CRYO_SERVER at the right address`;
      case 'ENOTFOUND':
      case 'EAI_AGAIN':
        return 'the host name does not resolve; check --server / CRYO_SERVER';
      default:
        return 'check that the server is running and that --server / CRYO_SERVER points at it';
    }
  }
  if (err instanceof CryoApiError) {
    if (err.status === 401) {
      return context.apiKeySent
        ? 'the server rejected the API key; check CRYO_API_KEY or the file given to --api-key-file'
        : 'the server wants an API key: set CRYO_API_KEY, or pass --api-key-file FILE';
    }
    if (err.status === 403) return 'the API key in use (CRYO_API_KEY / --api-key-file) is not allowed to do this';
  }
  return undefined;
}
