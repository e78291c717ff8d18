// Builders for the decision-engine tests: the scenarios.md cast (P1, Dr A, Dr Bob, payer, guardian…).
import type { Coding, Consent, ConsentProvision, Flag, Resource } from '@medplum/fhirtypes';
import { defaultPolicy, type DecisionPolicy } from '../../src/config/policy.ts';
import {
  CONSENT_SCOPE,
  DG_CODES,
  DG_EXT_HARM_GROUND,
  DG_EXT_WITHHELD_DATA,
  V3_ACT_CODE,
  V3_ACT_REASON,
  V3_CONFIDENTIALITY,
} from '../../src/fhir/systems.ts';
import type { PatientPolicyInputs, Requester } from '../../src/decide/types.ts';
import { invalidPolicyResources } from '../../src/policy/validate.ts';

export const NOW = new Date('2025-06-15T12:00:00Z');
export const P1 = 'p1';

export const conf = (code: string): Coding => ({ system: V3_CONFIDENTIALITY, code });
export const act = (code: string): Coding => ({ system: V3_ACT_CODE, code });
export const purpose = (...codes: string[]): Coding[] => codes.map((code) => ({ system: V3_ACT_REASON, code }));
export const TPO = purpose('TREAT', 'HPAYMT', 'HOPERAT');
// R4 requires actor.role; IRCP = information recipient.
export const actor = (reference: string): NonNullable<ConsentProvision['actor']>[number] => ({
  role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] },
  reference: { reference },
});

export function consent(id: string, provision: ConsentProvision, extra: Partial<Consent> = {}): Consent {
  return {
    resourceType: 'Consent',
    id,
    status: 'active',
    scope: { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/${P1}` },
    dateTime: '2024-01-01',
    policy: [{ uri: 'https://disclosure-gateway.org/policy/demo' }],
    provision,
    ...extra,
  };
}

export function legalRestriction(id: string, provision: ConsentProvision): Consent {
  return consent(id, provision, {
    category: [{ coding: [{ system: DG_CODES, code: 'legal-restriction' }] }],
    sourceReference: { reference: 'DocumentReference/court-order-1' },
  });
}

export function harmFlag(id: string, extra: Partial<Flag> = {}, ground = 'harm-life-safety', withheld = ['DiagnosticReport/d1']): Flag {
  return {
    resourceType: 'Flag',
    id,
    status: 'active',
    code: { coding: [{ system: DG_CODES, code: 'harm-determination' }] },
    subject: { reference: `Patient/${P1}` },
    author: { reference: 'Practitioner/dr-a' },
    extension: [
      { url: DG_EXT_HARM_GROUND, valueCoding: { system: DG_CODES, code: ground } },
      ...withheld.map((reference) => ({ url: DG_EXT_WITHHELD_DATA, valueReference: { reference } })),
    ],
    ...extra,
  };
}

export function inputs(consents: Consent[] = [], flags: Flag[] = [], extra: Partial<PatientPolicyInputs> = {}): PatientPolicyInputs {
  return {
    patientId: P1,
    consents,
    flags,
    memberships: { 'Group/btg-users': ['Practitioner/dr-a'] },
    identifiers: {},
    careRelationships: ['Practitioner/dr-a'],
    // As the policy store does at load: decide/ only reads which resources failed R4 validation.
    invalid: invalidPolicyResources([...consents, ...flags]),
    ...extra,
  };
}

function requester(fhirUser: string | undefined, references: string[], purposes: string[], clientKind: Requester['clientKind'], breakGlass = false): Requester {
  return { fhirUser, references, identifiers: [], purposes, breakGlass, clientKind, action: 'access' };
}

export const who = {
  drA: (purposes = ['TREAT'], breakGlass = false) =>
    requester('Practitioner/dr-a', ['Practitioner/dr-a', 'Organization/hospital'], purposes, 'user', breakGlass),
  bob: (purposes = ['TREAT'], breakGlass = false) => requester('Practitioner/bob', ['Practitioner/bob'], purposes, 'user', breakGlass),
  payer: () => requester(undefined, ['Organization/payer'], ['HPAYMT'], 'system'),
  research: () => requester(undefined, ['Organization/research'], ['HRESCH'], 'system'),
  patient: () => requester(`Patient/${P1}`, [`Patient/${P1}`], ['PATRQT'], 'patient'),
  guardian: (purposes = ['FAMRQT']) => requester('RelatedPerson/guardian', ['RelatedPerson/guardian'], purposes, 'user'),
};

export const policyWith = (patch: Partial<DecisionPolicy>): DecisionPolicy => ({ ...defaultPolicy, ...patch });

export function observation(id: string, labels: Coding[] = [], extra: Record<string, unknown> = {}): Resource {
  return {
    resourceType: 'Observation',
    id,
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: `Patient/${P1}` },
    effectiveDateTime: '2023-03-01T10:00:00Z',
    meta: { security: labels, lastUpdated: '2024-05-01T00:00:00Z' },
    ...extra,
  } as Resource;
}

// HL7 Terminology defines PROCESSINLINELABEL in v3-ActCode (SPEC §5).
export const PROCESS_INLINE: Coding = { system: V3_ACT_CODE, code: 'PROCESSINLINELABEL' };
