// One request's decisions: finds each resource's patients, decides it under every one of their policies
// (deny wins, SPEC §5), applies the obligations, and keeps the per-patient account that audit records.
import { isResourceType } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import type { PatientDisclosure, ResourceDisposition } from '../audit/record.ts';
import type { DecisionPolicy } from '../config/policy.ts';
import {
  type AccessFacts,
  binaryRefusal,
  combineDecisions,
  compile,
  evaluate,
  launchPatientRefusal,
  refusal,
  storedBundleDecision,
  ungoverned,
  withContainedDecided,
  type CompiledPatientPolicy,
} from '../decide/index.ts';
import type { Decision, Obligation, PatientPolicyInputs, Requester, TraceEntry } from '../decide/types.ts';
import type { ComputedLabels, SecurityLabeler } from '../label/index.ts';
import { attributePatients, type PatientAttribution, patientsOf } from '../fhir/compartment.ts';
import { loadFhirDefinitions } from '../fhir/definitions.ts';
import type { LocalBases } from '../fhir/references.ts';
import type { RequestContext, ScopeInteraction } from '../provenance/context.ts';
import { confinedToLaunchPatient, grantedQueries, holdsAuditEventScope, resourceMatchesScopes } from '../provenance/scopes.ts';
import type { CompiledPolicyCache } from '../policy/compiled-cache.ts';
import { applyObligations } from './redact.ts';
import { decidedRelease, type Releasable } from './reply.ts';

export interface PolicySource {
  loadMany(patientIds: readonly string[], opts?: { requestId?: string }): Promise<Map<string, PatientPolicyInputs>>;
  /** Absolute references on these bases are local (SPEC §4.1); without them every absolute one is foreign. */
  readonly localBases?: LocalBases;
  /** `system|value` → local patient ids (SPEC §5); without it a patient named only by identifier is unresolvable. */
  resolvePatientIdentifiers?(keys: readonly string[], opts?: { requestId?: string }): Promise<Map<string, string[]>>;
}

export type Verdict =
  | { readonly released: true; readonly resource: Releasable; readonly decision: Decision; readonly patients: readonly string[] }
  | { readonly released: false; readonly decision: Decision; readonly patients: readonly string[] };

const noPatientInputs: PatientPolicyInputs = { patientId: '', consents: [], flags: [], memberships: {}, identifiers: {}, careRelationships: [] };

function isFhirResource(value: Resource): boolean {
  loadFhirDefinitions();
  return typeof value === 'object' && value !== null && typeof value.resourceType === 'string' && isResourceType(value.resourceType);
}

function reference(resource: Resource): string {
  return `${resource.resourceType}/${resource.id ?? ''}`;
}

const notPatientData = ungoverned('not in any patient compartment; released under the granted scopes');
const auditRecordAccess = ungoverned('audit record released under an auditor scope');

/** Deny-wins across a resource's patients (SPEC §5): a pure rule of decide/, re-exported where enforcement used it. */
export { combineDecisions };

interface PatientAccount {
  dispositions: ResourceDisposition[];
  ignored: Map<string, TraceEntry>;
  consentDecisions: Map<string, PatientDisclosure['consentDecisions'][number]>;
}

interface DisclosureSessionDeps {
  readonly policies: PolicySource;
  readonly policy: DecisionPolicy;
  readonly now: Date;
  /** Compiled policies shared across requests (per patient inputs, requester and minute); compiled afresh without it. */
  readonly compiledPolicies?: CompiledPolicyCache;
  /** The labeling step run on every resource before it is decided (SPEC §4.7). */
  readonly labeler: SecurityLabeler;
}

/** The labeling entries of a trace, once each (several patients' decisions repeat them); undefined when none. */
function labelTrace(trace: readonly TraceEntry[]): TraceEntry[] | undefined {
  let out: TraceEntry[] | undefined;
  for (const t of trace) {
    if (t.layer !== 'security-label' || out?.some((x) => x.rule === t.rule && x.reason === t.reason)) continue;
    (out ??= []).push(t);
  }
  return out;
}

