// Malformed and hostile input (issue 6 §2): every case is answered with the right status and, where
// the gateway is the one answering, an OperationOutcome; none of them releases a byte of patient data.
// Requests go out raw (node:http) so paths reach the gateway exactly as an attacker would send them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import type { Consent, DiagnosticReport, Extension, Flag, Observation, Resource } from '@medplum/fhirtypes';
import { DG_EXT_AUDIT_RULE } from '../../src/audit/extensions.ts';
import { startEmbeddedUpstream, type EmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { CONSENT_SCOPE, DG_CODES, DG_EXT_HARM_GROUND, DG_EXT_WITHHELD_DATA, V3_ACT_REASON } from '../../src/fhir/systems.ts';
import { ISSUER, pou, startHarness, type Harness } from '../support/harness.ts';
import { eventsByRequest, isOperationOutcome, leakedMarkers, markedObservation, rawRequest } from './support.ts';

const run = Math.random().toString(36).slice(2, 10);
const mark = (what: string): string => `BADMARK-${run}-${what}-x`;

const observation = (id: string, patient: string, security?: string): Observation => markedObservation(id, patient, mark(id), security);

const report = (id: string, patient: string): DiagnosticReport => ({
  resourceType: 'DiagnosticReport',
  id,
  status: 'final',
  code: { text: 'progress note' },
  subject: { reference: `Patient/${patient}` },
  conclusion: mark(id),
});

const resources: Resource[] = [
  { resourceType: 'Practitioner', id: 'dr-bad' },
  { resourceType: 'Organization', id: 'org-bad' },
  { resourceType: 'Patient', id: 'pb1', generalPractitioner: [{ reference: 'Practitioner/dr-bad' }] },
  { resourceType: 'Patient', id: 'pb2', generalPractitioner: [{ reference: 'Practitioner/dr-bad' }] },
  observation('obs-bad-1', 'pb1'),
  observation('obs-bad-2', 'pb1'),
  observation('obs-bad-r', 'pb1', 'R'),
  observation('obs-bad-other', 'pb2'),
  observation('obs-bad-n2', 'pb2'),
  observation('obs-bad-r2', 'pb2', 'R'),
  report('rep-bad-1', 'pb2'),
];
const allMarkers = resources.flatMap((r) => (r.resourceType === 'Observation' || r.resourceType === 'DiagnosticReport' ? [r.id as string, mark(r.id as string)] : []));

let upstream: EmbeddedUpstream;
let h: Harness;
let user: string;
let patient: string;

before(async () => {
  upstream = await startEmbeddedUpstream({ resources });
  h = await startHarness({ upstream, policy: { cache: { ttlSeconds: 0, maxPatients: 100 } } });
  user = await h.token({ scope: 'user/*.rs', fhirUser: 'Practitioner/dr-bad', client_id: 'bad-client', extensions: pou('TREAT') });
  patient = await h.token({ scope: 'patient/*.rs', patient: 'pb1', fhirUser: 'Patient/pb1', client_id: 'bad-patient-app' });
});
after(async () => {
  await h.close();
  await upstream.close();
});

interface BadCase {
  readonly name: string;
  readonly method?: string;
  readonly path: string;
  readonly headers?: (tokens: { user: string; patient: string }) => Record<string, string>;
  readonly body?: string | Buffer;
  readonly status: number;
  /** The gateway itself answers with an OperationOutcome (false where Node's HTTP parser or express answers first). */
  readonly outcome?: boolean;
  /** Expected OperationOutcome issue code. */
  readonly code?: string;
  /** A 200 searchset with no entries (rather than a batch-response). */
  readonly empty?: boolean;
}

const asUser = (t: { user: string }) => ({ authorization: `Bearer ${t.user}` });
const asPatient = (t: { patient: string }) => ({ authorization: `Bearer ${t.patient}` });
const form = (t: { user: string }) => ({ ...asUser(t), 'content-type': 'application/x-www-form-urlencoded' });
const json = (t: { user: string }) => ({ ...asUser(t), 'content-type': 'application/fhir+json' });

const batchOf = (entries: { method: string; url: string }[]): string => JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: entries.map((request) => ({ request })) });

