// "Policy is not data" (SPEC §5): Consents, legal restrictions, harm Flags and the memberships decisions
// rest on (Group, CareTeam, PractitionerRole) are written only under scopes that name the type, by a
// patient's app only for the patient's own Consents, never so that the writer widens their own access,
// and a harm Flag only by its author (or a system/ client).
import { isResourceType } from '@medplum/core';
import type { CodeableConcept, Coding, Flag, Observation, Period, Resource } from '@medplum/fhirtypes';
import { compile, evaluate, isLegalRestriction, type Outcome, type PatientPolicyInputs, type Requester } from '../decide/index.ts';
import { patientsOf } from '../fhir/compartment.ts';
import { V3_CONFIDENTIALITY } from '../fhir/systems.ts';
import { forbidden } from '../fhir/outcome.ts';
import { isHarmDetermination } from '../policy/index.ts';
import { localKey, parseReference, referenceKey } from '../fhir/references.ts';
import { confinedToLaunchPatient } from '../provenance/scopes.ts';
import type { Exchange } from './exchange.ts';
import { scopeFor, type WriteKind } from './write.ts';

const membershipTypes = new Set(['Group', 'CareTeam', 'PractitionerRole']);
/** Types whose writes change some patient's cached policy inputs (care relationships included). */
const policyInputTypes = new Set(['Consent', 'Flag', 'Group', 'CareTeam', 'PractitionerRole', 'Patient', 'Encounter']);
/** Purposes a writer might later claim: access is compared under each, not only the one of this request. */
const probePurposes = ['TREAT', 'ETREAT', 'HPAYMT', 'HOPERAT', 'PATRQT', 'FAMRQT', 'HRESCH', 'PUBHLTH', 'HMARKT'];
const probeTypes = ['Observation', 'Condition', 'DocumentReference', 'Encounter', 'MedicationRequest', 'Procedure'];
const rank: Record<Outcome, number> = { deny: 0, redact: 1, permit: 2 };

type PolicyKind = 'consent' | 'legal-restriction' | 'harm-flag' | 'membership';

function policyKind(resource: Resource | undefined): PolicyKind | undefined {
  if (!resource) return undefined;
  if (resource.resourceType === 'Consent') return isLegalRestriction(resource) ? 'legal-restriction' : 'consent';
  if (resource.resourceType === 'Flag') return isHarmDetermination(resource) ? 'harm-flag' : undefined;
  return membershipTypes.has(resource.resourceType) ? 'membership' : undefined;
}

export function invalidatesPolicy(resource: Resource): boolean {
  return policyInputTypes.has(resource.resourceType);
}

/** The writer's own references: fhirUser, organization, a PractitionerRole's practitioner and organization. */
function writerReferences(x: Exchange): Set<string> {
  return new Set([x.requester.fhirUser, x.ctx.fhirUser, ...x.requester.references].filter((r): r is string => !!r));
}

/** Memberships compare by `Type/id` wherever the reference points: the cautious direction (more is the writer's). */
function refersToWriter(writer: ReadonlySet<string>, reference: string | undefined): boolean {
  const parsed = parseReference(reference);
  return parsed !== undefined && writer.has(`${parsed.resourceType}/${parsed.id}`);
}

/** What a membership resource says about the writer: their own entries and the resource's standing. */
function writerStanding(resource: Resource | undefined, writer: ReadonlySet<string>, self: string | undefined): string | undefined {
  if (!resource) return undefined;
  if (resource.resourceType === 'Group') {
    const mine = (resource.member ?? []).filter((m) => refersToWriter(writer, m.entity?.reference));
    return mine.length ? JSON.stringify({ mine, actual: resource.actual, active: resource.active }) : undefined;
  }
  if (resource.resourceType === 'CareTeam') {
    const mine = (resource.participant ?? []).filter((p) => refersToWriter(writer, p.member?.reference) || refersToWriter(writer, p.onBehalfOf?.reference));
    return mine.length ? JSON.stringify({ mine, status: resource.status, period: resource.period, subject: resource.subject }) : undefined;
  }
  if (resource.resourceType === 'PractitionerRole') {
    const own = refersToWriter(writer, resource.practitioner?.reference) || `PractitionerRole/${resource.id}` === self;
    return own ? JSON.stringify({ practitioner: resource.practitioner, organization: resource.organization, active: resource.active, period: resource.period, code: resource.code }) : undefined;
  }
  return undefined;
}

