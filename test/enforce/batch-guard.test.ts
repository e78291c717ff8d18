// Issue 17, batch and transaction (SPEC §5): an entry that reads in a write's clothing goes through the read
// path (items 1, 11), and — the by-construction check — every interaction the router accepts, on its own,
// as a batch entry and as a transaction entry, never shows a planted withheld resource.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Bundle, Observation, Resource } from '@medplum/fhirtypes';
import { consent } from '../decide/fixtures.ts';
import { cast, conf, content, obs, patient } from '../conformance/support.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';

const P = 'bp'; // no consent: implicit all-normal, so Dr A sees N data and not R data
const Z = 'bz'; // a deny-all patient
const TELECOM = 'tel-555-0199-secret';
const resources: Resource[] = [
  ...cast(P),
  patient(P),
  { ...patient(Z), telecom: [{ system: 'phone', value: TELECOM }] } as Resource,
  consent('c-bz-deny', { type: 'deny' }, { patient: { reference: `Patient/${Z}` } }),
  obs('bn1', P),
  obs('bn2', P),
  obs('br1', P, [conf('R')], { code: { coding: [{ system: 'http://example.org', code: 'hiv-secret-code' }] } }),
  obs('bz1', Z),
];
/** Planted withheld data (from every token below: implicit all-normal withholds R even from the patient). */
const WITHHELD = ['br1', 'bz1'];
const SECRETS = [content('br1'), content('bz1'), 'hiv-secret-code', TELECOM];

let h: Harness;
const tokenFor = (sub: string, fhirUser: string, scope: string) => h.token({ sub, client_id: `${sub}-app`, fhirUser, scope, extensions: pou('TREAT') });
const bundleOf = (type: 'batch' | 'transaction', entry: Bundle['entry']): Bundle => ({ resourceType: 'Bundle', type, entry });
const post = (token: string, body: unknown) => h.request('', { token, method: 'POST', body, headers: { 'content-type': 'application/fhir+json' } });

before(async () => {
  h = await startHarness({ resources });
});
after(async () => h?.close());

function assertClean(label: string, res: { text: string; headers: Headers }, named: string): void {
  const headerText: string[] = [];
  res.headers.forEach((v, k) => headerText.push(`${k}: ${v}`));
  const surface = `${headerText.join('\n')}\n${res.text}`;
  // What the request itself named may be echoed (a self link); nothing else withheld may appear.
  for (const secret of [...SECRETS, ...WITHHELD]) if (!named.includes(secret)) assert.ok(!surface.includes(secret), `${label}: ${secret} appears`);
}

