/**
 * The distribution API's token scopes (what a request asks the token service for) and the
 * subjects failures are worded about ("manifest cryo/snapshots:tag", "blob sha256:... of repo").
 */
import { isDigest } from './digest';

export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}

// distribution 2.7+ asks for `delete`; older ones ask for `*`, which their challenge names.
export function deleteScope(repository: string): string {
  return `repository:${repository}:delete`;
}

export function manifestSubject(repository: string, reference: string): { what: string; repository: string } {
  const separator = isDigest(reference) ? '@' : ':';
  return { what: `manifest ${repository}${separator}${reference}`, repository };
}

export function blobSubject(repository: string, digest: string): { what: string; repository: string } {
  return { what: `blob ${digest} of ${repository}`, repository };
}
