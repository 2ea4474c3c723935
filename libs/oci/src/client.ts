import { pipeline, type Readable } from 'node:stream';
import { RegistryAuthenticator, RegistryError, type RegistryCredentials } from '@cryo/registry-auth';
import { Agent, type Dispatcher } from 'undici';
import { getBlobRange, type BlobRangeOptions } from './blob-range';
import { BlobUploadSession, mountBlob, uploadBlob, type UploadedBlob } from './blob-upload';
import { blobSubject, deleteScope, manifestSubject, pullScope, pushScope } from './scopes';
import { listTags } from './tags';
import { VerifyingStream, digestLike, isDigest, sha256Digest } from './digest';
import {
  ManifestFormatError,
  parseImageConfig,
  parseManifestDocument,
  selectPlatform,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type ManifestDocument,
} from './manifest';
import { MANIFEST_ACCEPT, MediaType, baseMediaType, isImageIndexMediaType, isImageManifestMediaType } from './media-types';
import { assertDigest, assertManifestReference, assertRepository } from './reference';
import { RegistryTransport, discard, headerValue, readBody, type RegistryResponse } from './transport';

export interface RegistryClientOptions {
  /** `host[:port]`, no scheme. */
  host: string;
  /** Plain http instead of https. */
  insecure?: boolean;
  credentials?: RegistryCredentials | undefined;
  userAgent?: string;
  /** Own undici dispatcher; by default the client makes (and closes) one Agent. */
  dispatcher?: Dispatcher;
  /** Share an authenticator (and its token cache) between clients of the same registry. */
  authenticator?: RegistryAuthenticator;
  /** Bytes per PATCH when uploading a stream (default 16 MiB). */
  chunkSize?: number;
  /** Clock for token expiry, injectable for tests. */
  now?: () => number;
  /**
   * Hears about registries that work but misbehave (e.g. ignore Range), once per kind per
   * client. Default: `process.emitWarning` (stderr).
   */
  onWarning?: (message: string) => void;
}

interface ManifestMeta {
  digest: string;
  mediaType: string;
  size: number;
  bytes: Buffer;
}

/** A fetched manifest: its exact bytes, their digest, and the parsed document. */
export type ManifestResult = ManifestMeta & ({ kind: 'manifest'; json: ImageManifest } | { kind: 'index'; json: ImageIndex });

export interface ManifestHead {
  digest: string;
  mediaType: string;
  size: number;
}

export interface BlobHead {
  digest: string;
  size: number;
}

export interface BlobStream {
  stream: Readable;
  /** From Content-Length, when the registry (or its storage) sent one. */
  size: number | undefined;
}

// distribution refuses manifests above 4 MiB; so do we, rather than buffer anything.
const MANIFEST_LIMIT = 4 * 1024 * 1024;
const DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024;

/**
 * Client of the OCI distribution API of one registry. Every failure is a RegistryError with a
 * stable code; messages name the registry, the repository and the user, never a secret.
 */
export class RegistryClient {
  readonly host: string;
  readonly authenticator: RegistryAuthenticator;
  private readonly transport: RegistryTransport;
  private readonly ownDispatcher: Agent | undefined = undefined;
  private readonly chunkSize: number;
  private readonly onWarning: (message: string) => void;
  private readonly warned = new Set<string>();

  constructor(options: RegistryClientOptions) {
    this.host = options.host;
    let dispatcher: Dispatcher;
    if (options.dispatcher) {
      dispatcher = options.dispatcher;
    } else {
      const agent = new Agent({ connect: { timeout: 15_000 }, headersTimeout: 120_000, bodyTimeout: 120_000 });
      this.ownDispatcher = agent;
      dispatcher = agent;
    }
    const userAgent = options.userAgent ?? 'cryo-oci';
    this.authenticator =
      options.authenticator ??
      new RegistryAuthenticator({
        host: options.host,
        credentials: options.credentials,
        dispatcher,
        userAgent,
        ...(options.now ? { now: options.now } : {}),
      });
    this.transport = new RegistryTransport({
      host: options.host,
      insecure: options.insecure ?? false,
      dispatcher,
      authenticator: this.authenticator,
      userAgent,
    });
    this.chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.onWarning = options.onWarning ?? ((message) => process.emitWarning(message, { code: 'CRYO_REGISTRY' }));
  }

