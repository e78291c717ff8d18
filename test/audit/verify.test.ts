import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditJournal } from '../../src/audit/journal.ts';
import { CHECKPOINT_FILE, entryHash, listSegments, type JournalEntry } from '../../src/audit/segment.ts';
import { runAuditVerifyCli, verifyJournal } from '../../src/audit/verify.ts';
import { journalEvent as event, pageEvent } from './fixtures.ts';

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function journalWith(count: number, maxSegmentBytes?: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'audit-verify-'));
  dirs.push(dir);
  const journal = await AuditJournal.open(dir, { maxSegmentBytes });
  for (let i = 1; i <= count; i++) await journal.append([event(`e${i}`)]);
  await journal.close();
  return dir;
}

async function editSingleSegment(dir: string, edit: (lines: string[]) => string[]): Promise<string> {
  const [segment] = await listSegments(dir);
  const path = join(dir, segment.name);
  const lines = (await readFile(path, 'utf8')).split('\n').slice(0, -1);
  await writeFile(path, edit(lines).join('\n') + '\n');
  return segment.name;
}

const parse = (line: string): JournalEntry => JSON.parse(line) as JournalEntry;

describe('audit verify', () => {
  test('an intact journal verifies', async () => {
    const dir = await journalWith(10);
    assert.deepEqual(await verifyJournal(dir), { ok: true, events: 10 });
  });

  const tampering: { name: string; edit: (lines: string[]) => string[]; line: number; seq: number; problem: RegExp }[] = [
    {
      name: 'an event changed',
      edit: (lines) => lines.map((l, i) => (i === 3 ? l.replace('Observation/e4', 'Observation/other') : l)),
      line: 4,
      seq: 4,
      problem: /hash does not match/,
    },
    {
      name: 'an event changed and its own hash recomputed',
      edit: (lines) =>
        lines.map((l, i) => {
          if (i !== 3) return l;
          const entry = parse(l);
          const forged = { ...entry.event, id: 'forged' };
          return JSON.stringify({ ...entry, event: forged, hash: entryHash(entry.seq, entry.prevHash, JSON.stringify(forged)) });
        }),
      line: 5,
      seq: 5,
      problem: /prevHash does not match/,
    },
    { name: 'an event removed', edit: (lines) => lines.filter((_, i) => i !== 3), line: 4, seq: 5, problem: /1 event\(s\) removed/ },
    { name: 'an event duplicated', edit: (lines) => [...lines.slice(0, 4), lines[2], ...lines.slice(4)], line: 5, seq: 3, problem: /reordered or duplicated/ },
    {
      name: 'a forged event inserted with a valid-looking chain',
      edit: (lines) => {
        const third = parse(lines[2]);
        const forged = { ...third.event, id: 'forged' };
        const inserted = JSON.stringify({ seq: 4, prevHash: third.hash, hash: entryHash(4, third.hash, JSON.stringify(forged)), event: forged });
        return [...lines.slice(0, 3), inserted, ...lines.slice(3)];
      },
      line: 5,
      seq: 4,
      problem: /reordered or duplicated/,
    },
    { name: 'two events swapped', edit: (lines) => [...lines.slice(0, 3), lines[4], lines[3], ...lines.slice(5)], line: 4, seq: 5, problem: /1 event\(s\) removed/ },
    { name: 'a line cut short in the middle', edit: (lines) => lines.map((l, i) => (i === 6 ? l.slice(0, 40) : l)), line: 7, seq: -1, problem: /unparseable/ },
  ];
  for (const row of tampering) {
    test(`detects ${row.name} and names the first bad event`, async () => {
      const dir = await journalWith(10);
      const segment = await editSingleSegment(dir, row.edit);
      const result = await verifyJournal(dir);
      assert.equal(result.ok, false);
      if (result.ok) return;
      assert.equal(result.firstBad.segment, segment);
      assert.equal(result.firstBad.line, row.line);
      if (row.seq > 0) assert.equal(result.firstBad.seq, row.seq);
      assert.match(result.firstBad.problem, row.problem);
    });
  }

  test('detects events cut from the end of a middle segment', async () => {
    const dir = await journalWith(30, 2048);
    const segments = await listSegments(dir);
    assert.ok(segments.length >= 3);
    const middle = join(dir, segments[1].name);
    const lines = (await readFile(middle, 'utf8')).split('\n').slice(0, -1);
    await writeFile(middle, lines.slice(0, -1).join('\n') + '\n');
    const result = await verifyJournal(dir);
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.equal(result.firstBad.segment, segments[2].name);
    assert.equal(result.firstBad.line, 1);
    assert.match(result.firstBad.problem, /removed/);
  });

  test('detects a whole segment removed', async () => {
    const dir = await journalWith(30, 2048);
    const segments = await listSegments(dir);
    await unlink(join(dir, segments[1].name));
    const result = await verifyJournal(dir);
    assert.equal(result.ok, false);
    if (!result.ok) assert.equal(result.firstBad.segment, segments[2].name);
  });

  test('detects events removed from the end when the forwarder already saw them', async () => {
    const dir = await journalWith(10);
    await writeFile(join(dir, CHECKPOINT_FILE), JSON.stringify({ lastSeq: 10 }));
    await editSingleSegment(dir, (lines) => lines.slice(0, 8));
    const result = await verifyJournal(dir);
    assert.equal(result.ok, false);
    if (!result.ok) assert.match(result.firstBad.problem, /forwarder already forwarded seq 10/);
  });

  test('an unacknowledged torn last line (a crash) is not tampering', async () => {
    const dir = await journalWith(4);
    const [segment] = await listSegments(dir);
    const path = join(dir, segment.name);
    await writeFile(path, (await readFile(path, 'utf8')) + '{"seq":5,"prev');
    assert.deepEqual(await verifyJournal(dir), { ok: true, events: 4, tornTail: true });
  });

  test('CLI: exit 0 when intact, 1 naming the first bad event', async () => {
    const dir = await journalWith(5);
    const printed: string[] = [];
    assert.equal(await runAuditVerifyCli([dir], (l) => printed.push(l)), 0);
    assert.match(printed[0], /intact: 5 events/);
    const segment = await editSingleSegment(dir, (lines) => lines.filter((_, i) => i !== 1));
    assert.equal(await runAuditVerifyCli([dir], (l) => printed.push(l)), 1);
    assert.match(printed[1], new RegExp(`${segment} line 2 \\(seq 3\\)`));
    assert.equal(await runAuditVerifyCli([dir, 'extra'], (l) => printed.push(l)), 2);
  });
});

