import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditJournal, JournalCorruptError, defaultJournalIo, type JournalIo } from '../../src/audit/journal.ts';
import { DEFLATE_MIN_BYTES, listSegments, parseEntry } from '../../src/audit/segment.ts';
import { verifyJournal } from '../../src/audit/verify.ts';
import { journalEvent as event, pageEvent } from './fixtures.ts';

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'audit-journal-'));
  dirs.push(dir);
  return dir;
}

async function readEntries(dir: string): Promise<{ seq: number; id?: string }[]> {
  const out: { seq: number; id?: string }[] = [];
  for (const s of await listSegments(dir)) {
    const text = await readFile(join(dir, s.name), 'utf8');
    for (const line of text.split('\n').filter((l) => l.length > 0)) {
      const entry = parseEntry(line);
      assert.ok(entry, 'every line is an entry');
      out.push({ seq: entry.seq, id: entry.event.id });
    }
  }
  return out;
}

/** Counts syncs; `hold()` makes the next sync wait until `release()`. */
function countingIo(): JournalIo & { syncs: number; hold(): void; release(): void; failWrites: boolean; entered: Promise<void> } {
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  let signalEntered: () => void = () => undefined;
  const io = {
    syncs: 0,
    /** Resolves when a sync is waiting at the gate. */
    entered: Promise.resolve(),
    failWrites: false,
    hold() {
      gate = new Promise<void>((resolve) => (open = resolve));
      io.entered = new Promise<void>((resolve) => (signalEntered = resolve));
    },
    release() {
      open?.();
      gate = undefined;
    },
    async write(handle: Parameters<JournalIo['write']>[0], data: Buffer) {
      if (io.failWrites) {
        // Half the batch reaches the file, then the disk fails.
        await handle.write(data, 0, Math.floor(data.length / 2));
        throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      }
      await defaultJournalIo.write(handle, data);
    },
    async sync(handle: Parameters<JournalIo['sync']>[0]) {
      io.syncs += 1;
      if (gate) {
        signalEntered();
        await gate;
      }
      await defaultJournalIo.sync(handle);
    },
  };
  return io;
}

