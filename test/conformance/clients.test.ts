// Paging a filtered search with real FHIR clients (issue 4 "Tests that must exist"): 60 Observations of
// which a third are withheld (R label, or a consent's instance deny), `_count=10`, through the gateway
// with fhir-kit-client, fhirclient (server-side) and MedplumClient. Every page but the last is full,
// no withheld id appears in any body or link, the union is exactly the permitted set, no duplicates.
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { after, before, describe, test } from 'node:test';
import { ClientStorage, MedplumClient, MemoryStorage } from '@medplum/core';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { Client as FhirKitClient } from 'fhir-kit-client';
import { startHarness, type Harness } from '../support/harness.ts';
import { conf, consent, obs, patient, purpose } from './support.ts';

const require = createRequire(import.meta.url);
const smart = require('fhirclient') as typeof import('fhirclient');

const PID = 'pc';
const PAGE = 10;
const ids = Array.from({ length: 60 }, (_, i) => `${PID}-obs-${String(i).padStart(3, '0')}`);
// Every third is labelled R (above the consent's clearance N); two more are denied by instance.
const labelled = new Set(ids.filter((_, i) => i % 3 === 0));
const deniedByInstance = new Set([ids[4], ids[5]]);
const withheld = ids.filter((id) => labelled.has(id) || deniedByInstance.has(id));
const permitted = ids.filter((id) => !withheld.includes(id)).sort();

const resources: Resource[] = [
  { resourceType: 'Practitioner', id: 'dr-a' },
  patient(PID),
  consent(`${PID}-consent`, PID, {
    type: 'permit',
    purpose: purpose('TREAT', 'PATRQT'),
    securityLabel: [conf('N')],
    provision: [{ type: 'deny', data: [...deniedByInstance].map((id) => ({ meaning: 'instance' as const, reference: { reference: `Observation/${id}` } })) }],
  }),
  ...ids.map((id, i) => obs(id, PID, labelled.has(id) ? [conf('R')] : [], { effectiveDateTime: new Date(Date.UTC(2024, 0, 1 + i)).toISOString() })),
];

let h: Harness;
let clinician: string;
let patientToken: string;

before(async () => {
  h = await startHarness({ resources });
  clinician = await h.token({ sub: 'dr-a', client_id: 'ehr', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: { ihe_iua: { purpose_of_use: { code: 'TREAT' } } } });
  patientToken = await h.token({ sub: 'pt-pc', client_id: 'patient-app', patient: PID, fhirUser: `Patient/${PID}`, scope: 'launch/patient patient/*.rs' });
});
after(async () => {
  await h.close();
});

/** The checks every client's pages must pass. */
function assertPages(pages: readonly Bundle[]): void {
  assert.ok(pages.length >= Math.ceil(permitted.length / PAGE), `at least ${Math.ceil(permitted.length / PAGE)} pages, got ${pages.length}`);
  const seen: string[] = [];
  pages.forEach((page, i) => {
    const matches = (page.entry ?? []).filter((e) => e.search?.mode !== 'outcome').map((e) => e.resource?.id ?? '');
    const next = page.link?.find((l) => l.relation === 'next');
    if (i < pages.length - 1) {
      assert.equal(matches.length, PAGE, `page ${i + 1} of ${pages.length} is full`);
      assert.ok(next, `page ${i + 1} links to the next`);
    } else assert.equal(next, undefined, 'the last page has no next link');
    assert.equal(page.total, undefined, 'no Bundle.total');
    for (const link of page.link ?? []) assert.ok(link.url.startsWith(h.base), `link ${link.relation} points at the gateway`);
    const text = JSON.stringify(page);
    for (const id of withheld) assert.ok(!text.includes(id), `withheld ${id} appears on page ${i + 1}`);
    seen.push(...matches);
  });
  assert.equal(new Set(seen).size, seen.length, 'no duplicates across pages');
  assert.deepEqual([...seen].sort(), permitted, 'the union is exactly the permitted set');
}

describe('paging a filtered search with real clients', () => {
  test('fhir-kit-client: search + nextPage', async () => {
    const client = new FhirKitClient({ baseUrl: h.base, bearerToken: clinician });
    const pages: Bundle[] = [];
    let bundle = (await client.search({ resourceType: 'Observation', searchParams: { patient: PID, _count: PAGE } })) as unknown as Bundle;
    for (;;) {
      pages.push(bundle);
      assert.ok(pages.length <= 20, 'paging terminates');
      const next = client.nextPage({ bundle: bundle as never });
      if (!next) break;
      bundle = (await next) as unknown as Bundle;
    }
    assertPages(pages);
  });

  test('fhirclient (server-side): client.patient.request with pageLimit 0', async () => {
    const req = { url: '/app', headers: { host: '127.0.0.1' }, method: 'GET' } as unknown as IncomingMessage;
    const res = { setHeader: () => undefined, end: () => undefined, writeHead: () => undefined } as unknown as ServerResponse;
    const client = smart(req, res).client({ serverUrl: h.base, tokenResponse: { access_token: patientToken, patient: PID } });
    const pages: Bundle[] = [];
    await client.patient.request<Bundle>(`Observation?_count=${PAGE}`, {
      pageLimit: 0,
      flat: false,
      onPage: (page) => {
        pages.push(page as unknown as Bundle);
      },
    });
    assertPages(pages);
  });

  test('MedplumClient: searchResourcePages', async () => {
    const medplum = new MedplumClient({ baseUrl: `${new URL(h.base).origin}/`, fhirUrlPath: 'fhir', fetch: globalThis.fetch.bind(globalThis), storage: new ClientStorage(new MemoryStorage()) });
    medplum.setAccessToken(clinician);
    const pages: Bundle[] = [];
    for await (const page of medplum.searchResourcePages('Observation', { patient: PID, _count: String(PAGE) })) {
      assert.ok(page.bundle, 'each page carries its Bundle');
      pages.push(page.bundle as Bundle);
      assert.ok(pages.length <= 20, 'paging terminates');
    }
    assertPages(pages);
  });
});
