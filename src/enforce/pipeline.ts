// The request's one straight line (ARCHITECTURE): provenance → enforce → upstream → policy → decide →
// shape → audit (durable) → HTTP. Nothing is sent before its audit events are on disk. Served on plain
// node:http: express's request and routing layers cost more per request than this path's own HTTP work (issue 15).
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import express from 'express';
import type { Resource } from '@medplum/fhirtypes';
import type { BulkDisclosure, DisclosureRecord } from '../audit/record.ts';
import { GatewayError, operationOutcome } from '../fhir/outcome.ts';
import type { RequestContext } from '../provenance/context.ts';
import { buildRequestContext } from '../provenance/build-context.ts';
import { categoryRequestsBreakGlass } from '../provenance/break-glass.ts';
import { patientsNamedBy } from '../provenance/confine.ts';
import { bearerToken, type TokenVerifier } from '../provenance/verify-token.ts';
import { capabilityStatement, smartConfigurationDocument, type SmartConfiguration } from './capabilities.ts';
import { DisclosureSession } from './disclose.ts';
import { type Exchange, type GatewayDeps, type Reply, requestFactsDeps } from './exchange.ts';
import { dispatch, formParams } from './dispatch.ts';
import { securityLabel } from './operations.ts';
import { bulkRecord, sendDecidedStream } from './export.ts';
import { auditInteraction, parseFhirRoute, type FhirRoute } from './route.ts';
import { authoredJson, gatewayAuthored } from './reply.ts';
import { isUpstreamError, upstreamFailure } from '../upstream/index.ts';
import { mediaTypeOf } from '../fhir/media-type.ts';

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

