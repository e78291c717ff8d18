// medplum's MemoryRepository (storage, versioning, update/patch/conditional logic) extended with what
// an HTTP upstream needs and 5.2.13 still lacks (docs/medplum5.md, test/embedded/medplum5-gaps.test.ts):
// indexed search, bare-id references, Patient compartment, $everything, stable type/system/instance
// history, tombstones. _include/_revinclude are 5.x's own (getExtraEntries), fed by the indexed search.
import {
  badRequest,
  deepClone,
  generateId,
  gone,
  isResourceType,
  matchesSearchRequest,
  notFound,
  OperationOutcomeError,
  splitSearchOnComma,
  type FhirPathAtom,
  type Filter,
  type SearchRequest,
  type WithId,
} from '@medplum/core';
import { getExtraEntries, MemoryRepository, type CreateResourceOptions, type ReadHistoryOptions, type UpdateResourceOptions } from '@medplum/fhir-router';
import type { Bundle, BundleEntry, OperationOutcome, Resource } from '@medplum/fhirtypes';
import { patientCompartmentTypes } from '../../fhir/compartment.ts';
import { loadFhirDefinitions } from '../../fhir/definitions.ts';
import {
  expandBareIds,
  isRelativeReference,
  parsedExpression,
  referencesOf,
  requireSearchParameter,
  searchParameter,
  sortResources,
} from './search-params.ts';

type StoredResource = WithId<Resource>;
type ChangeMethod = 'POST' | 'PUT' | 'DELETE';

/** One entry of the change log: a version written or a delete. */
export interface Change {
  readonly seq: number;
  readonly resourceType: string;
  readonly id: string;
  readonly versionId: string;
  readonly lastUpdated: string;
  readonly method: ChangeMethod;
  readonly status: string;
  /** The stored version; absent for a delete. Never handed out without a clone. */
  readonly resource?: StoredResource;
}

interface Live {
  readonly resource: StoredResource;
  /** Creation order, the default order of search results. */
  readonly position: number;
}

/** Exact index of one reference search parameter: reference string → ids holding it. */
interface ReferenceIndex {
  readonly atom: FhirPathAtom;
  readonly byReference: Map<string, Set<string>>;
  readonly referencesById: Map<string, string[]>;
}

export interface PageOptions {
  readonly offset?: number;
  readonly count?: number;
  /** Only changes at or after this instant (`_since`). */
  readonly since?: string;
}

export { patientCompartmentTypes };

function key(resourceType: string, id: string): string {
  return `${resourceType}/${id}`;
}

export class EmbeddedRepository extends MemoryRepository {
  private readonly live = new Map<string, Map<string, Live>>();
  private readonly tombstones = new Set<string>();
  private readonly log: Change[] = [];
  private readonly logByType = new Map<string, Change[]>();
  private readonly logByKey = new Map<string, Change[]>();
  private readonly referenceIndexes = new Map<string, Map<string, ReferenceIndex>>();
  private nextPosition = 0;
  private lastTimestamp = 0;

  constructor() {
    super();
    loadFhirDefinitions();
  }

  override clear(): void {
    super.clear();
    this.live.clear();
    this.tombstones.clear();
    this.log.length = 0;
    this.logByType.clear();
    this.logByKey.clear();
    this.referenceIndexes.clear();
  }

  /** Server-assigned, strictly increasing instants so history order and `_lastUpdated` agree. */
  private timestamp(): string {
    this.lastTimestamp = Math.max(Date.now(), this.lastTimestamp + 1);
    return new Date(this.lastTimestamp).toISOString();
  }

  // 5.x: updateResource calls createResource(resource, undefined, true); `update` also tells PUT from POST.
  override async createResource<T extends Resource>(resource: T, options?: CreateResourceOptions, update = false): Promise<WithId<T>> {
    if (!isResourceType(resource.resourceType)) {
      throw new OperationOutcomeError(badRequest(`Unknown resource type '${String(resource.resourceType)}'`));
    }
    // The server assigns meta.versionId and meta.lastUpdated (R4 http §3.1.0.2.1), never the client; seeding
    // mode keeps ours, so that history order and `_lastUpdated` agree (5.x would stamp Date.now(), not increasing).
    const input = { ...resource, meta: { ...resource.meta, versionId: generateId(), lastUpdated: this.timestamp() } };
    const stored = (await this.withSeeding(() => super.createResource(input, options, update))) as StoredResource;
    this.record(stored, update ? 'PUT' : 'POST');
    return deepClone(stored) as WithId<T>;
  }

  override async updateResource<T extends Resource>(resource: T, options?: UpdateResourceOptions): Promise<WithId<T>> {
    if (resource.id && this.tombstones.has(key(resource.resourceType, resource.id)) && options?.ifMatch) {
      throw new OperationOutcomeError(gone);
    }
    return super.updateResource(resource, options);
  }

