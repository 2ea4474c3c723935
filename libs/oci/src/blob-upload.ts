import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { RegistryError } from '@cryo/registry-auth';
import { algorithmOf, digestLike } from './digest';
import { blobSubject, pushScope } from './scopes';
import { discard, headerValue, type RegistryResponse, type RegistryTransport } from './transport';

/** The body of one streamed PATCH (BlobUploadSession.openStream). */
export interface BlobStreamWriter {
  write(chunk: Buffer): Promise<void>;
  /** finish the request; the session's next step is commit() */
  end(): Promise<void>;
  abort(): void;
}

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
  if (Buffer.isBuffer(data)) {
    const actual = digestLike(digest, data);
    if (actual !== digest) throw new BlobContentError(`blob data has digest ${actual}, not ${digest}`);
    if (size !== undefined && size !== data.length) throw new BlobContentError(`blob ${digest} has ${data.length} bytes, not ${size}`);
  }
  const session = await BlobUploadSession.open(transport, repository);
  try {
    if (Buffer.isBuffer(data)) return await session.commit(digest, data);
    const algorithm = algorithmOf(digest);
    const hash = createHash(algorithm);
    for await (const chunk of chunks(data, chunkSize)) {
      hash.update(chunk);
      await session.write(chunk);
    }
    const actual = `${algorithm}:${hash.digest('hex')}`;
    if (actual !== digest) throw new BlobContentError(`blob stream has digest ${actual}, not ${digest}`);
    if (size !== undefined && size !== session.bytes) throw new BlobContentError(`blob ${digest} stream has ${session.bytes} bytes, not ${size}`);
    return await session.commit(digest);
  } catch (error) {
    await session.cancel();
    throw error;
  }
}

/**
 * One blob upload whose digest is known only at the end (a layer compressed while it is sent):
 * `write` sends a PATCH chunk (one at a time: await each), `commit` the closing PUT with the
 * digest the caller computed over everything written, `cancel` gives the session up (best
 * effort; registries purge abandoned uploads themselves). The registry checks the digest: a
 * mismatch fails the commit and nothing is stored.
 */
export class BlobUploadSession {
  private written = 0;
  private ended = false;

  private constructor(
    private readonly transport: RegistryTransport,
    private readonly repository: string,
    private location: URL,
  ) {}

  static async open(transport: RegistryTransport, repository: string): Promise<BlobUploadSession> {
    return new BlobUploadSession(transport, repository, await startSession(transport, repository));
  }

  /** Bytes written so far. */
  get bytes(): number {
    return this.written;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.ended) throw new Error(`upload to ${this.repository} already ended`);
    if (chunk.length === 0) return;
    const subject = { what: `an upload to ${this.repository}`, repository: this.repository };
    this.location = await patch(this.transport, this.location, chunk, this.written, pushScope(this.repository), subject);
    this.written += chunk.length;
  }

  /**
   * One PATCH whose body streams out as it is written, the way `docker push` sends a layer: one
   * request for the whole blob instead of a round trip (and, in distribution, a saved hash
   * state) per chunk. `write` waits while the registry is behind; `end` finishes the request.
   * The body cannot be replayed, which is safe here: the session's POST settled the credentials.
   */
  openStream(): BlobStreamWriter {
    if (this.ended) throw new Error(`upload to ${this.repository} already ended`);
    const body = new PassThrough({ highWaterMark: 4 * 1024 * 1024 });
    const subject = { what: `an upload to ${this.repository}`, repository: this.repository };
    const request = this.transport.send({
      method: 'PATCH', path: this.location, scope: pushScope(this.repository), headers: { 'content-type': 'application/octet-stream' }, body,
    });
    request.catch(() => undefined); // awaited by write (early end) and end
    let sent = 0;
    const earlyEnd = request.then(async (response) => {
      throw response.status === 202
        ? new Error(`registry ${this.transport.host} answered the upload to ${this.repository} before it was sent`)
        : await this.transport.failure(response, subject, 'a streamed blob upload');
    });
    earlyEnd.catch(() => undefined);
    return {
      write: async (chunk: Buffer): Promise<void> => {
        sent += chunk.length;
        if (!body.write(chunk)) await Promise.race([once(body, 'drain'), earlyEnd]);
      },
      end: async (): Promise<void> => {
        body.end();
        const response = await request;
        if (response.status !== 202) throw await this.transport.failure(response, subject, 'a streamed blob upload');
        this.location = uploadLocation(this.transport, response);
        await discard(response);
        this.written += sent;
      },
      abort: (): void => {
        body.destroy(new Error('upload abandoned'));
      },
    };
  }

  /** The closing PUT (with `last` as its body, if given): the blob is stored under `digest`. */
  async commit(digest: string, last: Buffer = Buffer.alloc(0)): Promise<UploadedBlob> {
    if (this.ended) throw new Error(`upload to ${this.repository} already ended`);
    this.ended = true;
    await finish(this.transport, this.location, digest, last, pushScope(this.repository), blobSubject(this.repository, digest));
    this.written += last.length;
    return { digest, size: this.written };
  }

  async cancel(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await cancelSession(this.transport, this.location, pushScope(this.repository));
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
