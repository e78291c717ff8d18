import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { defaultPolicy } from '../../src/config/policy.ts';
import { V3_ACT_REASON } from '../../src/fhir/systems.ts';
import { localBases } from '../../src/fhir/references.ts';
import { buildRequestContext } from '../../src/provenance/build-context.ts';
import { InvalidTokenError, MissingPurposeOfUseError } from '../../src/provenance/errors.ts';
import type { VerifiedClaims } from '../../src/provenance/verify-token.ts';

const BTG_HEADER = 'http://terminology.hl7.org/CodeSystem/v3-ActReason#BTG; scheme="http://hl7.org/fhir/tag/security"';
const req = { requestId: 'req-1' };

describe('buildRequestContext', () => {
  test('normalises references, ids and the client', () => {
    const ctx = buildRequestContext(
      {
        iss: 'https://issuer.test',
        sub: 'u1',
        jti: 't1',
        exp: 2_000_000_000,
        azp: 'app-from-azp',
        scope: 'openid fhirUser launch/patient patient/*.rs btg',
        patient: 'p1',
        fhirUser: 'https://fhir.example.org/fhir/Patient/p1',
        organization: 'https://fhir.example.org/fhir/Organization/org-1/_history/3',
      },
      req,
      defaultPolicy,
      localBases('https://fhir.example.org/fhir/'),
    );
    assert.equal(ctx.requestId, 'req-1');
    assert.equal(ctx.clientId, 'app-from-azp');
    assert.equal(ctx.subject, 'u1');
    assert.equal(ctx.tokenId, 't1');
    assert.equal(ctx.issuer, 'https://issuer.test');
    assert.equal(ctx.expiresAt, 2_000_000_000);
    assert.equal(ctx.fhirUser, 'Patient/p1');
    assert.equal(ctx.organization, 'Organization/org-1');
    assert.equal(ctx.patient, 'p1');
    assert.deepEqual(ctx.grantedScopes, ['openid', 'fhirUser', 'launch/patient', 'patient/*.rs', 'btg']);
    assert.deepEqual(ctx.scopes.map((s) => s.raw), ['patient/*.rs']);
    assert.deepEqual([...ctx.kinds], ['patient']);
    assert.deepEqual(ctx.purposeOfUse, ['PATRQT']);
    assert.equal(ctx.purposeSource, 'implied');
    assert.deepEqual(ctx.breakGlass, { inEffect: false, requested: false });
  });

  test('the context cannot be changed', () => {
    const ctx = buildRequestContext({ client_id: 'app', scope: 'user/*.rs' }, req, defaultPolicy);
    assert.ok(Object.isFrozen(ctx) && Object.isFrozen(ctx.purposeOfUse) && Object.isFrozen(ctx.grantedScopes) && Object.isFrozen(ctx.scopes[0]));
    assert.throws(() => (ctx.kinds as Set<string>).add('system'), TypeError);
    assert.throws(() => (ctx.scopes[0].interactions as Set<string>).add('d'), TypeError);
    assert.throws(() => (ctx.purposeOfUse as string[]).push('HRESCH'), TypeError);
    assert.deepEqual([...ctx.kinds], ['user']);
  });

  const clientTable: [string, VerifiedClaims, string | undefined][] = [
    ['client_id first', { client_id: 'a', azp: 'b', sub: 'c' }, 'a'],
    ['then azp', { azp: 'b', sub: 'c' }, 'b'],
    ['then sub', { sub: 'c' }, 'c'],
    ['none → invalid token', {}, undefined],
  ];
  for (const [name, claims, expected] of clientTable) {
    test(`client id: ${name}`, () => {
      const build = () => buildRequestContext({ ...claims, scope: 'user/*.rs' }, req, defaultPolicy);
      if (expected) assert.equal(build().clientId, expected);
      else assert.throws(build, InvalidTokenError);
    });
  }

  const badClaims: [string, VerifiedClaims][] = [
    ['fhirUser not a reference', { fhirUser: 'dr-a' }],
    ['fhirUser of a non-user type', { fhirUser: 'Observation/o1' }],
    ['organization of another type', { organization: 'Practitioner/x' }],
    ['patient claim of another type', { patient: 'Group/g1' }],
    ['fhirUser not a string', { fhirUser: { reference: 'Practitioner/x' } as unknown as string }],
  ];
  for (const [name, claims] of badClaims) {
    test(`unreadable claim is an invalid token: ${name}`, () =>
      assert.throws(() => buildRequestContext({ client_id: 'app', scope: 'user/*.rs', ...claims }, req, defaultPolicy), InvalidTokenError));
  }

  test('Patient/<id> in the patient claim becomes a bare id; bare organization id becomes a reference', () => {
    const ctx = buildRequestContext({ client_id: 'a', scope: 'patient/*.rs', patient: 'Patient/p9', organization: 'org-2', purpose_of_use: 'PATRQT' }, req, defaultPolicy);
    assert.equal(ctx.patient, 'p9');
    assert.equal(ctx.organization, 'Organization/org-2');
  });

  const btgTable: { name: string; claims: VerifiedClaims; header?: string; purposes: string[]; source: string; breakGlass: { inEffect: boolean; requested: boolean } }[] = [
    {
      name: 'btg scope + BTG purpose',
      claims: { scope: 'user/*.rs btg', extensions: { ihe_iua: { purpose_of_use: { system: V3_ACT_REASON, code: 'BTG' } } } },
      purposes: ['BTG'],
      source: 'iua-extension',
      breakGlass: { inEffect: true, requested: true },
    },
    { name: 'btg scope + header, default purpose', claims: { scope: 'user/*.rs btg' }, header: BTG_HEADER, purposes: ['TREAT', 'BTG'], source: 'policy-default', breakGlass: { inEffect: true, requested: true } },
    { name: 'header without the scope changes nothing', claims: { scope: 'user/*.rs' }, header: BTG_HEADER, purposes: ['TREAT'], source: 'policy-default', breakGlass: { inEffect: false, requested: true } },
    {
      name: 'BTG purpose without the scope falls back to what the purpose would otherwise be',
      claims: { scope: 'user/*.rs', purpose_of_use: 'BTG' },
      purposes: ['TREAT'],
      source: 'policy-default',
      breakGlass: { inEffect: false, requested: true },
    },
  ];
  for (const row of btgTable) {
    test(`break-the-glass: ${row.name}`, () => {
      const ctx = buildRequestContext({ client_id: 'a', fhirUser: 'Practitioner/dr-a', ...row.claims }, { requestId: 'r', categoryHeader: row.header }, defaultPolicy);
      assert.deepEqual([...ctx.purposeOfUse], row.purposes);
      assert.equal(ctx.purposeSource, row.source);
      assert.deepEqual(ctx.breakGlass, row.breakGlass);
    });
  }

  test('BTG purpose without the scope and without any default is refused', () => {
    assert.throws(
      () => buildRequestContext({ client_id: 'a', scope: 'system/*.rs', purpose_of_use: 'BTG' }, req, defaultPolicy),
      MissingPurposeOfUseError,
    );
  });
});

