// Journal integrity for the console (issue 8 §5): the hash chain verified by the same code as
// `disclosure-gateway audit verify` (SPEC §6), at most once per interval, one verification at a time.
import { verifyJournal, type BadEvent } from '../audit/verify.ts';

export interface JournalStatus {
  /** ISO instant the verification finished. */
  readonly lastVerified: string;
  readonly ok: boolean;
  /** Events whose chain verified (up to the first bad one). */
  readonly events: number;
  readonly firstBad?: BadEvent;
  /** The last line was cut short by a crash and never acknowledged (recovered on next open). */
  readonly tornTail?: boolean;
}

export class JournalStatusCache {
  private last?: { status: JournalStatus; at: number };
  private running?: Promise<JournalStatus>;

  private readonly dir: string;
  private readonly maxAgeMs: number;
  private readonly clock: () => number;

  constructor(dir: string, maxAgeMs: number, clock: () => number = Date.now) {
    this.dir = dir;
    this.maxAgeMs = maxAgeMs;
    this.clock = clock;
  }

  /** The latest verification, re-run when older than the interval; concurrent callers share one run. */
  async current(): Promise<JournalStatus> {
    if (this.last && this.clock() - this.last.at < this.maxAgeMs) return this.last.status;
    this.running ??= this.verify().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async verify(): Promise<JournalStatus> {
    const result = await verifyJournal(this.dir);
    const lastVerified = new Date(this.clock()).toISOString();
    const status: JournalStatus = result.ok
      ? { lastVerified, ok: true, events: result.events, ...(result.tornTail ? { tornTail: true } : {}) }
      : { lastVerified, ok: false, events: result.events, firstBad: result.firstBad };
    this.last = { status, at: this.clock() };
    return status;
  }
}
