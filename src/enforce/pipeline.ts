// The request's one straight line (ARCHITECTURE): provenance → enforce → upstream → policy → decide →
// shape → audit (durable) → HTTP. Nothing is sent before its audit events are on disk.
import { randomUUID } from 'node:crypto';
import express, { type Request, type Response, type Router } from 'express';
import type { Resource } from '@medplum/fhirtypes';
import type { DisclosureRecord } from '../audit/record.ts';
import { GatewayError, operationOutcome } from '../fhir/outcome.ts';
import type { RequestContext } from '../provenance/context.ts';
import { buildRequestContext } from '../provenance/build-context.ts';
import { categoryRequestsBreakGlass } from '../provenance/break-glass.ts';
import { patientsNamedBy } from '../provenance/confine.ts';
import { bearerToken, type TokenVerifier } from '../provenance/verify-token.ts';
import { capabilityStatement, smartConfigurationDocument, type SmartConfiguration } from './capabilities.ts';
import { DisclosureSession } from './disclose.ts';
import type { Exchange, GatewayDeps, Reply } from './exchange.ts';
import { dispatch } from './dispatch.ts';
import { securityLabel } from './operations.ts';
import { bulkRecord, sendDecidedStream } from './export.ts';
import { auditInteraction, parseFhirRoute, type FhirRoute } from './route.ts';
import { gatewayAuthored } from './reply.ts';
import { isUpstreamError, upstreamFailure } from '../upstream/index.ts';

export interface AuditSink {
  /** Resolves once the request's events are durable; rejects when they cannot be written. */
  record(record: DisclosureRecord): Promise<void>;
}

export interface PipelineDeps extends GatewayDeps {
  readonly verifier: TokenVerifier;
  readonly audit: AuditSink;
  readonly smart: SmartConfiguration;
  /** Largest request body accepted. */
  readonly maxBodyBytes?: number;
}

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;
const methodOverrideHeaders = ['x-http-method-override', 'x-http-method', 'x-method-override'];
const fhirJson = 'application/fhir+json; charset=utf-8';

function acceptedRequestId(value: string | undefined): string {
  return value && requestIdPattern.test(value) ? value : randomUUID();
}

/** Only JSON is inspected, so only JSON is served (SPEC §5). */
function checkFormat(req: Request): void {
  const format = req.query._format;
  const formats = Array.isArray(format) ? format : format === undefined ? [] : [format];
  for (const f of formats) {
    if (typeof f !== 'string' || !/^(json|application\/json|application\/fhir\+json)$/i.test(f.split(';')[0].trim())) {
      throw new GatewayError(406, 'not-supported', 'only JSON is served (application/fhir+json)');
    }
  }
  const accept = req.get('accept');
  // Bulk Data files are NDJSON (SPEC §5.1), each line decided like any JSON resource.
  const ndjson = rawPathOf(req).startsWith('/_export/file/') ? '|application\\/(fhir\\+)?ndjson' : '';
  if (accept && !new RegExp(`(^|,|\\s)(\\*\\/\\*|application\\/\\*|application\\/(fhir\\+)?json${ndjson})`, 'i').test(accept)) {
    throw new GatewayError(406, 'not-supported', 'only JSON is served (application/fhir+json)');
  }
}

function rawPathOf(req: Request): string {
  const url = req.originalUrl;
  const path = url.split('?')[0];
  return path.replace(/^\/fhir/, '') || '/';
}

function rawQueryOf(req: Request): string {
  const url = req.originalUrl;
  const at = url.indexOf('?');
  return at === -1 ? '' : url.slice(at + 1);
}

function errorReply(err: unknown, deps: PipelineDeps, requestId: string): Reply & { desc: string } {
  if (err instanceof GatewayError) return { status: err.status, body: gatewayAuthored(err.outcome), headers: err.headers, desc: err.message };
  if (isUpstreamError(err)) {
    // Upstream failures carry their 502/503/504 (SPEC §5: fail closed).
    const failure = upstreamFailure(err, { failed: 'the upstream server failed' });
    return { status: failure.status, body: gatewayAuthored(failure.outcome), desc: failure.message };
  }
  deps.logger.error({ requestId, err: { name: (err as Error)?.name, message: (err as Error)?.message, stack: (err as Error)?.stack } }, 'request failed');
  return { status: 500, body: gatewayAuthored(operationOutcome('exception', 'the gateway failed to process the request; nothing was released')), desc: 'internal error' };
}

