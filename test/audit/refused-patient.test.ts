// Issue 13 (3), SPEC §6: a request refused before the upstream is asked is filed under the patient(s)
// it named, so `AuditEvent?patient=Patient/P2` finds an attempt on P2's record and the auditor console's
// accounting lists it under P2, not under the requesting patient.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { AuditEvent, Bundle, Resource } from '@medplum/fhirtypes';
import { personaClaims } from '../../src/embedded/personas.ts';
// The console's own reader of AuditEvents (plain browser ESM without type declarations; summarise needs no DOM).
// @ts-expect-error -- no declaration file for the console's static module
import { summarise } from '../../src/console/static/audit-model.js';
import { journalEvents, requestIdOf } from '../reliability/support.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';

const resources: Resource[] = [
  { resourceType: 'Patient', id: 'P1' },
  { resourceType: 'Patient', id: 'P2' },
  { resourceType: 'Observation', id: 'o-p2', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/P2' } } as Resource,
];

interface Attempt {
  readonly name: string;
  readonly path: string;
  readonly method?: string;
  readonly body?: string;
  readonly contentType?: string;
  /** Another patient app whose scopes do not reach the type at all. */
  readonly narrowScope?: boolean;
  /** A batch answers 200 and refuses the entry inside it. */
  readonly batch?: boolean;
}

const attempts: Attempt[] = [
  { name: 'type search naming P2', path: 'Observation?patient=P2' },
  { name: 'type search naming P2 by reference in subject', path: 'Observation?subject=Patient/P2' },
  { name: 'read of Patient/P2', path: 'Patient/P2' },
  { name: 'compartment search of P2', path: 'Patient/P2/Observation' },
  { name: 'POST _search with P2 in the form body', path: 'Observation/_search', method: 'POST', body: 'patient=Patient/P2', contentType: 'application/x-www-form-urlencoded' },
  { name: 'scope refusal naming P2 (Condition outside the scopes)', path: 'Condition?patient=P2', narrowScope: true },
  { name: 'batch whose search entry names P2', path: '', method: 'POST', batch: true, contentType: 'application/fhir+json',
    body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Observation?patient=P2' } }] }) },
];

describe('a refused attempt on another patient is filed under that patient (SPEC §6)', () => {
  let h: Harness;
  let auditor: string;
  const requestIds = new Map<string, string>();

  before(async () => {
    h = await startHarness({ resources, settings: { AUDIT_FORWARD: 'true' } });
    auditor = await h.token({ ...personaClaims('auditor') });
    const app = await h.token({ sub: 'P1', client_id: 'p1-app', fhirUser: 'Patient/P1', patient: 'P1', scope: 'patient/*.rs' });
    const narrow = await h.token({ sub: 'P1', client_id: 'p1-app', fhirUser: 'Patient/P1', patient: 'P1', scope: 'patient/Observation.rs', extensions: pou('PATRQT') });
    for (const [i, a] of attempts.entries()) {
      const requestId = `attempt-on-p2-${i}`;
      const headers: Record<string, string> = { 'x-request-id': requestId };
      if (a.contentType) headers['content-type'] = a.contentType;
      const r = await h.request(a.path, { token: a.narrowScope ? narrow : app, method: a.method, body: a.body, headers });
      if (a.batch) assert.deepEqual([r.status, r.body.entry?.[0]?.response?.status], [200, '403'], `${a.name}: the entry is refused`);
      else assert.equal(r.status, 403, `${a.name}: refused before the upstream is asked`);
      requestIds.set(a.name, requestId);
    }
    const forwarder = h.gateway.forwarder;
    assert.ok(forwarder);
    while ((await forwarder.forwardOnce()) > 0);
  });
  after(() => h.close());

  for (const a of attempts) {
    test(`${a.name}: the journal's event names P2 as the patient`, async () => {
      const events = (await journalEvents(h.auditDir)).filter((e) => requestIdOf(e) === requestIds.get(a.name));
      assert.equal(events.length, 1);
      const summary = summarise(events[0]);
      assert.equal(summary.patient, 'P2', 'the console lists it under P2');
      if (!a.batch) {
        assert.equal(summary.refused, true);
        assert.equal(events[0].outcome, '4');
      }
      assert.equal((events[0].entity ?? []).filter((e) => e.role?.code === '4').length, 0, 'nothing of P2 was read');
    });
  }

  test('AuditEvent?patient=Patient/P2 through the gateway finds every attempt', async () => {
    const found: AuditEvent[] = [];
    let next: string | undefined = 'AuditEvent?patient=Patient/P2&_count=100';
    while (next) {
      const r: { status: number; body: Bundle<AuditEvent> } = await h.request(next, { token: auditor });
      assert.equal(r.status, 200);
      found.push(...(r.body.entry ?? []).map((e) => e.resource as AuditEvent));
      next = r.body.link?.find((l) => l.relation === 'next')?.url;
    }
    const ids = new Set(found.map(requestIdOf));
    for (const a of attempts) assert.ok(ids.has(requestIds.get(a.name)), `${a.name} is in P2's accounting`);
  });
});
