// Writes (SPEC §5): scopes allow them; conditional writes only for system/ clients (their criteria can test
// for withheld data); an update, patch or delete touches only what the writer may see whole, and what is
// stored stays inside the writer's confinement; policy writes meet policy-write.ts. A write is planned
// (every check) before anything is sent, so a transaction can send its planned writes as one.
import type { Parameters, Resource } from '@medplum/fhirtypes';
import { applyPatch, fhirpathPatchTypedValue, type Operation, parseFhirPathPatchParameters, toTypedValue } from '@medplum/core';
import { loadFhirDefinitions } from '../fhir/definitions.ts';
import { attributePatients, patientsOf } from '../fhir/compartment.ts';
import { badRequest, forbidden, GatewayError, notFound, resourceBody } from '../fhir/outcome.ts';
import type { ScopeInteraction } from '../provenance/context.ts';
import { confinedToLaunchPatient, mayConcernPatient, resourceMatchesScopes } from '../provenance/scopes.ts';
import { upstreamFailure, upstreamResource } from '../upstream/index.ts';
import type { Exchange, Reply } from './exchange.ts';
import { concealed, requireScope } from './interactions.ts';
import { guardPolicyWrite, invalidatesPolicy } from './policy-write.ts';
import { mediaTypeOf } from '../fhir/media-type.ts';

export type WriteKind = 'create' | 'update' | 'patch' | 'delete';

export const scopeFor: Record<WriteKind, ScopeInteraction> = { create: 'c', update: 'u', patch: 'u', delete: 'd' };
const methodOf: Record<WriteKind, string> = { create: 'POST', update: 'PUT', patch: 'PUT', delete: 'DELETE' };
/** Headers that make a write conditional on stored data (If-None-Exist, If-None-Match, If-Modified-Since). */
const conditionalHeaders = ['if-none-exist', 'if-none-match', 'if-modified-since'];
/** Query parameters that only shape the response, not the write. */
const formatParams = new Set(['_format', '_pretty']);

/** Everything a write will send upstream, decided before it is sent. */
export interface PlannedWrite {
  readonly kind: WriteKind;
  readonly resourceType: string;
  readonly method: string;
  /** Relative upstream URL (`Type`, `Type/id`, or a system client's conditional `Type?criteria`). */
  readonly url: string;
  readonly resource?: Resource;
  readonly previous?: Resource;
  readonly ifMatch?: string;
  readonly ifNoneExist?: string;
}

function parseBody(body: Buffer | undefined, resourceType: string, id?: string): Resource {
  const resource = resourceBody<Resource>(body, resourceType, 'a resource of the type in the path');
  if (id !== undefined && resource.id !== id) throw badRequest('the resource id does not match the id in the path');
  return resource;
}

/** A token confined to its launch patient writes only inside that patient's compartment, whatever its other scopes. */
function confineWrite(x: Exchange, resource: Resource | undefined): void {
  if (!confinedToLaunchPatient(x.ctx) || !resource) return;
  // A patient named only by identifier, or on another server, cannot be shown to be the launch patient.
  const { ids, identifiers, unresolvable } = attributePatients(resource, x.deps.store.localBases);
  if (ids.length === 0 || identifiers.length > 0 || unresolvable || ids.some((p) => !mayConcernPatient(x.ctx, p))) throw forbidden();
}

/** Conditional in any spelling: no id, criteria in the query, or a header that tests stored data. */
function isConditional(x: Exchange, kind: WriteKind, id: string | undefined): boolean {
  if (kind !== 'create' && id === undefined) return true;
  if ([...x.query.keys()].some((name) => !formatParams.has(name))) return true;
  return conditionalHeaders.some((h) => x.headers[h] !== undefined);
}

/**
 * What is changed must be seen whole first (SPEC §5): a withheld resource is concealed exactly as on a
 * read — and a missing one answers the same — a redacted one is refused.
 */
async function seenWhole(x: Exchange, previous: Resource): Promise<void> {
  await x.session.prepare([previous]);
  const verdict = x.session.decide(previous, 'r', { record: false });
  if (!verdict.released) {
    x.session.decide(previous, 'r');
    throw concealed(x);
  }
  if (verdict.decision.outcome === 'redact') throw forbidden();
}

