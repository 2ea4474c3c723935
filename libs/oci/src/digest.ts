import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

const DIGEST = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
const LOOSE_DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** True for `sha256:<64 hex>` / `sha512:<128 hex>`, the digests this client can verify. */
export function isDigest(value: string): boolean {
  return DIGEST.test(value);
}

/** True for anything shaped like `algorithm:encoded` (the OCI grammar), verifiable or not. */
export function looksLikeDigest(value: string): boolean {
  return LOOSE_DIGEST.test(value);
}

export function sha256Digest(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Digest of `data` with the algorithm of `expected` (sha256 or sha512). */
export function digestLike(expected: string, data: Uint8Array): string {
  const algorithm = algorithmOf(expected);
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

export function algorithmOf(digest: string): 'sha256' | 'sha512' {
  return digest.startsWith('sha512:') ? 'sha512' : 'sha256';
}

/**
 * Passes bytes through and fails the stream at its end when their digest (or length) is not
 * the expected one, so a consumer never silently accepts corrupted blob content.
 */
export class VerifyingStream extends Transform {
  private readonly hash: Hash;
  private readonly expected: string;
  private readonly expectedSize: number | undefined;
  private readonly onMismatch: (message: string) => Error;
  private bytes = 0;

  constructor(expected: string, expectedSize: number | undefined, onMismatch: (message: string) => Error) {
    super();
    this.expected = expected;
    this.expectedSize = expectedSize;
    this.onMismatch = onMismatch;
    this.hash = createHash(algorithmOf(expected));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.expectedSize !== undefined && this.bytes !== this.expectedSize) {
      callback(this.onMismatch(`received ${this.bytes} bytes, expected ${this.expectedSize}`));
      return;
    }
    const actual = `${algorithmOf(this.expected)}:${this.hash.digest('hex')}`;
    callback(actual === this.expected ? null : this.onMismatch(`content has digest ${actual}`));
  }
}
