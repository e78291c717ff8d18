// Demo personas for the embedded mode (SPEC §2): one token per kind of requester the gateway serves.
// FOR THE DEMO ONLY — the dev issuer signs whatever these say; no real deployment trusts it.
import { V3_ACT_REASON } from '../fhir/systems.ts';

export interface PersonaClaims {
  /** One line, printed next to the persona's curl command. */
  readonly description: string;
  readonly claims: Readonly<Record<string, unknown>>;
}

export const DEFAULT_DEMO_PATIENT_ID = 'p1';

const iua = (code: string): { ihe_iua: { purpose_of_use: { system: string; code: string } } } => ({
  ihe_iua: { purpose_of_use: { system: V3_ACT_REASON, code } },
});

const definitions = {
  clinician: (_patientId: string): PersonaClaims => ({
    description: "Dr A (the patient's GP): user/*.rs, purpose TREAT",
    claims: { sub: 'dr-a', client_id: 'demo-clinician-app', fhirUser: 'Practitioner/dr-a', organization: 'Organization/hospital', scope: 'openid fhirUser user/*.rs', extensions: iua('TREAT') },
  }),
  'clinician-bob': (_patientId: string): PersonaClaims => ({
    description: 'Dr Bob (no care relationship with the patient): user/*.rs, purpose TREAT',
    claims: { sub: 'bob', client_id: 'demo-clinician-app', fhirUser: 'Practitioner/bob', scope: 'openid fhirUser user/*.rs', extensions: iua('TREAT') },
  }),
  patient: (patientId: string): PersonaClaims => ({
    description: 'the patient through a SMART app: patient/*.rs in their own context, purpose PATRQT (implied)',
    claims: {
      sub: patientId,
      client_id: 'demo-patient-app',
      fhirUser: `Patient/${patientId}`,
      patient: patientId,
      scope: 'openid fhirUser launch/patient patient/*.rs',
    },
  }),
  guardian: (patientId: string): PersonaClaims => ({
    description: "the patient's guardian (RelatedPerson): patient/*.rs in the patient's context, purpose FAMRQT",
    claims: {
      sub: 'guardian',
      client_id: 'demo-patient-app',
      fhirUser: 'RelatedPerson/guardian',
      patient: patientId,
      scope: 'openid fhirUser launch/patient patient/*.rs',
      extensions: iua('FAMRQT'),
    },
  }),
  payer: (_patientId: string): PersonaClaims => ({
    description: 'a claims agent of Organization/payer: user/*.rs, purpose HPAYMT',
    claims: {
      sub: 'payer-agent',
      client_id: 'demo-payer',
      fhirUser: 'Practitioner/payer-agent',
      organization: 'Organization/payer',
      scope: 'openid fhirUser user/*.rs',
      extensions: iua('HPAYMT'),
    },
  }),
  researcher: (_patientId: string): PersonaClaims => ({
    description: 'a research backend of Organization/research: system/*.rs, purpose HRESCH',
    claims: { sub: 'research-client', client_id: 'research-client', organization: 'Organization/research', scope: 'system/*.rs', extensions: iua('HRESCH') },
  }),
  auditor: (_patientId: string): PersonaClaims => ({
    description: 'a privacy auditor: reads AuditEvents, Consents and harm Flags, marks break-the-glass reviews (Task); purpose HOPERAT',
    claims: {
      sub: 'auditor',
      client_id: 'demo-audit-console',
      fhirUser: 'Practitioner/auditor',
      scope: 'openid fhirUser user/AuditEvent.rs system/Consent.r user/Flag.rs user/Task.cru?code=https://disclosure-gateway.org/fhir/CodeSystem/audit|btg-review',
      extensions: iua('HOPERAT'),
    },
  }),
  'integration-engine': (_patientId: string): PersonaClaims => ({
    description: 'the hospital integration engine (backend services): system/*.rs, purpose TREAT',
    claims: { sub: 'integration-engine', client_id: 'integration-engine', scope: 'system/*.rs', purpose_of_use: 'TREAT' },
  }),
  'break-glass': (_patientId: string): PersonaClaims => ({
    description: 'Dr A breaking the glass: user/*.rs with the btg scope, purpose BTG',
    claims: { sub: 'dr-a', client_id: 'demo-clinician-app', fhirUser: 'Practitioner/dr-a', organization: 'Organization/hospital', scope: 'openid fhirUser user/*.rs btg', extensions: iua('BTG') },
  }),
} as const satisfies Record<string, (patientId: string) => PersonaClaims>;

export type PersonaName = keyof typeof definitions;
export const personaNames = Object.keys(definitions) as PersonaName[];

export function isPersonaName(name: string): name is PersonaName {
  return Object.hasOwn(definitions, name);
}

/** A persona's description and claims for the given demo patient (default `p1`). */
export function persona(name: PersonaName, opts: { patientId?: string } = {}): PersonaClaims {
  return definitions[name](opts.patientId ?? DEFAULT_DEMO_PATIENT_ID);
}

/** The claims of a persona; the demo data decides the patient id. */
export function personaClaims(name: PersonaName, opts: { patientId?: string } = {}): Readonly<Record<string, unknown>> {
  return persona(name, opts).claims;
}

/** Every persona, for the default demo patient. */
export const personas: Readonly<Record<PersonaName, PersonaClaims>> = Object.freeze(
  Object.fromEntries(personaNames.map((name) => [name, persona(name)])) as Record<PersonaName, PersonaClaims>,
);
