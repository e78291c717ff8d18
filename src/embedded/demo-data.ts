// The embedded demo's own data set: patient p1 with consents, a legal restriction, harm determinations and
// labelled records, so that each rule of SPEC §4 can be seen with a persona's curl line. Synthea patients
// (fixtures/synthea) are loaded beside it and fall under the implicit policy.
import type { Coding, Consent, Flag, Observation, Resource } from '@medplum/fhirtypes';
import {
  CONSENT_SCOPE,
  DG_CODES,
  DG_EXT_HARM_GROUND,
  DG_EXT_WITHHELD_DATA,
  DS4P_INLINE_LABEL,
  V3_ACT_CODE,
  V3_ACT_REASON,
  V3_CONFIDENTIALITY,
} from '../fhir/systems.ts';

export const DEMO_PATIENT = 'p1';

const conf = (code: string): Coding => ({ system: V3_CONFIDENTIALITY, code });
const act = (code: string): Coding => ({ system: V3_ACT_CODE, code });
const purpose = (code: string): Coding => ({ system: V3_ACT_REASON, code });
const privacy = { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy' }] };
const p1 = { reference: `Patient/${DEMO_PATIENT}` };

function observation(id: string, loinc: string, display: string, effective: string, value: string, security: Coding[] = [], extra: Partial<Observation> = {}): Observation {
  return {
    resourceType: 'Observation',
    id,
    meta: security.length ? { security } : undefined,
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: loinc, display }], text: display },
    subject: p1,
    effectiveDateTime: effective,
    valueString: value,
    text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${display}: ${value}</div>` },
    ...extra,
  };
}

const people: Resource[] = [
  { resourceType: 'Organization', id: 'hospital', name: 'Demo General Hospital', identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '1234567893' }] },
  { resourceType: 'Organization', id: 'payer', name: 'Demo Health Plan' },
  { resourceType: 'Organization', id: 'research', name: 'Demo Research Institute' },
  { resourceType: 'Practitioner', id: 'dr-a', name: [{ family: 'A', given: ['Alice'], prefix: ['Dr'] }], identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '1111111111' }] },
  { resourceType: 'Practitioner', id: 'bob', name: [{ family: 'Bob', given: ['Robert'], prefix: ['Dr'] }], identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '2222222222' }] },
  { resourceType: 'Practitioner', id: 'payer-agent', name: [{ family: 'Agent', given: ['Claims'] }] },
  { resourceType: 'Practitioner', id: 'auditor', name: [{ family: 'Auditor', given: ['Privacy'] }] },
  { resourceType: 'PractitionerRole', id: 'dr-a-hospital', active: true, practitioner: { reference: 'Practitioner/dr-a' }, organization: { reference: 'Organization/hospital' } },
  { resourceType: 'Group', id: 'btg-users', type: 'practitioner', actual: true, name: 'Clinicians allowed to break the glass for p1', member: [{ entity: { reference: 'Practitioner/dr-a' } }] },
  {
    resourceType: 'Patient',
    id: DEMO_PATIENT,
    name: [{ family: 'Example', given: ['Pat'] }],
    gender: 'female',
    birthDate: '1980-04-12',
    generalPractitioner: [{ reference: 'Practitioner/dr-a' }],
    managingOrganization: { reference: 'Organization/hospital' },
  },
  { resourceType: 'RelatedPerson', id: 'guardian', patient: p1, relationship: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleCode', code: 'GUARD' }] }], name: [{ family: 'Example', given: ['Gil'] }] },
];

const encounters: Resource[] = [
  { resourceType: 'Encounter', id: 'e1', status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' }, subject: p1, period: { start: '2024-03-02T09:00:00Z', end: '2024-03-02T09:30:00Z' }, participant: [{ individual: { reference: 'Practitioner/dr-a' } }] },
  // Paid out of pocket: the patient restricted it from the health plan (HIPAA §164.522(a)(1)(vi)).
  { resourceType: 'Encounter', id: 'e9', status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' }, subject: p1, period: { start: '2024-05-20T14:00:00Z', end: '2024-05-20T14:45:00Z' }, participant: [{ individual: { reference: 'Practitioner/dr-a' } }] },
  // Named in the protective order.
  { resourceType: 'Encounter', id: 'e-dv', status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'EMER' }, subject: p1, period: { start: '2024-07-11T22:10:00Z' } },
];

const observations: Resource[] = [
  observation('o1', '8867-4', 'Heart rate', '2024-03-02T09:10:00Z', '72 /min', [], { encounter: { reference: 'Encounter/e1' } }),
  observation('o2', '2339-0', 'Glucose', '2022-06-14T08:00:00Z', '5.4 mmol/L'),
  observation('o-r', '11450-4', 'Problem list (restricted)', '2024-04-01T10:00:00Z', 'restricted finding', [conf('R')]),
  observation('o-v', '75275-8', 'Very restricted note', '2024-04-02T10:00:00Z', 'very restricted finding', [conf('V')]),
  observation('o-psy', '44249-1', 'PHQ-9 total score', '2024-04-03T10:00:00Z', '17 (moderately severe)', [act('PSY'), conf('R')]),
  observation('o-sud', '72109-2', 'AUDIT-C score', '2024-04-04T10:00:00Z', '9', [act('OPIOIDUD')]),
  observation('o-part2', '74204-9', 'Substance use treatment program note', '2024-04-05T10:00:00Z', 'enrolled in treatment program', [act('42CFRPart2'), act('SUD'), conf('R')]),
  observation('o-e9', '29463-7', 'Body weight (self-pay visit)', '2024-05-20T14:10:00Z', '61 kg', [], { encounter: { reference: 'Encounter/e9' } }),
  observation('o-dv', '76499-3', 'Injury note', '2024-07-11T22:30:00Z', 'injuries documented', [], { encounter: { reference: 'Encounter/e-dv' } }),
  observation('o-inline', '8310-5', 'Body temperature', '2024-03-02T09:12:00Z', '37.1 C', [{ system: V3_ACT_CODE, code: 'PROCESSINLINELABEL' }], {
    note: [
      { text: 'Routine check, no concerns.' },
      { text: 'Disclosed a very restricted matter during the visit.', extension: [{ url: DS4P_INLINE_LABEL, valueCoding: conf('V') }] },
    ],
  }),
];

const reports: Resource[] = [
  { resourceType: 'DiagnosticReport', id: 'd1', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '11506-3', display: 'Progress note' }] }, subject: p1, effectiveDateTime: '2024-06-01T10:00:00Z', conclusion: 'clinician assessment' },
  { resourceType: 'DiagnosticReport', id: 'd2', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '24323-8', display: 'Metabolic panel' }] }, subject: p1, effectiveDateTime: '2024-06-02T10:00:00Z', conclusion: 'within normal limits' },
];

const patientConsent: Consent = {
  resourceType: 'Consent',
  id: 'c-p1-privacy',
  status: 'active',
  scope: privacy,
  category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
  patient: p1,
  dateTime: '2024-01-10T09:00:00Z',
  policyRule: { coding: [{ system: V3_ACT_CODE, code: 'OPTIN' }] },
  provision: {
    type: 'permit',
    purpose: [purpose('TREAT'), purpose('HPAYMT'), purpose('HOPERAT'), purpose('PATRQT')],
    securityLabel: [conf('N')],
    provision: [
      // The patient (and those acting for them) also see restricted data — never very restricted.
      { type: 'permit', purpose: [purpose('PATRQT')], securityLabel: [conf('R')] },
      // Dr A may see mental-health data.
      { type: 'permit', actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: 'Practitioner/dr-a' } }], securityLabel: [act('PSY')] },
      // Restricted data for the break-the-glass group in an emergency.
      { type: 'permit', actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: 'Group/btg-users' } }], purpose: [purpose('BTG')], securityLabel: [conf('R')] },
      // 42 CFR Part 2 consent: the treatment program's records to Dr A for treatment.
      { type: 'permit', actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: 'Practitioner/dr-a' } }], purpose: [purpose('TREAT')], securityLabel: [act('42CFRPart2')] },
      // Self-pay restriction: the health plan does not see the e9 visit or anything recorded in it.
      {
        type: 'deny',
        actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: 'Organization/payer' } }],
        purpose: [purpose('HPAYMT')],
        data: [{ meaning: 'dependents', reference: { reference: 'Encounter/e9' } }],
      },
    ],
  },
};

const protectiveOrder: Consent = {
  resourceType: 'Consent',
  id: 'lr-p1-protective-order',
  status: 'active',
  scope: privacy,
  category: [{ coding: [{ system: DG_CODES, code: 'legal-restriction', display: 'Legal restriction' }] }],
  patient: p1,
  dateTime: '2024-07-15T09:00:00Z',
  sourceReference: { reference: 'DocumentReference/court-order-2024-117' },
  policy: [{ authority: 'https://courts.example.org', uri: 'https://courts.example.org/orders/2024-117' }],
  provision: {
    type: 'deny',
    actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: 'RelatedPerson/guardian' } }],
    data: [{ meaning: 'dependents', reference: { reference: 'Encounter/e-dv' } }],
  },
};

function harmFlag(id: string, author: string, ground: string, withheld: string): Flag {
  return {
    resourceType: 'Flag',
    id,
    status: 'active',
    code: { coding: [{ system: DG_CODES, code: 'harm-determination', display: 'Harm determination' }] },
    subject: p1,
    author: { reference: author },
    period: { start: '2024-06-01T00:00:00Z' },
    extension: [
      { url: DG_EXT_HARM_GROUND, valueCoding: { system: DG_CODES, code: ground } },
      { url: DG_EXT_WITHHELD_DATA, valueReference: { reference: withheld } },
    ],
  };
}

// Patient p3: Synthea-style records that arrive without any sensitivity label (SPEC §4.7). The labeling
// service labels them from their codes, so p3's consent "no substance-use or mental-health data to
// Dr Bob" protects them; the blood pressure and the tobacco records are controls (tobacco is not SUD).
export const LABELING_DEMO_PATIENT = 'p3';
const p3 = { reference: `Patient/${LABELING_DEMO_PATIENT}` };
const coded = (system: string, code: string, display: string) => ({ coding: [{ system, code, display }], text: display });
const SCT = 'http://snomed.info/sct';
const unlabelled: Resource[] = [
  { resourceType: 'Patient', id: LABELING_DEMO_PATIENT, name: [{ family: 'Example', given: ['Sam'] }], gender: 'male', birthDate: '1975-09-30', generalPractitioner: [{ reference: 'Practitioner/dr-a' }] },
  { resourceType: 'Condition', id: 'p3-alcoholism', subject: p3, onsetDateTime: '2019-02-11', code: { coding: [{ system: SCT, code: '7200002', display: 'Alcoholism' }, { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'F10.20', display: 'Alcohol dependence, uncomplicated' }] } },
  { resourceType: 'Condition', id: 'p3-overdose', subject: p3, onsetDateTime: '2021-08-03', code: coded(SCT, '55680006', 'Drug overdose') },
  { resourceType: 'MedicationRequest', id: 'p3-buprenorphine', status: 'active', intent: 'order', subject: p3, authoredOn: '2021-08-10', medicationCodeableConcept: coded('http://www.nlm.nih.gov/research/umls/rxnorm', '1010600', 'Buprenorphine 2 MG / Naloxone 0.5 MG Sublingual Film') },
  { resourceType: 'Observation', id: 'p3-phq9', status: 'final', subject: p3, effectiveDateTime: '2024-02-01', code: coded('http://loinc.org', '44261-6', 'Patient Health Questionnaire-9 (PHQ-9) total score'), valueQuantity: { value: 16, unit: '{score}' } },
  { resourceType: 'Observation', id: 'p3-bp', status: 'final', subject: p3, effectiveDateTime: '2024-02-01', code: coded('http://loinc.org', '8480-6', 'Systolic blood pressure'), valueQuantity: { value: 128, unit: 'mm[Hg]' } },
  { resourceType: 'Observation', id: 'p3-smoking', status: 'final', subject: p3, effectiveDateTime: '2024-02-01', code: coded('http://loinc.org', '72166-2', 'Tobacco smoking status'), valueCodeableConcept: coded(SCT, '8517006', 'Former smoker') },
  { resourceType: 'Condition', id: 'p3-nicotine', subject: p3, onsetDateTime: '2010-01-01', code: coded('http://hl7.org/fhir/sid/icd-10-cm', 'F17.210', 'Nicotine dependence, cigarettes, uncomplicated') },
];

const categoryConsent: Consent = {
  resourceType: 'Consent',
  id: 'c-p3-no-sud-mh-to-bob',
  status: 'active',
  scope: privacy,
  category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
  patient: p3,
  dateTime: '2024-03-01T09:00:00Z',
  policy: [{ uri: 'https://disclosure-gateway.org/policy/demo' }],
  // Withheld by category: the records carry no label until the labeling service computes one.
  provision: {
    type: 'deny',
    actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: 'Practitioner/bob' } }],
    securityLabel: [act('SUD'), act('MH')],
  },
};

/** Everything the demo seeds besides the Synthea patients. */
export function demoResources(): Resource[] {
  return [
    ...people,
    ...encounters,
    ...observations,
    ...reports,
    patientConsent,
    protectiveOrder,
    // Valid: Dr A is the patient's GP, so the determination stands and d1 is withheld from the patient.
    harmFlag('harm-d1', 'Practitioner/dr-a', 'harm-life-safety', 'DiagnosticReport/d1'),
    // Invalid: Dr Bob has no care relationship with p1, so it is ignored (and the audit says so).
    harmFlag('harm-d2-invalid', 'Practitioner/bob', 'harm-life-safety', 'DiagnosticReport/d2'),
    ...unlabelled,
    categoryConsent,
  ];
}

/** What each persona's printed curl line asks for (relative to the FHIR base). */
export const demoSamplePaths: Record<string, string> = {
  clinician: `Observation?patient=${DEMO_PATIENT}`,
  'clinician-bob': `Observation?patient=${DEMO_PATIENT}`,
  patient: 'DiagnosticReport',
  guardian: 'Observation/o-inline',
  payer: `Encounter?patient=${DEMO_PATIENT}`,
  researcher: `Observation?patient=${DEMO_PATIENT}`,
  auditor: 'AuditEvent?_count=5',
  'integration-engine': 'Observation?_count=5',
  'break-glass': `Observation?patient=${DEMO_PATIENT}&_security=R`,
};
