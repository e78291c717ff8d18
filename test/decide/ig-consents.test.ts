// Issue 13: every published example Consent — the IHE PCF IG's (fixtures/ig/pcf) and the FHIR R5 ones
// (fixtures/ig/r5, read through the R5 shape: decision, provision[], resourceType/documentType, date) —
// compiles to ENFORCEABLE with a documented meaning, shown as decisions, or to INACTIVE/UNSUPPORTED with a reason.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import type { Coding, Consent, Resource } from '@medplum/fhirtypes';
import { defaultPolicy } from '../../src/config/policy.ts';
import { compile, enforcementStatus, evaluate, type Requester } from '../../src/decide/index.ts';
import { invalidPolicyResources, validationFailure } from '../../src/policy/validate.ts';
import { V3_ACT_CODE, V3_CONFIDENTIALITY } from '../../src/fhir/systems.ts';

const TODAY = new Date('2025-06-15T12:00:00Z');
const read = <T>(folder: string, file: string): T => JSON.parse(readFileSync(new URL(`../../fixtures/ig/${folder}/${file}`, import.meta.url), 'utf8')) as T;
const consentsIn = (folder: string): string[] => readdirSync(new URL(`../../fixtures/ig/${folder}/`, import.meta.url)).filter((f) => f.startsWith('Consent-'));

