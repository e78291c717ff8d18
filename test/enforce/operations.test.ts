// Binary's security context, the explain and status operations, and writes invalidating the policy cache,
// end to end through the gateway (SPEC §5, §7).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Consent, Resource } from '@medplum/fhirtypes';
import { demoResources } from '../../src/embedded/demo-data.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';

const drA = { sub: 'dr-a', client_id: 'app', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs user/Consent.cruds', extensions: pou('TREAT') };
const bob = { sub: 'bob', client_id: 'app', fhirUser: 'Practitioner/bob', scope: 'user/*.rs', extensions: pou('TREAT') };
const auditor = { sub: 'auditor', client_id: 'console', fhirUser: 'Practitioner/auditor', scope: 'user/AuditEvent.rs system/Consent.r', extensions: pou('HOPERAT') };

const entry = (reference: string): { resource: Resource } => ({
  resource: { resourceType: 'Observation', id: reference, status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/p1' }, valueString: `BUNDLE-MARKER-${reference}` } as Resource,
});
const storedBundles: Resource[] = [
  // A stored document Bundle holds copies of records: it is released only if every one of them may be.
  { resourceType: 'Bundle', id: 'doc-normal', type: 'collection', entry: [entry('bn1'), entry('bn2')] } as Resource,
  { resourceType: 'Bundle', id: 'doc-mixed', type: 'collection', entry: [entry('bm1'), { resource: { ...entry('bm2').resource, meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }] } } as Resource }] } as Resource,
];

const binaries: Resource[] = [
  // Governed by a restricted observation: only those who may see o-r may see it.
  { resourceType: 'Binary', id: 'b-restricted', contentType: 'text/plain', data: Buffer.from('BINARY-MARKER-R').toString('base64'), securityContext: { reference: 'Observation/o-r' } },
  { resourceType: 'Binary', id: 'b-normal', contentType: 'text/plain', data: Buffer.from('BINARY-MARKER-N').toString('base64'), securityContext: { reference: 'Observation/o1' } },
  { resourceType: 'Binary', id: 'b-patient', contentType: 'text/plain', data: Buffer.from('BINARY-MARKER-P').toString('base64'), securityContext: { reference: 'Patient/p1' } },
];

