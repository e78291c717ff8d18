// decide/access.ts: refusals decided before any patient's rules (SPEC §3, §5), as pure functions.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Binary, Resource } from '@medplum/fhirtypes';
import { type AccessFacts, binaryRefusal, launchPatientRefusal } from '../../src/decide/index.ts';

const confined = (launchPatient?: string): AccessFacts => ({ confinedToLaunchPatient: true, launchPatient, systemClient: false });
const user: AccessFacts = { confinedToLaunchPatient: false, systemClient: false };
const system: AccessFacts = { confinedToLaunchPatient: false, systemClient: true };

describe('launchPatientRefusal', () => {
  const rows: { name: string; facts: AccessFacts; patients: string[]; refused: boolean }[] = [
    { name: 'unconfined: any patient', facts: user, patients: ['p2'], refused: false },
    { name: 'confined, the launch patient', facts: confined('p1'), patients: ['p1'], refused: false },
    { name: 'confined, another patient', facts: confined('p1'), patients: ['p2'], refused: true },
    { name: 'confined, the launch patient among others', facts: confined('p1'), patients: ['p2', 'p1'], refused: false },
    { name: 'confined without a launch patient: no patient', facts: confined(), patients: ['p1'], refused: true },
    { name: 'confined, data about no patient', facts: confined('p1'), patients: [], refused: false },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const d = launchPatientRefusal(row.facts, row.patients);
      assert.equal(d !== undefined, row.refused);
      if (d) assert.deepEqual([d.outcome, d.trace[0].rule], ['deny', 'patient-context']);
    });
  }
});

describe('binaryRefusal', () => {
  const governed: Binary = { resourceType: 'Binary', contentType: 'text/plain', securityContext: { reference: 'DocumentReference/d1' } };
  const bare: Binary = { resourceType: 'Binary', contentType: 'text/plain' };
  const rows: { name: string; resource: Resource; facts: AccessFacts; contextChecked: boolean; governedElsewhere: boolean; refused: boolean }[] = [
    { name: 'governed by another resource, not through its read', resource: governed, facts: system, contextChecked: false, governedElsewhere: true, refused: true },
    { name: 'governed by another resource, its context checked by the read', resource: governed, facts: user, contextChecked: true, governedElsewhere: true, refused: false },
    { name: 'security context naming the patient decides as patient data', resource: governed, facts: user, contextChecked: false, governedElsewhere: false, refused: false },
    { name: 'no security context, a user client', resource: bare, facts: user, contextChecked: false, governedElsewhere: false, refused: true },
    { name: 'no security context, a system client', resource: bare, facts: system, contextChecked: false, governedElsewhere: false, refused: false },
    { name: 'not a Binary', resource: { resourceType: 'Observation' } as Resource, facts: user, contextChecked: false, governedElsewhere: false, refused: false },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const d = binaryRefusal(row.resource, row.facts, { contextChecked: row.contextChecked, governedElsewhere: row.governedElsewhere });
      assert.equal(d !== undefined, row.refused);
      if (d) assert.equal(d.trace[0].rule, 'security-context');
    });
  }
});