describe('audit journal', () => {
  test('100 concurrent appenders: every event durable, chained, each request contiguous', async () => {
    const dir = await tempDir();
    const io = countingIo();
    const journal = await AuditJournal.open(dir, { io });
    const requests = Array.from({ length: 100 }, (_, r) => Array.from({ length: 1 + (r % 3) }, (_, i) => event(`r${r}-e${i}`)));
    await Promise.all(requests.map((events) => journal.append(events)));
    const total = requests.reduce((n, r) => n + r.length, 0);
    assert.equal(journal.lastSeq, total);
    assert.ok(io.syncs < 10, `group commit: ${io.syncs} fsyncs for 100 appends`);
    assert.equal(journal.stats().appends, 100);
    await journal.close();
    assert.deepEqual(await verifyJournal(dir), { ok: true, events: total });
    const entries = await readEntries(dir);
    assert.deepEqual(entries.map((e) => e.seq), Array.from({ length: total }, (_, i) => i + 1));
    for (const events of requests) {
      const positions = events.map((e) => entries.findIndex((x) => x.id === e.id));
      assert.ok(positions.every((p, i) => p >= 0 && (i === 0 || p === positions[i - 1] + 1)), 'a request’s events are contiguous and in order');
    }
  });

  test('group commit: appends made while an fsync is in flight share the next single fsync', async () => {
    const dir = await tempDir();
    const io = countingIo();
    const journal = await AuditJournal.open(dir, { io });
    io.hold();
    const first = journal.append([event('first')]);
    await io.entered;
    assert.equal(io.syncs, 1, 'the first commit is waiting in fsync');
    const waiting = Array.from({ length: 50 }, (_, i) => journal.append([event(`w${i}`)]));
    io.release();
    await Promise.all([first, ...waiting]);
    assert.equal(io.syncs, 2, '50 appends made during the first fsync were committed with one more');
    assert.equal(journal.stats().commits, 2);
    assert.equal(journal.lastSeq, 51);
    await journal.close();
  });

  test('append resolves only after its fsync', async () => {
    const dir = await tempDir();
    const io = countingIo();
    const journal = await AuditJournal.open(dir, { io });
    io.hold();
    let resolved = false;
    const pending = journal.append([event('a')]).then(() => (resolved = true));
    await io.entered;
    await new Promise((r) => setImmediate(r));
    assert.equal(resolved, false);
    io.release();
    await pending;
    assert.equal(resolved, true);
    await journal.close();
  });

  test('torn last line after a crash is cut on open and the chain continues', async () => {
    const dir = await tempDir();
    const journal = await AuditJournal.open(dir);
    for (let i = 0; i < 5; i++) await journal.append([event(`e${i}`)]);
    await journal.close();
    const [segment] = await listSegments(dir);
    await appendFile(join(dir, segment.name), '{"seq":6,"prevHash":"abc","hash":"de');
    const reopened = await AuditJournal.open(dir);
    assert.equal(reopened.lastSeq, 5);
    await reopened.append([event('e5')]);
    await reopened.close();
    assert.deepEqual(await verifyJournal(dir), { ok: true, events: 6 });
  });

  test('segments rotate by size, named in sequence order, and the chain runs across them', async () => {
    const dir = await tempDir();
    const journal = await AuditJournal.open(dir, { maxSegmentBytes: 2048 });
    for (let i = 0; i < 30; i++) await journal.append([event(`e${i}`)]);
    await journal.close();
    const segments = await listSegments(dir);
    assert.ok(segments.length > 3, `${segments.length} segments`);
    const names = (await readdir(dir)).filter((n) => n.endsWith('.ndjson'));
    assert.deepEqual([...names].sort(), segments.map((s) => s.name));
    const reopened = await AuditJournal.open(dir, { maxSegmentBytes: 2048 });
    assert.equal(reopened.lastSeq, 30);
    await reopened.append([event('e30')]);
    await reopened.close();
    assert.deepEqual(await verifyJournal(dir), { ok: true, events: 31 });
  });

  test('a failed disk write rejects the append, reports unhealthy, leaves no partial event, and recovers', async () => {
    const dir = await tempDir();
    const io = countingIo();
    const journal = await AuditJournal.open(dir, { io });
    await journal.append([event('ok-1')]);
    assert.equal(journal.healthy(), true);
    io.failWrites = true;
    await assert.rejects(journal.append([event('lost-1'), event('lost-2')]), /no space left/);
    assert.equal(journal.healthy(), false);
    assert.equal(journal.lastSeq, 1);
    assert.deepEqual(await verifyJournal(dir), { ok: true, events: 1 }, 'the half-written batch was cut');
    io.failWrites = false;
    await journal.append([event('ok-2')]);
    assert.equal(journal.healthy(), true);
    await journal.close();
    assert.deepEqual((await readEntries(dir)).map((e) => e.id), ['ok-1', 'ok-2']);
  });

  test('a torn last line after a damaged one refuses to open (not a crash: damage)', async () => {
    const dir = await tempDir();
    const journal = await AuditJournal.open(dir);
    for (let i = 0; i < 3; i++) await journal.append([event(`e${i}`)]);
    await journal.close();
    const [segment] = await listSegments(dir);
    const lines = (await readFile(join(dir, segment.name), 'utf8')).split('\n');
    lines[1] = 'garbage';
    lines[2] = lines[2].slice(0, 20);
    await writeFile(join(dir, segment.name), lines.join('\n'));
    await assert.rejects(AuditJournal.open(dir), JournalCorruptError);
  });

  test('append after close rejects', async () => {
    const journal = await AuditJournal.open(await tempDir());
    await journal.close();
    await assert.rejects(journal.append([event('late')]), /closed/);
    assert.equal(journal.healthy(), false);
  });
});

describe('audit journal: long events stored deflated (issue 15)', () => {
  test('a page event is written deflated, under half its JSON size, and reads back equal; a small one stays plain JSON', async () => {
    const dir = await tempDir();
    const journal = await AuditJournal.open(dir);
    const small = event('small');
    const page = pageEvent('page');
    await journal.append([small, page]);
    const stats = journal.stats();
    await journal.close();
    const [segment] = await listSegments(dir);
    const lines = (await readFile(join(dir, segment.name), 'utf8')).split('\n').filter(Boolean);
    assert.ok(JSON.stringify(small).length < DEFLATE_MIN_BYTES && lines[0].includes('"event":{"resourceType":"AuditEvent"'), 'the small event is plain');
    assert.ok(lines[1].includes('"eventDeflate":"') && !lines[1].includes('"event":'), 'the page event is deflated');
    assert.ok(lines[1].length < JSON.stringify(page).length / 2, `${lines[1].length} bytes for a ${JSON.stringify(page).length}-byte event`);
    assert.equal(stats.bytes, lines.join('\n').length + 1, 'the journal counts the bytes it wrote');
    assert.deepEqual(lines.map((l) => parseEntry(l)?.event), [small, page]);
    assert.deepEqual(await verifyJournal(dir), { ok: true, events: 2 });
  });

  test('a reopened journal continues the chain after a deflated last line', async () => {
    const dir = await tempDir();
    const first = await AuditJournal.open(dir);
    await first.append([pageEvent('a')]);
    await first.close();
    const second = await AuditJournal.open(dir);
    assert.equal(second.lastSeq, 1);
    await second.append([pageEvent('b'), event('c')]);
    await second.close();
    assert.deepEqual((await readEntries(dir)).map((e) => e.id), ['a', 'b', 'c']);
    assert.deepEqual(await verifyJournal(dir), { ok: true, events: 3 });
  });
});
