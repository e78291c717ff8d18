// The gateway's own AuditEvent vocabulary: where IHE BALP has no slot (withheld reason, redacted paths,
// break-the-glass review flag) these extensions carry it (SPEC §6). Their StructureDefinitions live in
// profiles/audit/; test/audit/validate.ts checks every built event against them.
import { DG } from '../fhir/systems.ts';

/** On AuditEvent.entity: what happened to that resource — released | withheld | redacted. */
export const DG_EXT_AUDIT_DISPOSITION = `${DG}/StructureDefinition/audit-disposition`;
/** On AuditEvent.entity (why withheld/redacted) and AuditEvent (rules ignored): one trace entry. */
export const DG_EXT_AUDIT_RULE = `${DG}/StructureDefinition/audit-rule`;
/** On AuditEvent.entity: an element path removed by redaction (repeats). */
export const DG_EXT_AUDIT_REDACTED_PATH = `${DG}/StructureDefinition/audit-redacted-path`;
/** On AuditEvent and AuditEvent.entity: break-the-glass happened here; an auditor must review it. */
export const DG_EXT_AUDIT_BREAK_THE_GLASS = `${DG}/StructureDefinition/audit-break-the-glass`;

/** Codes of the extensions above. */
export const DG_AUDIT_CODES = `${DG}/CodeSystem/audit`;
export const DG_VS_AUDIT_DISPOSITION = `${DG}/ValueSet/audit-disposition`;
export const DG_VS_AUDIT_BREAK_THE_GLASS = `${DG}/ValueSet/audit-break-the-glass`;
export const DG_VS_AUDIT_RULE_LAYER = `${DG}/ValueSet/audit-rule-layer`;
export const DG_VS_AUDIT_RULE_EFFECT = `${DG}/ValueSet/audit-rule-effect`;

export type AuditDisposition = 'released' | 'withheld' | 'redacted';
/**
 * `btg-released`: data was released only because break-the-glass was in effect;
 * `btg-in-effect`: break-the-glass was in effect for the request;
 * `btg-attempt`: break-the-glass was asked for without authorisation (SPEC §3).
 */
export type BreakTheGlassReview = 'btg-released' | 'btg-in-effect' | 'btg-attempt';
