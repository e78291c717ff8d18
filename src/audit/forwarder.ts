// Copies the audit journal to the upstream as AuditEvent resources (SPEC §6): FHIR batch Bundles of
// `PUT AuditEvent/<id>` (idempotent, so a resend after a crash never duplicates), a checkpoint written
// atomically after each accepted batch, exponential backoff while the upstream fails. Events the
// in-process journal just committed are sent from memory; the journal files are read only to catch up.
import { open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Bundle } from '@medplum/fhirtypes';
import { isFhirId } from '../fhir/references.ts';
import type { AuditJournal, CommittedEvent } from './journal.ts';
import { CHECKPOINT_FILE, inflateEvent, listSegments, parseEntry } from './segment.ts';

export interface ForwarderLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface AuditForwarderOptions {
  readonly dir: string;
  /** The in-process journal: the forwarder follows its commits and never reads past what it acknowledged. */
  readonly journal?: AuditJournal;
  /** Sends a batch Bundle (its JSON bytes) to the upstream FHIR base and returns its batch-response. */
  readonly postBatch: (batch: Buffer) => Promise<Bundle>;
  readonly batchSize?: number;
  /** Most event bytes in one batch (default 4 MiB): a 1,000-entry page's event is ~450 KB. At least one event is always sent. */
  readonly batchBytes?: number;
  /** How often to look for new events when no journal notifies (and as a fallback). */
  readonly intervalMs?: number;
  /**
   * How long new events may wait to fill a batch (default 250 ms; SPEC §6 allows 10 s). Forwarding each
   * commit at once made every request pay two more disk flushes (the checkpoint) and an upstream POST.
   */
  readonly lingerMs?: number;
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
  /**
   * Least time between checkpoints flushed to disk (default 5 s); those between are written and renamed
   * without an fsync. A checkpoint lost in a crash only makes events go again (PUT by id: no duplicate),
   * while flushing after every batch made the journal's own fsync, which every response waits for, queue behind two more.
   */
  readonly checkpointSyncMs?: number;
  readonly logger?: ForwarderLogger;
}

export interface ForwarderCheckpoint {
  readonly lastSeq: number;
  readonly lastHash?: string;
}

export class ForwardRejectedError extends Error {
  readonly code = 'audit-forward-rejected';
}

/** Largest chunk read from a segment at once; a batch needs far less. */
const READ_CHUNK = 1024 * 1024;
/** A line longer than a chunk (an event of a page with thousands of entries) is read with a larger one, up to this. */
const MAX_LINE_BYTES = 64 * 1024 * 1024;
/** Most event bytes kept in memory for forwarding; past it the oldest are read back from the journal. */
const MAX_RECENT_BYTES = 8 * 1024 * 1024;

interface Cursor {
  segment: string;
  offset: number;
  /** Seq of the last entry before `offset`. */
  seq: number;
}

export class AuditForwarder {
  private readonly dir: string;
  private readonly journal?: AuditJournal;
  private readonly postBatch: (batch: Buffer) => Promise<Bundle>;
  private readonly batchSize: number;
  private readonly batchBytes: number;
  /** The last batch stopped at batchSize or batchBytes: more may be waiting. */
  private lastBatchFull = false;
  private readonly intervalMs: number;
  private readonly lingerMs: number;
  private lingerTimer: NodeJS.Timeout | undefined;
  private wakeRequested = false;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly logger?: ForwarderLogger;

  private checkpoint: ForwarderCheckpoint | undefined;
  private readonly checkpointSyncMs: number;
  private lastCheckpointSync = 0;
  private cursor: Cursor | undefined;
  /** Consecutive events the journal committed and the upstream has not yet accepted, as the journal holds their JSON. */
  private recent: ForwardEntry[] = [];
  private recentBytes = 0;
  /** Highest seq seen in the journal (from the journal or from reading). */
  private knownLastSeq = 0;
  /** When the oldest event not yet forwarded was recorded (ms), for lag(). */
  private oldestPendingAt: number | undefined;
  private running = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private inBackoff = false;
  private failures = 0;
  private exclusive: Promise<unknown> = Promise.resolve();
  private unsubscribe: (() => void) | undefined;
  private counters = { batches: 0, events: 0, failures: 0 };

