/** An in-memory registry for tests: tags pointing at digests, and a switch to make it unreachable. */
import { RegistryError } from '@cryo/registry-auth';
import type { SnapshotImageRegistry } from '../services/snapshot-registry';

export class FakeRegistry implements SnapshotImageRegistry {
  /** ref without digest (host/repo:tag) -> digest */
  readonly tags = new Map<string, string>();
  readonly manifests = new Set<string>();
  readonly deleted: string[] = [];
  down = false;

  push(ref: string, digest: string): void {
    this.tags.set(ref, digest);
    this.manifests.add(digest);
  }

  has(digest: string): boolean {
    return this.manifests.has(digest);
  }

  async resolveDigest(ref: string): Promise<string | null> {
    this.check(ref);
    const digest = this.tags.get(ref);
    return digest !== undefined && this.manifests.has(digest) ? digest : null;
  }

  async deleteManifest(ref: string, digest: string): Promise<'deleted' | 'not_found'> {
    this.check(ref);
    if (!this.manifests.delete(digest)) return 'not_found';
    this.deleted.push(digest);
    return 'deleted';
  }

  private check(ref: string): void {
    if (this.down) {
      const host = ref.split('/')[0] ?? ref;
      throw new RegistryError('REGISTRY_UNREACHABLE', `registry ${host} is unreachable (connect ECONNREFUSED)`, { host });
    }
  }
}