const cases: BadCase[] = [
  // Oversized input
  { name: 'headers over the 16 KiB limit (Node answers 431 before any handler)', path: '/fhir/Observation/obs-bad-1', headers: (t) => ({ ...asUser(t), 'x-padding': 'a'.repeat(20_000) }), status: 431, outcome: true },
  { name: 'request body over the 16 MiB limit', method: 'POST', path: '/fhir', headers: json, body: Buffer.alloc(17 * 1024 * 1024, 0x20), status: 413, code: 'too-costly' },
  { name: 'batch with more than 1000 entries', method: 'POST', path: '/fhir', headers: json, body: batchOf(Array.from({ length: 1001 }, () => ({ method: 'GET', url: 'Observation/obs-bad-1' }))), status: 413, code: 'too-costly' },
  // Invalid JSON and bodies
  { name: 'batch body that is not JSON', method: 'POST', path: '/fhir', headers: json, body: '{"resourceType":"Bundle","type":"batch","entry":[', status: 400, code: 'structure' },
  { name: 'batch body that is JSON but not a Bundle', method: 'POST', path: '/fhir', headers: json, body: '{"resourceType":"Observation","id":"obs-bad-1"}', status: 400 },
  { name: 'batch body that is a JSON array', method: 'POST', path: '/fhir', headers: json, body: '[{"request":{"method":"GET","url":"Observation/obs-bad-1"}}]', status: 400 },
  { name: 'batch body that is JSON null', method: 'POST', path: '/fhir', headers: json, body: 'null', status: 400 },
  { name: 'POST _search with a JSON body', method: 'POST', path: '/fhir/Observation/_search', headers: json, body: '{"patient":"pb1"}', status: 415 },
  { name: 'POST _search with broken JSON sent as a form', method: 'POST', path: '/fhir/Observation/_search', headers: form, body: '{"patient":"pb1"', status: 400 },
  { name: 'POST _search whose form repeats _count', method: 'POST', path: '/fhir/Observation/_search?_count=2', headers: form, body: 'patient=pb1&_count=3', status: 400 },
  // Path traversal and encoded separators
  { name: 'encoded dot-dot segment', path: '/fhir/Observation/%2e%2e/Patient/pb1', headers: asUser, status: 400 },
  { name: 'encoded slash inside an id', path: '/fhir/Observation%2Fobs-bad-1', headers: asUser, status: 400 },
  { name: 'encoded slashes climbing out', path: '/fhir/Observation/..%2f..%2fPatient/pb1', headers: asUser, status: 400 },
  { name: 'literal dot-dot after the base', path: '/fhir/../fhir/Observation/obs-bad-1', headers: asUser, status: 400 },
  { name: 'dot segment', path: '/fhir/./Observation/obs-bad-1', headers: asUser, status: 400 },
  { name: 'double slash', path: '/fhir//Observation/obs-bad-1', headers: asUser, status: 400 },
  { name: 'backslash', path: '/fhir/Observation\\obs-bad-1', headers: asUser, status: 400 },
  { name: 'encoded backslash', path: '/fhir/Observation%5cobs-bad-1', headers: asUser, status: 400 },
  { name: 'matrix parameter', path: '/fhir/Observation/obs-bad-r;obs-bad-1', headers: asUser, status: 400 },
  { name: 'traversal that lands outside /fhir (a FHIR 404 outside the base)', path: '/x/../fhir/Patient/pb1', headers: asUser, status: 404, outcome: true },
  { name: 'batch entry with an absolute URL', method: 'POST', path: '/fhir', headers: json, body: batchOf([{ method: 'GET', url: 'http://127.0.0.1:1/fhir/Observation/obs-bad-1' }]), status: 200 },
  { name: 'batch entry with an encoded traversal', method: 'POST', path: '/fhir', headers: json, body: batchOf([{ method: 'GET', url: 'Observation/%2e%2e/Observation/obs-bad-r' }]), status: 200 },
  { name: 'batch entry climbing with ../', method: 'POST', path: '/fhir', headers: json, body: batchOf([{ method: 'GET', url: '../Observation/obs-bad-r' }]), status: 200 },
  // Duplicate and conflicting query parameters
  { name: 'repeated _count', path: '/fhir/Observation?patient=pb1&_count=1&_count=500', headers: asUser, status: 400 },
  { name: 'repeated _sort', path: '/fhir/Observation?patient=pb1&_sort=_id&_sort=-_id', headers: asUser, status: 400 },
  { name: '_summary=true then _summary=count', path: '/fhir/Observation?patient=pb1&_summary=true&_summary=count', headers: asUser, status: 400 },
  { name: 'patient token naming its own and another patient', path: '/fhir/Observation?patient=pb1&patient=pb2', headers: asPatient, status: 403, code: 'forbidden' },
  { name: 'patient token: patient and subject disagree', path: '/fhir/Observation?patient=Patient/pb2&subject=Patient/pb1', headers: asPatient, status: 403 },
  { name: 'patient token: a list of patients', path: '/fhir/Observation?patient=pb1,pb2', headers: asPatient, status: 403 },
  { name: 'patient token: another patient by absolute URL', path: '/fhir/Observation?patient=http://elsewhere.example/fhir/Patient/pb2', headers: asPatient, status: 403 },
  { name: 'patient token: compartment of another patient', path: '/fhir/Patient/pb2/Observation', headers: asPatient, status: 403 },
  { name: 'parameter name with a NUL', path: '/fhir/Observation?patient%00=pb2', headers: asUser, status: 400 },
  { name: 'chained parameter', path: '/fhir/Observation?patient.name=x', headers: asUser, status: 400 },
  { name: '_has reverse chain', path: '/fhir/Patient?_has:Observation:patient:_id=obs-bad-r', headers: asUser, status: 400 },
  { name: '_summary=count', path: '/fhir/Observation?patient=pb1&_summary=count', headers: asUser, status: 400 },
  // Method override
  { name: 'X-HTTP-Method-Override: DELETE', path: '/fhir/Observation/obs-bad-1', headers: (t) => ({ ...asUser(t), 'X-HTTP-Method-Override': 'DELETE' }), status: 400 },
  { name: 'X-HTTP-Method: PUT', path: '/fhir/Observation/obs-bad-1', headers: (t) => ({ ...asUser(t), 'X-HTTP-Method': 'PUT' }), status: 400 },
  { name: 'X-Method-Override on POST _search', method: 'POST', path: '/fhir/Observation/_search', headers: (t) => ({ ...form(t), 'X-Method-Override': 'GET' }), body: 'patient=pb1', status: 400 },
  // Formats
  { name: '_format=xml', path: '/fhir/Observation/obs-bad-1?_format=xml', headers: asUser, status: 406 },
  { name: '_format=text/turtle', path: '/fhir/Observation?patient=pb1&_format=text/turtle', headers: asUser, status: 406 },
  { name: '_format json then xml', path: '/fhir/Observation?patient=pb1&_format=json&_format=xml', headers: asUser, status: 406 },
  { name: '_format as a nested object', path: '/fhir/Observation?patient=pb1&_format[a]=json', headers: asUser, status: 406 },
  { name: 'Accept: application/fhir+xml', path: '/fhir/Observation/obs-bad-1', headers: (t) => ({ ...asUser(t), accept: 'application/fhir+xml' }), status: 406 },
  // Unicode tricks in ids
  { name: 'Cyrillic o homoglyph in an id', path: `/fhir/Observation/${encodeURIComponent('\u043ebs-bad-1')}`, headers: asUser, status: 400 },
  { name: 'right-to-left mark in an id', path: `/fhir/Observation/${encodeURIComponent('obs-bad-1\u200f')}`, headers: asUser, status: 400 },
  { name: 'right-to-left override in an id', path: `/fhir/Observation/${encodeURIComponent('\u202eobs-bad-1')}`, headers: asUser, status: 400 },
  { name: 'full-width letters in an id', path: `/fhir/Observation/${encodeURIComponent('\uff4fbs-bad-1')}`, headers: asUser, status: 400 },
  { name: 'NUL in an id', path: '/fhir/Observation/obs-bad-1%00', headers: asUser, status: 400 },
  { name: 'zero-width joiner in a patient parameter (no patient identified)', path: `/fhir/Observation?patient=${encodeURIComponent('pb\u200d1')}`, headers: asUser, status: 400, code: 'required' },
  // The patient token's own patient is enforced on top, so the look-alike matches nothing: an empty searchset.
  { name: 'combining accent on the patient id for a patient token', path: `/fhir/Observation?patient=${encodeURIComponent('pb1\u0301')}`, headers: asPatient, status: 200, empty: true },
  // Tokens
  { name: 'no token', path: '/fhir/Observation/obs-bad-1', status: 401, code: 'login' },
  { name: 'token over the 16 KiB verifier limit but under the header limit', path: '/fhir/Observation/obs-bad-1', headers: () => ({ authorization: `Bearer eyJhbGciOiJFUzI1NiJ9.${'A'.repeat(16_100)}.sig` }), status: 401 },
  { name: 'token far over the header limit', path: '/fhir/Observation/obs-bad-1', headers: () => ({ authorization: `Bearer eyJhbGciOiJFUzI1NiJ9.${'A'.repeat(100_000)}.sig` }), status: 431, outcome: true },
  { name: 'alg none token', path: '/fhir/Observation/obs-bad-1', headers: () => ({ authorization: `Bearer ${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ iss: ISSUER, scope: 'user/*.rs', exp: 9_999_999_999 })).toString('base64url')}.` }), status: 401 },
  { name: 'two schemes in Authorization', path: '/fhir/Observation/obs-bad-1', headers: (t) => ({ authorization: `Basic Zm9vOmJhcg== Bearer ${t.user}` }), status: 401 },
];