export class DisclosureSession {
  private readonly compiled = new Map<string, CompiledPatientPolicy>();
  /** Patients of each resource met in this request: found once in prepare(), read again in decide(). */
  private readonly patientsSeen = new WeakMap<Resource, readonly string[]>();
  /** Each resource's attribution, walked once per request. */
  private readonly attributions = new WeakMap<Resource, PatientAttribution>();
  /** Resources naming a patient that cannot be resolved to a local one: withheld (SPEC §5). */
  private readonly unattributed = new WeakSet<Resource>();
  /** Patient identifiers (`system|value`) resolved in this request → local patient ids (empty: none). */
  private readonly identified = new Map<string, readonly string[]>();
  /** Scope verdicts per type and interaction: granular queries are evaluated per resource, the rest once. */
  private readonly scopeByType = new Map<string, ReturnType<typeof grantedQueries>>();
  private readonly accounts = new Map<string, PatientAccount>();
  private unpatientedPolicy?: CompiledPatientPolicy;
  private facts?: AccessFacts;
  /** Harm-determination refusals met in this request, to be stated to the patient (SPEC §4.3). */
  readonly harmRefusals: Extract<Obligation, { kind: 'harm-refusal' }>[] = [];
  /** Number of resources withheld in this request (metrics). */
  withheldCount = 0;
  /** Of those, the ones withheld for a reason other than a stated harm determination (the general notice). */
  withheldUnstated = 0;
  readonly withheldLayers: string[] = [];

  private readonly deps: DisclosureSessionDeps;
  readonly ctx: RequestContext;
  readonly requester: Requester;

  constructor(deps: DisclosureSessionDeps, ctx: RequestContext, requester: Requester) {
    this.deps = deps;
    this.ctx = ctx;
    this.requester = requester;
  }

  /** Bases whose absolute references are local (SPEC §4.1). */
  get localBases(): LocalBases | undefined {
    return this.deps.policies.localBases;
  }

  /** Loads and compiles the policies of every patient these resources name; call before `decide`. */
  async prepare(resources: Iterable<Resource>, extraPatients: readonly string[] = []): Promise<void> {
    // A caller may name patients explicitly (a Binary's security context), so those are loaded too.
    const wanted = new Set<string>(extraPatients);
    const list = [...resources];
    await this.resolveIdentifiers(list);
    for (const resource of list) for (const id of this.patientsOf(resource)) if (!this.compiled.has(id)) wanted.add(id);
    for (const id of this.compiled.keys()) wanted.delete(id);
    if (wanted.size === 0) return;
    const inputs = await this.deps.policies.loadMany([...wanted], { requestId: this.ctx.requestId });
    for (const id of wanted) {
      const patientInputs = inputs.get(id);
      // A patient whose policy could not be loaded is never decided on guesswork (fail closed).
      if (!patientInputs) throw new Error(`policy inputs missing for a patient`);
      const shared = this.deps.compiledPolicies;
      this.compiled.set(id, shared ? shared.get(patientInputs, this.requester, this.deps.now.getTime()) : compile(patientInputs, this.requester, this.deps.policy, this.deps.now));
    }
  }

  /** SPEC §5: patients named only by identifier, looked up together (one batch of `Patient?identifier=`). */
  private async resolveIdentifiers(resources: readonly Resource[]): Promise<void> {
    const wanted = new Set<string>();
    for (const resource of resources) {
      if (resource.resourceType === 'Bundle') continue; // its entries are attributed one by one below
      for (const key of this.attribution(resource).identifiers) if (!this.identified.has(key)) wanted.add(key);
    }
    for (const resource of resources) {
      if (resource.resourceType !== 'Bundle') continue;
      for (const e of resource.entry ?? []) {
        if (e.resource) for (const key of this.attribution(e.resource).identifiers) if (!this.identified.has(key)) wanted.add(key);
      }
    }
    if (wanted.size === 0) return;
    const resolver = this.deps.policies.resolvePatientIdentifiers;
    const found = resolver ? await resolver.call(this.deps.policies, [...wanted], { requestId: this.ctx.requestId }) : new Map<string, string[]>();
    for (const key of wanted) this.identified.set(key, found.get(key) ?? []);
  }

  private attribution(resource: Resource): PatientAttribution {
    let found = this.attributions.get(resource);
    if (!found) {
      found = attributePatients(resource, this.deps.policies.localBases);
      this.attributions.set(resource, found);
    }
    return found;
  }