/** The patient's policy inputs with the write applied (a version moved to another patient leaves this one). */
function afterWrite(inputs: PatientPolicyInputs, previous: Resource | undefined, next: Resource | undefined): PatientPolicyInputs {
  const replaced = new Set([previous, next].flatMap((r) => (r?.id ? [`${r.resourceType}/${r.id}`] : [])));
  const kept = <T extends Resource>(list: readonly T[]) => list.filter((r) => !replaced.has(`${r.resourceType}/${r.id}`));
  const proposed = next && patientsOf(next).includes(inputs.patientId) ? { ...next, id: next.id ?? 'proposed-write' } : undefined;
  const consents = kept(inputs.consents);
  const flags = kept(inputs.flags);
  if (proposed?.resourceType === 'Consent') consents.push(proposed);
  if (proposed?.resourceType === 'Flag' && isHarmDetermination(proposed)) flags.push(proposed);
  return { ...inputs, consents, flags };
}

interface ProvisionFacts {
  readonly labels: Map<string, Coding>;
  readonly codes: Map<string, Coding>;
  readonly types: Set<string>;
  readonly dates: Set<string>;
  readonly data: Set<string>;
}

/** What the policies' provisions test (labels, codes, classes, data periods, named data): the probes must vary on it. */
function provisionFacts(value: unknown, into: ProvisionFacts): ProvisionFacts {
  if (Array.isArray(value)) value.forEach((v) => provisionFacts(v, into));
  if (!value || typeof value !== 'object' || Array.isArray(value)) return into;
  for (const [key, inner] of Object.entries(value)) {
    const codings = (Array.isArray(inner) ? inner : []) as (Coding & CodeableConcept)[];
    if (key === 'securityLabel') codings.forEach((c) => into.labels.set(`${c.system}|${c.code}`, c));
    if (key === 'class') codings.forEach((c) => into.types.add(c.code ?? ''));
    if (key === 'code') codings.flatMap((cc) => cc.coding ?? []).forEach((c) => into.codes.set(`${c.system}|${c.code}`, c));
    if (key === 'dataPeriod') [(inner as Period).start, (inner as Period).end].forEach((d) => d && into.dates.add(d));
    if (key === 'data' && Array.isArray(inner)) (inner as { reference?: { reference?: string } }[]).forEach((d) => d.reference?.reference && into.data.add(d.reference.reference));
    provisionFacts(inner, into);
  }
  return into;
}

/** What the writer's access is compared on: the patient's own records, what the provisions name, and stand-ins varying on what they test. */
async function probes(x: Exchange, patientId: string, policies: readonly Resource[]): Promise<Resource[]> {
  const found: Resource[] = [];
  const read = (path: string) => x.deps.upstream.readJson<Resource & { entry?: { resource?: Resource }[] }>(path, { requestId: x.ctx.requestId });
  const everything = await read(`Patient/${patientId}/$everything?_count=100`);
  if (everything.status === 200 && everything.resource.resourceType === 'Bundle') for (const e of everything.resource.entry ?? []) if (e.resource) found.push(e.resource);
  const facts = provisionFacts(policies, { labels: new Map(), codes: new Map(), types: new Set(), dates: new Set(), data: new Set() });
  for (const ref of [...facts.data].slice(0, 20)) {
    const local = localKey(referenceKey(ref, x.deps.store.localBases));
    const named = local ? await read(local) : undefined;
    if (named?.status === 200) found.push(named.resource);
  }
  const labels = [undefined, { system: V3_CONFIDENTIALITY, code: 'R' }, { system: V3_CONFIDENTIALITY, code: 'V' }, ...facts.labels.values()];
  const dates = [x.deps.now().toISOString(), ...facts.dates];
  const types = [...new Set([...probeTypes, ...facts.types])].filter((t) => t && isResourceType(t));
  const subject = { reference: `Patient/${patientId}` };
  const probe = (resourceType: string, extra: Record<string, unknown>) => ({ resourceType, id: `probe-${found.length}`, status: 'final', subject, patient: subject, ...extra }) as unknown as Observation;
  for (const type of types) for (const label of labels) for (const date of dates) found.push(probe(type, { effectiveDateTime: date, ...(label ? { meta: { security: [label] } } : {}) }));
  for (const coding of facts.codes.values()) for (const label of labels) found.push(probe('Observation', { code: { coding: [coding] }, effectiveDateTime: dates[0], ...(label ? { meta: { security: [label] } } : {}) }));
  return found;
}