/** The query of a search: URL parameters, plus a form body for `POST _search`. */
function searchParamsOf(req: Request): URLSearchParams {
  const params = new URLSearchParams(rawQueryOf(req));
  const form = req.is('application/x-www-form-urlencoded') && Buffer.isBuffer(req.body) ? new URLSearchParams(req.body.toString('utf8')) : undefined;
  for (const [name, value] of form ?? []) params.append(name, value);
  return params;
}

/** The patients a request names by its path and parameters, whatever happened to it. */
function patientsNamedByRoute(route: FhirRoute, req: Request): string[] {
  if ('id' in route && route.id !== undefined && route.resourceType === 'Patient') return [route.id];
  switch (route.interaction) {
    case 'search-compartment':
      return patientsNamedBy(route.resourceType, searchParamsOf(req), { type: 'Patient', id: route.compartmentId }).ids;
    case 'search-type':
    case 'history-type':
      return patientsNamedBy(route.resourceType, searchParamsOf(req)).ids;
    case 'search-system':
    case 'history-system':
      return patientsNamedBy(undefined, searchParamsOf(req)).ids;
    default:
      return [];
  }
}

/**
 * SPEC §6: the audit names the patients the request was about; a request refused before any data was
 * read is filed under the patient(s) it named, so that an attempt on P2's record is in P2's accounting.
 */
function requestedPatients(exchange: Exchange | undefined, route: FhirRoute | undefined, req: Request, status: number): string[] {
  const named = new Set(exchange?.namedPatients);
  if (status < 400 || route === undefined) return [...named];
  try {
    for (const id of patientsNamedByRoute(route, req)) named.add(id);
  } catch {
    // An unparseable query names no one; the refusal is still recorded.
  }
  return [...named];
}

function auditedQuery(req: Request): string {
  // The cursor is opaque and long; the audit keeps the path and the rest of the query.
  return req.originalUrl.replace(/([?&]_?cursor=)[^&]*/, '$1…');
}

