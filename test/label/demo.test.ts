// The demo's labeling scene end to end (issue 14 "done when"): p3's unlabelled Synthea-style records are
// protected by a consent that withholds by category; Dr A sees them with the computed labels.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { demoResources, LABELING_DEMO_PATIENT } from '../../src/embedded/demo-data.ts';
import { personaClaims } from '../../src/embedded/personas.ts';
// @ts-expect-error the console's browser module is plain JavaScript without types
import { computedLabelsText, summarise } from '../../src/console/static/audit-model.js';
import { journalEvents, requestIdOf } from '../reliability/support.ts';
import { startHarness, type Harness } from '../support/harness.ts';

const ids = (b: Bundle): string[] => (b.entry ?? []).flatMap((e) => (e.resource?.id ? [e.resource.id] : [])).sort();

describe('demo: a consent by category protects unlabelled data', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ resources: demoResources() });
  });
  after(() => h.close());

  test('the records arrive unlabelled', () => {
    const p3 = demoResources().filter((r) => JSON.stringify(r).includes(`Patient/${LABELING_DEMO_PATIENT}`) && r.resourceType !== 'Consent');
    assert.ok(p3.length >= 6);
    for (const r of p3) assert.equal(r.meta?.security, undefined, `${r.resourceType}/${r.id}`);
  });

  const surfaces = ['Condition', 'Observation', 'MedicationRequest'].map((type) => `${type}?patient=${LABELING_DEMO_PATIENT}`);
  test('Dr Bob (the persona curl line): SUD and mental-health records withheld, controls released', async () => {
    const token = await h.token(personaClaims('clinician-bob'));
    const shown = (await Promise.all(surfaces.map(async (s) => ids((await h.request(s, { token })).body)))).flat().sort();
    assert.deepEqual(shown, ['p3-bp', 'p3-nicotine', 'p3-smoking']);
  });

  test('the why view says which computed label decided a withheld record', async () => {
    const token = await h.token(personaClaims('clinician-bob'));
    const requestId = 'demo-why-labels';
    assert.equal((await h.request('Condition/p3-alcoholism', { token, headers: { 'x-request-id': requestId } })).status, 404);
    const [event] = (await journalEvents(h.auditDir)).filter((e) => requestIdOf(e) === requestId && e.entity?.some((x) => x.what?.reference?.startsWith('Condition/')));
    const withheld = summarise(event).resources.find((r: { reference: string }) => r.reference.startsWith('Condition/p3-alcoholism'));
    assert.deepEqual(computedLabelsText(withheld.rules), [
      'ETHUD (rule set substance-use, from http://snomed.info/sct|7200002)',
    ]);
  });

  test('Dr A: everything, with the computed labels in meta.security', async () => {
    const token = await h.token(personaClaims('clinician'));
    const all = await Promise.all(surfaces.map(async (s) => ((await h.request(s, { token })).body as Bundle).entry ?? []));
    const labels = Object.fromEntries(all.flat().map((e) => [e.resource?.id, ((e.resource as Resource).meta?.security ?? []).map((c) => c.code).sort().join(',')]));
    assert.deepEqual(labels, {
      'p3-alcoholism': 'ETHUD',
      'p3-overdose': 'SUD',
      'p3-buprenorphine': 'OPIOIDUD',
      'p3-phq9': 'MH',
      'p3-bp': '',
      'p3-smoking': '',
      'p3-nicotine': '',
    });
  });
});