  /** Closes the client's own connection pool (not a dispatcher passed in). */
  async close(): Promise<void> {
    await this.ownDispatcher?.close();
  }

  /** `GET /v2/`: proves the registry is reachable and the credentials are accepted. */
  async ping(): Promise<void> {
    const response = await this.transport.send({ method: 'GET', path: '/v2/', scope: [] });
    if (response.status !== 200) throw await this.transport.failure(response, { what: 'the API root /v2/' }, 'a ping');
    await discard(response);
  }

  async getManifest(repository: string, reference: string): Promise<ManifestResult> {
    const response = await this.getResource('GET', repository, 'manifests', reference);
    const subject = manifestSubject(repository, reference);
    if (response.status !== 200) throw await this.transport.failure(response, subject, 'a manifest fetch');
    const bytes = await readBody(response, MANIFEST_LIMIT, subject.what, this.host);
    const contentType = baseMediaType(headerValue(response.headers, 'content-type') ?? '');
    const digest = this.checkedDigest(reference, bytes, headerValue(response.headers, 'docker-content-digest'), subject.what);
    let document: ManifestDocument;
    try {
      document = parseManifestDocument(bytes, contentType);
    } catch (error) {
      if (isSchema1(contentType, bytes)) throw this.unsupported(subject.what, contentType || 'schema 1');
      const reason = error instanceof ManifestFormatError ? error.message : String(error);
      throw this.transport.badResponse(`sent an unreadable ${subject.what}: ${reason}`, response.status);
    }
    const mediaType = manifestMediaType(contentType, document);
    if (mediaType === undefined) throw this.unsupported(subject.what, contentType);
    return { ...document, digest, mediaType, size: bytes.length, bytes };
  }

  /** Digest, media type and size of a manifest without its body; undefined when it does not exist. */
  async headManifest(repository: string, reference: string): Promise<ManifestHead | undefined> {
    const response = await this.getResource('HEAD', repository, 'manifests', reference);
    const subject = manifestSubject(repository, reference);
    if (response.status === 404) {
      await discard(response);
      return undefined;
    }
    if (response.status !== 200) throw await this.transport.failure(response, subject, 'a manifest lookup');
    await discard(response);
    const digest = headerValue(response.headers, 'docker-content-digest');
    const mediaType = baseMediaType(headerValue(response.headers, 'content-type') ?? '');
    const size = Number(headerValue(response.headers, 'content-length'));
    if (digest === undefined || !isDigest(digest) || !Number.isSafeInteger(size) || !isKnownManifestType(mediaType)) {
      // Not every registry gives all of that on HEAD; the body does.
      const full = await this.getManifest(repository, reference);
      return { digest: full.digest, mediaType: full.mediaType, size: full.size };
    }
    if (isDigest(reference) && digest !== reference) {
      throw this.transport.badResponse(`answered ${subject.what} with digest ${digest}`, response.status);
    }
    return { digest, mediaType, size };
  }

  /** Uploads manifest bytes under a tag or digest; returns their digest. */
  async putManifest(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    assertRepository(repository);
    assertManifestReference(reference);
    const digest = isDigest(reference) ? digestLike(reference, bytes) : sha256Digest(bytes);
    if (isDigest(reference) && digest !== reference) {
      throw new ManifestFormatError(`manifest bytes have digest ${digest}, not ${reference}`);
    }
    const subject = manifestSubject(repository, reference);
    const response = await this.transport.send({
      method: 'PUT',
      path: `/v2/${repository}/manifests/${reference}`,
      scope: pushScope(repository),
      headers: { 'content-type': mediaType },
      body: bytes,
    });
    if (response.status !== 201 && response.status !== 200) throw await this.transport.failure(response, subject, 'a manifest upload');
    const stored = headerValue(response.headers, 'docker-content-digest');
    await discard(response);
    if (stored !== undefined && stored.startsWith('sha256:') && digest.startsWith('sha256:') && stored !== digest) {
      throw this.transport.badResponse(`stored ${subject.what} under digest ${stored}, expected ${digest}`, response.status);
    }
    return digest;
  }

