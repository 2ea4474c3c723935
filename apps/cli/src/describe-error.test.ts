import { describe, expect, it } from 'vitest';
import { CryoApiError, CryoClientError, CryoConnectionError } from './client-errors';
import { describeError } from './describe-error';

const api = (status: number, code: string, message: string, requestId?: string): CryoApiError =>
  new CryoApiError({ status, code, message, requestId, method: 'GET', path: '/v1/x' });

describe('describeError', () => {
  it('prints API errors as "error: <message> (<code>)"', () => {
    expect(describeError(api(404, 'NOT_FOUND', 'sandbox sbx-1 not found'), { apiKeySent: false })).toBe(
      'error: sandbox sbx-1 not found (NOT_FOUND)\n',
    );
  });

  it('adds the request id of a server error only', () => {
    expect(describeError(api(409, 'CONFLICT', 'sandbox sbx-1 is pending', 'req-41'), { apiKeySent: false })).toBe(
      'error: sandbox sbx-1 is pending (CONFLICT)\n',
    );
    expect(describeError(api(500, 'INTERNAL', 'internal error', 'req-42'), { apiKeySent: false })).toBe(
      'error: internal error (INTERNAL, request req-42)\n',
    );
  });

  it('does not repeat the status of a non-cryo error answer', () => {
    expect(describeError(api(502, 'HTTP_502', 'server answered HTTP 502 to GET /v1/x'), { apiKeySent: false })).toBe(
      'error: server answered HTTP 502 to GET /v1/x\n',
    );
  });

  it('tells how to start the server when the connection is refused', () => {
    const err = new CryoConnectionError(
      'http://127.0.0.1:8900',
      'ECONNREFUSED',
      'cannot reach cryo server at http://127.0.0.1:8900 (ECONNREFUSED)',
      new Error('connect ECONNREFUSED'),
    );
    expect(describeError(err, { apiKeySent: false })).toBe(
      'error: cannot reach cryo server at http://127.0.0.1:8900 (ECONNREFUSED); is it running? start it with `npm start`, or point --server / CRYO_SERVER at the right address\n',
    );
  });

  it('mentions CRYO_API_KEY on 401, differently with and without a key', () => {
    const err = api(401, 'UNAUTHORIZED', 'missing API key');
    expect(describeError(err, { apiKeySent: false })).toBe(
      'error: missing API key (UNAUTHORIZED); the server wants an API key: set CRYO_API_KEY, or pass --api-key-file FILE\n',
    );
    expect(describeError(err, { apiKeySent: true })).toContain('rejected the API key; check CRYO_API_KEY');
  });

  it('prints client errors with their code and plain errors as they are', () => {
    expect(describeError(new CryoClientError('SNAPSHOT_FAILED', 'snapshot snap-1 failed: boom'), { apiKeySent: false })).toBe(
      'error: snapshot snap-1 failed: boom (SNAPSHOT_FAILED)\n',
    );
    expect(describeError(new Error('odd'), { apiKeySent: false })).toBe('error: odd\n');
  });
});
