// The 12 HL7 FHIR R4 Consent examples: each is ENFORCEABLE with a documented meaning, INACTIVE
// (its period is long past) or UNSUPPORTED with a reason. Read from the npm package hl7.fhir.r4.examples.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import type { Consent, Resource } from '@medplum/fhirtypes';
import { defaultPolicy } from '../../src/config/policy.ts';
import { compile, enforcementStatus, evaluate, type Requester } from '../../src/decide/index.ts';
import { invalidPolicyResources, validationFailure } from '../../src/policy/validate.ts';

// The published R4 example set (CC0), installed by npm as hl7.fhir.r4.examples.
const dir = new URL('../../node_modules/hl7.fhir.r4.examples/', import.meta.url);
const load = (id: string): Consent => JSON.parse(readFileSync(new URL(`Consent-${id}.json`, dir), 'utf8')) as Consent;
const TODAY = new Date('2025-06-15T12:00:00Z');

const as = (references: string[], purposes = ['TREAT'], action: Requester['action'] = 'access'): Requester => ({
  fhirUser: references[0], references, identifiers: [], purposes, breakGlass: false, clientKind: 'user', action,
});
const obs = (id: string): Resource => ({ resourceType: 'Observation', id, status: 'final', code: { text: 'x' } }) as Resource;
const medReq = { resourceType: 'MedicationRequest', id: 'm1', status: 'active', intent: 'order', subject: { reference: 'Patient/f001' } } as Resource;
const task = { resourceType: 'Task', id: 'example3', status: 'draft', intent: 'order' } as Resource;

interface ExampleRow {
  readonly id: string;
  /** Status today. */
  readonly today: 'ENFORCEABLE' | 'INACTIVE' | 'UNSUPPORTED';
  readonly reason?: RegExp;
  /** When in force: a moment inside its period and what it means, as decisions. */
  readonly meaning?: { at: Date; cases: { who: Requester; resource: Resource; expect: 'permit' | 'deny'; implicit?: boolean }[] };
  readonly documented: string;
}

