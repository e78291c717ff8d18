// Refusals decided before any patient's rules (SPEC §3, §5), as pure functions of facts enforcement
// established (scopes held, launch patient, attribution); each is a decision with its trace, like any other.
import type { Resource } from '@medplum/fhirtypes';
import { refusal } from './combine.ts';
import type { Decision } from './types.ts';

/** The facts about the requester these rules read. */
export interface AccessFacts {
  /** The token holds patient/ scopes: confined to its launch patient whatever else it holds. */
  readonly confinedToLaunchPatient: boolean;
  /** The launch patient (bare id), when the token has one. */
  readonly launchPatient?: string;
  /** A system/ client (the only kind that receives a Binary without a security context). */
  readonly systemClient: boolean;
}

/** SPEC §3: a token confined to its launch patient sees nothing of another patient's (without one, of any patient's). */
export function launchPatientRefusal(facts: AccessFacts, patients: readonly string[]): Decision | undefined {
  if (!facts.confinedToLaunchPatient || patients.length === 0) return undefined;
  if (facts.launchPatient !== undefined && patients.includes(facts.launchPatient)) return undefined;
  return refusal('patient-context', 'outside the launch patient’s compartment');
}

/**
 * SPEC §5: a Binary governed by another resource (its security context) is released only by reading it,
 * where that context is decided; one without a security context only to system/ clients.
 * `governedElsewhere`: it has a security context and names no patient itself.
 */
export function binaryRefusal(resource: Resource, facts: AccessFacts, opts: { readonly contextChecked: boolean; readonly governedElsewhere: boolean }): Decision | undefined {
  if (resource.resourceType !== 'Binary') return undefined;
  if (!opts.contextChecked && opts.governedElsewhere) {
    return refusal('security-context', 'a Binary governed by another resource is released only by reading it');
  }
  if (!resource.securityContext?.reference && !facts.systemClient) {
    return refusal('security-context', 'a Binary without a security context is released only to system clients');
  }
  return undefined;
}
