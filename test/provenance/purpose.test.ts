import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { policySchema, type DecisionPolicy } from '../../src/config/policy.ts';
import { V3_ACT_REASON } from '../../src/fhir/systems.ts';
import { ForbiddenError, MissingPurposeOfUseError } from '../../src/provenance/errors.ts';
import { resolvePurposeOfUse } from '../../src/provenance/purpose.ts';
import { parseScopes } from '../../src/provenance/scopes.ts';
import type { VerifiedClaims } from '../../src/provenance/verify-token.ts';

const policy = (defaultPurpose?: object): DecisionPolicy => policySchema.parse(defaultPurpose === undefined ? {} : { defaultPurpose });
const coding = (code: string, system = V3_ACT_REASON) => ({ system, code });

interface Row {
  name: string;
  claims: VerifiedClaims;
  scope: string;
  clientId?: string;
  patient?: string;
  fhirUser?: string;
  policy?: DecisionPolicy;
  expected: { codes: string[]; source: string } | 'forbidden';
}

const table: Row[] = [
  { name: 'IUA single Coding', claims: { extensions: { ihe_iua: { purpose_of_use: coding('TREAT') } } }, scope: 'user/*.rs', expected: { codes: ['TREAT'], source: 'iua-extension' } },
  {
    name: 'IUA array of Codings',
    claims: { extensions: { ihe_iua: { purpose_of_use: [coding('HPAYMT'), coding('HOPERAT')] } } },
    scope: 'user/*.rs',
    expected: { codes: ['HPAYMT', 'HOPERAT'], source: 'iua-extension' },
  },
  {
    name: 'IUA wins over the claim',
    claims: { extensions: { ihe_iua: { purpose_of_use: coding('ETREAT') } }, purpose_of_use: 'HRESCH' },
    scope: 'user/*.rs',
    expected: { codes: ['ETREAT'], source: 'iua-extension' },
  },
  {
    name: 'IUA coding of another system is not a purpose: the claim is used',
    claims: { extensions: { ihe_iua: { purpose_of_use: coding('TREAT', 'urn:local') } }, purpose_of_use: 'HRESCH' },
    scope: 'system/*.rs',
    expected: { codes: ['HRESCH'], source: 'claim' },
  },
  { name: 'claim string', claims: { purpose_of_use: 'HRESCH' }, scope: 'system/*.rs', expected: { codes: ['HRESCH'], source: 'claim' } },
  { name: 'claim array', claims: { purpose_of_use: ['TREAT', 'HPAYMT', 'TREAT'] }, scope: 'system/*.rs', expected: { codes: ['TREAT', 'HPAYMT'], source: 'claim' } },
  {
    name: 'claim wins over implied PATRQT',
    claims: { purpose_of_use: 'HOPERAT' },
    scope: 'patient/*.rs',
    patient: 'p1',
    fhirUser: 'Patient/p1',
    expected: { codes: ['HOPERAT'], source: 'claim' },
  },
  { name: 'patient in context implies PATRQT', claims: {}, scope: 'patient/*.rs', patient: 'p1', fhirUser: 'Patient/p1', expected: { codes: ['PATRQT'], source: 'implied' } },
  {
    name: 'another Patient fhirUser does not imply PATRQT (no default for patient kind)',
    claims: {},
    scope: 'patient/*.rs',
    patient: 'p1',
    fhirUser: 'Patient/p2',
    expected: 'forbidden',
  },
  { name: 'patient fhirUser with user/ scopes does not imply PATRQT', claims: {}, scope: 'user/*.rs', fhirUser: 'Patient/p1', policy: policy({}), expected: 'forbidden' },
  { name: 'RelatedPerson implies FAMRQT', claims: {}, scope: 'patient/*.rs', patient: 'p1', fhirUser: 'RelatedPerson/guardian', expected: { codes: ['FAMRQT'], source: 'implied' } },
  {
    name: 'RelatedPerson implication beats the user default',
    claims: {},
    scope: 'user/*.rs',
    fhirUser: 'RelatedPerson/guardian',
    expected: { codes: ['FAMRQT'], source: 'implied' },
  },
  {
    name: 'RelatedPerson with a purpose given keeps it',
    claims: { purpose_of_use: 'PWATRNY' },
    scope: 'patient/*.rs',
    patient: 'p1',
    fhirUser: 'RelatedPerson/guardian',
    expected: { codes: ['PWATRNY'], source: 'claim' },
  },
  { name: 'built-in default for user/ is TREAT', claims: {}, scope: 'user/*.rs', fhirUser: 'Practitioner/dr-a', expected: { codes: ['TREAT'], source: 'policy-default' } },
  { name: 'no built-in default for system/', claims: {}, scope: 'system/*.rs', expected: 'forbidden' },
  {
    name: 'per-client default wins over per-kind',
    claims: {},
    scope: 'system/*.rs',
    clientId: 'billing-engine',
    policy: policy({ system: 'HOPERAT', clients: { 'billing-engine': 'HPAYMT' } }),
    expected: { codes: ['HPAYMT'], source: 'policy-default' },
  },
  {
    name: 'per-kind default for another client',
    claims: {},
    scope: 'system/*.rs',
    clientId: 'other',
    policy: policy({ system: 'HOPERAT', clients: { 'billing-engine': 'HPAYMT' } }),
    expected: { codes: ['HOPERAT'], source: 'policy-default' },
  },
  {
    name: 'kind is the narrowest: user+system takes the user default',
    claims: {},
    scope: 'system/*.rs user/AuditEvent.rs',
    policy: policy({ user: 'HOPERAT', system: 'TREAT' }),
    expected: { codes: ['HOPERAT'], source: 'policy-default' },
  },
  { name: 'empty defaults: nothing at all → 403 security', claims: {}, scope: 'user/*.rs', policy: policy({}), expected: 'forbidden' },
  { name: 'no resource scopes and no client default', claims: {}, scope: 'openid', expected: 'forbidden' },
  { name: 'malformed claim values are ignored', claims: { purpose_of_use: [42, 'has space', ''] }, scope: 'user/*.rs', expected: { codes: ['TREAT'], source: 'policy-default' } },
];

describe('purpose of use', () => {
  for (const row of table) {
    test(row.name, () => {
      const inputs = { claims: row.claims, clientId: row.clientId ?? 'app', kinds: parseScopes(row.scope).kinds, patient: row.patient, fhirUser: row.fhirUser };
      const run = () => resolvePurposeOfUse(inputs, row.policy ?? policy());
      if (row.expected === 'forbidden') {
        assert.throws(run, (err: unknown) => {
          assert.ok(err instanceof MissingPurposeOfUseError && err instanceof ForbiddenError);
          assert.equal(err.status, 403);
          assert.equal(err.issueCode, 'security');
          assert.match(err.message, /purpose of use/);
          return true;
        });
      } else {
        const got = resolvePurposeOfUse(inputs, row.policy ?? policy());
        assert.deepEqual({ codes: [...got.codes], source: got.source }, row.expected);
      }
    });
  }
});
