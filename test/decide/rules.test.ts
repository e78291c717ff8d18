// Harm-determination validity rules (SPEC §4.3), clinical date order (§4.1), enforcement status and
// the properties the engine must hold whatever the inputs (fast-check).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Coding, Consent, ConsentProvision, Resource } from '@medplum/fhirtypes';
import { defaultPolicy, type DecisionPolicy } from '../../src/config/policy.ts';
import { clinicalDate, compile, enforcementStatus, evaluate, harmDeterminationValidity, isLegalRestriction } from '../../src/decide/index.ts';
import { validationFailure } from '../../src/policy/validate.ts';
import { act, actor, conf, consent, harmFlag, inputs, legalRestriction, NOW, observation, purpose, who } from './fixtures.ts';

describe('harm determination validity (SPEC §4.3)', () => {
  const cases: { name: string; flag: ReturnType<typeof harmFlag>; reason?: RegExp }[] = [
    { name: 'valid', flag: harmFlag('ok') },
    { name: 'no author', flag: harmFlag('a', { author: undefined }), reason: /no author/ },
    { name: 'author is an Organization', flag: harmFlag('b', { author: { reference: 'Organization/x' } }), reason: /not a Practitioner/ },
    { name: 'no ground', flag: { ...harmFlag('c'), extension: harmFlag('c').extension?.filter((e) => !e.url.endsWith('harm-ground')) }, reason: /no harm-ground/ },
    { name: 'another ground', flag: harmFlag('d', {}, 'inconvenient'), reason: /not a recognised harm ground/ },
    { name: 'no withheld-data (organisation-wide hold)', flag: harmFlag('e', {}, 'harm-life-safety', []), reason: /information blocking/ },
    { name: 'period not current', flag: harmFlag('f', { period: { start: '2020-01-01', end: '2021-01-01' } }), reason: /period/ },
    { name: 'author without care relationship', flag: harmFlag('g', { author: { reference: 'Practitioner/bob' } }), reason: /care relationship/ },
    { name: 'status inactive', flag: harmFlag('h', { status: 'inactive' }), reason: /not active/ },
    { name: 'subject another patient', flag: harmFlag('i', { subject: { reference: 'Patient/p2' } }), reason: /subject/ },
    { name: 'does not validate', flag: { ...harmFlag('j'), bogus: true } as unknown as ReturnType<typeof harmFlag>, reason: /does not validate/ },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const v = harmDeterminationValidity(c.flag, inputs([], [c.flag]), NOW);
      if (!c.reason) {
        assert.deepEqual(v, { valid: true, ground: 'harm-life-safety', withheld: ['DiagnosticReport/d1'] });
      } else {
        assert.equal(v.valid, false);
        if (!v.valid) assert.match(v.reason, c.reason);
      }
    });
  }
});

describe('clinical date order (SPEC §4.1 dataPeriod)', () => {
  const rows: [string, Record<string, unknown>, string | undefined][] = [
    ['effective before issued', { resourceType: 'Observation', effectiveDateTime: '2020-01-01', issued: '2021-01-01T00:00:00Z' }, '2020-01-01'],
    ['effectivePeriod.start', { resourceType: 'Observation', effectivePeriod: { start: '2019-05-05' } }, '2019-05-05'],
    ['onset', { resourceType: 'Condition', onsetDateTime: '2018-01-01', recordedDate: '2019-01-01' }, '2018-01-01'],
    ['authoredOn', { resourceType: 'MedicationRequest', authoredOn: '2017-01-01' }, '2017-01-01'],
    ['performedPeriod', { resourceType: 'Procedure', performedPeriod: { start: '2016-01-01' } }, '2016-01-01'],
    ['period.start', { resourceType: 'Encounter', period: { start: '2015-01-01' } }, '2015-01-01'],
    ['date', { resourceType: 'DocumentReference', date: '2014-01-01T00:00:00Z' }, '2014-01-01T00:00:00Z'],
    ['recordedDate', { resourceType: 'Condition', recordedDate: '2013-01-01' }, '2013-01-01'],
    ['meta.lastUpdated', { resourceType: 'Patient', meta: { lastUpdated: '2012-01-01T00:00:00Z' } }, '2012-01-01T00:00:00Z'],
    ['none', { resourceType: 'Patient' }, undefined],
  ];
  for (const [name, r, expected] of rows) test(name, () => assert.equal(clinicalDate(r as unknown as Resource), expected));
});