  /** Deletes a manifest by digest (what distribution supports): `deleted`, or `not_found` when already gone. */
  async deleteManifest(repository: string, digest: string): Promise<'deleted' | 'not_found'> {
    assertRepository(repository);
    assertDigest(digest);
    const subject = manifestSubject(repository, digest);
    const response = await this.transport.send({
      method: 'DELETE',
      path: `/v2/${repository}/manifests/${digest}`,
      scope: deleteScope(repository),
    });
    if (response.status === 202 || response.status === 200 || response.status === 204) {
      await discard(response);
      return 'deleted';
    }
    if (response.status === 404) {
      await discard(response);
      return 'not_found';
    }
    if (response.status === 405) {
      const error = await this.transport.failure(response, subject, 'deletion');
      throw new RegistryError('REGISTRY_DENIED', `${error.message}; the registry must run with deletes enabled (storage.delete.enabled)`, {
        host: this.host,
        status: 405,
        registryCode: error.registryCode,
      });
    }
    throw await this.transport.failure(response, subject, 'deletion');
  }

  async headBlob(repository: string, digest: string): Promise<BlobHead | undefined> {
    const response = await this.getResource('HEAD', repository, 'blobs', digest);
    if (response.status === 404) {
      await discard(response);
      return undefined;
    }
    if (response.status !== 200) throw await this.transport.failure(response, blobSubject(repository, digest), 'a blob lookup');
    await discard(response);
    const size = Number(headerValue(response.headers, 'content-length'));
    if (!Number.isSafeInteger(size) || size < 0) throw this.transport.badResponse(`sent no size for blob ${digest}`, response.status);
    return { digest, size };
  }

  /**
   * Streams a blob. With `verify` (default) the stream fails at its end if the bytes do not
   * have the requested digest.
   */
  async getBlob(repository: string, digest: string, options: { verify?: boolean } = {}): Promise<BlobStream> {
    const response = await this.getResource('GET', repository, 'blobs', digest);
    if (response.status !== 200) throw await this.transport.failure(response, blobSubject(repository, digest), 'a blob download');
    const length = Number(headerValue(response.headers, 'content-length'));
    const size = Number.isSafeInteger(length) && length >= 0 ? length : undefined;
    if (options.verify === false || !isDigest(digest)) return { stream: response.body, size };
    const verifier = new VerifyingStream(digest, size, (problem) =>
      this.transport.badResponse(`sent corrupt blob ${digest} of ${repository}: ${problem}`, response.status),
    );
    // pipeline forwards a body error to the verifier, which is what the caller reads.
    pipeline(response.body, verifier, () => undefined);
    return { stream: verifier, size };
  }

  /**
   * Bytes `start..endInclusive` of a blob (fewer when the blob ends earlier), with one
   * `Range` request. A server that ignores Range and answers 200 with the whole blob still
   * works: the body is streamed, the window kept, the rest discarded (reading stops after the
   * window), and `onWarning` hears about it once per client. An answer that is neither the range
   * (206) nor the whole blob — e.g. 200 with only the requested part, or a 206 cut short — is a
   * REGISTRY_BAD_RESPONSE naming the registry, the range asked for and what came back.
   * `options.blobSize` (when the caller knows it, e.g. from a manifest) lets a 200 be checked to
   * really be the whole blob.
   */
  async getBlobRange(repository: string, digest: string, start: number, endInclusive: number, options: BlobRangeOptions = {}): Promise<Buffer> {
    assertRepository(repository);
    assertDigest(digest);
    return getBlobRange({ transport: this.transport, warnOnce: (kind, message) => this.warnOnce(kind, message) }, repository, digest, start, endInclusive, options);
  }

  private warnOnce(kind: string, message: string): void {
    if (this.warned.has(kind)) return;
    this.warned.add(kind);
    this.onWarning(message);
  }

  /** Uploads a blob whose digest the caller knows; a stream goes up in chunks. */
  async uploadBlob(repository: string, data: Buffer | Readable, digest: string, size?: number): Promise<UploadedBlob> {
    assertRepository(repository);
    assertDigest(digest);
    return uploadBlob(this.transport, repository, data, digest, size, this.chunkSize);
  }

  /**
   * Opens an upload whose digest is known only once all of it is written (a layer compressed
   * while it is sent): write chunks, then commit with the digest, or cancel.
   */
  async startBlobUpload(repository: string): Promise<BlobUploadSession> {
    assertRepository(repository);
    return BlobUploadSession.open(this.transport, repository);
  }

