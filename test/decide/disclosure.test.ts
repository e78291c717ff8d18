// decide/disclosure.ts on its own (issue 18): the rule chain enforcement and $disclosure-decision share, from
// facts handed in as plain data — no policy store, no token, no upstream.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { defaultPolicy } from '../../src/config/policy.ts';
import { compile, decideDisclosure, type CompiledPatientPolicy, type DisclosureFacts } from '../../src/decide/index.ts';
import { NO_LABELS } from '../../src/label/index.ts';
import { conf, consent, inputs, NOW, observation, P1, who } from './fixtures.ts';

const P2 = 'p2';
/** P1 has no consent (implicit all-normal: normal data released, R withheld); P2 refuses everything. */
const policies: Record<string, CompiledPatientPolicy> = {
  [P1]: compile(inputs(), who.drA(), defaultPolicy, NOW),
  [P2]: compile(inputs([consent('c-p2-deny', { type: 'deny' }, { patient: { reference: `Patient/${P2}` } })], [], { patientId: P2 }), who.drA(), defaultPolicy, NOW),
};

/** A resource's patients: its subject's (a stored Bundle: its entries'). */
function subjects(r: Resource): readonly string[] {
  if (r.resourceType === 'Bundle') return [...new Set((r.entry ?? []).flatMap((e) => (e.resource ? subjects(e.resource) : [])))];
  const subject = (r as { subject?: { reference?: string } }).subject?.reference;
  return subject ? [subject.slice('Patient/'.length)] : [];
}

/** Facts for Dr A: every scope held, not confined to a launch patient. */
function facts(patch: Partial<DisclosureFacts> = {}): DisclosureFacts {
  return {
    access: { confinedToLaunchPatient: false, systemClient: false },
    isFhirResource: () => true,
    patientsOf: subjects,
    unattributed: () => false,
    withinScopes: () => true,
    holdsAuditEventScope: () => false,
    governedElsewhere: () => false,
    policyOf: (id) => policies[id],
    unpatientedPolicy: () => compile({ ...inputs(), patientId: '' }, who.drA(), defaultPolicy, NOW),
    labelsOf: () => NO_LABELS,
    ...patch,
  };
}

const normal = observation('o-n');
const restricted = observation('o-r', [conf('R')]);
const denyRules = (trace: readonly { effect: string; rule: string }[]) => trace.filter((t) => t.effect === 'deny').map((t) => t.rule);

describe('decideDisclosure: the rule chain from pure facts', () => {
  test('normal data of a patient without consent is released under the implicit policy', () => {
    const d = decideDisclosure(normal, 'r', facts());
    assert.equal(d.outcome, 'permit');
    assert.ok(d.trace.some((t) => t.layer === 'implicit-policy'), JSON.stringify(d.trace));
  });

  test('outside the granted scopes: refused before any patient’s policy is asked', () => {
    const d = decideDisclosure(normal, 's', facts({ withinScopes: (_r, interaction) => interaction === 'r', policyOf: () => assert.fail('policy asked') }));
    assert.equal(d.outcome, 'deny');
    assert.deepEqual(d.trace, [{ layer: 'scope', effect: 'deny', rule: 'scope', reason: 'outside the granted SMART scopes' }]);
  });

  test('a token confined to another launch patient is refused', () => {
    const d = decideDisclosure(normal, 'r', facts({ access: { confinedToLaunchPatient: true, launchPatient: P2, systemClient: false } }));
    assert.equal(d.outcome, 'deny');
    assert.deepEqual(denyRules(d.trace), ['patient-context']);
    assert.equal(decideDisclosure(normal, 'r', facts({ access: { confinedToLaunchPatient: true, launchPatient: P1, systemClient: false } })).outcome, 'permit');
  });

  test('a stored Bundle is withheld whole when one entry may not be released, naming the Bundle', () => {
    const bundle = (entries: Resource[]): Bundle => ({ resourceType: 'Bundle', id: 'doc1', type: 'document', entry: entries.map((resource) => ({ resource })) });
    assert.equal(decideDisclosure(bundle([normal]), 'r', facts()).outcome, 'permit');
    const d = decideDisclosure(bundle([normal, restricted]), 'r', facts());
    assert.equal(d.outcome, 'deny');
    assert.equal(d.trace.at(-1)?.rule, 'Bundle/doc1');
  });

  test('deny wins across a resource’s two patients, with both patients’ rules in the trace', () => {
    const both = facts({ patientsOf: () => [P1, P2] });
    const d = decideDisclosure(normal, 'r', both);
    assert.equal(d.outcome, 'deny');
    assert.ok(d.trace.some((t) => t.layer === 'implicit-policy' && t.effect === 'permit'), JSON.stringify(d.trace));
    assert.ok(d.trace.some((t) => t.rule === 'Consent/c-p2-deny' && t.effect === 'deny'), JSON.stringify(d.trace));
  });

  test('a contained resource withheld under the container’s patients is removed: redact contained[i]', () => {
    // About no patient on its own, the Medication would be released; P1's consent refuses medications.
    const medications = [{ system: 'http://hl7.org/fhir/resource-types', code: 'Medication' }];
    const noMedications = compile(inputs([consent('c-p1-no-meds', { type: 'permit', provision: [{ type: 'deny', class: medications }] })]), who.drA(), defaultPolicy, NOW);
    const container = observation('o-c', [], { contained: [{ resourceType: 'Device', id: 'd1' }, { resourceType: 'Medication', id: 'm1' }] });
    const d = decideDisclosure(container, 'r', facts({ policyOf: () => noMedications }));
    assert.equal(d.outcome, 'redact');
    assert.deepEqual(
      d.obligations.filter((o) => o.kind === 'redact'),
      [{ kind: 'redact', path: 'contained[1]', reason: 'contained resource withheld' }],
    );
  });

  test('data about no patient: released unless labelled, then the implicit policy’s label rules decide', () => {
    const device = { resourceType: 'Device', id: 'dev1' } as Resource;
    assert.deepEqual(decideDisclosure(device, 'r', facts()).trace.map((t) => t.layer), ['not-patient-data']);
    assert.equal(decideDisclosure({ ...device, meta: { security: [conf('R')] } }, 'r', facts()).outcome, 'deny');
  });

  test('the caller’s patients decide it when given (a Binary’s security context)', () => {
    assert.equal(decideDisclosure(normal, 'r', facts(), { patients: [P2] }).outcome, 'deny');
  });
});