describe('bad input', () => {
  for (const c of cases) {
    test(c.name, async () => {
      const res = await rawRequest(h.base, { method: c.method, path: c.path, headers: c.headers?.({ user, patient }), body: c.body });
      assert.equal(res.status, c.status, res.text.slice(0, 300));
      assert.deepEqual(leakedMarkers(res, allMarkers), [], 'nothing released');
      if (c.empty) {
        const bundle = JSON.parse(res.text) as { type: string; entry?: unknown[] };
        assert.equal(bundle.type, 'searchset');
        assert.equal(bundle.entry?.length ?? 0, 0);
      } else if (c.status === 200) {
        // Batches answer per entry: every entry refused with its own OperationOutcome.
        const entries = (JSON.parse(res.text) as { entry: { response: { status: string; outcome?: unknown } }[] }).entry;
        assert.ok(entries.length > 0);
        for (const e of entries) {
          assert.ok(Number.parseInt(e.response.status, 10) >= 400, `entry refused (${e.response.status})`);
          assert.ok(isOperationOutcome(JSON.stringify(e.response.outcome)));
        }
      } else if (c.outcome !== false) {
        assert.ok(isOperationOutcome(res.text), 'an OperationOutcome explains the refusal');
        if (c.code) assert.equal((JSON.parse(res.text) as { issue: { code: string }[] }).issue[0].code, c.code);
      } else {
        assert.equal(res.text.includes('"resourceType"'), false, 'answered before the gateway saw it');
      }
      if (c.status === 401) assert.match(String(res.headers['www-authenticate']), /^Bearer error="invalid_token"/);
    });
  }

  test('a hostile X-Request-Id is replaced, not echoed', async () => {
    const res = await rawRequest(h.base, { path: '/fhir/Observation/obs-bad-1', headers: { ...asUser({ user }), 'x-request-id': '../../etc/passwd<script>' } });
    assert.equal(res.status, 200);
    assert.match(String(res.headers['x-request-id']), /^[0-9a-f-]{36}$/);
  });

  test('the gateway still serves after the barrage', async () => {
    const res = await h.request('Observation?patient=pb1', { token: user });
    assert.equal(res.status, 200);
    assert.ok(res.text.includes(mark('obs-bad-1')));
    assert.deepEqual(leakedMarkers(res, ['obs-bad-r', mark('obs-bad-r')]), []);
  });
});

