/**
 * LayerSource backed by a registry through @cryo/oci. Tokens are the
 * RegistryClient's business: it refreshes them transparently, so a mount that
 * lives for days keeps reading. Nothing secret ends up in the index.
 */
import { RegistryClient } from '@cryo/oci';
import { isLoopbackHost, type RegistryCredentials } from '@cryo/registry-auth';
import type { LayerSource } from './source';

export interface RegistryAccess {
  /** registry host[:port]; defaults to the one recorded in the index */
  host?: string;
  /** plain http; default: true for loopback hosts (as dockerd does), else false */
  insecure?: boolean;
  credentials?: RegistryCredentials | undefined;
  /** an existing client (shares its connection pool and token cache) */
  client?: RegistryClient;
}

export function registryClient(host: string, access: RegistryAccess = {}): RegistryClient {
  return (
    access.client ??
    new RegistryClient({
      host,
      insecure: access.insecure ?? isLoopbackHost(host),
      credentials: access.credentials,
      userAgent: 'cryo-clip',
    })
  );
}

export class RegistryLayerSource implements LayerSource {
  constructor(
    readonly client: RegistryClient,
    readonly repository: string,
  ) {}

  readRange(digest: string, start: number, endInclusive: number, blobSize?: number): Promise<Buffer> {
    return this.client.getBlobRange(this.repository, digest, start, endInclusive, blobSize === undefined ? {} : { blobSize });
  }

  async openStream(digest: string): Promise<AsyncIterable<Buffer>> {
    const { stream } = await this.client.getBlob(this.repository, digest, { verify: false });
    return stream;
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
