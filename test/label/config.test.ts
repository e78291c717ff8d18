// The `labeling` policy (SPEC §4.6/§4.7) and `POST $security-label`, end to end through the gateway:
// off switch, a configured confidentiality, extra rule files, start-up stopped by a broken rule file.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Bundle, Coding, Resource } from '@medplum/fhirtypes';
import { loadPolicy } from '../../src/config/settings.ts';
import { startEmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { V3_ACT_CODE, V3_CONFIDENTIALITY } from '../../src/fhir/systems.ts';
import { consent } from '../decide/fixtures.ts';
import { journalEvents, requestIdOf } from '../reliability/support.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';
import { ICD, LOINC, SCT } from './categories.ts';

const drA = { sub: 'dr-a', client_id: 'app', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: pou('TREAT') };
const subject = (p: string) => ({ reference: `Patient/${p}` });
const sudCondition = (id: string, p: string): Resource => ({ resourceType: 'Condition', id, subject: subject(p), code: { coding: [{ system: ICD, code: 'F10.20' }] } });
const height = (id: string, p: string): Resource => ({ resourceType: 'Observation', id, status: 'final', subject: subject(p), code: { coding: [{ system: LOINC, code: '8302-2' }] } });
const local = (id: string, p: string): Resource => ({ resourceType: 'Condition', id, subject: subject(p), code: { coding: [{ system: 'urn:local:codes', code: 'X-77' }] } });
const act = (code: string): Coding => ({ system: V3_ACT_CODE, code });
const labels = (r: Resource): string[] => (r.meta?.security ?? []).map((c) => c.code ?? '');

const data: Resource[] = [
  { resourceType: 'Patient', id: 'pd' }, sudCondition('cd1', 'pd'), height('od1', 'pd'), local('ld1', 'pd'),
  consent('deny-sud', { type: 'deny', securityLabel: [act('SUD')] }, { patient: subject('pd') }),
  consent('deny-psy', { type: 'deny', securityLabel: [act('PSY')] }, { patient: subject('pd'), dateTime: '2023-01-01' }),
  { resourceType: 'Patient', id: 'pn' }, sudCondition('cn1', 'pn'), height('on1', 'pn'),
  { resourceType: 'Patient', id: 'pp' }, sudCondition('cp1', 'pp'), height('op1', 'pp'),
  consent('permit-sud', { type: 'permit', securityLabel: [{ system: V3_CONFIDENTIALITY, code: 'N' }, act('SUD')] }, { patient: subject('pp') }),
];

describe('labeling.enabled: false turns computed labels off', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ resources: data, policy: { labeling: { enabled: false } } });
  });
  after(() => h.close());
  test('unlabelled SUD data is released under a SUD deny and carries no label', async () => {
    const r = await h.request('Condition/cd1', { token: await h.token(drA) });
    assert.equal(r.status, 200);
    assert.deepEqual(labels(r.body), []);
  });
});

describe('labeling.confidentiality: R', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ resources: data, policy: { labeling: { confidentiality: 'R' } } });
  });
  after(() => h.close());
  test('a labelled resource becomes R: the implicit policy no longer releases it, the control stays released', async () => {
    const token = await h.token(drA);
    assert.equal((await h.request('Condition/cn1', { token })).status, 404);
    assert.equal((await h.request('Observation/on1', { token })).status, 200);
  });
  test('a consent permitting the category releases it with ETHUD and R, and the searchset high-water mark is R', async () => {
    const token = await h.token(drA);
    const read = await h.request('Condition/cp1', { token });
    assert.equal(read.status, 200);
    assert.deepEqual(labels(read.body).sort(), ['ETHUD', 'R']);
    const search = await h.request('Condition?patient=Patient/pp', { token });
    assert.deepEqual(search.body.meta?.security?.map((c: Coding) => c.code), ['R']);
  });
});

