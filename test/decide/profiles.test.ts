// The conformance artefacts in profiles/ that the decision engine defines are valid FHIR R4 and
// agree with the canonical URLs the code uses.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import type { CodeSystem, Resource } from '@medplum/fhirtypes';
import { validatePolicyResource } from '../../src/policy/validate.ts';
import { DG_CODES, DG_EXT_HARM_GROUND, DG_EXT_WITHHELD_DATA } from '../../src/fhir/systems.ts';

const files = [
  'CodeSystem-disclosure.json',
  'ValueSet-harm-ground.json',
  'StructureDefinition-harm-ground.json',
  'StructureDefinition-withheld-data.json',
  'StructureDefinition-HarmDetermination.json',
  'StructureDefinition-LegalRestriction.json',
];
const read = (f: string): Resource & { url?: string } => JSON.parse(readFileSync(new URL(`../../profiles/${f}`, import.meta.url), 'utf8'));

describe('profiles/', () => {
  for (const f of files) {
    test(`${f} validates as FHIR R4`, () => {
      const v = validatePolicyResource(read(f));
      assert.ok(v.valid, v.valid ? '' : v.message);
    });
  }
  test('canonical URLs match src/fhir/systems.ts', () => {
    assert.equal(read('CodeSystem-disclosure.json').url, DG_CODES);
    assert.equal(read('StructureDefinition-harm-ground.json').url, DG_EXT_HARM_GROUND);
    assert.equal(read('StructureDefinition-withheld-data.json').url, DG_EXT_WITHHELD_DATA);
  });
  test('the CodeSystem defines every code the engine reads', () => {
    const cs = read('CodeSystem-disclosure.json') as CodeSystem;
    const codes = new Set<string>();
    const walk = (concepts: CodeSystem['concept']): void => concepts?.forEach((c) => { codes.add(c.code ?? ''); walk(c.concept); });
    walk(cs.concept);
    for (const code of ['legal-restriction', 'harm-determination', 'harm-life-safety', 'harm-other-person', 'harm-representative']) assert.ok(codes.has(code), code);
  });
});
