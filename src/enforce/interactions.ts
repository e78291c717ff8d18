// The read surfaces (SPEC §5): read, vread, search (type, system, compartment, POST), history, paging and
// $everything. Each refuses what it can before the upstream is asked, then decides every resource it got.
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { isPatientCompartmentType } from '../fhir/compartment.ts';
import { forbidden, GatewayError, notFound } from '../fhir/outcome.ts';
import type { ScopeInteraction } from '../provenance/context.ts';
import { keyType, localKey, referenceKey } from '../fhir/references.ts';
import { confineSearch, patientsNamedBy } from '../provenance/confine.ts';
import { allows, grantedQueries, holdsAuditEventScope, mayConcernPatient } from '../provenance/scopes.ts';
import { upstreamFailure } from '../upstream/index.ts';
import type { CursorState } from './cursor.ts';
import type { Exchange, Reply } from './exchange.ts';
import { listingBundle, runListing, upstreamPageSize, type ListingRequest } from './listing.ts';
import { withheldNotices } from './notices.ts';
import { maxPageSize, sanitiseSearch } from './search-params.ts';
import { flat } from '../fhir/flat.ts';

export function requireScope(x: Exchange, resourceType: string, interaction: ScopeInteraction): void {
  if (!allows(x.ctx, resourceType, interaction)) throw forbidden();
  // Audit records are for auditors: a user/ or system/ scope naming AuditEvent itself, never a wildcard
  // or a patient-context token (SPEC §6).
  if (resourceType === 'AuditEvent' && !holdsAuditEventScope(x.ctx, interaction)) throw forbidden();
}

/** A token confined to its launch patient may name only that patient: refused before any data is read (SPEC §3). */
/** A request about `Patient/{id}` names that patient: a token confined elsewhere is refused before any read. */
export function confineInstance(x: Exchange, resourceType: string, id: string): void {
  if (resourceType !== 'Patient') return;
  x.namedPatients.add(id);
  if (!mayConcernPatient(x.ctx, id)) throw forbidden();
}

function etagHeaders(resource: Resource): Record<string, string> {
  const headers: Record<string, string> = {};
  if (resource.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
  if (resource.meta?.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  return headers;
}

async function readUpstreamResource(x: Exchange, path: string, resourceType: string, id: string): Promise<Resource | undefined> {
  const { status, resource } = await x.deps.upstream.readJson<Resource>(path, { requestId: x.ctx.requestId });
  if (status === 404 || status === 410) return undefined;
  if (status >= 400) throw upstreamFailure(status, { failed: 'the upstream server failed to read the resource' });
  // An upstream that answers with another resource than asked is not trusted with a disclosure.
  if (resource.resourceType !== resourceType || resource.id !== id) throw upstreamFailure(status, { failed: 'the upstream answered with a different resource' });
  return resource;
}

/** Withheld after reading: concealed as not found (or 403 by policy); a harm refusal is stated to the patient. */
export function concealed(x: Exchange): GatewayError {
  const refusal = x.session.harmRefusals[0];
  if (refusal) {
    return new GatewayError(403, 'suppressed', refusal.text, {
      outcome: {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'suppressed', details: { coding: [{ system: 'https://disclosure-gateway.org/fhir/CodeSystem/disclosure', code: refusal.ground }], text: refusal.text } }],
      },
    });
  }
  return x.deps.policy.conceal === 403 ? forbidden() : notFound();
}

export async function read(x: Exchange, resourceType: string, id: string, versionId?: string): Promise<Reply> {
  requireScope(x, resourceType, 'r');
  confineInstance(x, resourceType, id);
  const current = await readUpstreamResource(x, `${resourceType}/${id}`, resourceType, id);
  if (!current) throw notFound();
  let target = current;
  if (versionId !== undefined && current.meta?.versionId !== versionId) {
    const version = await readUpstreamResource(x, `${resourceType}/${id}/_history/${versionId}`, resourceType, id);
    if (!version) throw notFound();
    // An older version is shown only while the current one may be: a label added later hides the history too.
    await x.session.prepare([current, version]);
    if (!x.session.decide(current, 'r', { record: false }).released) {
      x.session.decide(version, 'r');
      throw concealed(x);
    }
    target = version;
  }
  const contextPatients = target.resourceType === 'Binary' ? await binarySecurityContext(x, target) : undefined;
  await x.session.prepare([target], contextPatients ?? []);
  const verdict = x.session.decide(target, 'r', { patients: contextPatients, contextChecked: target.resourceType === 'Binary' });
  if (!verdict.released) throw concealed(x);
  return { status: 200, body: verdict.resource, headers: etagHeaders(verdict.resource) };
}

