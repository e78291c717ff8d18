// The embedded upstream (SPEC §2) as a FHIR R4 server over HTTP, with vendored Synthea patients.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import type { Bundle, BundleEntry, CapabilityStatement, Observation, OperationOutcome, Patient, Resource } from '@medplum/fhirtypes';
import { loadSyntheaBundles, patientCompartmentTypes, startEmbeddedUpstream, type EmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { allPages, call, getBundle, ids, json, link, matches } from './upstream-helpers.ts';

let up: EmbeddedUpstream;
/** Bare Patient ids by given name, for the two patients seeded before listening. */
const patients: Record<string, string> = {};

before(async () => {
  up = await startEmbeddedUpstream({ bundles: loadSyntheaBundles(['Alberto_Atencio', 'Antonio_Castellanos']) });
  for (const given of ['Alberto', 'Antonio']) {
    const found = await getBundle(`${up.url}/Patient?given=${given}`);
    assert.equal(found.total, 1);
    patients[given] = found.entry?.[0]?.resource?.id as string;
  }
});
after(() => up.close());

async function observationsOf(patientId: string): Promise<Observation[]> {
  const pages = await allPages(`${up.url}/Observation?patient=${patientId}&_count=1000`);
  return pages.flatMap((p) => matches(p).map((e) => e.resource as Observation));
}

describe('transactions and batches', () => {
  test('a Synthea transaction over HTTP resolves urn:uuid references and is found by bare patient id', async () => {
    const [bundle] = loadSyntheaBundles(['Alejandro_Riojas']);
    const expected = bundle.entry?.filter((e) => e.resource?.resourceType === 'Observation').length;
    const answer = await call<Bundle>(up.url, json(bundle));
    assert.equal(answer.status, 200);
    assert.equal(answer.body.type, 'transaction-response');
    assert.ok(answer.body.entry?.every((e) => e.response?.status === '201'));
    const patientLocation = answer.body.entry?.[0]?.response?.location as string;
    assert.match(patientLocation, /^Patient\/[^/]+$/);
    const patientId = patientLocation.split('/')[1];

    for (const query of [`patient=${patientId}`, `subject=${patientId}`, `patient=Patient/${patientId}`, `subject=Patient/${patientId}`]) {
      const found = await getBundle(`${up.url}/Observation?${query}&_count=1000`);
      assert.equal(found.total, expected, query);
      assert.ok(matches(found).every((e) => (e.resource as Observation).subject?.reference === `Patient/${patientId}`), query);
    }
  });

  test('a transaction rewrites urn:uuid references between its entries', async () => {
    const answer = await call<Bundle>(
      up.url,
      json({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { fullUrl: 'urn:uuid:3f2a0c1e-0000-4000-8000-000000000001', resource: { resourceType: 'Patient', name: [{ family: 'Txn' }] }, request: { method: 'POST', url: 'Patient' } },
          {
            resource: { resourceType: 'Observation', status: 'final', code: { text: 'txn' }, subject: { reference: 'urn:uuid:3f2a0c1e-0000-4000-8000-000000000001' } },
            request: { method: 'POST', url: 'Observation' },
          },
        ],
      }),
    );
    assert.equal(answer.status, 200);
    const [patientEntry, observationEntry] = answer.body.entry as BundleEntry[];
    assert.equal((observationEntry.resource as Observation).subject?.reference, `Patient/${patientEntry.resource?.id}`);
  });

  test('a batch runs each entry on its own: one failure does not stop the others', async () => {
    const answer = await call<Bundle>(
      up.url,
      json({
        resourceType: 'Bundle',
        type: 'batch',
        entry: [
          { resource: { resourceType: 'Patient', id: 'batch-ok', name: [{ family: 'Batch' }] }, request: { method: 'PUT', url: 'Patient/batch-ok' } },
          { resource: { resourceType: 'Patient', id: 'other-id' }, request: { method: 'PUT', url: 'Patient/batch-mismatch' } },
        ],
      }),
    );
    assert.equal(answer.status, 200);
    assert.equal(answer.body.type, 'batch-response');
    assert.match(answer.body.entry?.[0]?.response?.status ?? '', /^20[01]$/);
    assert.equal(answer.body.entry?.[1]?.response?.status, '400');
    assert.equal((await call(`${up.url}/Patient/batch-ok`)).status, 200);
  });
});

