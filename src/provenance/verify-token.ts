// Bearer token verification (SPEC §3): JWTs with jose against a JWKS, opaque tokens by RFC 7662
// introspection. Any failure is an InvalidTokenError whose text never quotes the token.
import { createHash } from 'node:crypto';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors as joseErrors,
  jwtVerify,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWSHeaderParameters,
  type JWTPayload,
} from 'jose';
import { LruMap } from '../policy/lru.ts';
import { InvalidTokenError, TokenVerificationUnavailableError } from './errors.ts';

/** The verified claim set, typed loosely: SMART, IUA and this gateway's claims are all optional. */
export interface VerifiedClaims extends JWTPayload {
  scope?: string | string[];
  scp?: string | string[];
  patient?: string;
  fhirUser?: string;
  client_id?: string;
  azp?: string;
  organization?: string;
  purpose_of_use?: unknown;
  extensions?: { ihe_iua?: { purpose_of_use?: unknown; [claim: string]: unknown }; [extension: string]: unknown };
  /** Set by the embedded demo issuer only. */
  dev_issuer?: boolean;
  /** `active` is present on introspection answers. */
  active?: boolean;
}

export interface IntrospectionOptions {
  url: string;
  clientId?: string;
  clientSecret?: string;
  timeoutMs?: number;
}

export interface TokenVerifierOptions {
  jwksUrl?: string;
  /** A local key set (the embedded dev issuer). */
  jwks?: JSONWebKeySet;
  issuer: string;
  audience: string;
  introspection?: IntrospectionOptions;
  clockToleranceSec?: number;
  /** How long fetched keys count as fresh before a refetch; stale keys still serve while the endpoint is down. */
  jwksCacheMaxAgeMs?: number;
  /** Most introspection answers kept. */
  introspectionCacheSize?: number;
}

export interface TokenVerifier {
  verify(bearer: string): Promise<VerifiedClaims>;
}

/** Asymmetric only: `none` and HMAC (e.g. HS256 keyed with a public key's bytes) never pass. */
export const allowedAlgorithms = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

export const MAX_TOKEN_BYTES = 16 * 1024;
const INTROSPECTION_TIMEOUT_MS = 3_000;
const INTROSPECTION_CACHE_SIZE = 10_000;
/** Opaque tokens without `exp` are re-asked after this long. */
const INTROSPECTION_CACHE_DEFAULT_SEC = 60;

type KeyResolver = (header: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<CryptoKey>;

function keyResolver(opts: TokenVerifierOptions): KeyResolver | undefined {
  if (opts.jwks) {
    const local = createLocalJWKSet(opts.jwks);
    return (header, token) => local(header, token);
  }
  if (!opts.jwksUrl) return undefined;
  const remote = createRemoteJWKSet(new URL(opts.jwksUrl), {
    timeoutDuration: 5_000,
    ...(opts.jwksCacheMaxAgeMs !== undefined ? { cacheMaxAge: opts.jwksCacheMaxAgeMs } : {}),
  });
  let stale: { jwks: JSONWebKeySet; resolve: KeyResolver } | undefined;
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (err) {
      if (err instanceof joseErrors.JWKSNoMatchingKey || err instanceof joseErrors.JWKSMultipleMatchingKeys) throw err;
      // the endpoint is unreachable: keys fetched earlier keep working (an unknown kid still fails)
      const cached = remote.jwks();
      if (!cached) throw new TokenVerificationUnavailableError('the token signing keys cannot be fetched');
      if (stale?.jwks !== cached) stale = { jwks: cached, resolve: createLocalJWKSet(cached) };
      return stale.resolve(header, token);
    }
  };
}

/** A safe, fixed description per failure kind; jose's messages are not echoed. */
function describeJoseFailure(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'the token has expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'nbf':
        return 'the token is not yet valid';
      case 'iss':
        return 'the token was issued by an untrusted issuer';
      case 'aud':
        return 'the token is not meant for this server';
      default:
        return `the token claim ${err.claim.replace(/[^A-Za-z0-9_]/g, '')} is invalid`;
    }
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed || err instanceof joseErrors.JOSENotSupported) return 'the token signing algorithm is not accepted';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'the token signing key is unknown';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'the token signature is invalid';
  return 'the token is malformed';
}

class IntrospectionCache {
  readonly #entries = new Map<string, { claims: VerifiedClaims; until: number }>();
  readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  get(key: string, nowSec: number): VerifiedClaims | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    if (entry.until <= nowSec) return undefined;
    this.#entries.set(key, entry); // most recently used goes last
    return entry.claims;
  }
  set(key: string, claims: VerifiedClaims, until: number): void {
    this.#entries.delete(key);
    this.#entries.set(key, { claims, until });
    while (this.#entries.size > this.max) this.#entries.delete(this.#entries.keys().next().value as string);
  }
}

