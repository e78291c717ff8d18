// Indexed search over ~20k Observations (NOTES: the shipped MemoryRepository scan took ~12 s): results
// must equal the ground truth of the generator, including after updates and deletes move resources.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Observation } from '@medplum/fhirtypes';
import { startEmbeddedUpstream, type EmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { allPages, call, getBundle, ids, matches } from './upstream-helpers.ts';
import { syntheticObservations, toResources, type SyntheticObservation } from './upstream-synthetic.ts';

const PATIENTS = 10;
const truth: SyntheticObservation[] = syntheticObservations(20_000, PATIENTS);
let up: EmbeddedUpstream;

before(async () => {
  up = await startEmbeddedUpstream({ resources: toResources(truth, PATIENTS) });
});
after(() => up.close());

const ofPatient = (p: string): SyntheticObservation[] => truth.filter((o) => o.patient === p);

describe('search over 20,000 Observations', () => {
  test('patient=<bare id> totals equal the generator for every patient', async () => {
    for (let i = 0; i < PATIENTS; i++) {
      const found = await getBundle(`${up.url}/Observation?patient=p${i}&_summary=count`);
      assert.equal(found.total, ofPatient(`p${i}`).length, `p${i}`);
    }
  });

  const pageScenarios: { name: string; query: string; expected: () => SyntheticObservation[] }[] = [
    { name: 'patient=p3 in creation order', query: 'patient=p3', expected: () => ofPatient('p3') },
    { name: 'subject=Patient/p3', query: 'subject=Patient/p3', expected: () => ofPatient('p3') },
    { name: 'patient=p4 and a code', query: 'patient=p4&code=http://loinc.org|39156-5', expected: () => ofPatient('p4').filter((o) => o.code === '39156-5') },
    { name: 'a code alone (full scan)', query: 'code=8867-4', expected: () => truth.filter((o) => o.code === '8867-4') },
    {
      name: 'patient=p5 sorted by -date',
      query: 'patient=p5&_sort=-date',
      expected: () => [...ofPatient('p5')].sort((a, b) => (a.date < b.date ? 1 : a.date > b.date ? -1 : 0)),
    },
  ];
  for (const scenario of pageScenarios) {
    test(`${scenario.name}: total and a middle page match`, async () => {
      const expected = scenario.expected();
      assert.ok(expected.length > 100);
      const offset = Math.floor(expected.length / 2);
      const page = await getBundle(`${up.url}/Observation?${scenario.query}&_count=50&_offset=${offset}`);
      assert.equal(page.total, expected.length);
      assert.deepEqual(
        ids(matches(page)),
        expected.slice(offset, offset + 50).map((o) => `Observation/${o.id}`),
      );
    });
  }

  test('compartment search counts the performer link too (any compartment param)', async () => {
    for (const p of ['p0', 'p1', 'p7']) {
      const expected = truth.filter((o) => o.patient === p || o.performer === p).length;
      assert.ok(expected > ofPatient(p).length, p);
      const found = await getBundle(`${up.url}/Patient/${p}/Observation?_summary=count`);
      assert.equal(found.total, expected, p);
    }
  });

  test('updates and deletes keep the indexes exact', async () => {
    const moved = ofPatient('p8')[10];
    const current = await call<Observation>(`${up.url}/Observation/${moved.id}`);
    const put = await call<Observation>(`${up.url}/Observation/${moved.id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ ...current.body, subject: { reference: 'Patient/p9' } }),
    });
    assert.equal(put.status, 200);
    const removed = ofPatient('p9')[0];
    assert.equal((await call(`${up.url}/Observation/${removed.id}`, { method: 'DELETE' })).status, 200);

    const p8 = await getBundle(`${up.url}/Observation?patient=p8&_summary=count`);
    assert.equal(p8.total, ofPatient('p8').length - 1);
    const p9pages = await allPages(`${up.url}/Observation?patient=p9&_count=1000`);
    const p9ids = new Set(p9pages.flatMap((p) => ids(matches(p))));
    assert.equal(p9ids.size, ofPatient('p9').length);
    assert.equal(p9pages[0].total, ofPatient('p9').length);
    assert.ok(p9ids.has(`Observation/${moved.id}`));
    assert.ok(!p9ids.has(`Observation/${removed.id}`));
  });
});
