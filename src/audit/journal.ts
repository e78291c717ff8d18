// Append-only, hash-chained, group-committed audit journal (SPEC §6): an event is durable (written and
// fsynced) before `append` resolves, i.e. before the response is released. Format: see segment.ts.
import { writeSync } from 'node:fs';
import { mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import { GENESIS_HASH, eventPayload, journalLine, listSegments, parseEntry, segmentName, type EventPayload } from './segment.ts';

export const DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024;

/** The two disk operations a commit makes; replaceable so tests can count and fail them. */
export interface JournalIo {
  write(handle: FileHandle, data: Buffer): Promise<void>;
  sync(handle: FileHandle): Promise<void>;
}

export const defaultJournalIo: JournalIo = {
  // Into the page cache in place (microseconds for a commit's lines): one thread-pool hop fewer before the fdatasync.
  async write(handle, data) {
    let offset = 0;
    while (offset < data.length) offset += writeSync(handle.fd, data, offset, data.length - offset);
  },
  // fdatasync persists the data and the file size an append changed: enough to read it back after a crash.
  sync: (handle) => handle.datasync(),
};

export interface JournalOptions {
  /** Rotate to a new segment before a commit would make the current one larger than this. */
  readonly maxSegmentBytes?: number;
  readonly io?: JournalIo;
}

export interface JournalStats {
  /** append() calls committed. */
  readonly appends: number;
  readonly events: number;
  /** write + fsync rounds; group commit makes this far smaller than appends under load. */
  readonly commits: number;
  readonly fsyncs: number;
  /** Journal bytes committed (lines with their hash-chain fields): the audit volume a deployment stores and forwards. */
  readonly bytes: number;
}

export class JournalCorruptError extends Error {
  readonly code = 'journal-corrupt';
}

export class JournalClosedError extends Error {
  readonly code = 'journal-closed';
}

/** An event just made durable, as commit listeners receive it: its place in the chain and its JSON bytes (never deflated). */
export interface CommittedEvent {
  readonly seq: number;
  readonly hash: string;
  readonly id?: string;
  readonly recorded?: string;
  readonly json: Buffer;
}

export type CommitListener = (lastSeq: number, committed: readonly CommittedEvent[]) => void;

interface PendingAppend {
  /** Serialised (and long events deflated) at append time, while earlier commits run. */
  readonly payloads: readonly EventPayload[];
  readonly events: readonly AuditEvent[];
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

export class AuditJournal {
  private handle: FileHandle;
  private segmentBytes: number;
  private seq: number;
  private headHash: string;
  private pending: PendingAppend[] = [];
  private committing: Promise<void> | undefined;
  private closed = false;
  private lastCommitFailed = false;
  /** A failed commit whose partial write could not be undone: nothing more may be appended. */
  private broken = false;
  private readonly listeners = new Set<CommitListener>();
  private counters = { appends: 0, events: 0, commits: 0, fsyncs: 0, bytes: 0 };

  readonly dir: string;
  private readonly maxSegmentBytes: number;
  private readonly io: JournalIo;

  private constructor(dir: string, handle: FileHandle, segmentBytes: number, seq: number, headHash: string, maxSegmentBytes: number, io: JournalIo) {
    this.dir = dir;
    this.maxSegmentBytes = maxSegmentBytes;
    this.io = io;
    this.handle = handle;
    this.segmentBytes = segmentBytes;
    this.seq = seq;
    this.headHash = headHash;
  }

  /** Opens (creating if needed) the journal in `dir`, cutting a torn last line a crash left behind. */
  static async open(dir: string, opts: JournalOptions = {}): Promise<AuditJournal> {
    await mkdir(dir, { recursive: true });
    const segments = await listSegments(dir);
    let seq = 0;
    let headHash = GENESIS_HASH;
    let current: { name: string; bytes: number } | undefined;
    // Walk back from the newest segment to the last good event (a fresh segment may still be empty).
    for (let i = segments.length - 1; i >= 0; i--) {
      const name = segments[i].name;
      const { lastGood, goodBytes } = await recoverSegment(join(dir, name));
      if (current === undefined) current = { name, bytes: goodBytes };
      if (lastGood !== undefined) {
        seq = lastGood.seq;
        headHash = lastGood.hash;
        break;
      }
    }
    if (current === undefined) current = { name: segmentName(1), bytes: 0 };
    const handle = await open(join(dir, current.name), 'a');
    if (current.bytes === 0) await syncDirectory(dir);
    return new AuditJournal(dir, handle, current.bytes, seq, headHash, opts.maxSegmentBytes ?? DEFAULT_SEGMENT_BYTES, opts.io ?? defaultJournalIo);
  }

  /** Seq of the last durable event (0 when empty). */
  get lastSeq(): number {
    return this.seq;
  }

  /** False after a failed write until a later commit succeeds; /readyz reads it (SPEC §8). */
  healthy(): boolean {
    return !this.closed && !this.broken && !this.lastCommitFailed;
  }

  stats(): JournalStats {
    return { ...this.counters };
  }

  /** Called after every commit with the new last seq and the events it made durable (the forwarder follows the journal with it). */
  onCommit(listener: CommitListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Appends the events of one request, contiguously and in order. Resolves only after they are
   * fsynced; rejects when the disk write fails (the caller then fails the request closed, SPEC §5).
   * Calls made while a commit is in flight share the next write + fsync (group commit).
   */
  append(events: readonly AuditEvent[]): Promise<void> {
    if (this.closed) return Promise.reject(new JournalClosedError('audit journal is closed'));
    if (this.broken) return Promise.reject(new JournalCorruptError('audit journal failed and could not be repaired'));
    if (events.length === 0) return Promise.resolve();
    let payloads: EventPayload[];
    try {
      payloads = events.map(eventPayload);
    } catch (err) {
      return Promise.reject(err); // an event that cannot be serialised is refused alone (fail closed)
    }
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ payloads, events, resolve, reject });
      this.committing ??= this.commitLoop();
    });
  }

  /** Waits for every append made so far, then closes the segment. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.committing;
    await this.handle.close();
    this.listeners.clear();
  }

  private async commitLoop(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const batch = this.pending;
        this.pending = [];
        await this.commit(batch);
      }
    } finally {
      this.committing = undefined;
    }
  }

  private async commit(batch: PendingAppend[]): Promise<void> {
    if (this.broken) {
      for (const p of batch) p.reject(new JournalCorruptError('audit journal failed and could not be repaired'));
      return;
    }
    let seq = this.seq;
    let prevHash = this.headHash;
    const parts: Buffer[] = [];
    const committed: CommittedEvent[] = [];
    for (const p of batch) {
      p.payloads.forEach((payload, i) => {
        seq += 1;
        const line = journalLine(seq, prevHash, payload);
        parts.push(...line.parts);
        prevHash = line.hash;
        committed.push({ seq, hash: line.hash, id: p.events[i].id, recorded: p.events[i].recorded, json: payload.json });
      });
    }
    const data = Buffer.concat(parts);
    try {
      if (this.segmentBytes > 0 && this.segmentBytes + data.length > this.maxSegmentBytes) await this.rotate(this.seq + 1);
      const start = this.segmentBytes;
      try {
        await this.io.write(this.handle, data);
        this.counters.fsyncs += 1;
        await this.io.sync(this.handle);
      } catch (err) {
        await this.undoPartialWrite(start);
        throw err;
      }
      this.segmentBytes += data.length;
    } catch (err) {
      this.lastCommitFailed = true;
      for (const p of batch) p.reject(err);
      return;
    }
    this.seq = seq;
    this.headHash = prevHash;
    this.lastCommitFailed = false;
    this.counters.commits += 1;
    this.counters.appends += batch.length;
    this.counters.events += committed.length;
    this.counters.bytes += data.length;
    for (const p of batch) p.resolve();
    for (const listener of this.listeners) listener(seq, committed);
  }

  /** A failed write may have left part of the batch: cut back to the last acknowledged byte. */
  private async undoPartialWrite(size: number): Promise<void> {
    try {
      await this.handle.truncate(size);
      await this.handle.sync();
    } catch {
      this.broken = true;
    }
  }

  private async rotate(firstSeq: number): Promise<void> {
    const next = await open(join(this.dir, segmentName(firstSeq)), 'a');
    await syncDirectory(this.dir);
    const previous = this.handle;
    this.handle = next;
    this.segmentBytes = 0;
    await previous.close();
  }
}

