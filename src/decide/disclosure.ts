// The rule chain for one resource (SPEC §3, §5): the refusals decided before any patient's rules, then each
// patient's policy, deny wins, contained resources with their container's patients. Pure: every fact it reads
// about the request is handed in, so enforcement and $disclosure-decision reach the same decision.
import type { Resource } from '@medplum/fhirtypes';
import type { ComputedLabels } from '../label/label.ts';
import type { ScopeInteraction } from '../provenance/context.ts';
import { type AccessFacts, binaryRefusal, launchPatientRefusal } from './access.ts';
import { combineDecisions, refusal, storedBundleDecision, ungoverned, withContainedDecided } from './combine.ts';
import type { CompiledPatientPolicy } from './compile.ts';
import { evaluate } from './evaluate.ts';
import type { Decision } from './types.ts';

/** What the rule chain reads about one request, established beforehand (attribution, scopes, policies, labels). */
export interface DisclosureFacts {
  readonly access: AccessFacts;
  /** A FHIR resource type the gateway can decide (the check reads the loaded definitions). */
  isFhirResource(resource: Resource): boolean;
  /** Bare ids of the patients the resource is about (a stored Bundle: its entries'). */
  patientsOf(resource: Resource): readonly string[];
  /** It names a patient that cannot be resolved to a local one. */
  unattributed(resource: Resource): boolean;
  withinScopes(resource: Resource, interaction: ScopeInteraction): boolean;
  holdsAuditEventScope(interaction: ScopeInteraction): boolean;
  /** A Binary with a security context that names no patient itself: that context decides it. */
  governedElsewhere(binary: Resource): boolean;
  policyOf(patientId: string): CompiledPatientPolicy;
  /** The implicit policy, for labelled data that is about no patient. */
  unpatientedPolicy(): CompiledPatientPolicy;
  labelsOf(resource: Resource): ComputedLabels;
}

export interface DisclosureOptions {
  /** The patients to decide it under, when the caller knows them better (a Binary's security context). */
  readonly patients?: readonly string[];
  /** A Binary's security context was decided by the caller (only a read resolves it). */
  readonly contextChecked?: boolean;
}

const notPatientData = ungoverned('not in any patient compartment; released under the granted scopes');
const auditRecordAccess = ungoverned('audit record released under an auditor scope');

/** The decision, with its trace, on one resource for the request the facts describe. */
export function decideDisclosure(resource: Resource, interaction: ScopeInteraction, facts: DisclosureFacts, opts: DisclosureOptions = {}): Decision {
  const patients = opts.patients ?? facts.patientsOf(resource);
  // SPEC §5: contained resources are decided with their container's patients.
  return withContainedDecided(decideOne(resource, interaction, facts, patients, opts.contextChecked ?? false), resource, (inner) =>
    patients.length === 0 ? decideOne(inner, interaction, facts, [], false) : underPatients(inner, facts, patients),
  );
}

function decideOne(resource: Resource, interaction: ScopeInteraction, facts: DisclosureFacts, patients: readonly string[], contextChecked: boolean): Decision {
  // Only a FHIR resource can be decided; anything else the upstream answered (GraphQL JSON) is not data about no one.
  if (!facts.isFhirResource(resource)) return refusal('not-a-resource', 'not a FHIR resource the gateway can decide');
  if (!facts.withinScopes(resource, interaction)) return refusal('scope', 'outside the granted SMART scopes');
  if (resource.resourceType === 'Binary') {
    const refused = binaryRefusal(resource, facts.access, { contextChecked, governedElsewhere: facts.governedElsewhere(resource) });
    if (refused) return refused;
  }
  // SPEC §5: a patient the gateway cannot resolve cannot be asked; the resource is withheld.
  if (facts.unattributed(resource)) return refusal('patient-attribution', 'names a patient that cannot be resolved to a local patient');
  if (resource.resourceType === 'AuditEvent' && !facts.holdsAuditEventScope(interaction)) return refusal('scope', 'audit records need an auditor scope');
  if (resource.resourceType === 'Bundle') return storedBundleDecision(resource, (entry) => decideOne(entry, interaction, facts, facts.patientsOf(entry), false));
  // Confined to the launch patient (whatever other scopes the token holds); without a launch patient, to none.
  const outsideLaunchPatient = launchPatientRefusal(facts.access, patients);
  if (outsideLaunchPatient) return outsideLaunchPatient;
  if (resource.resourceType === 'AuditEvent') return auditRecordAccess;
  if (patients.length > 0) return underPatients(resource, facts, patients);
  // Labelled data that is about no patient still meets the implicit policy's label rules.
  return (resource.meta?.security ?? []).length === 0 ? notPatientData : evaluate(facts.unpatientedPolicy(), resource);
}

/** SPEC §4.7, §5: labelled once, then decided under every patient's policy; deny wins. */
function underPatients(resource: Resource, facts: DisclosureFacts, patients: readonly string[]): Decision {
  const labels = facts.labelsOf(resource);
  return combineDecisions(patients.map((id) => evaluate(facts.policyOf(id), resource, labels)));
}
