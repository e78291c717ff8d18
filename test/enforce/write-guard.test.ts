// Issue 17, writes (SPEC §5 "Policy is not data", updates/deletes): each attack found by review beside the
// legitimate write that must keep working, end to end through the gateway with real tokens.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Bundle, Consent, Flag, Group, Observation, Resource } from '@medplum/fhirtypes';
import { actor, consent, legalRestriction, harmFlag, TPO } from '../decide/fixtures.ts';
import { cast, content, obs, patient } from '../conformance/support.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';

const P = 'p1'; // fixtures' patient: Dr A is the GP; Dr Bob is refused by P's consent
const OTHER = 'p2';
const DENY_ALL = 'p9';
const PLAIN = 'p3'; // no consent: implicit all-normal, so R-labelled data is withheld

const refusesBob = consent('c-p1-refuses-bob', { type: 'permit', purpose: TPO, provision: [{ type: 'deny', actor: [actor('Practitioner/bob')] }] }, { dateTime: '2024-01-01' });
const courtOrder = legalRestriction('lr-p1', { type: 'deny', actor: [actor('RelatedPerson/guardian')] });
const harmByA = harmFlag('h-p1', { author: { reference: 'Practitioner/dr-a' } }, 'harm-life-safety', ['DiagnosticReport/dr-p1']);
const cardio: Group = { resourceType: 'Group', id: 'cardio', type: 'practitioner', actual: true, member: [{ entity: { reference: 'Practitioner/dr-a' } }] };
// P2 permits only the cardiology group (root deny, nested permit for the Group).
const permitsCardio = consent('c-p2-cardio', { type: 'deny', provision: [{ type: 'permit', actor: [actor('Group/cardio')], purpose: TPO }] }, { patient: { reference: `Patient/${OTHER}` } });
const denyAll = consent('c-p9-deny', { type: 'deny' }, { patient: { reference: `Patient/${DENY_ALL}` } });
// P4 refuses Bob only Observations: he may read the Consent itself, so only the decision comparison stops him.
const P4 = 'p4';
const refusesBobObservations = consent('c-p4', { type: 'permit', purpose: TPO, provision: [{ type: 'deny', actor: [actor('Practitioner/bob')], class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }] }] }, { patient: { reference: `Patient/${P4}` } });

// P5 refuses Bob only one code; the coded record sits past the first page of the patient's record.
const P5 = 'p5';
const HIV = { system: 'http://loinc.org', code: '75622-1' };
const refusesBobHiv = consent('c-p5', { type: 'permit', purpose: TPO, provision: [{ type: 'deny', actor: [actor('Practitioner/bob')], code: [{ coding: [HIV] }] }] }, { patient: { reference: `Patient/${P5}` } });
const p5Record: Resource[] = [patient(P5), refusesBobHiv, ...Array.from({ length: 120 }, (_, i) => obs(`o-p5-${i}`, P5)), obs('o-p5-hiv', P5, [], { code: { coding: [HIV] } })];

const resources: Resource[] = [
  ...p5Record,
  ...cast(P),
  { resourceType: 'Practitioner', id: 'dr-c' },
  cardio,
  patient(P),
  patient(OTHER),
  patient(DENY_ALL),
  refusesBob,
  courtOrder,
  harmByA,
  permitsCardio,
  denyAll,
  { resourceType: 'DiagnosticReport', id: 'dr-p1', status: 'final', code: { text: 'report' }, subject: { reference: `Patient/${P}` }, conclusion: content('dr-p1') } as Resource,
  obs('o-p1', P),
  patient(PLAIN),
  obs('o-p3', PLAIN),
  obs('o-p3-r', PLAIN, [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }]),
  obs('o-p2', OTHER),
  obs('o-p9', DENY_ALL),
  patient(P4),
  refusesBobObservations,
  obs('o-p4', P4),
];

