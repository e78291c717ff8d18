// The on-disk shape of the audit journal (SPEC §6), shared by the writer, verify and the forwarder.
//
// A journal is a directory of segment files `audit-<first seq, 12 digits>.ndjson`, so name order is
// sequence order. Each line is one JSON object `{"seq","prevHash","hash","event"}` in that key order:
//   hash = SHA-256 hex of `${seq}\n${prevHash}\n${event as written in the line}`
// so the event is serialised once and any change to its bytes breaks the hash. The chain runs across
// segments; the first event's prevHash is 64 zeros. Changing, removing, inserting or reordering any
// event breaks a seq step, a prevHash link or a hash.
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import type { AuditEvent } from '@medplum/fhirtypes';

export const GENESIS_HASH = '0'.repeat(64);
const SEGMENT_PATTERN = /^audit-(\d{12})\.ndjson$/;
/** The forwarder's progress; written atomically via rename. */
export const CHECKPOINT_FILE = 'forwarder-checkpoint.json';

export interface JournalEntry {
  readonly seq: number;
  readonly prevHash: string;
  readonly hash: string;
  readonly event: AuditEvent;
}

export function segmentName(firstSeq: number): string {
  return `audit-${String(firstSeq).padStart(12, '0')}.ndjson`;
}

export interface SegmentFile {
  readonly name: string;
  /** The seq of the segment's first event (by name). */
  readonly firstSeq: number;
}

/** Segment files of `dir` in sequence order. */
export async function listSegments(dir: string): Promise<SegmentFile[]> {
  const names = await readdir(dir);
  const segments: SegmentFile[] = [];
  for (const name of names) {
    const m = SEGMENT_PATTERN.exec(name);
    if (m) segments.push({ name, firstSeq: Number(m[1]) });
  }
  return segments.sort((a, b) => a.firstSeq - b.firstSeq);
}

/** hash = SHA-256 hex of `${seq}\n${prevHash}\n${eventJson}`, eventJson being the event's bytes as written. */
export function entryHash(seq: number, prevHash: string, eventJson: string | Buffer): string {
  return createHash('sha256').update(`${seq}\n${prevHash}\n`).update(eventJson).digest('hex');
}

const lineEnd = Buffer.from('}\n');

/**
 * One journal line with its newline, as the buffers to write. The event is serialised and encoded once:
 * the same bytes are hashed and written (a 1,000-entry page's event is still ~40 KB; every extra copy shows).
 */
export function journalLine(seq: number, prevHash: string, event: AuditEvent): { parts: Buffer[]; hash: string } {
  const eventBytes = Buffer.from(JSON.stringify(event), 'utf8');
  const hash = entryHash(seq, prevHash, eventBytes);
  return { parts: [Buffer.from(`{"seq":${seq},"prevHash":"${prevHash}","hash":"${hash}","event":`), eventBytes, lineEnd], hash };
}

const eventKey = ',"event":';

/** The event's text exactly as it stands in a line (what the hash covers); undefined when the line is not in journal form. */
export function eventTextOf(line: string): string | undefined {
  const at = line.indexOf(eventKey);
  return at === -1 || !line.endsWith('}') ? undefined : line.slice(at + eventKey.length, -1);
}

/** Parses one journal line; undefined when it is not a well-formed entry. */
export function parseEntry(line: string): JournalEntry | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (parsed === null || typeof parsed !== 'object') return undefined;
  const e = parsed as Record<string, unknown>;
  if (!Number.isSafeInteger(e.seq) || (e.seq as number) < 1) return undefined;
  if (typeof e.prevHash !== 'string' || typeof e.hash !== 'string') return undefined;
  if (e.event === null || typeof e.event !== 'object' || (e.event as { resourceType?: unknown }).resourceType !== 'AuditEvent') return undefined;
  return e as unknown as JournalEntry;
}