describe('search', () => {
  test('paging links followed to the end give every match once, in the order of one big page', async () => {
    const id = patients.Alberto;
    const whole = await getBundle(`${up.url}/Observation?patient=${id}&_count=1000`);
    const pages = await allPages(`${up.url}/Observation?patient=${id}&_count=7`);
    const paged = pages.flatMap((p) => ids(matches(p)));
    assert.ok(pages.length > 2);
    assert.deepEqual(paged, ids(matches(whole)));
    assert.equal(new Set(paged).size, whole.total);
    for (const page of pages) {
      assert.equal(page.total, whole.total);
      assert.ok(link(page, 'self')?.startsWith(`${up.url}/Observation?`));
      for (const entry of page.entry ?? []) assert.equal(entry.fullUrl, `${up.url}/${entry.resource?.resourceType}/${entry.resource?.id}`);
    }
    const second = pages[1];
    assert.equal(link(second, 'previous'), link(pages[0], 'first'));
    const previous = await getBundle(link(second, 'previous') as string);
    assert.deepEqual(ids(matches(previous)), ids(matches(pages[0])));
  });

  test('_include adds the referenced resources once, as include entries', async () => {
    const page = await getBundle(`${up.url}/Observation?patient=${patients.Alberto}&_count=10&_include=Observation:encounter`);
    const wanted = new Set(matches(page).map((e) => (e.resource as Observation).encounter?.reference));
    const included = (page.entry ?? []).filter((e) => e.search?.mode === 'include');
    assert.ok(wanted.size > 0);
    assert.deepEqual(new Set(ids(included)), wanted);
    assert.equal(new Set(ids(included)).size, included.length);
    assert.equal(page.total, matches(await getBundle(`${up.url}/Observation?patient=${patients.Alberto}&_count=1000`)).length);
  });

  test('_revinclude adds every resource pointing at the matches', async () => {
    const id = patients.Antonio;
    const page = await getBundle(`${up.url}/Patient?_id=${id}&_revinclude=Observation:subject`);
    assert.deepEqual(ids(matches(page)), [`Patient/${id}`]);
    const included = (page.entry ?? []).filter((e) => e.search?.mode === 'include');
    const observations = await observationsOf(id);
    assert.ok(observations.length > 0);
    assert.deepEqual(new Set(ids(included)), new Set(observations.map((o) => `Observation/${o.id}`)));
  });

  const searches: { name: string; query: (all: Observation[]) => string; keep: (o: Observation, all: Observation[]) => boolean }[] = [
    {
      name: 'token system|code',
      query: () => 'code=http://loinc.org|8302-2',
      keep: (o) => Boolean(o.code.coding?.some((c) => c.system === 'http://loinc.org' && c.code === '8302-2')),
    },
    { name: 'token code only, two values', query: () => 'code=8302-2,29463-7', keep: (o) => Boolean(o.code.coding?.some((c) => c.code === '8302-2' || c.code === '29463-7')) },
    { name: 'date ge (middle effective date)', query: (all) => `date=ge${middleDate(all)}`, keep: (o, all) => (o.effectiveDateTime as string) >= middleDate(all) },
    { name: 'date lt (middle effective date)', query: (all) => `date=lt${middleDate(all)}`, keep: (o, all) => (o.effectiveDateTime as string) < middleDate(all) },
    { name: '_id', query: (all) => `_id=${all[3].id}`, keep: (o, all) => o.id === all[3].id },
    { name: 'token with :not', query: () => 'status:not=final', keep: (o) => o.status !== 'final' },
  ];
  function middleDate(all: Observation[]): string {
    const dates = all.map((o) => o.effectiveDateTime as string).sort();
    return dates[Math.floor(dates.length / 2)].slice(0, 10);
  }
  for (const scenario of searches) {
    test(`search by ${scenario.name} equals filtering the patient's observations`, async () => {
      const all = await observationsOf(patients.Alberto);
      const expected = all.filter((o) => scenario.keep(o, all)).map((o) => `Observation/${o.id}`);
      const found = await getBundle(`${up.url}/Observation?patient=${patients.Alberto}&${scenario.query(all)}&_count=1000`);
      assert.deepEqual(new Set(ids(matches(found))), new Set(expected));
      assert.equal(found.total, expected.length);
    });
  }

  test('string search on Patient.name matches by prefix, case-insensitively', async () => {
    const found = await getBundle(`${up.url}/Patient?name=atenc`);
    assert.deepEqual(ids(matches(found)), [`Patient/${patients.Alberto}`]);
  });

  const sorts: { name: string; sort: string; key: (o: Observation) => string; descending: boolean }[] = [
    { name: 'date ascending', sort: 'date', key: (o) => o.effectiveDateTime as string, descending: false },
    { name: 'date descending', sort: '-date', key: (o) => o.effectiveDateTime as string, descending: true },
    { name: '_lastUpdated ascending', sort: '_lastUpdated', key: (o) => o.meta?.lastUpdated as string, descending: false },
    { name: '_lastUpdated descending', sort: '-_lastUpdated', key: (o) => o.meta?.lastUpdated as string, descending: true },
  ];
  for (const scenario of sorts) {
    test(`_sort=${scenario.sort} orders by ${scenario.name}`, async () => {
      const found = await getBundle(`${up.url}/Observation?patient=${patients.Antonio}&_sort=${scenario.sort}&_count=1000`);
      const keys = matches(found).map((e) => scenario.key(e.resource as Observation));
      const sorted = [...keys].sort();
      assert.deepEqual(keys, scenario.descending ? sorted.reverse() : sorted);
      assert.ok(new Set(keys).size > 1);
    });
  }

  test('_lastUpdated=gt finds only what was written after the instant', async () => {
    const before = await getBundle(`${up.url}/Observation?_sort=-_lastUpdated&_count=1`);
    const instant = (before.entry?.[0]?.resource as Resource).meta?.lastUpdated as string;
    const created = await call<Observation>(`${up.url}/Observation`, json({ resourceType: 'Observation', status: 'final', code: { text: 'late' } }));
    assert.equal(created.status, 201);
    const found = await getBundle(`${up.url}/Observation?_lastUpdated=gt${encodeURIComponent(instant)}`);
    assert.deepEqual(ids(matches(found)), [`Observation/${created.body.id}`]);
  });

  test('POST _search with a form body equals GET search, links are GET URLs', async () => {
    const viaGet = await getBundle(`${up.url}/Observation?subject=${patients.Antonio}&_count=5`);
    const viaPost = await call<Bundle>(`${up.url}/Observation/_search`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `subject=${patients.Antonio}&_count=5`,
    });
    assert.equal(viaPost.status, 200);
    assert.deepEqual(ids(matches(viaPost.body)), ids(matches(viaGet)));
    assert.equal(link(viaPost.body, 'next'), link(viaGet, 'next'));
  });

  test('_summary=count answers the total only', async () => {
    const found = await getBundle(`${up.url}/Observation?patient=${patients.Alberto}&_summary=count`);
    assert.equal(found.entry, undefined);
    assert.equal(found.total, (await observationsOf(patients.Alberto)).length);
  });
});