  /** Links a blob from another repository of the same registry; false when the registry declined. */
  async mountBlob(repository: string, digest: string, fromRepository: string): Promise<boolean> {
    assertRepository(repository);
    assertRepository(fromRepository);
    assertDigest(digest);
    return mountBlob(this.transport, repository, digest, fromRepository);
  }

  /** All tags of a repository, following pagination. */
  async listTags(repository: string): Promise<string[]> {
    assertRepository(repository);
    return listTags(this.transport, repository);
  }

  /** Resolves a reference to an image manifest, choosing the platform's entry from an index. */
  async getImageManifest(
    repository: string,
    reference: string,
    platform: { os: string; architecture: string; variant?: string } = { os: 'linux', architecture: 'amd64' },
  ): Promise<ManifestResult & { kind: 'manifest' }> {
    const result = await this.getManifest(repository, reference);
    if (result.kind === 'manifest') return result;
    const entry = selectPlatform(result.json, platform);
    if (entry === undefined) {
      const name = [platform.os, platform.architecture, platform.variant].filter((part) => part !== undefined).join('/');
      throw new RegistryError('REGISTRY_NOT_FOUND', `${manifestSubject(repository, reference).what} has no image for platform ${name} in registry ${this.host}`, {
        host: this.host,
      });
    }
    const child = await this.getManifest(repository, entry.digest);
    if (child.kind !== 'manifest') throw this.transport.badResponse(`lists index ${entry.digest} as a platform image of ${repository}`);
    return child;
  }

  /** Fetches and parses an image's config blob (`config.Env`, `rootfs.diff_ids`, ...). */
  async getImageConfig(repository: string, manifest: ImageManifest): Promise<ImageConfig> {
    const { stream } = await this.getBlob(repository, manifest.config.digest);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    try {
      return parseImageConfig(Buffer.concat(chunks));
    } catch (error) {
      throw this.transport.badResponse(`sent an unreadable image config ${manifest.config.digest}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  /** GET/HEAD of a manifest (Accept always sent: without it distribution converts to schema 1) or a blob. */
  private getResource(
    method: 'GET' | 'HEAD',
    repository: string,
    kind: 'manifests' | 'blobs',
    reference: string,
    headers: Record<string, string> = {},
  ): Promise<RegistryResponse> {
    assertRepository(repository);
    if (kind === 'manifests') assertManifestReference(reference);
    else assertDigest(reference);
    return this.transport.send({
      method,
      path: `/v2/${repository}/${kind}/${reference}`,
      scope: pullScope(repository),
      headers: kind === 'manifests' ? { accept: MANIFEST_ACCEPT, ...headers } : headers,
    });
  }

  private checkedDigest(reference: string, bytes: Buffer, header: string | undefined, what: string): string {
    if (isDigest(reference)) {
      const actual = digestLike(reference, bytes);
      if (actual !== reference) throw this.transport.badResponse(`sent ${what} whose content has digest ${actual}`, 200);
      return reference;
    }
    const digest = sha256Digest(bytes);
    if (header !== undefined && header.startsWith('sha256:') && header !== digest) {
      throw this.transport.badResponse(`sent ${what} with digest header ${header} but content digest ${digest}`, 200);
    }
    return digest;
  }

  private unsupported(what: string, mediaType: string): RegistryError {
    return new RegistryError(
      'REGISTRY_UNSUPPORTED_MEDIA_TYPE',
      `registry ${this.host} sent ${what} as ${mediaType}, which is not an OCI or Docker schema 2 manifest or index`,
      { host: this.host, status: 200 },
    );
  }
}

function isKnownManifestType(mediaType: string): boolean {
  return isImageManifestMediaType(mediaType) || isImageIndexMediaType(mediaType);
}

function manifestMediaType(contentType: string, document: ManifestDocument): string | undefined {
  if (isKnownManifestType(contentType)) return contentType;
  const declared = document.json.mediaType;
  if (declared !== undefined) return isKnownManifestType(declared) ? declared : undefined;
  // OCI allows omitting mediaType in the document; a generic content type then leaves the shape.
  return document.kind === 'index' ? MediaType.OciIndex : MediaType.OciManifest;
}

function isSchema1(contentType: string, bytes: Buffer): boolean {
  if (contentType.startsWith('application/vnd.docker.distribution.manifest.v1')) return true;
  return /"schemaVersion"\s*:\s*1\b/.test(bytes.subarray(0, 4096).toString('utf8'));
}