// Issue 17 item 3 (SPEC §3): an absolute fhirUser or organization is local only on the upstream's or the
// gateway's own base; on another server it stays absolute and never collapses to the local namesake.
describe('fhirUser and organization claims on another server', () => {
  const local = localBases('http://upstream.test/fhir', 'https://gateway.test/fhir');
  const claims = (fhirUser: string, organization?: string): VerifiedClaims => ({
    client_id: 'ehr',
    scope: 'user/*.rs',
    purpose_of_use: 'TREAT',
    fhirUser,
    ...(organization ? { organization } : {}),
  });
  const table: { name: string; fhirUser: string; organization?: string; expectUser: string; expectOrg?: string }[] = [
    { name: 'control: relative stays relative', fhirUser: 'Practitioner/dr-a', expectUser: 'Practitioner/dr-a' },
    { name: 'control: the upstream base is local', fhirUser: 'http://upstream.test/fhir/Practitioner/dr-a', expectUser: 'Practitioner/dr-a' },
    { name: 'control: the gateway base is local (any case, trailing slash, default port)', fhirUser: 'HTTPS://Gateway.test:443/fhir/Practitioner/dr-a/_history/2', organization: 'https://gateway.test/fhir/Organization/h1', expectUser: 'Practitioner/dr-a', expectOrg: 'Organization/h1' },
    { name: 'attack: another server keeps its base', fhirUser: 'https://other.example/fhir/Practitioner/dr-a', expectUser: 'https://other.example/fhir/Practitioner/dr-a' },
    { name: 'attack: a longer path on the upstream host is another server', fhirUser: 'http://upstream.test/fhir/other/Practitioner/dr-a', expectUser: 'http://upstream.test/fhir/other/Practitioner/dr-a' },
    { name: 'attack: a foreign organization keeps its base', fhirUser: 'Practitioner/dr-a', organization: 'https://other.example/fhir/Organization/h1', expectUser: 'Practitioner/dr-a', expectOrg: 'https://other.example/fhir/Organization/h1' },
  ];
  for (const row of table) {
    test(row.name, () => {
      const ctx = buildRequestContext(claims(row.fhirUser, row.organization), req, defaultPolicy, local);
      assert.equal(ctx.fhirUser, row.expectUser);
      assert.equal(ctx.organization, row.expectOrg);
    });
  }
  test('a launch patient on another server is refused, not taken for the local namesake', () => {
    assert.throws(
      () => buildRequestContext({ client_id: 'a', scope: 'patient/*.rs', patient: 'https://other.example/fhir/Patient/p1' }, req, defaultPolicy, local),
      InvalidTokenError,
    );
  });
});
