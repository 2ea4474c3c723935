import { describe, expect, it } from 'vitest';
import { mixedData } from '../testing/data';
import { InlineHasher, WorkerHasher, type LayerHasher } from './layer-hasher';

async function run(h: LayerHasher, data: Buffer): Promise<unknown> {
  h.blob(data.subarray(0, 1000));
  h.blob(data.subarray(1000)); // past one 4 MiB batch
  h.cut();
  for (let i = 0; i < data.length; i += 300_001) {
    if (i > 0 && i % 3 === 0) h.cut();
    h.data(data.subarray(i, i + 300_001));
  }
  h.cut();
  h.data(data.subarray(0, 10));
  return h.finish();
}

describe('layer hashers', () => {
  it('the worker-thread hasher gives the same digests as the inline one', async () => {
    const data = mixedData(5_000_000, 3);
    const a = await run(new InlineHasher(), data);
    const b = await run(new WorkerHasher(), data);
    expect(b).toEqual(a);
  });
});
