// Bulk Data `$export` (SPEC §5.1): kick-off, status, files and cancel for system/ clients. The job — upstream
// status URL, client, subject, expiry — is sealed into the gateway's own URLs like a paging cursor, so any
// instance with the same secret serves it and only to the client that started it. Files are streamed from
// the upstream line by line, every line decided like a search entry; an upstream failure mid-file destroys
// the response, so no unchecked line is ever sent and the client sees a failed download.
import type { ServerResponse } from 'node:http';
import type { Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { isResourceType } from '@medplum/core';
import type { Parameters, Resource } from '@medplum/fhirtypes';
import type { BulkDisclosure, BulkPatientCount, DisclosureRecord } from '../audit/record.ts';
import { badRequest, forbidden, GatewayError, notFound, operationOutcome, resourceBody } from '../fhir/outcome.ts';
import { withholdingLayer } from '../decide/index.ts';
import { loadFhirDefinitions } from '../fhir/definitions.ts';
import { allows, holdsAuditEventScope } from '../provenance/scopes.ts';
import { originRequestTarget, parseUpstreamBase, upstreamFailure, type UpstreamResponse } from '../upstream/index.ts';
import type { PolicySource } from '../policy/index.ts';
import { DisclosureSession, type Verdict } from './disclose.ts';
import { type Exchange, type Reply, requestFactsDeps, type StreamedBody } from './exchange.ts';
import { authoredJson, gatewayAuthored } from './reply.ts';
import { mediaTypeOf } from '../fhir/media-type.ts';

/** What a job URL seals: the upstream status URL (absolute) and the kick-off as the client sent it (gateway-relative). */
interface ExportJob {
  readonly status: string;
  readonly request: string;
}

/** What a file URL seals: the upstream file URL (absolute) and its type. */
interface ExportFile {
  readonly url: string;
  readonly type: string;
}

/** Bulk jobs outlive paging cursors: an export may take hours and its files are fetched later (Bulk Data 2.0). */
const handleLifetimeSeconds = 24 * 60 * 60;
/** Lines decided together: one policy load for their patients, one write. */
const linesPerBatch = 500;
/** Lines one session decides before a fresh one: bounds the compiled policies held (memory flat). */
const linesPerSession = 20_000;
/** Patients whose policies load at once: the upstream client's pool holds 16 connections. */
const policyLoadConcurrency = 16;
/** A longer line is not an NDJSON resource the gateway will hold in memory. */
const maxLineChars = 16 * 1024 * 1024;
const ndjsonType = 'application/fhir+ndjson';
const ndjsonFormats = /^(application\/fhir\+ndjson|application\/ndjson|ndjson)$/;
const ndjsonMediaTypes = new Set(['application/fhir+ndjson', 'application/ndjson', 'application/x-ndjson', 'application/octet-stream']);

/** Only system/ clients export (SPEC §5.1): a token holding patient/ or user/ scopes is refused. */
function requireSystemClient(x: Exchange): void {
  if (!x.ctx.kinds.has('system') || x.ctx.kinds.has('user') || x.ctx.kinds.has('patient')) throw forbidden();
}

function mayRead(x: Exchange, type: string): boolean {
  return allows(x.ctx, type, 'r') && (type !== 'AuditEvent' || holdsAuditEventScope(x.ctx, 'r'));
}

/** Kick-off parameters from the query and a POSTed Parameters body; anything the gateway cannot hold to released data → 400. */
function kickOffParams(x: Exchange, method: string): Map<string, string[]> {
  const params = new Map<string, string[]>();
  const add = (name: string, value: string) => params.set(name, [...(params.get(name) ?? []), value]);
  for (const [name, value] of x.query) add(name, value);
  if (method === 'POST' && x.body) {
    for (const p of resourceBody<Parameters>(x.body, 'Parameters', 'a Parameters resource').parameter ?? []) {
      const value = p.valueString ?? p.valueInstant ?? p.valueCode;
      if (value === undefined) throw badRequest(`export parameter '${p.name}' is not supported`, 'not-supported');
      add(p.name, value);
    }
  }
  for (const name of params.keys()) {
    if (name === '_typeFilter' || name === '_elements') throw badRequest(`${name} is not supported: the gateway decides every resource it exports`, 'not-supported');
    if (name !== '_type' && name !== '_since' && name !== '_outputFormat') throw badRequest(`export parameter '${name}' is not supported`, 'not-supported');
  }
  return params;
}

/** The `_type` forwarded: the client's, each readable under its scopes (else 403), or without one the types it may read. */
function exportTypes(x: Exchange, asked: readonly string[] | undefined): string[] | undefined {
  loadFhirDefinitions();
  if (asked) {
    const types = asked.flatMap((v) => v.split(',')).map((t) => t.trim()).filter(Boolean);
    for (const type of types) if (!isResourceType(type)) throw badRequest(`unknown resource type in _type`);
    if (types.length === 0 || !types.every((t) => mayRead(x, t))) throw forbidden();
    return [...new Set(types)];
  }
  // A wildcard read scope needs no narrowing: each line is still decided (and AuditEvent lines refused).
  if (x.ctx.scopes.some((s) => s.resourceType === '*' && s.interactions.has('r'))) return undefined;
  const types = [...new Set(x.ctx.scopes.filter((s) => s.interactions.has('r')).map((s) => s.resourceType))].filter((t) => mayRead(x, t));
  if (types.length === 0) throw forbidden();
  return types;
}

function upstreamQuery(x: Exchange, method: string): URLSearchParams {
  const params = kickOffParams(x, method);
  const query = new URLSearchParams();
  const format = params.get('_outputFormat');
  if (format && !format.every((f) => ndjsonFormats.test(f))) throw badRequest('only NDJSON output (_outputFormat=application/fhir+ndjson) is produced', 'not-supported');
  const since = params.get('_since');
  if (since) {
    const at = Date.parse(since[since.length - 1]);
    if (Number.isNaN(at)) throw badRequest('_since must be an instant');
    query.set('_since', new Date(at).toISOString());
  }
  const types = exportTypes(x, params.get('_type'));
  if (types) query.set('_type', types.join(','));
  query.set('_outputFormat', ndjsonType);
  return query;
}

/** An upstream URL (absolute or relative to its base) that stays on the upstream's origin, absolute; else 502. */
function onUpstreamOrigin(x: Exchange, url: string | undefined): string {
  if (!url) throw new GatewayError(502, 'exception', 'the upstream did not name its export URL');
  const base = parseUpstreamBase(x.deps.upstream.baseUrl);
  let absolute: string;
  try {
    absolute = new URL(url, `${base.baseUrl}/`).toString();
  } catch {
    throw new GatewayError(502, 'exception', 'the upstream named an invalid export URL');
  }
  // URLs on another origin are not followed (SPEC §5.1).
  if (originRequestTarget(base, absolute) === null) throw new GatewayError(502, 'exception', 'the upstream named an export URL on another origin');
  return absolute;
}

/** An upstream refusal or failure through the one mapping (upstream/errors.ts); a 422 is a refused request too. */
function exportFailure(response: Pick<UpstreamResponse, 'status'>): GatewayError {
  // A job or file the upstream no longer knows reads as one the client never had.
  if (response.status === 404 || response.status === 410) return notFound();
  return upstreamFailure(response.status === 422 ? 400 : response.status, { failed: 'the upstream export failed', refused: 'the upstream server refused the export request' }, { kept: [400] });
}

export async function exportKickOff(x: Exchange, method: string, resourceType?: string, id?: string): Promise<Reply> {
  const level = resourceType === undefined ? '$export' : resourceType === 'Patient' && !id ? 'Patient/$export' : resourceType === 'Group' && id ? `Group/${id}/$export` : undefined;
  if (!level || (method !== 'GET' && method !== 'POST')) throw forbidden();
  requireSystemClient(x);
  const prefer = x.headers.prefer;
  if (!/respond-async/i.test(Array.isArray(prefer) ? prefer.join(',') : (prefer ?? ''))) throw badRequest('a Bulk Data kick-off needs Prefer: respond-async');
  const query = upstreamQuery(x, method);
  const response = await x.deps.upstream.request({ method: 'GET', path: `${level}?${query}`, headers: { prefer: 'respond-async' }, requestId: x.ctx.requestId, strict: true });
  if (response.status !== 202) throw response.status >= 400 ? exportFailure(response) : new GatewayError(502, 'exception', 'the upstream did not start an asynchronous export');
  const job: ExportJob = { status: onUpstreamOrigin(x, response.headers['content-location']), request: `/${level}${x.rawQuery ? `?${x.rawQuery}` : ''}` };
  const handle = x.deps.cursors.sealHandle('export-job', job, x.ctx, handleLifetimeSeconds);
  return {
    status: 202,
    headers: { 'Content-Location': `${x.deps.fhirBase}/_export/status/${handle}` },
    body: gatewayAuthored(operationOutcome('informational', 'export started; poll the Content-Location URL', 'information')),
  };
}

/** X-Progress is free text from the upstream: only a short plain phrase or percentage is passed on. */
function progressOf(value: string | undefined): string {
  return value && /^[A-Za-z0-9 %.,()-]{1,64}$/.test(value) ? value : 'in progress';
}

function gatewayManifest(x: Exchange, job: ExportJob, upstreamManifest: unknown): Record<string, unknown> {
  const manifest = upstreamManifest as { transactionTime?: unknown; output?: unknown };
  if (!manifest || typeof manifest !== 'object' || !Array.isArray(manifest.output)) throw new GatewayError(502, 'exception', 'the upstream answered the export status with no manifest');
  const output = (manifest.output as { type?: unknown; url?: unknown }[]).map((o) => {
    if (typeof o.type !== 'string' || !isResourceType(o.type) || typeof o.url !== 'string') throw new GatewayError(502, 'exception', 'the upstream manifest names an invalid file');
    const file: ExportFile = { url: onUpstreamOrigin(x, o.url), type: o.type };
    return { type: o.type, url: `${x.deps.fhirBase}/_export/file/${x.deps.cursors.sealHandle('export-file', file, x.ctx, handleLifetimeSeconds)}` };
  });
  // No `count`, `error[]` or `deleted[]`: each can tell of withheld resources (SPEC §5.1).
  return {
    transactionTime: typeof manifest.transactionTime === 'string' && !Number.isNaN(Date.parse(manifest.transactionTime)) ? manifest.transactionTime : new Date().toISOString(),
    request: `${x.deps.fhirBase}${job.request}`,
    requiresAccessToken: true,
    output,
    error: [],
  };
}

export async function exportStatus(x: Exchange, method: string, handle: string): Promise<Reply> {
  const job = await x.deps.cursors.openHandle<ExportJob>('export-job', handle, x.ctx);
  requireSystemClient(x);
  if (method === 'DELETE') {
    const response = await x.deps.upstream.request({ method: 'DELETE', path: job.status, onOrigin: true, requestId: x.ctx.requestId, strict: true });
    if (response.status >= 300) throw exportFailure(response);
    return { status: 202, body: gatewayAuthored(operationOutcome('informational', 'export cancelled', 'information')) };
  }
  if (method !== 'GET') throw forbidden();
  const response = await x.deps.upstream.request({ method: 'GET', path: job.status, onOrigin: true, requestId: x.ctx.requestId, strict: true });
  if (response.status === 202) {
    const retryAfter = response.headers['retry-after'];
    return { status: 202, headers: { 'X-Progress': progressOf(response.headers['x-progress']), ...(retryAfter && /^\d{1,5}$/.test(retryAfter) ? { 'Retry-After': retryAfter } : {}) } };
  }
  if (response.status !== 200) throw exportFailure(response);
  const manifest = gatewayManifest(x, job, response.json);
  return { status: 200, headers: { 'Content-Type': 'application/json; charset=utf-8' }, body: authoredJson(manifest) };
}

export async function exportFile(x: Exchange, method: string, handle: string): Promise<Reply> {
  const file = await x.deps.cursors.openHandle<ExportFile>('export-file', handle, x.ctx);
  requireSystemClient(x);
  if (method !== 'GET') throw forbidden();
  // Opened before the first byte: a failure here is an ordinary 5xx answer (SPEC §5.1).
  const upstream = await x.deps.upstream.stream(file.url, { onOrigin: true, requestId: x.ctx.requestId });
  const mediaType = mediaTypeOf(upstream.headers['content-type'] ?? ndjsonType);
  if (upstream.status !== 200 || !ndjsonMediaTypes.has(mediaType)) {
    upstream.body.destroy();
    throw upstream.status === 200 ? new GatewayError(502, 'exception', 'the upstream export file is not NDJSON') : exportFailure(upstream);
  }
  const stream: StreamedBody = (out, finish) => decideLines(x, file.type, upstream.body, out, finish);
  return { status: 200, headers: { 'Content-Type': ndjsonType }, stream };
}

/** The NDJSON lines of a body, a chunk's worth at a time (the caller's pace is the reading pace). */
async function* ndjsonLines(body: AsyncIterable<Buffer>): AsyncGenerator<string[]> {
  const decoder = new StringDecoder('utf8');
  let rest = '';
  for await (const chunk of body) {
    const text = rest + decoder.write(chunk);
    const lines = text.split('\n');
    rest = lines.pop() ?? '';
    if (rest.length > maxLineChars) throw new Error('an export line exceeds the longest line accepted');
    yield lines;
  }
  yield [rest + decoder.end()];
}

function parseLine(line: string): Resource {
  const resource = JSON.parse(line) as Resource;
  if (typeof resource !== 'object' || resource === null || Array.isArray(resource) || typeof resource.resourceType !== 'string') {
    throw new Error('an export line is not a FHIR resource');
  }
  return resource;
}

/** Counts per patient of what one file released, redacted and withheld: memory grows with patients, not lines. */
class FileAccount {
  private readonly patients = new Map<string, { released: number; redacted: number; withheld: number }>();
  private readonly unpatiented = { released: 0, withheld: 0 };
  private readonly withheldBy: Record<string, number> = {};

  private readonly resourceType: string;
  constructor(resourceType: string) {
    this.resourceType = resourceType;
  }

  add(verdict: Verdict): void {
    if (!verdict.released) {
      const layer = withholdingLayer(verdict.decision);
      this.withheldBy[layer] = (this.withheldBy[layer] ?? 0) + 1;
    }
    if (verdict.patients.length === 0) this.unpatiented[verdict.released ? 'released' : 'withheld']++;
    const redacted = verdict.released && verdict.decision.obligations.some((o) => o.kind === 'redact');
    for (const id of verdict.patients) {
      let counts = this.patients.get(id);
      if (!counts) this.patients.set(id, (counts = { released: 0, redacted: 0, withheld: 0 }));
      counts[verdict.released ? 'released' : 'withheld']++;
      if (redacted) counts.redacted++;
    }
  }

  summary(): BulkDisclosure {
    const patients: BulkPatientCount[] = [...this.patients].map(([patientId, c]) => ({ patientId, ...c }));
    return { resourceType: this.resourceType, patients, unpatiented: { ...this.unpatiented }, withheldBy: { ...this.withheldBy } };
  }
}

/**
 * Sessions that decide a file: one decides many batches (its compiled policies reused), and is replaced after
 * `linesPerSession` lines or the policy cache's lifetime, so memory stays flat and policy changes are seen.
 */
class FileSessions {
  private session?: DisclosureSession;
  private lines = 0;
  private startedAt = 0;

  /** A batch names hundreds of new patients at first: their policies load as wide as the upstream pool allows. */
  private readonly policies: PolicySource;

  private readonly x: Exchange;
  constructor(x: Exchange) {
    this.x = x;
    this.policies = { loadMany: (ids, opts) => x.deps.store.loadMany(ids, { ...opts, concurrency: policyLoadConcurrency }) };
  }

  for(lines: number): DisclosureSession {
    const { deps, ctx, requester } = this.x;
    if (!this.session || this.lines >= linesPerSession || Date.now() - this.startedAt > deps.policy.cache.ttlSeconds * 1000) {
      this.session = new DisclosureSession(requestFactsDeps(deps, this.policies), ctx, requester);
      this.lines = 0;
      this.startedAt = Date.now();
    }
    this.lines += lines;
    return this.session;
  }
}

/** Decides a batch of lines (one policy load for their new patients) and returns the released ones as NDJSON. */
async function decideBatch(sessions: FileSessions, resources: Resource[], account: FileAccount): Promise<string> {
  const session = sessions.for(resources.length);
  await session.prepare(resources);
  let out = '';
  for (const resource of resources) {
    const verdict = session.decide(resource, 'r', { record: false });
    account.add(verdict);
    if (verdict.released) out += `${JSON.stringify(verdict.resource)}\n`;
  }
  return out;
}

function written(out: Writable, chunk: string): Promise<void> {
  // A client that went away stops the download: the upstream is not read on for nobody.
  if (out.destroyed || out.writableEnded) return Promise.reject(new Error('the client went away'));
  if (out.write(chunk)) return Promise.resolve();
  return new Promise((ok, fail) => {
    const gone = () => fail(new Error('the client went away'));
    out.once('drain', () => {
      out.off('close', gone);
      ok();
    });
    out.once('close', gone);
  });
}

async function decideLines(x: Exchange, type: string, body: AsyncIterable<Buffer> & { destroy(): void }, out: Writable, finish: (bulk: BulkDisclosure, failure?: string) => Promise<void>): Promise<void> {
  const account = new FileAccount(type);
  const sessions = new FileSessions(x);
  let batch: Resource[] = [];
  try {
    for await (const lines of ndjsonLines(body)) {
      for (const line of lines) if (line.trim() !== '') batch.push(parseLine(line));
      if (batch.length < linesPerBatch) continue;
      await written(out, await decideBatch(sessions, batch, account));
      batch = [];
    }
    if (batch.length > 0) await written(out, await decideBatch(sessions, batch, account));
  } catch {
    // What already left is audited; the rest is never sent, and the broken response tells the client to retry.
    body.destroy();
    await finish(account.summary(), 'the export file could not be read to its end').catch(() => undefined);
    out.destroy();
    return;
  }
  try {
    await finish(account.summary());
  } catch {
    out.destroy(); // no durable audit: the download must not complete (SPEC §6)
    return;
  }
  out.end();
}

/** Sends a streamed reply; its audit is made durable by `audit` before the response ends. */
export async function sendDecidedStream(
  res: ServerResponse,
  reply: Reply,
  stream: StreamedBody,
  audit: (bulk: BulkDisclosure, failure?: string) => Promise<void>,
): Promise<void> {
  for (const [name, value] of Object.entries(reply.headers ?? {})) res.setHeader(name, value);
  res.statusCode = reply.status;
  res.on('error', () => undefined); // a client that hangs up mid-file is handled by the writer, not the process
  try {
    await stream(res, audit);
  } catch {
    res.destroy();
  }
}

/** The request's record, for a file download: counts per patient, and the failure if the file broke off. */
export function bulkRecord(record: DisclosureRecord, bulk: BulkDisclosure, failure?: string): DisclosureRecord {
  if (!failure) return { ...record, bulk };
  return { ...record, bulk, outcome: 'error', httpStatus: 502, outcomeDesc: failure };
}
