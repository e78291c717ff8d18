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
  RelatedPerson,
  Resource,
} from '@medplum/fhirtypes';
import type { DecisionPolicy } from '../config/policy.ts';
import type { PatientPolicyInputs, Requester } from '../decide/types.ts';
import { invalidPolicyResources } from './validate.ts';
import { isFhirId, isForeignKey, keyType, localBases, type LocalBases, referenceKey, referencesIn, withReferenceKeys } from '../fhir/references.ts';
import { DG_CODES } from '../fhir/systems.ts';
import type { ClientKind, RequestContext } from '../provenance/context.ts';
import type { UpstreamClient } from '../upstream/client.ts';
import { UpstreamError } from '../upstream/errors.ts';
import { LruMap } from './lru.ts';
import { consentPatientReference, consentProvisions } from './references.ts';
import { periodContains } from '../decide/consent-shape.ts';

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
  /** The gateway's own FHIR base: absolute references on it (and on the upstream's) are local (SPEC §4.1). */
  gatewayBase?: string;
}

export const HARM_DETERMINATION_CODE = 'harm-determination';
const ACTOR_IDENTIFIER_TYPES = new Set(['Practitioner', 'Organization', 'RelatedPerson', 'PractitionerRole']);
const CARE_PROVIDER_TYPES = new Set(['Practitioner', 'PractitionerRole']);
const POLLED_TYPES = ['Consent', 'Flag', 'Group', 'CareTeam'] as const;
/** Identifiers per `Patient?identifier=` lookup (one URL stays well under common request-line limits). */
const IDENTIFIER_BATCH = 20;

