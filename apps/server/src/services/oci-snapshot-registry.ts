/**
 * SnapshotImageRegistry over @cryo/oci. Credentials and http/https come from the one
 * registry-access policy (@cryo/registry-auth), with the server's `snapshot_registry` block.
 */
import { connectRegistry, parseImageReference, type RegistryClient } from '@cryo/oci';
import type { SnapshotRegistry } from '@cryo/registry-auth';
import type { SnapshotImageRegistry } from './snapshot-registry';

export class OciSnapshotRegistry implements SnapshotImageRegistry {
  private readonly clients = new Map<string, Promise<RegistryClient>>();

  constructor(private readonly config: SnapshotRegistry) {}

  async resolveDigest(ref: string): Promise<string | null> {
    const parsed = parseImageReference(ref);
    const client = await this.client(parsed.host);
    const head = await client.headManifest(parsed.repository, parsed.digest ?? parsed.tag ?? 'latest');
    return head?.digest ?? null;
  }

  async deleteManifest(ref: string, digest: string): Promise<'deleted' | 'not_found'> {
    const parsed = parseImageReference(ref);
    const client = await this.client(parsed.host);
    return client.deleteManifest(parsed.repository, digest);
  }

  async close(): Promise<void> {
    const clients = [...this.clients.values()];
    this.clients.clear();
    await Promise.allSettled(clients.map(async (c) => (await c).close()));
  }

  private client(host: string): Promise<RegistryClient> {
    let client = this.clients.get(host);
    if (client === undefined) {
      client = this.connect(host);
      // A failed credential lookup is not cached: the next attempt looks again.
      client.catch(() => this.clients.delete(host));
      this.clients.set(host, client);
    }
    return client;
  }

  private connect(host: string): Promise<RegistryClient> {
    return connectRegistry(host, { snapshot_registry: this.config }, { userAgent: 'cryo-server' });
  }
}