  override async readResource<T extends Resource>(resourceType: string, id: string): Promise<WithId<T>> {
    if (this.tombstones.has(key(resourceType, id))) throw new OperationOutcomeError(gone);
    return (await super.readResource(resourceType, id)) as WithId<T>;
  }

  override async readVersion<T extends Resource>(resourceType: string, id: string, versionId: string): Promise<WithId<T>> {
    const version = this.logByKey.get(key(resourceType, id))?.find((c) => c.versionId === versionId);
    if (!version) throw new OperationOutcomeError(notFound);
    if (!version.resource) throw new OperationOutcomeError(gone);
    return deepClone(version.resource) as WithId<T>;
  }

  override async deleteResource(resourceType: string, id: string): Promise<void> {
    const k = key(resourceType, id);
    if (this.tombstones.has(k)) return; // deleting a deleted resource succeeds (R4 http §3.1.0.7.1)
    await super.deleteResource(resourceType, id);
    const live = this.live.get(resourceType)?.get(id);
    if (live) this.unindex(live.resource);
    this.live.get(resourceType)?.delete(id);
    this.tombstones.add(k);
    this.append({ resourceType, id, versionId: generateId(), lastUpdated: this.timestamp(), method: 'DELETE', status: '204 No Content' });
  }

  private record(stored: StoredResource, method: ChangeMethod): void {
    const { resourceType, id } = stored;
    const k = key(resourceType, id);
    let byId = this.live.get(resourceType);
    if (!byId) {
      byId = new Map();
      this.live.set(resourceType, byId);
    }
    const previous = byId.get(id);
    if (previous) this.unindex(previous.resource);
    byId.set(id, { resource: stored, position: previous?.position ?? this.nextPosition++ });
    this.tombstones.delete(k);
    this.index(stored);
    this.append({
      resourceType,
      id,
      versionId: stored.meta?.versionId as string,
      lastUpdated: stored.meta?.lastUpdated as string,
      method,
      status: previous ? '200 OK' : '201 Created',
      resource: stored,
    });
  }

  private append(change: Omit<Change, 'seq'>): void {
    const entry: Change = { ...change, seq: this.log.length };
    this.log.push(entry);
    let byType = this.logByType.get(change.resourceType);
    if (!byType) {
      byType = [];
      this.logByType.set(change.resourceType, byType);
    }
    byType.push(entry);
    const k = key(change.resourceType, change.id);
    let byKey = this.logByKey.get(k);
    if (!byKey) {
      byKey = [];
      this.logByKey.set(k, byKey);
    }
    byKey.push(entry);
  }

  // ---- reference indexes (built lazily per type and parameter, kept current on every write) ----

  private referenceIndex(resourceType: string, code: string): ReferenceIndex {
    let byCode = this.referenceIndexes.get(resourceType);
    if (!byCode) {
      byCode = new Map();
      this.referenceIndexes.set(resourceType, byCode);
    }
    let index = byCode.get(code);
    if (!index) {
      index = { atom: parsedExpression(resourceType, code), byReference: new Map(), referencesById: new Map() };
      byCode.set(code, index);
      for (const { resource } of this.live.get(resourceType)?.values() ?? []) addToIndex(index, resource);
    }
    return index;
  }

  private index(resource: StoredResource): void {
    for (const index of this.referenceIndexes.get(resource.resourceType)?.values() ?? []) addToIndex(index, resource);
  }

  private unindex(resource: StoredResource): void {
    for (const index of this.referenceIndexes.get(resource.resourceType)?.values() ?? []) {
      for (const reference of index.referencesById.get(resource.id) ?? []) {
        index.byReference.get(reference)?.delete(resource.id);
      }
      index.referencesById.delete(resource.id);
    }
  }

  private idsReferencing(resourceType: string, code: string, references: readonly string[]): Set<string> {
    const index = this.referenceIndex(resourceType, code);
    const ids = new Set<string>();
    for (const reference of references) for (const id of index.byReference.get(reference) ?? []) ids.add(id);
    return ids;
  }

  private inOrder(resourceType: string, ids: Iterable<string>): StoredResource[] {
    const byId = this.live.get(resourceType);
    const found: Live[] = [];
    for (const id of ids) {
      const live = byId?.get(id);
      if (live) found.push(live);
    }
    return found.sort((a, b) => a.position - b.position).map((l) => l.resource);
  }

  // ---- search ----