describe('consent status and layers', () => {
  test('legal restriction is told apart by category', () => {
    assert.equal(isLegalRestriction(legalRestriction('l', { type: 'deny' })), true);
    assert.equal(isLegalRestriction(consent('c', { type: 'deny' })), false);
  });
  test('a consent that does not validate is UNSUPPORTED with the validator message', () => {
    const bad = { ...consent('bad', { type: 'permit' }), scope: undefined } as unknown as Consent;
    const s = enforcementStatus(bad, defaultPolicy, NOW, validationFailure(bad));
    assert.equal(s.status, 'UNSUPPORTED');
    assert.match(s.reason ?? '', /Consent\.scope/);
  });
  test('a consent without any base decision is UNSUPPORTED', () => {
    const s = enforcementStatus(consent('nb', {}), defaultPolicy, NOW);
    assert.equal(s.status, 'UNSUPPORTED');
    assert.match(s.reason ?? '', /no computable base decision/);
  });
  test('research scope counts when the policy enables it', () => {
    const c = consent('r', { type: 'deny' }, { scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'research' }] } });
    assert.equal(enforcementStatus(c, defaultPolicy, NOW).status, 'UNSUPPORTED');
    assert.equal(enforcementStatus(c, { ...defaultPolicy, consentScopes: ['patient-privacy', 'research'] }, NOW).status, 'ENFORCEABLE');
  });
});

// ---- properties ----
const labelPool: Coding[] = [conf('L'), conf('N'), conf('R'), conf('V'), act('PSY'), act('SUD'), act('OPIOIDUD'), act('HIV'), act('42CFRPart2')];
const arbLabels = fc.subarray(labelPool, { maxLength: 3 });
const arbYear = fc.integer({ min: 2019, max: 2024 });
const arbResource = fc.record({ id: fc.constantFrom('r1', 'r2', 'x'), type: fc.constantFrom('Observation', 'Condition'), labels: arbLabels, year: arbYear })
  .map(({ id, type, labels, year }) => observation(id, labels, { resourceType: type, effectiveDateTime: `${year}-06-01`, onsetDateTime: `${year}-06-01` }));
type ResourceSide = Pick<ConsentProvision, 'class' | 'securityLabel' | 'dataPeriod' | 'data'>;
type RequestSide = Pick<ConsentProvision, 'purpose' | 'actor'>;
const classOf = (code: string): Coding[] => [{ system: 'http://hl7.org/fhir/resource-types', code }];
const arbResourceSide: fc.Arbitrary<ResourceSide> = fc.record(
  {
    class: fc.constantFrom('Observation', 'Condition').map(classOf),
    securityLabel: fc.subarray(labelPool, { minLength: 1, maxLength: 2 }),
    dataPeriod: arbYear.map((y) => ({ start: `${y}`, end: `${y}` })),
    data: fc.constant([{ meaning: 'instance' as const, reference: { reference: 'Observation/x' } }]),
  },
  { requiredKeys: [] },
);
const arbRequestSide: fc.Arbitrary<RequestSide> = fc.record(
  {
    purpose: fc.constantFrom('TREAT', 'HPAYMT', 'BTG').map((c) => purpose(c)),
    actor: fc.constantFrom('Practitioner/dr-a', 'Practitioner/bob').map((r) => [actor(r)]),
  },
  { requiredKeys: [] },
);
const arbProvision = (type: 'permit' | 'deny' | undefined): fc.Arbitrary<ConsentProvision> =>
  fc
    .tuple(arbResourceSide, arbRequestSide, type ? fc.constant(type) : fc.constantFrom<'permit' | 'deny'>('permit', 'deny'))
    .map(([r, q, t]): ConsentProvision => ({ ...r, ...q, type: t }));
const arbRequester = fc.constantFrom(who.drA(), who.bob(), who.drA(['BTG'], true), who.bob(['HPAYMT']), who.patient(), who.guardian());
const arbPolicy = fc
  .record({
    implicitPolicy: fc.constantFrom<DecisionPolicy['implicitPolicy']>('all-normal', 'basic-normal', 'break-glass-only', 'deny'),
    combiner: fc.constantFrom<DecisionPolicy['combiner']>('most-recent', 'deny-overrides'),
  })
  .map((p): DecisionPolicy => ({ ...defaultPolicy, ...p }));