// ---------------------------------------------------------------------------------------------------
// Invalid Consents and Flags upstream: the patient falls back to the implicit policy (N released, R
// never) and the audit names the ignored rule and why (SPEC §4.1, §4.3).

const privacy = { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy' }] };
const baseConsent = {
  resourceType: 'Consent',
  id: 'c-invalid',
  status: 'active',
  scope: privacy,
  category: [{ text: 'privacy' }],
  patient: { reference: 'Patient/pb2' },
  dateTime: '2024-01-01T00:00:00Z',
  policy: [{ uri: 'https://example.org/privacy-policy' }],
} as const;

interface InvalidConsentCase {
  readonly name: string;
  readonly consent: Record<string, unknown>;
  /** Why the audit says it was ignored. */
  readonly reason: RegExp;
}

// Each of these is a deny the patient may have meant; read literally it is not computable, so the documented
// fallback (SPEC §4.1) is the implicit policy, with the consent reported UNSUPPORTED in the audit.
const invalidConsents: InvalidConsentCase[] = [
  { name: 'no provision type and no policyRule (non-computable)', consent: { ...baseConsent, provision: { purpose: [{ system: V3_ACT_REASON, code: 'TREAT' }] } }, reason: /UNSUPPORTED: no computable base decision/ },
  { name: 'provision.type outside the code set', consent: { ...baseConsent, provision: { type: 'maybe' } }, reason: /UNSUPPORTED: no computable base decision/ },
  { name: 'root period that is not a date', consent: { ...baseConsent, provision: { type: 'deny', period: { start: 'yesterday' } } }, reason: /UNSUPPORTED: .*dateTime/ },
  { name: 'nested period that is not a date', consent: { ...baseConsent, provision: { type: 'deny', provision: [{ type: 'permit', period: { end: 'never' } }] } }, reason: /UNSUPPORTED: .*provision\[0\]\.period/ },
  { name: 'provision given as an array (R5 shape without a decision)', consent: { ...baseConsent, provision: [{ type: 'deny' }] }, reason: /UNSUPPORTED: R5 consent without decision/ },
  { name: 'scope missing', consent: { ...baseConsent, scope: undefined, provision: { type: 'deny' } }, reason: /UNSUPPORTED: .*Consent\.scope/ },
  { name: 'actor without a role', consent: { ...baseConsent, provision: { type: 'deny', actor: [{ reference: { reference: 'Practitioner/dr-bad' } }] } }, reason: /UNSUPPORTED: .*actor\[0\]\.role/ },
];

const harmFlag = (extension: Extension[], author?: string): Flag => ({
  resourceType: 'Flag',
  id: 'flag-invalid',
  status: 'active',
  code: { coding: [{ system: DG_CODES, code: 'harm-determination' }] },
  subject: { reference: 'Patient/pb1' },
  ...(author ? { author: { reference: author } } : {}),
  extension,
});
const ground = { url: DG_EXT_HARM_GROUND, valueCoding: { system: DG_CODES, code: 'harm-life-safety' } };
const withheld = { url: DG_EXT_WITHHELD_DATA, valueReference: { reference: 'Observation/obs-bad-2' } };

const invalidFlags: { name: string; flag: Flag; reason: RegExp }[] = [
  { name: 'no author', flag: harmFlag([ground, withheld]), reason: /no author/ },
  { name: 'author is an Organization', flag: harmFlag([ground, withheld], 'Organization/org-bad'), reason: /not a Practitioner/ },
  { name: 'no ground', flag: harmFlag([withheld], 'Practitioner/dr-bad'), reason: /harm-ground/ },
  { name: 'no withheld data (an organisation-wide hold)', flag: harmFlag([ground], 'Practitioner/dr-bad'), reason: /information blocking/ },
];

function ignoredRules(events: { extension?: Extension[] }[]): { rule: string; reason: string }[] {
  const found: { rule: string; reason: string }[] = [];
  for (const event of events) {
    for (const ext of event.extension ?? []) {
      if (ext.url !== DG_EXT_AUDIT_RULE) continue;
      const part = (name: string) => ext.extension?.find((p) => p.url === name);
      if (part('effect')?.valueCode === 'ignored') found.push({ rule: part('rule')?.valueString ?? '', reason: part('reason')?.valueString ?? '' });
    }
  }
  return found;
}

describe('invalid Consents and Flags upstream', () => {
  for (const c of invalidConsents) {
    test(`Consent: ${c.name} → implicit policy, audited as ignored`, async () => {
      await h.put(c.consent as unknown as Consent);
      const res = await h.request('Observation?patient=pb2', { token: user });
      assert.equal(res.status, 200, res.text);
      const ids = (res.body.entry as { resource: Resource }[]).map((e) => e.resource.id).sort();
      // all-normal: N data released, R never (SPEC §4.5).
      assert.deepEqual(ids, ['obs-bad-n2', 'obs-bad-other']);
      assert.deepEqual(leakedMarkers(res, ['obs-bad-r2', mark('obs-bad-r2')]), []);
      const events = (await eventsByRequest(h.auditDir)).get(res.headers.get('x-request-id') ?? '') ?? [];
      const ignored = ignoredRules(events).filter((r) => r.rule === 'Consent/c-invalid');
      assert.equal(ignored.length, 1, 'the audit names the ignored consent');
      assert.match(ignored[0].reason, c.reason);
    });
  }

  test('a valid deny Consent withholds everything (control: the fallback above is not a blanket ignore)', async () => {
    await h.put({ ...baseConsent, provision: { type: 'deny' } } as unknown as Consent);
    const res = await h.request('Observation?patient=pb2', { token: user });
    assert.equal(res.status, 200);
    assert.equal(res.body.entry?.length ?? 0, 0);
    assert.deepEqual(leakedMarkers(res, allMarkers), []);
  });

  for (const c of invalidFlags) {
    test(`harm Flag: ${c.name} → the patient gets the record, the audit says why`, async () => {
      await h.put(c.flag);
      const res = await h.request('Observation', { token: patient });
      assert.equal(res.status, 200, res.text);
      assert.ok(res.text.includes(mark('obs-bad-2')), 'an invalid determination withholds nothing');
      assert.deepEqual(leakedMarkers(res, ['obs-bad-r', mark('obs-bad-r'), 'obs-bad-other', mark('obs-bad-other')]), []);
      const events = (await eventsByRequest(h.auditDir)).get(res.headers.get('x-request-id') ?? '') ?? [];
      const ignored = ignoredRules(events).filter((r) => r.rule === 'Flag/flag-invalid');
      assert.equal(ignored.length, 1);
      assert.match(ignored[0].reason, c.reason);
    });
  }

  test('a valid harm Flag withholds the record from the patient (control)', async () => {
    await h.put(harmFlag([ground, withheld], 'Practitioner/dr-bad'));
    const res = await h.request('Observation', { token: patient });
    assert.equal(res.status, 200);
    assert.deepEqual(leakedMarkers(res, ['obs-bad-2', mark('obs-bad-2')]), []);
    assert.ok(res.text.includes(mark('obs-bad-1')));
  });
});

// ---------------------------------------------------------------------------------------------------
// A remote JWKS that goes down: keys fetched earlier keep verifying, an unknown kid is refused (401),
// and with nothing ever fetched the gateway fails closed (503), never open.

interface JwksServer {
  readonly url: string;
  up(): Promise<void>;
  down(): Promise<void>;
  requests: number;
}

async function startJwksServer(keys: JWK[]): Promise<JwksServer> {
  let server: Server | undefined;
  let port = 0;
  const state = { requests: 0 };
  const listen = async () => {
    server = createServer((_req, res) => {
      state.requests++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys }));
    });
    await new Promise<void>((resolve) => server?.listen(port, '127.0.0.1', () => resolve()));
    port = (server.address() as AddressInfo).port;
  };
  await listen();
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    up: listen,
    async down() {
      const s = server;
      server = undefined;
      if (s) await new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      });
    },
    get requests() {
      return state.requests;
    },
  };
}

