// Bench-only assembly of the gateway's request path (the same parts createGateway wires in src/app.ts)
// with a choice of audit sink: the real journal (BALP events, group-committed fsync) or a sink that does
// nothing. Only `npm run bench -- audit` uses it, to price the journal; production has no such switch.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JSONWebKeySet } from 'jose';
import { buildAuditEvents } from '../src/audit/build.ts';
import { AuditJournal } from '../src/audit/journal.ts';
import { policySchema } from '../src/config/policy.ts';
import { CursorCodec } from '../src/enforce/cursor.ts';
import { fhirHandler, type AuditSink } from '../src/enforce/pipeline.ts';
import { loadFhirDefinitions } from '../src/fhir/definitions.ts';
import { labelerFromPolicy } from '../src/label/index.ts';
import { createLogger } from '../src/ops/logger.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { PolicyStore } from '../src/policy/index.ts';
import { CompiledPolicyCache } from '../src/policy/compiled-cache.ts';
import { createTokenVerifier } from '../src/provenance/verify-token.ts';
import { createUpstreamClient } from '../src/upstream/index.ts';
import { DEFAULT_PAGE_BUDGET_BYTES, PageBudget } from '../src/upstream/page-budget.ts';

export interface BareGatewayOptions {
  readonly upstreamUrl: string;
  readonly jwks: JSONWebKeySet;
  readonly issuer: string;
  readonly audit: 'journal' | 'none';
}

export interface BareGateway {
  readonly fhirBase: string;
  /** Journal commit counters (undefined without a journal). */
  stats(): { appends: number; commits: number } | undefined;
  close(): Promise<void>;
}

export async function startBareGateway(opts: BareGatewayOptions): Promise<BareGateway> {
  loadFhirDefinitions();
  const policy = policySchema.parse({});
  const server: Server = createServer();
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  const publicBaseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const fhirBase = `${publicBaseUrl}/fhir`;
  const upstream = createUpstreamClient({ baseUrl: opts.upstreamUrl });
  const store = new PolicyStore({ upstream, policy });
  const auditDir = await mkdtemp(join(tmpdir(), 'dg-bench-journal-'));
  const journal = opts.audit === 'journal' ? await AuditJournal.open(auditDir) : undefined;
  const audit: AuditSink = journal
    ? { record: (record) => journal.append(buildAuditEvents(record, { gatewayDevice: 'Device/disclosure-gateway', site: publicBaseUrl })) }
    : { record: async () => undefined };
  const fhir = fhirHandler({
    policy,
    fhirBase,
    upstream,
    store,
    compiledPolicies: new CompiledPolicyCache({ policy }),
    labeler: labelerFromPolicy(policy.labeling),
    cursors: new CursorCodec(),
    pageBudget: new PageBudget(DEFAULT_PAGE_BUDGET_BYTES),
    metrics: createMetrics(),
    logger: createLogger('silent'),
    now: () => new Date(),
    verifier: createTokenVerifier({ jwks: opts.jwks, issuer: opts.issuer, audience: fhirBase }),
    audit,
    smart: { issuer: opts.issuer },
  });
  server.on('request', fhir);
  return {
    fhirBase,
    stats: () => (journal ? journal.stats() : undefined),
    async close() {
      await new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      });
      await journal?.close();
      await upstream.close();
      await rm(auditDir, { recursive: true, force: true });
    },
  };
}
