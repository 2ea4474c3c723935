import { describe, expect, it } from 'vitest';
import { FetchStatsDeltas } from './metrics-fetch-stats';
import { emptyFetchStats } from './reader/span-store';

describe('FetchStatsDeltas', () => {
  it('answers what each mount counted since its last observation', () => {
    const deltas = new FetchStatsDeltas();
    expect(deltas.observe('m#1', { requests: 2, bytes: 100 })).toEqual({ ...emptyFetchStats(), requests: 2, bytes: 100 });
    expect(deltas.observe('m#1', { requests: 5, bytes: 160, diskHits: 1 })).toEqual({ ...emptyFetchStats(), requests: 3, bytes: 60, diskHits: 1 });
    expect(deltas.observe('m#1', { requests: 5, bytes: 160, diskHits: 1 })).toEqual(emptyFetchStats());
    // Another mount is counted on its own.
    expect(deltas.observe('n#2', { requests: 1 })).toEqual({ ...emptyFetchStats(), requests: 1 });
  });

  it('takes a counter that went down as a new process, and forgets mounts no longer listed', () => {
    const deltas = new FetchStatsDeltas();
    deltas.observe('m#1', { requests: 5, bytes: 500 });
    expect(deltas.observe('m#1', { requests: 1, bytes: 900 })).toEqual({ ...emptyFetchStats(), requests: 1, bytes: 900 });
    deltas.retain([]);
    expect(deltas.observe('m#1', { requests: 2, bytes: 950 })).toEqual({ ...emptyFetchStats(), requests: 2, bytes: 950 });
  });

  it('ignores what is not a count (an older or damaged status file)', () => {
    const deltas = new FetchStatsDeltas();
    const odd = { requests: -3, bytes: Number.NaN, spansFetched: 2 } as Parameters<FetchStatsDeltas['observe']>[1];
    expect(deltas.observe('m#1', odd)).toEqual({ ...emptyFetchStats(), spansFetched: 2 });
  });
});
