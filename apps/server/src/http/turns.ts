/**
 * Turns of the event loop for public requests. The server is one event loop: a public request
 * that costs 20 ms of CPU (a 500-item list, a 1 MiB body checked against its schema) holds every
 * other request for that long, and ten of them arriving together hold an executor's heartbeat
 * for ten times that. Each public request waits here for its turn before its body is validated;
 * one turn is given per iteration of the event loop (setImmediate), so between two public
 * requests the loop always gets back to I/O: the executor protocol, which does not wait for
 * turns, is answered after at most one public request's work instead of after all of them.
 */
export class PublicRequestTurns {
  private readonly waiting: Array<() => void> = [];
  private scheduled = false;

  /** Resolves when it is this request's turn; one per event-loop iteration, first come first served. */
  wait(): Promise<void> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // An immediate queued from inside an immediate runs on the next iteration, after the poll phase.
    setImmediate(() => {
      this.scheduled = false;
      this.waiting.shift()?.();
      if (this.waiting.length > 0) this.schedule();
    });
  }
}
