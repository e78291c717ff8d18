import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { AuditForwarder } from '../../src/audit/forwarder.ts';
import { AuditJournal } from '../../src/audit/journal.ts';
import { listSegments, parseEntry } from '../../src/audit/segment.ts';
import { verifyJournal } from '../../src/audit/verify.ts';
import { startAuditUpstream, until } from './upstream.ts';

const CHILD = fileURLToPath(new URL('./crash-child.ts', import.meta.url));
let dir = '';
after(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

async function journalIds(directory: string): Promise<string[]> {
  const ids: string[] = [];
  for (const s of await listSegments(directory)) {
    for (const line of (await readFile(join(directory, s.name), 'utf8')).split('\n')) {
      const entry = parseEntry(line);
      if (entry) ids.push(entry.event.id as string);
    }
  }
  return ids;
}

test('SIGKILL mid-append: every acknowledged event survives, the chain verifies, forwarding resumes exactly once', async () => {
  dir = await mkdtemp(join(tmpdir(), 'audit-crash-'));
  const upstream = await startAuditUpstream();
  try {
    const child = spawn(process.execPath, [CHILD, dir, upstream.baseUrl], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    const acknowledged: string[] = [];
    const lines = createInterface({ input: child.stdout });
    // Kill once a good amount was acknowledged and the child's forwarder has delivered some of it.
    await new Promise<void>((resolve) => {
      lines.on('line', (line) => {
        if (line.startsWith('ack ')) acknowledged.push(line.slice(4));
        if (acknowledged.length >= 1500) resolve();
      });
    });
    await until(async () => (await upstream.auditEvents()).length >= 100);
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL');
    lines.close();

    const inJournal = new Set(await journalIds(dir));
    const missing = acknowledged.filter((id) => !inJournal.has(id));
    assert.deepEqual(missing, [], 'every acknowledged event is in the journal');
    const verified = await verifyJournal(dir);
    assert.equal(verified.ok, true, JSON.stringify(verified));

    // Restart: recovery cuts any torn line; a new forwarder resumes from the child's checkpoint.
    const journal = await AuditJournal.open(dir, { maxSegmentBytes: 64 * 1024 });
    const total = journal.lastSeq;
    assert.ok(total >= acknowledged.length);
    const forwarder = new AuditForwarder({ dir, journal, postBatch: (b) => upstream.postBatch(b), batchSize: 25, intervalMs: 20 });
    forwarder.start();
    await until(() => forwarder.lag().events === 0);
    await forwarder.stop();
    await journal.close();
    assert.deepEqual(await verifyJournal(dir), { ok: true, events: total });

    const upstreamIds = (await upstream.auditEvents()).map((e) => e.id as string);
    assert.equal(upstreamIds.length, total, 'every journaled event upstream, none duplicated');
    assert.deepEqual(new Set(upstreamIds), new Set(await journalIds(dir)));
    // Only the batch in flight at the kill may have been sent twice (and PUT stored it once).
    let resent = 0;
    for (const id of upstreamIds) if ((await upstream.versions(id)) > 1) resent += 1;
    assert.ok(resent <= 25, `${resent} events resent`);
  } finally {
    await upstream.close();
  }
});
