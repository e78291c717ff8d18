// The console's journal integrity (issue 8 §5): the same verification as `audit verify`, cached for an
// interval, and a changed event reported with where the chain broke.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import { AuditJournal } from '../../src/audit/journal.ts';
import { listSegments } from '../../src/audit/segment.ts';
import { JournalStatusCache } from '../../src/console/journal-status.ts';

function event(id: string): AuditEvent {
  return {
    resourceType: 'AuditEvent',
    id,
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
    recorded: '2024-06-01T10:00:00.000Z',
    outcome: '0',
    agent: [{ who: { display: 'test client' }, requestor: true }],
    source: { observer: { display: 'gateway' } },
  };
}

async function journalWith(count: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dg-console-journal-'));
  const journal = await AuditJournal.open(dir);
  for (let i = 1; i <= count; i++) await journal.append([event(`e${i}`)]);
  await journal.close();
  return dir;
}

/** Rewrites the n-th line's event (1-based) without fixing its hash: what an attacker editing the file does. */
async function tamper(dir: string, line: number): Promise<string> {
  const [segment] = await listSegments(dir);
  const path = join(dir, segment.name);
  const lines = (await readFile(path, 'utf8')).split('\n');
  lines[line - 1] = lines[line - 1].replace('"outcome":"0"', '"outcome":"4"');
  await writeFile(path, lines.join('\n'));
  return segment.name;
}

describe('journal status for the console', () => {
  const cases = [
    { name: 'an intact journal verifies with its event count', events: 5, tamperLine: undefined },
    { name: 'a changed event breaks the chain at its line', events: 5, tamperLine: 3 },
    { name: 'an empty journal is intact with no events', events: 0, tamperLine: undefined },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const dir = await journalWith(c.events);
      try {
        const segment = c.tamperLine === undefined ? undefined : await tamper(dir, c.tamperLine);
        const status = await new JournalStatusCache(dir, 0).current();
        assert.ok(!Number.isNaN(Date.parse(status.lastVerified)));
        if (segment === undefined) {
          assert.deepEqual({ ok: status.ok, events: status.events, firstBad: status.firstBad }, { ok: true, events: c.events, firstBad: undefined });
        } else {
          assert.equal(status.ok, false);
          assert.equal(status.events, c.tamperLine! - 1);
          assert.equal(status.firstBad?.segment, segment);
          assert.equal(status.firstBad?.line, c.tamperLine);
          assert.match(status.firstBad?.problem ?? '', /changed/);
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  test('a verification is reused within the interval and re-run after it; concurrent callers share one run', async () => {
    const dir = await journalWith(2);
    try {
      let now = Date.parse('2024-06-01T10:00:00Z');
      const cache = new JournalStatusCache(dir, 30_000, () => now);
      const [a, b] = await Promise.all([cache.current(), cache.current()]);
      assert.equal(a, b);
      assert.equal(a.ok, true);
      await tamper(dir, 1);
      now += 29_000;
      assert.equal(await cache.current(), a, 'within the interval the last result stands');
      now += 2_000;
      const later = await cache.current();
      assert.equal(later.ok, false, 'after the interval the tampering is found');
      assert.equal(later.lastVerified, new Date(now).toISOString());
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