describe('issue 17: reads in a write’s clothing inside batch and transaction', () => {
  test('1: POST Type/_search as a batch entry needs the search scope, as on its own', async () => {
    const pt = await h.token({ sub: 'pt', client_id: 'pt-app', patient: P, fhirUser: `Patient/${P}`, scope: 'patient/Observation.c' });
    const direct = await h.request('Observation/_search', { token: pt, method: 'POST', body: '', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(direct.status, 403);
    const batch = await post(pt, bundleOf('batch', [{ request: { method: 'POST', url: 'Observation/_search' } }]));
    assert.equal(batch.status, 200);
    assert.equal(batch.body.entry[0].response.status, '403');
    assertClean('batch _search', batch, '');
    const patients = await post(await tokenFor('u', 'Practitioner/bob', 'user/Patient.c'), bundleOf('batch', [{ request: { method: 'POST', url: 'Patient/_search' } }]));
    assert.equal(patients.body.entry[0].response.status, '403', 'Patient/_search with user/Patient.c');
    assert.ok(!patients.text.includes(`Patient/${Z}`));
    const tx = await post(await tokenFor('w', 'Practitioner/bob', 'user/*.c'), bundleOf('transaction', [{ request: { method: 'POST', url: 'Observation/_search' } }]));
    assert.equal(tx.body.entry?.[0]?.response?.status ?? String(tx.status), '403', 'a transaction _search entry');
    assertClean('transaction _search', tx, '');
    // Control: with a search scope the same entry answers the decided searchset.
    const drA = await tokenFor('dr-a', 'Practitioner/dr-a', 'user/*.rs');
    const ok = await post(drA, bundleOf('batch', [{ request: { method: 'POST', url: `Observation/_search?patient=Patient/${P}` } }]));
    assert.equal(ok.body.entry[0].response.status, '200', ok.text);
    assert.deepEqual(ok.body.entry[0].resource.entry.map((e: { resource: Observation }) => e.resource.id).sort(), ['bn1', 'bn2']);
    assertClean('decided _search', ok, '');
  });

  test('11: $graphql and any other operation entry is refused unless it is a read the token may make', async () => {
    const writer = await tokenFor('w', 'Practitioner/bob', 'user/*.c');
    const ops = [
      { request: { method: 'POST', url: '$graphql' }, resource: { resourceType: 'Parameters', parameter: [{ name: 'query', valueString: '{ ObservationList { id valueString } }' }] } },
      { request: { method: 'GET', url: `$graphql?query=${encodeURIComponent('{ PatientList { telecom { value } } }')}` } },
      { request: { method: 'POST', url: 'Observation/$validate' }, resource: obs('x', P) },
      { request: { method: 'GET', url: `Patient/${Z}/$everything` } },
    ] as Bundle['entry'];
    for (const type of ['batch', 'transaction'] as const) {
      const res = await post(writer, bundleOf(type, ops));
      assert.equal(res.status, 200, res.text);
      for (const e of res.body.entry) assert.equal(e.response.status, '403', `${type}: ${res.text.slice(0, 300)}`);
      assertClean(`${type} operations`, res, '');
    }
    // Control: $everything for a patient Dr A may read answers decided data.
    const ok = await post(await tokenFor('dr-a', 'Practitioner/dr-a', 'user/*.rs'), bundleOf('batch', [{ request: { method: 'GET', url: `Patient/${P}/$everything` } }]));
    assert.equal(ok.body.entry[0].response.status, '200');
    assert.ok(ok.text.includes(content('bn1')));
    assertClean('$everything', ok, '');
  });
});

describe('issue 17 by construction: every interaction, alone and in batch and transaction, never shows planted withheld data', () => {
  test('the walk', async () => {
    const tokens = {
      clinician: await tokenFor('dr-a', 'Practitioner/dr-a', 'user/*.cruds'),
      patientApp: await h.token({ sub: 'pt', client_id: 'pt-app', patient: P, fhirUser: `Patient/${P}`, scope: 'patient/*.cruds' }),
      writeOnly: await tokenFor('w', 'Practitioner/bob', 'user/*.c'),
    };
    const first = await h.request(`Observation?patient=Patient/${P}&_count=1`, { token: tokens.clinician });
    const next = (first.body as Bundle).link?.find((l) => l.relation === 'next')?.url ?? '';
    const page = next.slice(next.indexOf('/fhir/') + '/fhir/'.length);
    const overwrite = (id: string, subject: string) => ({ ...obs(id, subject), valueString: 'overwritten' });
    const patchOps = (id: string) => [{ op: 'test', path: '/valueString', value: content(id) }, { op: 'copy', from: '/valueString', path: '/note' }];
    type Call = { method: string; url: string; resource?: Resource; form?: string; patch?: unknown[]; ifNoneExist?: string; ifMatch?: string };
    const calls: Call[] = [
      { method: 'GET', url: 'Observation/br1' },
      { method: 'GET', url: 'Observation/bz1' },
      { method: 'GET', url: 'Observation/br1/_history/1' },
      { method: 'GET', url: 'Observation/br1/_history' },
      { method: 'GET', url: 'Observation/_history' },
      { method: 'GET', url: '_history' },
      { method: 'GET', url: `Observation?patient=Patient/${P}` },
      { method: 'GET', url: `Observation?patient=Patient/${Z}` },
      { method: 'GET', url: 'Observation?_id=br1,bz1' },
      { method: 'GET', url: 'Observation?code=http://example.org|hiv-secret-code' },
      { method: 'GET', url: `Observation?patient=Patient/${P}&_include=Observation:subject&_revinclude=Provenance:target` },
      { method: 'GET', url: `Patient?_id=${Z}` },
      { method: 'GET', url: `Patient/${Z}` },
      { method: 'GET', url: '?_type=Observation' },
      { method: 'POST', url: 'Observation/_search', form: `patient=Patient/${Z}` },
      { method: 'POST', url: '_search', form: '_type=Observation' },
      { method: 'GET', url: `Patient/${P}/Observation` },
      { method: 'GET', url: `Patient/${Z}/Observation` },
      { method: 'GET', url: `Patient/${P}/$everything` },
      { method: 'GET', url: `Patient/${Z}/$everything` },
      { method: 'GET', url: page },
      { method: 'POST', url: '$graphql', resource: { resourceType: 'Parameters', parameter: [{ name: 'query', valueString: '{ ObservationList { valueString } }' }] } as Resource },
      { method: 'GET', url: 'Observation/br1/$meta' },
      { method: 'POST', url: 'Observation/$validate', resource: obs('v', P) },
      { method: 'PUT', url: 'Observation/br1', resource: overwrite('br1', P) },
      { method: 'PUT', url: 'Observation/bz1', resource: overwrite('bz1', P) },
      { method: 'PUT', url: 'Observation/br1', resource: overwrite('br1', P), ifMatch: 'W/"1"' },
      { method: 'PATCH', url: 'Observation/br1', patch: patchOps('br1') },
      { method: 'PATCH', url: 'Observation/bz1', patch: patchOps('bz1') },
      { method: 'DELETE', url: 'Observation/br1' },
      { method: 'DELETE', url: 'Observation/bz1' },
      { method: 'PUT', url: 'Observation?_id=br1', resource: overwrite('br1', P) },
      { method: 'DELETE', url: 'Observation?_id=bz1' },
      { method: 'DELETE', url: `Observation/Observation?patient=Patient/${Z}` },
      { method: 'POST', url: 'Observation', resource: obs('n', P), ifNoneExist: '_id=br1' },
    ];
    let answered = 0;
    for (const [who, token] of Object.entries(tokens)) {
      for (const call of calls) {
        const named = `${call.url} ${call.ifNoneExist ?? ''}`;
        const label = `${who} ${call.method} ${call.url}`;
        const headers: Record<string, string> = { 'content-type': call.form !== undefined ? 'application/x-www-form-urlencoded' : call.patch ? 'application/json-patch+json' : 'application/fhir+json' };
        if (call.ifNoneExist) headers['if-none-exist'] = call.ifNoneExist;
        if (call.ifMatch) headers['if-match'] = call.ifMatch;
        const body = call.form ?? (call.patch ? JSON.stringify(call.patch) : call.resource);
        const alone = await h.request(call.url, { token, method: call.method, body, headers });
        assertClean(`${label} (alone)`, alone, named);
        if (alone.status < 300) answered++;
        const url = call.form ? `${call.url}?${call.form}` : call.url;
        const resource = call.patch ? ({ resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from(JSON.stringify(call.patch)).toString('base64') } as Resource) : call.resource;
        const entry = [{ request: { method: call.method as 'GET', url, ifNoneExist: call.ifNoneExist, ifMatch: call.ifMatch }, resource }];
        for (const type of ['batch', 'transaction'] as const) assertClean(`${label} (${type})`, await post(token, bundleOf(type, entry)), named);
      }
    }
    assert.ok(answered > 10, `the walk reached real answers (${answered})`);
    // The checks can fail: the planted data is there, untouched, and shows up where it may.
    for (const id of WITHHELD) {
      const stored = (await (await fetch(`${h.upstream.url}/Observation/${id}`)).json()) as Observation;
      assert.equal(stored.valueString, content(id), `${id} is untouched`);
    }
    const system = await h.token({ sub: 'svc', client_id: 'svc', scope: 'system/*.rs', extensions: pou('HOPERAT') });
    const all = await h.request(`Observation?patient=Patient/${P}`, { token: system });
    assert.ok(all.text.includes(content('bn1')));
  });
});

describe('issue 17 family: an operation the policy lets through answers something the gateway cannot decide', () => {
  let g: Harness;
  before(async () => {
    g = await startHarness({ resources, policy: { allowOperations: ['$graphql'] } });
  });
  after(async () => g?.close());

  test('$graphql JSON (not a FHIR resource) is never released, alone or as an entry', async () => {
    const drA = await g.token({ sub: 'dr-a', client_id: 'ehr', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: pou('TREAT') });
    const query = { query: '{ ObservationList { id valueString } PatientList { telecom { value } } }' };
    const upstream = await fetch(`${g.upstream.url}/$graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(query) });
    assert.ok((await upstream.text()).includes(content('br1')), 'the upstream answers it (the check below can fail)');
    const alone = await g.request('$graphql', { token: drA, method: 'POST', body: query });
    assert.equal(alone.status, 502);
    assertClean('$graphql alone', alone, '');
    const entry = await g.request('', { token: drA, method: 'POST', body: bundleOf('batch', [{ request: { method: 'POST', url: '$graphql' }, resource: query as unknown as Resource }]) });
    assert.equal(entry.body.entry[0].response.status, '502');
    assertClean('$graphql entry', entry, '');
  });
});
