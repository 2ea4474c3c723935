/**
 * Every error leaves the server as `{"error":{"code","message","details","request_id"}}`. The
 * status comes from the error code (libs/snapshot decides that mapping); validation errors name
 * the field (`body.ttl_secs: ...`); anything unexpected is a 500 that shows the request id and
 * nothing of the stack. That holds for fastify's own refusals (a malformed URL, a body over the
 * limit, no such route) and for HTTP that Node cannot parse, answered on the socket itself.
 */
import { maxHeaderSize, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { CryoError, ERROR_STATUS, newRequestId, type ErrorBody, type ErrorCode } from '@cryo/snapshot';

/**
 * The router's limit on one path parameter: the request line cannot be longer (Node's header
 * limit), so the route schemas are the only limits on ids, and their refusals name the parameter.
 */
export const MAX_PARAM_LENGTH = maxHeaderSize;

export function sendError(reply: FastifyReply, request: FastifyRequest, error: CryoError): FastifyReply {
  const body: ErrorBody = {
    error: {
      code: error.code,
      message: error.message,
      ...(error.details === undefined ? {} : { details: error.details }),
      request_id: request.id,
    },
  };
  // Also on answers no onRequest hook saw (the router's own refusals).
  return reply.code(error.status).header('x-request-id', request.id).type('application/json').send(body);
}

/** Maps anything thrown in a handler or by fastify itself to a CryoError. */
export function toCryoError(error: unknown, request?: FastifyRequest): CryoError | null {
  if (error instanceof CryoError) return error;
  if (hasZodFastifySchemaValidationErrors(error)) {
    const where = error.validationContext ?? 'request';
    const issues = error.validation.flatMap((v) => {
      const field = [where, ...v.instancePath.split('/').filter((p) => p !== '')].join('.');
      // A misspelt key is named where it is, like every other refusal.
      const keys = v.keyword === 'unrecognized_keys' && Array.isArray(v.params.keys) ? v.params.keys.map(String) : [];
      if (keys.length > 0) return keys.map((key) => ({ field: `${field}.${key}`, message: 'unknown field' }));
      return [{ field, message: v.message ?? 'invalid' }];
    });
    const message = issues.map((i) => `${i.field}: ${i.message}`).join('; ');
    return new CryoError('INVALID_REQUEST', message, { issues });
  }
  if (isResponseSerializationError(error)) return null;
  if (isFastifyError(error) && error.statusCode !== undefined && error.statusCode < 500) {
    return new CryoError(codeForStatus(error.statusCode), clientMessage(error, request));
  }
  return null;
}

export function registerErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: unknown, request, reply) => {
    const mapped = toCryoError(error, request);
    if (mapped !== null) {
      if (mapped.status >= 500) request.log.warn({ code: mapped.code, error: mapped.message }, 'request failed');
      return sendError(reply, request, mapped);
    }
    request.log.error({ err: error }, 'unexpected error');
    return sendError(
      reply,
      request,
      new CryoError('INTERNAL', `internal server error (request ${request.id}); the server log has the details`),
    );
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, request, new CryoError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0] ?? ''}`)),
  );
}

function isFastifyError(error: unknown): error is FastifyError {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' && error.code.startsWith('FST_');
}

function codeForStatus(status: number): ErrorCode {
  const match = (Object.entries(ERROR_STATUS) as Array<[ErrorCode, number]>).find(([, s]) => s === status);
  return match?.[0] ?? 'INVALID_REQUEST';
}

function clientMessage(error: FastifyError, request: FastifyRequest | undefined): string {
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'body: Content-Type must be application/json';
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return 'body: empty body with Content-Type application/json; send {} or no Content-Type';
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      const limit = request?.routeOptions.bodyLimit;
      return `body: larger than the ${limit === undefined ? 'allowed size' : `${limit} bytes this route accepts`}`;
    }
    case 'FST_ERR_BAD_URL':
      return `path: ${malformedSegment(request?.url ?? '')} is not valid percent-encoded UTF-8 (write "%" as %25)`;
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return `path: a path parameter is longer than ${MAX_PARAM_LENGTH} characters`;
    default:
      return error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error.message.includes('JSON')
        ? `body: not valid JSON (${error.message})`
        : error.message;
  }
}

/** The first path segment of `url` that does not percent-decode, quoted, for a message. */
function malformedSegment(url: string): string {
  const path = url.split('?')[0] ?? '';
  for (const segment of path.split('/')) {
    try {
      decodeURIComponent(segment);
    } catch {
      return `the path segment "${segment.slice(0, 100)}"`;
    }
  }
  return `the path "${path.slice(0, 200)}"`;
}

/**
 * fastify's `frameworkErrors`: what the router refuses before any route runs (a malformed
 * percent-escape, an over-long parameter) answers in cryo's envelope like every other error.
 */
export function frameworkError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return sendError(reply, request, toCryoError(error, request) ?? new CryoError('INTERNAL', `internal server error (request ${request.id})`));
}

interface SocketWithResponse extends Duplex {
  _httpMessage?: { headersSent?: boolean } | null;
}

/**
 * fastify's `clientErrorHandler`: HTTP that Node cannot parse (a bad request line, headers
 * over Node's limit, a request that never arrives) has no request or reply object, so the
 * envelope is written on the socket, which is then closed. Nothing is written when the peer is
 * gone or a response has already begun on this connection.
 */
export function answerClientError(log: FastifyBaseLogger, error: Error & { code?: string; reason?: string }, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const cryo = clientErrorOf(error);
  const requestId = newRequestId();
  log.debug({ code: error.code, request_id: requestId, error: error.message }, 'malformed HTTP request');
  const inFlight = (socket as SocketWithResponse)._httpMessage?.headersSent === true;
  if (!socket.writable || inFlight) {
    socket.destroy();
    return;
  }
  const body: ErrorBody = { error: { code: cryo.code, message: cryo.message, request_id: requestId } };
  const text = JSON.stringify(body);
  socket.end(
    `HTTP/1.1 ${cryo.status} ${STATUS_CODES[cryo.status] ?? ''}\r\n` +
      'Content-Type: application/json; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(text)}\r\n` +
      `x-request-id: ${requestId}\r\n` +
      'Connection: close\r\n\r\n' +
      text,
  );
}

function clientErrorOf(error: Error & { code?: string; reason?: string }): CryoError {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new CryoError('HEADERS_TOO_LARGE', `the request line and headers are larger than ${maxHeaderSize} bytes`);
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new CryoError('REQUEST_TIMEOUT', 'the request was not received completely in time');
    default:
      return new CryoError('INVALID_REQUEST', `malformed HTTP request: ${error.reason ?? error.message} (${error.code ?? 'no code'})`);
  }
}
