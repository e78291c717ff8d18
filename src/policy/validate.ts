// R4 validation of policy resources (Consent, Flag) with @medplum/core, done in policy/ because it reads
// the FHIR definitions from disk. Validation costs 0.5–2 ms per resource, so the policy store validates
// each Consent/Flag once when it loads it and carries the failures in PatientPolicyInputs.invalid;
// decide/ only reads that (issue 18: decide/ does no I/O).
import { normalizeErrorString, validateResource } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { isR5Consent } from '../decide/consent-shape.ts';
import type { PolicyResourceValidity } from '../decide/types.ts';
import { loadFhirDefinitions } from '../fhir/definitions.ts';

export type { PolicyResourceValidity } from '../decide/types.ts';

const remembered = new WeakMap<object, PolicyResourceValidity>();

/** Validate a Consent or Flag against the FHIR R4 base definitions; the answer is remembered per object. */
export function validatePolicyResource(resource: Resource): PolicyResourceValidity {
  const known = remembered.get(resource);
  if (known) return known;
  let result: PolicyResourceValidity;
  if (isR5Consent(resource)) {
    result = { valid: true }; // SPEC §4.1 reads R5 consents too; R4 validation does not apply
  } else {
    loadFhirDefinitions(); // static package data, indexed once per process
    try {
      validateResource(resource);
      result = { valid: true };
    } catch (err) {
      result = { valid: false, message: normalizeErrorString(err) };
    }
  }
  remembered.set(resource, result);
  return result;
}

/** The validator's message for a resource that fails R4 validation, undefined when it validates. */
export function validationFailure(resource: Resource): string | undefined {
  const validity = validatePolicyResource(resource);
  return validity.valid ? undefined : validity.message;
}

/** `Consent/id` / `Flag/id` → validator message, for those of `resources` that fail (PatientPolicyInputs.invalid). */
export function invalidPolicyResources(resources: readonly Resource[]): Record<string, string> {
  const invalid: Record<string, string> = {};
  for (const r of resources) {
    const message = validationFailure(r);
    if (message !== undefined) invalid[policyResourceKey(r)] = message;
  }
  return invalid;
}

/** How PatientPolicyInputs.invalid names a Consent or Flag (as the decision trace does). */
export function policyResourceKey(resource: Resource): string {
  return `${resource.resourceType}/${resource.id ?? '(no id)'}`;
}
