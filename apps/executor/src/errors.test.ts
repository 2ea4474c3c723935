import { describe, expect, it } from 'vitest';
import { ClipError } from '@cryo/clip';
import { ImageReferenceError, parseImageReference } from '@cryo/oci';
import { CredentialHelperError, RegistryError } from '@cryo/registry-auth';
import { CryoError } from '@cryo/snapshot';
import { MAX_ERROR_MESSAGE, dockerFailure, dockerRegistryProblem, registryFailure, toCryoError } from './errors';
import { RuncError } from './runtime/lazy/runc';

/** What docker-modem throws for a daemon error: `(HTTP code N) <reason> - <daemon message>`. */
function dockerodeError(statusCode: number, message: string): Error {
  return Object.assign(new Error(`(HTTP code ${statusCode}) server error - ${message} `), { statusCode, reason: 'server error', json: { message } });
}

describe('toCryoError (the executor error boundary)', () => {
  it('turns "max depth exceeded" into what happened and what to do, never the raw daemon text', () => {
    const failure = toCryoError(dockerodeError(500, 'max depth exceeded'));
    expect(failure.code).toBe('UNPROCESSABLE');
    expect(failure.message).toMatch(/more layers than the overlay filesystem can stack/);
    expect(failure.message).toMatch(/snapshots\.max_layers/);
    expect(failure.message).toMatch(/build it with fewer, or flatten it/);
    expect(failure.message).not.toContain('(HTTP code');
    expect(failure.message).not.toContain('server error');
  });

  it('words other daemon failures without the HTTP wrapping, with a stable code', () => {
    expect(toCryoError(dockerodeError(500, 'write /var/lib/docker/x: no space left on device'))).toMatchObject({
      code: 'UNAVAILABLE', message: expect.stringMatching(/^the executor's disk is full .*free space/),
    });
    expect(toCryoError(dockerodeError(404, 'No such container: cryo-sbx-1'))).toMatchObject({ code: 'NOT_FOUND' });
    expect(toCryoError(dockerodeError(409, 'Container abc is not running'))).toMatchObject({ code: 'CONFLICT' });
    const unknown = toCryoError(dockerodeError(500, 'something new went wrong'));
    expect(unknown).toMatchObject({ code: 'UNAVAILABLE', message: 'the Docker engine could not do what was asked: something new went wrong' });
    expect(dockerFailure(dockerodeError(500, 'oci runtime error: exec: "nope": executable file not found in $PATH: unknown'), 'start it').code).toBe('UNPROCESSABLE');
  });

  it('reads a registry that rejects credentials the same from the docker and the lazy paths', () => {
    const host = '127.0.0.1:5001';
    // The lazy and clip paths: @cryo/oci's RegistryError.
    const lazy = toCryoError(new RegistryError('REGISTRY_UNAUTHORIZED', `registry ${host} rejected credentials for user cryouser (HTTP 401)`, { host, status: 401 }));
    // The docker path: the text of dockerd's push stream, classified and worded by the same function.
    const text = 'unauthorized: authentication required';
    expect(dockerRegistryProblem(text)).toBe('unauthorized');
    const docker = registryFailure('unauthorized', host, `registry ${host} rejected credentials for user cryouser (push ${host}/cryo/snapshots:t: ${text})`);
    for (const failure of [lazy, docker]) {
      expect(failure.code).toBe('UNAVAILABLE');
      expect(failure.message).toMatch(new RegExp(`^registry ${host.replaceAll('.', '\\.')} rejected credentials for user cryouser .*; check snapshot_registry\\.username and password`));
    }
    expect(toCryoError(new RegistryError('REGISTRY_UNREACHABLE', `registry ${host} is unreachable: connection refused`, { host })))
      .toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining(`check that the registry runs and that this executor can reach ${host}`) });
    expect(toCryoError(new RegistryError('REGISTRY_NOT_FOUND', 'manifest x not found', { host, status: 404 })).code).toBe('NOT_FOUND');
  });

  it('maps clip, runc, reference and credential-helper errors to stable codes', () => {
    expect(toCryoError(new ClipError('SPAN_CORRUPT', 'span 3 of layer sha256:x has the wrong digest')).code).toBe('UNPROCESSABLE');
    expect(toCryoError(new ClipError('INDEX_CORRUPT', 'bad checksum')).message).toMatch(/restore eagerly/);
    expect(toCryoError(new RuncError('runc pause failed: container "cryo-x" does not exist', 'container "cryo-x" does not exist')).code).toBe('NOT_FOUND');
    expect(toCryoError(new RuncError('runc run failed: cgroup trouble', 'cgroup trouble'))).toMatchObject({ code: 'UNAVAILABLE', message: 'the container runtime failed: runc run failed: cgroup trouble' });
    let refError: unknown;
    try {
      parseImageReference('UPPER/Case');
    } catch (err) {
      refError = err;
    }
    expect(refError).toBeInstanceOf(ImageReferenceError);
    expect(toCryoError(refError)).toMatchObject({ code: 'UNPROCESSABLE', message: expect.stringContaining('[host[:port]/]repository[:tag]') });
    expect(toCryoError(new CredentialHelperError('ecr', 'docker credential helper docker-credential-ecr was not found on PATH')).code).toBe('UNAVAILABLE');
  });

  it('passes CryoErrors through, prefixes context, caps long messages, and calls the unknown INTERNAL', () => {
    const own = new CryoError('CONFLICT', 'sandbox x is already paused');
    expect(toCryoError(own)).toBe(own);
    expect(toCryoError(new RegistryError('REGISTRY_DENIED', 'registry h denied user u access to a/b', { host: 'h' }), 'lazy sandbox x failed to start'))
      .toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(/^lazy sandbox x failed to start: registry h denied user u access to a\/b; give that user pull and push rights/) });
    expect(toCryoError(new Error('x'.repeat(100_000))).message.length).toBeLessThanOrEqual(MAX_ERROR_MESSAGE);
    expect(toCryoError(new CryoError('UNAVAILABLE', 'y'.repeat(100_000))).message.length).toBeLessThanOrEqual(MAX_ERROR_MESSAGE);
    expect(toCryoError(new TypeError('cannot read properties of undefined'))).toMatchObject({ code: 'INTERNAL' });
    expect(toCryoError(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })).code).toBe('UNAVAILABLE');
  });
});
