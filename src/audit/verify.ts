// `disclosure-gateway audit verify <dir>` (SPEC §6): walks the hash chain of every segment and names the
// first event that was changed, removed, inserted or reordered.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CHECKPOINT_FILE, GENESIS_HASH, entryHash, eventTextOf, listSegments, parseEntry } from './segment.ts';

export interface BadEvent {
  readonly segment: string;
  /** 1-based line within the segment. */
  readonly line: number;
  readonly seq?: number;
  readonly problem: string;
}

export type VerifyResult =
  | { readonly ok: true; readonly events: number; /** The last segment ends in an unacknowledged line a crash cut short (recovered on next open). */ readonly tornTail?: true }
  | { readonly ok: false; readonly events: number; readonly firstBad: BadEvent };

/** `events` counts the events that verified before the first bad one. */
export async function verifyJournal(dir: string): Promise<VerifyResult> {
  const segments = await listSegments(dir);
  let expectedSeq = 1;
  let prevHash = GENESIS_HASH;
  let events = 0;
  let tornTail = false;
  const bad = (segment: string, line: number, problem: string, seq?: number): VerifyResult => ({
    ok: false,
    events,
    firstBad: seq === undefined ? { segment, line, problem } : { segment, line, seq, problem },
  });

  for (let s = 0; s < segments.length; s++) {
    const { name, firstSeq } = segments[s];
    const content = (await readFile(join(dir, name))).toString('utf8');
    if (content.length === 0) {
      if (s === segments.length - 1) continue;
      return bad(name, 1, 'empty segment in the middle of the journal');
    }
    const terminated = content.endsWith('\n');
    const lines = (terminated ? content.slice(0, -1) : content).split('\n');
    for (let i = 0; i < lines.length; i++) {
      const lineNo = i + 1;
      const entry = parseEntry(lines[i]);
      if (entry === undefined) {
        // A crash can leave only the very last line of the journal unterminated; that event was never acknowledged.
        if (!terminated && i === lines.length - 1 && s === segments.length - 1) {
          tornTail = true;
          break;
        }
        return bad(name, lineNo, 'unparseable line (not a journal entry)');
      }
      if (i === 0 && entry.seq !== firstSeq) {
        return bad(name, lineNo, `segment name says it starts at seq ${firstSeq} but its first event is seq ${entry.seq}`, entry.seq);
      }
      if (entry.seq !== expectedSeq) {
        const problem =
          entry.seq < expectedSeq
            ? `seq ${entry.seq} where ${expectedSeq} was expected: event reordered or duplicated`
            : `seq ${entry.seq} where ${expectedSeq} was expected: ${entry.seq - expectedSeq} event(s) removed`;
        return bad(name, lineNo, problem, entry.seq);
      }
      if (entry.prevHash !== prevHash) {
        return bad(name, lineNo, 'prevHash does not match the previous event: an event was removed, inserted or changed', entry.seq);
      }
      const eventText = eventTextOf(lines[i]);
      if (eventText === undefined || entryHash(entry.seq, entry.prevHash, eventText) !== entry.hash) {
        return bad(name, lineNo, 'hash does not match the event: the event was changed', entry.seq);
      }
      prevHash = entry.hash;
      expectedSeq += 1;
      events += 1;
    }
  }

  // The chain cannot see events cut from its end; the forwarder's checkpoint is an outside witness.
  const forwarded = await readForwardedSeq(dir);
  if (forwarded !== undefined && forwarded > events) {
    const last = segments[segments.length - 1]?.name ?? '(no segment)';
    return bad(last, 0, `journal ends at seq ${events} but the forwarder already forwarded seq ${forwarded}: events were removed from the end`, events + 1);
  }
  return tornTail ? { ok: true, events, tornTail: true } : { ok: true, events };
}

async function readForwardedSeq(dir: string): Promise<number | undefined> {
  try {
    const parsed = JSON.parse(await readFile(join(dir, CHECKPOINT_FILE), 'utf8')) as { lastSeq?: unknown };
    return typeof parsed.lastSeq === 'number' ? parsed.lastSeq : undefined;
  } catch {
    return undefined;
  }
}

/** Entry of `disclosure-gateway audit verify <dir>`: 0 intact, 1 the first bad event named, 2 unusable arguments or directory. */
export async function runAuditVerifyCli(args: readonly string[], print: (line: string) => void = (line) => console.log(line)): Promise<number> {
  const dir = args[0] ?? process.env.AUDIT_DIR;
  if (dir === undefined || args.length > 1) {
    print('usage: disclosure-gateway audit verify <audit-dir>');
    return 2;
  }
  let result: VerifyResult;
  try {
    result = await verifyJournal(dir);
  } catch (err) {
    print(`cannot read audit journal in ${dir}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    return 2;
  }
  if (result.ok) {
    print(`audit journal intact: ${result.events} events${result.tornTail ? ' (an unacknowledged torn last line will be cut on next start)' : ''}`);
    return 0;
  }
  const { segment, line, seq, problem } = result.firstBad;
  print(`audit journal BROKEN after ${result.events} good events: ${segment} line ${line}${seq === undefined ? '' : ` (seq ${seq})`}: ${problem}`);
  return 1;
}
