/**
 * clip's inflate addon (libs/clip/native/inflate/clip-inflate.c): zlib called directly, for the indexer.
 *
 * Node's zlib API does not report `strm.data_type` after `inflate(Z_BLOCK)`, the bit offset of a
 * deflate block boundary, and has no `inflatePrime`; the addon gives both, so a boundary's bit
 * offset is read, not searched for, and a resume at it is one inflate call. The zlib underneath
 * is the one inside Node (its exported symbols, as node-gyp sets addons up), the same version as
 * `node:zlib`. scripts/setup.sh builds the addon (`npm run build:fuse -w @cryo/clip` builds both
 * of clip's addons); without it no gzip layer can be indexed, and the error says how to build it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { ClipError } from '../errors';
import type { InflateStep } from './native-inflate';

/** Where scripts/setup.sh builds it (node-gyp's layout). */
export const INFLATE_ADDON = join(resolve(import.meta.dirname, '..', '..', 'native', 'inflate'), 'build', 'Release', 'clip_inflate.node');

interface NativeInflater {
  step(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number, state: Int32Array): string | undefined;
  close(): void;
}

interface Addon {
  Inflater: new () => NativeInflater;
  inflateAt(compressed: Uint8Array, bits: number, dictionary: Uint8Array, limit: number): Buffer | null;
  pruneWindow(compressed: Uint8Array, bits: number, window: Uint8Array, following: Uint8Array): [Buffer, number, boolean];
  zlibVersion(): string;
}

let addon: Addon | undefined;

function load(): Addon {
  if (addon) return addon;
  if (!existsSync(INFLATE_ADDON)) {
    throw new ClipError(
      'EIO',
      `clip's inflate addon is not built (${INFLATE_ADDON} is missing): run scripts/setup.sh, or \`npm run build:fuse -w @cryo/clip\``,
    );
  }
  try {
    addon = createRequire(import.meta.url)(INFLATE_ADDON) as Addon;
  } catch (err) {
    throw new ClipError('EIO', `clip's inflate addon ${INFLATE_ADDON} does not load: ${(err as Error).message} (rebuild it: npm run build:fuse -w @cryo/clip)`, undefined, {
      cause: err,
    });
  }
  return addon;
}

/** An InflateStep with the stream's `data_type` after the call (zlib.h: low 3 bits = unused bits of the last byte consumed). */
export interface BlockStep extends InflateStep {
  dataType: number;
}

/** One raw-deflate stream (no zlib or gzip wrapper), driven one `inflate()` call at a time. */
export class BlockInflater {
  private readonly native: NativeInflater;
  private readonly state = new Int32Array(3);
  private closed = false;

  constructor() {
    this.native = new (load().Inflater)();
  }

  /** One zlib inflate() call; a data error comes back as `error` (and ends the stream). */
  step(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): BlockStep {
    if (this.closed) throw new ClipError('EIO', 'internal: inflate stream used after close');
    const error = this.native.step(flush, input, inOff, inLen, out, outOff, outLen, this.state);
    if (error !== undefined) {
      this.closed = true;
      return { consumed: 0, produced: 0, availIn: inLen, availOut: outLen, dataType: 0, error };
    }
    const availIn = this.state[0] ?? 0;
    const availOut = this.state[1] ?? 0;
    return { consumed: inLen - availIn, produced: outLen - availOut, availIn, availOut, dataType: this.state[2] ?? 0 };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.close();
  }
}

/**
 * At most `limit` bytes of output resumed at a deflate block boundary: `compressed` starts at the
 * byte before the boundary, whose high `bits` bits (0..7) begin the block, and runs as far as the
 * caller has it; `dictionary` is the window (may be empty). Undefined when the data is corrupt or
 * references output before the dictionary.
 */
export function inflateAt(compressed: Buffer, bits: number, dictionary: Buffer, limit: number): Buffer | undefined {
  return load().inflateAt(compressed, bits, dictionary, limit) ?? undefined;
}

/**
 * The window pruned to the bytes the first 32 KiB of output after the boundary copy (marker
 * dictionaries, as realign.ts `pruneWindow`; the others zeroed), how many those are, and whether
 * the resumed output equals `following` (the output that really came after the boundary).
 * Arguments as for inflateAt.
 */
export function pruneWindowAt(compressed: Buffer, bits: number, window: Buffer, following: Buffer): { window: Buffer; used: number; verified: boolean } {
  const [pruned, used, verified] = load().pruneWindow(compressed, bits, window, following);
  return { window: pruned, used, verified };
}

/** The zlib version the addon runs on (Node's own). */
export function nativeZlibVersion(): string {
  return load().zlibVersion();
}
