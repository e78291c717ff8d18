import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { base64url, exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { InvalidTokenError, TokenVerificationUnavailableError } from '../../src/provenance/errors.ts';
import { bearerToken, createTokenVerifier, MAX_TOKEN_BYTES } from '../../src/provenance/verify-token.ts';

const ISSUER = 'https://issuer.test';
const AUDIENCE = 'https://gateway.test/fhir';
const now = (): number => Math.floor(Date.now() / 1000);

interface Keys {
  rsa: { privateKey: CryptoKey; publicKey: CryptoKey; jwk: JWK };
  ec: { privateKey: CryptoKey; jwk: JWK };
  stranger: { privateKey: CryptoKey };
}

async function makeKeys(): Promise<Keys> {
  const rsa = await generateKeyPair('RS256', { extractable: true });
  const ec = await generateKeyPair('ES256', { extractable: true });
  const stranger = await generateKeyPair('RS256');
  return {
    rsa: { ...rsa, jwk: { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' } },
    ec: { privateKey: ec.privateKey, jwk: { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' } },
    stranger: { privateKey: stranger.privateKey },
  };
}

function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })),
  );
}

function close(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

const sign = (key: CryptoKey, alg: string, kid: string, claims: JWTPayload = {}): Promise<string> =>
  new SignJWT({ scope: 'user/*.rs', client_id: 'app', ...claims })
    .setProtectedHeader({ alg, kid })
    .setIssuer(typeof claims.iss === 'string' ? claims.iss : ISSUER)
    .setAudience(claims.aud ?? AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(typeof claims.exp === 'number' ? claims.exp : now() + 3600)
    .sign(key);

const unsigned = (header: object, payload: object): string =>
  `${base64url.encode(JSON.stringify(header))}.${base64url.encode(JSON.stringify(payload))}.`;

async function rejects(promise: Promise<unknown>, errorClass: typeof InvalidTokenError | typeof TokenVerificationUnavailableError): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof errorClass, `expected ${errorClass.name}, got ${String(err)}`);
    return true;
  });
}

