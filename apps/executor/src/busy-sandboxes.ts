/**
 * Sandboxes an operation is working on (create, rollback, snapshot), counted per sandbox id: the
 * reconciler leaves a busy sandbox alone, so a container that is being made or swapped is never
 * removed as unwanted.
 */
export class BusySandboxes {
  private readonly counts = new Map<string, number>();

  /** How many sandboxes are busy now (a sandbox no operation holds is forgotten). */
  get size(): number {
    return this.counts.size;
  }

  /** Whether any operation holds `sandboxId`'s busy mark now. */
  has(sandboxId: string): boolean {
    return (this.counts.get(sandboxId) ?? 0) > 0;
  }

  /** Run `work` holding `sandboxId`'s busy mark; released when it settles, also when it fails. */
  async hold<T>(sandboxId: string, work: () => Promise<T>): Promise<T> {
    this.counts.set(sandboxId, (this.counts.get(sandboxId) ?? 0) + 1);
    try {
      return await work();
    } finally {
      const left = (this.counts.get(sandboxId) ?? 1) - 1;
      if (left > 0) this.counts.set(sandboxId, left);
      else this.counts.delete(sandboxId);
    }
  }
}