describe('audit verify: deflated events (issue 15)', () => {
  async function pageJournal(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'audit-verify-'));
    dirs.push(dir);
    const journal = await AuditJournal.open(dir);
    for (let i = 1; i <= 4; i++) await journal.append([pageEvent(`p${i}`)]);
    await journal.close();
    return dir;
  }
  const rows: { name: string; edit: (line: string) => string; problem: RegExp }[] = [
    // A changed base64 character that still inflates is a changed event; the hash names it.
    { name: 'one character of the deflated text changed', edit: (l) => l.replace(/"eventDeflate":"(.{40})(.)/, (_m, head: string, c: string) => `"eventDeflate":"${head}${c === 'A' ? 'B' : 'A'}`), problem: /hash does not match|unparseable/ },
    { name: 'the deflated text cut short', edit: (l) => `${l.slice(0, l.length - 30)}"}`, problem: /hash does not match|unparseable/ },
  ];
  for (const row of rows) {
    test(`detects ${row.name}`, async () => {
      const dir = await pageJournal();
      const segment = await editSingleSegment(dir, (lines) => lines.map((l, i) => (i === 2 ? row.edit(l) : l)));
      const result = await verifyJournal(dir);
      assert.equal(result.ok, false);
      if (!result.ok) {
        assert.equal(result.events, 2);
        assert.deepEqual([result.firstBad.segment, result.firstBad.line], [segment, 3]);
        assert.match(result.firstBad.problem, row.problem);
      }
    });
  }
});
