// End-to-end harness: the embedded upstream over HTTP, a real ES256 issuer (jose), and the gateway on
// loopback with a fresh audit journal. Tests talk to it with fetch and real FHIR clients.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type JSONWebKeySet, type JWTPayload } from 'jose';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { createGateway, type Gateway } from '../../src/app.ts';
import { policySchema } from '../../src/config/policy.ts';
import { settingsSchema, type Settings } from '../../src/config/settings.ts';
import { startEmbeddedUpstream, type EmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { V3_ACT_REASON } from '../../src/fhir/systems.ts';
import { createLogger } from '../../src/ops/logger.ts';

export const ISSUER = 'https://issuer.test';

export interface Harness {
  readonly gateway: Gateway;
  readonly upstream: EmbeddedUpstream;
  /** Gateway FHIR base, e.g. http://127.0.0.1:PORT/fhir */
  readonly base: string;
  readonly auditDir: string;
  token(claims: JWTPayload, opts?: { expiresIn?: string }): Promise<string>;
  /** GET (or other method) against the gateway; returns status, headers and parsed JSON body. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- every test reads the JSON it expects; unknown would need a cast in hundreds of places
  request(path: string, opts?: { token?: string; method?: string; body?: unknown; headers?: Record<string, string> }): Promise<{ status: number; headers: Headers; body: any; text: string }>;
  /** Writes directly to the upstream (behind the gateway). */
  put(resource: Resource): Promise<void>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  readonly resources?: Resource[];
  readonly bundles?: Bundle[];
  readonly policy?: Record<string, unknown>;
  readonly settings?: Partial<Record<string, string>>;
  readonly now?: () => Date;
  /** Reuse an upstream (two gateways in front of one server). */
  readonly upstream?: EmbeddedUpstream;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((ok) => server.close(() => ok()));
  return port;
}

let keys: Promise<{ privateKey: CryptoKey; jwks: JSONWebKeySet }> | undefined;
function issuerKeys() {
  keys ??= (async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(publicKey);
    return { privateKey: privateKey as CryptoKey, jwks: { keys: [{ ...jwk, kid: 'test-key', alg: 'ES256', use: 'sig' }] } };
  })();
  return keys;
}

export const pou = (code: string) => ({ ihe_iua: { purpose_of_use: { system: V3_ACT_REASON, code } } });

export async function startHarness(opts: HarnessOptions = {}): Promise<Harness> {
  const upstream = opts.upstream ?? (await startEmbeddedUpstream({ resources: opts.resources ?? [], bundles: opts.bundles ?? [] }));
  const auditDir = await mkdtemp(join(tmpdir(), 'dg-audit-'));
  const { privateKey, jwks } = await issuerKeys();
  const parsed = settingsSchema.parse({ PORT: '0', UPSTREAM_URL: upstream.url, AUDIT_DIR: auditDir, LOG_LEVEL: 'silent', AUDIT_FORWARD: 'false', ...opts.settings });
  const settings: Settings = { ...parsed, policy: policySchema.parse(opts.policy ?? {}) };
  // Links and the token audience name the gateway's own URL, so its port is chosen before it starts.
  const port = await freePort();
  let started: Gateway | undefined;
  try {
    started = await createGateway({
      settings: { ...settings, AUTH_ISSUER: ISSUER },
      embedded: { upstreamUrl: upstream.url, jwks, issuer: ISSUER },
      logger: createLogger('silent'),
      now: opts.now,
      publicBaseUrl: `http://127.0.0.1:${port}`,
    });
    await started.listen(port, '127.0.0.1');
  } catch (err) {
    // A gateway that does not start (a test of start-up failure) leaves no journal directory or upstream behind.
    await started?.close();
    if (!opts.upstream) await upstream.close();
    await rm(auditDir, { recursive: true, force: true });
    throw err;
  }
  const gateway = started;
  const holder = { base: gateway.fhirBase };
  const audience = gateway.fhirBase;
  return {
    gateway,
    upstream,
    base: holder.base,
    auditDir,
    async token(claims, tokenOpts) {
      return new SignJWT({ ...claims })
        .setProtectedHeader({ alg: 'ES256', kid: 'test-key' })
        .setIssuer(ISSUER)
        .setAudience(audience)
        .setIssuedAt()
        .setExpirationTime(tokenOpts?.expiresIn ?? '10m')
        .sign(privateKey);
    },
    async request(path, req = {}) {
      const headers: Record<string, string> = { accept: 'application/fhir+json', ...req.headers };
      if (req.token) headers.authorization = `Bearer ${req.token}`;
      let body: string | undefined;
      if (req.body !== undefined) {
        body = typeof req.body === 'string' ? req.body : JSON.stringify(req.body);
        headers['content-type'] ??= 'application/fhir+json';
      }
      const target = /^https?:/.test(path) ? path : `${holder.base}/${path.replace(/^\//, '')}`;
      const res = await fetch(target, { method: req.method ?? 'GET', headers, body });
      const text = await res.text();
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see request() above
      let parsedBody: any;
      try {
        parsedBody = text ? JSON.parse(text) : undefined;
      } catch {
        parsedBody = undefined;
      }
      return { status: res.status, headers: res.headers, body: parsedBody, text };
    },
    async put(resource) {
      await upstream.repo.updateResource(resource as Resource & { id: string });
    },
    async close() {
      await gateway.close();
      if (!opts.upstream) await upstream.close();
      await rm(auditDir, { recursive: true, force: true });
    },
  };
}
