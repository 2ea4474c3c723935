/**
 * What can go wrong when talking to a cryo server, as values with a stable `code`. The CLI maps
 * them to messages in describeError.ts; programs that import CryoClient can switch on the class.
 */

export class CryoClientError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CryoClientError';
    this.code = code;
  }
}

/** The server answered with an error status (its `{"error":{...}}` body, or a bare HTTP status). */
export class CryoApiError extends CryoClientError {
  readonly status: number;
  readonly details: unknown;
  readonly requestId: string | undefined;
  readonly method: string;
  readonly path: string;
  constructor(init: {
    status: number;
    code: string;
    message: string;
    details?: unknown;
    requestId?: string;
    method: string;
    path: string;
  }) {
    super(init.code, init.message);
    this.name = 'CryoApiError';
    this.status = init.status;
    this.details = init.details;
    this.requestId = init.requestId;
    this.method = init.method;
    this.path = init.path;
  }
}

/** No HTTP answer at all: refused, unresolvable host, reset, timed out. `code` is the errno-style code. */
export class CryoConnectionError extends CryoClientError {
  readonly server: string;
  constructor(server: string, code: string, message: string, cause: unknown) {
    super(code, message, { cause });
    this.name = 'CryoConnectionError';
    this.server = server;
  }
}

/** A 2xx answer whose body does not match the API schema (a different server, or version skew). */
export class CryoResponseError extends CryoClientError {
  constructor(message: string) {
    super('BAD_RESPONSE', message);
    this.name = 'CryoResponseError';
  }
}

/** A wait (`--wait`, waitForSandbox, waitForSnapshot) gave up before the resource got there. */
export class CryoWaitTimeoutError extends CryoClientError {
  constructor(message: string) {
    super('WAIT_TIMEOUT', message);
    this.name = 'CryoWaitTimeoutError';
  }
}
