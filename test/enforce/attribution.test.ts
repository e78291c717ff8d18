// Issue 17 items 2–7 and issue 18's foreign actor, black-box through the gateway: each attack beside the
// control that shows the legitimate path still works (SPEC §3, §4.1, §4.2, §5).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { CareTeam, Resource } from '@medplum/fhirtypes';
import { DG_CODES } from '../../src/fhir/systems.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';
import { actor, cast, conf, consent, content, daysFromNow, idsOf, obs, patient, purpose, type Res } from '../conformance/support.ts';

const FOREIGN = 'https://other.example/fhir';
const legal = { category: [{ coding: [{ system: DG_CODES, code: 'legal-restriction' }] }], sourceReference: { reference: 'DocumentReference/court-order' } };
const doc = (id: string, patientId: string, binary: string, labels: Resource['meta'] = undefined): Resource =>
  ({ resourceType: 'DocumentReference', id, status: 'current', subject: { reference: `Patient/${patientId}` }, content: [{ attachment: { url: `Binary/${binary}` } }], ...(labels ? { meta: labels } : {}) }) as Resource;
const binary = (id: string, extra: Record<string, unknown> = {}): Resource =>
  ({ resourceType: 'Binary', id, contentType: 'text/plain', data: Buffer.from(content(id)).toString('base64'), ...extra }) as Resource;
const byIdentifier = (id: string, value: string): Resource => ({ ...obs(id, 'x'), subject: { identifier: { system: 'urn:mrn', value } } }) as Resource;

const resources: Resource[] = [
  ...cast('p1'),
  patient('p1'),
  patient('p2'),
  { resourceType: 'Patient', id: 'p3', identifier: [{ system: 'urn:mrn', value: 'mrn-3' }] },
  // Bob is refused by p1's and p3's consents.
  consent('c-p1-no-bob', 'p1', { type: 'deny', actor: [actor('Practitioner/bob')] }),
  consent('c-p3-no-bob', 'p3', { type: 'deny', actor: [actor('Practitioner/bob')] }),
  obs('o-p1', 'p1'),
  // Item 3 / issue 18: p4 permits only Dr A of another server; p5 only the local Dr A; p6 only the local hospital.
  patient('p4'),
  consent('c-p4', 'p4', { type: 'permit', actor: [actor(`${FOREIGN}/Practitioner/dr-a`)] }),
  obs('o-p4', 'p4'),
  patient('p5'),
  consent('c-p5', 'p5', { type: 'permit', actor: [actor('Practitioner/dr-a')] }),
  obs('o-p5', 'p5'),
  patient('p6'),
  consent('c-p6', 'p6', { type: 'permit', actor: [actor('Organization/hospital')] }),
  obs('o-p6', 'p6'),
  // Item 2: a court order with an emergency exception.
  patient('p7'),
  consent('lr-p7', 'p7', { type: 'deny', provision: [{ type: 'permit', purpose: purpose('ETREAT') }] }, legal),
  obs('o-p7', 'p7'),
  // Item 4: p8 permits the hospital, two care teams and two groups; only memberships in force count.
  patient('p8'),
  consent('c-p8', 'p8', { type: 'permit', actor: ['Organization/hospital', 'CareTeam/team-ended', 'CareTeam/team-ok', 'CareTeam/team-garbled', 'Group/definitional', 'Group/real'].map(actor) }),
  obs('o-p8', 'p8'),
  { resourceType: 'PractitionerRole', id: 'role-ok', active: true, practitioner: { reference: 'Practitioner/dr-y' }, organization: { reference: 'Organization/hospital' } },
  { resourceType: 'PractitionerRole', id: 'role-inactive', active: false, practitioner: { reference: 'Practitioner/dr-x' }, organization: { reference: 'Organization/hospital' } },
  { resourceType: 'PractitionerRole', id: 'role-expired', active: true, period: { end: daysFromNow(-30) }, practitioner: { reference: 'Practitioner/dr-x' }, organization: { reference: 'Organization/hospital' } },
  { resourceType: 'CareTeam', id: 'team-ended', status: 'active', period: { end: daysFromNow(-30) }, participant: [{ member: { reference: 'Practitioner/dr-z' } }] },
  { resourceType: 'CareTeam', id: 'team-garbled', status: 'active', participant: [{ member: { reference: 'Practitioner/dr-t' }, period: { end: 'soon' } }] },
  { resourceType: 'CareTeam', id: 'team-ok', status: 'active', period: { start: daysFromNow(-30) }, participant: [{ member: { reference: 'Practitioner/dr-w' } }] },
  { resourceType: 'Group', id: 'definitional', type: 'practitioner', actual: false, member: [{ entity: { reference: 'Practitioner/dr-v' } }] },
  { resourceType: 'Group', id: 'real', type: 'practitioner', actual: true, member: [{ entity: { reference: 'Practitioner/dr-u' } }] },
  // Found beside item 4: a representative whose relationship has ended.
  patient('p10'),
  consent('c-p10', 'p10', { type: 'permit', actor: [actor('RelatedPerson/rp-ok'), actor('RelatedPerson/rp-ended')] }),
  obs('o-p10', 'p10'),
  { resourceType: 'RelatedPerson', id: 'rp-ok', active: true, patient: { reference: 'Patient/p10' } },
  { resourceType: 'RelatedPerson', id: 'rp-ended', active: true, period: { end: daysFromNow(-1) }, patient: { reference: 'Patient/p10' } },
  // Item 5: a Binary without securityContext behind a withheld (R) document; one with a context.
  doc('doc-r', 'p1', 'bin-free', { security: [conf('R')] }),
  binary('bin-free'),
  doc('doc-ok', 'p1', 'bin-ctx'),
  binary('bin-ctx', { securityContext: { reference: 'DocumentReference/doc-ok' } }),
  // Item 6: data about p1 outside the R4 Patient compartment.
  { resourceType: 'Device', id: 'dev-p1', patient: { reference: 'Patient/p1' }, type: { text: content('dev-p1') } } as Resource,
  { resourceType: 'Device', id: 'dev-none', type: { text: 'shared pump' } } as Resource,
  // Item 7: a patient named only by identifier — one that resolves to p3, one that resolves to nobody.
  byIdentifier('o-mrn3', 'mrn-3'),
  byIdentifier('o-mrn-nobody', 'mrn-unknown'),
];

