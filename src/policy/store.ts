// The policy information point (ARCHITECTURE: PIP): per patient, the Consents, legal restrictions,
// harm determinations and actor facts the decision engine needs (SPEC §4), read from the upstream
// with the gateway's credential and cached within SPEC §4.6 `cache` bounds.
import type {
  CareTeam,
  Consent,
  Encounter,
  Flag,
  Group,
  Identifier,
  Patient,
  PractitionerRole,
  Resource,
} from '@medplum/fhirtypes';
import type { DecisionPolicy } from '../config/policy.ts';
import type { PatientPolicyInputs, Requester } from '../decide/types.ts';
import { validatePolicyResource } from '../decide/index.ts';
import { referencesIn } from '../fhir/references.ts';
import { DG_CODES } from '../fhir/systems.ts';
import type { ClientKind, RequestContext } from '../provenance/context.ts';
import type { UpstreamClient } from '../upstream/client.ts';
import { UpstreamError } from '../upstream/errors.ts';
import { LruMap } from './lru.ts';
import {
  consentPatientReference,
  consentProvisions,
  isFhirId,
  normaliseReference,
  periodIsCurrent,
  referenceType,
} from './references.ts';

export interface PolicyStoreObserver {
  onCacheHit?(): void;
  onCacheMiss?(): void;
  /** One completed upstream load of a patient's inputs, in milliseconds. */
  onLoad?(ms: number): void;
  onLoadError?(err: unknown): void;
  /** A poll cycle finished; `invalidated` counts the patients it dropped from the cache. */
  onPoll?(invalidated: number): void;
  onPollError?(err: unknown): void;
}

export interface PolicyStoreOptions {
  upstream: UpstreamClient;
  policy: DecisionPolicy;
  /** Clock for cache ages (ms since epoch). */
  now?: () => number;
  observer?: PolicyStoreObserver;
  /** Change-poll period; default half the cache TTL (at least 1 s). */
  pollIntervalMs?: number;
  /** `_count` of every upstream search (default 100). */
  pageSize?: number;
  /** Pages read of a Consent or Flag search before the load fails closed (default 50). */
  maxPages?: number;
  /** Pages of a patient's Encounters read for care relationships (default 5; the rest is ignored). */
  maxEncounterPages?: number;
  /** How far back each poll looks past the newest change already seen (default 5 s), for late commits. */
  pollOverlapMs?: number;
}

export const HARM_DETERMINATION_CODE = 'harm-determination';
const ACTOR_IDENTIFIER_TYPES = new Set(['Practitioner', 'Organization', 'RelatedPerson', 'PractitionerRole']);
const CARE_PROVIDER_TYPES = new Set(['Practitioner', 'PractitionerRole']);
const POLLED_TYPES = ['Consent', 'Flag', 'Group', 'CareTeam'] as const;

/** What the store knows about one actor resource (Practitioner, PractitionerRole, Organization …). */
interface ActorFacts {
  readonly found: boolean;
  readonly identifiers: readonly string[];
  /** PractitionerRole.practitioner / .organization. */
  readonly practitioner?: string;
  readonly organization?: string;
}

interface Cached<T> {
  readonly value: T;
  readonly loadedAt: number;
  /** Every resource reference the value was built from, for poll-driven invalidation. */
  readonly dependsOn: ReadonlySet<string>;
}

interface Flight<T> {
  readonly promise: Promise<T>;
  /** Set when invalidated mid-load: the result is handed to its waiters but not cached. */
  stale: boolean;
}

interface LoadResult {
  readonly inputs: PatientPolicyInputs;
  readonly dependsOn: ReadonlySet<string>;
}

export class PolicyStore {
  readonly #upstream: UpstreamClient;
  readonly #now: () => number;
  readonly #observer: PolicyStoreObserver;
  readonly #ttlMs: number;
  readonly #pollIntervalMs: number;
  readonly #pageSize: number;
  readonly #maxPages: number;
  readonly #maxEncounterPages: number;
  readonly #pollOverlapMs: number;
  readonly #patients: LruMap<string, Cached<PatientPolicyInputs>>;
  readonly #actors: LruMap<string, Cached<ActorFacts>>;
  readonly #patientFlights = new Map<string, Flight<LoadResult>>();
  readonly #actorFlights = new Map<string, Flight<ActorFacts>>();
  #pollTimer: NodeJS.Timeout | undefined;
  #pollRunning: Promise<void> | undefined;
  #polling = false;
  /** Per polled type: the newest `meta.lastUpdated` seen (upstream clock). */
  readonly #pollCursor = new Map<string, number>();
  /** `Type/id/version` already acted on inside the overlap window. */
  readonly #pollSeen = new Map<string, number>();

