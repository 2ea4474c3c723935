/**
 * Where a gzip layer gets its checkpoints. A lazy read fetches and inflates whole spans (checkpoint
 * to checkpoint), so a small file costs the span around it: with uniform 1 MiB spans an import
 * that touches small files spread over a layer pulls about 400 KiB of compressed data for each.
 * Checkpoints are not equally dear: most need a window (the output before them that the next
 * 32 KiB reference, pruned and deflated: ~1-2 KiB each), but where the data after a block
 * boundary references nothing before it (already-compressed files, stored blocks, the start of
 * unrelated content) a checkpoint costs only its record (~48 bytes).
 *
 * The plan, decided at each deflate block boundary as the layer streams by:
 * - inside a large file (one of at least `maxSpan` bytes, with at least `minSpan` of it still to
 *   come) spans are `maxSpan` long, as uniform spans were: large files are read in large pieces
 *   anyway. In the second half of such a span a boundary that needs no window ends it early;
 * - everywhere else (small files, the tail of a large file before the small ones that follow it,
 *   tar headers) every block boundary `minSpan` or more after the last checkpoint is a candidate.
 *   It is taken provisionally and settled 32 KiB of output later, once it is known whether it
 *   needs a window: a windowless one costs a record, one with a window a record and the window;
 * - the budget (`budget` of the compressed layer, aimed at 95 %) accrues with the compressed bytes
 *   read: after `c` bytes, everything the index holds for this layer — records, deflated windows
 *   and an allowance per tar entry for its metadata — stays within `budget * c`, and a candidate
 *   is kept only if its real cost (its window pruned and deflated first) still fits. So the index
 *   stays within budget whatever the rest of the layer holds; budget left over where large files
 *   need no candidates carries on to the small files after them (Docker writes layers in path
 *   order: /usr/lib before /usr/share), while small files early in a layer get only what has
 *   accrued by then. Spans of `maxSpan` and member starts are taken whatever the budget: with
 *   them alone the index is what uniform spans give. When the layer's size is known, a reserve is
 *   also kept for what the rest of the layer would cost without optional checkpoints, judged by the
 *   data read lately (its entries, its compression ratio, its windows' size), so that cuts in a region of costly windows later do not overrun what was
 *   spent early.
 */
import type { Checkpoint, CutDecision } from '../gzip/indexer';
import type { TarParser } from '../tar/parser';

export interface CheckpointPolicy {
  /** longest span: a checkpoint at the first block boundary this far past the previous one (bytes of output) */
  maxSpan: number;
  /** shortest span between optional checkpoints (bytes of output) */
  minSpan: number;
  /** share of the compressed layer the index may spend (0.01 = 1 %) */
  budget: number;
  /** size of the compressed layer (the manifest's), when known: a reserve is kept for the rest of it */
  layerSize?: number;
}

export const DEFAULT_MIN_SPAN = 32 * 1024;
export const DEFAULT_INDEX_BUDGET = 0.01;

/** index bytes per span record (deflated), and per tar entry (inode, dirent, name; deflated) — measured, rounded up */
const RECORD_BYTES = 48;
const ENTRY_BYTES = 24;
/** how often the reserve's view of "recent" data moves on (compressed bytes) */
const RECENT_BYTES = 256 * 1024;
/** no pruned window deflates to less (a handful of referenced bytes among zeros) */
const MIN_WINDOW_BYTES = 64;
/** the share of the budget the pacing aims at: the per-entry and per-record estimates may be off a little */
const TARGET = 0.95;

export class CheckpointPlanner {
  /** what optional checkpoints cost so far (records and windows) */
  private optional = 0;
  /** what the layer costs without optional checkpoints: required cuts, member starts (entries are counted apart) */
  private mandatory = 0;
  private readonly mandatoryCps = new Set<Checkpoint>();
  /** the data read lately: where it started, its compression ratio and its entries per compressed byte */
  private recent = { coff: 0, uoff: 0, entries: 0, ratio: 3, entryRate: 0 };
  /** recent windows' deflated size (a moving average over the last few) */
  private windowCost = 2048;
  private coff = 0;
  /** checkpoints by the rule that took them, for reports and tests */
  readonly taken = { required: 0, windowlessLarge: 0, windowless: 0, windowed: 0, members: 0, dropped: 0 };
  /** what the provisional checkpoint waiting for decide() is for (one at a time) */
  private candidate: 'large-file' | 'small-files' = 'small-files';

