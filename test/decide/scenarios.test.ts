// scenarios.md decision rows (1–39, 46–50) as engine tests: inputs → outcome, obligations, trace.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Consent, Flag, Resource } from '@medplum/fhirtypes';
import type { DecisionPolicy } from '../../src/config/policy.ts';
import { DS4P_INLINE_LABEL, PART2_NOTICE, R5_CONSENT_DECISION } from '../../src/fhir/systems.ts';
import { compile, type CompiledPatientPolicy, type Decision, evaluate, type PatientPolicyInputs, type Requester } from '../../src/decide/index.ts';
import { act, actor, conf, consent, harmFlag, inputs, legalRestriction, NOW, observation, P1, policyWith, PROCESS_INLINE, purpose, TPO, who } from './fixtures.ts';

interface Row {
  readonly name: string;
  readonly consents?: Consent[];
  readonly flags?: Flag[];
  readonly policy?: Partial<DecisionPolicy>;
  readonly extraInputs?: Partial<PatientPolicyInputs>;
  readonly requester: Requester;
  readonly resources: Resource[];
  readonly expect: Record<string, Decision['outcome']>;
  readonly check?: (d: Record<string, Decision>, compiled: CompiledPatientPolicy) => void;
}

const o1 = observation('o1');
const oR = observation('oR', [conf('R')]);
const o2 = observation('o2', [act('OPIOIDUD'), conf('R')]);
const o3 = observation('o3', [act('PSY'), conf('R')]);
const o4 = observation('o4', [act('OPIOIDUD')]);
const o5 = observation('o5', [conf('N')]);
const o6 = observation('o6', [conf('V')]);
const o7 = observation('o7', [act('42CFRPart2'), act('SUD'), conf('R')]);
const o7n = observation('o7n', [act('42CFRPart2'), act('SUD')]);
const obs2021 = observation('y2021', [], { effectiveDateTime: '2021-06-01' });
const obs2022 = observation('y2022', [], { effectiveDateTime: '2022-06-01' });
const obsUndated2022 = observation('u2022', [], { effectiveDateTime: undefined, meta: { lastUpdated: '2022-02-02T00:00:00Z' } });
const encounter = (id: string): Resource => ({ resourceType: 'Encounter', id, status: 'finished', class: { code: 'AMB' }, subject: { reference: `Patient/${P1}` } }) as Resource;
const report = (id: string): Resource =>
  ({ resourceType: 'DiagnosticReport', id, status: 'final', code: { text: 'report' }, subject: { reference: `Patient/${P1}` } }) as Resource;
const byBob = observation('byBob', [], { performer: [{ reference: 'Practitioner/bob' }] });
const conditionByBob = { resourceType: 'Condition', id: 'cBob', subject: { reference: `Patient/${P1}` }, recorder: { reference: 'Practitioner/bob' }, code: { text: 'x' } } as Resource;
const inE1 = observation('inE1', [], { encounter: { reference: 'Encounter/e1' } });
const inE2 = observation('inE2', [], { encounter: { reference: 'Encounter/e2' } });
const inE9 = observation('inE9', [], { encounter: { reference: 'Encounter/e9' } });

const permitTPO = consent('c-tpo', { type: 'permit', purpose: TPO });
const denyTPO = consent('c-deny-tpo', { type: 'deny', purpose: TPO });
const permitN = consent('c-n', { type: 'permit', securityLabel: [conf('N')] });
const has = (d: Decision, layer: string, effect: string): boolean => d.trace.some((t) => t.layer === layer && t.effect === effect);

