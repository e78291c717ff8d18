// Threat model (issue 4 §3, SPEC §5 "leave no trace"): every way a client could learn about withheld data
// indirectly, one named test per vector, end to end through the gateway. docs/threat-model.md lists the
// same vectors with what an attacker tries and what the gateway does.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { EncryptJWT, jwtDecrypt } from 'jose';
import type { Bundle, Observation, Resource } from '@medplum/fhirtypes';
import { startEmbeddedUpstream, type EmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { DS4P_INLINE_LABEL, V3_OBSERVATION_VALUE } from '../../src/fhir/systems.ts';
import { PROCESS_INLINE } from '../decide/fixtures.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';
import {
  assertNoTrace,
  assertSearchset,
  cast,
  conf,
  consent,
  content,
  entriesOf,
  idsOf,
  obs,
  pagedIds,
  patient,
  rawGet,
  TPO,
  type Res,
} from '../conformance/support.ts';

const CURSOR_SECRET = 'threat-model-cursor-secret-0123456789abcdef';
const P = 'pv';
const OTHER = 'pw';
const encounter = (id: string, labels: Resource['meta'] = undefined): Resource => ({ resourceType: 'Encounter', id, status: 'finished', class: { code: 'AMB' }, subject: { reference: `Patient/${P}` }, ...(labels ? { meta: labels } : {}) });
const enc = (id: string) => ({ encounter: { reference: `Encounter/${id}` } });

/** Strings that must never reach Dr A (TREAT, implicit all-normal): withheld ids and planted content. */
// pv-eR is withheld too, but the released pv-n2 refers to it: a reference inside released data is that data.
const WITHHELD_IDS = ['pv-r1'];
const SECRETS = [content('pv-r1'), 'secret-code-77', 'hiddenword', content('pv-hist'), 'contained-secret', content('pv-eR'), content('pw-o1')];

const histV1 = obs('pv-hist', P, [], { valueString: content('pv-hist') });
const histV2: Observation = { ...histV1, meta: { security: [conf('R')] }, valueString: 'now restricted' };

const resources: Resource[] = [
  ...cast(P),
  patient(P),
  patient(OTHER),
  encounter('pv-e1'),
  { ...encounter('pv-eR', { security: [conf('R')] }), serviceType: { text: content('pv-eR') } } as Resource,
  encounter('pv-e-r-only'),
  obs('pv-n1', P, [], enc('pv-e1')),
  obs('pv-n2', P, [], enc('pv-eR')),
  obs('pv-n3', P),
  obs('pv-r1', P, [conf('R')], {
    ...enc('pv-e-r-only'),
    code: { coding: [{ system: 'http://example.org/codes', code: 'secret-code-77' }] },
    text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${content('pv-r1')}</div>` },
  }),
  obs('pv-inline', P, [PROCESS_INLINE], {
    valueString: 'hiddenword',
    _valueString: { extension: [{ url: DS4P_INLINE_LABEL, valueCoding: conf('V') }] },
    note: [{ text: 'routine' }],
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">hiddenword</div>' },
  } as Partial<Observation>),
  obs('pv-cont', P, [], {
    contained: [{ resourceType: 'Observation', id: 'sec', meta: { security: [conf('R')] }, status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${P}` }, valueString: 'contained-secret' }],
    hasMember: [{ reference: '#sec' }],
  }),
  histV1,
  obs('pw-o1', OTHER, [], { valueString: content('pw-o1') }),
  // For the next-link vector: the last entry by _id is withheld.
  patient('pn'),
  obs('pn-a1', 'pn'),
  obs('pn-a2', 'pn'),
  obs('pn-a3', 'pn'),
  obs('pn-z9', 'pn', [conf('R')]),
];
/** What Dr A may see of P's Observations (pv-hist is withheld: its current version is R). */
const RELEASED_OBS = ['pv-cont', 'pv-inline', 'pv-n1', 'pv-n2', 'pv-n3'];

let h: Harness;
let drA: string;
let pt: string;

before(async () => {
  h = await startHarness({ resources, settings: { CURSOR_SECRET } });
  await h.put(histV2);
  drA = await h.token({ sub: 'dr-a', client_id: 'ehr', fhirUser: 'Practitioner/dr-a', scope: 'user/*.cruds', extensions: pou('TREAT') });
  pt = await h.token({ sub: 'pt-pv', client_id: 'patient-app', patient: P, fhirUser: `Patient/${P}`, scope: 'patient/*.rs' });
});
after(async () => {
  await h.close();
});

const get = (path: string, token = drA, headers: Record<string, string> = {}) => h.request(path, { token, headers });

/** Nothing withheld leaves: no withheld id, no planted secret, in any header or the body. */
function assertClean(res: Res | { status: number; text: string }, ids: readonly string[] = WITHHELD_IDS): void {
  if ('headers' in res) assertNoTrace(res, ids);
  for (const s of [...SECRETS, ...('headers' in res ? [] : ids)]) assert.ok(!res.text.includes(s), `"${s}" appears in the response`);
}