  /** Ids of `resourceType` in the compartment of Patient/`patientId` (any compartment param refers to it). */
  private compartmentIds(resourceType: string, patientId: string): Set<string> {
    const params = patientCompartmentTypes().get(resourceType);
    if (!params) throw new OperationOutcomeError(badRequest(`${resourceType} is not in the Patient compartment`));
    const ids = new Set<string>();
    for (const param of params) {
      for (const id of this.idsReferencing(resourceType, param, [`Patient/${patientId}`])) ids.add(id);
    }
    if (resourceType === 'Patient' && this.live.get('Patient')?.has(patientId)) ids.add(patientId);
    return ids;
  }

  /** Every match of a search, in order, uncloned. */
  private matches(request: SearchRequest, compartmentOf?: string): StoredResource[] {
    const { resourceType } = request;
    if (!isResourceType(resourceType)) {
      throw new OperationOutcomeError(unknownType(resourceType));
    }
    let candidates: Set<string> | undefined = compartmentOf ? this.compartmentIds(resourceType, compartmentOf) : undefined;
    const remaining: Filter[] = [];
    for (const raw of request.filters ?? []) {
      if (raw.code === '_has' || raw.code.includes('.')) {
        throw new OperationOutcomeError(badRequest(`Chained and _has search are not supported ('${raw.code}')`));
      }
      const param = requireSearchParameter(resourceType, raw.code);
      const filter = expandBareIds(resourceType, raw);
      const values = splitSearchOnComma(filter.value);
      if (param.type === 'reference' && filter.operator === 'eq' && values.every(isRelativeReference)) {
        // Exact: the index holds what medplum's matcher compares, so this filter needs no re-check.
        candidates = intersect(candidates, this.idsReferencing(resourceType, filter.code, values));
      } else if (filter.code === '_id' && filter.operator === 'eq') {
        candidates = intersect(candidates, new Set(values));
        remaining.push(filter);
      } else {
        remaining.push(filter);
      }
    }
    const pool = candidates ? this.inOrder(resourceType, candidates) : [...(this.live.get(resourceType)?.values() ?? [])].map((l) => l.resource);
    const filtered = remaining.length === 0 ? pool : pool.filter((r) => matchesSearchRequest(r, { resourceType, filters: remaining }));
    return sortResources(resourceType, filtered, request.sortRules ?? []);
  }

  override async search<T extends Resource>(request: SearchRequest<T>): Promise<Bundle<WithId<T>>> {
    return this.searchIn(request) as Promise<Bundle<WithId<T>>>;
  }

  /** A search, optionally inside the compartment of one patient (`GET /Patient/P/Type?…`). */
  async searchIn(request: SearchRequest, compartmentOf?: string): Promise<Bundle> {
    if (request.types?.length || request.resourceType === ('MultipleTypes' as string)) {
      throw new OperationOutcomeError(badRequest('Searching several types at once (_type) is not supported'));
    }
    this.checkIncludes(request);
    const all = this.matches(request, compartmentOf);
    const offset = Number.isFinite(request.offset) ? Math.max(0, request.offset as number) : 0;
    const count = Number.isFinite(request.count) ? Math.max(0, request.count as number) : undefined;
    const page = count === undefined ? all.slice(offset) : all.slice(offset, offset + count);
    const entry: BundleEntry[] = page.map((r) => ({ resource: deepClone(r), search: { mode: 'match' } }));
    if (page.length > 0 && (request.include?.length || request.revInclude?.length)) {
      // _include/_revinclude: 5.x's own include logic (test/embedded/medplum5-gaps.test.ts); its
      // _revinclude searches come back through this indexed search. The page size is capped elsewhere.
      try {
        await getExtraEntries(this, request, page, entry, { maxResults: Number.POSITIVE_INFINITY });
      } catch (err) {
        if (err instanceof OperationOutcomeError) throw err;
        throw new OperationOutcomeError(badRequest(err instanceof Error ? err.message : String(err)));
      }
    }
    return { resourceType: 'Bundle', type: 'searchset', total: all.length, ...(entry.length ? { entry } : {}) };
  }

  /**
   * Rejects `_include` / `_revinclude` targets that are not reference parameters (a bad search answers
   * 400, never a silently smaller result); 5.x's getExtraEntries would skip them without a word.
   */
  private checkIncludes(request: SearchRequest): void {
    for (const target of [...(request.include ?? []), ...(request.revInclude ?? [])]) {
      if (!isResourceType(target.resourceType)) {
        throw new OperationOutcomeError(badRequest(`Unknown resource type '${target.resourceType}' in include`));
      }
      if (searchParameter(target.resourceType, target.searchParam)?.type !== 'reference') {
        throw new OperationOutcomeError(badRequest(`'${target.resourceType}:${target.searchParam}' is not a reference parameter`));
      }
    }
  }