/** The previous version, or undefined when missing; a write the writer may not see whole is refused here. */
async function readPrevious(x: Exchange, kind: WriteKind, resourceType: string, id: string): Promise<Resource | undefined> {
  const read = await x.deps.upstream.readJson<Resource>(`${resourceType}/${id}`, { requestId: x.ctx.requestId });
  if (read.status === 404 || read.status === 410) {
    // Update-as-create would answer 201 where a withheld id answers 404: only system/ clients may do it.
    if (kind === 'update' && x.ctx.kinds.has('system') && !confinedToLaunchPatient(x.ctx)) return undefined;
    throw notFound();
  }
  if (read.status >= 400 || read.resource.resourceType !== resourceType || read.resource.id !== id) throw upstreamFailure(read.status, { failed: 'the upstream server failed to read the resource' });
  const previous = read.resource;
  confineWrite(x, previous);
  if (!resourceMatchesScopes(x.ctx, previous, scopeFor[kind])) throw forbidden();
  await seenWhole(x, previous);
  return previous;
}

/**
 * JSON Patch (RFC 6902) or FHIRPath Patch (a Parameters resource, as FHIR R4 defines it) applied here, so
 * the stored result is checked before it is stored (SPEC §5). Both with `@medplum/core`.
 */
function patched(x: Exchange, previous: Resource, body: Buffer | undefined): Resource {
  const type = mediaTypeOf(x.headers['content-type'] ?? 'application/json-patch+json');
  const result = structuredClone(previous);
  if (type === 'application/json-patch+json') applyJsonPatch(result, body);
  else if (type === 'application/fhir+json' || type === 'application/json') applyFhirPathPatch(result, body);
  else throw new GatewayError(415, 'not-supported', 'PATCH accepts JSON Patch (application/json-patch+json) or FHIRPath Patch (a Parameters resource, application/fhir+json)');
  if (result.resourceType !== previous.resourceType || result.id !== previous.id) throw badRequest('a patch may not change the resource type or id');
  return result;
}

function applyJsonPatch(result: Resource, body: Buffer | undefined): void {
  let ops: unknown;
  try {
    ops = JSON.parse(body?.toString('utf8') ?? '');
  } catch {
    throw badRequest('the patch is not valid JSON', 'structure');
  }
  if (!Array.isArray(ops)) throw badRequest('a JSON Patch is an array of operations');
  const failures = applyPatch(result, ops as Operation[]).filter((e) => e !== null);
  // A failed `test` answers like any other failed patch: it says nothing more about stored values.
  if (failures.length > 0) throw badRequest('the patch could not be applied', 'processing');
}

function applyFhirPathPatch(result: Resource, body: Buffer | undefined): void {
  const parameters = resourceBody<Parameters>(body, 'Parameters', 'a FHIRPath Patch Parameters resource');
  loadFhirDefinitions();
  try {
    fhirpathPatchTypedValue(toTypedValue(result), parseFhirPathPatchParameters(parameters));
  } catch {
    // Medplum's messages can quote the stored values a path reached: the answer names none of them.
    throw badRequest('the patch could not be applied', 'processing');
  }
}

/** Moving data to other patients needs the writer to see it whole where it lands too (SPEC §5). */
async function staysWithWriter(x: Exchange, previous: Resource | undefined, next: Resource): Promise<void> {
  confineWrite(x, next);
  if (!previous) return;
  const before = new Set(patientsOf(previous));
  const after = patientsOf(next);
  if (after.length === before.size && after.every((p) => before.has(p))) return;
  await x.session.prepare([next]);
  const verdict = x.session.decide(next, 'r', { record: false });
  if (!verdict.released || verdict.decision.outcome === 'redact') throw forbidden();
}

function header(x: Exchange, name: string): string | undefined {
  const value = x.headers[name];
  return typeof value === 'string' ? value : undefined;
}