function assertRefused(res: Res, status: number, code?: string): void {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text.slice(0, 200)}`);
  assert.equal(res.body?.resourceType, 'OperationOutcome');
  if (code) assert.equal(res.body.issue[0].code, code);
  assertClean(res);
}

const nextOf = (b: Bundle): string | undefined => b.link?.find((l) => l.relation === 'next')?.url;

interface Vector {
  readonly name: string;
  readonly run: () => Promise<void>;
}

const vectors: Vector[] = [
  { name: 'view params: _elements=id cannot strip the labels before the decision', run: async () => {
    for (const elements of ['id', 'id,subject', 'subject,code']) {
      const res = await get(`Observation?patient=${P}&_elements=${elements}`);
      assert.deepEqual(idsOf(assertSearchset(res)), RELEASED_OBS, elements);
      assertClean(res);
    }
  } },
  { name: 'view params: _summary=true|text|data are applied after the decision', run: async () => {
    for (const summary of ['true', 'text', 'data']) {
      const res = await get(`Observation?patient=${P}&_summary=${summary}`);
      assert.deepEqual(idsOf(assertSearchset(res)), RELEASED_OBS, summary);
      assertClean(res);
    }
  } },
  { name: '_summary=count is refused (a count would include withheld resources)', run: async () => {
    assertRefused(await get(`Observation?patient=${P}&_summary=count`), 400);
  } },
  { name: '_total=accurate never yields a total', run: async () => {
    const res = await get(`Observation?patient=${P}&_total=accurate`);
    assert.equal(assertSearchset(res).total, undefined);
    assertClean(res);
  } },
  { name: '_count/_offset probing: offsets count released entries only', run: async () => {
    const walked: string[] = [];
    for (let offset = 0; offset <= RELEASED_OBS.length; offset++) {
      const res = await get(`Observation?patient=${P}&_sort=_id&_count=1&_offset=${offset}`);
      const bundle = assertSearchset(res);
      walked.push(...idsOf(bundle));
      assert.equal(nextOf(bundle) !== undefined, offset < RELEASED_OBS.length - 1, `next link at offset ${offset}`);
      assertClean(res);
    }
    assert.deepEqual(walked, RELEASED_OBS, 'one released entry per offset, then nothing');
    assertRefused(await get(`Observation?patient=${P}&_count=0`), 400);
    assertRefused(await get(`Observation?patient=${P}&_count=-1`), 400);
  } },
  { name: 'page sizes: short pages are refilled, so their size reveals nothing', run: async () => {
    assert.deepEqual(await pagedIds(h, `Observation?patient=${P}`, drA, 1), RELEASED_OBS);
    assert.deepEqual(await pagedIds(h, `Observation?patient=${P}`, drA, 2), RELEASED_OBS);
  } },
  { name: 'next link only when another released entry exists (a trailing withheld entry leaves none)', run: async () => {
    const full = assertSearchset(await get('Observation?patient=pn&_sort=_id&_count=3'));
    assert.deepEqual(idsOf(full), ['pn-a1', 'pn-a2', 'pn-a3']);
    assert.equal(nextOf(full), undefined, 'the withheld pn-z9 does not earn a next link');
    const first = assertSearchset(await get('Observation?patient=pn&_sort=_id&_count=2'));
    const next = nextOf(first);
    assert.ok(next);
    const second = await h.request(next, { token: drA });
    assert.deepEqual(idsOf(assertSearchset(second)), ['pn-a3']);
    assert.equal(nextOf(second.body as Bundle), undefined);
    assertNoTrace(second, ['pn-z9']);
  } },
  { name: 'cursor tampering: a changed cursor is refused', run: async () => {
    const next = nextOf(assertSearchset(await get(`Observation?patient=${P}&_count=1`)));
    assert.ok(next);
    const url = new URL(next);
    const cursor = url.searchParams.get('_cursor') ?? '';
    const i = Math.floor(cursor.length / 2);
    url.searchParams.set('_cursor', `${cursor.slice(0, i)}${cursor[i] === 'A' ? 'B' : 'A'}${cursor.slice(i + 1)}`);
    assertRefused(await h.request(url.toString(), { token: drA }), 400);
    assertRefused(await get(`_page?cursor=${encodeURIComponent(`${cursor}x`)}`), 400);
    // A cursor continues only the listing it was issued for, and is not combined with new criteria.
    assertRefused(await get(`Encounter?_cursor=${encodeURIComponent(cursor)}&_count=1`), 400);
    assertRefused(await get(`Observation?_cursor=${encodeURIComponent(cursor)}&_count=1&code=x`), 400);
  } },
  { name: 'cursor from another client or another subject is refused', run: async () => {
    const next = nextOf(assertSearchset(await get(`Observation?patient=${P}&_count=1`)));
    assert.ok(next);
    const otherClient = await h.token({ sub: 'dr-a', client_id: 'other-app', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: pou('TREAT') });
    const otherSubject = await h.token({ sub: 'dr-b', client_id: 'ehr', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: pou('TREAT') });
    assertRefused(await h.request(next, { token: otherClient }), 403);
    assertRefused(await h.request(next, { token: otherSubject }), 403);
    assert.equal((await h.request(next, { token: drA })).status, 200, 'the owner can follow it');
  } },
  { name: 'expired cursor is refused', run: async () => {
    const next = nextOf(assertSearchset(await get(`Observation?patient=${P}&_count=1`)));
    assert.ok(next);
    const key = createHash('sha256').update(CURSOR_SECRET).digest();
    const { payload } = await jwtDecrypt(new URL(next).searchParams.get('_cursor') ?? '', key);
    const past = Math.floor(Date.now() / 1000) - 3600;
    const expired = await new EncryptJWT({ st: payload.st, cid: payload.cid, sub: payload.sub }).setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).setIssuedAt(past - 900).setExpirationTime(past).encrypt(key);
    assertRefused(await get(`Observation?_cursor=${expired}&_count=1`), 400);
  } },
  { name: '_has (reverse chaining) is refused', run: async () => {
    assertRefused(await get(`Patient?_id=${P}&_has:Observation:patient:code=secret-code-77`), 400);
  } },
  { name: 'chained parameters are refused', run: async () => {
    assertRefused(await get(`Observation?patient=${P}&encounter.status=finished`), 400);
    assertRefused(await get(`Observation?patient.name=x`), 400);
  } },
  { name: 'patient.identifier is resolved by the gateway: the search equals one by id, and another patient’s MRN looks unknown', run: async () => {
    await h.put({ resourceType: 'Patient', id: 'pn', identifier: [{ system: 'urn:mrn', value: 'MRN-PN' }] } as Resource);
    const byMrn = await get(`Observation?patient.identifier=${encodeURIComponent('urn:mrn|MRN-PN')}&_sort=_id`);
    const byId = await get('Observation?patient=pn&_sort=_id');
    assert.equal(byMrn.status, 200);
    const ids = (r: typeof byMrn) => (r.body.entry ?? []).map((e: { resource: Resource }) => e.resource.id);
    assert.deepEqual(ids(byMrn), ids(byId));
    assert.ok(!ids(byMrn).includes('pn-z9'), 'the R-labelled observation stays withheld');
    const unknown = await get(`Observation?patient.identifier=${encodeURIComponent('urn:mrn|NO-SUCH')}`);
    assert.equal(unknown.status, 200);
    assert.deepEqual(ids(unknown), []);
    // A patient/ token asking for another patient's MRN gets what an unknown MRN gets: nothing, not a 403.
    const foreign = await get(`Observation?patient.identifier=${encodeURIComponent('urn:mrn|MRN-PN')}`, pt);
    assert.equal(foreign.status, 200);
    assert.deepEqual(ids(foreign), []);
  } },
  { name: '_filter is refused', run: async () => {
    assertRefused(await get(`Observation?patient=${P}&_filter=${encodeURIComponent('code eq secret-code-77')}`), 400);
  } },
  { name: '_text and _content are refused (full text would match withheld narrative)', run: async () => {
    assertRefused(await get(`Observation?patient=${P}&_text=secret`), 400);
    assertRefused(await get(`Observation?patient=${P}&_content=secret`), 400);
  } },
  { name: '_sort on a redactable field is refused (only _id, _lastUpdated and dates)', run: async () => {
    assertRefused(await get(`Observation?patient=${P}&_sort=value-string`), 400);
    assertRefused(await get(`Observation?patient=${P}&_sort=-code`), 400);
    assert.equal((await get(`Observation?patient=${P}&_sort=-date`)).status, 200);
  } },
  { name: 'search by the value of a redacted (inline-labelled) element does not return the resource', run: async () => {
    const hit = await get(`Observation?patient=${P}&value-string=hiddenword`);
    const miss = await get(`Observation?patient=${P}&value-string=nothing-has-this`);
    assert.deepEqual(idsOf(assertSearchset(hit)), [], 'the match on the removed element is not shown');
    assert.deepEqual(idsOf(assertSearchset(miss)), []);
    assert.deepEqual(hit.body.entry ?? [], miss.body.entry ?? [], 'a hit and a miss look the same');
    // The self link repeats the client's own query; nothing else may carry the hidden value.
    assert.ok(!JSON.stringify(hit.body.entry ?? []).includes('hiddenword'));
    assertNoTrace(hit, WITHHELD_IDS);
    // Searching by what is visible still finds it, redacted.
    const visible = await get(`Observation?patient=${P}&_id=pv-inline`);
    assert.deepEqual(idsOf(assertSearchset(visible)), ['pv-inline']);
    assertClean(visible);
  } },
  { name: '_include pulling a withheld resource, or entering via a withheld match, shows nothing of it', run: async () => {
    const res = await get(`Observation?patient=${P}&_include=Observation:encounter`);
    const bundle = assertSearchset(res);
    assert.deepEqual(idsOf(bundle), RELEASED_OBS);
    // pv-eR is withheld itself; pv-e-r-only is referenced only by the withheld pv-r1.
    assert.deepEqual(idsOf(bundle, 'include'), ['pv-e1']);
    assertClean(res, [...WITHHELD_IDS, 'pv-e-r-only']);
    assertRefused(await get(`Observation?patient=${P}&_include:iterate=Observation:encounter`), 400);
    assertRefused(await get(`Observation?patient=${P}&_include=*`), 400);
  } },
  { name: '_revinclude does not pull a withheld resource', run: async () => {
    const res = await get(`Encounter?patient=${P}&_revinclude=Observation:encounter`);
    const bundle = assertSearchset(res);
    assert.deepEqual(idsOf(bundle), ['pv-e-r-only', 'pv-e1']);
    assert.deepEqual(idsOf(bundle, 'include'), ['pv-n1']);
    assertClean(res);
  } },
  { name: '_security/_tag probing: a query for a label the requester may not see looks like one that matches nothing', run: async () => {
    const probe = await get(`Observation?patient=${P}&_security=R`);
    const control = await get(`Observation?patient=${P}&_security=http://example.org|nothing`);
    assert.deepEqual(idsOf(assertSearchset(probe)), []);
    assert.deepEqual(probe.body.entry ?? [], control.body.entry ?? []);
    assert.equal(probe.body.meta, control.body.meta);
    assertClean(probe);
    const tagged = await get(`Observation?patient=${P}&_tag=${encodeURIComponent('http://terminology.hl7.org/CodeSystem/v3-ObservationValue|PROCESSINLINELABEL')}`);
    assertClean(tagged);
  } },
  { name: 'contained resources are decided with their container: a withheld one is removed', run: async () => {
    const res = await get('Observation/pv-cont');
    assert.equal(res.status, 200);
    assert.equal(res.body.contained, undefined, 'the withheld contained resource is removed');
    assert.ok(res.body.meta.security.some((c: { code: string }) => c.code === 'REDACTED'));
    assertClean(res);
    assertRefused(await get(`Observation?patient=${P}&_contained=true`), 400);
  } },
  { name: 'narratives of redacted resources are removed', run: async () => {
    const res = await get('Observation/pv-inline');
    assert.equal(res.status, 200);
    assert.equal(res.body.text, undefined);
    assert.equal(res.body.valueString, undefined);
    assert.ok(res.body.meta.security.some((c: { system: string; code: string }) => c.system === V3_OBSERVATION_VALUE && c.code === 'REDACTED'));
    assertClean(res);
    for (const summary of ['text', 'true']) assertClean(await get(`Observation?patient=${P}&_id=pv-inline&_summary=${summary}`));
  } },
  { name: 'history: older versions of a resource that is now labelled R are not shown', run: async () => {
    // Every version withheld: concealed like a read, identical to the history of a resource that does not exist.
    const instance = await get('Observation/pv-hist/_history');
    assert.equal(instance.status, 404);
    assertClean(instance, []);
    assert.equal(instance.text, (await get('Observation/no-such-obs/_history')).text, 'same as a resource that does not exist');
    const released = await get('Observation/pv-n1/_history');
    assert.equal(released.status, 200);
    assert.ok(((released.body as Bundle).entry ?? []).length >= 1, 'a visible resource keeps its history');
    const sys = await h.token({ sub: 'svc', client_id: 'engine', scope: 'system/*.rs', extensions: pou('TREAT') });
    const typeHistory = await get('Observation/_history?_count=1000', sys);
    assert.equal(typeHistory.status, 200);
    const ids = ((typeHistory.body as Bundle).entry ?? []).map((e) => e.resource?.id);
    assert.ok(ids.includes('pv-n1'), 'type history does list what may be seen');
    assert.ok(!ids.includes('pv-hist') && !ids.includes('pv-r1'));
    // The system client may see pw's data; none of what is withheld from it appears.
    for (const secret of SECRETS.filter((x) => x !== content('pw-o1'))) assert.ok(!typeHistory.text.includes(secret), secret);
  } },
  { name: 'vread of an old version of a now-withheld resource is concealed', run: async () => {
    const upstreamHistory = (await (await fetch(`${h.upstream.url}/Observation/pv-hist/_history`)).json()) as Bundle<Observation>;
    const v1 = upstreamHistory.entry?.find((e) => e.resource?.valueString === content('pv-hist'))?.resource?.meta?.versionId;
    assert.ok(v1, 'the unlabelled first version exists upstream');
    const res = await get(`Observation/pv-hist/_history/${v1}`);
    assert.equal(res.status, 404);
    assert.equal(res.headers.get('etag'), null);
    assertClean(res, []);
    assert.equal(res.text, (await get('Observation/no-such-obs/_history/1')).text, 'same as a version that does not exist');
  } },
  { name: '$everything releases only what may be seen', run: async () => {
    const res = await get(`Patient/${P}/$everything?_count=1000`);
    const bundle = assertSearchset(res);
    const ids = idsOf(bundle);
    for (const id of [...RELEASED_OBS, 'pv-e1', 'pv-e-r-only']) assert.ok(ids.includes(id), id);
    assert.ok(!ids.includes('pv-hist'));
    assertClean(res);
  } },
  { name: 'batch GET entries are decided one by one, with the same refusals', run: async () => {
    const batch: Bundle = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: 'Observation/pv-r1' } },
        { request: { method: 'GET', url: `Observation?patient=${P}&_elements=id` } },
        { request: { method: 'GET', url: `Observation?patient=${P}&_summary=count` } },
        { request: { method: 'GET', url: `Observation?patient=${P}&_has:Encounter:patient:status=finished` } },
        { request: { method: 'GET', url: 'Observation/pv-n1' } },
      ],
    };
    const res = await h.request('', { token: drA, method: 'POST', body: batch });
    assert.equal(res.status, 200);
    const entries = (res.body as Bundle).entry ?? [];
    assert.deepEqual(entries.map((e) => e.response?.status), ['404', '200', '400', '400', '200']);
    assert.deepEqual(idsOf(entries[1].resource as Bundle), RELEASED_OBS);
    assertClean(res);
  } },
  { name: 'POST _search form bodies get the same treatment as GET', run: async () => {
    const post = (form: string) => h.request('Observation/_search', { token: drA, method: 'POST', body: form, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    const plain = await post(`patient=${P}&_elements=id`);
    assert.deepEqual(idsOf(assertSearchset(plain)), RELEASED_OBS);
    assertClean(plain);
    for (const form of [`patient=${P}&_summary=count`, `patient=${P}&_has:Encounter:patient:status=finished`, `patient=${P}&encounter.status=finished`, `patient=${P}&_filter=x`, `patient=${P}&_text=x`]) {
      assertRefused(await post(form), 400);
    }
    const json = await h.request('Observation/_search', { token: drA, method: 'POST', body: { patient: P } });
    assert.equal(json.status, 415, 'only a form body is a search');
    assertClean(json);
  } },
  { name: 'method-override headers are refused', run: async () => {
    for (const header of ['x-http-method-override', 'x-http-method', 'x-method-override']) {
      assertRefused(await get('Observation/pv-n1', drA, { [header]: 'DELETE' }), 400);
      const res = await h.request('Observation/_search', { token: drA, method: 'POST', body: `patient=${P}`, headers: { 'content-type': 'application/x-www-form-urlencoded', [header]: 'GET' } });
      assertRefused(res, 400);
    }
    assert.equal((await get('Observation/pv-n1')).status, 200, 'the resource is still there');
  } },
  { name: 'XML by _format or Accept is refused with 406 (only JSON is inspected)', run: async () => {
    for (const format of ['xml', 'application/fhir+xml', 'text/xml', 'html']) assertRefused(await get(`Observation/pv-r1?_format=${encodeURIComponent(format)}`), 406);
    assertRefused(await get('Observation/pv-r1', drA, { accept: 'application/fhir+xml' }), 406);
    assertRefused(await get(`Observation?patient=${P}`, drA, { accept: 'application/xml' }), 406);
  } },
  { name: 'encoded slashes and path traversal are refused', run: async () => {
    const auth = { authorization: `Bearer ${pt}` };
    for (const path of [
      '/fhir/Observation%2Fpw-o1',
      '/fhir/Patient/pv/..%2F..%2FObservation/pw-o1',
      '/fhir/Patient/pv/%2e%2e/%2e%2e/Observation/pw-o1',
      '/fhir/Observation/pv-n1/../pw-o1',
      '/fhir//Observation/pw-o1',
      '/fhir/Observation/pw-o1%00',
      '/fhir/Observation\\pw-o1',
    ]) {
      const res = await rawGet(h.base, path, auth);
      assert.ok(res.status === 400 || res.status === 404, `${path}: ${res.status}`);
      assertClean(res, ['"pw-o1"']);
    }
  } },
  { name: 'compartment search naming another patient is refused to a patient/ token', run: async () => {
    const res = await get(`Patient/${OTHER}/Observation`, pt);
    assertRefused(res, 403);
    assertNoTrace(res, ['pw-o1']);
  } },
  { name: 'patient/ token reading another patient’s resource by id: 404 exactly as for one that does not exist', run: async () => {
    const other = await get('Observation/pw-o1', pt);
    const missing = await get('Observation/no-such-obs', pt);
    assert.equal(other.status, 404);
    assert.equal(other.text, missing.text);
    assertNoTrace(other, ['pw-o1']);
  } },
  { name: 'pre-read refusals are identical whether or not the resource exists', run: async () => {
    const patientOnly = await h.token({ sub: 'pt-pv', client_id: 'patient-app', patient: P, fhirUser: `Patient/${P}`, scope: 'patient/Patient.r' });
    const exists = await get('Observation/pv-n1', patientOnly);
    const absent = await get('Observation/no-such-obs', patientOnly);
    assert.equal(exists.status, 403);
    assert.equal(exists.text, absent.text);
    const otherPatient = await get(`Patient/${OTHER}`, pt);
    const noPatient = await get('Patient/no-such-patient', pt);
    assert.equal(otherPatient.status, 403);
    assert.equal(otherPatient.text, noPatient.text);
  } },
  { name: 'error bodies do not echo upstream text', run: async () => {
    const res = await get(`Observation?patient=${P}&date=garbage-ECHO-MARKER`);
    assert.equal(res.status, 400);
    assert.equal(res.body.resourceType, 'OperationOutcome');
    assert.ok(!res.text.includes('ECHO-MARKER'), 'the upstream’s words are not passed on');
    // The upstream answers a failed patch test with the stored value ("Test failed: final != …").
    const patch = await h.request('Observation/pv-n1', { token: drA, method: 'PATCH', body: JSON.stringify([{ op: 'test', path: '/status', value: 'ECHO-MARKER' }]), headers: { 'content-type': 'application/json-patch+json' } });
    assert.equal(patch.status, 400);
    assert.ok(!patch.text.includes('ECHO-MARKER') && !patch.text.includes('final'), patch.text);
  } },
  { name: 'PATCH of a withheld or redacted resource: no test-op oracle, no copy of hidden elements, no body', run: async () => {
    const patchOf = (id: string, ops: unknown[]) => h.request(`Observation/${id}`, { token: drA, method: 'PATCH', body: JSON.stringify(ops), headers: { 'content-type': 'application/json-patch+json' } });
    const right = await patchOf('pv-r1', [{ op: 'test', path: '/valueString', value: content('pv-r1') }]);
    const wrong = await patchOf('pv-r1', [{ op: 'test', path: '/valueString', value: 'a wrong guess' }]);
    const missing = await patchOf('no-such-obs', [{ op: 'test', path: '/valueString', value: 'x' }]);
    assert.equal(right.status, 404, 'a withheld resource is concealed from a patch as from a read');
    assert.equal(right.text, wrong.text);
    assert.equal(right.text, missing.text);
    assertClean(right);
    const copied = await patchOf('pv-inline', [{ op: 'copy', from: '/valueString', path: '/note/0/text' }]);
    assert.equal(copied.status, 403, 'a redacted resource is not patched');
    assertClean(copied);
    const stored = (await (await fetch(`${h.upstream.url}/Observation/pv-inline`)).json()) as Observation;
    assert.equal(stored.note?.[0]?.text, 'routine', 'nothing was copied');
    const transaction: Bundle = { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'PATCH', url: 'Observation/pv-r1' }, resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from('[]').toString('base64') } }] };
    const tx = await h.request('', { token: drA, method: 'POST', body: transaction });
    assert.equal(tx.status, 404, 'a PATCH inside a transaction meets the same concealment');
    const txMissing = await h.request('', { token: drA, method: 'POST', body: { ...transaction, entry: [{ ...transaction.entry![0], request: { method: 'PATCH', url: 'Observation/no-such-obs' } }] } });
    assert.equal(tx.text, txMissing.text, 'a withheld resource and a missing one answer alike inside a transaction');
    assertClean(tx);
  } },
  { name: 'headers (ETag, Location, Content-Location) never name withheld ids', run: async () => {
    const withheld = await get('Observation/pv-r1');
    assert.equal(withheld.status, 404);
    for (const name of ['etag', 'last-modified', 'location', 'content-location']) assert.equal(withheld.headers.get(name), null, name);
    assert.equal(withheld.text, (await get('Observation/no-such-obs')).text, 'a withheld resource reads exactly as a missing one');
    const released = await get('Observation/pv-n1');
    assert.equal(released.status, 200);
    assert.match(released.headers.get('etag') ?? '', /^W\/"/);
    const listing = await get(`Observation?patient=${P}`);
    for (const name of ['etag', 'location', 'content-location']) assert.equal(listing.headers.get(name), null, name);
    assertClean(listing);
  } },
];

