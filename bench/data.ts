// Benchmark load: the Synthea patients, each topped up with synthetic Observations cloned from their own
// Synthea Observations (so entries keep a realistic size), and one patient with several Consents under
// which a third of the entries are withheld and a tenth carry an inline-labelled note to redact.
import type { Consent, ConsentProvision, Observation, Patient, Practitioner, Resource } from '@medplum/fhirtypes';
import { CONSENT_SCOPE, DS4P_INLINE_LABEL, V3_ACT_REASON, V3_CONFIDENTIALITY, V3_OBSERVATION_VALUE } from '../src/fhir/systems.ts';

export const WITHHELD_CODE = { system: 'https://disclosure-gateway.org/fhir/CodeSystem/bench', code: 'withheld-by-consent' };
/** Consent c2 denies data from this period. */
export const WITHHELD_PERIOD = { start: '2001-01-01', end: '2005-12-31' };
export const REQUESTER = 'Practitioner/bench-dr-a';

const role = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] };

export function benchConsent(id: string, patientId: string, dateTime: string, provision: ConsentProvision): Consent {
  return {
    resourceType: 'Consent',
    id,
    status: 'active',
    scope: { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/${patientId}` },
    dateTime,
    policy: [{ uri: 'https://disclosure-gateway.org/policy/bench' }],
    provision,
  };
}

/**
 * Four consents; for the bench requester (Dr A, TREAT) two of them apply: c1 denies entries coded
 * WITHHELD_CODE, c2 denies entries dated in WITHHELD_PERIOD. c3 and c4 name another actor and a
 * marketing purpose, so they are matched and found not to apply (the cost of looking is measured).
 */
export function withholdingConsents(patientId: string, extra = 0): Consent[] {
  const consents = [
    benchConsent(`${patientId}-c1`, patientId, '2023-01-01', { type: 'deny', code: [{ coding: [WITHHELD_CODE] }] }),
    benchConsent(`${patientId}-c2`, patientId, '2024-01-01', { type: 'deny', dataPeriod: WITHHELD_PERIOD }),
    benchConsent(`${patientId}-c3`, patientId, '2022-01-01', { type: 'deny', actor: [{ role, reference: { reference: 'Practitioner/bench-other' } }] }),
    benchConsent(`${patientId}-c4`, patientId, '2021-01-01', { type: 'deny', purpose: [{ system: V3_ACT_REASON, code: 'HMARKT' }] }),
  ];
  for (let i = 0; i < extra; i++) {
    consents.push(benchConsent(`${patientId}-x${i}`, patientId, `2020-01-${String(1 + (i % 28)).padStart(2, '0')}`, { type: 'deny', code: [{ coding: [{ system: WITHHELD_CODE.system, code: `other-${i}` }] }] }));
  }
  return consents;
}

export type Shape = 'plain' | 'withholding';

/**
 * Observation number `i` of a patient. For the withholding shape: i%12==0 coded WITHHELD_CODE (c1 deny),
 * i%12==6 dated 2003 (c2 deny), i%6==3 labelled R (the implicit policy denies R; break-the-glass lifts
 * it) — a third in all; i%10==1 (when not withheld) carries a note labelled R inline (redacted).
 */
export function syntheticObservation(template: Observation, patientId: string, i: number, shape: Shape): Observation {
  const day = new Date(Date.UTC(2012, 0, 1) + i * 86_400_000).toISOString();
  const obs: Observation = {
    ...structuredClone(template),
    id: `${patientId}-obs-${i}`,
    subject: { reference: `Patient/${patientId}` },
    effectiveDateTime: day,
    issued: day,
  };
  delete obs.encounter;
  delete obs.meta;
  if (shape === 'plain') return obs;
  if (i % 12 === 0) obs.code = { coding: [WITHHELD_CODE], text: 'withheld by consent' };
  if (i % 12 === 6) {
    obs.effectiveDateTime = `2003-0${1 + (i % 9)}-15T10:00:00Z`;
    obs.issued = obs.effectiveDateTime;
  }
  if (i % 6 === 3) obs.meta = { security: [{ system: V3_CONFIDENTIALITY, code: 'R' }] };
  else if (i % 10 === 1 && i % 12 !== 0) {
    obs.meta = { security: [{ system: V3_OBSERVATION_VALUE, code: 'PROCESSINLINELABEL' }] };
    obs.note = [
      { text: 'routine follow-up' },
      { text: 'sensitive remark', extension: [{ url: DS4P_INLINE_LABEL, valueCoding: { system: V3_CONFIDENTIALITY, code: 'R' } }] },
    ];
  }
  return obs;
}

export interface BenchPatient {
  readonly id: string;
  readonly observations: number;
  readonly shape: Shape;
}

export interface BenchLoad {
  readonly resources: Resource[];
  /** No consents: everything released. */
  readonly permitted: BenchPatient;
  /** Consents c1–c4: a third withheld, some redacted. */
  readonly withholding: BenchPatient;
}

/** Observations each bench patient gets (≥ 1,000 so a 1,000-entry page fills). */
export const PERMITTED_OBSERVATIONS = 1_200;
export const WITHHOLDING_OBSERVATIONS = 1_600;

/**
 * Synthetic resources added on top of the Synthea bundles, which the caller seeds first. `templates`
 * are Synthea Observations (any patient's), cloned for size and shape.
 */
export function benchLoad(templates: readonly Observation[]): BenchLoad {
  if (templates.length === 0) throw new Error('no Synthea Observations to clone');
  const permitted: BenchPatient = { id: 'bench-permitted', observations: PERMITTED_OBSERVATIONS, shape: 'plain' };
  const withholding: BenchPatient = { id: 'bench-consents', observations: WITHHOLDING_OBSERVATIONS, shape: 'withholding' };
  const resources: Resource[] = [];
  const practitioner: Practitioner = { resourceType: 'Practitioner', id: REQUESTER.split('/')[1], name: [{ family: 'Bench', given: ['A'] }] };
  resources.push(practitioner);
  for (const p of [permitted, withholding]) {
    const patient: Patient = { resourceType: 'Patient', id: p.id, name: [{ family: 'Bench', given: [p.shape] }], gender: 'unknown', birthDate: '1970-01-01' };
    resources.push(patient);
    for (let i = 0; i < p.observations; i++) resources.push(syntheticObservation(templates[i % templates.length], p.id, i, p.shape));
  }
  resources.push(...withholdingConsents(withholding.id));
  return { resources, permitted, withholding };
}
