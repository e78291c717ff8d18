// Writes pass when the scopes allow them (SPEC §5). Conditional writes are refused except for system/
// clients, since their criteria can test for withheld data. Consent and Flag writes invalidate the
// patient's cached policy at once.
import type { Resource } from '@medplum/fhirtypes';
import { patientsOf } from '../fhir/compartment.ts';
import { badRequest, forbidden, GatewayError, notFound, resourceBody } from '../fhir/outcome.ts';
import type { ScopeInteraction } from '../provenance/context.ts';
import { confinedToLaunchPatient, mayConcernPatient, resourceMatchesScopes } from '../provenance/scopes.ts';
import type { Exchange, Reply } from './exchange.ts';
import { requireScope } from './interactions.ts';

export type WriteKind = 'create' | 'update' | 'patch' | 'delete';

const scopeFor: Record<WriteKind, ScopeInteraction> = { create: 'c', update: 'u', patch: 'u', delete: 'd' };
const policyTypes = new Set(['Consent', 'Flag', 'Group', 'CareTeam', 'PractitionerRole', 'Patient', 'Encounter']);

function parseBody(body: Buffer | undefined, resourceType: string, id?: string): Resource {
  const resource = resourceBody<Resource>(body, resourceType, 'a resource of the type in the path');
  if (id !== undefined && resource.id !== id) throw badRequest('the resource id does not match the id in the path');
  return resource;
}

/** A token confined to its launch patient writes only inside that patient's compartment, whatever its other scopes. */
function confineWrite(x: Exchange, resource: Resource | undefined): void {
  if (!confinedToLaunchPatient(x.ctx) || !resource) return;
  const patients = patientsOf(resource);
  if (patients.length === 0 || patients.some((p) => !mayConcernPatient(x.ctx, p))) throw forbidden();
}

/**
 * A patch works on stored content the client does not send: its `test` ops answer yes/no about stored
 * values and `copy`/`move` can carry a hidden element into a visible one (SPEC §5 leave no trace). So only
 * a resource the requester may see whole is patched; a withheld one is concealed exactly as on a read.
 */
async function patchable(x: Exchange, previous: Resource): Promise<void> {
  await x.session.prepare([previous]);
  const verdict = x.session.decide(previous, 'r', { record: false });
  if (!verdict.released) {
    x.session.decide(previous, 'r');
    throw x.deps.policy.conceal === 403 ? forbidden() : notFound();
  }
  if (verdict.decision.outcome === 'redact') throw forbidden();
}

export async function write(x: Exchange, kind: WriteKind, resourceType: string, id: string | undefined, body?: Buffer): Promise<Reply> {
  requireScope(x, resourceType, scopeFor[kind]);
  const conditional = (kind !== 'create' && id === undefined) || (kind === 'create' && x.headers['if-none-exist'] !== undefined);
  if (conditional && !x.ctx.kinds.has('system')) throw forbidden();
  if (id === undefined && kind !== 'create' && x.rawQuery === '') throw badRequest('a conditional write needs search criteria');

  const resource = kind === 'create' || kind === 'update' ? parseBody(body, resourceType, id) : undefined;
  if (kind === 'create' && resource) delete (resource as { id?: string }).id;
  confineWrite(x, resource);
  // Granular scopes (`user/Task.cu?code=…`) bound what may be written, not only the type.
  if (resource && !resourceMatchesScopes(x.ctx, resource, scopeFor[kind])) throw forbidden();
  let previous: Resource | undefined;
  if (id !== undefined && kind !== 'create') {
    const read = await x.deps.upstream.readJson<Resource>(`${resourceType}/${id}`, { requestId: x.ctx.requestId });
    if (read.status < 300) previous = read.resource;
    else if (kind !== 'update') throw notFound();
    confineWrite(x, previous);
    if (previous && !resourceMatchesScopes(x.ctx, previous, scopeFor[kind])) throw forbidden();
    if (kind === 'patch' && previous) await patchable(x, previous);
  }

  const path = id === undefined ? `${resourceType}${x.rawQuery ? `?${x.rawQuery}` : ''}` : `${resourceType}/${id}`;
  const headers: Record<string, string> = {};
  if (kind === 'patch') headers['content-type'] = String(x.headers['content-type'] ?? 'application/json-patch+json');
  else if (resource) headers['content-type'] = 'application/fhir+json';
  const ifNoneExist = x.headers['if-none-exist'];
  if (kind === 'create' && typeof ifNoneExist === 'string') headers['if-none-exist'] = ifNoneExist;
  const ifMatch = x.headers['if-match'];
  if (typeof ifMatch === 'string') headers['if-match'] = ifMatch;
  const method = { create: 'POST', update: 'PUT', patch: 'PATCH', delete: 'DELETE' }[kind];
  const response = await x.deps.upstream.request({
    method,
    path,
    headers,
    body: kind === 'patch' ? body : resource ? JSON.stringify(resource) : undefined,
    requestId: x.ctx.requestId,
    strict: true,
  });

  if (policyTypes.has(resourceType)) {
    for (const r of [resource, previous, response.json as Resource | undefined]) {
      if (r && typeof r === 'object' && 'resourceType' in r) for (const p of patientsOf(r)) x.deps.store.invalidate(p);
    }
    if (resourceType === 'Patient' && id) x.deps.store.invalidate(id);
  }

  if (response.status >= 400) {
    // The upstream's own outcome may echo stored data; the client gets the status with the gateway's words.
    const status = response.status === 404 || response.status === 410 ? 404 : response.status === 409 || response.status === 412 ? response.status : 400;
    throw new GatewayError(status, status === 404 ? 'not-found' : status === 400 ? 'invalid' : 'conflict', `the upstream server refused the ${kind}`);
  }
  const written = response.json as Resource | undefined;
  const out: Record<string, string> = {};
  if (written?.meta?.versionId) out.ETag = `W/"${written.meta.versionId}"`;
  if (written?.id && (kind === 'create' || kind === 'update')) out.Location = `${x.deps.fhirBase}/${resourceType}/${written.id}/_history/${written.meta?.versionId ?? '1'}`;
  for (const p of patientsOf(written ?? resource ?? previous ?? { resourceType: 'Basic' } as Resource)) x.namedPatients.add(p);
  return { status: response.status, body: kind === 'delete' ? undefined : written, headers: out };
}