/** What the pipeline reads of an HTTP request once its body has been read. */
interface FhirRequest {
  readonly method: string;
  /** Path below `/fhir`, raw (not decoded). */
  readonly path: string;
  /** Query string without `?`, raw. */
  readonly rawQuery: string;
  /** That query, parsed once for the format check and the handlers (which copy before changing it). */
  readonly query: URLSearchParams;
  /** The request target as received, for the audit. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body?: Buffer;
  readonly clientAddress?: string;
}

/** Whether a request target is the gateway's FHIR endpoint (`/fhir` and below). */
export function isFhirPath(url: string | undefined): boolean {
  return url !== undefined && /^\/fhir(?:[/?#]|$)/.test(url);
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

function acceptedRequestId(value: string | undefined): string {
  return value && requestIdPattern.test(value) ? value : randomUUID();
}

/** Only JSON is inspected, so only JSON is served (SPEC §5). */
function checkFormat(req: FhirRequest): void {
  for (const [name, f] of req.query) {
    if (name !== '_format' && !name.startsWith('_format[')) continue;
    // `_format[...]` (bracket notation) is not a format a client can mean: refused like any non-JSON one.
    if (name !== '_format' || !/^(json|application\/json|application\/fhir\+json)$/.test(mediaTypeOf(f))) {
      throw new GatewayError(406, 'not-supported', 'only JSON is served (application/fhir+json)');
    }
  }
  const accept = header(req.headers, 'accept');
  // Bulk Data files are NDJSON (SPEC §5.1), each line decided like any JSON resource.
  const ndjson = req.path.startsWith('/_export/file/') ? '|application\\/(fhir\\+)?ndjson' : '';
  if (accept && !new RegExp(`(^|,|\\s)(\\*\\/\\*|application\\/\\*|application\\/(fhir\\+)?json${ndjson})`, 'i').test(accept)) {
    throw new GatewayError(406, 'not-supported', 'only JSON is served (application/fhir+json)');
  }
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
function searchParamsOf(req: FhirRequest): URLSearchParams {
  const params = new URLSearchParams(req.query);
  for (const [name, value] of formParams(req.headers, req.body) ?? []) params.append(name, value);
  return params;
}

/** The patients a request names by its path and parameters, whatever happened to it. */
function patientsNamedByRoute(route: FhirRoute, req: FhirRequest): string[] {
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
function requestedPatients(exchange: Exchange | undefined, route: FhirRoute | undefined, req: FhirRequest, status: number): string[] {
  const named = new Set(exchange?.namedPatients);
  if (status < 400 || route === undefined) return [...named];
  try {
    for (const id of patientsNamedByRoute(route, req)) named.add(id);
  } catch {
    // An unparseable query names no one; the refusal is still recorded.
  }
  return [...named];
}

function auditedQuery(req: FhirRequest): string {
  // The cursor is opaque and long; the audit keeps the path and the rest of the query.
  return req.url.replace(/([?&]_?cursor=)[^&]*/, '$1…');
}

/** How far a request got: what the audit record and the metrics read of it, whatever its outcome. */
interface Attempt {
  reply: Reply & { desc?: string };
  route?: FhirRoute;
  ctx?: RequestContext;
  verifiedClient?: string;
  exchange?: Exchange;
  /** Public metadata answered without a token, an audit or a decision. */
  unaudited?: boolean;
}

/** provenance → enforce → upstream → policy → decide: the reply, or the refusal, with what was established on the way. */
async function answer(deps: PipelineDeps, req: FhirRequest, requestId: string): Promise<Attempt> {
  const attempt: Partial<Attempt> = {};
  try {
    checkFormat(req);
    if (methodOverrideHeaders.some((h) => req.headers[h] !== undefined)) throw new GatewayError(400, 'not-supported', 'method override headers are not accepted');
    const route = (attempt.route = parseFhirRoute(req.method, req.path));
    if (route.interaction === 'capabilities') {
      return { reply: { status: 200, body: gatewayAuthored(await capabilityStatement(deps.upstream, deps.fhirBase, deps.smart, requestId)) }, unaudited: true };
    }
    if (route.interaction === 'smart-configuration') {
      return { reply: { status: 200, body: authoredJson(smartConfigurationDocument(deps.smart)), headers: { 'Content-Type': 'application/json; charset=utf-8' } }, unaudited: true };
    }
    const claims = await deps.verifier.verify(bearerToken(header(req.headers, 'authorization')));
    // Known from the verified token even if the context below is refused (no purpose of use).
    attempt.verifiedClient = [claims.client_id, claims.azp, claims.sub].find((c): c is string => typeof c === 'string' && c.length > 0);
    // SPEC §4.7: labeling discloses nothing it was not given, so any authenticated client may ask, purpose or not.
    if (route.interaction === 'operation' && route.name === '$security-label' && route.resourceType === undefined && req.method === 'POST') {
      return { ...attempt, reply: securityLabel(deps.labeler, req.body) };
    }
    const ctx = (attempt.ctx = buildRequestContext(claims, { requestId, categoryHeader: req.headers.category }, deps.policy, deps.store.localBases));
    const requester = await deps.store.resolveRequester(ctx);
    const session = new DisclosureSession(requestFactsDeps(deps), ctx, requester);
    const exchange: Exchange = (attempt.exchange = {
      deps,
      ctx,
      requester,
      session,
      query: req.query,
      rawQuery: req.rawQuery,
      headers: req.headers,
      body: req.body,
      pageLease: deps.pageBudget.lease(),
      namedPatients: new Set(),
    });
    return { ...attempt, reply: await dispatch(exchange, route, req.method) };
  } catch (err) {
    return { ...attempt, reply: errorReply(err, deps, requestId) };
  }
}

function disclosureRecord(req: FhirRequest, requestId: string, recorded: string, attempt: Attempt): DisclosureRecord {
  const { reply, route, ctx, exchange } = attempt;
  return {
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
    clientId: ctx?.clientId ?? attempt.verifiedClient,
    breakGlassAttempt: ctx ? ctx.breakGlass.requested && !ctx.breakGlass.inEffect : categoryRequestsBreakGlass(req.headers.category),
    patients: exchange?.session.disclosures() ?? [],
    requestedPatients: requestedPatients(exchange, route, req, reply.status),
    clientAddress: req.clientAddress,
  };
}

/** A reply as it goes out: its body already serialised, so nothing parsed outlives the wait for the audit. */
interface Outgoing {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly text?: string;
}

function outgoing(method: string, reply: Reply): Outgoing {
  if (reply.body === undefined || method === 'HEAD') return { status: reply.status, headers: reply.headers ?? {} };
  // A Bulk Data manifest is plain JSON (SPEC §5.1); everything else is a FHIR resource.
  return { status: reply.status, headers: { 'Content-Type': fhirJson, ...reply.headers }, text: JSON.stringify(reply.body as Resource) };
}

/** No durable audit, no release (SPEC §6): the reply once its events are on disk, or a 503 in its place. */
async function audited(deps: PipelineDeps, record: DisclosureRecord, reply: Outgoing): Promise<Outgoing> {
  const started = performance.now();
  try {
    await deps.audit.record(record);
    deps.metrics.auditAppendLatency.observe((performance.now() - started) / 1000);
    return reply;
  } catch (err) {
    deps.logger.error({ requestId: record.requestId, err: { message: (err as Error).message } }, 'audit journal write failed');
    return outgoing(record.method, { status: 503, body: gatewayAuthored(operationOutcome('transient', 'the audit journal is unavailable; nothing was released')) });
  }
}

/** Request and decision counters, read from the one disposition record per resource (no patient data). */
function count(deps: PipelineDeps, record: DisclosureRecord, status: number, withheldLayers: readonly string[] | undefined): void {
  deps.metrics.requests.inc({ interaction: record.interaction, status: String(status) });
  if (!withheldLayers) return;
  const counts = { released: 0, redacted: 0, withheld: 0 };
  for (const p of record.patients) for (const d of p.dispositions) counts[d.disposition]++;
  countDecisions(deps, counts, withheldLayers.map((layer) => [layer, 1]));
}

/** A Bulk Data file, counted from its per-patient ledger once it has been decided to the end and audited. */
function countFile(deps: PipelineDeps, record: DisclosureRecord, bulk: BulkDisclosure): void {
  deps.metrics.requests.inc({ interaction: record.interaction, status: String(record.httpStatus) });
  const counts = { released: bulk.unpatiented.released, redacted: 0, withheld: bulk.unpatiented.withheld };
  for (const p of bulk.patients) {
    counts.released += p.released - p.redacted; // a patient's `released` includes the redacted lines
    counts.redacted += p.redacted;
    counts.withheld += p.withheld;
  }
  countDecisions(deps, counts, Object.entries(bulk.withheldBy));
}

function countDecisions(deps: PipelineDeps, counts: { released: number; redacted: number; withheld: number }, withheldBy: readonly (readonly [string, number])[]): void {
  for (const [layer, n] of withheldBy) deps.metrics.withheld.inc({ layer }, n);
  if (counts.released) deps.metrics.decisions.inc({ outcome: 'permit' }, counts.released);
  if (counts.redacted) {
    deps.metrics.decisions.inc({ outcome: 'redact' }, counts.redacted);
    deps.metrics.redacted.inc(counts.redacted);
  }
  if (counts.withheld) deps.metrics.decisions.inc({ outcome: 'deny' }, counts.withheld);
}

/** What is left of an answered request for its delivery: the record, and the reply serialised or still to stream. */
type Delivery =
  | { readonly kind: 'unaudited'; readonly reply: Outgoing }
  | { readonly kind: 'stream'; readonly record: DisclosureRecord; readonly reply: Reply & { readonly stream: NonNullable<Reply['stream']> }; readonly release: () => void }
  | { readonly kind: 'reply'; readonly record: DisclosureRecord; readonly reply: Outgoing; readonly withheldLayers?: readonly string[] };

/**
 * Serialises the reply and gives its pages back to the budget. A function of its own: a local of the async
 * handler would keep the parsed pages alive through the wait for the disk (V8 keeps an async frame's locals).
 */
function delivery(req: FhirRequest, requestId: string, recorded: string, attempt: Attempt): Delivery {
  const lease = attempt.exchange?.pageLease;
  let streaming = false;
  try {
    if (attempt.unaudited) return { kind: 'unaudited', reply: outgoing(req.method, attempt.reply) };
    const record = disclosureRecord(req, requestId, recorded, attempt);
    const { stream } = attempt.reply;
    if (stream) {
      streaming = true; // its pages are read while it is sent: the stream gives the lease back
      return { kind: 'stream', record, reply: { ...attempt.reply, stream }, release: () => lease?.release() };
    }
    return { kind: 'reply', record, reply: outgoing(req.method, attempt.reply), withheldLayers: attempt.exchange?.session.withheldLayers };
  } finally {
    if (!streaming) lease?.release();
  }
}

async function handle(deps: PipelineDeps, req: FhirRequest, res: ServerResponse): Promise<void> {
  const recorded = new Date().toISOString();
  const requestId = acceptedRequestId(header(req.headers, 'x-request-id'));
  res.setHeader('X-Request-Id', requestId);
  const ready = delivery(req, requestId, recorded, await answer(deps, req, requestId));
  if (ready.kind === 'unaudited') return send(res, ready.reply);
  if (ready.kind === 'stream') {
    // A Bulk Data file is audited when it has been decided to the end, before its response ends (SPEC §5.1).
    try {
      return await sendDecidedStream(res, ready.reply, ready.reply.stream, async (bulk, failure) => {
        const fileRecord = bulkRecord(ready.record, bulk, failure);
        await deps.audit.record(fileRecord);
        countFile(deps, fileRecord, bulk);
      });
    } finally {
      ready.release();
    }
  }
  const reply = await audited(deps, ready.record, ready.reply);
  count(deps, ready.record, reply.status, ready.withheldLayers);
  send(res, reply);
}

function send(res: ServerResponse, reply: Outgoing): void {
  for (const [name, value] of Object.entries(reply.headers)) if (value !== undefined) res.setHeader(name, value);
  res.statusCode = reply.status;
  res.end(reply.text);
}

/** An HTTP-level failure (a body too large, broken framing, an unknown encoding) as an OperationOutcome. */
export function sendErrorOutcome(res: ServerResponse, err: unknown): void {
  const status = typeof (err as { status?: unknown }).status === 'number' ? (err as { status: number }).status : 500;
  const text = status === 413 ? 'the request body is too large' : status < 500 ? 'the request could not be read' : 'the gateway failed';
  res.statusCode = status;
  res.setHeader('Content-Type', fhirJson);
  res.end(JSON.stringify(operationOutcome(status === 413 ? 'too-costly' : status < 500 ? 'invalid' : 'exception', text)));
}

/** The FHIR endpoint as a node:http request listener, for requests `isFhirPath` accepts. */
export function fhirHandler(deps: PipelineDeps): (req: IncomingMessage, res: ServerResponse) => void {
  // express's raw body reader (body-parser): size limit, Content-Encoding, aborted uploads, as before.
  const readBody = express.raw({ type: () => true, limit: deps.maxBodyBytes ?? 16 * 1024 * 1024 });
  return (req, res) => {
    const run = (body: Buffer | undefined): void => {
      const url = req.url ?? '/fhir';
      const at = url.indexOf('?');
      const path = (at === -1 ? url : url.slice(0, at)).replace(/^\/fhir/, '') || '/';
      const rawQuery = at === -1 ? '' : url.slice(at + 1);
      const fhirRequest: FhirRequest = { method: req.method ?? 'GET', path, rawQuery, query: new URLSearchParams(rawQuery), url, headers: req.headers, body, clientAddress: req.socket.remoteAddress };
      handle(deps, fhirRequest, res).catch((err: unknown) => {
        deps.logger.error({ err: { message: (err as Error)?.message } }, 'request failed after its reply was built');
        if (!res.headersSent) sendErrorOutcome(res, err);
        else res.destroy();
      });
    };
    // A request without a body (every GET) skips the reader: the same test body-parser makes first.
    if (req.headers['transfer-encoding'] === undefined && req.headers['content-length'] === undefined) return run(undefined);
    readBody(req as express.Request, res as express.Response, (err?: unknown) => {
      if (err) return sendErrorOutcome(res, err);
      const body = (req as { body?: unknown }).body;
      run(Buffer.isBuffer(body) && body.length > 0 ? body : undefined);
    });
  };
}
