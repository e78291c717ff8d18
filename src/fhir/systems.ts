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
export const DS4P_INLINE_LABEL = 'http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-inline-sec-label';
export const DS4P_EXTENSION_DISPLAY = 'http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-display';
export const R5_CONSENT_DECISION = 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Consent.decision';
export const R5_CONSENT_PERIOD = 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Consent.period';
export const SECURITY_TAG_SCHEME = 'http://hl7.org/fhir/tag/security';

export const PART2_NOTICE = '42 CFR part 2 prohibits unauthorized use or disclosure of these records.';