/** What the store knows about one actor resource (Practitioner, PractitionerRole, Organization …). */
interface ActorFacts {
  readonly found: boolean;
  readonly identifiers: readonly string[];
  /** PractitionerRole.practitioner / .organization. */
  readonly practitioner?: string;
  readonly organization?: string;
  /** PractitionerRole / RelatedPerson `active` and `period`: the role or relationship grants only while in force (SPEC §4.1). */
  readonly active?: boolean;
  readonly period?: PractitionerRole['period'];
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
  /** Patient identifier (`system|value`) → the local patients carrying it, cached with the TTL. */
  readonly #identified: LruMap<string, Cached<readonly string[]>>;
  readonly #patientFlights = new Map<string, Flight<LoadResult>>();
  readonly #actorFlights = new Map<string, Flight<ActorFacts>>();
  #pollTimer: NodeJS.Timeout | undefined;
  #pollRunning: Promise<void> | undefined;
  #polling = false;
  /** Per polled type: the newest `meta.lastUpdated` seen (upstream clock). */
  readonly #pollCursor = new Map<string, number>();
  /** `Type/id/version` already acted on inside the overlap window. */
  readonly #pollSeen = new Map<string, number>();
  /** The upstream's and the gateway's bases: absolute references on them are local resources. */
  readonly localBases: LocalBases;

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
    this.#identified = new LruMap(opts.policy.cache.maxPatients);
    this.localBases = localBases(opts.upstream.baseUrl, opts.gatewayBase);
  }

  /** The comparison key of a reference (local `Type/id`, or another server's absolute URL). */
  #key(reference: string | undefined): string | undefined {
    return referenceKey(reference, this.localBases);
  }

  /** A local key the store may read from the upstream; another server's resources are never fetched. */
  #localKey(reference: string | undefined): string | undefined {
    const key = this.#key(reference);
    return key && !isForeignKey(key) ? key : undefined;
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
    const references: string[] = [];
    const add = (ref: string | undefined): void => {
      if (ref && !references.includes(ref)) references.push(ref);
    };
    // A foreign fhirUser or organization stays foreign (SPEC §3): never read, never its local namesake.
    const fhirUser = this.#key(ctx.fhirUser);
    const localUser = this.#localKey(fhirUser);
    const userFacts = localUser ? await this.#actorFacts(localUser, ctx.requestId) : undefined;
    // A representative whose relationship has ended is no longer the RelatedPerson a consent names.
    const ended = localUser !== undefined && keyType(localUser) === 'RelatedPerson' && userFacts !== undefined && !inForce(userFacts, this.#now());
    if (!ended) add(fhirUser);
    add(this.#key(ctx.organization));
    if (localUser && keyType(localUser) === 'PractitionerRole' && userFacts && inForce(userFacts, this.#now())) {
      add(userFacts.practitioner);
      add(userFacts.organization);
    }
    const identifiers = new Set<string>(userFacts?.identifiers ?? []);
    const others = references.filter((r) => r !== fhirUser && !isForeignKey(r));
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

  /**
   * SPEC §5: patients named only by identifier (`system|value`), resolved in batches through
   * `Patient?identifier=`; each maps to every local patient carrying it (none → absent: the caller withholds).
   */
  async resolvePatientIdentifiers(keys: readonly string[], opts: { requestId?: string } = {}): Promise<Map<string, string[]>> {
    const found = new Map<string, string[]>();
    const wanted: string[] = [];
    for (const key of new Set(keys)) {
      const cached = this.#identified.get(key);
      if (cached && this.#fresh(cached)) {
        if (cached.value.length > 0) found.set(key, [...cached.value]);
      } else wanted.push(key);
    }
    const started = this.#now();
    for (let i = 0; i < wanted.length; i += IDENTIFIER_BATCH) {
      const batch = wanted.slice(i, i + IDENTIFIER_BATCH);
      const query = batch.map((key) => key.replaceAll('\\', '\\\\').replaceAll(',', '\\,')).map(encodeURIComponent).join(',');
      const result = await this.#upstream.searchAll(`Patient?identifier=${query}&_count=${this.#pageSize}`, { requestId: opts.requestId, maxPages: this.#maxPages });
      for (const resource of result.resources) {
        if (resource.resourceType !== 'Patient' || !resource.id) continue;
        for (const key of identifierKeys(resource.identifier)) {
          if (!batch.includes(key)) continue;
          found.set(key, [...(found.get(key) ?? []), resource.id]);
        }
      }
    }
    if (this.#ttlMs > 0) for (const key of wanted) this.#identified.set(key, { value: found.get(key) ?? [], loadedAt: started, dependsOn: new Set() });
    return found;
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
    const patientRef = this.#localKey(subject);
    if (patientRef && keyType(patientRef) === 'Patient') affected.add(patientRef.slice('Patient/'.length));
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
    const isThisPatient = (reference: string | undefined): boolean => this.#key(reference) === patientRef;
    const dependsOn = new Set<string>();

    // Flag has no `status` search parameter in R4: active is checked here.
    const [consentSearch, flagSearch] = await Promise.all([
      this.#upstream.searchAll(`Consent?patient=${patientRef}&status=active&_count=${this.#pageSize}`, { requestId, maxPages: this.#maxPages }),
      this.#upstream.searchAll(`Flag?patient=${patientRef}&_count=${this.#pageSize}`, { requestId, maxPages: this.#maxPages }),
    ]);
    // Issue 18: references are keyed as they are loaded, so decide/ sees local keys or explicit foreign ones.
    const consents = consentSearch.resources
      .filter((r): r is Consent => r.resourceType === 'Consent' && r.status === 'active' && isThisPatient(consentPatientReference(r)))
      .map((r) => withReferenceKeys(r, this.localBases));
    const flags = flagSearch.resources
      .filter((r): r is Flag => r.resourceType === 'Flag' && r.status === 'active' && isThisPatient(r.subject?.reference) && isHarmDetermination(r))
      .map((r) => withReferenceKeys(r, this.localBases));
    for (const r of [...consents, ...flags]) if (r.id) dependsOn.add(`${r.resourceType}/${r.id}`);

    // Validation costs ~1 ms a resource and reads the FHIR definitions: done once here, and the
    // failures travel in the inputs so that decide/ only reads them (issue 18).
    const invalid = invalidPolicyResources([...consents, ...flags]);

    const actors = new Set<string>();
    const relatedData = new Set<string>();
    for (const consent of consents) {
      for (const provision of consentProvisions(consent)) {
        for (const actor of provision.actor ?? []) {
          const ref = this.#localKey(actor.reference?.reference);
          if (ref) actors.add(ref);
        }
        for (const data of provision.data ?? []) {
          const ref = this.#localKey(data.reference?.reference);
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
        dataReferences[ref] = resource ? [...referencesIn(resource, new Set(), this.localBases)].filter((r) => r !== patientRef) : [];
      }),
    );
    const memberships: Record<string, readonly string[]> = {};
    const identifiers: Record<string, readonly string[]> = {};
    const [careRelationships] = await Promise.all([
      flags.length > 0 ? this.#careRelationships(patientId, flags, requestId, dependsOn) : Promise.resolve([]),
      ...[...actors].map(async (ref) => {
        const type = keyType(ref);
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
      localBases: Object.freeze([...this.localBases]),
      invalid: Object.freeze(invalid),
    });
    return { inputs, dependsOn };
  }

  /**
   * Members of a Group or CareTeam while the membership is in force (SPEC §4.1): a Group that is active and
   * actual (a definitional Group has no members), members not inactive and current; a CareTeam that is
   * active and whose period is current. One that does not exist has none.
   */
  async #activeMembers(ref: string, requestId: string | undefined): Promise<string[]> {
    const resource = await this.#readOptional<Group | CareTeam>(ref, requestId);
    const nowMs = this.#now();
    const members = new Set<string>();
    if (resource?.resourceType === 'Group' && resource.active !== false && resource.actual === true) {
      for (const member of resource.member ?? []) {
        if (member.inactive === true || !periodContains(member.period, nowMs)) continue;
        const memberRef = this.#key(member.entity?.reference);
        if (memberRef) members.add(memberRef);
      }
    } else if (resource?.resourceType === 'CareTeam' && careTeamInForce(resource, nowMs)) {
      for (const member of careTeamMembers(resource, nowMs, this.localBases)) members.add(member);
    }
    return [...members].sort();
  }

  /** SPEC §4.3: generalPractitioner, active CareTeam participants and Encounter participants. */
  async #careRelationships(patientId: string, flags: readonly Flag[], requestId: string | undefined, dependsOn: Set<string>): Promise<string[]> {
    const patientRef = `Patient/${patientId}`;
    const nowMs = this.#now();
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
      const ref = this.#key(gp.reference);
      if (ref) related.add(ref);
    }
    for (const team of careTeams.resources) {
      if (team.resourceType !== 'CareTeam') continue;
      if (team.id) dependsOn.add(`CareTeam/${team.id}`);
      if (!careTeamInForce(team, nowMs)) continue;
      for (const member of careTeamMembers(team, nowMs, this.localBases)) related.add(member);
    }
    for (const encounter of encounters.resources as Encounter[]) {
      if (encounter.resourceType !== 'Encounter') continue;
      for (const participant of encounter.participant ?? []) {
        const ref = this.#key(participant.individual?.reference);
        if (ref) related.add(ref);
      }
    }
    // A PractitionerRole stands for its practitioner, both as participant and as the flag's author.
    const roles = new Set([...related].filter((r) => keyType(r) === 'PractitionerRole' && !isForeignKey(r)));
    for (const flag of flags) {
      const author = this.#localKey(flag.author?.reference);
      if (author && keyType(author) === 'PractitionerRole') roles.add(author);
    }
    const roleFacts = (await Promise.all([...roles].map(async (role) => [role, await this.#actorFacts(role, requestId)] as const)))
      .filter(([, facts]) => inForce(facts, nowMs));
    for (const [role, facts] of roleFacts) if (related.has(role) && facts.practitioner) related.add(facts.practitioner);
    for (const [role, facts] of roleFacts) if (facts.practitioner && related.has(facts.practitioner)) related.add(role);
    return [...related].filter((r) => CARE_PROVIDER_TYPES.has(keyType(r))).sort();
  }

  /** Identifiers (and a PractitionerRole's practitioner/organization) of an actor, cached with the TTL. */
  async #actorFacts(ref: string, requestId: string | undefined): Promise<ActorFacts> {
    const cached = this.#actors.get(ref);
    if (cached && this.#fresh(cached)) return cached.value;
    const inFlight = this.#actorFlights.get(ref);
    if (inFlight) return inFlight.promise;
    const started = this.#now();
    const promise = this.#readOptional<Resource>(ref, requestId).then((resource) => actorFacts(resource, this.localBases));
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
    if (resource.resourceType !== keyType(ref)) throw new UpstreamError('bad-body', 'upstream answered another resource type', { upstreamStatus: status });
    return resource as T;
  }
}

export function isHarmDetermination(flag: Flag): boolean {
  return (flag.code?.coding ?? []).some((c) => c.system === DG_CODES && c.code === HARM_DETERMINATION_CODE);
}

// SPEC §4.1: a CareTeam grants membership only while active and within its period.
function careTeamInForce(team: CareTeam, nowMs: number): boolean {
  return team.status === 'active' && periodContains(team.period, nowMs);
}

function careTeamMembers(team: CareTeam, nowMs: number, local: LocalBases): string[] {
  const members: string[] = [];
  for (const participant of team.participant ?? []) {
    if (!periodContains(participant.period, nowMs)) continue;
    const ref = referenceKey(participant.member?.reference, local);
    if (ref) members.push(ref);
  }
  return members;
}

// SPEC §4.1: an inactive or expired PractitionerRole stands for neither its practitioner nor its
// organization; a RelatedPerson whose relationship is inactive or ended represents no one.
function inForce(facts: ActorFacts, nowMs: number): boolean {
  return facts.active !== false && periodContains(facts.period, nowMs);
}

function actorFacts(resource: Resource | undefined, local: LocalBases): ActorFacts {
  if (!resource) return { found: false, identifiers: [] };
  const identifiers = identifierKeys((resource as { identifier?: Identifier[] }).identifier);
  if (resource.resourceType === 'PractitionerRole') {
    const role = resource as PractitionerRole;
    const practitioner = referenceKey(role.practitioner?.reference, local);
    const organization = referenceKey(role.organization?.reference, local);
    return {
      found: true,
      identifiers,
      ...(practitioner ? { practitioner } : {}),
      ...(organization ? { organization } : {}),
      active: role.active !== false,
      ...(role.period ? { period: role.period } : {}),
    };
  }
  if (resource.resourceType === 'RelatedPerson') {
    const person = resource as RelatedPerson;
    return { found: true, identifiers, active: person.active !== false, ...(person.period ? { period: person.period } : {}) };
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
