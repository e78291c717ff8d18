// One request's facts for decide/'s rule chain (SPEC §3, §5): who each resource is about, the compiled policy of
// each of those patients, scope verdicts and computed labels. Here, in the information room, because it loads
// through the policy source; enforcement and $disclosure-decision both decide with it.
import { isResourceType } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import type { DecisionPolicy } from '../config/policy.ts';
import { type AccessFacts, compile, type CompiledPatientPolicy, type DisclosureFacts } from '../decide/index.ts';
import type { PatientPolicyInputs, Requester } from '../decide/types.ts';
import { attributePatients, type PatientAttribution } from '../fhir/compartment.ts';
import { loadFhirDefinitions } from '../fhir/definitions.ts';
import type { LocalBases } from '../fhir/references.ts';
import type { ComputedLabels, SecurityLabeler } from '../label/index.ts';
import type { RequestContext, ScopeInteraction } from '../provenance/context.ts';
import { confinedToLaunchPatient, grantedQueries, holdsAuditEventScope, resourceMatchesScopes } from '../provenance/scopes.ts';
import type { CompiledPolicyCache } from './compiled-cache.ts';

export interface PolicySource {
  loadMany(patientIds: readonly string[], opts?: { requestId?: string }): Promise<Map<string, PatientPolicyInputs>>;
  /** Absolute references on these bases are local (SPEC §4.1); without them every absolute one is foreign. */
  readonly localBases?: LocalBases;
  /** `system|value` → local patient ids (SPEC §5); without it a patient named only by identifier is unresolvable. */
  resolvePatientIdentifiers?(keys: readonly string[], opts?: { requestId?: string }): Promise<Map<string, string[]>>;
}

export interface RequestFactsDeps {
  readonly policies: PolicySource;
  readonly policy: DecisionPolicy;
  readonly now: Date;
  /** Compiled policies shared across requests (per patient inputs, requester and minute); compiled afresh without it. */
  readonly compiledPolicies?: CompiledPolicyCache;
  /** The labeling step run on every resource before it is decided (SPEC §4.7). */
  readonly labeler: SecurityLabeler;
}

const noPatientInputs: PatientPolicyInputs = { patientId: '', consents: [], flags: [], memberships: {}, identifiers: {}, careRelationships: [] };

export class RequestFacts implements DisclosureFacts {
  private readonly compiled = new Map<string, CompiledPatientPolicy>();
  /** Patients of each resource met in this request: found once in prepare(), read again when decided. */
  private readonly patientsSeen = new WeakMap<Resource, readonly string[]>();
  /** Each resource's attribution, walked once per request. */
  private readonly attributions = new WeakMap<Resource, PatientAttribution>();
  /** Resources naming a patient that cannot be resolved to a local one: withheld (SPEC §5). */
  private readonly unresolved = new WeakSet<Resource>();
  /** Patient identifiers (`system|value`) resolved in this request → local patient ids (empty: none). */
  private readonly identified = new Map<string, readonly string[]>();
  /**
   * Scope verdicts per interaction, then type: granular queries are evaluated per resource, the rest once. Two
   * levels, not a `type|interaction` key: V8 interns a freshly built string to look it up, for every resource.
   */
  private readonly scopeByType = new Map<ScopeInteraction, Map<string, ReturnType<typeof grantedQueries>>>();
  private implicitPolicy?: CompiledPatientPolicy;
  private requesterFacts?: AccessFacts;

  private readonly deps: RequestFactsDeps;
  private readonly ctx: RequestContext;
  private readonly requester: Requester;

  constructor(deps: RequestFactsDeps, ctx: RequestContext, requester: Requester) {
    this.deps = deps;
    this.ctx = ctx;
    this.requester = requester;
  }

  /** Bases whose absolute references are local (SPEC §4.1). */
  get localBases(): LocalBases | undefined {
    return this.deps.policies.localBases;
  }

  /** Loads and compiles the policies of every patient these resources name; call before deciding them. */
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
    const want = (r: Resource): void => {
      for (const key of this.attribution(r).identifiers) if (!this.identified.has(key)) wanted.add(key);
    };
    for (const resource of resources) {
      // A stored Bundle's entries are attributed one by one.
      if (resource.resourceType !== 'Bundle') want(resource);
      else for (const e of resource.entry ?? []) if (e.resource) want(e.resource);
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

  patientsOf(resource: Resource): readonly string[] {
    let patients = this.patientsSeen.get(resource);
    if (!patients) {
      // A stored Bundle (a document, a message) is about every patient its entries are about.
      if (resource.resourceType === 'Bundle') {
        patients = [...new Set((resource.entry ?? []).flatMap((e) => (e.resource ? this.patientsOf(e.resource) : [])))];
      } else {
        const attribution = this.attribution(resource);
        let unresolved = attribution.unresolvable;
        if (attribution.identifiers.length === 0) {
          patients = attribution.ids; // by literal reference only (most resources): already one entry per patient
        } else {
          const ids = new Set(attribution.ids);
          for (const key of attribution.identifiers) {
            const resolved = this.identified.get(key);
            if (!resolved || resolved.length === 0) unresolved = true;
            else for (const id of resolved) ids.add(id);
          }
          patients = [...ids];
        }
        if (unresolved) this.unresolved.add(resource);
      }
      this.patientsSeen.set(resource, patients);
    }
    return patients;
  }

  unattributed(resource: Resource): boolean {
    return this.unresolved.has(resource);
  }

  isFhirResource(value: Resource): boolean {
    loadFhirDefinitions();
    return typeof value === 'object' && value !== null && typeof value.resourceType === 'string' && isResourceType(value.resourceType);
  }

  withinScopes(resource: Resource, interaction: ScopeInteraction): boolean {
    let byType = this.scopeByType.get(interaction);
    if (byType === undefined) this.scopeByType.set(interaction, (byType = new Map()));
    let granted = byType.get(resource.resourceType);
    if (granted === undefined) {
      granted = grantedQueries(this.ctx, resource.resourceType, interaction);
      byType.set(resource.resourceType, granted);
    }
    if (granted === 'unrestricted') return true;
    if (granted === 'none') return false;
    return resourceMatchesScopes(this.ctx, resource, interaction);
  }

  holdsAuditEventScope(interaction: ScopeInteraction): boolean {
    return holdsAuditEventScope(this.ctx, interaction);
  }

  governedElsewhere(binary: Resource): boolean {
    return binary.resourceType === 'Binary' && !!binary.securityContext?.reference && this.attribution(binary).ids.length === 0;
  }

  /** What decide/'s access rules read about this requester (decide/access.ts). */
  get access(): AccessFacts {
    return (this.requesterFacts ??= {
      confinedToLaunchPatient: confinedToLaunchPatient(this.ctx),
      launchPatient: this.ctx.patient,
      systemClient: this.requester.clientKind === 'system',
    });
  }

  policyOf(patientId: string): CompiledPatientPolicy {
    const compiled = this.compiled.get(patientId);
    if (!compiled) throw new Error('decide() called before prepare() for a patient');
    return compiled;
  }

  unpatientedPolicy(): CompiledPatientPolicy {
    return (this.implicitPolicy ??= compile(noPatientInputs, this.requester, this.deps.policy, this.deps.now));
  }

  /** SPEC §4.7: the labeling step, run before the resource is decided. */
  labelsOf(resource: Resource): ComputedLabels {
    return this.deps.labeler.label(resource);
  }
}
