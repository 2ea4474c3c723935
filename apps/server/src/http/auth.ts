/**
 * Bearer authentication. Keys are compared in constant time (as SHA-256 digests, so their length
 * does not leak either). With no API keys configured the public API is open; the server refuses
 * to start that way on anything but loopback (see config.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { CryoError } from '@cryo/snapshot';
import { sendError } from './errors';

const digest = (value: string): Buffer => createHash('sha256').update(value, 'utf8').digest();

export class BearerKeys {
  private readonly digests: Buffer[];

  constructor(keys: readonly string[]) {
    this.digests = keys.map(digest);
  }

  get isOpen(): boolean {
    return this.digests.length === 0;
  }

  accepts(presented: string): boolean {
    const candidate = digest(presented);
    // Compare against every key without stopping early.
    let ok = false;
    for (const known of this.digests) ok = timingSafeEqual(known, candidate) || ok;
    return ok;
  }
}

function bearerToken(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  if (header === undefined) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1] ?? null;
}

/** An onRequest hook answering 401 unless the request carries one of `keys`. */
export function requireBearer(keys: BearerKeys, what: string) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (keys.isOpen) return;
    const token = bearerToken(request);
    if (token === null) {
      await sendError(
        reply.header('www-authenticate', 'Bearer'),
        request,
        new CryoError('UNAUTHORIZED', `missing Authorization: Bearer <${what}> header`),
      );
      return;
    }
    if (!keys.accepts(token)) {
      await sendError(reply.header('www-authenticate', 'Bearer'), request, new CryoError('UNAUTHORIZED', `invalid ${what}`));
    }
  };
}
