// Shared setup of the HTTP benchmarks: the embedded upstream loaded with Synthea + the bench load, the
// canned upstream in front of it, and an ES256 issuer whose tokens the gateway trusts.
import { execFile } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { exportJWK, generateKeyPair, SignJWT, type JSONWebKeySet } from 'jose';
import type { Bundle, Observation } from '@medplum/fhirtypes';
import { loadSyntheaBundles, startEmbeddedUpstream, type EmbeddedUpstream } from '../src/embedded/upstream/index.ts';
import { V3_ACT_REASON } from '../src/fhir/systems.ts';
import { benchLoad, REQUESTER, type BenchLoad } from './data.ts';
import { startChild, wrkAvailable, type Child } from './load.ts';

export const ISSUER = 'https://issuer.bench';

export interface Issuer {
  readonly jwks: JSONWebKeySet;
  /** A token for `audience` (the gateway's FHIR base). */
  token(audience: string, claims: Record<string, unknown>): Promise<string>;
}

export async function createIssuer(): Promise<Issuer> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(publicKey);
  return {
    jwks: { keys: [{ ...jwk, kid: 'bench', alg: 'ES256', use: 'sig' }] },
    token: (audience, claims) =>
      new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'bench' }).setIssuer(ISSUER).setAudience(audience).setIssuedAt().setExpirationTime('1h').sign(privateKey),
  };
}

/** The requester of every gateway cell: Dr A, user scopes; `btg` adds break-the-glass (scope + purpose BTG). */
export function requesterClaims(kind: 'treat' | 'btg'): Record<string, unknown> {
  const scope = kind === 'btg' ? 'user/Observation.rs user/Patient.rs btg' : 'user/Observation.rs user/Patient.rs';
  return {
    sub: 'bench-dr-a',
    client_id: 'bench-client',
    fhirUser: REQUESTER,
    scope,
    ...(kind === 'btg' ? { extensions: { ihe_iua: { purpose_of_use: { system: V3_ACT_REASON, code: 'BTG' } } } } : {}),
  };
}

export interface BenchWorld {
  readonly load: BenchLoad;
  readonly upstream: EmbeddedUpstream;
  readonly canned: Child;
  /** FHIR base of the canned upstream. */
  readonly cannedBase: string;
  readonly issuer: Issuer;
  close(): Promise<void>;
}

export async function ensureWrk(): Promise<void> {
  if (await wrkAvailable()) return;
  const script = fileURLToPath(new URL('../scripts/install-wrk.sh', import.meta.url));
  console.log('wrk not found: running scripts/install-wrk.sh');
  await promisify(execFile)('sh', [script]);
  if (!(await wrkAvailable())) throw new Error('wrk is required: run scripts/install-wrk.sh');
}

export async function startWorld(): Promise<BenchWorld> {
  const bundles: Bundle[] = loadSyntheaBundles();
  const templates = bundles.flatMap((b) => (b.entry ?? []).flatMap((e) => (e.resource?.resourceType === 'Observation' ? [e.resource as Observation] : [])));
  const load = benchLoad(templates);
  const started = performance.now();
  const upstream = await startEmbeddedUpstream({ resources: load.resources, bundles });
  console.log(`embedded upstream: ${bundles.length} Synthea bundles + ${load.resources.length} bench resources in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const canned = await startChild({ role: 'canned', origin: upstream.url });
  const issuer = await createIssuer();
  return {
    load,
    upstream,
    canned,
    cannedBase: `${canned.url}/fhir`,
    issuer,
    async close() {
      await canned.stop();
      await upstream.close();
    },
  };
}

export function machine(): string {
  const cpu = cpus();
  return `${cpu[0]?.model ?? 'unknown CPU'} × ${cpu.length}, ${(totalmem() / 2 ** 30).toFixed(0)} GB, Node ${process.version}, ${new Date().toISOString().slice(0, 16)}Z`;
}

export const fmt = {
  n: (v: number, digits = 0): string => (Number.isFinite(v) ? v.toFixed(digits) : '—'),
};

export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]?.length ?? 0)));
  const line = (cells: readonly string[]): string => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`;
  return [line(header), `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`, ...rows.map(line)].join('\n');
}
