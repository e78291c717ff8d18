// Canonical URLs the gateway reads and writes; one place so every room spells them alike.
export const DG = 'https://disclosure-gateway.org/fhir';
export const DG_CODES = `${DG}/CodeSystem/disclosure`;
export const DG_EXT_HARM_GROUND = `${DG}/StructureDefinition/harm-ground`;
export const DG_EXT_WITHHELD_DATA = `${DG}/StructureDefinition/withheld-data`;

export const V3_ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
export const V3_CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
export const V3_ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
export const V3_OBSERVATION_VALUE = 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue';
export const CONSENT_SCOPE = 'http://terminology.hl7.org/CodeSystem/consentscope';
export const CONSENT_POLICY = 'http://terminology.hl7.org/CodeSystem/consentpolicycodes';
export const DATA_ABSENT_REASON = 'http://terminology.hl7.org/CodeSystem/data-absent-reason';
/** The R4 core extension that says why a required element is absent (SPEC §5: `masked` after redaction). */
export const DATA_ABSENT_REASON_EXTENSION = 'http://hl7.org/fhir/StructureDefinition/data-absent-reason';
export const DS4P_INLINE_LABEL = 'http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-inline-sec-label';
export const DS4P_EXTENSION_DISPLAY = 'http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-display';
export const R5_CONSENT_DECISION = 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Consent.decision';
export const R5_CONSENT_PERIOD = 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Consent.period';
export const SECURITY_TAG_SCHEME = 'http://hl7.org/fhir/tag/security';

export const PART2_NOTICE = '42 CFR part 2 prohibits unauthorized use or disclosure of these records.';

/**
 * Other spellings the standards accept for the code systems the gateway reads (issue 13): the FHIR
 * STU3/DSTU2 URIs (`http://hl7.org/fhir/v3/…`, `http://hl7.org/fhir/<name>`) and the OIDs HL7
 * Terminology lists as each CodeSystem's identifier. Each maps to the HL7 Terminology canonical.
 */
const legacySpellings: readonly (readonly [canonical: string, stu3: string, oid: string])[] = [
  [V3_ACT_CODE, 'http://hl7.org/fhir/v3/ActCode', 'urn:oid:2.16.840.1.113883.5.4'],
  [V3_ACT_REASON, 'http://hl7.org/fhir/v3/ActReason', 'urn:oid:2.16.840.1.113883.5.8'],
  [V3_CONFIDENTIALITY, 'http://hl7.org/fhir/v3/Confidentiality', 'urn:oid:2.16.840.1.113883.5.25'],
  [V3_OBSERVATION_VALUE, 'http://hl7.org/fhir/v3/ObservationValue', 'urn:oid:2.16.840.1.113883.5.1063'],
  [DATA_ABSENT_REASON, 'http://hl7.org/fhir/data-absent-reason', 'urn:oid:2.16.840.1.113883.4.642.4.1048'],
  [CONSENT_SCOPE, 'http://hl7.org/fhir/consentscope', 'urn:oid:2.16.840.1.113883.4.642.4.1228'],
  [CONSENT_POLICY, 'http://hl7.org/fhir/consentpolicycodes', 'urn:oid:2.16.840.1.113883.4.642.4.1229'],
];
export const SYSTEM_SPELLINGS: ReadonlyMap<string, string> = new Map(
  legacySpellings.flatMap(([canonical, stu3, oid]) => [[stu3, canonical], [oid, canonical]] as const),
);

/** The HL7 Terminology canonical of a code system written in any accepted spelling (others unchanged). */
export function canonicalSystem(system: string | undefined): string | undefined {
  return system === undefined ? undefined : (SYSTEM_SPELLINGS.get(system) ?? system);
}

/** The same Coding with its system in canonical spelling (the same object when it already is). */
export function canonicalCoding<T extends { system?: string }>(coding: T): T {
  const system = coding.system === undefined ? undefined : SYSTEM_SPELLINGS.get(coding.system);
  return system === undefined ? coding : { ...coding, system };
}
