/**
 * Exec output kept in memory and sent to the server: at most `EXEC_OUTPUT_LIMIT` bytes per stream
 * **as the stream's text is encoded in the JSON result** (UTF-8, with JSON's escapes: a control
 * byte such as 0x01 costs 6 bytes as `\u0001`, an invalid UTF-8 byte 3 as U+FFFD). Both streams
 * together stay under the server's 8 MiB limit on executor results (apps/server INTERNAL_BODY_LIMIT);
 * a cap on raw bytes alone let binary output grow past it, the result was refused with 413 and
 * the exec never ended.
 */
export const EXEC_OUTPUT_LIMIT = 3 * 1024 * 1024;

/** Bytes `cp` takes inside a JSON string (JSON.stringify's escapes, UTF-8). RFC 8259 section 7. */
function jsonSize(cp: number): number {
  if (cp === 0x22 || cp === 0x5c) return 2; // \" and \\
  if (cp < 0x20) return cp === 0x08 || cp === 0x09 || cp === 0x0a || cp === 0x0c || cp === 0x0d ? 2 : 6;
  if (cp < 0x80) return 1;
  if (cp < 0x800) return 2;
  if (cp >= 0xd800 && cp <= 0xdfff) return 6; // a lone surrogate is written as \udXXX
  return cp < 0x10000 ? 3 : 4;
}

/** Bytes `text` takes as a JSON string, without its quotes. */
export function jsonStringBytes(text: string): number {
  let size = 0;
  for (const ch of text) size += jsonSize(ch.codePointAt(0)!);
  return size;
}

/**
 * One output stream of an exec: the first bytes pushed, and `text()` cut so that its JSON
 * encoding takes at most `limit` bytes, ending with a line that says how much was kept.
 */
export class CappedOutput {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private total = 0;
  constructor(private readonly limit: number = EXEC_OUTPUT_LIMIT) {}
  push(chunk: Buffer): void {
    this.total += chunk.length;
    // Every byte costs at least one encoded byte, so more than `limit` raw bytes is never needed.
    const room = this.limit - this.size;
    if (room <= 0) return;
    const part = chunk.subarray(0, room);
    this.chunks.push(part);
    this.size += part.length;
  }
  text(): string {
    const body = Buffer.concat(this.chunks).toString('utf8');
    if (this.total === this.size && jsonStringBytes(body) <= this.limit) return body;
    const budget = this.limit - 200; // room for the note
    let size = 0;
    let end = 0;
    for (const ch of body) {
      const cost = jsonSize(ch.codePointAt(0)!);
      if (size + cost > budget) break;
      size += cost;
      end += ch.length;
    }
    return `${body.slice(0, end)}\n[cryo: output truncated: ${this.total} bytes written; the start is kept, cut to ${this.limit} bytes as JSON]`;
  }
}
