/**
 * Docker's push and pull answer HTTP 200 and report failures only as `error` / `errorDetail`
 * lines inside the progress stream, so every line is scanned. A good push ends with
 * `{"aux":{"Tag","Digest","Size"}}`, which carries the manifest digest.
 */
import type { Progress } from '@cryo/snapshot';

export interface DockerProgressEvent {
  status?: string;
  id?: string;
  error?: string;
  errorDetail?: { message?: string; code?: number };
  progressDetail?: { current?: number; total?: number };
  aux?: { Tag?: string; Digest?: string; Size?: number };
}

/** Tracks one push or pull stream: errors, per-layer byte progress, the final digest. */
export class ProgressTracker {
  private readonly layers = new Map<string, { current: number; total: number }>();
  error: string | undefined;
  digest: string | undefined;
  constructor(private readonly phase: string) {}

  accept(event: DockerProgressEvent): void {
    const message = event.errorDetail?.message ?? event.error;
    if (message !== undefined && this.error === undefined) this.error = message;
    if (event.aux?.Digest !== undefined) this.digest = event.aux.Digest;
    // A pull's "Extracting" restarts each layer's count at zero: bytes are the download's only.
    if (event.id !== undefined && event.status !== 'Extracting' && event.progressDetail?.total !== undefined && event.progressDetail.total > 0) {
      this.layers.set(event.id, { current: event.progressDetail.current ?? 0, total: event.progressDetail.total });
    } else if (event.id !== undefined && /^(Pushed|Layer already exists|Download complete|Pull complete|Already exists|Mounted from)/.test(event.status ?? '')) {
      const layer = this.layers.get(event.id);
      if (layer !== undefined) layer.current = layer.total;
    }
  }

  progress(): Progress {
    let done = 0;
    let total = 0;
    for (const layer of this.layers.values()) {
      done += Math.min(layer.current, layer.total);
      total += layer.total;
    }
    return { phase: this.phase, bytes_done: done, bytes_total: total > 0 ? total : null };
  }
}

/** Split a chunked stream of newline-separated JSON objects into events. */
export function parseProgressChunk(buffered: string, chunk: string): { events: DockerProgressEvent[]; rest: string } {
  const text = buffered + chunk;
  const lines = text.split('\n');
  const rest = lines.pop() ?? '';
  const events: DockerProgressEvent[] = [];
  for (const line of lines) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    try {
      events.push(JSON.parse(trimmed) as DockerProgressEvent);
    } catch {
      events.push({ error: `unparseable progress line from Docker: ${trimmed.slice(0, 200)}` });
    }
  }
  return { events, rest };
}

/** Consume a Docker progress stream to its end; resolves with the tracker, never hides an error line. */
export function followDockerStream(
  stream: NodeJS.ReadableStream,
  tracker: ProgressTracker,
  onEvent: () => void,
): Promise<ProgressTracker> {
  return new Promise((resolve, reject) => {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const parsed = parseProgressChunk(rest, chunk);
      rest = parsed.rest;
      for (const event of parsed.events) tracker.accept(event);
      if (parsed.events.length > 0) onEvent();
    });
    stream.on('end', () => {
      if (rest.trim() !== '') for (const event of parseProgressChunk(rest, '\n').events) tracker.accept(event);
      resolve(tracker);
    });
    stream.on('error', reject);
  });
}
