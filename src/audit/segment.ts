// The on-disk shape of the audit journal (SPEC §6), shared by the writer, verify and the forwarder.
//
// A journal is a directory of segment files `audit-<first seq, 12 digits>.ndjson`, so name order is
// sequence order. Each line is one JSON object `{ seq, prevHash, hash, event }`:
//   hash = SHA-256 hex of `${seq}\n${prevHash}\n${canonicalJson(event)}`
// where canonicalJson sorts object keys (recursively) and has no whitespace. The chain runs across
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

/** JSON with object keys sorted at every level and no whitespace: the hashed form of an event. */
// Built by appending to one string rather than map/join arrays: every journal commit hashes each event
// through this, and it was ~10% of a gateway request (docs/performance.md). Output is unchanged.
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      const text = item === undefined ? 'null' : canonicalJson(item);
      out += `${i > 0 ? ',' : ''}${(text as string | undefined) ?? ''}`;
    }
    return `${out}]`;
  }
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record).sort();
  let out = '{';
  let first = true;
  for (const key of keys) {
    const item = record[key];
    if (item === undefined) continue;
    out += `${first ? '' : ','}${JSON.stringify(key)}:${canonicalJson(item)}`;
    first = false;
  }
  return `${out}}`;
}

export function entryHash(seq: number, prevHash: string, event: unknown): string {
  return createHash('sha256').update(`${seq}\n${prevHash}\n${canonicalJson(event)}`).digest('hex');
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
