/**
 * The executor's one error boundary: whatever a library or a daemon throws becomes a CryoError
 * with a stable code and a message that says what happened and what to do, before it is reported
 * to the server (operation-loop.ts). The same failure reads the same whichever runtime driver hit
 * it: a registry that rejects credentials is `UNAVAILABLE`, "registry H rejected credentials for
 * user U ...; check ...", from a docker push as from a lazy mount or a clip index build.
 */
import { ClipError } from '@cryo/clip';
import { BlobContentError, ImageReferenceError, ManifestFormatError } from '@cryo/oci';
import { ConfigError, CredentialHelperError, RegistryError, type RegistryErrorCode } from '@cryo/registry-auth';
import { CryoError, type ErrorCode } from '@cryo/snapshot';
import { RuncError } from './runtime/lazy/runc';

/** Longest message reported (the protocol refuses more than 16 KiB). */
export const MAX_ERROR_MESSAGE = 8 * 1024;

export type RegistryProblem = 'unauthorized' | 'denied' | 'not_found' | 'unreachable' | 'unsupported' | 'failed';

const REGISTRY_CODES: Record<RegistryProblem, ErrorCode> = {
  unauthorized: 'UNAVAILABLE',
  denied: 'UNAVAILABLE',
  not_found: 'NOT_FOUND',
  unreachable: 'UNAVAILABLE',
  unsupported: 'UNPROCESSABLE',
  failed: 'UNAVAILABLE',
};

function registryHint(problem: RegistryProblem, host: string): string {
  switch (problem) {
    case 'unauthorized':
      return `; check snapshot_registry.username and password in the executor config, or the Docker credentials (docker_config) it uses for ${host}`;
    case 'denied':
      return `; give that user pull and push rights on the repository in ${host}`;
    case 'unreachable':
      return `; check that the registry runs and that this executor can reach ${host}`;
    default:
      return '';
  }
}

/**
 * A registry failure as users read it, from any path: `statement` says what happened (naming the
 * registry and the user, never a secret); the code and the advice depend only on `problem`.
 */
export function registryFailure(problem: RegistryProblem, host: string, statement: string): CryoError {
  return new CryoError(REGISTRY_CODES[problem], cap(`${statement}${registryHint(problem, host)}`));
}

const REGISTRY_PROBLEMS: Record<RegistryErrorCode, RegistryProblem> = {
  REGISTRY_UNAUTHORIZED: 'unauthorized',
  REGISTRY_DENIED: 'denied',
  REGISTRY_NOT_FOUND: 'not_found',
  REGISTRY_UNREACHABLE: 'unreachable',
  REGISTRY_UNSUPPORTED_MEDIA_TYPE: 'unsupported',
  REGISTRY_BAD_RESPONSE: 'failed',
};

/** Which registry problem a Docker push/pull error text describes. */
export function dockerRegistryProblem(text: string): RegistryProblem {
  if (/unauthorized|authentication required|no basic auth credentials|\b401\b/i.test(text)) return 'unauthorized';
  if (/denied|forbidden|\b403\b/i.test(text)) return 'denied';
  if (/connection refused|no such host|i\/o timeout|dial tcp|\bEOF\b|server gave HTTP response to HTTPS client|TLS handshake/i.test(text)) return 'unreachable';
  if (/not found|manifest unknown|name unknown/i.test(text)) return 'not_found';
  return 'failed';
}

interface KnownText {
  pattern: RegExp;
  code: ErrorCode;
  /** what happened and what to do; `raw` is the daemon's text, for the record */
  message: (raw: string) => string;
}

/** Texts of Docker, containerd and runc that have a cause users can act on. */
const KNOWN_DAEMON_TEXTS: KnownText[] = [
  {
    pattern: /max depth exceeded/i,
    code: 'UNPROCESSABLE',
    message: () => 'the image has more layers than the overlay filesystem can stack (Docker stacks at most 125 and says "max depth exceeded"). '
      + 'cryo flattens its snapshot images before they get there (executor setting snapshots.max_layers, 1..124), so the image came with too many layers: '
      + 'build it with fewer, or flatten it (docker export of a container | docker import) and start from that',
  },
  {
    pattern: /no space left on device/i,
    code: 'UNAVAILABLE',
    message: (raw) => `the executor's disk is full (${raw}): free space under Docker's data root and the executor's state_dir, or use another executor`,
  },
  {
    pattern: /toomanyrequests|rate limit/i,
    code: 'UNAVAILABLE',
    message: (raw) => `the registry is rate limiting this executor (${raw}): try again later, or log in to raise the limit`,
  },
  {
    pattern: /executable file not found|no such file or directory: unknown|exec format error/i,
    code: 'UNPROCESSABLE',
    message: (raw) => `the command cannot be started in the image (${raw}): check the command and the image's PATH`,
  },
  {
    pattern: /No such image/i,
    code: 'NOT_FOUND',
    message: (raw) => `the image is not on this executor (${raw})`,
  },
  {
    pattern: /No such container|container .* does not exist/i,
    code: 'NOT_FOUND',
    message: (raw) => `the sandbox's container is gone from this executor (${raw})`,
  },
  {
    pattern: /is not running|is paused|container not running/i,
    code: 'CONFLICT',
    message: (raw) => `the sandbox's container is not running (${raw})`,
  },
  {
    pattern: /Cannot connect to the Docker daemon|connect ECONNREFUSED .*docker|connect ENOENT .*docker\.sock|socket hang up/i,
    code: 'UNAVAILABLE',
    message: (raw) => `the Docker engine of this executor is not answering (${raw}): check that dockerd runs and docker.host in the executor config`,
  },
];