describe('Patient compartment', () => {
  test('compartment search equals patient= search for Observation, for each patient', async () => {
    for (const id of Object.values(patients)) {
      const compartment = await allPages(`${up.url}/Patient/${id}/Observation?_count=13`);
      const byParam = await observationsOf(id);
      assert.deepEqual(new Set(compartment.flatMap((p) => ids(matches(p)))), new Set(byParam.map((o) => `Observation/${o.id}`)));
      assert.ok(byParam.length > 0);
    }
  });

  test('compartment search applies the other parameters too', async () => {
    const id = patients.Alberto;
    const compartment = await getBundle(`${up.url}/Patient/${id}/Observation?code=8302-2`);
    const byParam = await getBundle(`${up.url}/Observation?patient=${id}&code=8302-2`);
    assert.deepEqual(ids(matches(compartment)), ids(matches(byParam)));
    assert.ok((byParam.total ?? 0) > 0);
  });

  test('$everything pages through the patient and every compartment resource; count equals the sum over types', async () => {
    const id = patients.Antonio;
    const pages = await allPages(`${up.url}/Patient/${id}/$everything?_count=25`);
    const all = pages.flatMap((p) => ids(p.entry ?? []));
    assert.equal(all[0], `Patient/${id}`);
    assert.equal(new Set(all).size, all.length);
    assert.equal(all.length, pages[0].total);
    let sum = 1;
    for (const type of patientCompartmentTypes().keys()) {
      if (type === 'Patient') continue;
      sum += (await getBundle(`${up.url}/Patient/${id}/${type}?_summary=count`)).total ?? 0;
    }
    assert.equal(pages[0].total, sum);
    assert.ok(all.some((r) => r.startsWith('Encounter/')) && all.some((r) => r.startsWith('Claim/')));
  });
});

