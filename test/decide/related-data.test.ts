// `data.meaning = related` (SPEC §4.1: the named resource and the resources it references, except the
// patient themself), in the situation the no-leak property found (seed -1850499705): under break-the-glass
// a nested permit on `related Observation/o0` releases the Encounter that o0 references. What o0
// references reaches the engine as `PatientPolicyInputs.dataReferences` (the policy store reads it).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Resource } from '@medplum/fhirtypes';
import { compile, evaluate, type Decision, type PatientPolicyInputs } from '../../src/decide/index.ts';
import { act, actor, conf, consent, inputs, NOW, observation, P1, policyWith, purpose, who } from './fixtures.ts';

const o0 = observation('o0', [act('OPIOIDUD')], { encounter: { reference: 'Encounter/e1' }, performer: [{ reference: 'Practitioner/bob' }] });
const encounter = (id: string): Resource =>
  ({ resourceType: 'Encounter', id, status: 'finished', class: { code: 'AMB' }, subject: { reference: `Patient/${P1}` }, period: { start: '2023-05-01T10:00:00Z' } }) as Resource;

// Root: permit only Dr A's break-the-glass on 2022 data; nested[0]: permit TREAT (covers BTG) on N/OPIOIDUD
// data of 2023 related to o0; nested[1]: a deny for the payer and Bob (does not match Dr A).
const c = consent('c-rel', {
  type: 'permit',
  actor: [actor('Practitioner/dr-a')],
  purpose: purpose('BTG'),
  securityLabel: [conf('N')],
  dataPeriod: { start: '2022-01-01', end: '2022-12-31' },
  provision: [
    {
      type: 'permit',
      purpose: purpose('TREAT', 'HPAYMT', 'PATRQT'),
      securityLabel: [conf('N'), act('OPIOIDUD')],
      dataPeriod: { start: '2023-01-01', end: '2023-12-31' },
      data: [{ meaning: 'related', reference: { reference: 'Observation/o0' } }],
    },
    { type: 'deny', actor: [actor('Practitioner/bob'), actor('Organization/payer')], purpose: purpose('HPAYMT', 'BTG') },
  ],
});
// What the policy store gives for o0: its references, less the patient.
const dataReferences = { 'Observation/o0': ['Encounter/e1', 'Practitioner/bob'] };

function decide(extra: Partial<PatientPolicyInputs>, resource: Resource, requester = who.drA(['BTG'], true)): Decision {
  return evaluate(compile(inputs([c], [], extra), requester, policyWith({}), NOW), resource);
}

describe('related data (SPEC §4.1)', () => {
  test('break-the-glass: the Encounter the related Observation references is released by nested[0]', () => {
    const d = decide({ dataReferences }, encounter('e1'));
    assert.equal(d.outcome, 'permit');
    assert.equal(d.breakGlassUsed, true); // nested[0] matched only because BTG is-a TREAT
    assert.deepEqual(
      d.trace.map((t) => [t.layer, t.effect, t.rule, t.provision ?? '']),
      [
        ['consent', 'permit', 'Consent/c-rel', 'provision.provision[0]'],
        ['break-the-glass', 'permit', 'break-the-glass', ''],
      ],
    );
  });

  test('the named Observation itself is released, another Encounter is not granted', () => {
    assert.equal(decide({ dataReferences }, o0).outcome, 'permit');
    const other = decide({ dataReferences }, encounter('e2'));
    assert.equal(other.outcome, 'deny');
    assert.deepEqual(other.trace.map((t) => [t.rule, t.provision, t.effect]), [['Consent/c-rel', 'provision', 'deny']]);
  });

  test('without dataReferences `related` covers only the named resource (the documented fallback)', () => {
    const d = decide({}, encounter('e1'));
    assert.equal(d.outcome, 'deny');
    assert.match(d.trace[0].reason, /not granted/);
  });

  test('the patient in dataReferences is never covered by `related`', () => {
    const patient = { resourceType: 'Patient', id: P1, meta: { lastUpdated: '2023-02-01T00:00:00Z' } } as Resource;
    const d = decide({ dataReferences: { 'Observation/o0': ['Encounter/e1', `Patient/${P1}`] } }, patient);
    assert.equal(d.outcome, 'deny');
  });
});