  constructor(opts: AuditForwarderOptions) {
    this.dir = opts.dir;
    this.journal = opts.journal;
    this.postBatch = opts.postBatch;
    this.batchSize = opts.batchSize ?? 100;
    this.batchBytes = opts.batchBytes ?? 4 * 1024 * 1024;
    this.intervalMs = opts.intervalMs ?? 1000;
    this.lingerMs = opts.lingerMs ?? 250;
    this.backoffInitialMs = opts.backoff?.initialMs ?? 500;
    this.backoffMaxMs = opts.backoff?.maxMs ?? 30_000;
    this.checkpointSyncMs = opts.checkpointSyncMs ?? 5000;
    this.logger = opts.logger;
  }

  /** Follows the journal until stop(). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.unsubscribe = this.journal?.onCommit((lastSeq, committed) => {
      this.knownLastSeq = Math.max(this.knownLastSeq, lastSeq);
      this.keepRecent(committed);
      this.oldestPendingAt ??= Date.now();
      // New events do not cut a backoff short: a failing upstream is not hammered under load.
      if (this.inBackoff) return;
      if (this.lag().events >= this.batchSize) this.requestWake();
      else this.lingerTimer ??= setTimeout(() => {
        this.lingerTimer = undefined;
        if (!this.inBackoff) this.requestWake();
      }, this.lingerMs).unref();
    });
    this.loop = this.run();
  }

  /** Stops following, then forwards what it still can (until caught up or the upstream fails). */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.unsubscribe?.();
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    this.wake?.();
    await this.loop;
    try {
      while ((await this.forwardOnce()) > 0) {
        // drain
      }
    } catch (err) {
      this.logger?.warn({ err: describe(err), lag: this.lag().events }, 'audit forwarder stopped with events not yet forwarded');
    }
    if (this.checkpoint && this.checkpoint.lastSeq > 0) await this.saveCheckpoint(this.checkpoint, true);
  }

  /** Keeps just-committed events for the next batch; a gap (or an event without a safe id) leaves the older ones to the journal files. */
  private keepRecent(committed: readonly CommittedEvent[]): void {
    for (const e of committed) {
      const last = this.recent.at(-1);
      const putAs = e.id !== undefined && isFhirId(e.id) ? e.id : undefined;
      if (putAs === undefined || (last !== undefined && last.seq + 1 !== e.seq)) {
        this.recent = [];
        this.recentBytes = 0;
      }
      if (putAs === undefined) continue;
      this.recent.push({ seq: e.seq, hash: e.hash, id: putAs, recorded: e.recorded, event: e.json });
      this.recentBytes += e.json.length;
    }
    while (this.recentBytes > MAX_RECENT_BYTES && this.recent.length > 0) this.recentBytes -= (this.recent.shift() as ForwardEntry).event.length;
  }

  /** The events after `afterSeq` from memory, as readAfter would read them; undefined when memory does not start there. */
  private recentAfter(afterSeq: number, max: number): ForwardEntry[] | undefined {
    while (this.recent.length > 0 && this.recent[0].seq <= afterSeq) this.recentBytes -= (this.recent.shift() as ForwardEntry).event.length;
    if (this.recent.length === 0 || this.recent[0].seq !== afterSeq + 1) return undefined;
    const entries: ForwardEntry[] = [];
    let bytes = 0;
    for (const entry of this.recent) {
      if (entries.length >= max) break;
      if (entries.length > 0 && bytes + entry.event.length > this.batchBytes) {
        this.lastBatchFull = true;
        break;
      }
      entries.push(entry);
      bytes += entry.event.length;
    }
    if (entries.length >= this.batchSize) this.lastBatchFull = true;
    return entries;
  }

  /** Events in the journal not yet accepted by the upstream, and how long the oldest has waited. */
  lag(): { events: number; seconds: number } {
    const last = Math.max(this.knownLastSeq, this.journal?.lastSeq ?? 0);
    const events = Math.max(0, last - (this.checkpoint?.lastSeq ?? 0));
    const seconds = events > 0 && this.oldestPendingAt !== undefined ? Math.max(0, (Date.now() - this.oldestPendingAt) / 1000) : 0;
    return { events, seconds };
  }

  stats(): { batches: number; events: number; failures: number } {
    return { ...this.counters };
  }

  /** Forwards the next batch after the checkpoint; resolves with how many events the upstream accepted. */
  forwardOnce(): Promise<number> {
    const run = this.exclusive.then(() => this.forwardBatch());
    this.exclusive = run.catch(() => undefined);
    return run;
  }

  private async run(): Promise<void> {
    while (this.running) {
      try {
        await this.forwardOnce();
        this.failures = 0;
      } catch (err) {
        this.failures += 1;
        this.counters.failures += 1;
        const delay = Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** (this.failures - 1));
        this.logger?.warn({ err: describe(err), attempt: this.failures, retryInMs: delay, lag: this.lag().events }, 'audit forward failed; retrying');
        this.inBackoff = true;
        await this.sleep(delay);
        this.inBackoff = false;
        continue;
      }
      // A full batch may have more behind it; otherwise wait for a full batch, the linger timer or the poll.
      if (!this.lastBatchFull && this.running) await this.sleep(this.intervalMs);
    }
  }

  /** Wakes the loop, or keeps it from sleeping when it is busy forwarding right now. */
  private requestWake(): void {
    if (this.wake) this.wake();
    else this.wakeRequested = true;
  }

  private sleep(ms: number): Promise<void> {
    if (this.wakeRequested) {
      this.wakeRequested = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.wake === done) this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.wake = done;
    });
  }

  private async forwardBatch(): Promise<number> {
    const checkpoint = await this.loadCheckpoint();
    const limit = this.journal?.lastSeq ?? Number.POSITIVE_INFINITY;
    const entries = await this.readAfter(checkpoint.lastSeq, Math.min(this.batchSize, limit - checkpoint.lastSeq));
    if (entries.length === 0) {
      if (this.lag().events === 0) this.oldestPendingAt = undefined;
      return 0;
    }
    this.oldestPendingAt = Date.parse(entries[0].recorded ?? '') || this.oldestPendingAt || Date.now();
    // The events go out as the journal holds their bytes: no decode, parse or re-serialisation of ~45 KB each.
    const parts: Buffer[] = [batchHead];
    entries.forEach((e, i) => parts.push(Buffer.from(`${i > 0 ? ',' : ''}{"request":{"method":"PUT","url":"AuditEvent/${e.id}"},"resource":`), e.event, entryEnd));
    parts.push(batchEnd);
    const response = await this.postBatch(Buffer.concat(parts));
    // Advance over the accepted prefix only; a rejected entry is sent again (PUT is idempotent).
    const accepted = acceptedPrefix(response, entries.length);
    if (accepted > 0) {
      const last = entries[accepted - 1];
      await this.saveCheckpoint({ lastSeq: last.seq, lastHash: last.hash }, Date.now() - this.lastCheckpointSync >= this.checkpointSyncMs);
      this.counters.batches += 1;
      this.counters.events += accepted;
      this.oldestPendingAt = accepted < entries.length ? Date.parse(entries[accepted].recorded ?? '') || Date.now() : undefined;
    }
    if (accepted < entries.length) {
      throw new ForwardRejectedError(`upstream rejected audit event seq ${entries[accepted].seq} (${statusOf(response, accepted) ?? 'no response entry'})`);
    }
    return accepted;
  }

  private async loadCheckpoint(): Promise<ForwarderCheckpoint> {
    if (this.checkpoint !== undefined) return this.checkpoint;
    let text: string;
    try {
      text = await readFile(join(this.dir, CHECKPOINT_FILE), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return (this.checkpoint = { lastSeq: 0 });
    }
    let parsed: { lastSeq?: unknown; lastHash?: unknown } | undefined;
    try {
      parsed = JSON.parse(text) as { lastSeq?: unknown; lastHash?: unknown };
    } catch {
      // A checkpoint cut short by a crash (one not yet flushed): starting over resends, and PUT by id never duplicates.
      this.logger?.warn({}, 'audit forwarder checkpoint unreadable; forwarding the journal again from its start');
    }
    const lastSeq = typeof parsed?.lastSeq === 'number' && Number.isSafeInteger(parsed.lastSeq) ? parsed.lastSeq : 0;
    this.checkpoint = { lastSeq, lastHash: typeof parsed?.lastHash === 'string' ? parsed.lastHash : undefined };
    return this.checkpoint;
  }

  /**
   * Write to a temporary file and rename it over the old one: never a half checkpoint in place. `durable`
   * also flushes the file before the rename and the directory after it (see checkpointSyncMs).
   */
  private async saveCheckpoint(checkpoint: ForwarderCheckpoint, durable: boolean): Promise<void> {
    const path = join(this.dir, CHECKPOINT_FILE);
    const temporary = `${path}.tmp`;
    const handle = await open(temporary, 'w');
    try {
      await handle.writeFile(JSON.stringify({ ...checkpoint, updatedAt: new Date().toISOString() }) + '\n');
      if (durable) await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
    if (durable) {
      const dirHandle = await open(this.dir, 'r');
      try {
        await dirHandle.sync();
      } finally {
        await dirHandle.close();
      }
      this.lastCheckpointSync = Date.now();
    }
    this.checkpoint = checkpoint;
  }

  /** Up to `max` complete entries with seq > `afterSeq`, read from where the last batch stopped. */
  private async readAfter(afterSeq: number, max: number): Promise<ForwardEntry[]> {
    this.lastBatchFull = false;
    if (max <= 0) return [];
    const fromMemory = this.recentAfter(afterSeq, max);
    if (fromMemory !== undefined) return fromMemory;
    if (this.cursor === undefined || this.cursor.seq !== afterSeq) this.cursor = await this.locate(afterSeq);
    if (this.cursor === undefined) return [];
    const entries: ForwardEntry[] = [];
    const cursor = this.cursor;
    let bytes = 0;
    let chunkSize = READ_CHUNK;
    while (entries.length < max && !this.lastBatchFull) {
      const size = chunkSize;
      const chunk = await readChunk(join(this.dir, cursor.segment), cursor.offset, size);
      let start = 0;
      for (let end = chunk.indexOf(0x0a); end !== -1 && entries.length < max; end = chunk.indexOf(0x0a, start)) {
        const entry = forwardEntry(chunk.subarray(start, end));
        if (entry === undefined) throw new Error(`unreadable audit journal line in ${cursor.segment} after seq ${cursor.seq}`);
        if (entry.seq > afterSeq && entries.length > 0 && bytes + entry.event.length > this.batchBytes) {
          this.lastBatchFull = true; // left unread: the next batch starts with it
          break;
        }
        cursor.seq = entry.seq;
        this.knownLastSeq = Math.max(this.knownLastSeq, entry.seq);
        if (entry.seq > afterSeq) {
          entries.push(entry);
          bytes += entry.event.length;
        }
        start = end + 1;
      }
      if (start === 0 && chunk.length === size) {
        // No whole line in a full chunk: read it again with room for the line.
        if (chunkSize >= MAX_LINE_BYTES) throw new Error(`audit journal line longer than ${MAX_LINE_BYTES} bytes in ${cursor.segment}`);
        chunkSize *= 4;
        continue;
      }
      chunkSize = READ_CHUNK;
      cursor.offset += start;
      if (entries.length >= max || this.lastBatchFull || chunk.length === size) continue;
      // End of this segment: move on only when the next one exists and continues the sequence.
      const next = (await listSegments(this.dir)).find((s) => s.firstSeq === cursor.seq + 1);
      if (next === undefined || next.name === cursor.segment) break;
      cursor.segment = next.name;
      cursor.offset = 0;
    }
    if (entries.length >= this.batchSize) this.lastBatchFull = true;
    return entries;
  }

  private async locate(afterSeq: number): Promise<Cursor | undefined> {
    const segments = await listSegments(this.dir);
    let chosen: { name: string; firstSeq: number } | undefined;
    for (const s of segments) if (s.firstSeq <= afterSeq + 1) chosen = s;
    if (chosen === undefined) return undefined;
    return { segment: chosen.name, offset: 0, seq: chosen.firstSeq - 1 };
  }
}

/** What the forwarder needs of a journal line; the event stays the bytes the journal holds. */
interface ForwardEntry {
  readonly seq: number;
  readonly hash: string;
  /** The id the event is PUT under (safe characters only). */
  readonly id: string;
  readonly recorded?: string;
  readonly event: Buffer;
}

const batchHead = Buffer.from('{"resourceType":"Bundle","type":"batch","entry":[');
const entryEnd = Buffer.from('}');
const batchEnd = Buffer.from(']}');

// A line's fixed head as segment.ts writes it, then the head of the event as build.ts writes it.
const lineHead = /^\{"seq":([1-9]\d{0,15}),"prevHash":"[0-9a-f]{64}","hash":"([0-9a-f]{64})","event":(?=\{"resourceType":"AuditEvent","id":"([A-Za-z0-9\-.]{1,64})")/;
// A long event's line: its JSON raw-deflated, base64 (segment.ts); the event's own head is read once inflated.
const deflatedLineHead = /^\{"seq":([1-9]\d{0,15}),"prevHash":"[0-9a-f]{64}","hash":"([0-9a-f]{64})","eventDeflate":"/;
const eventHead = /^\{"resourceType":"AuditEvent","id":"([A-Za-z0-9\-.]{1,64})"/;
// Only a key can be written this way: a quote inside a JSON string value is escaped.
const recordedField = /"recorded":"([^"\\]{1,64})"/;
/** Bytes of a line read as text to find its head and `recorded` (both near the start in the journal's own shape). */
const headBytes = 1024;

/** Read from the line's head when it has the journal's own shape; any other line is parsed in full. */
function forwardEntry(line: Buffer): ForwardEntry | undefined {
  const head = line.toString('latin1', 0, Math.min(line.length, headBytes));
  const deflated = deflatedLineHead.exec(head);
  if (deflated && line.length >= deflated[0].length + 2 && line[line.length - 1] === 0x7d) {
    // The event goes out as the JSON bytes that were deflated: inflated, never parsed and re-serialised.
    const event = inflateEvent(line.toString('latin1', deflated[0].length, line.length - 2));
    const eventText = event?.toString('latin1', 0, Math.min(event.length, headBytes));
    const id = eventText === undefined ? undefined : eventHead.exec(eventText)?.[1];
    if (event !== undefined && id !== undefined) return { seq: Number(deflated[1]), hash: deflated[2], id, recorded: recordedField.exec(eventText ?? '')?.[1], event };
  }
  const fixed = lineHead.exec(head);
  if (fixed && line[line.length - 1] === 0x7d) {
    return { seq: Number(fixed[1]), hash: fixed[2], id: fixed[3], recorded: recordedField.exec(head)?.[1], event: line.subarray(fixed[0].length, line.length - 1) };
  }
  const entry = parseEntry(line.toString('utf8'));
  if (entry === undefined) return undefined;
  const event = { ...entry.event, id: entry.event.id ?? idFromHash(entry.hash) };
  return { seq: entry.seq, hash: entry.hash, id: event.id, recorded: event.recorded, event: Buffer.from(JSON.stringify(event)) };
}

async function readChunk(path: string, offset: number, size: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(size);
    const { bytesRead } = await handle.read(buffer, 0, size, offset);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

function statusOf(response: Bundle, index: number): string | undefined {
  return response.entry?.[index]?.response?.status;
}

function acceptedPrefix(response: Bundle, sent: number): number {
  if (response.resourceType !== 'Bundle' || (response.entry?.length ?? 0) !== sent) return 0;
  let accepted = 0;
  while (accepted < sent) {
    const status = Number.parseInt(statusOf(response, accepted) ?? '', 10);
    if (!(status >= 200 && status < 300)) break;
    accepted += 1;
  }
  return accepted;
}

/** A stable id for an event journaled without one: derived from its hash, so a resend reuses it. */
function idFromHash(hash: string): string {
  return `${hash.slice(0, 8)}-${hash.slice(8, 12)}-${hash.slice(12, 16)}-${hash.slice(16, 20)}-${hash.slice(20, 32)}`;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