export function fhirRouter(deps: PipelineDeps): Router {
  const router = express.Router();
  const body = express.raw({ type: () => true, limit: deps.maxBodyBytes ?? 16 * 1024 * 1024 });

  router.all(['/fhir', '/fhir/*path'], body, async (req: Request, res: Response) => {
    const recorded = new Date().toISOString();
    const requestId = acceptedRequestId(req.get('x-request-id'));
    res.setHeader('X-Request-Id', requestId);
    let route: FhirRoute | undefined;
    let ctx: RequestContext | undefined;
    let verifiedClient: string | undefined;
    let exchange: Exchange | undefined;
    let reply: Reply & { desc?: string };
    try {
      checkFormat(req);
      if (methodOverrideHeaders.some((h) => req.get(h) !== undefined)) throw new GatewayError(400, 'not-supported', 'method override headers are not accepted');
      route = parseFhirRoute(req.method, rawPathOf(req));
      if (route.interaction === 'capabilities') {
        return send(res, req, { status: 200, body: gatewayAuthored(await capabilityStatement(deps.upstream, deps.fhirBase, deps.smart, requestId)) });
      }
      if (route.interaction === 'smart-configuration') {
        res.status(200).type('application/json').json(smartConfigurationDocument(deps.smart));
        return;
      }
      const claims = await deps.verifier.verify(bearerToken(req.get('authorization')));
      // Known from the verified token even if the context below is refused (no purpose of use).
      verifiedClient = [claims.client_id, claims.azp, claims.sub].find((c): c is string => typeof c === 'string' && c.length > 0);
      // SPEC §4.7: labeling discloses nothing it was not given, so any authenticated client may ask, purpose or not.
      if (route.interaction === 'operation' && route.name === '$security-label' && route.resourceType === undefined && req.method === 'POST') {
        reply = securityLabel(deps.labeler, Buffer.isBuffer(req.body) ? req.body : undefined);
      } else {
        ctx = buildRequestContext(claims, { requestId, categoryHeader: req.headers.category }, deps.policy, deps.store.localBases);
        const requester = await deps.store.resolveRequester(ctx);
        const session = new DisclosureSession({ policies: deps.store, policy: deps.policy, now: deps.now(), compiledPolicies: deps.compiledPolicies, labeler: deps.labeler }, ctx, requester);
        const rawQuery = rawQueryOf(req);
        exchange = {
          deps,
          ctx,
          requester,
          session,
          query: new URLSearchParams(rawQuery),
          rawQuery,
          headers: req.headers,
          body: Buffer.isBuffer(req.body) && req.body.length > 0 ? req.body : undefined,
          namedPatients: new Set(),
        };
        reply = await dispatch(exchange, route, req.method);
      }
    } catch (err) {
      reply = errorReply(err, deps, requestId);
    }

    const record: DisclosureRecord = {
      requestId,
      recorded,
      interaction: route ? auditInteraction(route) : 'operation',
      method: req.method,
      query: auditedQuery(req),
      resourceType: route && 'resourceType' in route ? route.resourceType : undefined,
      outcome: reply.status < 400 ? 'success' : reply.status < 500 ? 'refused' : 'error',
      httpStatus: reply.status,
      outcomeDesc: reply.status >= 400 ? reply.desc : undefined,
      context: ctx,
      clientId: ctx?.clientId ?? verifiedClient,
      breakGlassAttempt: ctx ? ctx.breakGlass.requested && !ctx.breakGlass.inEffect : categoryRequestsBreakGlass(req.headers.category),
      patients: exchange?.session.disclosures() ?? [],
      requestedPatients: requestedPatients(exchange, route, req, reply.status),
      clientAddress: req.socket.remoteAddress,
    };
    // A Bulk Data file is audited when it has been decided to the end, before its response ends (SPEC §5.1).
    if (reply.stream) return sendDecidedStream(res, reply, reply.stream, (bulk, failure) => deps.audit.record(bulkRecord(record, bulk, failure)));
    const auditStarted = performance.now();
    try {
      await deps.audit.record(record);
      deps.metrics.auditAppendLatency.observe((performance.now() - auditStarted) / 1000);
    } catch (err) {
      // No durable audit, no release (SPEC §6).
      deps.logger.error({ requestId, err: { message: (err as Error).message } }, 'audit journal write failed');
      reply = { status: 503, body: gatewayAuthored(operationOutcome('transient', 'the audit journal is unavailable; nothing was released')) };
    }
    deps.metrics.requests.inc({ interaction: record.interaction, status: String(reply.status) });
    if (exchange) {
      const s = exchange.session;
      for (const layer of s.withheldLayers) deps.metrics.withheld.inc({ layer });
      for (const p of record.patients) {
        const counts = { released: 0, redacted: 0, withheld: 0 };
        for (const d of p.dispositions) counts[d.disposition]++;
        deps.metrics.decisions.inc({ outcome: 'permit' }, counts.released);
        deps.metrics.decisions.inc({ outcome: 'redact' }, counts.redacted);
        deps.metrics.decisions.inc({ outcome: 'deny' }, counts.withheld);
        if (counts.redacted) deps.metrics.redacted.inc(counts.redacted);
      }
    }
    send(res, req, reply);
  });
  return router;
}

function send(res: Response, req: Request, reply: Reply): void {
  for (const [name, value] of Object.entries(reply.headers ?? {})) if (value !== undefined) res.setHeader(name, value);
  res.status(reply.status);
  if (reply.body === undefined || req.method === 'HEAD') {
    res.end();
    return;
  }
  // A Bulk Data manifest is plain JSON (SPEC §5.1); everything else is a FHIR resource.
  res.setHeader('Content-Type', reply.headers?.['Content-Type'] ?? fhirJson);
  res.end(JSON.stringify(reply.body as Resource));
}

/** Express's own errors (body too large, bad JSON framing) as OperationOutcomes. */
export function fhirErrorHandler(err: unknown, req: Request, res: Response, next: (err?: unknown) => void): void {
  if (res.headersSent) return next(err);
  const status = typeof (err as { status?: unknown }).status === 'number' ? (err as { status: number }).status : 500;
  const text = status === 413 ? 'the request body is too large' : status < 500 ? 'the request could not be read' : 'the gateway failed';
  res.status(status).setHeader('Content-Type', fhirJson);
  res.end(JSON.stringify(operationOutcome(status === 413 ? 'too-costly' : status < 500 ? 'invalid' : 'exception', text)));
  void req;
}
