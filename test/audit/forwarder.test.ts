import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { AuditForwarder } from '../../src/audit/forwarder.ts';
import { AuditJournal } from '../../src/audit/journal.ts';
import { CHECKPOINT_FILE, entryHash, GENESIS_HASH, listSegments, segmentName } from '../../src/audit/segment.ts';
import { journalEvent, pageEvent } from './fixtures.ts';
import { startAuditUpstream, until, type AuditUpstream } from './upstream.ts';

const dirs: string[] = [];
let upstream: AuditUpstream;
before(async () => {
  upstream = await startAuditUpstream();
});
after(async () => {
  await upstream.close();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

let counter = 0;
async function journalWith(count: number): Promise<{ dir: string; journal: AuditJournal; ids: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'audit-forward-'));
  dirs.push(dir);
  const journal = await AuditJournal.open(dir, { maxSegmentBytes: 16 * 1024 });
  const ids = await appendMore(journal, count);
  return { dir, journal, ids };
}

async function appendMore(journal: AuditJournal, count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, () => `${process.pid}-${++counter}`);
  await Promise.all(ids.map((id) => journal.append([journalEvent(id)])));
  return ids;
}

async function upstreamIds(): Promise<string[]> {
  return (await upstream.auditEvents()).map((e) => e.id as string);
}

async function assertDeliveredOnce(ids: readonly string[]): Promise<void> {
  const present = new Set(await upstreamIds());
  for (const id of ids) assert.ok(present.has(id), `AuditEvent/${id} upstream`);
  for (const id of ids) assert.equal(await upstream.versions(id), 1, `AuditEvent/${id} written exactly once`);
}

async function checkpointSeq(dir: string): Promise<number> {
  return (JSON.parse(await readFile(join(dir, CHECKPOINT_FILE), 'utf8')) as { lastSeq: number }).lastSeq;
}

