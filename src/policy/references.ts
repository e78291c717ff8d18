// Reading the Consent elements the policy inputs depend on, from R4 and R5 shapes alike (SPEC §4.1);
// references themselves are parsed by src/fhir/references.ts.
import type { Consent, ConsentProvision } from '@medplum/fhirtypes';

/** Every provision of a Consent at any depth: R4 `provision` is one object, R5 a list. */
export function consentProvisions(consent: Consent): ConsentProvision[] {
  const root: unknown = (consent as { provision?: unknown }).provision;
  const found: ConsentProvision[] = [];
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const child of node) visit(child);
      return;
    }
    if (typeof node !== 'object' || node === null) return;
    const provision = node as ConsentProvision;
    found.push(provision);
    visit((provision as { provision?: unknown }).provision);
  };
  visit(root);
  return found;
}

/** The patient a Consent is about: R4 `patient`, R5 `subject`. */
export function consentPatientReference(consent: Consent): string | undefined {
  return consent.patient?.reference ?? (consent as { subject?: { reference?: string } }).subject?.reference;
}