describe('threat model: no indirect trace of withheld data', () => {
  for (const v of vectors) test(v.name, v.run);
  test('the planted data is really there (the checks above can fail)', async () => {
    const upstream = (await (await fetch(`${h.upstream.url}/Observation?patient=Patient/${P}&_count=100`)).json()) as Bundle;
    const text = JSON.stringify(upstream);
    for (const s of ['pv-r1', content('pv-r1'), 'secret-code-77', 'hiddenword', 'contained-secret']) assert.ok(text.includes(s), s);
    assert.ok(entriesOf(upstream).length > RELEASED_OBS.length);
  });
});

// A token holding patient/ scopes beside user/ (or system/) scopes is confined to its launch patient for
// every request, exactly as a patient/-only token: the other scopes decide types and interactions, never
// which patients (SPEC §3, README "Who is asking"). Its own world, reached through a recording proxy so
// that "refused before the upstream is asked" is seen, not inferred.
describe('mixed tokens: patient/ scopes confine whatever else the token holds', () => {
  const OWN = 'mixed-own';
  const ELSE = 'mixed-other';
  const world: Resource[] = [
    ...cast(OWN),
    patient(OWN),
    patient(ELSE),
    obs(`${OWN}-o1`, OWN),
    obs(`${OWN}-o2`, OWN),
    obs(`${ELSE}-o1`, ELSE),
    consent(`c-${OWN}`, OWN, { type: 'permit', purpose: TPO }),
    consent(`c-${ELSE}`, ELSE, { type: 'permit', purpose: TPO }),
  ];
  const userScopes = 'user/Observation.cruds user/Patient.rs';
  let mh: Harness;
  let upstream: EmbeddedUpstream;
  let proxy: FaultProxy;
  /** patient/Observation.rs beside user/ scopes, launch patient OWN. */
  let mixed: string;
  /** The same user/ scopes without the patient/ one: the control that shows each refusal is the confinement. */
  let userOnly: string;
  /** patient/ scopes alone, same launch patient: what the mixed token must behave like. */
  let patientOnly: string;

  before(async () => {
    upstream = await startEmbeddedUpstream({ resources: world });
    proxy = await startFaultProxy(upstream.url);
    mh = await startHarness({ upstream: { url: proxy.url, repo: upstream.repo, close: async () => {} }, policy: { allowOperations: ['$summary'] } });
    const clinician = { sub: 'dr-a', client_id: 'ehr-launch', fhirUser: 'Practitioner/dr-a', extensions: pou('TREAT') };
    mixed = await mh.token({ ...clinician, patient: OWN, scope: `patient/Observation.rs ${userScopes}` });
    userOnly = await mh.token({ ...clinician, scope: userScopes });
    patientOnly = await mh.token({ sub: `pt-${OWN}`, client_id: 'patient-app', patient: OWN, fhirUser: `Patient/${OWN}`, scope: 'patient/Observation.cruds patient/Patient.rs' });
  });
  after(async () => {
    await mh.close();
    await proxy.close();
    await upstream.close();
  });

  const req = (path: string, token: string, opts: { method?: string; body?: unknown } = {}) => mh.request(path, { token, ...opts });
  /** Upstream request targets since `from` that name the other patient. */
  const askedAboutElse = (from: number) => proxy.seen.slice(from).filter((target) => target.includes(ELSE));
  const stored = async (id: string) => (await (await fetch(`${upstream.url}/Observation/${id}`)).json()) as Observation;
  const newObservation = (patientId: string): Observation => ({ resourceType: 'Observation', status: 'final', code: { text: 'mixed-write' }, subject: { reference: `Patient/${patientId}` } });

  test('reading another patient: 403 before the upstream is asked, identical whether or not the patient exists', async () => {
    const from = proxy.seen.length;
    const other = await req(`Patient/${ELSE}`, mixed);
    const missing = await req('Patient/no-such-patient', mixed);
    assert.equal(other.status, 403);
    assert.equal(other.body?.resourceType, 'OperationOutcome');
    assert.equal(other.text, missing.text);
    assertNoTrace(other, [ELSE]);
    assert.deepEqual(askedAboutElse(from), [], 'the upstream was not asked');
    assert.equal((await req(`Patient/${ELSE}`, userOnly)).status, 200, 'the same user/ scopes alone read it');
    assert.ok(askedAboutElse(from).length > 0, 'the proxy sees such a read (the check above can fail)');
  });

  test('another patient’s Observation by id reads exactly as for a patient/-only token: 404, as for one that does not exist', async () => {
    const other = await req(`Observation/${ELSE}-o1`, mixed);
    assert.equal(other.status, 404);
    assert.equal(other.text, (await req('Observation/no-such-obs', mixed)).text);
    assert.equal(other.text, (await req(`Observation/${ELSE}-o1`, patientOnly)).text);
    assertNoTrace(other, [`${ELSE}-o1`, content(`${ELSE}-o1`)]);
    assert.equal((await req(`Observation/${ELSE}-o1`, userOnly)).status, 200, 'the same user/ scopes alone read it');
  });

  test('a search naming another patient: 403 before the upstream is asked; one naming none is confined to the launch patient', async () => {
    const from = proxy.seen.length;
    for (const path of [`Observation?patient=${ELSE}`, `Observation?subject=Patient/${ELSE}`, `Observation?patient=${OWN},${ELSE}`, `Patient/${ELSE}/Observation`, `Patient?_id=${ELSE}`, `Patient/${ELSE}/$everything`]) {
      const res = await req(path, mixed);
      assert.equal(res.status, 403, `${path}: ${res.text.slice(0, 200)}`);
      assertNoTrace(res, [`${ELSE}-o1`]);
    }
    assert.deepEqual(askedAboutElse(from), [], 'the upstream was not asked');
    const unnamed = assertSearchset(await req('Observation', mixed));
    assert.deepEqual(idsOf(unnamed), [`${OWN}-o1`, `${OWN}-o2`]);
    assert.deepEqual(idsOf(assertSearchset(await req(`Observation?patient=${ELSE}`, userOnly))), [`${ELSE}-o1`], 'the same user/ scopes alone search it');
  });

  test('an operation the policy lets through, on another patient: 403 before the upstream is asked', async () => {
    const from = proxy.seen.length;
    for (const token of [mixed, patientOnly]) {
      const res = await req(`Patient/${ELSE}/$summary`, token);
      assert.equal(res.status, 403, res.text.slice(0, 200));
      assert.equal(res.text, (await req('Patient/no-such-patient/$summary', token)).text, 'identical whether or not the patient exists');
    }
    assert.deepEqual(askedAboutElse(from), [], 'the upstream was not asked');
    await req(`Patient/${ELSE}/$summary`, userOnly);
    assert.ok(askedAboutElse(from).length > 0, 'the same user/ scopes alone pass it upstream (the check above can fail)');
  });

  test('the launch patient’s own data still reads and searches', async () => {
    assert.equal((await req(`Patient/${OWN}`, mixed)).status, 200);
    assert.equal((await req(`Observation/${OWN}-o1`, mixed)).status, 200);
    assert.deepEqual(idsOf(assertSearchset(await req(`Observation?patient=${OWN}`, mixed))), [`${OWN}-o1`, `${OWN}-o2`]);
  });

  test('writes about another patient: 403, the upstream unchanged; writes about the launch patient pass', async () => {
    const created = await req('Observation', mixed, { method: 'POST', body: newObservation(ELSE) });
    assert.equal(created.status, 403, created.text.slice(0, 200));
    const overwrite = await req(`Observation/${ELSE}-o1`, mixed, { method: 'PUT', body: obs(`${ELSE}-o1`, ELSE, [], { valueString: 'overwritten' }) });
    assert.equal(overwrite.status, 403);
    const takeOver = await req(`Observation/${ELSE}-o1`, mixed, { method: 'PUT', body: obs(`${ELSE}-o1`, OWN, [], { valueString: 'taken over' }) });
    assert.equal(takeOver.status, 403, 'a resource of another patient is not moved to the launch patient');
    const handOver = await req(`Observation/${OWN}-o2`, mixed, { method: 'PUT', body: obs(`${OWN}-o2`, ELSE) });
    assert.equal(handOver.status, 403, 'nor one of the launch patient to another');
    assert.equal((await stored(`${ELSE}-o1`)).valueString, content(`${ELSE}-o1`));
    assert.equal((await stored(`${OWN}-o2`)).subject?.reference, `Patient/${OWN}`);
    const elseObservations = (await (await fetch(`${upstream.url}/Observation?subject=Patient/${ELSE}`)).json()) as Bundle;
    assert.deepEqual(idsOf(elseObservations), [`${ELSE}-o1`], 'nothing was created for the other patient');
    // exactly as a patient/-only token: a transaction is refused, even about the launch patient
    const transaction: Bundle = { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'POST', url: 'Observation' }, resource: newObservation(OWN) }] };
    assert.equal((await req('', mixed, { method: 'POST', body: transaction })).status, 403);

    const own = await req('Observation', mixed, { method: 'POST', body: newObservation(OWN) });
    assert.equal(own.status, 201, own.text.slice(0, 200));
    const updated = await req(`Observation/${OWN}-o2`, mixed, { method: 'PUT', body: obs(`${OWN}-o2`, OWN, [], { valueString: 'updated' }) });
    assert.equal(updated.status, 200, updated.text.slice(0, 200));
    assert.equal((await stored(`${OWN}-o2`)).valueString, 'updated');
    const control = await req('Observation', userOnly, { method: 'POST', body: newObservation(ELSE) });
    assert.equal(control.status, 201, 'the same user/ scopes alone write it');
  });

  test('patient/ scopes beside user/ ones but no patient claim: confined to no patient', async () => {
    const noClaim = await mh.token({ sub: 'dr-a', client_id: 'ehr-launch', fhirUser: 'Practitioner/dr-a', extensions: pou('TREAT'), scope: `patient/Observation.rs ${userScopes} user/Practitioner.rs` });
    const read = await req(`Observation/${ELSE}-o1`, noClaim);
    assert.equal(read.status, 404);
    assert.equal(read.text, (await req('Observation/no-such-obs', noClaim)).text);
    assert.equal((await req(`Observation/${OWN}-o1`, noClaim)).status, 404);
    assert.equal((await req(`Patient/${ELSE}`, noClaim)).status, 403);
    assert.equal((await req(`Observation?patient=${OWN}`, noClaim)).status, 403);
    assert.equal((await req('Observation', noClaim, { method: 'POST', body: newObservation(OWN) })).status, 403);
    assert.equal((await req('Practitioner/dr-a', noClaim)).status, 200, 'data about no patient stays readable under the scopes');
  });

  test('operations: an auditor’s patient/ scope confines the status and explain operations to the launch patient', async () => {
    const auditor = { sub: 'auditor', client_id: 'console', fhirUser: 'Practitioner/auditor', extensions: pou('HOPERAT') };
    const confined = await mh.token({ ...auditor, patient: OWN, scope: 'user/AuditEvent.rs system/Consent.r patient/Observation.rs' });
    const from = proxy.seen.length;
    const other = await req(`Patient/${ELSE}/$consent-enforcement-status`, confined);
    assert.equal(other.status, 403);
    assert.deepEqual(askedAboutElse(from), [], 'the upstream was not asked');
    const otherConsent = await req(`Consent/c-${ELSE}/$consent-enforcement-status`, confined);
    assert.equal(otherConsent.status, 404);
    assert.equal(otherConsent.text, (await req('Consent/no-such-consent/$consent-enforcement-status', confined)).text);
    const own = await req(`Patient/${OWN}/$consent-enforcement-status`, confined);
    assert.equal(own.status, 200);
    assert.equal(own.body.parameter.length, 1);
    const explain = (what: { name: string; [value: string]: unknown }) => ({
      resourceType: 'Parameters',
      parameter: [{ name: 'actor', valueReference: { reference: 'Practitioner/dr-a' } }, { name: 'purpose', valueCode: 'TREAT' }, { name: 'scope', valueString: 'user/*.rs' }, what],
    });
    const explainOther = await req('$disclosure-decision', confined, { method: 'POST', body: explain({ name: 'reference', valueReference: { reference: `Observation/${ELSE}-o1` } }) });
    assert.equal(explainOther.status, 404);
    assert.equal(explainOther.text, (await req('$disclosure-decision', confined, { method: 'POST', body: explain({ name: 'reference', valueReference: { reference: 'Observation/no-such-obs' } }) })).text);
    assert.equal((await req('$disclosure-decision', confined, { method: 'POST', body: explain({ name: 'resource', resource: obs('inline', ELSE) }) })).status, 403);
    assert.equal((await req('$disclosure-decision', confined, { method: 'POST', body: explain({ name: 'reference', valueReference: { reference: `Observation/${OWN}-o1` } }) })).status, 200);
    const unconfined = await mh.token({ ...auditor, scope: 'user/AuditEvent.rs system/Consent.r' });
    assert.equal((await req(`Patient/${ELSE}/$consent-enforcement-status`, unconfined)).status, 200, 'the same auditor scopes alone ask it');
    assert.equal((await req('$disclosure-decision', unconfined, { method: 'POST', body: explain({ name: 'reference', valueReference: { reference: `Observation/${ELSE}-o1` } }) })).status, 200);
  });
});
