// Bytes of upstream search pages held in memory by the requests in progress (issue 15, peak RSS). A parsed
// page is several times its bytes, and a CPU-bound gateway gains nothing from parsing more pages at once than
// it can decide, so a request's first page waits, in arrival order, while others hold the budget. Its later
// pages never wait: a request that holds bytes always finishes and gives them back, so nothing deadlocks.

/**
 * Room for two 1,000-entry pages (~1 MB each) at once and for every 100-entry page of ten connections: one
 * thread decides them, so more in flight only adds garbage (2 MiB kept 1,000-entry throughput where 1 MiB lost
 * a fifth, and with the heap cap held peak RSS to 266–280 MB).
 */
export const DEFAULT_PAGE_BUDGET_BYTES = 2 * 1024 * 1024;

interface Waiter {
  readonly bytes: number;
  readonly admit: () => void;
}

export class PageBudget {
  readonly limitBytes: number;
  private held = 0;
  private readonly waiting: Waiter[] = [];
  private readonly onWait?: () => void;

  /** `onWait` is told each time a request has to wait for the budget (a metric). */
  constructor(limitBytes: number, onWait?: () => void) {
    this.limitBytes = limitBytes;
    this.onWait = onWait;
  }

  /** One request's share; give it back with `release()` once the reply is sent. */
  lease(): PageLease {
    return new PageLease(this);
  }

  /** Bytes held and requests waiting now (metrics, tests). */
  state(): { held: number; waiting: number } {
    return { held: this.held, waiting: this.waiting.length };
  }

  /** @internal a lease's first reservation: at once if it fits (or nothing is held), else after those before it. */
  acquire(bytes: number): Promise<void> | undefined {
    if (this.waiting.length === 0 && this.fits(bytes)) {
      this.held += bytes;
      return undefined;
    }
    this.onWait?.();
    return new Promise((admit) => this.waiting.push({ bytes, admit }));
  }

  /** @internal a later page of a request already admitted: counted, never waited for. */
  add(bytes: number): void {
    this.held += bytes;
  }

  /** @internal */
  free(bytes: number): void {
    this.held -= bytes;
    while (this.waiting.length > 0 && this.fits(this.waiting[0].bytes)) {
      const next = this.waiting.shift() as Waiter;
      this.held += next.bytes;
      next.admit();
    }
  }

  /** A page larger than the whole budget is still read, alone. */
  private fits(bytes: number): boolean {
    return this.held === 0 || this.held + bytes <= this.limitBytes;
  }
}

export class PageLease {
  private readonly budget: PageBudget;
  private bytes = 0;
  /** The first page's turn in the budget; every page after it (even one read while it waits) only adds. */
  private admission: Promise<void> | undefined;
  private released = false;

  constructor(budget: PageBudget) {
    this.budget = budget;
  }

  /** Resolves when a page of `bytes` may be parsed and kept until the request ends. */
  async reserve(bytes: number): Promise<void> {
    if (this.released) throw new Error('page lease used after its request ended');
    if (this.admission === undefined) {
      this.admission = Promise.resolve(this.budget.acquire(bytes));
      await this.admission;
    } else {
      // A request never queues twice: two turns of one request could each wait for the other's bytes.
      await this.admission;
      this.budget.add(bytes);
    }
    // The request ended while this page waited (a read abandoned after another failed): hand it straight back.
    if (this.released) this.budget.free(bytes);
    else this.bytes += bytes;
  }

  /** Gives every byte back (idempotent); waiting requests are admitted in order. */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.bytes > 0) this.budget.free(this.bytes);
    this.bytes = 0;
  }
}