function known(raw: string): CryoError | undefined {
  const hit = KNOWN_DAEMON_TEXTS.find((k) => k.pattern.test(raw));
  return hit === undefined ? undefined : new CryoError(hit.code, cap(hit.message(raw)));
}

/** dockerode's errors: `(HTTP code 500) server error - max depth exceeded` with statusCode and json. */
function isDockerodeError(err: unknown): err is Error & { statusCode: number; json?: unknown } {
  return err instanceof Error && 'statusCode' in err && typeof err.statusCode === 'number' && /^\(HTTP code \d+\)/.test(err.message);
}

/** The daemon's own words without dockerode's `(HTTP code 500) server error - ` wrapping. */
export function daemonText(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'json' in err) {
    const json = (err as { json: unknown }).json;
    if (typeof json === 'object' && json !== null && 'message' in json && typeof json.message === 'string') return json.message.trim();
    if (typeof json === 'string' && json.trim() !== '') return json.trim();
  }
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/^\(HTTP code \d+\)\s*[^-]*-\s*/, '').trim();
}

/** A failure of the Docker engine while doing `doing` ("start the container of sandbox X"). */
export function dockerFailure(err: unknown, doing: string): CryoError {
  const raw = daemonText(err);
  return known(raw) ?? new CryoError('UNAVAILABLE', cap(`the Docker engine could not ${doing}: ${raw}`));
}

function clipFailure(err: ClipError): CryoError {
  switch (err.code) {
    case 'NOT_FOUND':
    case 'PLATFORM_NOT_FOUND':
    case 'ENOENT':
      return new CryoError('NOT_FOUND', cap(err.message));
    case 'REGISTRY':
    case 'EIO':
      return new CryoError('UNAVAILABLE', cap(err.message));
    case 'INDEX_CORRUPT':
    case 'INDEX_VERSION':
      return new CryoError('UNPROCESSABLE', cap(`${err.message}: the clip index cannot be used; restore eagerly, or snapshot again to index anew`));
    case 'DIGEST_MISMATCH':
    case 'SPAN_CORRUPT':
    case 'LAYER_CORRUPT':
    case 'GZIP_CORRUPT':
    case 'TAR_CORRUPT':
      return new CryoError('UNPROCESSABLE', cap(`${err.message}: the image's data in the registry is not what its digests promise`));
    default:
      return new CryoError('UNPROCESSABLE', cap(err.message));
  }
}

/**
 * Any thrown value -> a CryoError for users. CryoErrors pass unchanged; `context` ("lazy sandbox
 * X failed to start") prefixes the message of everything else.
 */
export function toCryoError(err: unknown, context?: string): CryoError {
  if (err instanceof CryoError) return err.message.length > MAX_ERROR_MESSAGE ? new CryoError(err.code, cap(err.message), err.details) : err;
  const mapped = mapError(err);
  return context === undefined ? mapped : new CryoError(mapped.code, cap(`${context}: ${mapped.message}`));
}

function mapError(err: unknown): CryoError {
  if (err instanceof RegistryError) return registryFailure(REGISTRY_PROBLEMS[err.code], err.host, err.message);
  if (err instanceof ClipError) return clipFailure(err);
  if (err instanceof ImageReferenceError) {
    return new CryoError('UNPROCESSABLE', cap(`${err.message}; an image reference looks like [host[:port]/]repository[:tag][@digest]`));
  }
  if (err instanceof ManifestFormatError || err instanceof BlobContentError) return new CryoError('UNPROCESSABLE', cap(err.message));
  if (err instanceof ConfigError || err instanceof CredentialHelperError) {
    return new CryoError('UNAVAILABLE', cap(`registry credentials of this executor: ${err.message}`));
  }
  if (err instanceof RuncError) {
    return known(err.stderr) ?? new CryoError('UNAVAILABLE', cap(`the container runtime failed: ${err.message}`));
  }
  if (isDockerodeError(err)) return dockerFailure(err, 'do what was asked');
  const raw = err instanceof Error ? err.message : String(err);
  const errno = err instanceof Error && 'code' in err ? String(err.code) : undefined;
  if (errno === 'ENOSPC') return new CryoError('UNAVAILABLE', cap(`the executor's disk is full (${raw}): free space under its state_dir`));
  return known(raw) ?? new CryoError('INTERNAL', cap(raw));
}

function cap(message: string): string {
  return message.length <= MAX_ERROR_MESSAGE ? message : `${message.slice(0, MAX_ERROR_MESSAGE - 40)} ... [${message.length} characters, cut]`;
}
