import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { defaultPolicy } from '../../src/config/policy.ts';
import { assessBreakGlass, categoryRequestsBreakGlass, parseCategoryHeader } from '../../src/provenance/break-glass.ts';

const BTG_HEADER = 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"';

describe('Category header', () => {
  const table: [string, string | string[] | undefined, boolean][] = [
    ['exact header', BTG_HEADER, true],
    ['extra whitespace', '  http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG ;   scheme = "http://hl7.org/fhir/tag/security"  ', true],
    ['unquoted scheme', 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme=http://hl7.org/fhir/tag/security', true],
    ['with a label', 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; label="break, the glass"; scheme="http://hl7.org/fhir/tag/security"', true],
    ['among other categories', `http://example.org/tags#a; scheme="http://hl7.org/fhir/tag", ${BTG_HEADER}`, true],
    ['as repeated header lines', ['http://example.org/tags#a; scheme="http://hl7.org/fhir/tag"', BTG_HEADER], true],
    ['missing scheme', 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG', false],
    ['wrong scheme', 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag"', false],
    ['other code', 'http://terminology.hl7.org/CodeSystem/v3-ActReason#ETREAT; scheme="http://hl7.org/fhir/tag/security"', false],
    ['code without system', 'BTG; scheme="http://hl7.org/fhir/tag/security"', false],
    ['absent', undefined, false],
    ['empty', '', false],
  ];
  for (const [name, header, expected] of table) test(name, () => assert.equal(categoryRequestsBreakGlass(header), expected));

  test('labels with commas stay inside their value', () => {
    const values = parseCategoryHeader('a#b; label="x, y"; scheme="s", c#d');
    assert.deepEqual(values.map((v) => [v.term, v.params.get('label')]), [['a#b', 'x, y'], ['c#d', undefined]]);
  });
});

describe('break-the-glass: scope × purpose × header', () => {
  const table: { name: string; scope: boolean; purpose: string[]; header: boolean; inEffect: boolean; requested: boolean; purposes: string[] }[] = [
    { name: 'scope + BTG purpose', scope: true, purpose: ['BTG'], header: false, inEffect: true, requested: true, purposes: ['BTG'] },
    { name: 'scope + ETREAT purpose', scope: true, purpose: ['ETREAT'], header: false, inEffect: true, requested: true, purposes: ['ETREAT', 'BTG'] },
    { name: 'scope + TREAT + header', scope: true, purpose: ['TREAT'], header: true, inEffect: true, requested: true, purposes: ['TREAT', 'BTG'] },
    { name: 'scope + TREAT, no header', scope: true, purpose: ['TREAT'], header: false, inEffect: false, requested: false, purposes: ['TREAT'] },
    { name: 'header without scope: an attempt only', scope: false, purpose: ['TREAT'], header: true, inEffect: false, requested: true, purposes: ['TREAT'] },
    { name: 'BTG purpose without scope: an attempt, BTG dropped', scope: false, purpose: ['BTG', 'TREAT'], header: false, inEffect: false, requested: true, purposes: ['TREAT'] },
    { name: 'ETREAT without scope is plain emergency treatment', scope: false, purpose: ['ETREAT'], header: false, inEffect: false, requested: false, purposes: ['ETREAT'] },
    { name: 'nothing asked', scope: false, purpose: ['TREAT'], header: false, inEffect: false, requested: false, purposes: ['TREAT'] },
  ];
  for (const row of table) {
    test(row.name, () => {
      const got = assessBreakGlass(
        { grantedScopes: row.scope ? ['user/*.rs', 'btg'] : ['user/*.rs'], purposeOfUse: row.purpose, categoryHeader: row.header ? BTG_HEADER : undefined },
        defaultPolicy,
      );
      assert.deepEqual(got.breakGlass, { inEffect: row.inEffect, requested: row.requested });
      assert.deepEqual(got.purposeOfUse, row.purposes);
    });
  }

  test('the scope name comes from the policy', () => {
    const input = { grantedScopes: ['user/*.rs', 'btg'], purposeOfUse: ['BTG'] };
    assert.equal(assessBreakGlass(input, { breakGlassScope: 'emergency-access' }).breakGlass.inEffect, false);
    assert.equal(assessBreakGlass({ ...input, grantedScopes: ['emergency-access'] }, { breakGlassScope: 'emergency-access' }).breakGlass.inEffect, true);
  });
});