/**
 * A Binary is governed by its securityContext (FHIR R4 Binary): released only when the resource it names
 * may be seen, and decided for that resource's patients. Returns those patients.
 */
async function binarySecurityContext(x: Exchange, binary: Resource): Promise<string[] | undefined> {
  const reference = (binary as { securityContext?: { reference?: string } }).securityContext?.reference;
  if (!reference) return undefined;
  const relative = localKey(referenceKey(reference, x.deps.store.localBases));
  if (!relative) throw concealed(x); // another server's resource cannot vouch for a local Binary
  const [type, id] = [keyType(relative), relative.slice(relative.indexOf('/') + 1)];
  if (type === 'Patient') return [id];
  const context = await readUpstreamResource(x, relative, type, id);
  if (!context) throw concealed(x); // a context that cannot be read cannot vouch for the Binary
  await x.session.prepare([context]);
  const verdict = x.session.decide(context, 'r', { record: false });
  if (!verdict.released) {
    x.session.decide(context, 'r');
    throw concealed(x);
  }
  return verdict.patients.length > 0 ? [...verdict.patients] : undefined;
}

function withPaging(path: string, params: URLSearchParams, count: number): string {
  const query = new URLSearchParams(params);
  query.set('_count', String(upstreamPageSize(count)));
  const qs = query.toString();
  return qs ? `${path}?${qs}` : path;
}

/**
 * A type-level search continues on its own URL (`Type?_cursor=…&_count=n`): clients that rebuild the next
 * page from the link's query on the type (MedplumClient.searchResourcePages) can follow it. Others use `_page`.
 */
function nextLink(base: string, state: CursorState, sealed: string): string {
  if (state.interaction === 'search-type' && state.resourceType) return flat`${base}/${state.resourceType}?_cursor=${sealed}&_count=${state.count}`;
  return flat`${base}/_page?cursor=${sealed}`;
}

/** A listing's `self` link: the gateway's own URL for the path and the query as the client sent it. */
function selfLink(x: Exchange, path: string): string {
  return x.rawQuery ? flat`${x.deps.fhirBase}/${path}?${x.rawQuery}` : flat`${x.deps.fhirBase}/${path}`;
}

/** `Type?_cursor=…`: a continuation, not a new search; anything but paging and format parameters is refused. */
async function continuation(x: Exchange, resourceType: string, params: URLSearchParams): Promise<Reply> {
  const cursors = params.getAll('_cursor');
  for (const name of params.keys()) {
    if (!['_cursor', '_count', '_format', '_pretty'].includes(name)) throw new GatewayError(400, 'invalid', 'a paging cursor cannot be combined with search parameters');
  }
  if (cursors.length !== 1) throw new GatewayError(400, 'invalid', 'invalid paging cursor');
  return page(x, cursors[0], { interaction: 'search-type', resourceType });
}

async function respondWithListing(x: Exchange, request: ListingRequest, self: string, type: 'searchset' | 'history'): Promise<Reply> {
  const started = performance.now();
  const result = await runListing(x.deps.upstream, x.session, request, x.deps.fhirBase, {
    requestId: x.ctx.requestId,
    pageLease: x.pageLease,
    currentVersionGate: request.history ? (resources) => currentVersionGate(x, resources) : undefined,
  });
  x.deps.metrics.decisionLatency.observe((performance.now() - started) / 1000);
  // An instance history with every version hidden answers as a read would: concealed, exactly like a
  // resource that does not exist (an empty history would say that it does).
  if (request.interaction === 'history-instance' && result.entries.length === 0 && result.hidden > 0) throw concealed(x);
  const next = result.next ? nextLink(x.deps.fhirBase, result.next, await x.deps.cursors.seal(result.next, x.ctx)) : undefined;
  const notices = type === 'searchset' ? withheldNotices(x.session, x.ctx, x.deps.policy) : [];
  for (const id of x.namedPatients) x.session.touch(id);
  return { status: 200, body: listingBundle(type, result, { self, next }, notices) };
}

/** Narrows the upstream search to the granted query when there is exactly one; a union is filtered per resource. */
function narrowToGrantedQuery(x: Exchange, resourceType: string, params: URLSearchParams): void {
  const granted = grantedQueries(x.ctx, resourceType, 's');
  if (granted === 'none') throw forbidden();
  if (granted === 'unrestricted' || granted.length !== 1) return;
  for (const [name, values] of granted[0]) params.append(name, values.join(','));
}

const patientIdentifierChain = /^(patient|subject)(?::Patient)?\.identifier$/;

/**
 * `patient.identifier=system|value` (an MRN) is the one chain the gateway answers itself: it looks the
 * patients up with its own credential and searches by their ids, so no chain ever tests hidden data
 * upstream. A patient/ token keeps only its own patient. Undefined when no patient matched.
 */
