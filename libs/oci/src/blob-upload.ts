import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { RegistryError } from '@cryo/registry-auth';
import { algorithmOf, digestLike } from './digest';
import { blobSubject, pushScope } from './scopes';
import { discard, headerValue, type RegistryResponse, type RegistryTransport } from './transport';

export interface UploadedBlob {
  digest: string;
  size: number;
}

/** Raised before anything is committed when the data does not match the promised digest or size. */
export class BlobContentError extends Error {
  readonly code = 'BLOB_CONTENT_MISMATCH' as const;
  constructor(message: string) {
    super(message);
    this.name = 'BlobContentError';
  }
}

/**
 * Blob upload (distribution's two-step protocol): POST opens a session; a Buffer is then sent
 * in one PUT, a stream in PATCH chunks of `chunkSize` bytes (bounded memory, each chunk
 * replayable after an auth challenge) followed by a closing PUT with the digest. A failed
 * upload cancels its session.
 */
export async function uploadBlob(
  transport: RegistryTransport,
  repository: string,
  data: Buffer | Readable,
  digest: string,
  size: number | undefined,
  chunkSize: number,
): Promise<UploadedBlob> {
  const scope = pushScope(repository);
  const subject = blobSubject(repository, digest);
  if (Buffer.isBuffer(data)) {
    const actual = digestLike(digest, data);
    if (actual !== digest) throw new BlobContentError(`blob data has digest ${actual}, not ${digest}`);
    if (size !== undefined && size !== data.length) throw new BlobContentError(`blob ${digest} has ${data.length} bytes, not ${size}`);
  }
  let location = await startSession(transport, repository);
  try {
    let total: number;
    if (Buffer.isBuffer(data)) {
      total = data.length;
      location = await finish(transport, location, digest, data, scope, subject);
    } else {
      const algorithm = algorithmOf(digest);
      const hash = createHash(algorithm);
      total = 0;
      for await (const chunk of chunks(data, chunkSize)) {
        hash.update(chunk);
        location = await patch(transport, location, chunk, total, scope, subject);
        total += chunk.length;
      }
      const actual = `${algorithm}:${hash.digest('hex')}`;
      if (actual !== digest) throw new BlobContentError(`blob stream has digest ${actual}, not ${digest}`);
      if (size !== undefined && size !== total) throw new BlobContentError(`blob ${digest} stream has ${total} bytes, not ${size}`);
      location = await finish(transport, location, digest, Buffer.alloc(0), scope, subject);
    }
    return { digest, size: total };
  } catch (error) {
    await cancelSession(transport, location, scope);
    throw error;
  }
}

/** Cross-repository mount: true when the registry linked the blob (201), false when it did not (202). */
export async function mountBlob(transport: RegistryTransport, repository: string, digest: string, fromRepository: string): Promise<boolean> {
  const path = `/v2/${repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(fromRepository)}`;
  const scope = [pushScope(repository), `repository:${fromRepository}:pull`];
  const response = await transport.send({ method: 'POST', path, scope, headers: { 'content-length': '0' } });
  if (response.status === 201) {
    await discard(response);
    return true;
  }
  if (response.status === 202) {
    // The registry opened an ordinary upload session instead; nobody will use it.
    const location = uploadLocation(transport, response);
    await discard(response);
    await cancelSession(transport, location, scope);
    return false;
  }
  throw await transport.failure(response, { what: `blob ${digest} mount from ${fromRepository} into ${repository}`, repository }, 'a blob mount');
}

async function startSession(transport: RegistryTransport, repository: string): Promise<URL> {
  const response = await transport.send({
    method: 'POST',
    path: `/v2/${repository}/blobs/uploads/`,
    scope: pushScope(repository),
    headers: { 'content-length': '0' },
  });
  if (response.status !== 202) {
    throw await transport.failure(response, { what: `an upload to ${repository}`, repository }, 'starting a blob upload');
  }
  const location = uploadLocation(transport, response);
  await discard(response);
  return location;
}

async function patch(
  transport: RegistryTransport,
  location: URL,
  chunk: Buffer,
  offset: number,
  scope: string,
  subject: { what: string; repository: string },
): Promise<URL> {
  const response = await transport.send({
    method: 'PATCH',
    path: location,
    scope,
    headers: {
      'content-type': 'application/octet-stream',
      'content-range': `${offset}-${offset + chunk.length - 1}`,
    },
    body: chunk,
  });
  if (response.status !== 202) throw await transport.failure(response, subject, 'a blob upload chunk');
  const next = uploadLocation(transport, response);
  await discard(response);
  return next;
}

async function finish(
  transport: RegistryTransport,
  location: URL,
  digest: string,
  body: Buffer,
  scope: string,
  subject: { what: string; repository: string },
): Promise<URL> {
  const url = new URL(location);
  url.searchParams.set('digest', digest);
  const response = await transport.send({
    method: 'PUT',
    path: url,
    scope,
    headers: { 'content-type': 'application/octet-stream' },
    body,
  });
  if (response.status !== 201 && response.status !== 204) throw await transport.failure(response, subject, 'a blob upload');
  const stored = headerValue(response.headers, 'docker-content-digest');
  await discard(response);
  if (stored !== undefined && stored !== digest) {
    throw transport.badResponse(`stored blob ${digest} under digest ${stored}`, response.status);
  }
  return location;
}

async function cancelSession(transport: RegistryTransport, location: URL, scope: string | readonly string[]): Promise<void> {
  try {
    const response = await transport.send({ method: 'DELETE', path: location, scope });
    await discard(response);
  } catch {
    // Best effort: the registry purges abandoned uploads on its own.
  }
}

function uploadLocation(transport: RegistryTransport, response: RegistryResponse): URL {
  const location = headerValue(response.headers, 'location');
  if (location === undefined) {
    throw new RegistryError('REGISTRY_BAD_RESPONSE', `registry ${transport.host} opened an upload without a Location header`, {
      host: transport.host,
      status: response.status,
    });
  }
  return new URL(location, response.url);
}

/** Regroups a stream into buffers of at least `size` bytes (the last one may be shorter). */
async function* chunks(stream: AsyncIterable<unknown>, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const piece of stream) {
    const buffer = Buffer.isBuffer(piece) ? piece : Buffer.from(String(piece));
    pending.push(buffer);
    pendingBytes += buffer.length;
    while (pendingBytes >= size) {
      const all = Buffer.concat(pending, pendingBytes);
      yield all.subarray(0, size);
      const rest = all.subarray(size);
      pending = rest.length > 0 ? [rest] : [];
      pendingBytes = rest.length;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}