/** Would the write let the writer see, under any purpose, something the current policy refuses them? */
async function widensWriter(x: Exchange, patientId: string, previous: Resource | undefined, next: Resource | undefined): Promise<boolean> {
  const inputs = (await x.deps.store.loadMany([patientId], { requestId: x.ctx.requestId })).get(patientId);
  if (!inputs) return true; // unknown policy: the write cannot be shown not to widen (fail closed)
  const after = afterWrite(inputs, previous, next);
  const now = x.deps.now();
  const requesters: Requester[] = [x.requester, ...probePurposes.map((p) => ({ ...x.requester, purposes: [p], breakGlass: false }))];
  const data = await probes(x, patientId, [...inputs.consents, ...after.consents]);
  for (const requester of requesters) {
    const before = compile(inputs, requester, x.deps.policy, now);
    const changed = compile(after, requester, x.deps.policy, now);
    for (const resource of data) if (rank[evaluate(changed, resource).outcome] > rank[evaluate(before, resource).outcome]) return true;
  }
  return false;
}

function holdsExplicitScope(x: Exchange, resourceType: string, kind: WriteKind): boolean {
  return x.ctx.scopes.some((s) => s.resourceType === resourceType && s.interactions.has(scopeFor[kind]));
}

/** The author is the writer only as a reference on this server: a namesake elsewhere is someone else (SPEC §3). */
function authoredByWriter(x: Exchange, flag: Resource): boolean {
  const writer = new Set([x.ctx.fhirUser, x.requester.fhirUser, ...(x.ctx.kinds.has('system') ? [x.ctx.organization] : [])].filter((r): r is string => !!r));
  const author = localKey(referenceKey((flag as Flag).author?.reference, x.deps.store.localBases));
  return author !== undefined && writer.has(author);
}

function harmFlagAuthorship(x: Exchange, previous: Resource | undefined, next: Resource | undefined): void {
  if (next && !authoredByWriter(x, next)) throw forbidden();
  // Only the author, or a system/ client, ends or removes a harm determination.
  if (previous && !x.ctx.kinds.has('system') && !authoredByWriter(x, previous)) throw forbidden();
}

/** Refuses a policy write the rules do not let this writer make (403, saying no more than forbidden()). */
export async function guardPolicyWrite(x: Exchange, kind: WriteKind, resourceType: string, previous: Resource | undefined, next: Resource | undefined): Promise<void> {
  const kinds = [policyKind(previous), policyKind(next)].filter((k): k is PolicyKind => !!k);
  if (kinds.length === 0) return;
  if (!holdsExplicitScope(x, resourceType, kind)) throw forbidden();
  const patients = [...new Set([previous, next].flatMap((r) => (r ? patientsOf(r) : [])))];
  // The patient (a patient/ app, or any token whose fhirUser is a Patient): the patient's own Consents
  // only, never restrictions, harm Flags or memberships.
  const patientWriter = confinedToLaunchPatient(x.ctx) ? x.ctx.patient : x.ctx.fhirUser?.startsWith('Patient/') ? x.ctx.fhirUser.slice('Patient/'.length) : undefined;
  if (patientWriter !== undefined || confinedToLaunchPatient(x.ctx)) {
    if (kinds.some((k) => k !== 'consent') || patients.length === 0 || patients.some((p) => p !== patientWriter)) throw forbidden();
  }
  if (kinds.includes('membership')) {
    const writer = writerReferences(x);
    const self = x.requester.fhirUser;
    const before = writerStanding(previous, writer, self);
    const after = kind === 'delete' ? undefined : writerStanding(next, writer, self);
    if (before !== after) throw forbidden(); // the writer's own memberships are not theirs to change
    return;
  }
  if (kinds.includes('harm-flag')) harmFlagAuthorship(x, previous, next);
  if (patients.length === 0) throw forbidden(); // a policy resource about no patient cannot be shown not to widen
  const ownConsent = kinds.every((k) => k === 'consent') && patients.every((p) => x.ctx.fhirUser === `Patient/${p}`);
  if (ownConsent) return;
  for (const p of patients) if (await widensWriter(x, p, previous, kind === 'delete' ? undefined : next)) throw forbidden();
}