async function resolvePatientIdentifiers(x: Exchange, params: URLSearchParams): Promise<URLSearchParams | undefined> {
  if (![...params.keys()].some((name) => patientIdentifierChain.test(name))) return params;
  const resolved = new URLSearchParams();
  for (const [name, value] of params) {
    const chain = patientIdentifierChain.exec(name);
    if (!chain) {
      resolved.append(name, value);
      continue;
    }
    const ids = new Set<string>();
    for (const identifier of value.split(',').filter(Boolean)) {
      const { status, resource } = await x.deps.upstream.readJson<Bundle>(`Patient?identifier=${encodeURIComponent(identifier)}&_count=50`, { requestId: x.ctx.requestId });
      if (status >= 400 || resource.resourceType !== 'Bundle') throw upstreamFailure(status, { failed: 'the upstream failed to look up the patient identifier' });
      for (const e of resource.entry ?? []) if (e.resource?.resourceType === 'Patient' && e.resource.id) ids.add(e.resource.id);
    }
    const allowed = [...ids].filter((id) => mayConcernPatient(x.ctx, id));
    if (allowed.length === 0) return undefined;
    resolved.append(chain[1], allowed.map((id) => `Patient/${id}`).join(','));
  }
  return resolved;
}

export async function search(
  x: Exchange,
  target: { readonly resourceType?: string; readonly compartmentId?: string; readonly interaction: 'search-type' | 'search-system' | 'search-compartment' },
  params: URLSearchParams,
): Promise<Reply> {
  const { resourceType, compartmentId, interaction } = target;
  if (interaction === 'search-type' && resourceType && params.has('_cursor')) return continuation(x, resourceType, params);
  // SPEC §6: a query is about the patients it names, also when it is refused before anything is read.
  for (const id of patientsNamedBy(resourceType, params, compartmentId ? { type: 'Patient', id: compartmentId } : undefined).ids) x.namedPatients.add(id);
  if (resourceType) requireScope(x, resourceType, 's');
  else requireScope(x, '*', 's');
  // SPEC §5: Binary is anyone's data until its securityContext says whose; only system/ clients list it by type.
  if (resourceType === 'Binary' && interaction === 'search-type' && x.requester.clientKind !== 'system') throw forbidden();
  if (compartmentId) {
    requireScope(x, 'Patient', 's');
    confineInstance(x, 'Patient', compartmentId);
    if (resourceType && !isPatientCompartmentType(resourceType)) throw new GatewayError(400, 'not-supported', 'that type has no Patient compartment');
  }
  const resolved = await resolvePatientIdentifiers(x, params);
  if (!resolved) {
    // No patient the requester may search carries that identifier: an empty answer, as for any miss.
    return { status: 200, body: listingBundle('searchset', { entries: [] }, { self: selfLink(x, resourceType ?? '') }, []) };
  }
  const sanitised = sanitiseSearch(resourceType, resolved);
  const confined = confineSearch(x.ctx, x.deps.policy, {
    resourceType,
    compartment: compartmentId ? { type: 'Patient', id: compartmentId } : undefined,
    params: sanitised.upstream,
    interaction,
  });
  for (const id of patientsNamedBy(resourceType, confined, compartmentId ? { type: 'Patient', id: compartmentId } : undefined).ids) x.namedPatients.add(id);
  if (resourceType) narrowToGrantedQuery(x, resourceType, confined);
  const path = compartmentId ? `Patient/${compartmentId}/${resourceType}` : (resourceType ?? '');
  const self = selfLink(x, path);
  return respondWithListing(
    x,
    {
      interaction,
      resourceType,
      upstream: withPaging(path, confined, sanitised.count),
      skip: 0,
      count: sanitised.count,
      offset: sanitised.offset,
      includes: sanitised.includes,
      criteria: sanitised.criteria,
      view: sanitised.view,
      history: false,
      access: 's',
      query: x.rawQuery,
    },
    self,
    'searchset',
  );
}

