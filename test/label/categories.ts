// Unlabelled, Synthea-style resources per sensitivity category, coded in each code system the rule sets
// read (SPEC §4.7), for the labeling tests.
import type { Coding, Resource } from '@medplum/fhirtypes';

export const ICD = 'http://hl7.org/fhir/sid/icd-10-cm';
export const SCT = 'http://snomed.info/sct';
export const LOINC = 'http://loinc.org';
export const RXNORM = 'http://www.nlm.nih.gov/research/umls/rxnorm';

/** One coded fact: the resource type it is recorded as, and its coding. */
export interface CodedFact {
  readonly type: 'Condition' | 'Observation' | 'Procedure' | 'MedicationRequest' | 'ObservationValue' | 'ContainedMedication' | 'EncounterReason';
  readonly system: string;
  readonly code: string;
}

export interface Category {
  readonly name: string;
  /** The v3-ActCode a consent withholding this category names. */
  readonly consentLabel: string;
  /** The label the rule sets are expected to add to every fact. */
  readonly expected: string;
  readonly facts: readonly CodedFact[];
}

export const categories: readonly Category[] = [
  {
    name: 'substance use',
    consentLabel: 'SUD',
    expected: 'SUD',
    facts: [
      { type: 'Condition', system: ICD, code: 'F14.20' },
      { type: 'Condition', system: SCT, code: '6525002' },
      { type: 'Observation', system: LOINC, code: '82667-7' },
      { type: 'MedicationRequest', system: RXNORM, code: '637213' },
    ],
  },
  {
    name: 'alcohol use disorder (ETHUD under a SUD consent)',
    consentLabel: 'SUD',
    expected: 'ETHUD',
    facts: [
      { type: 'Condition', system: ICD, code: 'F10.20' },
      { type: 'Condition', system: SCT, code: '7200002' },
      { type: 'Observation', system: LOINC, code: '75626-2' },
      { type: 'MedicationRequest', system: RXNORM, code: '197623' },
    ],
  },
  {
    name: 'opioid use disorder (OPIOIDUD under an older ETH consent)',
    consentLabel: 'ETH',
    expected: 'OPIOIDUD',
    facts: [
      { type: 'Condition', system: ICD, code: 'F11.20' },
      { type: 'Condition', system: SCT, code: '5602001' },
      { type: 'MedicationRequest', system: RXNORM, code: '1010600' },
      { type: 'ContainedMedication', system: RXNORM, code: '351266' },
    ],
  },
  {
    name: 'mental health',
    consentLabel: 'MH',
    expected: 'MH',
    facts: [
      { type: 'Condition', system: ICD, code: 'F32.9' },
      { type: 'Condition', system: SCT, code: '370143000' },
      { type: 'Observation', system: LOINC, code: '44261-6' },
      { type: 'Procedure', system: SCT, code: '171207006' },
      { type: 'EncounterReason', system: SCT, code: '47505003' },
    ],
  },
  {
    name: 'HIV',
    consentLabel: 'HIV',
    expected: 'HIV',
    facts: [
      { type: 'Condition', system: ICD, code: 'B20' },
      { type: 'Condition', system: SCT, code: '86406008' },
      { type: 'Observation', system: LOINC, code: '7917-8' },
      { type: 'ObservationValue', system: SCT, code: '165816005' },
    ],
  },
  {
    name: 'sexually transmitted infections',
    consentLabel: 'STD',
    expected: 'STD',
    facts: [
      { type: 'Condition', system: ICD, code: 'A54.9' },
      { type: 'Condition', system: SCT, code: '15628003' },
      { type: 'Observation', system: LOINC, code: '20507-0' },
    ],
  },
  {
    name: 'sexual and domestic violence',
    consentLabel: 'SDV',
    expected: 'SDV',
    facts: [
      { type: 'Condition', system: ICD, code: 'T74.11XA' },
      { type: 'Condition', system: SCT, code: '706893006' },
      { type: 'Observation', system: LOINC, code: '76501-6' },
    ],
  },
  {
    name: 'sexuality and reproductive health',
    consentLabel: 'SEX',
    expected: 'SEX',
    facts: [
      { type: 'Condition', system: ICD, code: 'Z30.011' },
      { type: 'Procedure', system: SCT, code: '65200003' },
      { type: 'MedicationRequest', system: RXNORM, code: '807283' },
    ],
  },
  {
    name: 'genetic information',
    consentLabel: 'GDIS',
    expected: 'GDIS',
    facts: [
      { type: 'Condition', system: ICD, code: 'Z15.01' },
      { type: 'Observation', system: LOINC, code: '81247-9' },
    ],
  },
];

/** Facts that look close to a category but are not in it: tobacco is not SUD, an opioid analgesic is not OUD. */
export const controls: readonly CodedFact[] = [
  { type: 'Observation', system: LOINC, code: '8302-2' },
  { type: 'Condition', system: ICD, code: 'F17.210' },
  { type: 'Observation', system: SCT, code: '266919005' },
  { type: 'MedicationRequest', system: RXNORM, code: '1049221' },
  { type: 'Condition', system: SCT, code: '26929004' },
];

const concept = (f: CodedFact) => ({ coding: [{ system: f.system, code: f.code } as Coding] });

/** The fact as an unlabelled resource of `patient`, id `id`. */
export function factResource(f: CodedFact, id: string, patient: string): Resource {
  const subject = { reference: `Patient/${patient}` };
  switch (f.type) {
    case 'Condition':
      return { resourceType: 'Condition', id, subject, code: concept(f) };
    case 'Observation':
      return { resourceType: 'Observation', id, status: 'final', subject, code: concept(f) };
    case 'ObservationValue':
      return { resourceType: 'Observation', id, status: 'final', subject, code: { coding: [{ system: LOINC, code: '75325-1' }] }, valueCodeableConcept: concept(f) };
    case 'Procedure':
      return { resourceType: 'Procedure', id, status: 'completed', subject, code: concept(f) };
    case 'MedicationRequest':
      return { resourceType: 'MedicationRequest', id, status: 'active', intent: 'order', subject, medicationCodeableConcept: concept(f) };
    case 'ContainedMedication':
      return {
        resourceType: 'MedicationRequest', id, status: 'active', intent: 'order', subject,
        contained: [{ resourceType: 'Medication', id: 'med', code: concept(f) }],
        medicationReference: { reference: '#med' },
      };
    case 'EncounterReason':
      return { resourceType: 'Encounter', id, status: 'finished', class: { code: 'AMB' }, subject, reasonCode: [concept(f)] };
  }
}

export const readPath = (r: Resource): string => `${r.resourceType}/${r.id}`;
