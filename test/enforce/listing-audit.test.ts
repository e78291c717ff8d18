// The audit records exactly what a page showed: the look-ahead entry that decides whether a next link is
// due, and entries skipped by _offset, are decided but not disclosed, so they are not recorded as released.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { AuditEvent, Resource } from '@medplum/fhirtypes';
import { resourcesOf } from '../audit/fixtures.ts';
import { journalEvents, requestIdOf } from '../reliability/support.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';

const resources: Resource[] = [{ resourceType: 'Patient', id: 'pa' }];
for (let i = 0; i < 7; i++) {
  resources.push({ resourceType: 'Observation', id: `oa${i}`, status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pa' }, effectiveDateTime: `2024-01-0${i + 1}` } as Resource);
}

function releasedIn(events: AuditEvent[], requestId: string): string[] {
  return events
    .filter((e) => requestIdOf(e) === requestId)
    .flatMap(resourcesOf)
    .filter((r) => r.disposition === 'released')
    .map((r) => r.reference.replace(/\/_history\/.*$/, ''))
    .filter((ref) => ref.startsWith('Observation/'))
    .sort();
}

describe('the audit records what a listing showed', () => {
  let h: Harness;
  let token: string;
  before(async () => {
    h = await startHarness({ resources });
    token = await h.token({ sub: 'dr', client_id: 'app', fhirUser: 'Practitioner/dr', scope: 'user/*.rs', extensions: pou('TREAT') });
  });
  after(() => h.close());

  const rows = [
    { name: 'a full page with more behind it: the look-ahead entry is not recorded', query: 'Observation?patient=pa&_sort=date&_count=3', shown: ['oa0', 'oa1', 'oa2'] },
    { name: 'entries skipped by _offset are not recorded', query: 'Observation?patient=pa&_sort=date&_count=2&_offset=4', shown: ['oa4', 'oa5'] },
  ];
  for (const row of rows) {
    test(row.name, async () => {
      const requestId = `listing-${row.shown.join('-')}`;
      const r = await h.request(row.query, { token, headers: { 'x-request-id': requestId } });
      assert.equal(r.status, 200);
      const ids = (r.body.entry ?? []).map((e: { resource: Resource }) => e.resource.id);
      assert.deepEqual(ids, row.shown);
      assert.ok(r.body.link.some((l: { relation: string }) => l.relation === 'next'), 'more released entries remain, so a next link is due');
      assert.deepEqual(releasedIn(await journalEvents(h.auditDir), requestId), row.shown.map((id) => `Observation/${id}`).sort());
    });
  }
});