describe('extra rule files through the policy file', () => {
  let h: Harness;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dg-policy-'));
    const rules = { ruleSet: 'local-psy', title: 'Local psychiatry codes', source: 'this hospital’s code list', licence: 'CC0', rules: [{ labels: ['PSY'], system: 'urn:local:codes', codes: ['X-77'] }] };
    await writeFile(join(dir, 'local-psy.json'), JSON.stringify(rules));
    await writeFile(join(dir, 'policy.json'), JSON.stringify({ labeling: { rules: ['local-psy.json'] } }));
    const policy = loadPolicy(join(dir, 'policy.json'));
    assert.deepEqual(policy.labeling, { enabled: true, rules: [join(dir, 'local-psy.json')] }, 'rule paths are read relative to the policy file');
    h = await startHarness({ resources: data, policy });
  });
  after(async () => {
    await h.close();
    await rm(dir, { recursive: true, force: true });
  });
  test('a local code is labelled PSY and withheld under a PSY deny; shipped rules still apply', async () => {
    const token = await h.token(drA);
    assert.equal((await h.request('Condition/ld1', { token })).status, 404);
    assert.equal((await h.request('Condition/cd1', { token })).status, 404);
    assert.equal((await h.request('Observation/od1', { token })).status, 200);
  });
});

describe('a rule file that cannot be loaded stops start-up', () => {
  test('createGateway rejects, naming the file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dg-bad-rules-'));
    const file = join(dir, 'broken-rules.json');
    await writeFile(file, JSON.stringify({ ruleSet: 'broken', title: 't', source: 's', rules: [] }));
    const upstream = await startEmbeddedUpstream({ resources: [] });
    try {
      await assert.rejects(startHarness({ upstream, policy: { labeling: { rules: [file] } } }), (err: Error) => err.message.includes(file));
    } finally {
      await upstream.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('POST $security-label', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ resources: [] });
  });
  after(() => h.close());

  const bundle: Bundle = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      { fullUrl: 'urn:uuid:1', resource: sudCondition('new1', 'pz'), request: { method: 'POST', url: 'Condition' } },
      { fullUrl: 'urn:uuid:2', resource: height('new2', 'pz'), request: { method: 'POST', url: 'Observation' } },
      { fullUrl: 'urn:uuid:3', resource: { resourceType: 'Condition', id: 'new3', subject: subject('pz'), code: { coding: [{ system: SCT, code: '86406008' }] }, meta: { security: [{ system: V3_CONFIDENTIALITY, code: 'V' }] } }, request: { method: 'POST', url: 'Condition' } },
    ],
  };

  test('a Bundle comes back with labels added, entries in order, nothing stored, audited without content', async () => {
    const requestId = 'security-label-bundle';
    const token = await h.token({ sub: 'engine', client_id: 'engine', scope: 'system/Observation.r' });
    const r = await h.request('$security-label', { token, method: 'POST', body: bundle, headers: { 'x-request-id': requestId } });
    assert.equal(r.status, 200, r.text);
    const out = r.body as Bundle;
    assert.deepEqual(out.entry?.map((e) => e.fullUrl), ['urn:uuid:1', 'urn:uuid:2', 'urn:uuid:3']);
    assert.deepEqual(out.entry?.map((e) => labels(e.resource as Resource)), [['ETHUD'], [], ['V', 'HIV']]);
    assert.deepEqual(out.entry?.[0].request, bundle.entry?.[0].request, 'the rest of the entry is kept');
    assert.equal((await h.upstream.repo.searchResources({ resourceType: 'Condition' })).length, 0, 'nothing stored upstream');
    const events = (await journalEvents(h.auditDir)).filter((e) => requestIdOf(e) === requestId);
    assert.ok(events.length > 0, 'audited');
    assert.doesNotMatch(JSON.stringify(events), /F10\.20|86406008|new1|ETHUD/, 'no content in the audit');
  });

  test('a single resource, from a patient app, with the patient’s own token', async () => {
    const token = await h.token({ sub: 'pz', client_id: 'papp', fhirUser: 'Patient/pz', patient: 'pz', scope: 'patient/Condition.rs' });
    const r = await h.request('$security-label', { token, method: 'POST', body: sudCondition('one', 'pz') });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(labels(r.body), ['ETHUD']);
  });

  test('without a token → 401; a body that is not a resource → 400', async () => {
    assert.equal((await h.request('$security-label', { method: 'POST', body: sudCondition('x', 'pz') })).status, 401);
    const token = await h.token(drA);
    assert.equal((await h.request('$security-label', { token, method: 'POST', body: { hello: 'world' } })).status, 400);
  });
});
