// Computed security labels end to end (SPEC §4.7, issue 14): unlabelled sensitive data of every
// category is withheld under a consent that denies the category, released under one that permits it
// with the label persisted, and nothing is withheld by default; every read surface goes through it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Bundle, Coding, Consent, ConsentProvision, Resource } from '@medplum/fhirtypes';
import { V3_ACT_CODE, V3_CONFIDENTIALITY } from '../../src/fhir/systems.ts';
import { consent } from '../decide/fixtures.ts';
import { consoleModel } from '../audit/fixtures.ts';
import { journalEvents, requestIdOf } from '../reliability/support.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';
import { categories, controls, factResource, readPath, type Category } from './categories.ts';

const drA = { sub: 'dr-a', client_id: 'app', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: pou('TREAT') };
const act = (code: string): Coding => ({ system: V3_ACT_CODE, code });
const slug = (c: Category): string => c.name.replace(/[^a-z]+/gi, '-').slice(0, 20).toLowerCase().replace(/-$/, '');

type Mode = 'deny' | 'permit' | 'none';
const patientOf = (c: Category, mode: Mode): string => `${slug(c)}-${mode}`;

function consentFor(c: Category, mode: Mode): Consent[] {
  const patient = { reference: `Patient/${patientOf(c, mode)}` };
  // deny: "withhold this category"; permit: "release normal data and this category" (everything else refused).
  const provision: ConsentProvision | undefined =
    mode === 'deny' ? { type: 'deny', securityLabel: [act(c.consentLabel)] } : mode === 'permit' ? { type: 'permit', securityLabel: [{ system: V3_CONFIDENTIALITY, code: 'N' }, act(c.consentLabel)] } : undefined;
  return provision ? [consent(`consent-${patientOf(c, mode)}`, provision, { patient })] : [];
}

function dataFor(c: Category, mode: Mode): { sensitive: Resource[]; control: Resource[] } {
  const p = patientOf(c, mode);
  return {
    sensitive: c.facts.map((f, i) => factResource(f, `${p}-s${i}`, p)),
    control: controls.map((f, i) => factResource(f, `${p}-c${i}`, p)),
  };
}

const modes: Mode[] = ['deny', 'permit', 'none'];
function allResources(): Resource[] {
  return [containerOf(patientOf(categories[0], 'deny')), ...categories.flatMap((c) =>
    modes.flatMap((mode) => {
      const { sensitive, control } = dataFor(c, mode);
      return [{ resourceType: 'Patient', id: patientOf(c, mode) } as Resource, ...sensitive, ...control, ...consentFor(c, mode)];
    }),
  )];
}

/** A CarePlan holding an unlabelled SUD Condition as a contained resource (SPEC §5: contained resources are decided). */
function containerOf(patient: string): Resource {
  return {
    resourceType: 'CarePlan', id: `${patient}-plan`, status: 'active', intent: 'plan', subject: { reference: `Patient/${patient}` },
    contained: [{ resourceType: 'Condition', id: 'dx', subject: { reference: `Patient/${patient}` }, code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'F14.20' }] } }],
    addresses: [{ reference: '#dx' }],
  } as Resource;
}

const labelsOf = (r: Resource): string[] => (r.meta?.security ?? []).map((s) => s.code ?? '');