let h: Harness;
before(async () => {
  h = await startHarness({ resources });
  // A Consent naming the local Dr A by the upstream's own absolute URL (known only once it runs).
  for (const r of [patient('p9'), consent('c-p9', 'p9', { type: 'permit', actor: [actor(`${h.upstream.url}/Practitioner/dr-a`)] }), obs('o-p9', 'p9')]) await h.put(r);
});
after(async () => {
  await h.close();
});

const clinician = (fhirUser: string, extra: Record<string, unknown> = {}) =>
  h.token({ sub: fhirUser, client_id: 'ehr', fhirUser, scope: 'user/*.rs', extensions: pou('TREAT'), ...extra });
const patientApp = (id: string) => h.token({ sub: `pt-${id}`, client_id: 'patient-app', patient: id, fhirUser: `Patient/${id}`, scope: 'patient/*.rs' });
const system = () => h.token({ sub: 'svc', client_id: 'backend', scope: 'system/*.rs', extensions: pou('HOPERAT') });
const get = async (path: string, token: string): Promise<Res> => h.request(path, { token });

function released(res: Res, marker: string): void {
  assert.equal(res.status, 200, `expected 200, got ${res.status}: ${res.text.slice(0, 200)}`);
  assert.ok(res.text.includes(marker), `${marker} is not in the response`);
}
function withheld(res: Res, marker: string, status = 404): void {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text.slice(0, 200)}`);
  assert.ok(!res.text.includes(marker), `${marker} leaked`);
}

describe('item 3 / issue 18: an actor on another server is never its local namesake', () => {
  test('attack: a foreign fhirUser does not get what the consent grants the local Dr A', async () => {
    withheld(await get('Observation/o-p5', await clinician(`${FOREIGN}/Practitioner/dr-a`)), content('o-p5'));
    assert.deepEqual(idsOf((await get('Observation?patient=p5', await clinician(`${FOREIGN}/Practitioner/dr-a`))).body), []);
  });
  test('control: the local Dr A, relative or absolute on the upstream’s or the gateway’s base, is granted', async () => {
    for (const fhirUser of ['Practitioner/dr-a', `${h.upstream.url}/Practitioner/dr-a`, `${h.base}/Practitioner/dr-a`]) {
      released(await get('Observation/o-p5', await clinician(fhirUser)), content('o-p5'));
    }
  });
  test('attack: a consent permitting Dr A of another server does not grant the local Dr A', async () => {
    withheld(await get('Observation/o-p4', await clinician('Practitioner/dr-a')), content('o-p4'));
  });
  test('control: that consent grants Dr A of that server', async () => {
    released(await get('Observation/o-p4', await clinician(`${FOREIGN}/Practitioner/dr-a`)), content('o-p4'));
  });
  test('control: a Consent naming Dr A by the upstream’s absolute URL grants the local Dr A, and only him', async () => {
    released(await get('Observation/o-p9', await clinician('Practitioner/dr-a')), content('o-p9'));
    withheld(await get('Observation/o-p9', await clinician(`${FOREIGN}/Practitioner/dr-a`)), content('o-p9'));
  });
  test('attack: an organization claim on another server is not the local hospital', async () => {
    withheld(await get('Observation/o-p6', await clinician('Practitioner/bob', { organization: `${FOREIGN}/Organization/hospital` })), content('o-p6'));
  });
  test('control: the local hospital claim is granted', async () => {
    released(await get('Observation/o-p6', await clinician('Practitioner/bob', { organization: `${h.upstream.url}/Organization/hospital` })), content('o-p6'));
  });
});

describe('item 2: a legal restriction’s ETREAT exception needs the btg scope', () => {
  test('attack: a token that merely states ETREAT stays restricted', async () => {
    withheld(await get('Observation/o-p7', await clinician('Practitioner/dr-a', { extensions: pou('ETREAT') })), content('o-p7'));
    assert.deepEqual(idsOf((await get('Observation?patient=p7', await clinician('Practitioner/dr-a', { extensions: pou('ETREAT') }))).body), []);
  });
  test('control: ETREAT with the btg scope lifts it', async () => {
    const token = await h.token({ sub: 'dr-a', client_id: 'ehr', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs btg', extensions: pou('ETREAT') });
    released(await get('Observation/o-p7', token), content('o-p7'));
  });
});

describe('item 4: only memberships in force grant', () => {
  const rows: { name: string; fhirUser: string; granted: boolean }[] = [
    { name: 'control: an active PractitionerRole grants its organization', fhirUser: 'PractitionerRole/role-ok', granted: true },
    { name: 'attack: an inactive PractitionerRole grants nothing', fhirUser: 'PractitionerRole/role-inactive', granted: false },
    { name: 'attack: an expired PractitionerRole grants nothing', fhirUser: 'PractitionerRole/role-expired', granted: false },
    { name: 'control: a current CareTeam grants its member', fhirUser: 'Practitioner/dr-w', granted: true },
    { name: 'attack: a CareTeam whose period has ended grants nothing', fhirUser: 'Practitioner/dr-z', granted: false },
    { name: 'attack: a membership whose period cannot be read grants nothing', fhirUser: 'Practitioner/dr-t', granted: false },
    { name: 'control: an actual Group grants its member', fhirUser: 'Practitioner/dr-u', granted: true },
    { name: 'attack: a Group with actual:false grants nothing', fhirUser: 'Practitioner/dr-v', granted: false },
  ];
  for (const row of rows) {
    test(row.name, async () => {
      const res = await get('Observation/o-p8', await clinician(row.fhirUser));
      if (row.granted) released(res, content('o-p8'));
      else withheld(res, content('o-p8'));
    });
  }
});

describe('a RelatedPerson whose relationship has ended represents no one (SPEC §4.1, found beside item 4)', () => {
  test('attack: the ended representative is not the RelatedPerson the consent names', async () => {
    withheld(await get('Observation/o-p10', await clinician('RelatedPerson/rp-ended', { extensions: pou('FAMRQT') })), content('o-p10'));
  });
  test('control: a current representative is', async () => {
    released(await get('Observation/o-p10', await clinician('RelatedPerson/rp-ok', { extensions: pou('FAMRQT') })), content('o-p10'));
  });
});

describe('item 5: a Binary without securityContext only to system/ clients', () => {
  test('attack: a clinician and the patient’s app cannot read it, nor list Binary by type', async () => {
    for (const token of [await clinician('Practitioner/dr-a'), await patientApp('p1')]) {
      withheld(await get('Binary/bin-free', token), Buffer.from(content('bin-free')).toString('base64'));
      withheld(await get('Binary', token), 'bin-free', 403);
      withheld(await get('Binary?_id=bin-free', token), 'bin-free', 403);
    }
  });
  test('control: a system/ client reads and lists it; a Binary with a released context still reads', async () => {
    const svc = await system();
    released(await get('Binary/bin-free', svc), Buffer.from(content('bin-free')).toString('base64'));
    assert.ok(idsOf((await get('Binary', svc)).body).includes('bin-free'));
    released(await get('Binary/bin-ctx', await clinician('Practitioner/dr-a')), Buffer.from(content('bin-ctx')).toString('base64'));
  });
});

describe('item 6: data about a patient outside the R4 compartment is that patient’s', () => {
  test('attack: another patient’s app cannot read or list p1’s Device', async () => {
    const p2 = await patientApp('p2');
    withheld(await get('Device/dev-p1', p2), content('dev-p1'));
    const listed = await get('Device', p2);
    assert.equal(listed.status, 200);
    assert.ok(!listed.text.includes(content('dev-p1')));
    withheld(await get('Device?patient=Patient/p1', p2), content('dev-p1'), 403);
  });
  test('attack: a clinician p1’s consent refuses cannot read or search it', async () => {
    const bob = await clinician('Practitioner/bob');
    withheld(await get('Device/dev-p1', bob), content('dev-p1'));
    const listed = await get('Device?patient=Patient/p1', bob);
    assert.equal(listed.status, 200);
    assert.ok(!listed.text.includes(content('dev-p1')));
  });
  test('control: p1’s app and Dr A read it; a Device about no patient stays readable', async () => {
    released(await get('Device/dev-p1', await patientApp('p1')), content('dev-p1'));
    assert.ok((await get('Device?patient=Patient/p1', await patientApp('p1'))).text.includes(content('dev-p1')));
    released(await get('Device/dev-p1', await clinician('Practitioner/dr-a')), content('dev-p1'));
    released(await get('Device/dev-none', await patientApp('p2')), 'shared pump');
  });
});

describe('item 7: a patient named only by identifier is resolved, or the resource is withheld', () => {
  test('attack: the clinician p3’s consent refuses cannot read p3’s data named by MRN', async () => {
    withheld(await get('Observation/o-mrn3', await clinician('Practitioner/bob')), content('o-mrn3'));
  });
  test('control: a clinician p3 permits, and p3’s own app, read it, decided and confined as p3’s', async () => {
    released(await get('Observation/o-mrn3', await clinician('Practitioner/dr-a')), content('o-mrn3'));
    released(await get('Observation/o-mrn3', await patientApp('p3')), content('o-mrn3'));
  });
  test('attack: another patient’s app cannot read p3’s data named by MRN', async () => {
    withheld(await get('Observation/o-mrn3', await patientApp('p2')), content('o-mrn3'));
  });
  test('attack: an identifier that resolves to no patient is withheld, from reads and searches', async () => {
    const drA = await clinician('Practitioner/dr-a');
    withheld(await get('Observation/o-mrn-nobody', drA), content('o-mrn-nobody'));
    const svc = await system();
    withheld(await get('Observation/o-mrn-nobody', svc), content('o-mrn-nobody'));
    const listed = await get('Observation?code=8867-4', svc);
    assert.equal(listed.status, 200);
    assert.ok(listed.text.includes(content('o-mrn3')), 'control: the resolvable one is listed to a system client');
    assert.ok(!listed.text.includes(content('o-mrn-nobody')));
  });
});

test('the planted data is really there (the checks above can fail)', async () => {
  for (const id of ['o-p4', 'o-p5', 'o-p7', 'o-p8', 'o-mrn-nobody']) {
    assert.ok((await h.upstream.repo.readResource('Observation', id)).id === id);
  }
  assert.equal(((await h.upstream.repo.readResource('CareTeam', 'team-garbled')) as CareTeam).participant?.[0].period?.end, 'soon');
});