const as = (references: string[], purposes = ['TREAT'], breakGlass = false): Requester => ({
  fhirUser: references[0], references, identifiers: [], purposes, breakGlass, clientKind: 'user', action: 'access',
});
const label = (code: string): Coding => (code.length === 1 ? { system: V3_CONFIDENTIALITY, code } : { system: V3_ACT_CODE, code });
const obs = (id: string, patient: string, labels: string[] = [], extra: Record<string, unknown> = {}): Resource =>
  ({ resourceType: 'Observation', id, status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${patient}` }, effectiveDateTime: '2024-05-01', meta: { security: labels.map(label) }, ...extra }) as Resource;

interface Case { readonly who: Requester; readonly resource: Resource; readonly expect: 'permit' | 'deny'; readonly implicit?: boolean }
interface Row {
  readonly id: string;
  readonly today: 'ENFORCEABLE' | 'INACTIVE' | 'UNSUPPORTED';
  readonly reason?: RegExp;
  readonly documented: string;
  /** What it means, as decisions, at a moment it is in force (TODAY unless given). */
  readonly cases?: readonly Case[];
  readonly at?: Date;
}

// ---- IHE PCF -------------------------------------------------------------------------------------------
const pcf = (file: string): Resource => read<Resource>('pcf', `${file}.json`);
const P = 'ex-patient';
const bp = pcf('Observation-ex-bloodPressure'); // N, 2004, performer ex-author
const alcohol = pcf('Observation-ex-alcoholUse'); // ETHUD + R, 2022-06-13
const encounter = pcf('Encounter-ex-encounter');
/** Group/ex-privilegedUsers' members, as the PCF example Group lists them. */
const privileged = ((pcf('Group-ex-privilegedUsers') as unknown as { member?: { entity?: { reference?: string } }[] }).member ?? []).map((m) => m.entity?.reference ?? '');
const psyR = obs('psy', P, ['PSY', 'R']);
const sdvR = obs('sdv', P, ['SDV', 'R']);
const byPractitioner = obs('by-practitioner', P, [], { performer: [{ reference: 'Practitioner/ex-practitioner' }] });
const unlisted = obs('unlisted', P);
const dr = as(['Practitioner/ex-practitioner', 'Organization/ex-organization']);
const drBtg = as(['Practitioner/ex-practitioner', 'Organization/ex-organization'], ['BTG'], true);
const clerk = as(['Practitioner/ex-clerk']);
const clerkBtg = as(['Practitioner/ex-clerk'], ['BTG'], true);
const researcher = as(['Organization/ex-org-researcher'], ['HRESCH']);

const pcfRows: Row[] = [
  { id: 'ex-consent-basic-treat', today: 'ENFORCEABLE', documented: 'root permit for TREAT/HPAYMT/HOPERAT: those purposes get everything, any other purpose nothing',
    cases: [{ who: dr, resource: bp, expect: 'permit' }, { who: dr, resource: alcohol, expect: 'permit' }, { who: researcher, resource: bp, expect: 'deny' }] },
  { id: 'ex-consent-basic-treat-infant', today: 'ENFORCEABLE', documented: 'the same permit, given for an infant by the mother',
    cases: [{ who: dr, resource: bp, expect: 'permit' }, { who: researcher, resource: bp, expect: 'deny' }] },
  { id: 'ex-consent-basic-ink', today: 'ENFORCEABLE', documented: 'the same permit, captured on paper (sourceAttachment)',
    cases: [{ who: dr, resource: bp, expect: 'permit' }, { who: researcher, resource: bp, expect: 'deny' }] },
  { id: 'ex-consent-basic-reject', today: 'ENFORCEABLE', documented: 'root deny for TREAT/HPAYMT/HOPERAT: those purposes get nothing; research falls to the implicit policy (N released)',
    cases: [{ who: dr, resource: bp, expect: 'deny' }, { who: researcher, resource: bp, expect: 'permit', implicit: true }, { who: researcher, resource: alcohol, expect: 'deny', implicit: true }] },
  { id: 'ex-consent-basic-research', today: 'ENFORCEABLE', documented: 'root permit for HRESCH only: research gets everything, treatment nothing',
    cases: [{ who: researcher, resource: bp, expect: 'permit' }, { who: dr, resource: bp, expect: 'deny' }] },
  { id: 'ex-consent-expired-treat', today: 'INACTIVE', reason: /period/, at: new Date('2022-06-15T00:00:00Z'), documented: 'the TPO permit, ended 2022-12-31: ignored today',
    cases: [{ who: dr, resource: bp, expect: 'permit' }, { who: researcher, resource: bp, expect: 'deny' }] },
  { id: 'ex-consent-advanced-normal', today: 'ENFORCEABLE', documented: 'TPO permit with clearance N: N released, R (alcohol use) not',
    cases: [{ who: dr, resource: bp, expect: 'permit' }, { who: dr, resource: alcohol, expect: 'deny' }, { who: researcher, resource: bp, expect: 'deny' }] },
  { id: 'ex-consent-advanced-normal-restricted', today: 'ENFORCEABLE', documented: 'TPO permit with clearance N and R: both released',
    cases: [{ who: dr, resource: bp, expect: 'permit' }, { who: dr, resource: alcohol, expect: 'permit' }] },
  { id: 'ex-consent-advanced-normal-not-restricted', today: 'ENFORCEABLE', documented: 'TPO permit N with a nested deny of R: R refused',
    cases: [{ who: dr, resource: bp, expect: 'permit' }, { who: dr, resource: alcohol, expect: 'deny' }] },
  { id: 'ex-consent-advanced-normal-focused-restricted', today: 'ENFORCEABLE', documented: 'TPO permit N; nested permit of R to Practitioner/ex-practitioner only',
    cases: [{ who: dr, resource: alcohol, expect: 'permit' }, { who: clerk, resource: alcohol, expect: 'deny' }, { who: clerk, resource: bp, expect: 'permit' }] },
  { id: 'ex-consent-advanced-normal-focused-psy', today: 'ENFORCEABLE', documented: 'TPO permit N; nested permit of PSY data to Practitioner/ex-practitioner only',
    cases: [{ who: dr, resource: psyR, expect: 'permit' }, { who: clerk, resource: psyR, expect: 'deny' }, { who: dr, resource: sdvR, expect: 'deny' }] },
  { id: 'ex-consent-advanced-normal-focused-psy-or-sdv', today: 'ENFORCEABLE', documented: 'TPO permit N; nested permit of PSY or SDV data to Practitioner/ex-practitioner only',
    cases: [{ who: dr, resource: psyR, expect: 'permit' }, { who: dr, resource: sdvR, expect: 'permit' }, { who: clerk, resource: sdvR, expect: 'deny' }] },
  { id: 'ex-consent-advanced-normal-break-glass-restricted', today: 'ENFORCEABLE', documented: 'TPO permit N; nested permit of R for BTG to members of Group/ex-privilegedUsers',
    cases: [{ who: drBtg, resource: alcohol, expect: 'permit' }, { who: dr, resource: alcohol, expect: 'deny' }, { who: clerkBtg, resource: alcohol, expect: 'deny' }] },
  { id: 'ex-consent-intermediate-authoredby', today: 'ENFORCEABLE', documented: 'TPO permit of data authored by Practitioner/ex-practitioner only',
    cases: [{ who: clerk, resource: byPractitioner, expect: 'permit' }, { who: clerk, resource: bp, expect: 'deny' }] },
  { id: 'ex-consent-intermediate-not-authoredby', today: 'ENFORCEABLE', documented: 'TPO permit; nested deny of data authored by Practitioner/ex-practitioner',
    cases: [{ who: clerk, resource: byPractitioner, expect: 'deny' }, { who: clerk, resource: bp, expect: 'permit' }] },
  { id: 'ex-consent-intermediate-data', today: 'ENFORCEABLE', documented: 'TPO permit of the six listed instances only',
    cases: [{ who: dr, resource: bp, expect: 'permit' }, { who: dr, resource: encounter, expect: 'permit' }, { who: dr, resource: unlisted, expect: 'deny' }] },
  { id: 'ex-consent-intermediate-not-data', today: 'ENFORCEABLE', documented: 'TPO permit; nested deny of Observation/ex-alcoholUse',
    cases: [{ who: dr, resource: alcohol, expect: 'deny' }, { who: dr, resource: bp, expect: 'permit' }] },
  { id: 'ex-consent-intermediate-encounter', today: 'ENFORCEABLE', documented: 'TPO permit of Encounter/ex-encounter and what it references (data meaning related, SPEC §4.1); the Observations point at the encounter, it does not point at them',
    cases: [{ who: dr, resource: encounter, expect: 'permit' }, { who: dr, resource: bp, expect: 'deny' }] },
  { id: 'ex-consent-intermediate-not-encounter', today: 'ENFORCEABLE', documented: 'TPO permit; nested deny of Encounter/ex-encounter and what it references',
    cases: [{ who: dr, resource: encounter, expect: 'deny' }, { who: dr, resource: bp, expect: 'permit' }] },
  { id: 'ex-consent-intermediate-timeframe', today: 'ENFORCEABLE', documented: 'TPO permit of data dated 2022 only',
    cases: [{ who: dr, resource: alcohol, expect: 'permit' }, { who: dr, resource: bp, expect: 'deny' }] },
  { id: 'ex-consent-intermediate-not-timeframe', today: 'ENFORCEABLE', documented: 'TPO permit; nested deny of data dated 2022',
    cases: [{ who: dr, resource: alcohol, expect: 'deny' }, { who: dr, resource: bp, expect: 'permit' }] },
  { id: 'ex-consent-intermediate-purpose', today: 'ENFORCEABLE', documented: 'permit to Organization/ex-org-researcher for purpose example.org#FooBar: requests carry v3-ActReason purposes only, so nothing matches and the root permit leaves everything refused',
    cases: [{ who: researcher, resource: bp, expect: 'deny' }, { who: as(['Organization/ex-org-researcher'], ['FooBar']), resource: bp, expect: 'deny' }, { who: dr, resource: bp, expect: 'deny' }] },
  { id: 'ex-dissent-intermediate-break-glass', today: 'ENFORCEABLE', documented: 'dissent (root deny of everything) with a nested permit for BTG to members of Group/ex-privilegedUsers',
    cases: [{ who: drBtg, resource: alcohol, expect: 'permit' }, { who: dr, resource: bp, expect: 'deny' }, { who: clerkBtg, resource: bp, expect: 'deny' }] },
];

// ---- FHIR R5 ---------------------------------------------------------------------------------------------
const org = (id: string, purposes = ['TREAT']): Requester => as([`Organization/${id}`], purposes);
const r5obs = (patient: string, labels: string[] = []): Resource => obs('o', patient, labels);
const medrx = { resourceType: 'MedicationRequest', id: 'medrx0305', status: 'active', intent: 'order', subject: { reference: 'Patient/f001' } } as Resource;
const otherRx = { resourceType: 'MedicationRequest', id: 'medrx-other', status: 'active', intent: 'order', subject: { reference: 'Patient/xcda' } } as Resource;

const r5Rows: Row[] = [
  { id: 'consent-example-Out', today: 'ENFORCEABLE', documented: 'permit, except Organization/f001 (opt-out of one organization)',
    cases: [{ who: org('f001'), resource: r5obs('f001'), expect: 'deny' }, { who: org('other'), resource: r5obs('f001'), expect: 'permit' }] },
  { id: 'consent-example-notAuthor', today: 'ENFORCEABLE', documented: 'permit, except Organization/f001',
    cases: [{ who: org('f001'), resource: r5obs('f001'), expect: 'deny' }, { who: org('other'), resource: r5obs('f001'), expect: 'permit' }] },
  { id: 'consent-example-notOrg', today: 'ENFORCEABLE', documented: 'permit, except access and correction by Organization/f001',
    cases: [{ who: org('f001'), resource: r5obs('f001'), expect: 'deny' }, { who: org('other'), resource: r5obs('f001'), expect: 'permit' }] },
  { id: 'consent-example-notThem', today: 'ENFORCEABLE', documented: 'permit, except access and correction by Practitioner/f204',
    cases: [{ who: as(['Practitioner/f204']), resource: r5obs('mom'), expect: 'deny' }, { who: as(['Practitioner/other']), resource: r5obs('mom'), expect: 'permit' }] },
  { id: 'consent-example-notThis', today: 'ENFORCEABLE', documented: 'permit, except MedicationRequest/medrx0305 and what it references',
    cases: [{ who: org('other'), resource: medrx, expect: 'deny' }, { who: org('other'), resource: r5obs('f001'), expect: 'permit' }] },
  { id: 'consent-example-notTime', today: 'ENFORCEABLE', documented: 'permit, except during January 2015 (that exception is skipped today)',
    cases: [{ who: org('other'), resource: r5obs('f001'), expect: 'permit' }] },
  { id: 'consent-example-basic', today: 'ENFORCEABLE', documented: 'deny, except 1964–2019 (that exception is skipped today, so everything is refused)',
    cases: [{ who: org('other'), resource: r5obs('example'), expect: 'deny' }] },
  { id: 'consent-example-grantor', today: 'ENFORCEABLE', documented: 'deny, except access by Organization/f203 or Practitioner/f007',
    cases: [{ who: org('f203'), resource: r5obs('f201'), expect: 'permit' }, { who: as(['Practitioner/f007']), resource: r5obs('f201'), expect: 'permit' }, { who: org('other'), resource: r5obs('f201'), expect: 'deny' }] },
  { id: 'consent-example-Emergency', today: 'ENFORCEABLE', documented: 'deny, except Organization/f201 — itself except for emergency treatment (ETREAT), as the provisions nest',
    cases: [{ who: org('f201'), resource: r5obs('f001'), expect: 'permit' }, { who: org('f201', ['ETREAT']), resource: r5obs('f001'), expect: 'deny' }, { who: org('other'), resource: r5obs('f001'), expect: 'deny' }] },
  { id: 'consent-example-pkb', today: 'ENFORCEABLE', documented: 'deny, except access by Organization/f001 to data up to N — itself except PSY, SPI, SEX and N (so f001 gets data below N)',
    cases: [{ who: org('f001'), resource: r5obs('example', ['L']), expect: 'permit' }, { who: org('f001'), resource: r5obs('example', ['N']), expect: 'deny' }, { who: org('f001'), resource: r5obs('example', ['L', 'PSY']), expect: 'deny' }, { who: org('other'), resource: r5obs('example', ['L']), expect: 'deny' }] },
  { id: 'consent-example-smartonfhir', today: 'ENFORCEABLE', documented: 'permit, except during a 30-minute SMART session on 2016-06-23 — itself except MedicationRequests (read with R5 resourceType)',
    cases: [{ who: org('other'), resource: r5obs('xcda'), expect: 'permit' }] },
  { id: 'consent-example-CDA', today: 'ENFORCEABLE', documented: 'permit, except Practitioner/f001 from 2018-10-10 to 2019-10-10 — itself except CDA documents (R5 documentType) by their author',
    cases: [{ who: as(['Practitioner/f001']), resource: r5obs('pat2'), expect: 'permit' }] },
];
/** Moments at which an exception with a period is in force. */
const r5InForce: Record<string, { at: Date; cases: Case[] }> = {
  'consent-example-smartonfhir': { at: new Date('2016-06-23T07:10:00Z'), cases: [{ who: org('other'), resource: r5obs('xcda'), expect: 'deny' }, { who: org('other'), resource: otherRx, expect: 'permit' }] },
  'consent-example-CDA': { at: new Date('2019-01-01T00:00:00Z'), cases: [{ who: as(['Practitioner/f001']), resource: r5obs('pat2'), expect: 'deny' }, { who: as(['Practitioner/other']), resource: r5obs('pat2'), expect: 'permit' }] },
  'consent-example-notTime': { at: new Date('2015-01-15T00:00:00Z'), cases: [{ who: org('other'), resource: r5obs('f001'), expect: 'deny' }] },
  'consent-example-basic': { at: new Date('2015-06-01T00:00:00Z'), cases: [{ who: org('other'), resource: r5obs('example'), expect: 'permit' }] },
};

// ---- runner ----------------------------------------------------------------------------------------------
/** The patient a consent is about: R4 `patient`, R5 `subject`. */
const patientOf = (c: Consent): string => ((c.patient ?? (c as unknown as { subject?: { reference?: string } }).subject)?.reference ?? '').split('/')[1];

function decide(c: Consent, k: Case, at: Date): void {
  const compiled = compile(
    {
      patientId: patientOf(c), consents: [c], flags: [], identifiers: {}, careRelationships: [], invalid: invalidPolicyResources([c]),
      memberships: { 'Group/ex-privilegedUsers': privileged },
      dataReferences: { 'Encounter/ex-encounter': ['Patient/ex-patient'], 'MedicationRequest/medrx0305': ['Patient/f001'] },
    },
    k.who, defaultPolicy, at,
  );
  const d = evaluate(compiled, k.resource);
  const what = `${k.who.references[0]} ${k.who.purposes.join(',')} on ${k.resource.resourceType}/${k.resource.id}`;
  assert.equal(d.outcome, k.expect, `${what}: ${JSON.stringify(d.trace)}`);
  assert.equal(d.trace.some((t) => t.layer === 'implicit-policy'), k.implicit === true, `${what}: implicit policy ${k.implicit ? 'expected' : 'not expected'}`);
}

function runRows(folder: string, rows: readonly Row[], inForce: Record<string, { at: Date; cases: Case[] }> = {}): void {
  for (const row of rows) {
    test(`${row.id}: ${row.today} — ${row.documented}`, () => {
      const c = read<Consent>(folder, `Consent-${row.id}.json`);
      const status = enforcementStatus(c, defaultPolicy, TODAY, validationFailure(c));
      assert.equal(status.status, row.today, status.reason);
      if (row.reason) assert.match(status.reason ?? '', row.reason);
      const at = row.at ?? TODAY;
      if (row.at) assert.equal(enforcementStatus(c, defaultPolicy, at, validationFailure(c)).status, 'ENFORCEABLE');
      for (const k of row.cases ?? []) decide(c, k, at);
      const later = inForce[row.id];
      for (const k of later?.cases ?? []) decide(c, k, later.at);
    });
  }
  test(`every ${folder} example Consent has a row`, () => {
    assert.deepEqual(rows.map((r) => `Consent-${r.id}.json`).sort(), consentsIn(folder).sort());
  });
}

describe('IHE PCF example Consents (fixtures/ig/pcf)', () => runRows('pcf', pcfRows));
describe('FHIR R5 example Consents, read through the R5 shape (fixtures/ig/r5)', () => runRows('r5', r5Rows, r5InForce));
