// scenarios.md rows 1–50, end to end: real ES256 tokens → the gateway on loopback → the embedded FHIR
// upstream over HTTP, with the audit journal read back where a row asks for it. Each row has its own
// patient ("P1" of that row, p1-rNN) so that one upstream per implicit policy holds every row's world.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Consent, OperationOutcome, Resource } from '@medplum/fhirtypes';
import { CONSENT_SCOPE, DG_CODES, DS4P_EXTENSION_DISPLAY, DS4P_INLINE_LABEL, PART2_NOTICE, V3_ACT_CODE, V3_CONFIDENTIALITY, V3_OBSERVATION_VALUE } from '../../src/fhir/systems.ts';
import { startEmbeddedUpstream, type EmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { harmFlag, legalRestriction, PROCESS_INLINE } from '../decide/fixtures.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { startHarness, type Harness } from '../support/harness.ts';
import { resourcesOf } from '../audit/fixtures.ts';
import {
  act,
  actor,
  assertConcealed,
  assertNoTrace,
  assertNothingReleased,
  assertReleased,
  auditEventsFor,
  breakTheGlassMarks,
  cast,
  conf,
  consent,
  content,
  daysFromNow,
  entriesOf,
  ignoredRules,
  obs,
  pagedIds,
  patient,
  personas,
  purpose,
  requestId,
  TPO,
  type Personas,
} from './support.ts';

type WorldName = 'all-normal' | 'deny' | 'break-glass-only';

interface World {
  readonly h: Harness;
  readonly who: Personas;
  /** Sees every request the gateway makes upstream (all-normal world only). */
  readonly proxy?: FaultProxy;
}

interface Row {
  readonly n: number;
  readonly name: string;
  readonly world: WorldName;
  readonly run: (w: World) => Promise<void>;
}

const search = (type: string, pid: string, extra = ''): string => `${type}?patient=${pid}${extra}`;
const rowPatient = (n: number | string): string => `p1-r${String(n).padStart(2, '0')}`;

// Fixtures per world: each row's patient, consents and data.
const fixtures: Record<WorldName, Resource[]> = { 'all-normal': [], deny: [], 'break-glass-only': [] };
function add(world: WorldName, ...resources: Resource[]): void {
  fixtures[world].push(...resources);
}
/** A row's patient with the given resources (ids are prefixed with the patient id). */
function world(name: WorldName, pid: string, make: (pid: string) => Resource[]): void {
  add(name, patient(pid), ...make(pid));
}

const permitTPO = (id: string, pid: string, extra: Partial<Consent> = {}) => consent(id, pid, { type: 'permit', purpose: TPO }, extra);

// Row worlds ---------------------------------------------------------------------------------------
world('all-normal', rowPatient(1), (p) => [obs(`${p}-o1`, p), obs(`${p}-o2`, p), obs(`${p}-oR`, p, [conf('R')])]);
world('deny', rowPatient(2), (p) => [obs(`${p}-o1`, p)]);
world('break-glass-only', rowPatient(3), (p) => [obs(`${p}-o1`, p), obs(`${p}-oV`, p, [conf('V')])]);
world('all-normal', rowPatient(4), (p) => [permitTPO(`${p}-c`, p), obs(`${p}-o1`, p)]);
world('all-normal', rowPatient(6), (p) => [consent(`${p}-c`, p, { type: 'deny', purpose: TPO }), obs(`${p}-o1`, p), obs(`${p}-oR`, p, [conf('R')])]);
const inactiveStatuses = ['inactive', 'entered-in-error', 'draft', 'proposed', 'rejected'] as const;
for (const status of inactiveStatuses) {
  world('all-normal', `${rowPatient(8)}-${status}`, (p) => [consent(`${p}-c`, p, { type: 'deny', purpose: TPO }, { status }), obs(`${p}-o1`, p)]);
}
world('deny', rowPatient(9), (p) => [permitTPO(`${p}-c`, p, { provision: { type: 'permit', purpose: TPO, period: { start: '2020-01-01', end: daysFromNow(-30) } } }), obs(`${p}-o1`, p)]);
world('deny', rowPatient(10), (p) => [permitTPO(`${p}-c`, p, { provision: { type: 'permit', purpose: TPO, period: { start: daysFromNow(1) } } }), obs(`${p}-o1`, p)]);
world('all-normal', rowPatient(10), (p) => [permitTPO(`${p}-c`, p, { provision: { type: 'permit', purpose: TPO, period: { start: daysFromNow(1) } } }), obs(`${p}-o1`, p)]);
world('all-normal', rowPatient(11), (p) => [consent(`${p}-c`, p, { type: 'permit', provision: [{ type: 'deny', actor: [actor('Practitioner/bob')] }] }), obs(`${p}-o1`, p)]);
world('all-normal', rowPatient(13), (p) => [
  consent(`${p}-c`, p, { type: 'permit', provision: [{ type: 'deny', actor: [actor('Practitioner/bob')], period: { start: daysFromNow(-730), end: daysFromNow(-365) } }] }),
  obs(`${p}-o1`, p),
]);
world('all-normal', rowPatient(14), (p) => [
  consent(`${p}-c`, p, { type: 'deny', provision: [{ type: 'permit', actor: [actor('Practitioner/bob')], purpose: purpose('PATRQT'), securityLabel: [conf('N')] }] }),
  obs(`${p}-oN`, p),
  obs(`${p}-oN2`, p),
  obs(`${p}-oR`, p, [conf('R')]),
]);
world('all-normal', rowPatient(16), (p) => [consent(`${p}-c`, p, { type: 'deny', provision: [{ type: 'permit', purpose: purpose('PATRQT') }] }), obs(`${p}-o1`, p)]);
const dated = (p: string): Resource[] => [
  obs(`${p}-y2021`, p, [], { effectiveDateTime: '2021-06-01T00:00:00Z' }),
  obs(`${p}-y2022`, p, [], { effectiveDateTime: '2022-06-01T00:00:00Z' }),
  obs(`${p}-issued2022`, p, [], { effectiveDateTime: undefined, issued: '2022-03-01T00:00:00Z' }),
  // No clinical date: judged by meta.lastUpdated, which the upstream sets to now.
  obs(`${p}-undated`, p, [], { effectiveDateTime: undefined }),
];
world('all-normal', rowPatient(17), (p) => [consent(`${p}-c`, p, { type: 'permit', purpose: TPO, dataPeriod: { start: '2022-01-01', end: '2022-12-31' } }), ...dated(p)]);
world('all-normal', rowPatient(18), (p) => [consent(`${p}-c`, p, { type: 'permit', purpose: TPO, provision: [{ type: 'deny', dataPeriod: { start: '2022-01-01', end: '2022-12-31' } }] }), ...dated(p)]);
world('all-normal', rowPatient(19), (p) => [
  consent(`${p}-c`, p, { type: 'permit', provision: [{ type: 'deny', data: [{ meaning: 'instance', reference: { reference: `Observation/${p}-x` } }] }] }),
  obs(`${p}-x`, p),
  obs(`${p}-y`, p),
  obs(`${p}-z`, p),
]);
world('all-normal', rowPatient(20), (p) => [
  consent(`${p}-c`, p, { type: 'permit', provision: [{ type: 'deny', data: [{ meaning: 'authoredby', reference: { reference: 'Practitioner/bob' } }] }] }),
  obs(`${p}-byBob`, p, [], { performer: [{ reference: 'Practitioner/bob' }] }),
  obs(`${p}-byA`, p, [], { performer: [{ reference: 'Practitioner/dr-a' }] }),
  { resourceType: 'Condition', id: `${p}-cBob`, subject: { reference: `Patient/${p}` }, recorder: { reference: 'Practitioner/bob' }, code: { text: content(`${p}-cBob`) } },
  { resourceType: 'Condition', id: `${p}-cA`, subject: { reference: `Patient/${p}` }, recorder: { reference: 'Practitioner/dr-a' }, code: { text: 'ok' } },
]);
const encounter = (id: string, p: string): Resource => ({ resourceType: 'Encounter', id, status: 'finished', class: { code: 'AMB' }, subject: { reference: `Patient/${p}` } });
world('all-normal', rowPatient(21), (p) => [
  consent(`${p}-c`, p, { type: 'permit', provision: [{ type: 'deny', data: [{ meaning: 'dependents', reference: { reference: `Encounter/${p}-e1` } }] }] }),
  encounter(`${p}-e1`, p),
  encounter(`${p}-e2`, p),
  obs(`${p}-in1`, p, [], { encounter: { reference: `Encounter/${p}-e1` } }),
  obs(`${p}-in2`, p, [], { encounter: { reference: `Encounter/${p}-e2` } }),
]);
world('all-normal', rowPatient(22), (p) => [consent(`${p}-c`, p, { type: 'permit', purpose: TPO, securityLabel: [conf('N')] }), obs(`${p}-o1`, p), obs(`${p}-o2`, p, [act('OPIOIDUD'), conf('R')])]);
world('all-normal', rowPatient(23), (p) => [consent(`${p}-c`, p, { type: 'permit', purpose: TPO, securityLabel: [conf('N'), conf('R')] }), obs(`${p}-o1`, p), obs(`${p}-o2`, p, [act('OPIOIDUD'), conf('R')])]);
world('all-normal', rowPatient(24), (p) => [
  consent(`${p}-c`, p, { type: 'permit', securityLabel: [conf('N')], provision: [{ type: 'permit', securityLabel: [act('PSY')], actor: [actor('Practitioner/dr-a')] }] }),
  obs(`${p}-o1`, p),
  obs(`${p}-o3`, p, [act('PSY'), conf('R')]),
]);
world('all-normal', rowPatient(25), (p) => [
  consent(`${p}-c`, p, { type: 'permit', securityLabel: [conf('N')], provision: [{ type: 'permit', securityLabel: [conf('R')], purpose: purpose('BTG'), actor: [actor('Group/btg-users')] }] }),
  obs(`${p}-o1`, p),
  obs(`${p}-oR`, p, [conf('R')]),
]);
world('all-normal', rowPatient(28), (p) => [consent(`${p}-c`, p, { type: 'deny', provision: [{ type: 'permit', purpose: purpose('BTG') }] }), obs(`${p}-o1`, p)]);
world('all-normal', rowPatient(29), (p) => [consent(`${p}-c`, p, { type: 'permit', provision: [{ type: 'deny', securityLabel: [act('SUD')] }] }), obs(`${p}-o1`, p), obs(`${p}-o4`, p, [act('OPIOIDUD')])]);
world('all-normal', rowPatient(30), (p) => [consent(`${p}-c`, p, { type: 'permit', securityLabel: [conf('R')] }), obs(`${p}-o5`, p, [conf('N')]), obs(`${p}-o6`, p, [conf('V')])]);
world('all-normal', rowPatient(31), (p) => [
  consent(`${p}-c`, p, {
    type: 'permit',
    provision: [{ type: 'deny', actor: [actor('Organization/payer')], purpose: purpose('HPAYMT'), data: [{ meaning: 'dependents', reference: { reference: `Encounter/${p}-e9` } }] }],
  }),
  encounter(`${p}-e9`, p),
  encounter(`${p}-e2`, p),
  obs(`${p}-in9`, p, [], { encounter: { reference: `Encounter/${p}-e9` } }),
  obs(`${p}-in2`, p, [], { encounter: { reference: `Encounter/${p}-e2` } }),
]);
const withPatient = (c: Consent, p: string): Consent => ({ ...c, patient: { reference: `Patient/${p}` } });
world('all-normal', rowPatient(33), (p) => [
  consent(`${p}-c`, p, { type: 'permit' }),
  withPatient(legalRestriction(`${p}-lr`, { type: 'deny', actor: [actor('RelatedPerson/guardian')] }), p),
  obs(`${p}-o1`, p),
]);
world('all-normal', `${rowPatient(34)}a`, (p) => [
  consent(`${p}-c`, p, { type: 'permit' }),
  withPatient(legalRestriction(`${p}-lr`, { type: 'deny', actor: [actor('Practitioner/dr-a')] }), p),
  obs(`${p}-o1`, p),
]);
world('all-normal', `${rowPatient(34)}b`, (p) => [
  consent(`${p}-c`, p, { type: 'permit' }),
  withPatient(legalRestriction(`${p}-lr`, { type: 'deny', actor: [actor('Practitioner/dr-a')], provision: [{ type: 'permit', purpose: purpose('BTG') }] }), p),
  obs(`${p}-o1`, p),
]);
world('all-normal', rowPatient(35), (p) => [obs(`${p}-o1`, p), obs(`${p}-o7`, p, [act('42CFRPart2'), act('SUD'), conf('R')]), obs(`${p}-o7n`, p, [act('42CFRPart2'), act('SUD')])]);
world('all-normal', rowPatient(36), (p) => [
  consent(`${p}-c`, p, {
    type: 'permit',
    securityLabel: [conf('N')],
    provision: [{ type: 'permit', securityLabel: [act('42CFRPart2')], actor: [actor('Organization/hospital')], purpose: purpose('TREAT') }],
  }),
  obs(`${p}-o7`, p, [act('42CFRPart2'), act('SUD'), conf('R')]),
]);
const report = (id: string, p: string): Resource => ({ resourceType: 'DiagnosticReport', id, status: 'final', code: { text: 'progress note' }, subject: { reference: `Patient/${p}` }, conclusion: content(id) });
world('all-normal', rowPatient(37), (p) => [
  harmFlag(`${p}-h`, { subject: { reference: `Patient/${p}` } }, 'harm-life-safety', [`DiagnosticReport/${p}-d1`]),
  report(`${p}-d1`, p),
  report(`${p}-d2`, p),
]);
world('all-normal', rowPatient(39), (p) => [
  harmFlag(`${p}-h`, { subject: { reference: `Patient/${p}` }, author: { reference: 'Practitioner/bob' } }, 'harm-life-safety', [`DiagnosticReport/${p}-d1`]),
  report(`${p}-d1`, p),
]);
const category = (code: string) => [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code }] }];
world('all-normal', rowPatient(41), (p) => [obs(`${p}-lab`, p, [], { category: category('laboratory') }), obs(`${p}-vital`, p, [], { category: category('vital-signs') })]);
world('all-normal', 'p2', (p) => [obs(`${p}-o1`, p)]);
world('all-normal', rowPatient(46), (p) => [
  consent(`${p}-c2023`, p, { type: 'permit', purpose: TPO }, { dateTime: '2023-01-01' }),
  consent(`${p}-c2024`, p, { type: 'deny', purpose: TPO }, { dateTime: '2024-01-01' }),
  obs(`${p}-o1`, p),
]);
world('all-normal', rowPatient(47), (p) => [
  // R5 shape (decision + provision[]); `patient` kept so that the R4 upstream finds it by patient.
  { resourceType: 'Consent', id: `${p}-c`, status: 'active', patient: { reference: `Patient/${p}` }, decision: 'deny', provision: [{ purpose: purpose('ETREAT') }] } as unknown as Resource,
  obs(`${p}-o1`, p),
]);
world('all-normal', rowPatient(48), (p) => [
  consent(`${p}-c`, p, { type: 'permit', securityLabel: [conf('N')] }),
  encounter(`${p}-e`, p),
  obs(`${p}-inN`, p, [], { encounter: { reference: `Encounter/${p}-e` } }),
  obs(`${p}-inR`, p, [conf('R')], { encounter: { reference: `Encounter/${p}-e` } }),
]);
world('all-normal', rowPatient(49), (p) => [
  consent(`${p}-c`, p, { type: 'deny' }, { scope: { coding: [{ system: CONSENT_SCOPE, code: 'treatment' }] } }),
  obs(`${p}-o1`, p),
]);
world('all-normal', rowPatient(50), (p) => [
  obs(`${p}-o`, p, [PROCESS_INLINE], {
    text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${content(`${p}-note`)}</div>` },
    note: [{ text: 'routine check' }, { text: content(`${p}-note`), extension: [{ url: DS4P_INLINE_LABEL, valueCoding: conf('V') }] }],
  }),
]);

// Rows -------------------------------------------------------------------------------------------
const rows: Row[] = [
  { n: 1, name: 'no Consent, all-normal: Dr A TREAT gets all N data (R filtered, pages refilled)', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(1);
    const token = await who.drA();
    assertReleased(await h.request(search('Observation', p), { token }), [`${p}-o1`, `${p}-o2`], [`${p}-oR`]);
    assert.deepEqual(await pagedIds(h, search('Observation', p), token), [`${p}-o1`, `${p}-o2`]);
  } },
  { n: 2, name: 'no Consent, implicit deny: Dr A read o1 → 404 (concealed)', world: 'deny', run: async ({ h, who }) => {
    const p = rowPatient(2);
    assertConcealed(await h.request(`Observation/${p}-o1`, { token: await who.drA() }), [`${p}-o1`]);
  } },
  { n: 3, name: 'no Consent, implicit break-glass-only: dr-a with btg scope and BTG is permitted; audit marks break-the-glass', world: 'break-glass-only', run: async ({ h, who }) => {
    const p = rowPatient(3);
    const id = requestId('r3');
    const res = await h.request(search('Observation', p), { token: await who.drA('BTG', { btg: true }), headers: { 'x-request-id': id } });
    assertReleased(res, [`${p}-o1`], [`${p}-oV`]);
    assert.ok(breakTheGlassMarks(await auditEventsFor(h.auditDir, id)).includes('btg-released'), 'the audit marks the release as break-the-glass');
    // Without break-the-glass the same request releases nothing.
    assertNothingReleased(await h.request(search('Observation', p), { token: await who.drA('TREAT') }), [`${p}-o1`]);
  } },
  { n: 4, name: 'permit TPO: Dr A TREAT is permitted', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(4);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o1`]);
  } },
  { n: 5, name: 'permit TPO: research org, HRESCH, system scope → nothing released', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(4);
    assertNothingReleased(await h.request(search('Observation', p), { token: await who.sys('research', 'HRESCH') }), [`${p}-o1`]);
  } },
  { n: 6, name: 'deny TPO: Dr A TREAT read o1 → 404', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(6);
    assertConcealed(await h.request(`Observation/${p}-o1`, { token: await who.drA() }), [`${p}-o1`]);
  } },
  { n: 7, name: 'deny TPO: Dr A HRESCH → the implicit policy applies (N released, R not)', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(6);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA('HRESCH') }), [`${p}-o1`], [`${p}-oR`]);
  } },
  { n: 8, name: 'deny TPO with status inactive|entered-in-error|draft|proposed|rejected is ignored: Dr A TREAT permitted', world: 'all-normal', run: async ({ h, who }) => {
    const token = await who.drA();
    for (const status of inactiveStatuses) {
      const p = `${rowPatient(8)}-${status}`;
      assertReleased(await h.request(search('Observation', p), { token }), [`${p}-o1`]);
      assert.equal((await h.request(`Observation/${p}-o1`, { token })).status, 200, status);
    }
  } },
  { n: 9, name: 'expired permit TPO under implicit deny: nothing released', world: 'deny', run: async ({ h, who }) => {
    const p = rowPatient(9);
    assertNothingReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o1`]);
  } },
  { n: 10, name: 'permit TPO starting tomorrow: the implicit policy applies (deny → nothing; all-normal → HRESCH gets N)', world: 'deny', run: async ({ h, who }) => {
    const p = rowPatient(10);
    assertNothingReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o1`]);
  } },
  { n: 10, name: 'permit TPO starting tomorrow, all-normal world: a purpose the consent would refuse is served by the implicit policy', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(10);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA('HRESCH') }), [`${p}-o1`]);
  } },
  { n: 11, name: 'permit with nested deny actor Dr Bob: Bob TREAT → nothing released', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(11);
    assertNothingReleased(await h.request(search('Observation', p), { token: await who.bob() }), [`${p}-o1`]);
  } },
  { n: 12, name: 'permit with nested deny actor Dr Bob: Dr A TREAT permitted', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(11);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o1`]);
  } },
  { n: 13, name: 'nested deny actor Bob that ended last year: Bob permitted', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(13);
    assertReleased(await h.request(search('Observation', p), { token: await who.bob() }), [`${p}-o1`]);
  } },
  { n: 14, name: 'deny with nested permit Bob + PATRQT + N: Bob PATRQT gets N, R filtered (pages refilled)', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(14);
    const token = await who.bob('PATRQT');
    assertReleased(await h.request(search('Observation', p), { token }), [`${p}-oN`, `${p}-oN2`], [`${p}-oR`]);
    assert.deepEqual(await pagedIds(h, search('Observation', p), token), [`${p}-oN`, `${p}-oN2`]);
  } },
  { n: 15, name: 'same as 14: Bob TREAT → nothing released', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(14);
    assertNothingReleased(await h.request(search('Observation', p), { token: await who.bob() }), [`${p}-oN`, `${p}-oN2`, `${p}-oR`]);
  } },
  { n: 16, name: 'nested permit purpose PATRQT: Bob PWATRNY permitted (PWATRNY is-a PATRQT)', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(16);
    assertReleased(await h.request(search('Observation', p), { token: await who.bob('PWATRNY') }), [`${p}-o1`]);
  } },
  { n: 17, name: 'permit TPO with dataPeriod 2022: only 2022 data (clinical date, else lastUpdated)', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(17);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-y2022`, `${p}-issued2022`], [`${p}-y2021`, `${p}-undated`]);
  } },
  { n: 18, name: 'permit TPO with nested deny dataPeriod 2022: everything but 2022', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(18);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-y2021`, `${p}-undated`], [`${p}-y2022`, `${p}-issued2022`]);
  } },
  { n: 19, name: 'permit with nested deny data instance Observation/x: read x → 404; search filters x, returns the rest', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(19);
    const token = await who.drA();
    assertConcealed(await h.request(`Observation/${p}-x`, { token }), [`${p}-x`]);
    assertReleased(await h.request(search('Observation', p), { token }), [`${p}-y`, `${p}-z`], [`${p}-x`]);
    assert.deepEqual(await pagedIds(h, search('Observation', p), token), [`${p}-y`, `${p}-z`]);
  } },
  { n: 20, name: 'permit with nested deny authoredby Practitioner/bob: what Bob performed or recorded is filtered', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(20);
    const token = await who.drA();
    assertReleased(await h.request(search('Observation', p), { token }), [`${p}-byA`], [`${p}-byBob`]);
    assertReleased(await h.request(search('Condition', p), { token }), [`${p}-cA`], [`${p}-cBob`]);
  } },
  { n: 21, name: 'permit with nested deny dependents Encounter/e1: e1 and what references it are filtered', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(21);
    const token = await who.drA();
    assertReleased(await h.request(search('Observation', p), { token }), [`${p}-in2`], [`${p}-in1`]);
    assertReleased(await h.request(search('Encounter', p), { token }), [`${p}-e2`], [`${p}-e1`]);
  } },
  { n: 22, name: 'permit TPO securityLabel N: o1 returned, o2 [OPIOIDUD, R] filtered', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(22);
    const token = await who.drA();
    assertReleased(await h.request(search('Observation', p), { token }), [`${p}-o1`], [`${p}-o2`]);
    assert.deepEqual(await pagedIds(h, search('Observation', p), token), [`${p}-o1`]);
  } },
  { n: 23, name: 'permit TPO securityLabel N|R: both returned; Bundle.meta.security = R', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(23);
    const bundle = assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o1`, `${p}-o2`]);
    assert.deepEqual(bundle.meta?.security, [{ system: V3_CONFIDENTIALITY, code: 'R' }]);
  } },
  { n: 24, name: 'permit N with nested permit PSY for dr-a: dr-a gets o3 [PSY, R]; Dr Bob does not', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(24);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o1`, `${p}-o3`]);
    assertReleased(await h.request(search('Observation', p), { token: await who.bob() }), [`${p}-o1`], [`${p}-o3`]);
  } },
  { n: 25, name: 'permit N, nested permit R + BTG + Group/btg-users: dr-a with btg scope and BTG gets R data, audited as break-the-glass', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(25);
    const id = requestId('r25');
    assertReleased(await h.request(search('Observation', p), { token: await who.drA('BTG', { btg: true }), headers: { 'x-request-id': id } }), [`${p}-o1`, `${p}-oR`]);
    const events = await auditEventsFor(h.auditDir, id);
    const btgResource = events.flatMap(resourcesOf).find((r) => r.reference.startsWith(`Observation/${p}-oR`));
    assert.ok(btgResource?.breakGlass, 'the R resource is marked as released under break-the-glass');
    assert.ok(breakTheGlassMarks(events).includes('btg-released'));
  } },
  { n: 26, name: 'same as 25: dr-a TREAT → R filtered', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(25);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o1`], [`${p}-oR`]);
  } },
  { n: 27, name: 'same as 25: Dr Bob with btg scope and BTG → R filtered (not in the group)', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(25);
    assertReleased(await h.request(search('Observation', p), { token: await who.bob('BTG', { btg: true }) }), [`${p}-o1`], [`${p}-oR`]);
  } },
  { n: 28, name: 'deny with nested permit BTG: Bob TREAT with the BTG Category header but no btg scope → nothing released; attempt audited', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(28);
    const id = requestId('r28');
    const res = await h.request(search('Observation', p), {
      token: await who.bob('TREAT'),
      headers: { 'x-request-id': id, category: 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"' },
    });
    assertNothingReleased(res, [`${p}-o1`]);
    assert.ok(breakTheGlassMarks(await auditEventsFor(h.auditDir, id)).includes('btg-attempt'), 'the attempt is audited');
  } },
  { n: 29, name: 'nested deny securityLabel SUD: o4 [OPIOIDUD] filtered (subsumption)', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(29);
    const token = await who.drA();
    assertReleased(await h.request(search('Observation', p), { token }), [`${p}-o1`], [`${p}-o4`]);
    assert.deepEqual(await pagedIds(h, search('Observation', p), token), [`${p}-o1`]);
  } },
  { n: 30, name: 'permit securityLabel R: o5 [N] returned, o6 [V] filtered', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(30);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o5`], [`${p}-o6`]);
  } },
  { n: 31, name: 'self-pay restriction: payer HPAYMT → e9 and its dependents filtered, other encounters returned', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(31);
    const token = await who.sys('payer', 'HPAYMT');
    assertReleased(await h.request(search('Encounter', p), { token }), [`${p}-e2`], [`${p}-e9`]);
    assertReleased(await h.request(search('Observation', p), { token }), [`${p}-in2`], [`${p}-in9`, `${p}-e9`]);
  } },
  { n: 32, name: 'same as 31: Dr A TREAT → all returned', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(31);
    const token = await who.drA();
    assertReleased(await h.request(search('Encounter', p), { token }), [`${p}-e2`, `${p}-e9`]);
    assertReleased(await h.request(search('Observation', p), { token }), [`${p}-in2`, `${p}-in9`]);
  } },
  { n: 33, name: 'legal restriction denying RelatedPerson/guardian: guardian FAMRQT → nothing, although the patient’s consent permits', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(33);
    assertNothingReleased(await h.request(search('Observation', p), { token: await who.guardian() }), [`${p}-o1`]);
    // The patient's own consent does permit others: the restriction is what refuses the guardian.
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o1`]);
  } },
  { n: 34, name: 'legal restriction naming Dr A holds under break-the-glass; lifted only by its own nested BTG permit', world: 'all-normal', run: async ({ h, who }) => {
    const token = await who.drA('BTG', { btg: true });
    const a = `${rowPatient(34)}a`;
    const b = `${rowPatient(34)}b`;
    assertNothingReleased(await h.request(search('Observation', a), { token }), [`${a}-o1`]);
    assertReleased(await h.request(search('Observation', b), { token }), [`${b}-o1`]);
    assertNothingReleased(await h.request(search('Observation', b), { token: await who.drA('TREAT') }), [`${b}-o1`]);
  } },
  { n: 35, name: 'o7 [42CFRPart2, SUD, R] without a Part 2 consent: Dr A TREAT → filtered', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(35);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o1`], [`${p}-o7`, `${p}-o7n`]);
  } },
  { n: 36, name: 'nested permit 42CFRPart2 for Dr A’s organization, TREAT: o7 returned with NORDSCLCD and the Part 2 notice', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(36);
    const token = await who.drA('TREAT', { organization: 'Organization/hospital' });
    const bundle = assertReleased(await h.request(search('Observation', p), { token }), [`${p}-o7`]);
    const read = await h.request(`Observation/${p}-o7`, { token });
    assert.equal(read.status, 200);
    for (const released of [entriesOf(bundle)[0].resource as Resource, read.body as Resource]) {
      assert.ok(released.meta?.security?.some((c) => c.system === V3_ACT_CODE && c.code === 'NORDSCLCD'), 'NORDSCLCD in meta.security');
      assert.ok(JSON.stringify(released).includes(PART2_NOTICE), 'the Part 2 notice text is in the released resource');
      assert.ok(released.meta?.extension?.some((e) => e.url === DS4P_EXTENSION_DISPLAY && e.valueAnnotation?.text === PART2_NOTICE));
    }
    // Without the organization the nested permit does not name Dr A.
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [], [`${p}-o7`]);
  } },
  { n: 37, name: 'valid harm determination on d1: the patient’s search filters d1 with a suppressed outcome naming the ground and the right to review', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(37);
    const token = await who.pt(p);
    const bundle = assertReleased(await h.request('DiagnosticReport', { token }), [`${p}-d2`], [`${p}-d1`]);
    const outcomes = entriesOf(bundle, 'outcome').map((e) => e.resource as OperationOutcome);
    const issue = outcomes.flatMap((o) => o.issue).find((i) => i.code === 'suppressed' && i.details?.coding?.some((c) => c.system === DG_CODES && c.code === 'harm-life-safety'));
    assert.ok(issue, 'a suppressed outcome entry names the ground');
    assert.match(issue.details?.text ?? '', /right to have this refusal reviewed/);
    // A read states the refusal too (SPEC §4.3).
    const read = await h.request(`DiagnosticReport/${p}-d1`, { token });
    assert.equal(read.status, 403);
    assert.equal(read.body.issue[0].code, 'suppressed');
    assertNoTrace(read, [content(`${p}-d1`)]);
  } },
  { n: 38, name: 'same as 37: Dr A TREAT gets d1 (harm flags never apply to treatment)', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(37);
    assertReleased(await h.request(search('DiagnosticReport', p), { token: await who.drA() }), [`${p}-d1`, `${p}-d2`]);
  } },
  { n: 39, name: 'harm determination authored by Dr Bob (no care relationship): the patient gets d1; audit says the flag was ignored and why', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(39);
    const id = requestId('r39');
    assertReleased(await h.request('DiagnosticReport', { token: await who.pt(p), headers: { 'x-request-id': id } }), [`${p}-d1`]);
    const ignored = ignoredRules(await auditEventsFor(h.auditDir, id));
    assert.ok(ignored.some((r) => r.rule === `Flag/${p}-h` && r.effect === 'ignored' && /care relationship/.test(r.reason)), JSON.stringify(ignored));
  } },
  { n: 40, name: 'usr Observation?code=X with no patient → 400 OperationOutcome required; upstream not asked', world: 'all-normal', run: async ({ h, who, proxy }) => {
    assert.ok(proxy);
    const token = await who.drA();
    const before = proxy.seen.length;
    const res = await h.request('Observation?code=http://loinc.org|8867-4', { token });
    assert.equal(res.status, 400);
    assert.equal(res.body.resourceType, 'OperationOutcome');
    assert.equal(res.body.issue[0].code, 'required');
    assert.deepEqual(proxy.seen.slice(before).filter((target) => /\/Observation/.test(target)), [], 'the upstream was not asked for Observations');
    // The proxy does see a search that names the patient, so the check above can fail.
    await h.request(search('Observation', rowPatient(1)), { token });
    assert.ok(proxy.seen.slice(before).some((target) => /\/Observation\?/.test(target)));
  } },
  { n: 41, name: 'pt (patient P1) asks Observation?patient=P2 → 403', world: 'all-normal', run: async ({ h, who }) => {
    const res = await h.request(search('Observation', 'p2'), { token: await who.pt(rowPatient(41)) });
    assert.equal(res.status, 403);
    assertNoTrace(res, ['p2-o1']);
  } },
  { n: 42, name: 'pt asks Observation with no patient → only P1’s data', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(41);
    assertReleased(await h.request('Observation', { token: await who.pt(p) }), [`${p}-lab`, `${p}-vital`], ['p2-o1']);
  } },
  { n: 43, name: 'patient/Patient.r searching Observation → 403', world: 'all-normal', run: async ({ h, who }) => {
    const res = await h.request('Observation', { token: await who.pt(rowPatient(41), 'patient/Patient.r') });
    assert.equal(res.status, 403);
    assert.equal(res.body.issue[0].code, 'forbidden');
  } },
  { n: 44, name: 'patient/Observation.rs?category=…|laboratory: search returns labs only; read of a vital-signs observation refused', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(41);
    const token = await who.pt(p, 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory');
    assertReleased(await h.request('Observation', { token }), [`${p}-lab`], [`${p}-vital`]);
    const read = await h.request(`Observation/${p}-vital`, { token });
    assert.ok(read.status === 403 || read.status === 404, `refused, got ${read.status}`);
    assertNoTrace(read, [`${p}-vital`]);
    assert.equal((await h.request(`Observation/${p}-lab`, { token })).status, 200);
  } },
  { n: 45, name: 'v1 patient/Observation.read behaves as .rs (read and search)', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(41);
    const token = await who.pt(p, 'patient/Observation.read');
    assertReleased(await h.request('Observation', { token }), [`${p}-lab`, `${p}-vital`], ['p2-o1']);
    assert.equal((await h.request(`Observation/${p}-lab`, { token })).status, 200);
    assert.equal((await h.request('Encounter', { token })).status, 403, 'no other type');
  } },
  { n: 46, name: 'permit TPO (2023) and deny TPO (2024): the most recent (deny) wins', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(46);
    const token = await who.drA();
    assertNothingReleased(await h.request(search('Observation', p), { token }), [`${p}-o1`]);
    assertConcealed(await h.request(`Observation/${p}-o1`, { token }));
  } },
  { n: 47, name: 'R5 shape decision=deny, provision{purpose ETREAT}: Dr A ETREAT permitted, TREAT not', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(47);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA('ETREAT') }), [`${p}-o1`]);
    assertNothingReleased(await h.request(search('Observation', p), { token: await who.drA('TREAT') }), [`${p}-o1`]);
  } },
  { n: 48, name: 'permit N: Encounter?patient=P1&_revinclude=Observation:encounter filters the included [R] observation, returns the rest', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(48);
    const res = await h.request(search('Encounter', p, '&_revinclude=Observation:encounter'), { token: await who.drA() });
    const bundle = assertReleased(res, [`${p}-e`], [`${p}-inR`]);
    assert.deepEqual(entriesOf(bundle, 'include').map((e) => e.resource?.id), [`${p}-inN`]);
  } },
  { n: 49, name: 'Consent with scope treatment is ignored for a privacy request', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(49);
    assertReleased(await h.request(search('Observation', p), { token: await who.drA() }), [`${p}-o1`]);
  } },
  { n: 50, name: 'inline-labelled V element on a PROCESSINLINELABEL resource: guardian FAMRQT read → element removed, REDACTED, no narrative', world: 'all-normal', run: async ({ h, who }) => {
    const p = rowPatient(50);
    const res = await h.request(`Observation/${p}-o`, { token: await who.guardian() });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.note, [{ text: 'routine check' }]);
    assert.ok(res.body.meta.security.some((c: { system: string; code: string }) => c.system === V3_OBSERVATION_VALUE && c.code === 'REDACTED'));
    assert.equal(res.body.text, undefined, 'no narrative');
    assertNoTrace(res, [content(`${p}-note`)]);
  } },
];

// Worlds -----------------------------------------------------------------------------------------
const worlds = new Map<WorldName, World>();
const closers: (() => Promise<void>)[] = [];

before(async () => {
  // all-normal: the gateway reaches its upstream through a pass-through proxy that records every request (row 40).
  const upstream = await startEmbeddedUpstream({ resources: [...cast(rowPatient(33)), ...fixtures['all-normal']] });
  const proxy = await startFaultProxy(upstream.url);
  const proxied: EmbeddedUpstream = { url: proxy.url, repo: upstream.repo, close: async () => {} };
  const main = await startHarness({ upstream: proxied });
  closers.push(() => main.close(), () => proxy.close(), () => upstream.close());
  worlds.set('all-normal', { h: main, who: personas(main), proxy });
  for (const name of ['deny', 'break-glass-only'] as const) {
    const h = await startHarness({ resources: [...cast(), ...fixtures[name]], policy: { implicitPolicy: name } });
    closers.push(() => h.close());
    worlds.set(name, { h, who: personas(h) });
  }
});

after(async () => {
  for (const close of closers) await close();
});

describe('scenarios.md, end to end through the gateway', () => {
  for (const row of rows) {
    test(`${row.n} ${row.name}`, async () => {
      const w = worlds.get(row.world);
      assert.ok(w, `world ${row.world} started`);
      await row.run(w);
    });
  }
  test('every row 1–50 is covered', () => {
    assert.deepEqual([...new Set(rows.map((r) => r.n))].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i + 1));
  });
});