const arbPatientConsents: fc.Arbitrary<Consent[]> = fc
  .array(fc.tuple(fc.constantFrom<'permit' | 'deny'>('permit', 'deny'), arbRequestSide, fc.array(arbProvision(undefined), { maxLength: 3 })), { maxLength: 3 })
  .map((list) =>
    list.map(([type, q, nested], i) => consent(`pc${i}`, { type, ...q, provision: nested }, { dateTime: i % 2 ? '2023-01-01' : '2024-01-01' })),
  );

describe('properties', () => {
  test('a nested provision never widens what its legal-restriction deny forbids', () => {
    fc.assert(fc.property(arbRequestSide, fc.array(arbProvision(undefined), { maxLength: 4 }), arbPatientConsents, arbRequester, arbResource, arbPolicy,
      (rootRequest, nested, patientConsents, requester, resource, policy) => {
        const restriction = legalRestriction('lr', { type: 'deny', ...rootRequest, provision: nested });
        const d = evaluate(compile(inputs([restriction, ...patientConsents]), requester, policy, NOW), resource);
        // Where the restriction's root deny forbids, a release needs one of its own permits to match.
        const rootOnly = evaluate(compile(inputs([legalRestriction('lr', { type: 'deny', ...rootRequest }), ...patientConsents]), requester, policy, NOW), resource);
        const forbidden = rootOnly.trace.some((t) => t.rule === 'Consent/lr' && t.effect === 'deny');
        if (forbidden && d.outcome !== 'deny') assert.ok(d.trace.some((t) => t.rule === 'Consent/lr' && t.effect === 'permit'));
        // And a restriction never releases anything the other layers would not.
        const without = evaluate(compile(inputs(patientConsents), requester, policy, NOW), resource);
        if (d.outcome !== 'deny') assert.notEqual(without.outcome, 'deny');
      }), { numRuns: 300 });
  });

  test('evaluation is deterministic', () => {
    fc.assert(fc.property(arbPatientConsents, arbRequester, arbResource, arbPolicy, (patientConsents, requester, resource, policy) => {
      const a = evaluate(compile(inputs(patientConsents), requester, policy, NOW), resource);
      const compiled = compile(inputs(patientConsents), requester, policy, NOW);
      assert.deepEqual(evaluate(compiled, resource), a);
      assert.deepEqual(evaluate(compiled, resource), a);
    }), { numRuns: 200 });
  });

  test('a root permit (with only nested denies) never grants outside its match', () => {
    fc.assert(fc.property(arbProvision('permit'), fc.array(arbProvision('deny'), { maxLength: 3 }), arbRequester, arbResource, (root, nested, requester, resource) => {
      const d = evaluate(compile(inputs([consent('rp', { ...root, provision: nested })]), requester, defaultPolicy, NOW), resource);
      const rootAlone = evaluate(compile(inputs([consent('rp', { ...root })]), requester, defaultPolicy, NOW), resource);
      if (d.outcome !== 'deny') assert.notEqual(rootAlone.outcome, 'deny');
    }), { numRuns: 300 });
  });

  test('harm flags only change decisions for the patient and representatives', () => {
    fc.assert(fc.property(arbRequester, arbResource, (requester, resource) => {
      const flag = harmFlag('h', {}, 'harm-life-safety', ['Observation/x', 'Condition/x']);
      const withFlag = evaluate(compile(inputs([], [flag]), requester, defaultPolicy, NOW), resource);
      const withoutFlag = evaluate(compile(inputs([], []), requester, defaultPolicy, NOW), resource);
      const recipientOfRight = requester.fhirUser === 'Patient/p1' || requester.fhirUser?.startsWith('RelatedPerson/');
      if (!recipientOfRight || resource.id !== 'x') assert.equal(withFlag.outcome, withoutFlag.outcome);
      if (withFlag.outcome === 'deny' && withoutFlag.outcome !== 'deny') {
        assert.ok(withFlag.obligations.some((o) => o.kind === 'harm-refusal' && o.ground === 'harm-life-safety'));
      }
    }), { numRuns: 200 });
  });
});

