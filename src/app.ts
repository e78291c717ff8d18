// Assembly: settings → upstream (embedded or real) → token verifier → policy store → audit → express app.
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import express from 'express';
import type { Bundle } from '@medplum/fhirtypes';
import { buildAuditEvents } from './audit/build.ts';
import { AuditForwarder } from './audit/forwarder.ts';
import { AuditJournal } from './audit/journal.ts';
import type { Settings } from './config/settings.ts';
import { consoleRouter } from './console/index.ts';
import { CursorCodec } from './enforce/cursor.ts';
import { fhirHandler, isFhirPath, sendErrorOutcome, type AuditSink } from './enforce/pipeline.ts';
import type { SmartConfiguration } from './enforce/capabilities.ts';
import { loadFhirDefinitions } from './fhir/definitions.ts';
import { labelerFromPolicy } from './label/index.ts';
import { operationOutcome } from './fhir/outcome.ts';
import { createLogger, type Logger } from './ops/logger.ts';
import { createMetrics, type GatewayMetrics } from './ops/metrics.ts';
import { opsRouter } from './ops/routes.ts';
import { PolicyStore } from './policy/index.ts';
import { CompiledPolicyCache } from './policy/compiled-cache.ts';
import { createTokenVerifier, type TokenVerifier } from './provenance/verify-token.ts';
import { createUpstreamClient, upstreamResource, type UpstreamClient } from './upstream/index.ts';
import { PageBudget } from './upstream/page-budget.ts';

export interface EmbeddedParts {
  /** FHIR base of the embedded upstream. */
  readonly upstreamUrl: string;
  /** Trusted key set and issuer of the dev token issuer. */
  readonly jwks: import('jose').JSONWebKeySet;
  readonly issuer: string;
  /** Extra routes the demo serves (the dev issuer's JWKS and token endpoint). */
  readonly routes?: express.Router;
}

export interface Gateway {
  /** The one request listener: `/fhir` on node:http (enforce/pipeline.ts), everything else on express. */
  readonly handler: RequestListener;
  readonly upstream: UpstreamClient;
  readonly store: PolicyStore;
  readonly journal: AuditJournal;
  readonly forwarder?: AuditForwarder;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  readonly fhirBase: string;
  /** Starts listening; resolves with the bound URL. */
  listen(port?: number, host?: string): Promise<{ server: Server; url: string }>;
  /** Drains requests, stops polling and forwarding, flushes and closes the journal. */
  close(): Promise<void>;
}

export interface GatewayOptions {
  readonly settings: Settings;
  readonly embedded?: EmbeddedParts;
  readonly logger?: Logger;
  /** Clock for decisions (tests pin it). */
  readonly now?: () => Date;
  /** Public base when the port is only known after listen (tests bind port 0). */
  readonly publicBaseUrl?: string;
}

