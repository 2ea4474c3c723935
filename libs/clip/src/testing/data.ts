/** Deterministic test data: compressible text, binary-ish runs and random bytes. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x1_0000_0000;
  };
}

const WORDS = 'the quick brown fox jumps over lazy dog lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua'.split(' ');

export function mixedData(size: number, seed = 1): Buffer {
  const rnd = prng(seed);
  const out = Buffer.alloc(size);
  let pos = 0;
  while (pos < size) {
    const kind = rnd();
    const len = Math.min(size - pos, 1 + Math.floor(rnd() * 200_000));
    if (kind < 0.6) {
      let i = pos;
      while (i < pos + len) {
        const w = `${WORDS[Math.floor(rnd() * WORDS.length)] ?? 'x'}${rnd() < 0.1 ? '\n' : ' '}`;
        i += out.write(w, i, Math.min(w.length, pos + len - i), 'latin1');
      }
    } else if (kind < 0.85) {
      for (let i = pos; i < pos + len; i++) out[i] = Math.floor(rnd() * 256);
    } else {
      out.fill(Math.floor(rnd() * 4), pos, pos + len);
    }
    pos += len;
  }
  return out;
}