function audienceIncludes(aud: unknown, audience: string): boolean {
  return aud === audience || (Array.isArray(aud) && aud.includes(audience));
}

function introspector(opts: TokenVerifierOptions): ((token: string) => Promise<VerifiedClaims>) | undefined {
  const config = opts.introspection;
  if (!config) return undefined;
  const cache = new IntrospectionCache(opts.introspectionCacheSize ?? INTROSPECTION_CACHE_SIZE);
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (config.clientId) {
    const basic = `${encodeURIComponent(config.clientId)}:${encodeURIComponent(config.clientSecret ?? '')}`;
    headers.authorization = `Basic ${Buffer.from(basic).toString('base64')}`;
  }
  const tolerance = opts.clockToleranceSec ?? 30;
  return async (token) => {
    const now = Math.floor(Date.now() / 1000);
    // keyed by a digest so the cache never holds bearer tokens themselves
    const key = createHash('sha256').update(token).digest('base64url');
    const cached = cache.get(key, now);
    if (cached) return cached;
    let answer: unknown;
    try {
      const response = await fetch(config.url, {
        method: 'POST',
        headers,
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        signal: AbortSignal.timeout(config.timeoutMs ?? INTROSPECTION_TIMEOUT_MS),
        redirect: 'error',
      });
      if (!response.ok) throw new Error(`introspection answered ${response.status}`);
      answer = await response.json();
    } catch {
      throw new TokenVerificationUnavailableError('the token introspection service is unavailable');
    }
    if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) {
      throw new TokenVerificationUnavailableError('the token introspection service gave an unreadable answer');
    }
    const claims = answer as VerifiedClaims;
    if (claims.active !== true) throw new InvalidTokenError('the token is not active');
    if (typeof claims.exp === 'number' && claims.exp + tolerance <= now) throw new InvalidTokenError('the token has expired');
    if (typeof claims.nbf === 'number' && claims.nbf - tolerance > now) throw new InvalidTokenError('the token is not yet valid');
    if (claims.iss !== undefined && claims.iss !== opts.issuer) throw new InvalidTokenError('the token was issued by an untrusted issuer');
    if (claims.aud !== undefined && !audienceIncludes(claims.aud, opts.audience)) throw new InvalidTokenError('the token is not meant for this server');
    const frozen = Object.freeze({ ...claims });
    cache.set(key, frozen, typeof claims.exp === 'number' ? claims.exp : now + INTROSPECTION_CACHE_DEFAULT_SEC);
    return frozen;
  };
}

/** Strips an optional `Bearer ` prefix; a missing or empty credential is an invalid token. */
export function bearerToken(authorization: string | undefined): string {
  const match = /^\s*Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  if (match) return match[1];
  if (!authorization || /^\s*Bearer\s*$/i.test(authorization)) throw new InvalidTokenError('no bearer token');
  if (/^\s*\S+\s+\S/.test(authorization)) throw new InvalidTokenError('the authorization scheme must be Bearer');
  return authorization.trim();
}

export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  const resolveKey = keyResolver(opts);
  const introspect = introspector(opts);
  const verifyOptions = {
    issuer: opts.issuer,
    audience: opts.audience,
    algorithms: allowedAlgorithms,
    clockTolerance: opts.clockToleranceSec ?? 30,
  };
  // A client sends the same token on every request of a session: a verified signature is remembered
  // until the token expires (at most five minutes, so a key withdrawn from the JWKS stops working soon).
  const verified = new LruMap<string, { claims: VerifiedClaims; until: number }>(10_000);
  return {
    async verify(bearer: string): Promise<VerifiedClaims> {
      if (Buffer.byteLength(bearer) > MAX_TOKEN_BYTES + 16) throw new InvalidTokenError('the token is too large');
      const token = bearerToken(bearer);
      if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) throw new InvalidTokenError('the token is too large');
      const isJwt = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token);
      if (isJwt && resolveKey) {
        const remembered = verified.get(token);
        const nowMs = Date.now();
        if (remembered && nowMs < remembered.until) return remembered.claims;
        try {
          const { payload } = await jwtVerify<VerifiedClaims>(token, resolveKey, verifyOptions);
          if (payload.exp === undefined) throw new InvalidTokenError('the token has no expiry');
          const claims = Object.freeze(payload);
          if (payload.nbf === undefined || payload.nbf * 1000 <= nowMs) verified.set(token, { claims, until: Math.min(payload.exp * 1000, nowMs + 300_000) });
          return claims;
        } catch (err) {
          if (err instanceof InvalidTokenError || err instanceof TokenVerificationUnavailableError) throw err;
          throw new InvalidTokenError(describeJoseFailure(err));
        }
      }
      if (introspect) return introspect(token);
      throw new InvalidTokenError(isJwt ? 'the token cannot be verified' : 'the token is not a JWT');
    },
  };
}