const rows: Row[] = [
  { name: '1 no consent, all-normal: N released, R not', requester: who.drA(), resources: [o1, oR], expect: { o1: 'permit', oR: 'deny' },
    check: (d) => assert.ok(has(d.o1, 'implicit-policy', 'permit')) },
  { name: '2 no consent, implicit deny', policy: { implicitPolicy: 'deny' }, requester: who.drA(), resources: [o1], expect: { o1: 'deny' } },
  { name: '3 break-glass-only with authorised BTG', policy: { implicitPolicy: 'break-glass-only' }, requester: who.drA(['BTG'], true), resources: [o1, oR, o6],
    expect: { o1: 'permit', oR: 'permit', o6: 'deny' }, check: (d) => assert.equal(d.o1.breakGlassUsed, true) },
  { name: '3b break-glass-only without BTG', policy: { implicitPolicy: 'break-glass-only' }, requester: who.drA(), resources: [o1], expect: { o1: 'deny' } },
  { name: '4 permit TPO, Dr A TREAT', consents: [permitTPO], requester: who.drA(), resources: [o1], expect: { o1: 'permit' },
    check: (d) => assert.ok(d.o1.trace.some((t) => t.rule === 'Consent/c-tpo' && t.provision === 'provision' && t.effect === 'permit')) },
  { name: '5 permit TPO, research HRESCH: not covered', consents: [permitTPO], requester: who.research(), resources: [o1], expect: { o1: 'deny' } },
  { name: '6 deny TPO, Dr A TREAT', consents: [denyTPO], requester: who.drA(), resources: [o1], expect: { o1: 'deny' } },
  { name: '7 deny TPO, Dr A HRESCH: implicit policy', consents: [denyTPO], requester: who.drA(['HRESCH']), resources: [o1], expect: { o1: 'permit' },
    check: (d) => assert.ok(has(d.o1, 'implicit-policy', 'permit')) },
  ...(['inactive', 'entered-in-error', 'draft', 'proposed', 'rejected'] as const).map((status): Row => ({
    name: `8 deny TPO with status ${status} is ignored`, consents: [consent('c-s', { type: 'deny', purpose: TPO }, { status })], requester: who.drA(), resources: [o1],
    expect: { o1: 'permit' }, check: (d, c) => {
      assert.ok(d.o1.trace.some((t) => t.rule === 'Consent/c-s' && t.effect === 'ignored'));
      assert.equal(c.statuses[0].status, 'INACTIVE');
    } })),
  { name: '9 expired permit, implicit deny', policy: { implicitPolicy: 'deny' }, consents: [consent('c-old', { type: 'permit', purpose: TPO, period: { start: '2020-01-01', end: '2024-12-31' } })],
    requester: who.drA(), resources: [o1], expect: { o1: 'deny' }, check: (d, c) => {
      assert.equal(c.statuses[0].status, 'INACTIVE');
      assert.ok(has(d.o1, 'implicit-policy', 'deny'));
    } },
  { name: '10 permit starting tomorrow: implicit policy', consents: [consent('c-future', { type: 'permit', purpose: purpose('HRESCH'), period: { start: '2025-06-16' } })],
    requester: who.drA(), resources: [o1], expect: { o1: 'permit' }, check: (d) => assert.ok(has(d.o1, 'implicit-policy', 'permit')) },
  { name: '11 nested deny actor Bob: Bob refused', consents: [consent('c11', { type: 'permit', provision: [{ type: 'deny', actor: [actor('Practitioner/bob')] }] })],
    requester: who.bob(), resources: [o1], expect: { o1: 'deny' }, check: (d) => assert.ok(d.o1.trace.some((t) => t.provision === 'provision.provision[0]' && t.effect === 'deny')) },
  { name: '12 nested deny actor Bob: Dr A permitted', consents: [consent('c11', { type: 'permit', provision: [{ type: 'deny', actor: [actor('Practitioner/bob')] }] })],
    requester: who.drA(), resources: [o1], expect: { o1: 'permit' } },
  { name: '13 nested deny expired last year', consents: [consent('c13', { type: 'permit', provision: [{ type: 'deny', actor: [actor('Practitioner/bob')], period: { start: '2023-01-01', end: '2024-12-31' } }] })],
    requester: who.bob(), resources: [o1], expect: { o1: 'permit' } },
  { name: '14 deny; nested permit Bob+PATRQT+N: N released, R not', consents: [consent('c14', { type: 'deny', provision: [{ type: 'permit', actor: [actor('Practitioner/bob')], purpose: purpose('PATRQT'), securityLabel: [conf('N')] }] })],
    requester: who.bob(['PATRQT']), resources: [o1, oR], expect: { o1: 'permit', oR: 'deny' } },
  { name: '15 same, Bob TREAT: nothing', consents: [consent('c14', { type: 'deny', provision: [{ type: 'permit', actor: [actor('Practitioner/bob')], purpose: purpose('PATRQT'), securityLabel: [conf('N')] }] })],
    requester: who.bob(), resources: [o1, oR], expect: { o1: 'deny', oR: 'deny' } },
  { name: '16 nested permit PATRQT covers PWATRNY', consents: [consent('c16', { type: 'deny', provision: [{ type: 'permit', purpose: purpose('PATRQT') }] })],
    requester: who.bob(['PWATRNY']), resources: [o1], expect: { o1: 'permit' } },
  { name: '17 permit TPO dataPeriod 2022: only 2022 (clinical date, else lastUpdated)', consents: [consent('c17', { type: 'permit', purpose: TPO, dataPeriod: { start: '2022-01-01', end: '2022-12-31' } })],
    requester: who.drA(), resources: [obs2021, obs2022, obsUndated2022], expect: { y2021: 'deny', y2022: 'permit', u2022: 'permit' } },
  { name: '18 permit TPO; nested deny dataPeriod 2022', consents: [consent('c18', { type: 'permit', purpose: TPO, provision: [{ type: 'deny', dataPeriod: { start: '2022', end: '2022' } }] })],
    requester: who.drA(), resources: [obs2021, obs2022, obsUndated2022], expect: { y2021: 'permit', y2022: 'deny', u2022: 'deny' } },
  { name: '19 nested deny data instance Observation/x', consents: [consent('c19', { type: 'permit', provision: [{ type: 'deny', data: [{ meaning: 'instance', reference: { reference: 'Observation/x' } }] }] })],
    requester: who.drA(), resources: [observation('x'), observation('y')], expect: { x: 'deny', y: 'permit' } },
  { name: '20 nested deny authoredby Bob', consents: [consent('c20', { type: 'permit', provision: [{ type: 'deny', data: [{ meaning: 'authoredby', reference: { reference: 'Practitioner/bob' } }] }] })],
    requester: who.drA(), resources: [byBob, conditionByBob, o1], expect: { byBob: 'deny', cBob: 'deny', o1: 'permit' } },
  { name: '21 nested deny dependents Encounter/e1', consents: [consent('c21', { type: 'permit', provision: [{ type: 'deny', data: [{ meaning: 'dependents', reference: { reference: 'Encounter/e1' } }] }] })],
    requester: who.drA(), resources: [encounter('e1'), encounter('e2'), inE1, inE2], expect: { e1: 'deny', e2: 'permit', inE1: 'deny', inE2: 'permit' } },
  { name: '22 permit TPO securityLabel N', consents: [consent('c22', { type: 'permit', purpose: TPO, securityLabel: [conf('N')] })],
    requester: who.drA(), resources: [o1, o2], expect: { o1: 'permit', o2: 'deny' } },
  { name: '23 permit TPO securityLabel N|R', consents: [consent('c23', { type: 'permit', purpose: TPO, securityLabel: [conf('N'), conf('R')] })],
    requester: who.drA(), resources: [o1, o2], expect: { o1: 'permit', o2: 'permit' } },
  { name: '24 permit N; nested permit PSY for dr-a: dr-a gets o3', consents: [consent('c24', { type: 'permit', securityLabel: [conf('N')], provision: [{ type: 'permit', securityLabel: [act('PSY')], actor: [actor('Practitioner/dr-a')] }] })],
    requester: who.drA(), resources: [o3], expect: { o3: 'permit' } },
  { name: '24b same: Bob does not', consents: [consent('c24', { type: 'permit', securityLabel: [conf('N')], provision: [{ type: 'permit', securityLabel: [act('PSY')], actor: [actor('Practitioner/dr-a')] }] })],
    requester: who.bob(), resources: [o3], expect: { o3: 'deny' } },
  ...[
    { n: '25 permit N; nested permit R+BTG+Group: dr-a with BTG', r: who.drA(['BTG'], true), e: 'permit' as const, btg: true },
    { n: '26 same: dr-a TREAT, R filtered', r: who.drA(), e: 'deny' as const, btg: false },
    { n: '27 same: Bob with BTG, not in the group', r: who.bob(['BTG'], true), e: 'deny' as const, btg: false },
  ].map((v): Row => ({
    name: v.n, consents: [consent('c25', { type: 'permit', securityLabel: [conf('N')], provision: [{ type: 'permit', securityLabel: [conf('R')], purpose: purpose('BTG'), actor: [actor('Group/btg-users')] }] })],
    requester: v.r, resources: [oR, o1], expect: { oR: v.e, o1: 'permit' }, check: (d) => assert.equal(d.oR.breakGlassUsed, v.btg),
  })),
  { name: '28 deny; nested permit BTG: header without btg scope changes nothing', consents: [consent('c28', { type: 'deny', provision: [{ type: 'permit', purpose: purpose('BTG') }] })],
    requester: { ...who.bob(['TREAT', 'BTG']), breakGlass: false }, resources: [o1], expect: { o1: 'deny' } },
  { name: '28b same with authorised BTG', consents: [consent('c28', { type: 'deny', provision: [{ type: 'permit', purpose: purpose('BTG') }] })],
    requester: who.bob(['TREAT'], true), resources: [o1], expect: { o1: 'permit' }, check: (d) => assert.equal(d.o1.breakGlassUsed, true) },
  { name: '29 nested deny SUD covers OPIOIDUD', consents: [consent('c29', { type: 'permit', provision: [{ type: 'deny', securityLabel: [act('SUD')] }] })],
    requester: who.drA(), resources: [o4, o1], expect: { o4: 'deny', o1: 'permit' } },
  { name: '30 permit securityLabel R: N released, V not', consents: [consent('c30', { type: 'permit', securityLabel: [conf('R')] })],
    requester: who.drA(), resources: [o5, o6], expect: { o5: 'permit', o6: 'deny' } },
  ...[
    { n: '31 self-pay restriction: payer', r: who.payer(), e: { e9: 'deny' as const, inE9: 'deny' as const, e2: 'permit' as const } },
    { n: '32 self-pay restriction: Dr A', r: who.drA(), e: { e9: 'permit' as const, inE9: 'permit' as const, e2: 'permit' as const } },
  ].map((v): Row => ({
    name: v.n, consents: [consent('c31', { type: 'permit', provision: [{ type: 'deny', actor: [actor('Organization/payer')], purpose: purpose('HPAYMT'), data: [{ meaning: 'dependents', reference: { reference: 'Encounter/e9' } }] }] })],
    requester: v.r, resources: [encounter('e9'), inE9, encounter('e2')], expect: v.e,
  })),
  { name: '33 legal restriction denying the guardian beats the patient permit', consents: [consent('c-all', { type: 'permit' }), legalRestriction('lr33', { type: 'deny', actor: [actor('RelatedPerson/guardian')] })],
    requester: who.guardian(), resources: [o1], expect: { o1: 'deny' }, check: (d) => {
      assert.ok(d.o1.trace.some((t) => t.layer === 'legal-restriction' && t.effect === 'deny' && t.rule === 'Consent/lr33'));
      assert.ok(!d.o1.trace.some((t) => t.layer === 'consent'));
    } },
  { name: '34 legal restriction naming Dr A holds under BTG', consents: [legalRestriction('lr34', { type: 'deny', actor: [actor('Practitioner/dr-a')] })],
    requester: who.drA(['BTG'], true), resources: [o1], expect: { o1: 'deny' } },
  { name: '34b lifted by its own nested BTG permit', consents: [legalRestriction('lr34', { type: 'deny', actor: [actor('Practitioner/dr-a')], provision: [{ type: 'permit', purpose: purpose('BTG') }] })],
    requester: who.drA(['BTG'], true), resources: [o1], expect: { o1: 'permit' }, check: (d) => {
      assert.equal(d.o1.breakGlassUsed, true);
      assert.ok(d.o1.trace.some((t) => t.layer === 'legal-restriction' && t.effect === 'permit'));
    } },
  { name: '34c the nested BTG permit does not lift for TREAT', consents: [legalRestriction('lr34', { type: 'deny', actor: [actor('Practitioner/dr-a')], provision: [{ type: 'permit', purpose: purpose('BTG') }] })],
    requester: who.drA(), resources: [o1], expect: { o1: 'deny' } },
  { name: '35 Part 2 without a Part 2 consent', requester: who.drA(), resources: [o7, o7n], expect: { o7: 'deny', o7n: 'deny' },
    check: (d) => assert.ok(has(d.o7n, 'part2', 'deny')) },
  { name: '35b Part 2 under BTG: §2.51 emergency', requester: who.drA(['BTG'], true), resources: [o7], expect: { o7: 'permit' },
    check: (d) => {
      assert.equal(d.o7.breakGlassUsed, true);
      assert.ok(d.o7.trace.some((t) => t.layer === 'part2' && /2\.51/.test(t.reason)));
    } },
  { name: '36 Part 2 with a nested permit for Dr A’s organization', consents: [consent('c36', { type: 'permit', securityLabel: [conf('N')], provision: [{ type: 'permit', securityLabel: [act('42CFRPart2')], actor: [actor('Organization/hospital')], purpose: purpose('TREAT') }] })],
    requester: who.drA(), resources: [o7], expect: { o7: 'permit' }, check: (d) => {
      assert.equal(d.o7.part2, true);
      assert.ok(d.o7.obligations.some((o) => o.kind === 'add-security-label' && o.coding.code === 'NORDSCLCD'));
      assert.ok(d.o7.obligations.some((o) => o.kind === 'notice' && o.text === PART2_NOTICE));
    } },
  { name: '36b a plain TPO permit does not release Part 2', consents: [permitTPO], requester: who.drA(), resources: [o7n], expect: { o7n: 'deny' } },
  { name: '37 harm determination withholds d1 from the patient', flags: [harmFlag('h1')], requester: who.patient(), resources: [report('d1'), report('d2')],
    expect: { d1: 'deny', d2: 'permit' }, check: (d) => {
      const refusal = d.d1.obligations.find((o) => o.kind === 'harm-refusal');
      assert.ok(refusal && refusal.kind === 'harm-refusal');
      assert.equal(refusal.ground, 'harm-life-safety');
      assert.match(refusal.text, /endanger the life or physical safety/);
      assert.match(refusal.text, /right to have this refusal reviewed/);
      assert.ok(d.d1.trace.some((t) => t.layer === 'harm-determination' && t.ground === 'harm-life-safety' && t.rule === 'Flag/h1'));
    } },
  { name: '38 harm determination never applies to treatment', flags: [harmFlag('h1')], requester: who.drA(), resources: [report('d1')], expect: { d1: 'permit' } },
  { name: '39 harm determination by Bob (no care relationship) is ignored', flags: [harmFlag('h39', { author: { reference: 'Practitioner/bob' } })], requester: who.patient(), resources: [report('d1')],
    expect: { d1: 'permit' }, check: (d) => assert.ok(d.d1.trace.some((t) => t.rule === 'Flag/h39' && t.effect === 'ignored' && /care relationship/.test(t.reason))) },
  { name: '39b harm-representative withholds from the guardian only', flags: [harmFlag('h-rep', {}, 'harm-representative')], requester: who.guardian(), resources: [report('d1')], expect: { d1: 'deny' } },
  { name: '39c harm-representative does not withhold from the patient', flags: [harmFlag('h-rep', {}, 'harm-representative')], requester: who.patient(), resources: [report('d1')], expect: { d1: 'permit' } },
  { name: '46 two consents: most recent (deny 2024) wins', consents: [consent('c2023', { type: 'permit', purpose: TPO }, { dateTime: '2023-01-01' }), consent('c2024', { type: 'deny', purpose: TPO }, { dateTime: '2024-01-01' })],
    requester: who.drA(), resources: [o1], expect: { o1: 'deny' } },
  { name: '46b most recent permit (2024) wins over older deny', consents: [consent('c2023', { type: 'deny', purpose: TPO }, { dateTime: '2023-01-01' }), consent('c2024', { type: 'permit', purpose: TPO }, { dateTime: '2024-01-01' })],
    requester: who.drA(), resources: [o1], expect: { o1: 'permit' } },
  { name: '46c same under deny-overrides', policy: { combiner: 'deny-overrides' }, consents: [consent('c2023', { type: 'deny', purpose: TPO }, { dateTime: '2023-01-01' }), consent('c2024', { type: 'permit', purpose: TPO }, { dateTime: '2024-01-01' })],
    requester: who.drA(), resources: [o1], expect: { o1: 'deny' } },
  { name: '46d equal dateTime tie → deny', consents: [consent('ca', { type: 'permit', purpose: TPO }), consent('cb', { type: 'deny', purpose: TPO })], requester: who.drA(), resources: [o1], expect: { o1: 'deny' } },
  ...[
    { n: '47 R5 shape: ETREAT permitted', p: ['ETREAT'], e: 'permit' as const },
    { n: '47b R5 shape: TREAT not', p: ['TREAT'], e: 'deny' as const },
  ].map((v): Row => ({
    name: v.n, consents: [{ resourceType: 'Consent', id: 'r5', status: 'active', patient: { reference: `Patient/${P1}` }, decision: 'deny', provision: [{ purpose: purpose('ETREAT') }] } as unknown as Consent],
    requester: who.drA(v.p), resources: [o1], expect: { o1: v.e },
  })),
  // SPEC §4.1: with the R5 decision extension every provision, the root included, reverses its parent.
  ...[
    { n: '47c R5-in-R4 "permit; root TPO; nested Bob": Bob TREAT is the nested permit', r: who.bob(), e: 'permit' as const },
    { n: '47d R5-in-R4 same consent: Dr A TREAT is the root exception (deny)', r: who.drA(), e: 'deny' as const },
    { n: '47e R5-in-R4 same consent: Dr A HRESCH is outside every exception (base permit)', r: who.drA(['HRESCH']), e: 'permit' as const },
  ].map((v): Row => ({
    name: v.n, consents: [consent('r5ext', { purpose: TPO, provision: [{ actor: [actor('Practitioner/bob')] }] }, { extension: [{ url: R5_CONSENT_DECISION, valueCode: 'permit' }] })],
    requester: v.r, resources: [o1], expect: { o1: v.e },
  })),
  ...[
    { n: '47f R5-in-R4 "deny, except ETREAT": ETREAT permitted', p: ['ETREAT'], e: 'permit' as const },
    { n: '47g R5-in-R4 "deny, except ETREAT": TREAT refused', p: ['TREAT'], e: 'deny' as const },
  ].map((v): Row => ({
    name: v.n, consents: [consent('r5deny', { purpose: purpose('ETREAT') }, { extension: [{ url: R5_CONSENT_DECISION, valueCode: 'deny' }] })],
    requester: who.drA(v.p), resources: [o1], expect: { o1: v.e },
    check: (d) => assert.ok(d.o1.trace.some((t) => t.rule === 'Consent/r5deny' && t.provision === (v.e === 'permit' ? 'provision' : 'Consent') && t.effect === v.e)),
  })),
  { name: '47h R5-in-R4 "permit, except data from 2015": 2015 withheld, the rest released',
    consents: [consent('r5-2015', { dataPeriod: { start: '2015-01-01', end: '2015-12-31' } }, { extension: [{ url: R5_CONSENT_DECISION, valueCode: 'permit' }] })],
    requester: who.drA(), resources: [observation('y2015', [], { effectiveDateTime: '2015-06-01' }), obs2021], expect: { y2015: 'deny', y2021: 'permit' } },
  { name: '47i R5-in-R4 with a root type that contradicts the extension: UNSUPPORTED, implicit policy',
    consents: [consent('r5-conflict', { type: 'deny', purpose: purpose('ETREAT') }, { extension: [{ url: R5_CONSENT_DECISION, valueCode: 'deny' }] })],
    requester: who.drA(), resources: [o1], expect: { o1: 'permit' }, check: (d, c) => {
      assert.equal(c.statuses[0].status, 'UNSUPPORTED');
      assert.match(c.statuses[0].reason ?? '', /provision\.type is deny/);
      assert.ok(has(d.o1, 'implicit-policy', 'permit'));
    } },
  { name: '47j R5-in-R4 root provision period is the exception\'s, not the consent\'s: expired exception skipped',
    consents: [consent('r5-period', { purpose: purpose('ETREAT'), period: { start: '2020-01-01', end: '2020-12-31' } }, { extension: [{ url: R5_CONSENT_DECISION, valueCode: 'deny' }] })],
    requester: who.drA(['ETREAT']), resources: [o1], expect: { o1: 'deny' }, check: (_d, c) => assert.equal(c.statuses[0].status, 'ENFORCEABLE') },
  { name: '47k R5 `date` orders consents like R4 dateTime: the newer R5 permit (2024) wins over the older R5 deny (2023)',
    consents: [
      { resourceType: 'Consent', id: 'r5-old', status: 'active', date: '2023-01-01', decision: 'deny', provision: [] },
      { resourceType: 'Consent', id: 'r5-new', status: 'active', date: '2024-01-01', decision: 'permit', provision: [] },
    ] as unknown as Consent[],
    requester: who.drA(), resources: [o1], expect: { o1: 'permit' } },
  { name: '48 permit N: an included R observation is filtered', consents: [permitN], requester: who.drA(), resources: [encounter('e1'), oR], expect: { e1: 'permit', oR: 'deny' } },
  { name: '49 consent with scope treatment is ignored', consents: [consent('c49', { type: 'deny' }, { scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'treatment' }] } })],
    requester: who.drA(), resources: [o1], expect: { o1: 'permit' }, check: (_d, c) => assert.equal(c.statuses[0].status, 'UNSUPPORTED') },
  { name: '50 inline-labelled V element is redacted for the guardian',
    requester: who.guardian(),
    resources: [observation('o50', [PROCESS_INLINE], {
      valueString: 'fine', _valueString: { extension: [{ url: DS4P_INLINE_LABEL, valueCoding: conf('V') }] },
      note: [{ text: 'ok' }, { text: 'secret', extension: [{ url: DS4P_INLINE_LABEL, valueCoding: conf('V') }] }],
      component: [{ code: { text: 'c' }, valueString: 'n', extension: [{ url: DS4P_INLINE_LABEL, valueCoding: conf('N') }] }],
    })],
    expect: { o50: 'redact' }, check: (d) => {
      const paths = d.o50.obligations.flatMap((o) => (o.kind === 'redact' ? [o.path] : [])).sort();
      assert.deepEqual(paths, ['note[1]', 'valueString']);
      assert.ok(d.o50.obligations.some((o) => o.kind === 'add-security-label' && o.coding.code === 'REDACTED'));
    } },
];

describe('decision engine: scenarios.md decision rows', () => {
  for (const row of rows) {
    test(row.name, () => {
      const compiled = compile(inputs(row.consents, row.flags, row.extraInputs), row.requester, policyWith(row.policy ?? {}), NOW);
      const decisions: Record<string, Decision> = {};
      for (const r of row.resources) decisions[r.id ?? ''] = evaluate(compiled, r);
      const outcomes = Object.fromEntries(Object.entries(decisions).map(([id, d]) => [id, d.outcome]));
      assert.deepEqual(outcomes, row.expect);
      for (const d of Object.values(decisions)) {
        assert.ok(d.trace.length > 0, 'every decision names the rules that produced it');
        if (d.outcome === 'deny') assert.equal(d.breakGlassUsed, false);
      }
      row.check?.(decisions, compiled);
    });
  }
});
