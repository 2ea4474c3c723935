import { describe, expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import { ProgressTracker, followDockerStream, parseProgressChunk } from './docker-progress';

describe('Docker progress streams', () => {
  it('reassembles JSON lines split across chunks', () => {
    const first = parseProgressChunk('', '{"status":"Pushing","id":"a1"}\n{"status":"Pu');
    expect(first.events).toEqual([{ status: 'Pushing', id: 'a1' }]);
    const second = parseProgressChunk(first.rest, 'shed","id":"a1"}\n');
    expect(second.events).toEqual([{ status: 'Pushed', id: 'a1' }]);
    expect(second.rest).toBe('');
  });

  it('finds an error line in a stream that otherwise looks fine', async () => {
    const stream = new PassThrough();
    const tracker = new ProgressTracker('push');
    const done = followDockerStream(stream, tracker, () => undefined);
    stream.write('{"status":"The push refers to repository [127.0.0.1:5001/cryo/snapshots]"}\n');
    stream.write('{"status":"Preparing","progressDetail":{},"id":"abc"}\n');
    stream.end('{"errorDetail":{"message":"unauthorized: authentication required"},"error":"unauthorized: authentication required"}\n');
    await done;
    expect(tracker.error).toBe('unauthorized: authentication required');
    expect(tracker.digest).toBeUndefined();
  });

  it('reports the manifest digest from the aux line and sums layer bytes', async () => {
    const stream = new PassThrough();
    const tracker = new ProgressTracker('push');
    const done = followDockerStream(stream, tracker, () => undefined);
    stream.write('{"status":"Pushing","progressDetail":{"current":50,"total":100},"id":"l1"}\n');
    stream.write('{"status":"Pushing","progressDetail":{"current":10,"total":300},"id":"l2"}\n');
    expect(tracker.progress()).toEqual({ phase: 'push', bytes_done: 60, bytes_total: 400 });
    stream.write('{"status":"Pushed","progressDetail":{},"id":"l1"}\n');
    stream.end('{"progressDetail":{},"aux":{"Tag":"t","Digest":"sha256:0123","Size":527}}');
    await done;
    expect(tracker.error).toBeUndefined();
    expect(tracker.digest).toBe('sha256:0123');
    expect(tracker.progress().bytes_done).toBe(110);
  });

  it('counts a pull\'s download bytes, never going back when the layer is extracted', () => {
    const tracker = new ProgressTracker('pull');
    const lines = [
      { status: 'Pulling fs layer', progressDetail: {}, id: 'l1' },
      { status: 'Downloading', progressDetail: { current: 40, total: 100 }, id: 'l1' },
      { status: 'Download complete', progressDetail: {}, id: 'l1' },
      { status: 'Extracting', progressDetail: { current: 5, total: 100 }, id: 'l1' },
    ];
    const seen = lines.map((e) => {
      tracker.accept(e);
      return tracker.progress().bytes_done;
    });
    expect(seen).toEqual([0, 40, 100, 100]);
    tracker.accept({ status: 'Pull complete', progressDetail: {}, id: 'l1' });
    expect(tracker.progress()).toEqual({ phase: 'pull', bytes_done: 100, bytes_total: 100 });
  });

  it('treats an unparseable line as an error rather than ignoring it', () => {
    const { events } = parseProgressChunk('', 'garbage\n');
    const tracker = new ProgressTracker('pull');
    for (const e of events) tracker.accept(e);
    expect(tracker.error).toMatch(/unparseable/);
  });
});