export async function createGateway(opts: GatewayOptions): Promise<Gateway> {
  loadFhirDefinitions();
  const { settings } = opts;
  // SPEC §4.7: a rule file that cannot be loaded stops start-up, naming the file.
  const labeler = labelerFromPolicy(settings.policy.labeling);
  const logger = opts.logger ?? createLogger(settings.LOG_LEVEL);
  const metrics = createMetrics();
  const publicBaseUrl = (opts.publicBaseUrl ?? settings.PUBLIC_BASE_URL ?? `http://${settings.HOST}:${settings.PORT}`).replace(/\/+$/, '');
  const fhirBase = `${publicBaseUrl}/fhir`;
  const upstreamUrl = settings.UPSTREAM_URL ?? opts.embedded?.upstreamUrl;
  if (!upstreamUrl) throw new Error('no upstream: set UPSTREAM_URL or run the embedded demo');
  const upstream = createUpstreamClient({
    baseUrl: upstreamUrl,
    bearerToken: settings.UPSTREAM_BEARER_TOKEN,
    timeoutMs: settings.UPSTREAM_TIMEOUT_MS,
    maxBytes: settings.UPSTREAM_MAX_BYTES,
  });

  const issuer = settings.AUTH_ISSUER ?? opts.embedded?.issuer;
  if (!issuer) throw new Error('AUTH_ISSUER is required when fronting a real upstream');
  if (!settings.AUTH_JWKS_URL && !opts.embedded && !settings.AUTH_INTROSPECTION_URL) throw new Error('AUTH_JWKS_URL or AUTH_INTROSPECTION_URL is required');
  const verifier: TokenVerifier = createTokenVerifier({
    jwksUrl: settings.AUTH_JWKS_URL,
    jwks: settings.AUTH_JWKS_URL ? undefined : opts.embedded?.jwks,
    issuer,
    audience: settings.AUTH_AUDIENCE ?? fhirBase,
    introspection: settings.AUTH_INTROSPECTION_URL
      ? { url: settings.AUTH_INTROSPECTION_URL, clientId: settings.AUTH_INTROSPECTION_CLIENT_ID, clientSecret: settings.AUTH_INTROSPECTION_CLIENT_SECRET }
      : undefined,
  });

  const store = new PolicyStore({
    upstream,
    policy: settings.policy,
    gatewayBase: fhirBase,
    observer: {
      onCacheHit: () => metrics.policyCache.inc({ result: 'hit' }),
      onCacheMiss: () => metrics.policyCache.inc({ result: 'miss' }),
    },
  });
  store.startPolling();

  const auditDir = resolve(settings.AUDIT_DIR);
  await mkdir(auditDir, { recursive: true });
  const journal = await AuditJournal.open(auditDir);
  const auditSource = { gatewayDevice: 'Device/disclosure-gateway', site: publicBaseUrl, address: new URL(publicBaseUrl).host };
  const audit: AuditSink = { record: (record) => journal.append(buildAuditEvents(record, auditSource)) };
  let forwarder: AuditForwarder | undefined;
  if (settings.AUDIT_FORWARD) {
    forwarder = new AuditForwarder({
      dir: auditDir,
      journal,
      logger,
      postBatch: async (batch: Buffer) => {
        const response = await upstream.request({ method: 'POST', path: '', headers: { 'content-type': 'application/fhir+json' }, body: batch, strict: true, expectJson: true });
        if (response.status >= 400) throw new Error(`upstream refused the audit batch (${response.status})`);
        const answer = upstreamResource<Bundle>(response);
        if (answer?.resourceType !== 'Bundle') throw new Error('upstream answered the audit batch with no Bundle');
        return answer;
      },
    });
    forwarder.start();
  }

  const smart: SmartConfiguration = {
    issuer,
    jwks_uri: settings.AUTH_JWKS_URL ?? (opts.embedded ? `${publicBaseUrl}/dev-issuer/jwks.json` : undefined),
    token_endpoint: opts.embedded ? `${publicBaseUrl}/dev-issuer/token` : undefined,
    introspection_endpoint: settings.AUTH_INTROSPECTION_URL,
  };

  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'extended');
  app.use(opsRouter({ upstream, journal, metrics, forwarder }));
  if (opts.embedded?.routes) app.use('/dev-issuer', opts.embedded.routes);
  app.use(consoleRouter({ auditDir, fhirBase }));
  const fhir = fhirHandler({
    policy: settings.policy,
    fhirBase,
    upstream,
    store,
    compiledPolicies: new CompiledPolicyCache({ policy: settings.policy }),
    labeler,
    cursors: new CursorCodec(settings.CURSOR_SECRET),
    pageBudget: new PageBudget(settings.UPSTREAM_PAGE_BUDGET_BYTES, () => metrics.pageBudgetWaits.inc()),
    metrics,
    logger,
    now: opts.now ?? (() => new Date()),
    verifier,
    audit,
    smart,
  });
  // Anything outside the gateway's paths is a FHIR-shaped 404 rather than express's HTML page.
  app.use((_req, res) => {
    res.status(404).type('application/fhir+json').send(JSON.stringify(operationOutcome('not-found', 'no such endpoint')));
  });
  app.use((err: unknown, _req: express.Request, res: express.Response, next: (err?: unknown) => void) => (res.headersSent ? next(err) : sendErrorOutcome(res, err)));
  const handler: RequestListener = (req, res) => (isFhirPath(req.url) ? fhir(req, res) : app(req, res));

  const servers: Server[] = [];
  return {
    handler,
    upstream,
    store,
    journal,
    forwarder,
    metrics,
    logger,
    fhirBase,
    async listen(port = settings.PORT, host = settings.HOST) {
      // Node's own parser errors (oversized headers, malformed request lines) still answer an OperationOutcome.
      const server = createServer({ maxHeaderSize: 16 * 1024 }, handler);
      server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
        if (!socket.writable) return socket.destroy();
        const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
        const body = JSON.stringify(operationOutcome(status === 431 ? 'too-costly' : 'invalid', status === 431 ? 'request headers too large' : 'malformed request'));
        socket.end(`HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\nContent-Type: application/fhir+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      });
      servers.push(server);
      await new Promise<void>((ok, fail) => server.once('error', fail).listen(port, host, () => ok()));
      const address = server.address() as AddressInfo;
      return { server, url: `http://${host.includes(':') ? `[${host}]` : host}:${address.port}` };
    },
    async close() {
      await Promise.all(servers.map((s) => new Promise<void>((ok) => {
        s.close(() => ok());
        s.closeIdleConnections?.();
      })));
      await store.stopPolling();
      await forwarder?.stop();
      await journal.close();
      await upstream.close();
    },
  };
}