  private patientsOf(resource: Resource): readonly string[] {
    let patients = this.patientsSeen.get(resource);
    if (!patients) {
      // A stored Bundle (a document, a message) is about every patient its entries are about.
      if (resource.resourceType === 'Bundle') {
        patients = [...new Set((resource.entry ?? []).flatMap((e) => (e.resource ? this.patientsOf(e.resource) : [])))];
      } else {
        const attribution = this.attribution(resource);
        const ids = new Set(attribution.ids);
        let unresolved = attribution.unresolvable;
        for (const key of attribution.identifiers) {
          const resolved = this.identified.get(key);
          if (!resolved || resolved.length === 0) unresolved = true;
          else for (const id of resolved) ids.add(id);
        }
        if (unresolved) this.unattributed.add(resource);
        patients = [...ids];
      }
      this.patientsSeen.set(resource, patients);
    }
    return patients;
  }

  /** SPEC §4.7: labelled once per decision, the same labels then decided under every patient's rules. */
  private labelsOf(resource: Resource): ComputedLabels {
    return this.deps.labeler.label(resource);
  }

  private withinScopes(resource: Resource, access: ScopeInteraction): boolean {
    const key = `${resource.resourceType}|${access}`;
    let granted = this.scopeByType.get(key);
    if (granted === undefined) {
      granted = grantedQueries(this.ctx, resource.resourceType, access);
      this.scopeByType.set(key, granted);
    }
    if (granted === 'unrestricted') return true;
    if (granted === 'none') return false;
    return resourceMatchesScopes(this.ctx, resource, access);
  }

  /** What decide/'s access rules read about this requester (decide/access.ts). */
  private accessFacts(): AccessFacts {
    return (this.facts ??= {
      confinedToLaunchPatient: confinedToLaunchPatient(this.ctx),
      launchPatient: this.ctx.patient,
      systemClient: this.requester.clientKind === 'system',
    });
  }

  private patientPolicy(id: string): CompiledPatientPolicy {
    const compiled = this.compiled.get(id);
    if (!compiled) throw new Error('decide() called before prepare() for a patient');
    return compiled;
  }

  private decideRaw(resource: Resource, access: ScopeInteraction, patients: readonly string[], contextChecked = false): Decision {
    const ctx = this.ctx;
    // Only a FHIR resource can be decided; anything else the upstream answered (GraphQL JSON) is not data about no one.
    if (!isFhirResource(resource)) return refusal('not-a-resource', 'not a FHIR resource the gateway can decide');
    if (!this.withinScopes(resource, access)) return refusal('scope', 'outside the granted SMART scopes');
    if (resource.resourceType === 'Binary') {
      // Its security context decides a Binary; only a read resolves that context (interactions.read).
      const governedElsewhere = !!resource.securityContext?.reference && patientsOf(resource, this.deps.policies.localBases).length === 0;
      const refused = binaryRefusal(resource, this.accessFacts(), { contextChecked, governedElsewhere });
      if (refused) return refused;
    }
    if (this.unattributed.has(resource)) {
      // SPEC §5: a patient the gateway cannot resolve cannot be asked; the resource is withheld.
      return refusal('patient-attribution', 'names a patient that cannot be resolved to a local patient');
    }
    if (resource.resourceType === 'AuditEvent' && !holdsAuditEventScope(ctx, access)) return refusal('scope', 'audit records need an auditor scope');
    if (resource.resourceType === 'Bundle') return storedBundleDecision(resource, (entry) => this.decideRaw(entry, access, this.patientsOf(entry)));
    // Confined to the launch patient (whatever other scopes the token holds); without a launch patient, to none.
    const outsideLaunchPatient = launchPatientRefusal(this.accessFacts(), patients);
    if (outsideLaunchPatient) return outsideLaunchPatient;
    if (resource.resourceType === 'AuditEvent') return auditRecordAccess;
    if (patients.length === 0) {
      const labels = resource.meta?.security ?? [];
      if (labels.length === 0) return notPatientData;
      // Labelled data that is about no patient still meets the implicit policy's label rules.
      this.unpatientedPolicy ??= compile(noPatientInputs, this.requester, this.deps.policy, this.deps.now);
      return evaluate(this.unpatientedPolicy, resource);
    }
    const labels = this.labelsOf(resource);
    const decisions = patients.map((id) => evaluate(this.patientPolicy(id), resource, labels));
    return combineDecisions(decisions);
  }

