// The on-disk shape of the audit journal (SPEC §6), shared by the writer, verify and the forwarder.
//
// A journal is a directory of segment files `audit-<first seq, 12 digits>.ndjson`, so name order is
// sequence order. Each line is one JSON object `{"seq","prevHash","hash","event"}` in that key order:
//   hash = SHA-256 hex of `${seq}\n${prevHash}\n${event as written in the line}`
// so the event is serialised once and any change to its bytes breaks the hash. An event of at least
// DEFLATE_MIN_BYTES is written as `"eventDeflate":"<base64 of its raw-deflated JSON>"` instead, and the
// hash covers that base64 text (issue 15: a 100-entry page's events ~2.2× smaller; small ones stay readable). The chain runs across
// segments; the first event's prevHash is 64 zeros. Changing, removing, inserting or reordering any
// event breaks a seq step, a prevHash link or a hash.
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { constants, deflateRawSync, inflateRawSync } from 'node:zlib';
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
const deflatedLineEnd = Buffer.from('"}\n');
/** Events this long or longer are stored deflated; below it deflate saves little and the line stays greppable. */
export const DEFLATE_MIN_BYTES = 1024;

/**
 * One event as the journal stores it: its JSON bytes, and (when long) the base64 of those bytes raw-deflated,
 * which is what the line then holds. The JSON bytes are kept so that the forwarder sends them without inflating.
 */
export interface EventPayload {
  readonly json: Buffer;
  readonly deflated?: string;
}

/**
 * Serialises an event once and deflates a long one in place, at the fastest level (a page's event is mostly
 * references, which compress alike at any level). In place, not on libuv's pool: zlib's async form builds a
 * stream and a fresh 256 KB context per call, ~140 µs of CPU for a 9 KB event (25–29 µs of it on this thread)
 * against ~35 µs here (`npm run bench -- audit-size`).
 */
export function eventPayload(event: AuditEvent): EventPayload {
  const json = Buffer.from(JSON.stringify(event), 'utf8');
  if (json.length < DEFLATE_MIN_BYTES) return { json };
  return { json, deflated: deflateRawSync(json, { level: constants.Z_BEST_SPEED }).toString('base64') };
}

/** One journal line with its newline, as the buffers to write: the bytes hashed are the bytes written. */
export function journalLine(seq: number, prevHash: string, payload: EventPayload): { parts: Buffer[]; hash: string } {
  if (payload.deflated === undefined) {
    const hash = entryHash(seq, prevHash, payload.json);
    return { parts: [Buffer.from(`{"seq":${seq},"prevHash":"${prevHash}","hash":"${hash}","event":`), payload.json, lineEnd], hash };
  }
  const hash = entryHash(seq, prevHash, payload.deflated);
  return { parts: [Buffer.from(`{"seq":${seq},"prevHash":"${prevHash}","hash":"${hash}","eventDeflate":"${payload.deflated}`, 'latin1'), deflatedLineEnd], hash };
}

const eventKey = ',"event":';
const deflatedKey = ',"eventDeflate":"';

/** The event's text exactly as it stands in a line (what the hash covers); undefined when the line is not in journal form. */
export function eventTextOf(line: string): string | undefined {
  const deflatedAt = line.indexOf(deflatedKey);
  if (deflatedAt !== -1) return line.endsWith('"}') ? line.slice(deflatedAt + deflatedKey.length, -2) : undefined;
  const at = line.indexOf(eventKey);
  return at === -1 || !line.endsWith('}') ? undefined : line.slice(at + eventKey.length, -1);
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** The JSON bytes of a deflated event; undefined when the text is not base64 of raw-deflated data. */
export function inflateEvent(base64: string): Buffer | undefined {
  if (!BASE64.test(base64)) return undefined;
  try {
    return inflateRawSync(Buffer.from(base64, 'base64'));
  } catch {
    return undefined;
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Parses one journal line (inflating a deflated event); undefined when it is not a well-formed entry. */
export function parseEntry(line: string): JournalEntry | undefined {
  const parsed = parseJson(line);
  if (parsed === null || typeof parsed !== 'object') return undefined;
  const e = parsed as Record<string, unknown>;
  if (!Number.isSafeInteger(e.seq) || (e.seq as number) < 1) return undefined;
  if (typeof e.prevHash !== 'string' || typeof e.hash !== 'string') return undefined;
  if (typeof e.eventDeflate === 'string' && e.event === undefined) {
    const json = inflateEvent(e.eventDeflate);
    e.event = json === undefined ? undefined : parseJson(json.toString('utf8'));
    delete e.eventDeflate;
  }
  if (e.event === null || typeof e.event !== 'object' || (e.event as { resourceType?: unknown }).resourceType !== 'AuditEvent') return undefined;
  return e as unknown as JournalEntry;
}