export async function history(x: Exchange, target: { readonly resourceType?: string; readonly id?: string }, params: URLSearchParams): Promise<Reply> {
  const { resourceType, id } = target;
  const interaction = id ? 'history-instance' : resourceType ? 'history-type' : 'history-system';
  requireScope(x, resourceType ?? '*', id ? 'r' : 's');
  if (resourceType && id) confineInstance(x, resourceType, id);
  else confineSearch(x.ctx, x.deps.policy, { resourceType, params: new URLSearchParams(), interaction: resourceType ? 'history-type' : 'history-system' });
  const upstreamParams = new URLSearchParams();
  let count = 20;
  for (const [name, value] of params) {
    if (name === '_count') count = Math.min(maxPageSize, Math.max(1, Number.parseInt(value, 10) || 20));
    else if (name === '_since' || name === '_at') upstreamParams.append(name, value);
    else if (name !== '_format' && name !== '_pretty') throw new GatewayError(400, 'not-supported', `history parameter ${name} is not supported`);
  }
  const path = [resourceType, id, '_history'].filter(Boolean).join('/');
  return respondWithListing(
    x,
    {
      interaction,
      resourceType,
      upstream: withPaging(path, upstreamParams, count),
      skip: 0,
      count,
      offset: 0,
      includes: [],
      criteria: [],
      view: {},
      history: true,
      access: id ? 'r' : 's',
      query: x.rawQuery,
    },
    selfLink(x, path),
    'history',
  );
}

/** Refs among history entries whose current version is withheld from this requester. */
async function currentVersionGate(x: Exchange, resources: Resource[]): Promise<Set<string>> {
  const idsByType = new Map<string, Set<string>>();
  for (const r of resources) if (r.id) (idsByType.get(r.resourceType) ?? idsByType.set(r.resourceType, new Set()).get(r.resourceType))?.add(r.id);
  const blocked = new Set<string>();
  for (const [type, ids] of idsByType) {
    const currents: Resource[] = [];
    const list = [...ids];
    for (let i = 0; i < list.length; i += 100) {
      const slice = list.slice(i, i + 100);
      const { resource: bundle, status } = await x.deps.upstream.readJson<Bundle>(`${type}?_id=${slice.join(',')}&_count=${slice.length}`, { requestId: x.ctx.requestId });
      if (status === 400) {
        // Not every server searches every type by _id (Binary): read each current version instead.
        for (const id of slice) {
          const current = await readUpstreamResource(x, `${type}/${id}`, type, id);
          if (current) currents.push(current);
        }
        continue;
      }
      if (status >= 400 || bundle.resourceType !== 'Bundle') throw upstreamFailure(status, { failed: 'the upstream failed to read current versions' });
      for (const e of bundle.entry ?? []) if (e.resource && e.search?.mode !== 'include') currents.push(e.resource);
    }
    await x.session.prepare(currents);
    for (const current of currents) if (!x.session.decide(current, 'r', { record: false }).released) blocked.add(`${type}/${current.id}`);
  }
  return blocked;
}

export async function everything(x: Exchange, patientId: string, params: URLSearchParams): Promise<Reply> {
  requireScope(x, 'Patient', 'r');
  confineInstance(x, 'Patient', patientId);
  const upstreamParams = new URLSearchParams();
  let count = 20;
  for (const [name, value] of params) {
    if (name === '_count') count = Math.min(maxPageSize, Math.max(1, Number.parseInt(value, 10) || 20));
    else if (name === '_since' || name === '_type' || name === 'start' || name === 'end') upstreamParams.append(name, value);
    else if (name !== '_format' && name !== '_pretty') throw new GatewayError(400, 'not-supported', `$everything parameter ${name} is not supported`);
  }
  const path = `Patient/${patientId}/$everything`;
  return respondWithListing(
    x,
    { interaction: 'operation', resourceType: 'Patient', upstream: withPaging(path, upstreamParams, count), skip: 0, count, offset: 0, includes: [], criteria: [], view: {}, history: false, access: 's', query: x.rawQuery },
    selfLink(x, path),
    'searchset',
  );
}

/** A next page: the cursor carries where the upstream stands; the scopes are checked again as for the first page. */
export async function page(x: Exchange, cursor: string, expected?: Pick<CursorState, 'interaction' | 'resourceType'>): Promise<Reply> {
  const state: CursorState = await x.deps.cursors.open(cursor, x.ctx);
  // A cursor continues the listing it was issued for, on that listing's own path.
  if (expected && (state.interaction !== expected.interaction || state.resourceType !== expected.resourceType)) throw new GatewayError(400, 'invalid', 'invalid paging cursor');
  const history = state.interaction.startsWith('history');
  const access: 'r' | 's' = state.interaction === 'history-instance' ? 'r' : 's';
  // The first page's own scope check, again: $everything needs Patient read, the rest their type's scope.
  if (state.interaction === 'operation') requireScope(x, 'Patient', 'r');
  else requireScope(x, state.resourceType && state.interaction !== 'search-system' && state.interaction !== 'history-system' ? state.resourceType : '*', access);
  return respondWithListing(
    x,
    { ...state, offset: 0, history, access },
    flat`${x.deps.fhirBase}/_page?cursor=${cursor}`,
    history ? 'history' : 'searchset',
  );
}