  /** Decides one resource and, unless told not to, records the outcome in each of its patients' accounts. */
  decide(resource: Resource, access: ScopeInteraction = 'r', opts: { readonly record?: boolean; readonly patients?: readonly string[]; readonly contextChecked?: boolean } = {}): Verdict {
    const patients = opts.patients ?? this.patientsOf(resource);
    // SPEC §5: contained resources are decided with their container's patients (decide/combine.ts).
    const decision = withContainedDecided(this.decideRaw(resource, access, patients, opts.contextChecked), resource, (inner) =>
      patients.length === 0 ? this.decideRaw(inner, access, []) : combineDecisions(patients.map((id) => evaluate(this.patientPolicy(id), inner, this.labelsOf(inner)))),
    );
    const verdict: Verdict = decision.outcome === 'deny' ? { released: false, decision, patients } : { released: true, resource: decidedRelease(applyObligations(resource, decision)), decision, patients };
    if (opts.record !== false) this.record(resource, verdict);
    return verdict;
  }

  /** Accounts for a verdict reached earlier without recording (a listing records only what it shows or skips in range). */
  record(resource: Resource, verdict: Verdict): void {
    const { decision, patients } = verdict;
    const ref = reference(resource);
    const versionId = resource.meta?.versionId;
    if (!verdict.released) {
      this.withheldCount++;
      const layer = decision.trace.find((t) => t.effect === 'deny')?.layer ?? 'unknown';
      this.withheldLayers.push(layer);
      let stated = false;
      for (const o of decision.obligations) {
        if (o.kind !== 'harm-refusal') continue;
        stated = true;
        if (!this.harmRefusals.some((h) => h.flag === o.flag)) this.harmRefusals.push(o);
      }
      if (!stated) this.withheldUnstated++;
      for (const id of patients) {
        this.account(id, decision).dispositions.push({ disposition: 'withheld', reference: ref, versionId, trace: decision.trace });
      }
      return;
    }
    const paths = decision.obligations.flatMap((o) => (o.kind === 'redact' ? [o.path] : []));
    // SPEC §4.7: the audit names the rule set, system and code of each label a released resource gained.
    const labelled = labelTrace(decision.trace);
    const breakGlassUsed = decision.breakGlassUsed || undefined;
    const part2 = decision.part2 || undefined;
    const disposition: ResourceDisposition =
      paths.length > 0
        ? { disposition: 'redacted', reference: ref, versionId, paths, trace: decision.trace, breakGlassUsed, part2 }
        : { disposition: 'released', reference: ref, versionId, breakGlassUsed, part2, labelled };
    for (const id of patients) this.account(id, decision).dispositions.push(disposition);
  }

  /** One patient’s account, noting the consents that decided and the rules that were ignored. */
  private account(patientId: string, decision: Decision): PatientAccount {
    let account = this.accounts.get(patientId);
    if (!account) {
      account = { dispositions: [], ignored: new Map(), consentDecisions: new Map() };
      this.accounts.set(patientId, account);
    }
    for (const entry of decision.trace) {
      if (entry.effect === 'ignored') account.ignored.set(`${entry.rule}|${entry.reason}`, entry);
      if (entry.layer === 'consent' && (entry.effect === 'permit' || entry.effect === 'deny')) {
        const key = `${entry.rule}|${entry.provision ?? ''}|${entry.effect}`;
        if (!account.consentDecisions.has(key)) {
          account.consentDecisions.set(key, { consent: entry.rule, provision: entry.provision, effect: entry.effect, reason: entry.reason });
        }
      }
    }
    return account;
  }

  /** Notes a patient the request was about even if nothing of theirs was returned (an empty search). */
  touch(patientId: string): void {
    if (!this.accounts.has(patientId)) this.accounts.set(patientId, { dispositions: [], ignored: new Map(), consentDecisions: new Map() });
  }

  disclosures(): PatientDisclosure[] {
    return [...this.accounts.entries()].map(([patientId, a]) => ({
      patientId,
      dispositions: a.dispositions,
      ignored: [...a.ignored.values()],
      consentDecisions: [...a.consentDecisions.values()],
    }));
  }
}