  /** `Patient/P/$everything`: the patient, then every compartment resource by type in definition order. */
  async everything(patientId: string, page: PageOptions): Promise<Bundle> {
    const patient = (await this.readResource('Patient', patientId)) as StoredResource;
    const members: StoredResource[] = [];
    for (const resourceType of patientCompartmentTypes().keys()) {
      if (resourceType === 'Patient' || !this.live.has(resourceType)) continue;
      members.push(...this.inOrder(resourceType, this.compartmentIds(resourceType, patientId)));
    }
    const offset = Math.max(0, page.offset ?? 0);
    const all: StoredResource[] = [patient, ...members];
    const slice = page.count === undefined ? all.slice(offset) : all.slice(offset, offset + page.count);
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      total: all.length,
      ...(slice.length ? { entry: slice.map((r) => ({ resource: r === patient ? r : deepClone(r), search: { mode: 'match' as const } })) } : {}),
    };
  }

  // ---- Bulk Data $export ----

  /** Types that hold at least one current resource, in creation order of their first resource. */
  storedTypes(): string[] {
    return [...this.live.entries()].filter(([, byId]) => byId.size > 0).map(([type]) => type);
  }

  /**
   * Current resources of one type for `$export`, in creation order and uncloned (the caller only
   * serialises them): all of them, or those in the compartments of `patients`; `since` on lastUpdated.
   */
  exportResources(resourceType: string, patients?: readonly string[], since?: string): StoredResource[] {
    let found: StoredResource[];
    if (patients === undefined) {
      found = [...(this.live.get(resourceType)?.values() ?? [])].map((l) => l.resource);
    } else {
      const ids = new Set<string>();
      for (const patientId of patients) for (const id of this.compartmentIds(resourceType, patientId)) ids.add(id);
      found = this.inOrder(resourceType, ids);
    }
    return since === undefined ? found : found.filter((r) => (r.meta?.lastUpdated ?? '') >= since);
  }

  // ---- history (newest first, stable) ----

  /** The change that wrote a version, e.g. to tell an update-as-create (201) from an update (200). */
  changeOf(resourceType: string, id: string, versionId: string): Change | undefined {
    return this.logByKey.get(key(resourceType, id))?.find((c) => c.versionId === versionId);
  }

  override async readHistory<T extends Resource>(resourceType: string, id: string, options?: ReadHistoryOptions): Promise<Bundle<WithId<T>>> {
    const changes = this.logByKey.get(key(resourceType, id));
    if (!changes) throw new OperationOutcomeError(notFound);
    return historyBundle(changes, { offset: options?.offset, count: options?.limit }) as Bundle<WithId<T>>;
  }

  /** `GET /Type/_history`. */
  typeHistory(resourceType: string, page: PageOptions): Bundle {
    if (!isResourceType(resourceType)) throw new OperationOutcomeError(unknownType(resourceType));
    return historyBundle(this.logByType.get(resourceType) ?? [], page);
  }

  /** `GET /_history`. */
  systemHistory(page: PageOptions): Bundle {
    return historyBundle(this.log, page);
  }
}

function unknownType(resourceType: string): OperationOutcome {
  return { ...notFound, issue: [{ severity: 'error', code: 'not-found', details: { text: `Unknown resource type '${resourceType}'` } }] };
}

function addToIndex(index: ReferenceIndex, resource: StoredResource): void {
  const references = referencesOf(resource, index.atom);
  index.referencesById.set(resource.id, references);
  for (const reference of references) {
    let ids = index.byReference.get(reference);
    if (!ids) {
      ids = new Set();
      index.byReference.set(reference, ids);
    }
    ids.add(resource.id);
  }
}

function intersect(a: Set<string> | undefined, b: Set<string>): Set<string> {
  if (!a) return b;
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  return new Set([...small].filter((id) => large.has(id)));
}

function historyBundle(changes: readonly Change[], page: PageOptions): Bundle {
  const selected: Change[] = [];
  for (let i = changes.length - 1; i >= 0; i--) {
    const change = changes[i];
    if (page.since && change.lastUpdated < page.since) break; // changes are in time order
    selected.push(change);
  }
  const offset = Math.max(0, page.offset ?? 0);
  const slice = page.count === undefined ? selected.slice(offset) : selected.slice(offset, offset + page.count);
  const entry: BundleEntry[] = slice.map((c) => ({
    ...(c.resource ? { resource: deepClone(c.resource) } : {}),
    request: { method: c.method, url: c.method === 'POST' ? c.resourceType : key(c.resourceType, c.id) },
    response: { status: c.status, etag: `W/"${c.versionId}"`, lastModified: c.lastUpdated },
  }));
  return { resourceType: 'Bundle', type: 'history', total: selected.length, ...(entry.length ? { entry } : {}) };
}