const org = ['Organization/f001'];
const other = ['Organization/other'];
const rows: ExampleRow[] = [
  { id: 'consent-example-Emergency', today: 'ENFORCEABLE', documented: 'OPTOUT for Organization/f001 for emergency treatment: f001 with ETREAT is denied; other purposes fall to the implicit policy',
    meaning: { at: TODAY, cases: [{ who: as(org, ['ETREAT']), resource: obs('a'), expect: 'deny' }, { who: as(org, ['HOPERAT']), resource: obs('a'), expect: 'permit', implicit: true }] } },
  { id: 'consent-example-Out', today: 'ENFORCEABLE', documented: 'OPTOUT for Organization/f001: f001 denied everything, others under the implicit policy',
    meaning: { at: TODAY, cases: [{ who: as(org), resource: obs('a'), expect: 'deny' }, { who: as(other), resource: obs('a'), expect: 'permit', implicit: true }] } },
  { id: 'consent-example-basic', today: 'INACTIVE', reason: /period/, documented: 'OPTIN for everyone, 1964–2016',
    meaning: { at: new Date('2015-06-01T00:00:00Z'), cases: [{ who: as(other), resource: obs('a'), expect: 'permit' }] } },
  { id: 'consent-example-grantor', today: 'ENFORCEABLE', documented: 'OPTOUT of access for Organization/f001 and Patient/example',
    meaning: { at: TODAY, cases: [{ who: as(['Patient/example'], ['PATRQT']), resource: obs('a'), expect: 'deny' }, { who: as(org, ['TREAT'], 'correct'), resource: obs('a'), expect: 'permit', implicit: true }] } },
  { id: 'consent-example-notAuthor', today: 'ENFORCEABLE', documented: 'OPTIN for Organization/f001 only (the computable part; the narrative’s author exclusion is not coded)',
    meaning: { at: TODAY, cases: [{ who: as(org), resource: obs('a'), expect: 'permit' }, { who: as(other), resource: obs('a'), expect: 'deny' }] } },
  { id: 'consent-example-notOrg', today: 'ENFORCEABLE', documented: 'root type deny (wins over policyRule OPTIN): access and correct denied to Organization/f001',
    meaning: { at: TODAY, cases: [{ who: as(org), resource: obs('a'), expect: 'deny' }, { who: as(other), resource: obs('a'), expect: 'permit', implicit: true }] } },
  { id: 'consent-example-notThem', today: 'ENFORCEABLE', documented: 'OPTIN for Practitioner/f204 (access, correct) only, as coded',
    meaning: { at: TODAY, cases: [{ who: as(['Practitioner/f204']), resource: obs('a'), expect: 'permit' }, { who: as(other), resource: obs('a'), expect: 'deny' }] } },
  { id: 'consent-example-notThis', today: 'ENFORCEABLE', documented: 'OPTIN limited to Task/example3 and what it references (data meaning related)',
    meaning: { at: TODAY, cases: [{ who: as(other), resource: task, expect: 'permit' }, { who: as(other), resource: obs('a'), expect: 'deny' }] } },
  { id: 'consent-example-notTime', today: 'INACTIVE', reason: /period/, documented: 'OPTIN for January 2015 only',
    meaning: { at: new Date('2015-01-15T00:00:00Z'), cases: [{ who: as(other), resource: obs('a'), expect: 'permit' }] } },
  { id: 'consent-example-pkb', today: 'UNSUPPORTED', reason: /nested provision provision\.provision\[0\] has no type/, documented: 'nested provisions without type: R4 requires one, so the consent is reported, not guessed at' },
  { id: 'consent-example-signature', today: 'INACTIVE', reason: /period/, documented: 'OPTIN for Practitioner/13, 2015-10-10 to 2016-10-10; nested permit of CDA documents to the author',
    meaning: { at: new Date('2016-01-01T00:00:00Z'), cases: [{ who: as(['Practitioner/13']), resource: obs('a'), expect: 'permit' }, { who: as(other), resource: obs('a'), expect: 'deny' }] } },
  { id: 'consent-example-smartonfhir', today: 'INACTIVE', reason: /period/, documented: 'OPTIN for a 30-minute SMART session on 2016-06-23',
    meaning: { at: new Date('2016-06-23T07:10:00Z'), cases: [{ who: as(other), resource: medReq, expect: 'permit' }] } },
];

describe('HL7 FHIR R4 Consent examples', () => {
  for (const row of rows) {
    test(`${row.id}: ${row.today} — ${row.documented}`, () => {
      const c = load(row.id);
      const status = enforcementStatus(c, defaultPolicy, TODAY, validationFailure(c));
      assert.equal(status.status, row.today, status.reason);
      if (row.reason) assert.match(status.reason ?? '', row.reason);
      if (!row.meaning) return;
      assert.equal(enforcementStatus(c, defaultPolicy, row.meaning.at, validationFailure(c)).status, 'ENFORCEABLE');
      const patientId = (c.patient?.reference ?? '').split('/')[1];
      for (const k of row.meaning.cases) {
        const compiled = compile(
          { patientId, consents: [c], flags: [], memberships: {}, identifiers: {}, careRelationships: [], dataReferences: { 'Task/example3': [] }, invalid: invalidPolicyResources([c]) },
          k.who, defaultPolicy, row.meaning.at,
        );
        const d = evaluate(compiled, k.resource);
        assert.equal(d.outcome, k.expect, `${k.who.references[0]} on ${k.resource.resourceType}: ${JSON.stringify(d.trace)}`);
        assert.equal(d.trace.some((t) => t.layer === 'implicit-policy'), k.implicit === true);
      }
    });
  }
  test('all 12 examples are covered', () => assert.equal(rows.length, 12));
});