describe('audit forwarder', () => {
  test('delivers every event exactly once, across segments, and follows the journal as it grows', async () => {
    const before = (await upstreamIds()).length;
    const { dir, journal, ids } = await journalWith(250);
    const forwarder = new AuditForwarder({ dir, journal, postBatch: (b) => upstream.postBatch(b), batchSize: 40, intervalMs: 5000 });
    forwarder.start();
    await until(() => forwarder.lag().events === 0);
    // Follows new commits without waiting for the poll interval.
    const more = await appendMore(journal, 15);
    await until(() => forwarder.lag().events === 0);
    await forwarder.stop();
    await journal.close();
    assert.equal((await upstreamIds()).length - before, 265, 'nothing duplicated');
    await assertDeliveredOnce([...ids, ...more]);
    assert.equal(await checkpointSeq(dir), 265);
    assert.deepEqual(forwarder.lag(), { events: 0, seconds: 0 });
  });

  test('resumes from its checkpoint after being stopped mid-way', async () => {
    const { dir, journal, ids } = await journalWith(100);
    await journal.close();
    const first = new AuditForwarder({ dir, postBatch: (b) => upstream.postBatch(b), batchSize: 30 });
    assert.equal(await first.forwardOnce(), 30);
    assert.equal(await first.forwardOnce(), 30);
    assert.equal(await checkpointSeq(dir), 60);
    // A new process: nothing shared but the directory.
    const second = new AuditForwarder({ dir, postBatch: (b) => upstream.postBatch(b), batchSize: 30, intervalMs: 20 });
    second.start();
    await until(async () => (await checkpointSeq(dir)) === 100);
    await second.stop();
    await assertDeliveredOnce(ids);
  });

  test('retries with backoff while the upstream fails, then delivers everything once', async () => {
    const { dir, journal, ids } = await journalWith(50);
    upstream.failing = true;
    const forwarder = new AuditForwarder({ dir, journal, postBatch: (b) => upstream.postBatch(b), batchSize: 20, backoff: { initialMs: 5, maxMs: 40 } });
    forwarder.start();
    try {
      await until(() => forwarder.stats().failures >= 4);
      assert.equal(forwarder.lag().events, 50, 'nothing counted as forwarded while failing');
    } finally {
      upstream.failing = false;
    }
    await until(() => forwarder.lag().events === 0);
    await forwarder.stop();
    await journal.close();
    await assertDeliveredOnce(ids);
  });

  test('a lost response (upstream applied, checkpoint not written) is resent idempotently: no duplicate', async () => {
    const { dir, journal, ids } = await journalWith(30);
    await journal.close();
    let lose = true;
    const postBatch = async (batch: Buffer): Promise<Bundle> => {
      const response = await upstream.postBatch(batch);
      if (lose) {
        lose = false;
        throw new Error('connection reset before the response arrived');
      }
      return response;
    };
    const forwarder = new AuditForwarder({ dir, postBatch, batchSize: 30 });
    await assert.rejects(forwarder.forwardOnce(), /connection reset/);
    assert.equal(await forwarder.forwardOnce(), 30);
    const present = new Set(await upstreamIds());
    assert.equal(ids.filter((id) => present.has(id)).length, 30);
    for (const id of ids) assert.equal(await upstream.versions(id), 2, 'sent twice, stored once (PUT by id)');
  });

  test('an entry the upstream rejects stops the checkpoint there', async () => {
    const { dir, journal } = await journalWith(10);
    await journal.close();
    const postBatch = async (batch: Buffer): Promise<Bundle> => {
      const response = await upstream.postBatch(batch);
      const entry = response.entry?.map((e, i) => (i === 4 ? { response: { status: '400 Bad Request' } } : e));
      return { ...response, entry };
    };
    const forwarder = new AuditForwarder({ dir, postBatch, batchSize: 10 });
    await assert.rejects(forwarder.forwardOnce(), /rejected audit event seq 5/);
    assert.equal(await checkpointSeq(dir), 4);
    assert.equal(forwarder.lag().events, 6);
  });

  test('what arrives upstream is the event as journaled (sent from the journal’s text, not re-serialised)', async () => {
    const { dir, journal, ids } = await journalWith(12);
    await journal.close();
    const sent: string[] = [];
    const forwarder = new AuditForwarder({ dir, postBatch: (batch) => (sent.push(batch.toString('utf8')), upstream.postBatch(batch)), batchSize: 12 });
    assert.equal(await forwarder.forwardOnce(), 12);
    const journaled = new Map<string, AuditEvent>();
    for (const segment of await listSegments(dir)) {
      for (const line of (await readFile(join(dir, segment.name), 'utf8')).split('\n').filter(Boolean)) {
        const event = (JSON.parse(line) as { event: AuditEvent }).event;
        journaled.set(event.id as string, event);
        assert.ok(sent[0].includes(line.slice(line.indexOf(',"event":') + 9, -1)), 'the event text is sent byte for byte');
      }
    }
    const stored = new Map((await upstream.auditEvents()).map((e) => [e.id as string, e]));
    for (const id of ids) {
      const { meta: _meta, ...upstreamEvent } = stored.get(id) as AuditEvent;
      assert.deepEqual(upstreamEvent, journaled.get(id));
    }
  });

  test('a deflated (page-sized) event arrives upstream as the JSON that was journaled, once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'audit-forward-'));
    dirs.push(dir);
    const journal = await AuditJournal.open(dir);
    const ids = [`${process.pid}-page-${++counter}`, `${process.pid}-page-${++counter}`];
    const events = ids.map((id) => pageEvent(id));
    await journal.append(events);
    await journal.close();
    const sent: string[] = [];
    const forwarder = new AuditForwarder({ dir, postBatch: (batch) => (sent.push(batch.toString('utf8')), upstream.postBatch(batch)) });
    assert.equal(await forwarder.forwardOnce(), 2);
    for (const event of events) assert.ok(sent[0].includes(JSON.stringify(event)), 'the inflated JSON is sent byte for byte');
    const stored = new Map((await upstream.auditEvents()).map((e) => [e.id as string, e]));
    for (const event of events) {
      const { meta: _meta, ...upstreamEvent } = stored.get(event.id as string) as AuditEvent;
      assert.deepEqual(upstreamEvent, event);
    }
    await assertDeliveredOnce(ids);
  });

  test('a line not in the journal’s own shape (key order, no id) is parsed and sent with an id from its hash', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'audit-forward-'));
    dirs.push(dir);
    // Written by hand the way another writer might: keys in another order, the event without an id.
    const event = { ...journalEvent('unused'), id: undefined, recorded: '2025-03-02T10:00:00.000Z' };
    const eventJson = JSON.stringify({ type: event.type, resourceType: 'AuditEvent', recorded: event.recorded, agent: event.agent, source: event.source });
    const hash = entryHash(1, GENESIS_HASH, eventJson);
    await appendFile(join(dir, segmentName(1)), `{"prevHash":"${GENESIS_HASH}","seq":1,"hash":"${hash}","event":${eventJson}}\n`);
    const forwarder = new AuditForwarder({ dir, postBatch: (batch) => upstream.postBatch(batch), batchSize: 5 });
    assert.equal(await forwarder.forwardOnce(), 1);
    const id = `${hash.slice(0, 8)}-${hash.slice(8, 12)}-${hash.slice(12, 16)}-${hash.slice(16, 20)}-${hash.slice(20, 32)}`;
    const stored = (await upstream.auditEvents()).find((e) => e.id === id);
    assert.equal(stored?.recorded, '2025-03-02T10:00:00.000Z');
    assert.equal(await checkpointSeq(dir), 1);
  });

  test('events committed one by one are forwarded together after a short linger, not one POST each', async () => {
    const { dir, journal } = await journalWith(1);
    const forwarder = new AuditForwarder({ dir, journal, postBatch: (b) => upstream.postBatch(b), batchSize: 100, intervalMs: 60_000, lingerMs: 1000 });
    forwarder.start();
    await until(() => forwarder.lag().events === 0);
    const batchesBefore = upstream.batches;
    const started = Date.now();
    const more: string[] = [];
    for (let i = 0; i < 6; i++) {
      more.push(...(await appendMore(journal, 1)));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await until(() => forwarder.lag().events === 0);
    assert.ok(Date.now() - started < 5000, 'delivered well within the poll interval (SPEC §6: 10 s)');
    assert.ok(upstream.batches - batchesBefore <= 2, `six commits went out in ${upstream.batches - batchesBefore} batches`);
    await forwarder.stop();
    await journal.close();
    await assertDeliveredOnce(more);
  });

  test('a batch holds at most batchBytes of events (at least one): large events go out in several batches, each once', async () => {
    const { dir, journal, ids } = await journalWith(20);
    await journal.close();
    const line = (await readFile(join(dir, (await listSegments(dir))[0].name), 'utf8')).split('\n')[0];
    const eventBytes = line.slice(line.indexOf(',"event":') + 9, -1).length;
    const sizes: number[] = [];
    const forwarder = new AuditForwarder({
      dir,
      postBatch: (batch) => (sizes.push((batch.toString('utf8').match(/"method":"PUT"/g) ?? []).length), upstream.postBatch(batch)),
      batchSize: 100,
      batchBytes: eventBytes * 3,
    });
    let sent = 0;
    for (let n = await forwarder.forwardOnce(); n > 0; n = await forwarder.forwardOnce()) sent += n;
    assert.equal(sent, 20);
    assert.ok(sizes.every((n) => n >= 1 && n <= 3), `batches of ${sizes}`);
    await assertDeliveredOnce(ids);
    const small = await journalWith(2);
    await small.journal.close();
    const tiny = new AuditForwarder({ dir: small.dir, postBatch: (b) => upstream.postBatch(b), batchBytes: 1 });
    assert.equal(await tiny.forwardOnce(), 1, 'an event larger than batchBytes still goes out, alone');
  });

  test('an event longer than the 1 MiB read chunk (a page of thousands of entries) is forwarded, with the events around it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'audit-forward-'));
    dirs.push(dir);
    const journal = await AuditJournal.open(dir);
    const small = await appendMore(journal, 2);
    const big = { ...journalEvent(`${process.pid}-big-${++counter}`), entity: Array.from({ length: 12_000 }, (_, i) => ({ what: { reference: `Observation/big-${i}-${'x'.repeat(60)}` } })) };
    await journal.append([big]);
    const after = await appendMore(journal, 2);
    await journal.close();
    assert.ok(JSON.stringify(big).length > 1024 * 1024, 'the event is longer than one read chunk');
    const forwarder = new AuditForwarder({ dir, postBatch: (b) => upstream.postBatch(b), batchSize: 100 });
    let sent = 0;
    for (let n = await forwarder.forwardOnce(); n > 0; n = await forwarder.forwardOnce()) sent += n;
    assert.equal(sent, 5);
    await assertDeliveredOnce([...small, big.id as string, ...after]);
    assert.equal((await upstream.auditEvents()).find((e) => e.id === big.id)?.entity?.length, 12_000);
  });

  test('events the running journal commits go out from memory, byte for byte: the files are read only to catch up (issue 15)', async () => {
    const { dir, journal } = await journalWith(3);
    const sent: string[] = [];
    const forwarder = new AuditForwarder({ dir, journal, postBatch: (b) => (sent.push(b.toString('utf8')), upstream.postBatch(b)), batchSize: 100, intervalMs: 60_000, lingerMs: 50 });
    forwarder.start();
    await until(() => forwarder.lag().events === 0); // the three written before it started come from the file
    const plain = await appendMore(journal, 2);
    const page = { ...pageEvent(`${process.pid}-mem-${++counter}`) };
    await journal.append([page]);
    // The lines are gone from disk before the forwarder's linger ends: only memory can send them.
    for (const segment of await listSegments(dir)) await truncate(join(dir, segment.name), 0);
    await until(() => forwarder.lag().events === 0);
    await forwarder.stop();
    await journal.close();
    await assertDeliveredOnce([...plain, page.id as string]);
    assert.ok(sent.at(-1)?.includes(JSON.stringify(page)), 'the page event goes out as the JSON journaled (not inflated from the file)');
  });

  test('a checkpoint cut short by a crash makes the forwarder start over: nothing lost, nothing stored twice', async () => {
    const { dir, journal, ids } = await journalWith(8);
    await journal.close();
    const first = new AuditForwarder({ dir, postBatch: (b) => upstream.postBatch(b), batchSize: 100 });
    assert.equal(await first.forwardOnce(), 8);
    await writeFile(join(dir, CHECKPOINT_FILE), '{"lastSeq":');
    const warnings: string[] = [];
    const again = new AuditForwarder({ dir, postBatch: (b) => upstream.postBatch(b), batchSize: 100, logger: { info: () => undefined, warn: (_o, msg) => warnings.push(msg) } });
    assert.equal(await again.forwardOnce(), 8, 'resent from the start');
    assert.equal(await checkpointSeq(dir), 8);
    assert.match(warnings.join('\n'), /checkpoint unreadable/);
    for (const id of ids) assert.equal(await upstream.versions(id), 2, 'sent twice, stored once (PUT by id)');
  });
});
