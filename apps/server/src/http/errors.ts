/**
 * Every error leaves the server as `{"error":{"code","message","details","request_id"}}`. The
 * status comes from the error code (libs/snapshot decides that mapping); validation errors name
 * the field (`body.ttl_secs: ...`); anything unexpected is a 500 that shows the request id and
 * nothing of the stack.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { CryoError, ERROR_STATUS, type ErrorBody, type ErrorCode } from '@cryo/snapshot';

export function sendError(reply: FastifyReply, request: FastifyRequest, error: CryoError): FastifyReply {
  const body: ErrorBody = {
    error: {
      code: error.code,
      message: error.message,
      ...(error.details === undefined ? {} : { details: error.details }),
      request_id: request.id,
    },
  };
  return reply.code(error.status).type('application/json').send(body);
}

/** Maps anything thrown in a handler or by fastify itself to a CryoError. */
export function toCryoError(error: unknown): CryoError | null {
  if (error instanceof CryoError) return error;
  if (hasZodFastifySchemaValidationErrors(error)) {
    const where = error.validationContext ?? 'request';
    const issues = error.validation.map((v) => {
      const field = [where, ...v.instancePath.split('/').filter((p) => p !== '')].join('.');
      return { field, message: v.message ?? 'invalid' };
    });
    const message = issues.map((i) => `${i.field}: ${i.message}`).join('; ');
    return new CryoError('INVALID_REQUEST', message, { issues });
  }
  if (isResponseSerializationError(error)) return null;
  if (isFastifyError(error) && error.statusCode !== undefined && error.statusCode < 500) {
    return new CryoError(codeForStatus(error.statusCode), clientMessage(error));
  }
  return null;
}

export function registerErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: unknown, request, reply) => {
    const mapped = toCryoError(error);
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

function clientMessage(error: FastifyError): string {
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'body: Content-Type must be application/json';
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return 'body: empty body with Content-Type application/json; send {} or no Content-Type';
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'body: request body is too large';
    default:
      return error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error.message.includes('JSON')
        ? `body: not valid JSON (${error.message})`
        : error.message;
  }
}
