// R4 validation of policy resources (Consent, Flag) with @medplum/core. Validation costs 0.5–2 ms per
// resource, so it is memoised per resource object: the policy store calls validatePolicyResource
// once when it loads a resource, and compile() then only reads the remembered answer.
import { normalizeErrorString, validateResource } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../fhir/definitions.ts';

export type PolicyResourceValidity = { readonly valid: true } | { readonly valid: false; readonly message: string };

const remembered = new WeakMap<object, PolicyResourceValidity>();

/** True for a Consent written in R5 shape (SPEC §4.1 reads those too); R4 validation does not apply. */
export function isR5Consent(resource: Resource): boolean {
  const r = resource as unknown as Record<string, unknown>;
  return resource.resourceType === 'Consent' && (r.decision !== undefined || Array.isArray(r.provision));
}

/** Validate a Consent or Flag against the FHIR R4 base definitions; the answer is remembered per object. */
export function validatePolicyResource(resource: Resource): PolicyResourceValidity {
  const known = remembered.get(resource);
  if (known) return known;
  let result: PolicyResourceValidity;
  if (isR5Consent(resource)) {
    result = { valid: true };
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