describe('read, write and history', () => {
  test('create, update, delete: headers, history order, tombstone', async () => {
    const created = await call<Observation>(
      `${up.url}/Observation`,
      json({ resourceType: 'Observation', status: 'preliminary', code: { text: 'hist' }, subject: { reference: `Patient/${patients.Alberto}` } }),
    );
    assert.equal(created.status, 201);
    const id = created.body.id as string;
    const v1 = created.body.meta?.versionId as string;
    assert.equal(created.headers.get('etag'), `W/"${v1}"`);
    assert.equal(created.headers.get('location'), `${up.url}/Observation/${id}/_history/${v1}`);
    assert.equal(created.headers.get('last-modified'), new Date(created.body.meta?.lastUpdated as string).toUTCString());

    const updated = await call<Observation>(`${up.url}/Observation/${id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ ...created.body, status: 'final' }),
    });
    assert.equal(updated.status, 200);
    const v2 = updated.body.meta?.versionId as string;
    assert.notEqual(v2, v1);
    assert.equal(updated.headers.get('etag'), `W/"${v2}"`);
    const read = await call<Observation>(`${up.url}/Observation/${id}`);
    assert.equal(read.headers.get('etag'), `W/"${v2}"`);
    assert.equal(read.body.status, 'final');
    const vread = await call<Observation>(`${up.url}/Observation/${id}/_history/${v1}`);
    assert.equal(vread.status, 200);
    assert.equal(vread.body.status, 'preliminary');
    assert.equal(vread.headers.get('etag'), `W/"${v1}"`);

    const first = await getBundle(`${up.url}/Observation/${id}/_history`);
    const second = await getBundle(`${up.url}/Observation/${id}/_history`);
    assert.deepEqual(second, first);
    assert.deepEqual(
      first.entry?.map((e) => [e.resource?.meta?.versionId, e.request?.method, e.request?.url, e.response?.status, e.fullUrl]),
      [
        [v2, 'PUT', `Observation/${id}`, '200 OK', `${up.url}/Observation/${id}`],
        [v1, 'POST', 'Observation', '201 Created', `${up.url}/Observation/${id}`],
      ],
    );

    assert.equal((await call(`${up.url}/Observation/${id}`, { method: 'DELETE' })).status, 200);
    const gone = await call<OperationOutcome>(`${up.url}/Observation/${id}`);
    assert.equal(gone.status, 410);
    assert.equal(gone.body.resourceType, 'OperationOutcome');
    const afterDelete = await getBundle(`${up.url}/Observation/${id}/_history`);
    assert.equal(afterDelete.entry?.length, 3);
    assert.equal(afterDelete.entry?.[0]?.request?.method, 'DELETE');
    assert.equal(afterDelete.entry?.[0]?.resource, undefined);
    assert.equal(afterDelete.entry?.[0]?.fullUrl, `${up.url}/Observation/${id}`);
    const typeHistory = await getBundle(`${up.url}/Observation/_history?_count=2`);
    assert.equal(typeHistory.entry?.[0]?.request?.url, `Observation/${id}`);
    assert.equal(typeHistory.entry?.[0]?.request?.method, 'DELETE');
    assert.equal(typeHistory.entry?.[1]?.resource?.meta?.versionId, v2);
    const systemHistory = await getBundle(`${up.url}/_history?_count=1`);
    assert.deepEqual(systemHistory.entry?.[0]?.request, typeHistory.entry?.[0]?.request);
    const search = await getBundle(`${up.url}/Observation?_id=${id}`);
    assert.equal(search.total, 0);
  });

  test('type and system history are newest first, stable across calls, and page without gaps', async () => {
    for (const path of ['Observation/_history', '_history']) {
      const first = await getBundle(`${up.url}/${path}?_count=50`);
      const again = await getBundle(`${up.url}/${path}?_count=50`);
      assert.deepEqual(again.entry, first.entry);
      const stamps = (first.entry ?? []).map((e) => e.response?.lastModified as string);
      assert.deepEqual(stamps, [...stamps].sort().reverse());
      for (const entry of first.entry ?? []) {
        assert.ok(entry.fullUrl?.startsWith(`${up.url}/`));
        assert.ok(entry.request?.method && entry.request.url);
        assert.match(entry.response?.etag ?? '', /^W\/"[^"]+"$/);
      }
      const pages = await allPages(`${up.url}/${path}?_count=200`);
      const seen = pages.flatMap((p) => (p.entry ?? []).map((e) => e.response?.etag));
      assert.equal(seen.length, first.total);
      assert.equal(new Set(seen).size, seen.length);
    }
  });

  test('PUT with a new id creates the resource (201, Location)', async () => {
    const answer = await call<Patient>(`${up.url}/Patient/put-created`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Patient', id: 'put-created' }),
    });
    assert.equal(answer.status, 201);
    assert.match(answer.headers.get('location') ?? '', new RegExp(`^${up.url}/Patient/put-created/_history/`));
  });

  test('Binary is stored and served as a JSON resource', async () => {
    const data = Buffer.from('hello binary').toString('base64');
    const created = await call<Resource>(`${up.url}/Binary`, json({ resourceType: 'Binary', contentType: 'text/plain', data }));
    assert.equal(created.status, 201);
    const read = await call<{ resourceType: string; data: string }>(`${up.url}/Binary/${created.body.id}`, { headers: { accept: 'application/fhir+json' } });
    assert.equal(read.status, 200);
    assert.equal(read.body.resourceType, 'Binary');
    assert.equal(read.body.data, data);
  });
});

describe('errors answer an OperationOutcome with the right status', () => {
  const errors: { name: string; path: string; init?: RequestInit; status: number }[] = [
    { name: 'unknown resource', path: '/Observation/does-not-exist', status: 404 },
    { name: 'unknown resource type', path: '/NotAType?x=1', status: 404 },
    { name: 'unknown search parameter', path: '/Observation?no-such-param=1', status: 400 },
    { name: 'malformed date', path: '/Observation?date=yesterday', status: 400 },
    { name: 'non-numeric _count', path: '/Observation?_count=many', status: 400 },
    { name: 'include of a non-reference parameter', path: '/Observation?_include=Observation:code', status: 400 },
    { name: 'unsupported sort', path: '/Observation?_sort=no-such-param', status: 400 },
    { name: 'compartment of a type outside it', path: '/Patient/x/Organization', status: 400 },
    { name: '$everything of an unknown patient', path: '/Patient/nobody/$everything', status: 404 },
    { name: 'XML only', path: '/Patient', init: { headers: { accept: 'application/fhir+xml' } }, status: 406 },
    { name: 'XML body', path: '/Patient', init: { method: 'POST', headers: { 'content-type': 'application/fhir+xml' }, body: '<Patient/>' }, status: 415 },
    { name: 'broken JSON', path: '/Patient', init: { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: '{"resourceType":' }, status: 400 },
    { name: 'outside the FHIR base', path: '/../other', status: 404 },
  ];
  for (const scenario of errors) {
    test(scenario.name, async () => {
      const answer = await call<OperationOutcome>(`${up.url}${scenario.path}`, scenario.init);
      assert.equal(answer.status, scenario.status, JSON.stringify(answer.body));
      assert.equal(answer.body.resourceType, 'OperationOutcome');
      assert.match(answer.headers.get('content-type') ?? '', /^application\/fhir\+json/);
    });
  }
});

describe('metadata and transport', () => {
  test('metadata lists every type with interactions and search parameters', async () => {
    const answer = await call<CapabilityStatement>(`${up.url}/metadata`);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.fhirVersion, '4.0.1');
    const resources = answer.body.rest?.[0]?.resource ?? [];
    const observation = resources.find((r) => r.type === 'Observation');
    assert.deepEqual(
      ['read', 'vread', 'search-type', 'history-type'].filter((code) => observation?.interaction?.some((i) => i.code === code)),
      ['read', 'vread', 'search-type', 'history-type'],
    );
    const patientParam = observation?.searchParam?.find((p) => p.name === 'patient');
    assert.equal(patientParam?.type, 'reference');
    assert.equal(patientParam?.definition, 'http://hl7.org/fhir/SearchParameter/clinical-patient');
    assert.ok(resources.length > 140);
    assert.ok(resources.find((r) => r.type === 'Patient')?.operation?.some((o) => o.name === 'everything'));
    assert.equal(answer.body.implementation?.url, up.url);
  });

  test('gzip when the client accepts it, identity otherwise', async () => {
    const raw = (acceptEncoding?: string): Promise<{ headers: http.IncomingHttpHeaders; body: Buffer }> =>
      new Promise((resolve, reject) => {
        const req = http.get(`${up.url}/Observation?_count=50`, { headers: acceptEncoding ? { 'accept-encoding': acceptEncoding } : {} }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        });
        req.on('error', reject);
      });
    const zipped = await raw('gzip, deflate');
    assert.equal(zipped.headers['content-encoding'], 'gzip');
    const unzipped = JSON.parse(zlib.gunzipSync(zipped.body).toString('utf8')) as Bundle;
    const plain = await raw();
    assert.equal(plain.headers['content-encoding'], undefined);
    assert.deepEqual(unzipped, JSON.parse(plain.body.toString('utf8')));
    assert.ok(zipped.body.length < plain.body.length);
    assert.equal((await raw('gzip;q=0')).headers['content-encoding'], undefined);
  });
});

describe('seeding with resources keeps their ids', () => {
  test('resources given to startEmbeddedUpstream are readable under their ids', async () => {
    const seeded = await startEmbeddedUpstream({
      resources: [
        { resourceType: 'Patient', id: 'seed-p1', name: [{ family: 'Seed' }] },
        { resourceType: 'Observation', id: 'seed-o1', status: 'final', code: { text: 'seed' }, subject: { reference: 'Patient/seed-p1' } },
      ],
    });
    try {
      assert.equal((await call(`${seeded.url}/Patient/seed-p1`)).status, 200);
      const found = await getBundle(`${seeded.url}/Observation?patient=seed-p1`);
      assert.deepEqual(ids(matches(found)), ['Observation/seed-o1']);
      const history = await getBundle(`${seeded.url}/Patient/seed-p1/_history`);
      assert.equal(history.entry?.[0]?.request?.method, 'PUT');
      assert.equal(history.entry?.[0]?.response?.status, '201 Created');
    } finally {
      await seeded.close();
    }
  });
});