  constructor(opts: PolicyStoreOptions) {
    this.#upstream = opts.upstream;
    this.#now = opts.now ?? Date.now;
    this.#observer = opts.observer ?? {};
    this.#ttlMs = opts.policy.cache.ttlSeconds * 1000;
    this.#pollIntervalMs = opts.pollIntervalMs ?? Math.max(1000, this.#ttlMs / 2);
    this.#pageSize = opts.pageSize ?? 100;
    this.#maxPages = opts.maxPages ?? 50;
    this.#maxEncounterPages = opts.maxEncounterPages ?? 5;
    this.#pollOverlapMs = opts.pollOverlapMs ?? 5000;
    this.#patients = new LruMap(opts.policy.cache.maxPatients);
    this.#actors = new LruMap(opts.policy.cache.maxPatients);
  }

  /** Patients currently cached. */
  get size(): number {
    return this.#patients.size;
  }

  /** The patient's policy inputs; rejects (the caller fails closed) when the upstream cannot be read. */
  async load(patientId: string, opts: { requestId?: string } = {}): Promise<PatientPolicyInputs> {
    if (!isFhirId(patientId)) throw new RangeError('patient id is not a FHIR id');
    const cached = this.#patients.get(patientId);
    if (cached && this.#fresh(cached)) {
      this.#observer.onCacheHit?.();
      return cached.value;
    }
    this.#observer.onCacheMiss?.();
    let flight = this.#patientFlights.get(patientId);
    if (!flight) {
      const started = this.#now();
      const promise = this.#loadPatient(patientId, opts.requestId);
      const current: Flight<LoadResult> = { promise, stale: false };
      flight = current;
      this.#patientFlights.set(patientId, current);
      promise.then(
        (result) => {
          this.#observer.onLoad?.(this.#now() - started);
          if (!current.stale && this.#ttlMs > 0) {
            this.#patients.set(patientId, { value: result.inputs, loadedAt: started, dependsOn: result.dependsOn });
          }
        },
        (err: unknown) => this.#observer.onLoadError?.(err), // failures are never cached
      ).finally(() => {
        if (this.#patientFlights.get(patientId) === current) this.#patientFlights.delete(patientId);
      });
    }
    return (await flight.promise).inputs;
  }

  /** Inputs for several patients (a resource naming several patients, SPEC §5); rejects if any load fails. */
  async loadMany(patientIds: readonly string[], opts: { requestId?: string; concurrency?: number } = {}): Promise<Map<string, PatientPolicyInputs>> {
    const unique = [...new Set(patientIds)];
    const result = new Map<string, PatientPolicyInputs>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < unique.length) {
        const id = unique[next++];
        result.set(id, await this.load(id, opts));
      }
    };
    const workers = Math.max(1, Math.min(opts.concurrency ?? 8, unique.length));
    await Promise.all(Array.from({ length: workers }, worker));
    return new Map(unique.map((id) => [id, result.get(id) as PatientPolicyInputs]));
  }

  /** Drops the patient's cached inputs; a load in flight is not cached (a Consent or Flag was written, SPEC §5). */
  invalidate(patientId: string): void {
    this.#patients.delete(patientId);
    const flight = this.#patientFlights.get(patientId);
    if (flight) {
      flight.stale = true;
      this.#patientFlights.delete(patientId);
    }
  }

  /** A policy write through the gateway (SPEC §5): every patient the resource concerns, and the actor facts it is, are dropped now. */
  invalidateResource(resource: Resource): void {
    this.#invalidateFor(resource);
    const ref = `${resource.resourceType}/${resource.id ?? ''}`;
    this.#actors.delete(ref);
    const flight = this.#actorFlights.get(ref);
    if (flight) {
      flight.stale = true;
      this.#actorFlights.delete(ref);
    }
  }

  /** Every reference under which rules may name the requester (SPEC §4.1 request attributes). */
  async resolveRequester(ctx: RequestContext): Promise<Requester> {
    const toRelative = (url: string): string | null => this.#upstream.rewriteUpstreamUrl(url);
    const references: string[] = [];
    const add = (ref: string | undefined): void => {
      if (ref && !references.includes(ref)) references.push(ref);
    };
    const fhirUser = ctx.fhirUser ? (normaliseReference(ctx.fhirUser, toRelative) ?? ctx.fhirUser) : undefined;
    const organization = ctx.organization ? (normaliseReference(ctx.organization, toRelative) ?? ctx.organization) : undefined;
    add(fhirUser);
    add(organization);
    const userFacts = fhirUser && normaliseReference(fhirUser, toRelative) ? await this.#actorFacts(fhirUser, ctx.requestId) : undefined;
    if (fhirUser && referenceType(fhirUser) === 'PractitionerRole' && userFacts) {
      add(userFacts.practitioner);
      add(userFacts.organization);
    }
    const identifiers = new Set<string>(userFacts?.identifiers ?? []);
    const others = references.filter((r) => r !== fhirUser && normaliseReference(r, toRelative) !== undefined);
    for (const facts of await Promise.all(others.map((r) => this.#actorFacts(r, ctx.requestId)))) {
      for (const id of facts.identifiers) identifiers.add(id);
    }
    return {
      ...(fhirUser ? { fhirUser } : {}),
      references,
      identifiers: [...identifiers].sort(),
      purposes: [...ctx.purposeOfUse],
      breakGlass: ctx.breakGlass.inEffect,
      clientKind: narrowestKind(ctx.kinds),
      action: 'access',
    };
  }

  /** Polls the upstream for changes every interval until stopPolling(). */
  startPolling(): void {
    if (this.#polling || this.#ttlMs === 0) return; // nothing is cached with a zero TTL
    this.#polling = true;
    const start = this.#now() - this.#pollOverlapMs;
    for (const type of POLLED_TYPES) if (!this.#pollCursor.has(type)) this.#pollCursor.set(type, start);
    this.#schedulePoll();
  }

  async stopPolling(): Promise<void> {
    this.#polling = false;
    if (this.#pollTimer) clearTimeout(this.#pollTimer);
    this.#pollTimer = undefined;
    await this.#pollRunning;
  }

  /**
   * One poll cycle: Consents, Flags, Groups and CareTeams changed since the last one invalidate the
   * patients they concern, so gateway instances sharing an upstream agree within the cache bound.
   * Deletions are not visible to `_lastUpdated`; the TTL bounds them.
   */
  async pollOnce(): Promise<number> {
    let invalidated = 0;
    const floor = this.#now() - this.#pollOverlapMs;
    for (const type of POLLED_TYPES) {
      const cursor = this.#pollCursor.get(type) ?? floor;
      const since = new Date(cursor - this.#pollOverlapMs).toISOString();
      const result = await this.#upstream.searchAll(
        `${type}?_lastUpdated=ge${encodeURIComponent(since)}&_sort=_lastUpdated&_count=${this.#pageSize}`,
        { maxPages: 10, onLimit: 'truncate' },
      );
      if (result.truncated) {
        // Too many changes to follow one by one: start again from nothing.
        invalidated += this.#patients.size;
        this.#patients.clear();
        for (const flight of this.#patientFlights.values()) flight.stale = true;
        this.#patientFlights.clear();
      }
      let newest = cursor;
      for (const resource of result.resources) {
        if (resource.resourceType !== type || !resource.id) continue;
        const updated = Date.parse(resource.meta?.lastUpdated ?? '');
        const key = `${type}/${resource.id}/${resource.meta?.versionId ?? resource.meta?.lastUpdated ?? ''}`;
        if (this.#pollSeen.has(key)) continue;
        this.#pollSeen.set(key, Number.isFinite(updated) ? updated : cursor);
        if (Number.isFinite(updated) && updated > newest) newest = updated;
        invalidated += this.#invalidateFor(resource);
      }
      this.#pollCursor.set(type, newest);
    }
    const oldestCursor = Math.min(...this.#pollCursor.values());
    for (const [key, at] of this.#pollSeen) if (at < oldestCursor - 2 * this.#pollOverlapMs) this.#pollSeen.delete(key);
    return invalidated;
  }

  #schedulePoll(): void {
    if (!this.#polling) return;
    this.#pollTimer = setTimeout(() => {
      this.#pollRunning = this.pollOnce().then(
        (count) => this.#observer.onPoll?.(count),
        (err: unknown) => this.#observer.onPollError?.(err),
      ).finally(() => {
        this.#pollRunning = undefined;
        this.#schedulePoll();
      });
    }, this.#pollIntervalMs);
    this.#pollTimer.unref();
  }

  /** Invalidates every patient a changed resource concerns; returns how many were cached. */
  #invalidateFor(resource: Resource): number {
    const ref = `${resource.resourceType}/${resource.id ?? ''}`;
    const affected = new Set<string>();
    const subject =
      resource.resourceType === 'Consent'
        ? consentPatientReference(resource)
        : resource.resourceType === 'Flag' || resource.resourceType === 'CareTeam'
          ? resource.subject?.reference
          : undefined;
    const toRelative = (url: string): string | null => this.#upstream.rewriteUpstreamUrl(url);
    const patientRef = normaliseReference(subject, toRelative);
    if (patientRef && referenceType(patientRef) === 'Patient') affected.add(patientRef.slice('Patient/'.length));
    for (const [patientId, entry] of this.#patients.entries()) if (entry.dependsOn.has(ref)) affected.add(patientId);
    let dropped = 0;
    for (const patientId of affected) {
      if (this.#patients.get(patientId) || this.#patientFlights.has(patientId)) dropped++;
      this.invalidate(patientId);
    }
    return dropped;
  }

  #fresh(entry: Cached<unknown>): boolean {
    return this.#ttlMs > 0 && this.#now() - entry.loadedAt < this.#ttlMs;
  }

  async #loadPatient(patientId: string, requestId: string | undefined): Promise<LoadResult> {
    const patientRef = `Patient/${patientId}`;
    const toRelative = (url: string): string | null => this.#upstream.rewriteUpstreamUrl(url);
    const isThisPatient = (reference: string | undefined): boolean => normaliseReference(reference, toRelative) === patientRef;
    const dependsOn = new Set<string>();

    // Flag has no `status` search parameter in R4: active is checked here.
    const [consentSearch, flagSearch] = await Promise.all([
      this.#upstream.searchAll(`Consent?patient=${patientRef}&status=active&_count=${this.#pageSize}`, { requestId, maxPages: this.#maxPages }),
      this.#upstream.searchAll(`Flag?patient=${patientRef}&_count=${this.#pageSize}`, { requestId, maxPages: this.#maxPages }),
    ]);
    const consents = consentSearch.resources.filter(
      (r): r is Consent => r.resourceType === 'Consent' && r.status === 'active' && isThisPatient(consentPatientReference(r)),
    );
    const flags = flagSearch.resources.filter(
      (r): r is Flag => r.resourceType === 'Flag' && r.status === 'active' && isThisPatient(r.subject?.reference) && isHarmDetermination(r),
    );
    for (const r of [...consents, ...flags]) if (r.id) dependsOn.add(`${r.resourceType}/${r.id}`);

    // Validation costs ~1 ms a resource: done once here, remembered per object for every compile.
    for (const r of [...consents, ...flags]) validatePolicyResource(r);

    const actors = new Set<string>();
    const relatedData = new Set<string>();
    for (const consent of consents) {
      for (const provision of consentProvisions(consent)) {
        for (const actor of provision.actor ?? []) {
          const ref = normaliseReference(actor.reference?.reference, toRelative);
          if (ref) actors.add(ref);
        }
        for (const data of provision.data ?? []) {
          const ref = normaliseReference(data.reference?.reference, toRelative);
          if (ref && data.meaning === 'related') relatedData.add(ref);
        }
      }
    }
    // `related` covers what the named resource references (SPEC §4.1), which only its content tells.
    const dataReferences: Record<string, readonly string[]> = {};
    await Promise.all(
      [...relatedData].map(async (ref) => {
        dependsOn.add(ref);
        const resource = await this.#readOptional<Resource>(ref, requestId);
        dataReferences[ref] = resource ? [...referencesIn(resource)].filter((r) => r !== patientRef) : [];
      }),
    );
    const memberships: Record<string, readonly string[]> = {};
    const identifiers: Record<string, readonly string[]> = {};
    const [careRelationships] = await Promise.all([
      flags.length > 0 ? this.#careRelationships(patientId, flags, requestId, dependsOn) : Promise.resolve([]),
      ...[...actors].map(async (ref) => {
        const type = referenceType(ref);
        if (type === 'Group' || type === 'CareTeam') {
          dependsOn.add(ref);
          memberships[ref] = await this.#activeMembers(ref, requestId);
        } else if (ACTOR_IDENTIFIER_TYPES.has(type)) {
          identifiers[ref] = (await this.#actorFacts(ref, requestId)).identifiers;
        }
      }),
    ]);
    const inputs: PatientPolicyInputs = Object.freeze({
      patientId,
      consents: Object.freeze(consents),
      flags: Object.freeze(flags),
      memberships: Object.freeze(sortedRecord(memberships)),
      identifiers: Object.freeze(sortedRecord(identifiers)),
      careRelationships: Object.freeze(careRelationships),
      dataReferences: Object.freeze(sortedRecord(dataReferences)),
    });
    return { inputs, dependsOn };
  }

  /** Active members of a Group or CareTeam; one that does not exist has none. */
  async #activeMembers(ref: string, requestId: string | undefined): Promise<string[]> {
    const resource = await this.#readOptional<Group | CareTeam>(ref, requestId);
    const nowMs = this.#now();
    const toRelative = (url: string): string | null => this.#upstream.rewriteUpstreamUrl(url);
    const members = new Set<string>();
    if (resource?.resourceType === 'Group' && resource.active !== false) {
      for (const member of resource.member ?? []) {
        if (member.inactive === true || !periodIsCurrent(member.period, nowMs)) continue;
        const memberRef = normaliseReference(member.entity?.reference, toRelative);
        if (memberRef) members.add(memberRef);
      }
    } else if (resource?.resourceType === 'CareTeam' && resource.status === 'active') {
      for (const member of careTeamMembers(resource, nowMs, toRelative)) members.add(member);
    }
    return [...members].sort();
  }

  /** SPEC §4.3: generalPractitioner, active CareTeam participants and Encounter participants. */
  async #careRelationships(patientId: string, flags: readonly Flag[], requestId: string | undefined, dependsOn: Set<string>): Promise<string[]> {
    const patientRef = `Patient/${patientId}`;
    const nowMs = this.#now();
    const toRelative = (url: string): string | null => this.#upstream.rewriteUpstreamUrl(url);
    const [patient, careTeams, encounters] = await Promise.all([
      this.#readOptional<Patient>(patientRef, requestId),
      this.#upstream.searchAll(`CareTeam?patient=${patientRef}&status=active&_count=${this.#pageSize}`, {
        requestId,
        maxPages: this.#maxEncounterPages,
        onLimit: 'truncate',
      }),
      this.#upstream.searchAll(`Encounter?patient=${patientRef}&_count=${this.#pageSize}`, {
        requestId,
        maxPages: this.#maxEncounterPages,
        onLimit: 'truncate',
      }),
    ]);
    const related = new Set<string>();
    for (const gp of patient?.resourceType === 'Patient' ? (patient.generalPractitioner ?? []) : []) {
      const ref = normaliseReference(gp.reference, toRelative);
      if (ref) related.add(ref);
    }
    for (const team of careTeams.resources) {
      if (team.resourceType !== 'CareTeam' || team.status !== 'active') continue;
      if (team.id) dependsOn.add(`CareTeam/${team.id}`);
      for (const member of careTeamMembers(team, nowMs, toRelative)) related.add(member);
    }
    for (const encounter of encounters.resources as Encounter[]) {
      if (encounter.resourceType !== 'Encounter') continue;
      for (const participant of encounter.participant ?? []) {
        const ref = normaliseReference(participant.individual?.reference, toRelative);
        if (ref) related.add(ref);
      }
    }
    // A PractitionerRole stands for its practitioner, both as participant and as the flag's author.
    const roles = new Set([...related].filter((r) => referenceType(r) === 'PractitionerRole'));
    for (const flag of flags) {
      const author = normaliseReference(flag.author?.reference, toRelative);
      if (author && referenceType(author) === 'PractitionerRole') roles.add(author);
    }
    const roleFacts = await Promise.all([...roles].map(async (role) => [role, await this.#actorFacts(role, requestId)] as const));
    for (const [role, facts] of roleFacts) if (related.has(role) && facts.practitioner) related.add(facts.practitioner);
    for (const [role, facts] of roleFacts) if (facts.practitioner && related.has(facts.practitioner)) related.add(role);
    return [...related].filter((r) => CARE_PROVIDER_TYPES.has(referenceType(r))).sort();
  }

  /** Identifiers (and a PractitionerRole's practitioner/organization) of an actor, cached with the TTL. */
  async #actorFacts(ref: string, requestId: string | undefined): Promise<ActorFacts> {
    const cached = this.#actors.get(ref);
    if (cached && this.#fresh(cached)) return cached.value;
    const inFlight = this.#actorFlights.get(ref);
    if (inFlight) return inFlight.promise;
    const started = this.#now();
    const promise = this.#readOptional<Resource>(ref, requestId).then((resource) => actorFacts(resource, (url) => this.#upstream.rewriteUpstreamUrl(url)));
    const flight: Flight<ActorFacts> = { promise, stale: false };
    this.#actorFlights.set(ref, flight);
    try {
      const facts = await promise;
      if (this.#ttlMs > 0) this.#actors.set(ref, { value: facts, loadedAt: started, dependsOn: new Set([ref]) });
      return facts;
    } finally {
      this.#actorFlights.delete(ref);
    }
  }

  /** Reads `Type/id`; 404/410 → undefined (absence is a fact, not a failure); other non-200 → rejects. */
  async #readOptional<T extends Resource>(ref: string, requestId: string | undefined): Promise<T | undefined> {
    const { status, resource } = await this.#upstream.readJson<Resource>(ref, { requestId });
    if (status === 404 || status === 410) return undefined;
    if (status !== 200) throw new UpstreamError('bad-status', `upstream answered ${status} to a policy read`, { upstreamStatus: status });
    if (resource.resourceType !== referenceType(ref)) throw new UpstreamError('bad-body', 'upstream answered another resource type', { upstreamStatus: status });
    return resource as T;
  }
}

export function isHarmDetermination(flag: Flag): boolean {
  return (flag.code?.coding ?? []).some((c) => c.system === DG_CODES && c.code === HARM_DETERMINATION_CODE);
}

function careTeamMembers(team: CareTeam, nowMs: number, toRelative: (url: string) => string | null): string[] {
  const members: string[] = [];
  for (const participant of team.participant ?? []) {
    if (!periodIsCurrent(participant.period, nowMs)) continue;
    const ref = normaliseReference(participant.member?.reference, toRelative);
    if (ref) members.push(ref);
  }
  return members;
}

function actorFacts(resource: Resource | undefined, toRelative: (url: string) => string | null): ActorFacts {
  if (!resource) return { found: false, identifiers: [] };
  const identifiers = identifierKeys((resource as { identifier?: Identifier[] }).identifier);
  if (resource.resourceType === 'PractitionerRole') {
    const role = resource as PractitionerRole;
    const practitioner = normaliseReference(role.practitioner?.reference, toRelative);
    const organization = normaliseReference(role.organization?.reference, toRelative);
    return { found: true, identifiers, ...(practitioner ? { practitioner } : {}), ...(organization ? { organization } : {}) };
  }
  return { found: true, identifiers };
}

function identifierKeys(identifiers: readonly Identifier[] | undefined): string[] {
  const keys = new Set<string>();
  for (const id of identifiers ?? []) if (id.system && id.value) keys.add(`${id.system}|${id.value}`);
  return [...keys].sort();
}

function sortedRecord(record: Record<string, readonly string[]>): Record<string, readonly string[]> {
  return Object.fromEntries(Object.keys(record).sort().map((k) => [k, Object.freeze([...record[k]])]));
}

// patient < user < system: the narrowest kind governs (SPEC §3). No resource scope at all is treated as the narrowest.
function narrowestKind(kinds: ReadonlySet<ClientKind>): ClientKind {
  if (kinds.has('patient') || kinds.size === 0) return 'patient';
  if (kinds.has('user')) return 'user';
  return 'system';
}
