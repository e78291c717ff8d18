// Deterministic synthetic Observations for the embedded-upstream scale test and bench: `count`
// Observations spread round-robin over `patients` Patients, with four codes and one-minute steps.
import type { Observation, Patient, Resource } from '@medplum/fhirtypes';

export const SYNTHETIC_CODES = ['8302-2', '29463-7', '39156-5', '8867-4'] as const;

export interface SyntheticObservation {
  readonly id: string;
  readonly patient: string;
  readonly code: string;
  readonly date: string;
  /** Another patient named as performer (puts it in that patient's compartment too), if any. */
  readonly performer?: string;
}

export function syntheticObservations(count: number, patients: number): SyntheticObservation[] {
  const start = Date.UTC(2020, 0, 1);
  return Array.from({ length: count }, (_, i) => ({
    id: `obs-${i}`,
    patient: `p${i % patients}`,
    code: SYNTHETIC_CODES[Math.floor(i / patients) % SYNTHETIC_CODES.length],
    // dates not monotonic in creation order, so sorting is observable
    date: new Date(start + ((i * 7919) % count) * 60_000).toISOString(),
    ...(i % 97 === 0 ? { performer: `p${(i + 1) % patients}` } : {}),
  }));
}

export function toResources(observations: readonly SyntheticObservation[], patients: number): Resource[] {
  const patientResources: Patient[] = Array.from({ length: patients }, (_, i) => ({ resourceType: 'Patient', id: `p${i}`, name: [{ family: `Synthetic${i}` }] }));
  const observationResources: Observation[] = observations.map((o) => ({
    resourceType: 'Observation',
    id: o.id,
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: o.code }] },
    subject: { reference: `Patient/${o.patient}` },
    effectiveDateTime: o.date,
    valueQuantity: { value: 1, unit: '1' },
    ...(o.performer ? { performer: [{ reference: `Patient/${o.performer}` }] } : {}),
  }));
  return [...patientResources, ...observationResources];
}
