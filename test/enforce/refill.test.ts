// Refilling short pages (SPEC §5): when entries are withheld the gateway reads on, asking the upstream only
// for about what the release rate so far says will fill the page — and paging still shows every released
// entry exactly once, in order, and nothing withheld.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Bundle, Observation, Resource } from '@medplum/fhirtypes';
import { startEmbeddedUpstream, type EmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { V3_CONFIDENTIALITY } from '../../src/fhir/systems.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';

const P = 'prf';
const day = (i: number) => new Date(Date.UTC(2024, 0, 1) + i * 86_400_000).toISOString().slice(0, 10);
/** 60 Observations by date; every third is restricted (R) and withheld from Dr A under TREAT. */
const observations: Observation[] = Array.from({ length: 60 }, (_, i) => ({
  resourceType: 'Observation',
  id: `rf-${String(i).padStart(2, '0')}`,
  status: 'final',
  code: { text: 'x' },
  subject: { reference: `Patient/${P}` },
  effectiveDateTime: day(i),
  ...(i % 3 === 2 ? { meta: { security: [{ system: V3_CONFIDENTIALITY, code: 'R' }] } } : {}),
}));
const released = observations.filter((_, i) => i % 3 !== 2).map((o) => o.id as string);
const resources: Resource[] = [{ resourceType: 'Patient', id: P }, ...observations];

let upstream: EmbeddedUpstream;
let proxy: FaultProxy;
let h: Harness;
let token: string;

before(async () => {
  upstream = await startEmbeddedUpstream({ resources });
  proxy = await startFaultProxy(upstream.url);
  h = await startHarness({ upstream, settings: { UPSTREAM_URL: proxy.url } });
  token = await h.token({ sub: 'dr-a', client_id: 'ehr', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: pou('TREAT') });
});
after(async () => {
  await h.close();
  await proxy.close();
  await upstream.close();
});

const ids = (bundle: Bundle): string[] => (bundle.entry ?? []).map((e) => e.resource?.id ?? '');
const nextOf = (bundle: Bundle): string | undefined => bundle.link?.find((l) => l.relation === 'next')?.url;
const observationCounts = (): number[] =>
  proxy.seen.filter((target) => target.includes('/Observation?')).map((target) => Number(new URL(target, 'http://x').searchParams.get('_count')));

async function pageThrough(first: string): Promise<string[][]> {
  const pages: string[][] = [];
  let url: string | undefined = first;
  while (url) {
    const res = await h.request(url, { token });
    assert.equal(res.status, 200, res.text);
    pages.push(ids(res.body));
    url = nextOf(res.body);
    assert.ok(pages.length <= released.length, 'paging ends');
  }
  return pages;
}

describe('refilling pages with withheld entries', () => {
  test('the refill asks for about what is missing, not another full upstream page', async () => {
    await proxy.set('pass');
    const res = await h.request(`Observation?patient=${P}&_sort=date&_count=20`, { token });
    assert.deepEqual(ids(res.body), released.slice(0, 20));
    const counts = observationCounts();
    assert.ok(counts.length >= 2, `a refill happened: ${counts}`);
    assert.equal(counts[0], 22, 'the first read asks for the page, 5% and one more');
    // After 22 entries, ~15 released: ~5 more are needed at a rate of ~2/3 → ~9 entries, not 22.
    assert.ok(counts[1] < 15, `the refill asks for ${counts[1]}`);
    // The next page resumes with a full upstream page, not the refill's small one.
    const seen = proxy.seen.length;
    const next = nextOf(res.body);
    assert.ok(next);
    assert.deepEqual(ids((await h.request(next, { token })).body), released.slice(20, 40));
    const resumed = proxy.seen.slice(seen).filter((target) => target.includes('/Observation?')).map((target) => Number(new URL(target, 'http://x').searchParams.get('_count')));
    assert.equal(resumed[0], 22, `the continuation asks for ${resumed}`);
  });

  for (const query of ['_count=20', '_count=7', '_count=20&_offset=10', '_count=1']) {
    test(`paging with ${query} shows every released entry once, in order, and nothing withheld`, async () => {
      await proxy.set('pass');
      const pages = await pageThrough(`Observation?patient=${P}&_sort=date&${query}`);
      const offset = Number(new URLSearchParams(query).get('_offset') ?? 0);
      assert.deepEqual(pages.flat(), released.slice(offset));
      const count = Number(new URLSearchParams(query).get('_count'));
      for (const page of pages.slice(0, -1)) assert.equal(page.length, count, 'only the last page may be short');
    });
  }
});
