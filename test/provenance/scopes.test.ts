import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Observation } from '@medplum/fhirtypes';
import { allows, confinedToLaunchPatient, governingKind, grantedQueries, mayConcernPatient, parseScope, parseScopes, resourceMatchesScopes } from '../../src/provenance/scopes.ts';

const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';

describe('parseScope', () => {
  const table: { name: string; raw: string; expected?: { kind: string; type: string; interactions: string; query?: Record<string, string[]> } }[] = [
    { name: 'v2 read+search', raw: 'patient/Observation.rs', expected: { kind: 'patient', type: 'Observation', interactions: 'rs' } },
    { name: 'v2 all letters', raw: 'user/*.cruds', expected: { kind: 'user', type: '*', interactions: 'cruds' } },
    { name: 'v2 single letter', raw: 'system/Consent.r', expected: { kind: 'system', type: 'Consent', interactions: 'r' } },
    { name: 'v1 read → rs', raw: 'patient/Observation.read', expected: { kind: 'patient', type: 'Observation', interactions: 'rs' } },
    { name: 'v1 write → cud', raw: 'user/Patient.write', expected: { kind: 'user', type: 'Patient', interactions: 'cud' } },
    { name: 'v1 star → cruds', raw: 'system/*.*', expected: { kind: 'system', type: '*', interactions: 'cruds' } },
    {
      name: 'granular category',
      raw: `patient/Observation.rs?category=${LAB}`,
      expected: { kind: 'patient', type: 'Observation', interactions: 'rs', query: { category: [LAB] } },
    },
    {
      name: 'granular two params, comma OR',
      raw: 'user/Condition.rs?category=problem-list-item,encounter-diagnosis&clinical-status=active',
      expected: { kind: 'user', type: 'Condition', interactions: 'rs', query: { category: ['problem-list-item', 'encounter-diagnosis'], 'clinical-status': ['active'] } },
    },
    { name: 'letters out of order', raw: 'patient/Observation.sr' },
    { name: 'repeated letter', raw: 'patient/Observation.rrs' },
    { name: 'unknown letter', raw: 'patient/Observation.rx' },
    { name: 'unknown kind', raw: 'admin/Observation.rs' },
    { name: 'lower-case type', raw: 'patient/observation.rs' },
    { name: 'no permission', raw: 'patient/Observation.' },
    { name: 'v1 with query', raw: 'patient/Observation.read?category=x' },
    { name: 'empty query', raw: 'patient/Observation.rs?' },
    { name: 'query without value', raw: 'patient/Observation.rs?category=' },
    { name: 'openid', raw: 'openid' },
    { name: 'launch/patient', raw: 'launch/patient' },
    { name: 'btg', raw: 'btg' },
  ];
  for (const row of table) {
    test(row.name, () => {
      const scope = parseScope(row.raw);
      if (!row.expected) return assert.equal(scope, undefined);
      assert.ok(scope);
      assert.equal(scope.kind, row.expected.kind);
      assert.equal(scope.resourceType, row.expected.type);
      assert.deepEqual([...scope.interactions].sort(), row.expected.interactions.split('').sort());
      assert.deepEqual(scope.query ? Object.fromEntries(scope.query) : undefined, row.expected.query);
      assert.equal(scope.raw, row.raw);
    });
  }
});

describe('parseScopes', () => {
  test('keeps resource scopes, skips malformed and non-resource scopes, collects kinds', () => {
    const { scopes, kinds } = parseScopes('openid fhirUser launch/patient offline_access btg  patient/*.rs user/AuditEvent.rs patient/Foo.zz');
    assert.deepEqual(scopes.map((s) => s.raw), ['patient/*.rs', 'user/AuditEvent.rs']);
    assert.deepEqual([...kinds].sort(), ['patient', 'user']);
  });
  test('governing kind is the narrowest', () => {
    const table: [string, string | undefined][] = [
      ['patient/*.rs user/*.rs system/*.rs', 'patient'],
      ['system/*.rs user/AuditEvent.rs', 'user'],
      ['system/*.rs', 'system'],
      ['openid', undefined],
    ];
    for (const [scope, expected] of table) assert.equal(governingKind(parseScopes(scope).kinds), expected, scope);
  });
});

describe('confinedToLaunchPatient and mayConcernPatient', () => {
  // One rule (SPEC §3): any patient/ scope confines the token to its launch patient, whatever else it holds.
  const table: { scope: string; patient?: string; confined: boolean; p1: boolean; p2: boolean }[] = [
    { scope: 'patient/Observation.rs', patient: 'p1', confined: true, p1: true, p2: false },
    { scope: 'patient/Observation.rs user/Observation.rs', patient: 'p1', confined: true, p1: true, p2: false },
    { scope: 'system/*.cruds patient/Patient.r', patient: 'p1', confined: true, p1: true, p2: false },
    { scope: 'user/*.cruds system/*.rs patient/*.rs', patient: 'p1', confined: true, p1: true, p2: false },
    // no patient claim: confined to no patient at all
    { scope: 'patient/Observation.rs', confined: true, p1: false, p2: false },
    { scope: 'patient/Observation.rs user/Observation.rs', confined: true, p1: false, p2: false },
    // no patient/ scope: a patient claim alone confines nothing
    { scope: 'user/Observation.rs', patient: 'p1', confined: false, p1: true, p2: true },
    { scope: 'system/*.rs', confined: false, p1: true, p2: true },
    { scope: 'openid launch/patient', patient: 'p1', confined: false, p1: true, p2: true },
  ];
  for (const row of table) {
    test(`${row.scope}${row.patient ? ` (patient ${row.patient})` : ' (no patient claim)'}`, () => {
      const ctx = { kinds: parseScopes(row.scope).kinds, ...(row.patient ? { patient: row.patient } : {}) };
      assert.equal(confinedToLaunchPatient(ctx), row.confined);
      assert.equal(mayConcernPatient(ctx, 'p1'), row.p1);
      assert.equal(mayConcernPatient(ctx, 'p2'), row.p2);
    });
  }
});