let h: Harness;
const token = (sub: string, fhirUser: string, scope: string, purpose = 'TREAT') => h.token({ sub, client_id: `${sub}-app`, fhirUser, scope, extensions: pou(purpose) });
const bob = (extra = '') => token('bob', 'Practitioner/bob', `user/*.cruds ${extra}`.trim());
const drA = (extra = '') => token('dr-a', 'Practitioner/dr-a', `user/*.rs ${extra}`.trim());
const ptApp = (id: string, scope = 'patient/*.cruds') => h.token({ sub: `pt-${id}`, client_id: 'patient-app', patient: id, fhirUser: `Patient/${id}`, scope });
const json = (method: string, body: unknown) => ({ method, body, headers: { 'content-type': 'application/fhir+json' } });
const stored = async <T extends Resource>(ref: string): Promise<T | undefined> => {
  const res = await fetch(`${h.upstream.url}/${ref}`);
  return res.status === 200 ? ((await res.json()) as T) : undefined;
};
const searchIds = async (t: string, query: string) => ((await h.request(`Observation?${query}`, { token: t })).body as Bundle).entry?.map((e) => e.resource?.id) ?? [];

before(async () => {
  h = await startHarness({ resources });
});
after(async () => h?.close());

describe('issue 17 write findings: attack refused, legitimate write works', () => {
  test('8: a refused clinician cannot write himself access (new Consent, wildcard or explicit scope, transaction)', async () => {
    const permitsBob = consent('c-p1-permits-bob', { type: 'permit', purpose: TPO, actor: [actor('Practitioner/bob')] }, { dateTime: '2099-01-01' });
    const { id: _id, ...newer } = permitsBob;
    assert.deepEqual(await searchIds(await bob(), `patient=${P}`), [], 'the consent refuses Dr Bob');
    assert.equal((await h.request('Consent', { token: await bob(), ...json('POST', newer) })).status, 403, 'a wildcard scope does not cover policy');
    assert.equal((await h.request('Consent', { token: await bob('user/Consent.cu'), ...json('POST', newer) })).status, 403, 'an explicit scope does not let him widen his own access');
    const tx: Bundle = { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'POST', url: 'Consent' }, resource: newer }] };
    assert.equal((await h.request('', { token: await bob('user/Consent.cu'), ...json('POST', tx) })).status, 403, 'nor inside a transaction');
    for (const method of ['PUT', 'DELETE']) {
      const res = await h.request(`Consent/${refusesBob.id}`, { token: await bob('user/Consent.cud'), ...json(method, method === 'PUT' ? { ...refusesBob, status: 'inactive' } : undefined) });
      assert.ok(res.status === 403 || res.status === 404, `${method} of the consent that refuses him: ${res.status}`);
    }
    const patch = await h.request(`Consent/${refusesBob.id}`, { token: await bob('user/Consent.u'), method: 'PATCH', body: JSON.stringify([{ op: 'replace', path: '/status', value: 'inactive' }]), headers: { 'content-type': 'application/json-patch+json' } });
    assert.ok(patch.status === 403 || patch.status === 404, `PATCH: ${patch.status}`);
    assert.equal((await stored<Consent>(`Consent/${refusesBob.id}`))?.status, 'active');
    assert.deepEqual(await searchIds(await bob(), `patient=${P}`), [], 'still refused');
    // Control: Dr A, with a scope naming Consent, adds a narrowing consent; it applies at once.
    const narrowing = consent('x', { type: 'deny', actor: [actor('Practitioner/dr-c')] });
    const { id: _x, ...narrow } = narrowing;
    const written = await h.request('Consent', { token: await drA('user/Consent.c'), ...json('POST', narrow) });
    assert.equal(written.status, 201, written.text);
  });

  test('8: a consent he may read but that refuses him data is not his to lift (after vs now, by decide/)', async () => {
    const t = await bob('user/Consent.cud');
    assert.equal((await h.request(`Consent/${refusesBobObservations.id}`, { token: t })).status, 200, 'he sees the consent');
    assert.deepEqual(await searchIds(t, `patient=${P4}`), []);
    const lifted = await h.request(`Consent/${refusesBobObservations.id}`, { token: t, ...json('PUT', { ...refusesBobObservations, status: 'inactive' }) });
    assert.equal(lifted.status, 403, lifted.text);
    assert.equal((await h.request(`Consent/${refusesBobObservations.id}`, { token: t, method: 'DELETE' })).status, 403);
    const reworded = { ...refusesBobObservations, provision: { ...refusesBobObservations.provision, provision: [] } };
    assert.equal((await h.request(`Consent/${refusesBobObservations.id}`, { token: t, ...json('PUT', reworded) })).status, 403, 'dropping the nested deny');
    assert.deepEqual(await searchIds(t, `patient=${P4}`), [], 'still refused');
    // Control: a change that does not widen his access (a further deny for someone else) is his to make.
    const narrower = { ...refusesBobObservations, provision: { ...refusesBobObservations.provision, provision: [...(refusesBobObservations.provision?.provision ?? []), { type: 'deny' as const, actor: [actor('Practitioner/dr-c')] }] } };
    const ok = await h.request(`Consent/${refusesBobObservations.id}`, { token: t, ...json('PUT', narrower) });
    assert.equal(ok.status, 200, ok.text);
  });

  test('8: lifting a deny on one code is caught though the coded record is not among the probed records', async () => {
    const t = await bob('user/Consent.u');
    const ids = async () => ((await h.request(`Observation?patient=${P5}&code=${HIV.system}|${HIV.code}`, { token: t })).body as Bundle).entry?.length ?? 0;
    assert.equal(await ids(), 0);
    const lifted = await h.request(`Consent/${refusesBobHiv.id}`, { token: t, ...json('PUT', { ...refusesBobHiv, provision: { ...refusesBobHiv.provision, provision: [] } }) });
    assert.equal(lifted.status, 403, lifted.text);
    assert.equal(await ids(), 0);
  });

  test('8: adding himself to a Group a consent permits, or to a CareTeam, is refused; a member adding a colleague is not', async () => {
    assert.deepEqual(await searchIds(await bob(), `patient=${OTHER}`), []);
    const withBob: Group = { ...cardio, member: [...(cardio.member ?? []), { entity: { reference: 'Practitioner/bob' } }] };
    assert.equal((await h.request('Group/cardio', { token: await bob('user/Group.u'), ...json('PUT', withBob) })).status, 403);
    assert.equal((await h.request('Group/cardio', { token: await bob(), ...json('PUT', withBob) })).status, 403, 'wildcard');
    assert.deepEqual(await searchIds(await bob(), `patient=${OTHER}`), [], 'still refused');
    const withC: Group = { ...cardio, member: [...(cardio.member ?? []), { entity: { reference: 'Practitioner/dr-c' } }] };
    const ok = await h.request('Group/cardio', { token: await drA('user/Group.u'), ...json('PUT', withC) });
    assert.equal(ok.status, 200, ok.text);
    const removeSelf: Group = { ...cardio, member: [{ entity: { reference: 'Practitioner/dr-c' } }] };
    assert.equal((await h.request('Group/cardio', { token: await drA('user/Group.u'), ...json('PUT', removeSelf) })).status, 403, 'her own membership is not hers to change');
    const team = (member: string) => ({ resourceType: 'CareTeam', status: 'active', subject: { reference: `Patient/${OTHER}` }, participant: [{ member: { reference: member } }] });
    assert.equal((await h.request('CareTeam', { token: await bob('user/CareTeam.c'), ...json('POST', team('Practitioner/bob')) })).status, 403, 'a care team naming himself');
    assert.equal((await h.request('CareTeam', { token: await drA('user/CareTeam.c'), ...json('POST', team('Practitioner/dr-c')) })).status, 201, 'a care team naming a colleague');
  });

  test('9: the patient app cannot delete a harm Flag or lift a court restriction; it writes its own Consent', async () => {
    const pt = await ptApp(P);
    const del = await h.request(`Flag/${harmByA.id}`, { token: pt, method: 'DELETE' });
    assert.ok(del.status === 403 || del.status === 404, `delete harm flag: ${del.status}`);
    const lift = await h.request(`Consent/${courtOrder.id}`, { token: await ptApp(P, 'patient/*.cruds patient/Consent.u'), ...json('PUT', { ...courtOrder, status: 'inactive' }) });
    assert.ok(lift.status === 403 || lift.status === 404, `lift court order: ${lift.status}`);
    const asUser = await h.token({ sub: `pt-${P}`, client_id: 'portal', fhirUser: `Patient/${P}`, scope: 'user/*.cruds user/Consent.cu', extensions: pou('PATRQT') });
    const liftAsUser = await h.request(`Consent/${courtOrder.id}`, { token: asUser, ...json('PUT', { ...courtOrder, status: 'inactive' }) });
    assert.ok(liftAsUser.status === 403 || liftAsUser.status === 404, `lift court order with a user/ token: ${liftAsUser.status}`);
    const { id: _lr, ...ownOrder } = courtOrder;
    assert.equal((await h.request('Consent', { token: asUser, ...json('POST', ownOrder) })).status, 403, 'nor write a legal restriction, whatever the token kind');
    assert.equal((await stored<Flag>(`Flag/${harmByA.id}`))?.status, 'active');
    assert.equal((await stored<Consent>(`Consent/${courtOrder.id}`))?.status, 'active');
    const { id: _id, ...own } = consent('x', { type: 'deny', actor: [actor('Organization/research')] });
    assert.equal((await h.request('Consent', { token: await ptApp(P, 'patient/*.rs patient/Consent.c'), ...json('POST', own) })).status, 201, 'her own consent');
    const foreign = { ...own, patient: { reference: `Patient/${OTHER}` } };
    assert.equal((await h.request('Consent', { token: await ptApp(P, 'patient/*.rs patient/Consent.c'), ...json('POST', foreign) })).status, 403, 'never another patient’s');
  });

  test('10: a harm Flag is authored by its writer and ended only by its author', async () => {
    const { id: _id, ...forged } = harmFlag('x', { author: { reference: 'Practitioner/dr-a' } });
    assert.equal((await h.request('Flag', { token: await bob('user/Flag.c'), ...json('POST', forged) })).status, 403, 'Dr Bob writes a Flag "by Dr A"');
    const namesake = { ...forged, author: { reference: 'https://other.example/fhir/Practitioner/dr-a' } };
    assert.equal((await h.request('Flag', { token: await drA('user/Flag.c'), ...json('POST', namesake) })).status, 403, 'a namesake on another server is not the writer');
    const del = await h.request(`Flag/${harmByA.id}`, { token: await token('bob', 'Practitioner/bob', 'user/*.rs user/Flag.d'), method: 'DELETE' });
    assert.ok(del.status === 403 || del.status === 404, `Dr Bob deletes Dr A's flag: ${del.status}`);
    assert.equal((await stored<Flag>(`Flag/${harmByA.id}`))?.status, 'active');
    const mine = await h.request('Flag', { token: await drA('user/Flag.cd'), ...json('POST', forged) });
    assert.equal(mine.status, 201, mine.text);
    const id = /Flag\/([^/]+)\//.exec(mine.headers.get('location') ?? '')?.[1];
    assert.equal((await h.request(`Flag/${id}`, { token: await drA('user/Flag.cd'), method: 'DELETE' })).status < 300, true, 'its author ends it');
  });

  test('13: a withheld resource is neither deleted nor overwritten, and answers exactly as a missing one', async () => {
    const t = await drA('user/Observation.cud');
    for (const [method, body] of [['DELETE', undefined], ['PUT', true]] as const) {
      const withheld = await h.request('Observation/o-p9', { token: t, ...json(method, body && { ...obs('o-p9', DENY_ALL), valueString: 'overwritten' }), headers: { 'content-type': 'application/fhir+json', 'if-match': 'W/"1"' } });
      const missing = await h.request('Observation/no-such', { token: t, ...json(method, body && { ...obs('no-such', DENY_ALL), valueString: 'overwritten' }), headers: { 'content-type': 'application/fhir+json', 'if-match': 'W/"1"' } });
      assert.equal(withheld.status, 404, `${method} withheld`);
      assert.equal(withheld.text, missing.text);
      for (const name of ['etag', 'location']) assert.equal(withheld.headers.get(name), missing.headers.get(name), name);
    }
    const moved = await h.request('Observation/o-p9', { token: t, ...json('PUT', obs('o-p9', OTHER)) });
    assert.equal(moved.status, 404, 'a deny-all patient’s observation cannot be re-attributed');
    assert.equal((await stored<Observation>('Observation/o-p9'))?.subject?.reference, `Patient/${DENY_ALL}`);
    const r = await h.request('Observation/o-p3-r', { token: t, method: 'DELETE' });
    assert.equal(r.status, 404, 'an R-labelled observation is concealed from a delete');
    assert.ok(await stored('Observation/o-p3-r'));
    // Control: a visible observation is updated, with its new version's ETag.
    const ok = await h.request('Observation/o-p1', { token: t, ...json('PUT', { ...obs('o-p1', P), valueString: 'corrected' }) });
    assert.equal(ok.status, 200, ok.text);
    assert.match(ok.headers.get('etag') ?? '', /^W\/"/);
  });

  test('14: a patient app cannot PATCH its data into another patient’s record; it may patch its own', async () => {
    const t = await ptApp(PLAIN);
    const patch = (ops: unknown[]) => h.request('Observation/o-p3', { token: t, method: 'PATCH', body: JSON.stringify(ops), headers: { 'content-type': 'application/json-patch+json' } });
    assert.equal((await patch([{ op: 'replace', path: '/subject/reference', value: `Patient/${P}` }])).status, 403);
    assert.equal((await stored<Observation>('Observation/o-p3'))?.subject?.reference, `Patient/${PLAIN}`);
    const ok = await patch([{ op: 'replace', path: '/valueString', value: 'own note' }]);
    assert.equal(ok.status, 200, ok.text);
    assert.equal((await stored<Observation>('Observation/o-p3'))?.valueString, 'own note');
  });

  test('FHIRPath Patch (a Parameters body) meets the same guards as JSON Patch: moved to another patient 403, withheld 404 as missing, its own applied', async () => {
    const t = await ptApp(PLAIN);
    const op = (type: string, path: string, value?: Record<string, unknown>, name?: string) => ({
      name: 'operation',
      part: [{ name: 'type', valueCode: type }, { name: 'path', valueString: path }, ...(name ? [{ name: 'name', valueString: name }] : []), ...(value ? [{ name: 'value', ...value }] : [])],
    });
    const patch = (id: string, ...operation: unknown[]) => h.request(`Observation/${id}`, { token: t, ...json('PATCH', { resourceType: 'Parameters', parameter: operation }) });
    assert.equal((await patch('o-p3', op('replace', 'Observation.subject', { valueReference: { reference: `Patient/${P}` } }))).status, 403);
    assert.equal((await stored<Observation>('Observation/o-p3'))?.subject?.reference, `Patient/${PLAIN}`);
    const withheld = await patch('o-p3-r', op('replace', 'Observation.valueString', { valueString: 'x' }));
    const missing = await patch('no-such-obs', op('replace', 'Observation.valueString', { valueString: 'x' }));
    assert.equal(withheld.status, 404, 'an R-labelled record is concealed from a patch as from a read');
    assert.equal(withheld.text, missing.text);
    const failed = await patch('o-p3', op('insert', 'Observation.note', { valueAnnotation: { text: 'x' } }));
    assert.equal(failed.status, 400, 'an insert without its index is refused');
    assert.doesNotMatch(failed.text, /own note|o-p3/, 'the refusal quotes nothing stored');
    const ok = await patch('o-p3', op('replace', 'Observation.valueString', { valueString: 'fhirpath note' }), op('add', 'Observation', { valueAnnotation: { text: 'added by FHIRPath Patch' } }, 'note'));
    assert.equal(ok.status, 200, ok.text);
    const after = await stored<Observation>('Observation/o-p3');
    assert.equal(after?.valueString, 'fhirpath note');
    assert.deepEqual(after?.note?.map((n) => n.text), ['added by FHIRPath Patch']);
    // In a batch a PATCH entry carries the Parameters as its resource (FHIR R4 http.html#transaction).
    const batch: Bundle = { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'PATCH', url: 'Observation/o-p3' }, resource: { resourceType: 'Parameters', parameter: [op('replace', 'Observation.valueString', { valueString: 'in a batch' })] } as Resource }] };
    const answered = await h.request('', { token: t, ...json('POST', batch) });
    assert.equal(answered.status, 200, answered.text);
    assert.match((answered.body as Bundle).entry?.[0]?.response?.status ?? '', /^200/);
    assert.equal((await stored<Observation>('Observation/o-p3'))?.valueString, 'in a batch');
  });

  test('14: a patient app cannot write a record naming another patient by identifier or on another server; its own passes', async () => {
    const t = await ptApp(PLAIN);
    const create = (focus?: unknown) => h.request('Observation', { token: t, ...json('POST', { resourceType: 'Observation', status: 'final', code: { text: 'note' }, subject: { reference: `Patient/${PLAIN}` }, ...(focus ? { focus: [focus] } : {}) }) });
    // Its own patient as subject, and a second patient the confinement cannot check beside it.
    assert.equal((await create({ type: 'Patient', identifier: { system: 'urn:mrn', value: 'someone-else' } })).status, 403);
    assert.equal((await create({ reference: `https://other.example/fhir/Patient/${OTHER}` })).status, 403);
    const own = await create();
    assert.equal(own.status, 201, own.text);
  });

  test('12: conditional writes in any spelling are refused, inside a transaction too; system/ clients may', async () => {
    const t = await drA('user/Observation.cud');
    const tx = (entry: Bundle['entry']) => h.request('', { token: t, ...json('POST', { resourceType: 'Bundle', type: 'transaction', entry }) });
    const attempts: Bundle['entry'][] = [
      [{ request: { method: 'DELETE', url: `Observation/Observation?patient=Patient/${DENY_ALL}` } }],
      [{ request: { method: 'DELETE', url: `Observation?patient=Patient/${DENY_ALL}` } }],
      [{ request: { method: 'PUT', url: 'Observation?_id=o-p9' }, resource: obs('o-p9', P) }],
      [{ request: { method: 'POST', url: 'Observation', ifNoneExist: `patient=Patient/${DENY_ALL}` }, resource: obs('x', P) }],
    ];
    for (const entry of attempts) assert.equal((await tx(entry)).status, 403, JSON.stringify(entry));
    assert.ok(await stored('Observation/o-p9'));
    assert.equal((await h.request(`Observation?_id=o-p9`, { token: t, ...json('PUT', obs('o-p9', P)) })).status, 403);
    const sys = await h.token({ sub: 'loader', client_id: 'loader', scope: 'system/Observation.crus', extensions: pou('HOPERAT') });
    const { id: _id, ...fresh } = obs('x', P);
    const loaded = await h.request('', { token: sys, ...json('POST', { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'POST', url: 'Observation', ifNoneExist: 'identifier=urn:x|loader-1' }, resource: { ...fresh, identifier: [{ system: 'urn:x', value: 'loader-1' }] } }] }) });
    assert.equal(loaded.status, 200, loaded.text);
    assert.equal(loaded.body.entry[0].response.status.slice(0, 3), '201');
  });

  test('policy writes in a transaction invalidate the cached policy at once', async () => {
    const t = await drA('user/Consent.c');
    assert.ok((await searchIds(t, `patient=${P}`)).includes('o-p1'));
    const { id: _id, ...selfDeny } = consent('x', { type: 'deny', actor: [actor('Practitioner/dr-a')] });
    const res = await h.request('', { token: t, ...json('POST', { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'POST', url: 'Consent' }, resource: selfDeny }] }) });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(await searchIds(t, `patient=${P}`), [], 'the new consent applies on the next request');
  });
});