describe('JWKS endpoint down', () => {
  test('cached keys keep working, unknown kids fail, nothing cached fails closed', async () => {
    const known = await generateKeyPair('ES256', { extractable: true });
    const unknown = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(known.publicKey)), kid: 'rel-known', alg: 'ES256', use: 'sig' };
    const jwks = await startJwksServer([jwk]);
    const h2 = await startHarness({ upstream, settings: { AUTH_JWKS_URL: jwks.url } });
    const h3 = await startHarness({ upstream, settings: { AUTH_JWKS_URL: jwks.url } });
    try {
      const sign = (key: CryptoKey, kid: string, audience: string) =>
        new SignJWT({ scope: 'user/*.rs', fhirUser: 'Practitioner/dr-bad', client_id: 'jwks-client', extensions: pou('TREAT') })
          .setProtectedHeader({ alg: 'ES256', kid })
          .setIssuer(ISSUER)
          .setAudience(audience)
          .setIssuedAt()
          .setExpirationTime('5m')
          .sign(key);
      const good = await sign(known.privateKey as CryptoKey, 'rel-known', h2.base);
      const first = await h2.request('Observation/obs-bad-1', { token: good });
      assert.equal(first.status, 200);
      assert.ok(jwks.requests >= 1, 'keys fetched from the endpoint');

      await jwks.down();
      const cached = await h2.request('Observation/obs-bad-1', { token: good });
      assert.equal(cached.status, 200, 'a key fetched earlier keeps working');
      const strangerKid = await h2.request('Observation/obs-bad-1', { token: await sign(unknown.privateKey as CryptoKey, 'rel-unknown', h2.base) });
      assert.equal(strangerKid.status, 401);
      const forgedUnderKnownKid = await h2.request('Observation/obs-bad-1', { token: await sign(unknown.privateKey as CryptoKey, 'rel-known', h2.base) });
      assert.equal(forgedUnderKnownKid.status, 401);
      // A gateway that never fetched the keys cannot verify anything: 503, not 200 and not a guess.
      const never = await h3.request('Observation/obs-bad-1', { token: await sign(known.privateKey as CryptoKey, 'rel-known', h3.base) });
      assert.equal(never.status, 503);
      for (const res of [strangerKid, forgedUnderKnownKid, never]) {
        assert.ok(isOperationOutcome(res.text));
        assert.deepEqual(leakedMarkers(res, allMarkers), []);
      }
    } finally {
      await jwks.down();
      await h2.close();
      await h3.close();
    }
  });
});