describe('token verification against a JWKS served over HTTP', () => {
  let keys: Keys;
  let jwksServer: { server: Server; url: string };
  let introspection: { server: Server; url: string };
  const introspectionHits: string[] = [];
  const opaque: Record<string, object> = {};

  before(async () => {
    keys = await makeKeys();
    jwksServer = await listen((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [keys.rsa.jwk, keys.ec.jwk] }));
    });
    Object.assign(opaque, {
      'opaque-active': { active: true, scope: 'system/*.rs', client_id: 'engine', exp: now() + 600, iss: ISSUER, aud: AUDIENCE },
      'opaque-inactive': { active: false },
      'opaque-expired': { active: true, client_id: 'engine', exp: now() - 3600 },
      'opaque-other-audience': { active: true, client_id: 'engine', exp: now() + 600, aud: 'https://elsewhere.test' },
      'opaque-other-issuer': { active: true, client_id: 'engine', exp: now() + 600, iss: 'https://evil.test' },
    });
    introspection = await listen((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        const expectedAuth = `Basic ${Buffer.from('gateway:s3cret').toString('base64')}`;
        res.setHeader('content-type', 'application/json');
        if (req.method !== 'POST' || req.headers.authorization !== expectedAuth || !req.headers['content-type']?.startsWith('application/x-www-form-urlencoded')) {
          res.statusCode = 401;
          return res.end('{"error":"invalid_client"}');
        }
        const token = new URLSearchParams(body).get('token') ?? '';
        introspectionHits.push(token);
        res.end(JSON.stringify(opaque[token] ?? { active: false }));
      });
    });
  });
  after(async () => {
    await close(jwksServer.server);
    await close(introspection.server);
  });

  const verifier = () =>
    createTokenVerifier({
      jwksUrl: `${jwksServer.url}/jwks`,
      issuer: ISSUER,
      audience: AUDIENCE,
      introspection: { url: `${introspection.url}/introspect`, clientId: 'gateway', clientSecret: 's3cret', timeoutMs: 2000 },
    });

  test('valid tokens pass (RS256, ES256, PS256-less key set, Bearer prefix) and return the claims', async () => {
    const v = verifier();
    const rs = await v.verify(await sign(keys.rsa.privateKey, 'RS256', 'rsa-1', { patient: 'p1' }));
    assert.equal(rs.patient, 'p1');
    assert.equal(rs.client_id, 'app');
    const es = await v.verify(`Bearer ${await sign(keys.ec.privateKey, 'ES256', 'ec-1', { fhirUser: 'Practitioner/dr-a' })}`);
    assert.equal(es.fhirUser, 'Practitioner/dr-a');
    assert.ok(Object.isFrozen(es));
  });

  const badTokens: { name: string; token: (k: Keys) => Promise<string> | string; error?: typeof InvalidTokenError | typeof TokenVerificationUnavailableError; description: RegExp }[] = [
    { name: 'expired', token: (k) => sign(k.rsa.privateKey, 'RS256', 'rsa-1', { exp: now() - 3600 }), description: /expired/ },
    { name: 'not yet valid', token: (k) => sign(k.rsa.privateKey, 'RS256', 'rsa-1', { nbf: now() + 3600 }), description: /not yet valid/ },
    { name: 'wrong issuer', token: (k) => sign(k.rsa.privateKey, 'RS256', 'rsa-1', { iss: 'https://evil.test' }), description: /issuer/ },
    { name: 'wrong audience', token: (k) => sign(k.rsa.privateKey, 'RS256', 'rsa-1', { aud: 'https://elsewhere.test' }), description: /not meant/ },
    { name: 'alg none', token: () => unsigned({ alg: 'none', kid: 'rsa-1' }, { iss: ISSUER, aud: AUDIENCE, exp: now() + 60, client_id: 'x' }), description: /algorithm|malformed/ },
    {
      name: 'HS256 keyed with the RSA public key PEM',
      token: async (k) => sign(new TextEncoder().encode(await exportSPKI(k.rsa.publicKey)) as unknown as CryptoKey, 'HS256', 'rsa-1'),
      description: /algorithm/,
    },
    {
      name: 'HS256 keyed with the RSA public JWK bytes',
      token: (k) => sign(new TextEncoder().encode(JSON.stringify(k.rsa.jwk)) as unknown as CryptoKey, 'HS256', 'rsa-1'),
      description: /algorithm/,
    },
    { name: 'unknown kid', token: (k) => sign(k.stranger.privateKey, 'RS256', 'rsa-unknown'), description: /key is unknown/ },
    { name: 'known kid, wrong key', token: (k) => sign(k.stranger.privateKey, 'RS256', 'rsa-1'), description: /signature/ },
    {
      name: 'tampered signature',
      token: async (k) => {
        const [h, p, s] = (await sign(k.rsa.privateKey, 'RS256', 'rsa-1')).split('.');
        return `${h}.${p}.${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`;
      },
      description: /signature/,
    },
    {
      name: 'tampered payload',
      token: async (k) => {
        const [h, , s] = (await sign(k.rsa.privateKey, 'RS256', 'rsa-1')).split('.');
        const forged = base64url.encode(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, exp: now() + 600, scope: 'system/*.cruds', client_id: 'app' }));
        return `${h}.${forged}.${s}`;
      },
      description: /signature/,
    },
    {
      name: 'no expiry',
      token: (k) => new SignJWT({ client_id: 'x' }).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setIssuer(ISSUER).setAudience(AUDIENCE).sign(k.rsa.privateKey),
      description: /expiry/,
    },
    { name: 'introspection active: false', token: () => 'opaque-inactive', description: /not active/ },
    { name: 'introspection of an unknown token', token: () => 'opaque-unknown', description: /not active/ },
    { name: 'introspected token expired', token: () => 'opaque-expired', description: /expired/ },
    { name: 'introspected token for another audience', token: () => 'opaque-other-audience', description: /not meant/ },
    { name: 'introspected token from another issuer', token: () => 'opaque-other-issuer', description: /issuer/ },
    { name: 'oversized opaque token', token: () => 'a'.repeat(MAX_TOKEN_BYTES + 1), description: /too large/ },
    { name: 'oversized JWT', token: (k) => sign(k.rsa.privateKey, 'RS256', 'rsa-1', { padding: 'x'.repeat(MAX_TOKEN_BYTES) }), description: /too large/ },
    { name: 'empty', token: () => '', description: /no bearer token/ },
    { name: 'Basic scheme', token: () => 'Basic dXNlcjpwYXNz', description: /scheme/ },
  ];
  for (const row of badTokens) {
    test(`rejects: ${row.name}`, async () => {
      const hitsBefore = introspectionHits.length;
      const token = await row.token(keys);
      await assert.rejects(verifier().verify(token), (err: unknown) => {
        assert.ok(err instanceof InvalidTokenError, `expected InvalidTokenError, got ${String(err)}`);
        assert.equal(err.status, 401);
        assert.match(err.message, row.description);
        assert.match(err.wwwAuthenticate, /^Bearer error="invalid_token", error_description="[^"]+"$/);
        assert.equal(err.headers['WWW-Authenticate'], err.wwwAuthenticate);
        assert.equal(err.outcome.issue?.[0].details?.text, err.message);
        // the message never quotes the token
        if (token.length > 8) assert.ok(!err.message.includes(token.slice(0, 8)));
        return true;
      });
      if (/oversized/.test(row.name)) assert.equal(introspectionHits.length, hitsBefore, 'oversized tokens are not sent anywhere');
    });
  }

  test('an active opaque token is introspected once, then served from the cache until exp', async () => {
    const v = verifier();
    const before = introspectionHits.filter((t) => t === 'opaque-active').length;
    const first = await v.verify('opaque-active');
    const second = await v.verify('Bearer opaque-active');
    assert.equal(first.client_id, 'engine');
    assert.equal(second.scope, 'system/*.rs');
    assert.equal(introspectionHits.filter((t) => t === 'opaque-active').length, before + 1);
  });

  test('an opaque token without introspection configured is invalid', async () => {
    const v = createTokenVerifier({ jwksUrl: `${jwksServer.url}/jwks`, issuer: ISSUER, audience: AUDIENCE });
    await rejects(v.verify('opaque-active'), InvalidTokenError);
  });

  test('introspection with wrong client credentials fails closed with 503, not as a valid token', async () => {
    const v = createTokenVerifier({ issuer: ISSUER, audience: AUDIENCE, introspection: { url: `${introspection.url}/introspect`, clientId: 'gateway', clientSecret: 'wrong' } });
    await assert.rejects(v.verify('opaque-active'), (err: unknown) => err instanceof TokenVerificationUnavailableError && err.status === 503);
  });

  test('a JWT with introspection only (no key set) is introspected', async () => {
    const v = createTokenVerifier({ issuer: ISSUER, audience: AUDIENCE, introspection: { url: `${introspection.url}/introspect`, clientId: 'gateway', clientSecret: 's3cret' } });
    const jwt = await sign(keys.rsa.privateKey, 'RS256', 'rsa-1');
    const before = introspectionHits.length;
    await rejects(v.verify(jwt), InvalidTokenError); // the test endpoint does not know it → active: false
    assert.equal(introspectionHits.length, before + 1);
  });

  test('a local key set (embedded issuer) verifies without HTTP', async () => {
    const v = createTokenVerifier({ jwks: { keys: [keys.ec.jwk] }, issuer: ISSUER, audience: AUDIENCE });
    assert.equal((await v.verify(await sign(keys.ec.privateKey, 'ES256', 'ec-1'))).client_id, 'app');
    await rejects(v.verify(await sign(keys.rsa.privateKey, 'RS256', 'rsa-1')), InvalidTokenError);
  });
});

