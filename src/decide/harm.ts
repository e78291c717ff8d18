// Harm determinations (SPEC §4.3, HIPAA 164.524(a)(3), information blocking 45 CFR 171.201).
import type { Flag } from '@medplum/fhirtypes';
import { DG_CODES, DG_EXT_HARM_GROUND, DG_EXT_WITHHELD_DATA } from '../fhir/systems.ts';
import { periodContains } from './consent-shape.ts';
import { isForeignKey, keyType, referenceKey } from '../fhir/references.ts';
import type { PatientPolicyInputs } from './types.ts';

export type HarmGround = 'harm-life-safety' | 'harm-other-person' | 'harm-representative';

/** Plain words for each ground, as the refusal must state them (SPEC §4.3). */
export const harmGroundMeaning: Readonly<Record<HarmGround, string>> = {
  'harm-life-safety':
    'a licensed health care professional has determined that access is reasonably likely to endanger the life or physical safety of the patient or another person',
  'harm-other-person':
    'the record refers to another person and a licensed health care professional has determined that access is reasonably likely to cause substantial harm to that person',
  'harm-representative':
    'a licensed health care professional has determined that access by this personal representative is reasonably likely to cause substantial harm to the patient or another person',
};

const grounds: ReadonlySet<string> = new Set<string>(Object.keys(harmGroundMeaning));

/** The refusal text stated to the patient or representative. */
export function harmRefusalText(ground: HarmGround): string {
  return (
    `Access to this record has been refused (${ground}): ${harmGroundMeaning[ground]} (45 CFR 164.524(a)(3)). ` +
    'You have the right to have this refusal reviewed by a licensed health care professional who did not take part in the original decision.'
  );
}

/** SPEC §4.3: every validity rule; invalid flags are ignored and the reason is audited. */
export function harmDeterminationValidity(
  flag: Flag,
  inputs: PatientPolicyInputs,
  now: Date,
): { valid: true; ground: HarmGround; withheld: string[] } | { valid: false; reason: string } {
  // Validated by the policy store when it loaded the flag (issue 18: decide/ does no I/O).
  const invalid = inputs.invalid?.[`Flag/${flag.id ?? '(no id)'}`];
  if (invalid !== undefined) return { valid: false, reason: `does not validate as FHIR R4: ${invalid}` };
  if (flag.status !== 'active') return { valid: false, reason: `status is ${flag.status}, not active` };
  const isHarm = (flag.code?.coding ?? []).some((c) => c.system === DG_CODES && c.code === 'harm-determination');
  if (!isHarm) return { valid: false, reason: 'code is not DG#harm-determination' };
  if (referenceKey(flag.subject?.reference) !== `Patient/${inputs.patientId}`) {
    return { valid: false, reason: 'subject is not the patient' };
  }
  const author = referenceKey(flag.author?.reference);
  if (!author) return { valid: false, reason: 'no author: a harm determination must be made by a licensed professional' };
  if (keyType(author) !== 'Practitioner' && keyType(author) !== 'PractitionerRole') {
    return { valid: false, reason: `author ${keyType(author)} is not a Practitioner or PractitionerRole` };
  }
  // SPEC §4.1: a practitioner of another server is not the local one whose care relationship is known.
  if (isForeignKey(author)) return { valid: false, reason: 'author is a practitioner of another server' };
  const groundCodes = new Set(
    (flag.extension ?? [])
      .filter((e) => e.url === DG_EXT_HARM_GROUND)
      .map((e) => (e.valueCoding?.system === DG_CODES ? e.valueCoding.code : undefined)),
  );
  if (groundCodes.size === 0) return { valid: false, reason: 'no harm-ground extension' };
  if (groundCodes.size > 1) return { valid: false, reason: 'more than one harm ground' };
  const [ground] = groundCodes;
  if (!ground || !grounds.has(ground)) return { valid: false, reason: `ground ${ground ?? 'absent'} is not a recognised harm ground` };
  const withheld = (flag.extension ?? [])
    .filter((e) => e.url === DG_EXT_WITHHELD_DATA)
    .map((e) => referenceKey(e.valueReference?.reference))
    .filter((r): r is string => !!r);
  if (withheld.length === 0) {
    return { valid: false, reason: 'no withheld-data: a hold on all records would be information blocking (45 CFR 171.201)' };
  }
  if (!periodContains(flag.period, now.getTime())) return { valid: false, reason: 'period does not contain now' };
  const related = inputs.careRelationships.some((r) => referenceKey(r) === author);
  if (!related) return { valid: false, reason: `author ${author} has no care relationship with the patient` };
  return { valid: true, ground: ground as HarmGround, withheld };
}