  constructor(
    private readonly policy: CheckpointPolicy,
    private readonly tar: TarParser,
  ) {}

  /** bytes the index may still spend on optional checkpoints after `coff` compressed bytes of the layer */
  allowance(coff: number): number {
    const entries = ENTRY_BYTES * this.tar.entries;
    const spent = this.mandatory + this.optional + entries;
    const accrued = TARGET * this.policy.budget * coff - spent;
    const size = this.policy.layerSize;
    if (size === undefined || coff <= 0 || coff >= size) return accrued;
    return Math.min(accrued, TARGET * this.policy.budget * size - spent - this.reserve(coff, size - coff));
  }

  /**
   * What `rest` more compressed bytes will cost without optional checkpoints, judged by the data
   * read lately: its tar entries, and a `maxSpan` cut with a window as big as the recent ones for
   * each `maxSpan` of output (at the recent compression ratio).
   */
  private reserve(coff: number, rest: number): number {
    const r = this.recent;
    if (coff - r.coff >= RECENT_BYTES) {
      const ratio = (this.tar.position - r.uoff) / (coff - r.coff);
      const entryRate = (ENTRY_BYTES * (this.tar.entries - r.entries)) / (coff - r.coff);
      this.recent = { coff, uoff: this.tar.position, entries: this.tar.entries, ratio, entryRate };
    }
    const cutsPerByte = this.recent.ratio / this.policy.maxSpan;
    return rest * (this.recent.entryRate + cutsPerByte * (RECORD_BYTES + this.windowCost));
  }

  /** GzipIndexer's cutAt: at a deflate block boundary */
  cutAt(_uoff: number, sinceLast: number, coff: number): CutDecision {
    const { maxSpan, minSpan } = this.policy;
    this.coff = coff;
    if (sinceLast >= maxSpan) {
      this.taken.required++;
      return 'yes';
    }
    if (sinceLast < minSpan) return 'no';
    const insideLargeFile = this.tar.dataSize >= maxSpan && this.tar.dataRemaining >= minSpan;
    if (insideLargeFile) {
      // the second half of a large file's span: a boundary that needs no window ends it early, for free
      this.candidate = 'large-file';
      return sinceLast >= maxSpan / 2 ? 'maybe' : 'no';
    }
    if (this.allowance(coff) < RECORD_BYTES) return 'no';
    this.candidate = 'small-files';
    return 'maybe';
  }

  /** GzipIndexer's decide: keep a provisional checkpoint? */
  decide(_cp: Checkpoint, needsWindow: boolean, windowBytes: () => number): boolean {
    if (this.candidate === 'large-file') {
      if (needsWindow) return false;
      this.taken.windowlessLarge++;
      this.mandatory += RECORD_BYTES;
      return true;
    }
    const allowance = this.allowance(this.coff);
    // What it really costs: its window is pruned and deflated only when that could fit (windows
    // smaller than half the recent ones are rare).
    const couldFit = allowance >= RECORD_BYTES + Math.max(MIN_WINDOW_BYTES, this.windowCost / 2);
    const cost = RECORD_BYTES + (!needsWindow ? 0 : couldFit ? windowBytes() : Infinity);
    if (allowance < cost) {
      this.taken.dropped++;
      return false;
    }
    this.optional += cost;
    if (needsWindow) this.noteWindow(cost - RECORD_BYTES);
    if (needsWindow) this.taken.windowed++;
    else this.taken.windowless++;
    return true;
  }

  /** every checkpoint, when taken (provisional ones are counted when kept) */
  onCheckpoint(cp: Checkpoint): void {
    if (cp.settled) this.taken.members++;
    if (cp.provisional) return; // counted if decide() keeps it
    this.mandatory += RECORD_BYTES;
    this.mandatoryCps.add(cp);
  }


  /** a checkpoint's window is final: count what a mandatory one really costs (optional ones were counted in decide) */
  onSettled(cp: Checkpoint): void {
    if (!this.mandatoryCps.delete(cp)) return;
    this.mandatory += cp.windowDeflated.length;
    if (cp.windowDeflated.length > 0) this.noteWindow(cp.windowDeflated.length);
  }

  private noteWindow(bytes: number): void {
    this.windowCost += (bytes - this.windowCost) / 4;
  }
}