describe('operations and special read surfaces', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ resources: [...demoResources(), ...binaries, ...storedBundles] });
  });
  after(() => h.close());

  const table: { name: string; id: string; who: typeof drA; status: number }[] = [
    { name: 'Binary whose context the requester may see is released', id: 'b-normal', who: bob, status: 200 },
    { name: 'Binary whose context is withheld is concealed like the context', id: 'b-restricted', who: bob, status: 404 },
    { name: 'Binary with a Patient context is decided under that patient’s consent', id: 'b-patient', who: drA, status: 200 },
  ];
  for (const row of table) {
    test(row.name, async () => {
      const r = await h.request(`Binary/${row.id}`, { token: await h.token(row.who) });
      assert.equal(r.status, row.status);
      if (row.status !== 200) assert.doesNotMatch(r.text, /BINARY-MARKER/);
    });
  }

  test('a stored Bundle is released only when every resource in it may be', async () => {
    const token = await h.token(bob);
    const normal = await h.request('Bundle/doc-normal', { token });
    assert.equal(normal.status, 200);
    assert.match(normal.text, /BUNDLE-MARKER-bn2/);
    const mixed = await h.request('Bundle/doc-mixed', { token });
    assert.equal(mixed.status, 404);
    assert.doesNotMatch(mixed.text, /BUNDLE-MARKER/);
    const other = await h.request('Bundle/doc-normal', { token: await h.token({ sub: 'p2', client_id: 'papp', fhirUser: 'Patient/p2', patient: 'p2', scope: 'patient/*.rs' }) });
    assert.equal(other.status, 404, 'another patient’s documents are not theirs to read');
  });

  test('a Binary governed by another resource is never released through a listing (history)', async () => {
    const r = await h.request('Binary/_history', { token: await h.token(drA) });
    assert.equal(r.status, 200);
    assert.doesNotMatch(r.text, /BINARY-MARKER-R|BINARY-MARKER-N/);
    assert.match(r.text, /b-patient/); // the Patient-context Binary is decided for p1 and released to Dr A
  });

  test('$disclosure-decision answers what enforcement did, with the rule named', async () => {
    const bobToken = await h.token(bob);
    const enforced = await h.request('Observation/o-r', { token: bobToken });
    assert.equal(enforced.status, 404);
    const explained = await h.request('$disclosure-decision', {
      token: await h.token(auditor),
      method: 'POST',
      body: {
        resourceType: 'Parameters',
        parameter: [
          { name: 'actor', valueReference: { reference: 'Practitioner/bob' } },
          { name: 'purpose', valueCode: 'TREAT' },
          { name: 'scope', valueString: 'user/*.rs' },
          { name: 'reference', valueReference: { reference: 'Observation/o-r' } },
        ],
      },
    });
    assert.equal(explained.status, 200);
    const decision = explained.body.parameter.find((p: { name: string }) => p.name === 'decision');
    assert.equal(decision.valueCode, 'deny');
    const reasons = explained.body.parameter.filter((p: { name: string }) => p.name === 'reason').map((p: { valueString: string }) => p.valueString);
    assert.ok(reasons.some((r: string) => r.includes('Consent/c-p1-privacy')), reasons.join('\n'));
    // And a permit for the same resource under Dr A's break-the-glass matches what enforcement releases.
    const btg = await h.request('$disclosure-decision', {
      token: await h.token(auditor),
      method: 'POST',
      body: {
        resourceType: 'Parameters',
        parameter: [
          { name: 'actor', valueReference: { reference: 'Practitioner/dr-a' } },
          { name: 'purpose', valueCode: 'BTG' },
          { name: 'scope', valueString: 'user/*.rs' },
          { name: 'breakGlass', valueBoolean: true },
          { name: 'reference', valueReference: { reference: 'Observation/o-r' } },
        ],
      },
    });
    assert.equal(btg.body.parameter.find((p: { name: string }) => p.name === 'decision').valueCode, 'permit');
    const enforcedBtg = await h.request('Observation/o-r', { token: await h.token({ ...drA, scope: 'user/*.rs btg', extensions: pou('BTG') }) });
    assert.equal(enforcedBtg.status, 200);
  });

  test('explain and status need an auditor or administrator scope', async () => {
    const r = await h.request('Patient/p1/$consent-enforcement-status', { token: await h.token(bob) });
    assert.equal(r.status, 403);
  });

  test('$consent-enforcement-status lists each consent with its status', async () => {
    const r = await h.request('Patient/p1/$consent-enforcement-status', { token: await h.token(auditor) });
    assert.equal(r.status, 200);
    const statuses = Object.fromEntries(
      r.body.parameter.map((p: { part: { name: string; valueReference?: { reference: string }; valueCode?: string }[] }) => [
        p.part.find((x) => x.name === 'reference')?.valueReference?.reference,
        p.part.find((x) => x.name === 'status')?.valueCode,
      ]),
    );
    assert.equal(statuses['Consent/c-p1-privacy'], 'ENFORCEABLE');
    assert.equal(statuses['Consent/lr-p1-protective-order'], 'ENFORCEABLE');
    const one = await h.request('Consent/c-p1-privacy/$consent-enforcement-status', { token: await h.token(auditor) });
    assert.equal(one.body.parameter.length, 1);
  });

  test('a Consent written through the gateway takes effect at once', async () => {
    const token = await h.token(drA);
    assert.equal((await h.request('Observation/o2', { token })).status, 200);
    const deny: Consent = {
      resourceType: 'Consent',
      id: 'c-p1-deny-all',
      status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
      patient: { reference: 'Patient/p1' },
      dateTime: '2025-01-01T00:00:00Z',
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] },
      provision: { type: 'deny', actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: 'Practitioner/dr-a' } }] },
    };
    // A narrowing write by the clinician; lifting it would widen his own access, so the patient does (SPEC §5).
    const written = await h.request('Consent', { token, method: 'POST', body: deny });
    assert.equal(written.status, 201, written.text);
    assert.equal((await h.request('Observation/o2', { token })).status, 404);
    const own = await h.token({ sub: 'pt-p1', client_id: 'patient-app', patient: 'p1', fhirUser: 'Patient/p1', scope: 'patient/*.rs patient/Consent.d' });
    // The new consent withholds itself from its writer too: only Location names it.
    const id = /Consent\/([^/]+)\/_history/.exec(written.headers.get('location') ?? '')?.[1];
    const removed = await h.request(`Consent/${id}`, { token: own, method: 'DELETE' });
    assert.ok(removed.status < 300, removed.text);
    assert.equal((await h.request('Observation/o2', { token })).status, 200);
  });

  test('operations the policy does not list are refused', async () => {
    const r = await h.request('Observation/$lastn?patient=p1', { token: await h.token(drA) });
    assert.equal(r.status, 403);
  });
});
