import { displayName } from './names';

/**
 * Errors raised by clip. Filesystem-shaped failures carry an errno-like `code`
 * (a FUSE layer maps them 1:1); everything else carries a stable clip code.
 */
export type FsErrorCode = 'ENOENT' | 'ENOTDIR' | 'EISDIR' | 'EINVAL' | 'ELOOP' | 'EIO' | 'ENODATA';

export type ClipErrorCode =
  | FsErrorCode
  | 'TAR_CORRUPT'
  | 'TAR_UNSUPPORTED'
  | 'GZIP_CORRUPT'
  | 'LAYER_CORRUPT'
  | 'DIGEST_MISMATCH'
  | 'SPAN_CORRUPT'
  | 'INDEX_CORRUPT'
  | 'INDEX_VERSION'
  | 'ACCESS_RECORD_CORRUPT'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'UNSUPPORTED_MANIFEST'
  | 'PLATFORM_NOT_FOUND'
  | 'NOT_FOUND'
  | 'REGISTRY';

/** errno numbers (Linux) for the filesystem codes, for a FUSE binding. */
export const ERRNO: Readonly<Record<FsErrorCode, number>> = {
  ENOENT: 2,
  EIO: 5,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ELOOP: 40,
  ENODATA: 61,
};

export class ClipError extends Error {
  override readonly name = 'ClipError';
  constructor(
    readonly code: ClipErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get errno(): number | undefined {
    return (ERRNO as Record<string, number | undefined>)[this.code];
  }
}

/** `path` is a byte string (names.ts); the message shows it as text, `details.path` keeps the bytes. */
export function fsError(code: FsErrorCode, path: string, what?: string): ClipError {
  const text: Record<FsErrorCode, string> = {
    ENOENT: 'no such file or directory',
    ENOTDIR: 'not a directory',
    EISDIR: 'is a directory',
    EINVAL: 'invalid argument',
    ELOOP: 'too many levels of symbolic links',
    EIO: 'input/output error',
    ENODATA: 'no such attribute',
  };
  return new ClipError(code, `${code}: ${what ?? text[code]}, '${displayName(path)}'`, { path });
}

export function isClipError(err: unknown, code?: ClipErrorCode): err is ClipError {
  return err instanceof ClipError && (code === undefined || err.code === code);
}
