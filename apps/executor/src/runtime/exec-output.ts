/** Exec output kept in memory: the first `limit` bytes of a stream, saying when it cut. */
export const EXEC_OUTPUT_LIMIT = 4 * 1024 * 1024;

export class CappedOutput {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private cut = false;
  constructor(private readonly limit: number = EXEC_OUTPUT_LIMIT) {}
  push(chunk: Buffer): void {
    const room = this.limit - this.size;
    if (chunk.length > room) this.cut = true;
    if (room <= 0) return;
    const part = chunk.subarray(0, room);
    this.chunks.push(part);
    this.size += part.length;
  }
  text(): string {
    const body = Buffer.concat(this.chunks).toString('utf8');
    return this.cut ? `${body}\n[cryo: output truncated at ${this.limit} bytes]` : body;
  }
}
