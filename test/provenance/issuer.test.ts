import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeProtectedHeader } from 'jose';
import { defaultPolicy } from '../../src/config/policy.ts';
import { createDevIssuer } from '../../src/embedded/issuer.ts';
import { personaClaims, personaNames, personas, type PersonaName } from '../../src/embedded/personas.ts';
import { buildRequestContext } from '../../src/provenance/build-context.ts';
import { confineSearch } from '../../src/provenance/confine.ts';
import { InvalidTokenError } from '../../src/provenance/errors.ts';
import { allows, governingKind } from '../../src/provenance/scopes.ts';
import { createTokenVerifier } from '../../src/provenance/verify-token.ts';

const ISSUER = 'http://127.0.0.1:8080/dev-issuer';
const AUDIENCE = 'http://127.0.0.1:8080/fhir';

describe('dev token issuer', () => {
  let dataDir: string;
  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'dg-issuer-'));
  });
  after(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  test('persists its key so a second process signs tokens the first one trusts', async () => {
    const first = await createDevIssuer({ dataDir, issuer: ISSUER, audience: AUDIENCE });
    const second = await createDevIssuer({ dataDir, issuer: ISSUER, audience: AUDIENCE });
    assert.deepEqual(second.jwks(), first.jwks());
    const stored = JSON.parse(await readFile(join(dataDir, 'dev-issuer', 'key.json'), 'utf8')) as { kid: string };
    assert.equal(first.jwks().keys[0].kid, stored.kid);
    assert.equal(first.jwks().keys[0].d, undefined, 'the key set carries no private part');
    assert.equal((await stat(join(dataDir, 'dev-issuer', 'key.json'))).mode & 0o077, 0, 'the key file is private');
    const verifier = createTokenVerifier({ jwks: first.jwks(), issuer: ISSUER, audience: AUDIENCE });
    const claims = await verifier.verify(await second.personaToken('clinician'));
    assert.equal(claims.dev_issuer, true);
    assert.equal(claims.fhirUser, 'Practitioner/dr-a');
    assert.equal(decodeProtectedHeader(await second.sign({ client_id: 'x' })).alg, 'ES256');
  });

  test('a fresh data directory makes a different key that the first one does not trust', async () => {
    const otherDir = await mkdtemp(join(tmpdir(), 'dg-issuer-'));
    try {
      const mine = await createDevIssuer({ dataDir, issuer: ISSUER, audience: AUDIENCE });
      const other = await createDevIssuer({ dataDir: otherDir, issuer: ISSUER, audience: AUDIENCE });
      assert.notEqual(other.jwks().keys[0].kid, mine.jwks().keys[0].kid);
      const verifier = createTokenVerifier({ jwks: mine.jwks(), issuer: ISSUER, audience: AUDIENCE });
      await assert.rejects(verifier.verify(await other.personaToken('clinician')), InvalidTokenError);
    } finally {
      await rm(otherDir, { recursive: true, force: true });
    }
  });

  test('dev_issuer cannot be overridden by the claims given, and expiry is honoured', async () => {
    const issuer = await createDevIssuer({ dataDir, issuer: ISSUER, audience: AUDIENCE });
    const verifier = createTokenVerifier({ jwks: issuer.jwks(), issuer: ISSUER, audience: AUDIENCE, clockToleranceSec: 0 });
    assert.equal((await verifier.verify(await issuer.sign({ client_id: 'x', dev_issuer: false }))).dev_issuer, true);
    await assert.rejects(verifier.verify(await issuer.sign({ client_id: 'x' }, { expiresIn: '-1m' })), InvalidTokenError);
  });

  test('unknown persona is an error', async () => {
    const issuer = await createDevIssuer({ dataDir, issuer: ISSUER, audience: AUDIENCE });
    await assert.rejects(issuer.personaToken('nobody'), /unknown persona/);
  });

  // Each persona, through the whole provenance path, ends up as the requester it claims to be.
  const expectations: Record<PersonaName, { purposes: string[]; kind: string; fhirUser?: string; organization?: string; breakGlass: boolean; canSearch: string }> = {
    clinician: { purposes: ['TREAT'], kind: 'user', fhirUser: 'Practitioner/dr-a', organization: 'Organization/hospital', breakGlass: false, canSearch: 'Observation' },
    'clinician-bob': { purposes: ['TREAT'], kind: 'user', fhirUser: 'Practitioner/bob', breakGlass: false, canSearch: 'Observation' },
    patient: { purposes: ['PATRQT'], kind: 'patient', fhirUser: 'Patient/p42', breakGlass: false, canSearch: 'Observation' },
    guardian: { purposes: ['FAMRQT'], kind: 'patient', fhirUser: 'RelatedPerson/guardian', breakGlass: false, canSearch: 'Observation' },
    payer: { purposes: ['HPAYMT'], kind: 'user', fhirUser: 'Practitioner/payer-agent', organization: 'Organization/payer', breakGlass: false, canSearch: 'Encounter' },
    researcher: { purposes: ['HRESCH'], kind: 'system', organization: 'Organization/research', breakGlass: false, canSearch: 'Observation' },
    auditor: { purposes: ['HOPERAT'], kind: 'user', fhirUser: 'Practitioner/auditor', breakGlass: false, canSearch: 'AuditEvent' },
    'integration-engine': { purposes: ['TREAT'], kind: 'system', breakGlass: false, canSearch: 'Observation' },
    'break-glass': { purposes: ['BTG'], kind: 'user', fhirUser: 'Practitioner/dr-a', organization: 'Organization/hospital', breakGlass: true, canSearch: 'Observation' },
  };
  for (const name of personaNames) {
    test(`persona ${name}`, async () => {
      const expected = expectations[name];
      assert.ok(personas[name].description.length > 10);
      const issuer = await createDevIssuer({ dataDir, issuer: ISSUER, audience: AUDIENCE, patientId: 'p42' });
      const verifier = createTokenVerifier({ jwks: issuer.jwks(), issuer: ISSUER, audience: AUDIENCE });
      const ctx = buildRequestContext(await verifier.verify(await issuer.personaToken(name)), { requestId: name }, defaultPolicy);
      assert.deepEqual([...ctx.purposeOfUse], expected.purposes);
      assert.equal(governingKind(ctx.kinds), expected.kind);
      assert.equal(ctx.fhirUser, expected.fhirUser);
      assert.equal(ctx.organization, expected.organization);
      assert.equal(ctx.breakGlass.inEffect, expected.breakGlass);
      assert.ok(allows(ctx, expected.canSearch, 's'));
      if (expected.kind === 'patient') {
        assert.equal(ctx.patient, 'p42');
        assert.equal(confineSearch(ctx, defaultPolicy, { resourceType: 'Observation', params: new URLSearchParams(), interaction: 'search-type' }).get('patient'), 'Patient/p42');
      }
    });
  }

  test('the demo patient id defaults to p1 and is configurable', () => {
    assert.equal(personaClaims('patient').patient, 'p1');
    assert.equal(personas.guardian.claims.patient, 'p1');
    assert.equal(personaClaims('patient', { patientId: 'demo-7' }).fhirUser, 'Patient/demo-7');
  });
});