const ctxOf = (scope: string) => ({ scopes: parseScopes(scope).scopes });

describe('allows and grantedQueries', () => {
  const table: { name: string; scope: string; type: string; interaction: 'c' | 'r' | 'u' | 'd' | 's'; allows: boolean; granted: 'unrestricted' | 'none' | number }[] = [
    { name: 'wildcard covers type', scope: 'patient/*.rs', type: 'Observation', interaction: 's', allows: true, granted: 'unrestricted' },
    { name: 'wildcard read only lacks search', scope: 'patient/*.r', type: 'Observation', interaction: 's', allows: false, granted: 'none' },
    { name: 'other type', scope: 'patient/Patient.r', type: 'Observation', interaction: 's', allows: false, granted: 'none' },
    { name: 'v1 read allows search', scope: 'patient/Observation.read', type: 'Observation', interaction: 's', allows: true, granted: 'unrestricted' },
    { name: 'v1 read lacks create', scope: 'patient/Observation.read', type: 'Observation', interaction: 'c', allows: false, granted: 'none' },
    { name: 'v1 write allows update', scope: 'user/Observation.write', type: 'Observation', interaction: 'u', allows: true, granted: 'unrestricted' },
    { name: 'granular narrows', scope: `patient/Observation.rs?category=${LAB}`, type: 'Observation', interaction: 's', allows: true, granted: 1 },
    {
      name: 'two granular scopes union',
      scope: `patient/Observation.rs?category=${LAB} patient/Observation.rs?category=vital-signs`,
      type: 'Observation',
      interaction: 's',
      allows: true,
      granted: 2,
    },
    {
      name: 'ungranular wins over granular',
      scope: `patient/Observation.rs?category=${LAB} patient/*.rs`,
      type: 'Observation',
      interaction: 'r',
      allows: true,
      granted: 'unrestricted',
    },
    { name: 'granular of another type does not apply', scope: `patient/Observation.rs?category=${LAB}`, type: 'Condition', interaction: 'r', allows: false, granted: 'none' },
  ];
  for (const row of table) {
    test(row.name, () => {
      const ctx = ctxOf(row.scope);
      assert.equal(allows(ctx, row.type, row.interaction), row.allows);
      const granted = grantedQueries(ctx, row.type, row.interaction);
      if (typeof row.granted === 'number') {
        assert.ok(Array.isArray(granted));
        assert.equal(granted.length, row.granted);
      } else assert.equal(granted, row.granted);
    });
  }
});

describe('resourceMatchesScopes', () => {
  const observation = (code: string, status: Observation['status'] = 'final'): Observation => ({
    resourceType: 'Observation',
    status,
    code: { text: 'x' },
    category: [{ coding: [{ system: CATEGORY, code }] }],
  });
  const table: { name: string; scope: string; resource: Observation; interaction?: 'r' | 's'; expected: boolean }[] = [
    { name: 'lab inside a lab scope', scope: `patient/Observation.rs?category=${LAB}`, resource: observation('laboratory'), expected: true },
    { name: 'vital signs outside a lab scope', scope: `patient/Observation.rs?category=${LAB}`, resource: observation('vital-signs'), expected: false },
    { name: 'code without system', scope: 'patient/Observation.rs?category=vital-signs', resource: observation('vital-signs'), expected: true },
    {
      name: 'union of granted queries',
      scope: `patient/Observation.rs?category=${LAB} patient/Observation.rs?category=vital-signs`,
      resource: observation('vital-signs'),
      expected: true,
    },
    { name: 'OR within a parameter', scope: 'patient/Observation.rs?category=laboratory,vital-signs', resource: observation('vital-signs'), expected: true },
    { name: 'AND across parameters (both hold)', scope: 'patient/Observation.rs?category=laboratory&status=final', resource: observation('laboratory'), expected: true },
    {
      name: 'AND across parameters (one fails)',
      scope: 'patient/Observation.rs?category=laboratory&status=final',
      resource: observation('laboratory', 'amended'),
      expected: false,
    },
    { name: 'ungranular scope', scope: 'patient/Observation.rs', resource: observation('vital-signs'), expected: true },
    { name: 'no scope for the type', scope: 'patient/Condition.rs', resource: observation('laboratory'), expected: false },
    { name: 'granular s-only scope does not grant read', scope: 'patient/Observation.s?category=laboratory', resource: observation('laboratory'), interaction: 'r', expected: false },
  ];
  for (const row of table) {
    test(row.name, () => assert.equal(resourceMatchesScopes(ctxOf(row.scope), row.resource, row.interaction ?? 'r'), row.expected));
  }
});