/** Every check a write must pass, in order, before anything reaches the upstream. */
export async function planWrite(x: Exchange, kind: WriteKind, resourceType: string, id: string | undefined, body?: Buffer): Promise<PlannedWrite> {
  requireScope(x, resourceType, scopeFor[kind]);
  const conditional = isConditional(x, kind, id);
  if (conditional && (!x.ctx.kinds.has('system') || confinedToLaunchPatient(x.ctx))) throw forbidden();
  if (id === undefined && kind !== 'create' && x.rawQuery === '') throw badRequest('a conditional write needs search criteria');
  if (kind === 'patch' && id === undefined) throw new GatewayError(400, 'not-supported', 'a conditional patch is not supported');

  let resource = kind === 'create' || kind === 'update' ? parseBody(body, resourceType, id) : undefined;
  if (kind === 'create' && resource) delete (resource as { id?: string }).id;
  const previous = id !== undefined && kind !== 'create' ? await readPrevious(x, kind, resourceType, id) : undefined;
  if (kind === 'patch' && previous) resource = patched(x, previous, body);
  if (resource) {
    await staysWithWriter(x, previous, resource);
    // Granular scopes (`user/Task.cu?code=…`) bound what may be written, not only the type.
    if (!resourceMatchesScopes(x.ctx, resource, scopeFor[kind])) throw forbidden();
  }
  await guardPolicyWrite(x, kind, resourceType, previous, resource);

  const url = id === undefined ? `${resourceType}${conditional ? `?${x.rawQuery}` : ''}` : `${resourceType}/${id}`;
  // A patch is stored as the checked result, only over the version it was computed from.
  const ifMatch = kind === 'patch' ? (previous?.meta?.versionId ? `W/"${previous.meta.versionId}"` : undefined) : header(x, 'if-match');
  if (kind === 'patch' && header(x, 'if-match') && header(x, 'if-match') !== ifMatch) throw new GatewayError(412, 'conflict', 'the resource has changed');
  return { kind, resourceType, method: methodOf[kind], url, resource, previous, ifMatch, ifNoneExist: kind === 'create' ? header(x, 'if-none-exist') : undefined };
}

/** The upstream's answer to a planned write, as the client sees it: its status and the stored resource, decided. */
export async function writeReply(x: Exchange, plan: PlannedWrite, status: number, written: Resource | undefined): Promise<Reply> {
  // Every policy write drops the cached policy of each patient it concerns, at once (SPEC §5).
  for (const r of [plan.resource, plan.previous, written]) {
    if (!r || typeof r !== 'object' || !invalidatesPolicy(r)) continue;
    x.deps.store.invalidateResource(r);
    for (const p of patientsOf(r)) x.deps.store.invalidate(p);
  }
  if (status >= 400) {
    // The upstream's own outcome may echo stored data; the client gets the status with the gateway's words.
    throw upstreamFailure(status, { failed: `the upstream server failed the ${plan.kind}`, refused: `the upstream server refused the ${plan.kind}` }, { kept: [404, 409, 412], otherwise: 400 });
  }
  const stored = written && typeof written === 'object' && written.resourceType === plan.resourceType ? written : undefined;
  for (const p of patientsOf(stored ?? plan.resource ?? plan.previous ?? ({ resourceType: 'Basic' } as Resource))) x.namedPatients.add(p);
  const headers: Record<string, string> = {};
  if (stored?.meta?.versionId) headers.ETag = `W/"${stored.meta.versionId}"`;
  if (stored?.id && plan.kind !== 'delete') headers.Location = `${x.deps.fhirBase}/${plan.resourceType}/${stored.id}/_history/${stored.meta?.versionId ?? '1'}`;
  if (!stored || plan.kind === 'delete') return { status, headers };
  // What the upstream stored is decided like any read before the writer sees it (SPEC §5).
  await x.session.prepare([stored]);
  const verdict = x.session.decide(stored, scopeFor[plan.kind]);
  return { status, body: verdict.released ? verdict.resource : undefined, headers };
}

export async function write(x: Exchange, kind: WriteKind, resourceType: string, id: string | undefined, body?: Buffer): Promise<Reply> {
  const plan = await planWrite(x, kind, resourceType, id, body);
  const headers: Record<string, string> = {};
  if (plan.resource) headers['content-type'] = 'application/fhir+json';
  if (plan.ifMatch) headers['if-match'] = plan.ifMatch;
  if (plan.ifNoneExist) headers['if-none-exist'] = plan.ifNoneExist;
  const response = await x.deps.upstream.request({
    method: plan.method,
    path: plan.url,
    headers,
    body: plan.resource ? JSON.stringify(plan.resource) : undefined,
    requestId: x.ctx.requestId,
    strict: true,
  });
  return writeReply(x, plan, response.status, upstreamResource(response));
}
