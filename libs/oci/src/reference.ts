/**
 * Image references the way Docker reads them: `[host[:port]/]path[:tag][@digest]`, in the grammar
 * of distribution/reference (reference.go): path components are lowercase `[a-z0-9]+` joined by
 * `.`, `_`, `__` or `-`+; host names are `.`-separated components of letters, digits and inner
 * `-` (or a bracketed IPv6 address), with an optional port; the name (host and path) is at most
 * 255 characters. Nothing is trimmed: whitespace is not part of the grammar.
 * The first component is a host when it contains `.` or `:`, or is `localhost`; otherwise the
 * reference is on Docker Hub (`docker.io`), where one-component names live under `library/`.
 */
export interface ImageReference {
  host: string;
  repository: string;
  tag?: string;
  digest?: string;
}

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
/** `algorithm:encoded` (OCI image-spec descriptor digest grammar). */
export const DIGEST_PATTERN = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
const DIGEST = DIGEST_PATTERN;
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]+)?$/;
/** distribution/reference NameTotalLengthMax: host and path together. */
const NAME_MAX_LENGTH = 255;

export const DOCKER_HUB = 'docker.io';

export class ImageReferenceError extends Error {
  readonly code = 'INVALID_IMAGE_REFERENCE' as const;
  constructor(reference: string, problem: string) {
    super(`invalid image reference "${reference}": ${problem}`);
    this.name = 'ImageReferenceError';
  }
}

export function parseImageReference(reference: string): ImageReference {
  let rest = reference;
  if (rest === '') throw new ImageReferenceError(reference, 'empty');
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new ImageReferenceError(reference, `bad digest "${digest}"`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const lastColon = rest.lastIndexOf(':');
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG.test(tag)) throw new ImageReferenceError(reference, `bad tag "${tag}"`);
  }
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  let host = DOCKER_HUB;
  let repository = rest;
  if (slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    host = first;
    repository = rest.slice(slash + 1);
    if (!HOST.test(host)) throw new ImageReferenceError(reference, `bad registry host "${host}"`);
  }
  if (repository === '') throw new ImageReferenceError(reference, 'no repository');
  if (rest.length > NAME_MAX_LENGTH) {
    throw new ImageReferenceError(reference, `name is ${rest.length} characters; at most ${NAME_MAX_LENGTH}`);
  }
  for (const component of repository.split('/')) {
    if (!COMPONENT.test(component)) {
      throw new ImageReferenceError(reference, `bad repository component "${component}" (lowercase letters, digits and . _ - only)`);
    }
  }
  if (host === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  const parsed: ImageReference = { host, repository };
  if (tag !== undefined) parsed.tag = tag;
  if (digest !== undefined) parsed.digest = digest;
  return parsed;
}

/** `host/repository[:tag][@digest]` */
export function formatImageReference(reference: ImageReference): string {
  return `${reference.host}/${reference.repository}${reference.tag !== undefined ? `:${reference.tag}` : ''}${
    reference.digest !== undefined ? `@${reference.digest}` : ''
  }`;
}

/**
 * The name Docker shows (and its API takes) for a reference, without tag or digest:
 * `busybox`, `user/app`, `host:5000/cryo/snapshots` (Docker's FamiliarName).
 */
export function familiarName(reference: Pick<ImageReference, 'host' | 'repository'>): string {
  if (reference.host !== DOCKER_HUB) return `${reference.host}/${reference.repository}`;
  const short = reference.repository.startsWith('library/') ? reference.repository.slice('library/'.length) : reference.repository;
  return short.includes('/') ? reference.repository : short;
}

/** Throws unless `repository` is a valid repository path (`cryo/snapshots`). */
export function assertRepository(repository: string): void {
  if (repository === '' || !repository.split('/').every((component) => COMPONENT.test(component))) {
    throw new ImageReferenceError(repository, 'not a valid repository name');
  }
}

/** Throws unless `reference` is a tag or a digest, the two things a manifest URL may end with. */
export function assertManifestReference(reference: string): void {
  if (!TAG.test(reference) && !DIGEST.test(reference)) {
    throw new ImageReferenceError(reference, 'not a tag or digest');
  }
}

export function assertDigest(digest: string): void {
  if (!DIGEST.test(digest)) throw new ImageReferenceError(digest, 'not a digest');
}