/** Reads a segment, truncates anything after its last complete, well-formed line, and returns that line. */
async function recoverSegment(path: string): Promise<{ lastGood?: { seq: number; hash: string }; goodBytes: number }> {
  const content = await readFile(path);
  const end = content.lastIndexOf(0x0a) + 1;
  let goodBytes = end;
  let lastGood: { seq: number; hash: string } | undefined;
  if (end > 0) {
    const lines = content.subarray(0, end - 1).toString('utf8').split('\n');
    const last = parseEntry(lines[lines.length - 1]);
    if (last === undefined) {
      // Only the last line can be torn by a crash; a bad line earlier is tampering or disk damage.
      const before = lines.length >= 2 ? parseEntry(lines[lines.length - 2]) : undefined;
      if (lines.length >= 2 && before === undefined) {
        throw new JournalCorruptError(`audit journal segment ${path} is damaged before its last line; run \`disclosure-gateway audit verify\``);
      }
      goodBytes = end - Buffer.byteLength(lines[lines.length - 1], 'utf8') - 1;
      if (before !== undefined) lastGood = { seq: before.seq, hash: before.hash };
    } else {
      lastGood = { seq: last.seq, hash: last.hash };
    }
  }
  if (goodBytes !== content.length) {
    const handle = await open(path, 'r+');
    try {
      await handle.truncate(goodBytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
  return { lastGood, goodBytes };
}

/** A new segment's directory entry must be durable too, or a crash could lose the whole file. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