describe('JWKS endpoint outage', () => {
  test('keys fetched before the outage keep verifying; an unknown kid still fails', async () => {
    const keys = await makeKeys();
    let fetches = 0;
    const jwks = await listen((_req, res) => {
      fetches++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [keys.rsa.jwk] }));
    });
    // cache max age 0: every verification wants a refetch, so the outage is really exercised
    const v = createTokenVerifier({ jwksUrl: `${jwks.url}/jwks`, issuer: ISSUER, audience: AUDIENCE, jwksCacheMaxAgeMs: 0 });
    const token = await sign(keys.rsa.privateKey, 'RS256', 'rsa-1');
    assert.equal((await v.verify(token)).client_id, 'app');
    assert.equal(fetches, 1);
    await close(jwks.server);
    assert.equal((await v.verify(token)).client_id, 'app');
    await rejects(v.verify(await sign(keys.stranger.privateKey, 'RS256', 'rsa-2')), InvalidTokenError);
  });

  test('with no keys ever fetched, an unreachable JWKS fails closed with 503', async () => {
    const keys = await makeKeys();
    const gone = await listen((_req, res) => res.end());
    const url = `${gone.url}/jwks`;
    await close(gone.server);
    const v = createTokenVerifier({ jwksUrl: url, issuer: ISSUER, audience: AUDIENCE });
    await rejects(v.verify(await sign(keys.rsa.privateKey, 'RS256', 'rsa-1')), TokenVerificationUnavailableError);
  });
});

describe('bearerToken', () => {
  const table: [string, string | undefined, string | RegExp][] = [
    ['Bearer prefix', 'Bearer abc.def.ghi', 'abc.def.ghi'],
    ['lower-case scheme', 'bearer xyz', 'xyz'],
    ['raw token', 'xyz', 'xyz'],
    ['missing', undefined, /no bearer token/],
    ['scheme only', 'Bearer ', /no bearer token/],
    ['other scheme', 'Basic abc', /scheme/],
  ];
  for (const [name, header, expected] of table) {
    test(name, () => {
      if (typeof expected === 'string') assert.equal(bearerToken(header), expected);
      else assert.throws(() => bearerToken(header), (err: unknown) => err instanceof InvalidTokenError && expected.test(err.message));
    });
  }
});