describe('computed security labels decide unlabelled data (SPEC §4.7)', () => {
  let h: Harness;
  let token: string;
  before(async () => {
    h = await startHarness({ resources: allResources() });
    token = await h.token(drA);
  });
  after(() => h.close());

  for (const c of categories) {
    test(`${c.name}: withheld under a consent denying ${c.consentLabel}; the control is released`, async () => {
      const { sensitive, control } = dataFor(c, 'deny');
      for (const r of sensitive) assert.equal((await h.request(readPath(r), { token })).status, 404, `${readPath(r)} (${JSON.stringify(r)}) is withheld`);
      for (const r of control) assert.equal((await h.request(readPath(r), { token })).status, 200, `control ${readPath(r)} is released`);
    });

    test(`${c.name}: released under a consent permitting ${c.consentLabel}, carrying ${c.expected}`, async () => {
      const { sensitive, control } = dataFor(c, 'permit');
      for (const r of sensitive) {
        const read = await h.request(readPath(r), { token });
        assert.equal(read.status, 200, `${readPath(r)} is released`);
        assert.ok(labelsOf(read.body).includes(c.expected), `${readPath(r)} carries ${c.expected}: ${labelsOf(read.body)}`);
        assert.ok(!labelsOf(read.body).includes('42CFRPart2'), 'the service never adds 42CFRPart2');
        assert.ok(!(read.body.meta?.security ?? []).some((s: Coding) => s.system === V3_CONFIDENTIALITY), 'no confidentiality by default');
      }
      for (const r of control) {
        const read = await h.request(readPath(r), { token });
        assert.equal(read.status, 200);
        assert.deepEqual(labelsOf(read.body), [], `control ${readPath(r)} gets no label`);
      }
    });

    test(`${c.name}: no consent → everything released (nothing withheld by default)`, async () => {
      const { sensitive, control } = dataFor(c, 'none');
      for (const r of [...sensitive, ...control]) assert.equal((await h.request(readPath(r), { token })).status, 200, readPath(r));
    });
  }

  test('every read surface decides on computed labels: search, history, batch, $everything', async () => {
    const c = categories[0];
    const p = patientOf(c, 'deny');
    const { sensitive, control } = dataFor(c, 'deny');
    const hidden = sensitive.map((r) => r.id ?? '');
    const ids = (b: Bundle): string[] => (b.entry ?? []).flatMap((e) => (e.resource?.id ? [e.resource.id] : []));
    const search = await h.request(`Condition?patient=Patient/${p}`, { token });
    assert.equal(search.status, 200);
    const everything = await h.request(`Patient/${p}/$everything`, { token });
    assert.equal(everything.status, 200);
    const history = await h.request(`Condition/${sensitive[0].id}/_history`, { token });
    const batch = await h.request('', {
      token,
      method: 'POST',
      body: { resourceType: 'Bundle', type: 'batch', entry: [sensitive[0], control[1]].map((r) => ({ request: { method: 'GET', url: readPath(r) } })) },
    });
    assert.equal(batch.status, 200);
    for (const [surface, body] of [['search', search.body], ['$everything', everything.body], ['batch', batch.body]] as const) {
      const shown = ids(body);
      assert.ok(!shown.some((id) => hidden.includes(id)), `${surface} shows no withheld resource: ${shown}`);
    }
    assert.ok(ids(search.body).includes(control[1].id ?? ''), 'the tobacco control is in the search');
    assert.ok(ids(everything.body).includes(control[0].id ?? ''), 'the control is in $everything');
    assert.ok(history.status === 404 || !ids(history.body).includes(sensitive[0].id ?? ''), 'history shows no withheld version');
    assert.equal(batch.body.entry[0].response.status.slice(0, 3), '404');
    assert.equal(batch.body.entry[1].response.status.slice(0, 3), '200');
  });

  test('a contained resource is labelled and decided too: removed from its released container', async () => {
    const read = await h.request(`CarePlan/${patientOf(categories[0], 'deny')}-plan`, { token });
    assert.equal(read.status, 200);
    assert.equal(read.body.contained, undefined, JSON.stringify(read.body.contained));
    assert.doesNotMatch(read.text, /F14\.20/);
  });

  test('the audit names the rule set and the system and code that labelled a withheld resource', async () => {
    const c = categories[1];
    const [r] = dataFor(c, 'deny').sensitive;
    const requestId = 'labeling-audit-1';
    assert.equal((await h.request(readPath(r), { token, headers: { 'x-request-id': requestId } })).status, 404);
    const events = (await journalEvents(h.auditDir)).filter((e) => requestIdOf(e) === requestId);
    const text = JSON.stringify(events);
    assert.match(text, /label:substance-use/);
    assert.match(text, /computed label ETHUD from http:\/\/hl7\.org\/fhir\/sid\/icd-10-cm\|F10\.20/);
  });

  test('the audit of a released resource names the labels it gained; an unlabelled one stays a plain entry', async () => {
    const c = categories[2];
    const [r] = dataFor(c, 'permit').sensitive;
    const control = dataFor(c, 'permit').control[1]; // the nicotine Condition
    const requestId = 'labeling-audit-released';
    const search = await h.request(`Condition?patient=Patient/${patientOf(c, 'permit')}`, { token, headers: { 'x-request-id': requestId } });
    assert.equal(search.status, 200);
    const entities = (await journalEvents(h.auditDir)).filter((e) => requestIdOf(e) === requestId).flatMap((e) => e.entity ?? []);
    // Compact entities name several resources (issue 15): read them as the console does.
    const entityOf = (ref: string) => entities.find((e) => consoleModel.resourcesOf(e).some((o) => o.reference.startsWith(ref)));
    assert.match(JSON.stringify(entityOf(readPath(r))), /label:substance-use.*computed label OPIOIDUD from http:\/\/hl7\.org\/fhir\/sid\/icd-10-cm\|F11\.20/);
    assert.ok(entityOf(readPath(control)), 'the control is audited as released');
    assert.doesNotMatch(JSON.stringify(entityOf(readPath(control))), /security-label/);
  });

  test('$disclosure-decision explains a computed label with its rule set', async () => {
    const c = categories[3];
    const [r] = dataFor(c, 'deny').sensitive;
    const auditor = await h.token({ sub: 'aud', client_id: 'console', fhirUser: 'Practitioner/auditor', scope: 'user/AuditEvent.rs system/Consent.r', extensions: pou('HOPERAT') });
    const answer = await h.request('$disclosure-decision', {
      token: auditor,
      method: 'POST',
      body: { resourceType: 'Parameters', parameter: [
        { name: 'actor', valueReference: { reference: 'Practitioner/dr-a' } },
        { name: 'purpose', valueCode: 'TREAT' },
        { name: 'scope', valueString: 'user/*.rs' },
        { name: 'reference', valueReference: { reference: readPath(r) } },
      ] },
    });
    assert.equal(answer.status, 200);
    const reasons = answer.body.parameter.filter((p: { name: string }) => p.name === 'reason').map((p: { valueString: string }) => p.valueString);
    assert.equal(answer.body.parameter[0].valueCode, 'deny');
    assert.ok(reasons.some((x: string) => x.startsWith('security-label label:mental-health') && x.includes('icd-10-cm|F32.9')), reasons.join('\n'));
  });
});
