/**
 * An executor's failure codes are the executor's words, not the API caller's: an executor whose
 * registry rejected it says UNAUTHORIZED, and that must not reach the caller as a 401 (their API
 * key was fine). The one mapping from what an executor reports to the public API's codes.
 */
import { CryoError, type ErrorCode } from '@cryo/snapshot';

/** Codes that describe the sandbox or the request as the caller sent it: they keep their meaning. */
const CALLER_FACING: ReadonlySet<string> = new Set<ErrorCode>(['CONFLICT', 'UNPROCESSABLE', 'TIMEOUT', 'GONE']);

/**
 * The public error for a failure `executorCode` reported by executor `executorId` while doing
 * `doing` ("exec in sandbox X"). NOT_FOUND becomes CONFLICT (the sandbox the caller named exists;
 * its container is what is missing on the executor); anything that would blame the caller
 * (UNAUTHORIZED, FORBIDDEN, INVALID_REQUEST, ...) or the executor itself (INTERNAL, unknown codes)
 * becomes UNAVAILABLE (503). The executor's own code stays in `details.executor_code`.
 */
export function executorFailure(executorId: string, executorCode: string, message: string, doing: string): CryoError {
  const code: ErrorCode = CALLER_FACING.has(executorCode)
    ? (executorCode as ErrorCode)
    : executorCode === 'NOT_FOUND' ? 'CONFLICT' : 'UNAVAILABLE';
  return new CryoError(code, `${doing} failed on executor ${executorId}: ${message}`, { executor_code: executorCode });
}
