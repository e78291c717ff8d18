// Issue 13 (1), SPEC §5: an element carrying a DS4P inline label the requester may not see is removed on
// every read surface (read, search, `_elements` view) and for every requester (patient, guardian,
// clinician), whichever spelling of the PROCESSINLINELABEL flag the resource carries.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Coding, Resource } from '@medplum/fhirtypes';
import { DATA_ABSENT_REASON, DS4P_INLINE_LABEL, V3_ACT_CODE, V3_CONFIDENTIALITY, V3_OBSERVATION_VALUE } from '../../src/fhir/systems.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';

/** Every spelling of the flag the standards accept: HL7 Terminology's v3-ActCode first (SPEC §5). */
const spellings: { readonly name: string; readonly flag: Coding }[] = [
  { name: 'v3-ActCode (HL7 Terminology, DS4P examples)', flag: { system: V3_ACT_CODE, code: 'PROCESSINLINELABEL' } },
  { name: 'v3-ActCode by its OID', flag: { system: 'urn:oid:2.16.840.1.113883.5.4', code: 'PROCESSINLINELABEL' } },
  { name: 'v3-ActCode in the FHIR STU3 spelling', flag: { system: 'http://hl7.org/fhir/v3/ActCode', code: 'PROCESSINLINELABEL' } },
  { name: 'v3-ObservationValue (the demo data)', flag: { system: V3_OBSERVATION_VALUE, code: 'PROCESSINLINELABEL' } },
  { name: 'no system', flag: { code: 'PROCESSINLINELABEL' } },
];

const V = (system = V3_CONFIDENTIALITY): Extension => ({ url: DS4P_INLINE_LABEL, valueCoding: { system, code: 'V' } });
type Extension = { url: string; valueCoding: Coding };

function world(i: number, flag: Coding): Resource[] {
  const p = `il${i}`;
  const meta = { security: [flag] };
  return [
    {
      resourceType: 'Patient', id: p, meta,
      name: [{ family: `Family${i}` }],
      // The protected address is labelled with the confidentiality OID spelling: labels too are read in any spelling.
      address: [{ city: 'Opencity' }, { city: `HIDDEN-ADDRESS-${i}`, extension: [V('urn:oid:2.16.840.1.113883.5.25')] }],
    } as Resource,
    {
      resourceType: 'Observation', id: `${p}-note`, meta, status: 'final',
      code: { text: 'social history' }, subject: { reference: `Patient/${p}` }, effectiveDateTime: '2024-02-01',
      note: [{ text: 'routine' }, { text: `HIDDEN-NOTE-${i}`, extension: [V()] }],
    } as Resource,
    {
      resourceType: 'Observation', id: `${p}-code`, meta, status: 'final',
      code: { text: `HIDDEN-CODE-${i}`, extension: [V()] }, subject: { reference: `Patient/${p}` }, effectiveDateTime: '2024-02-02',
      valueString: 'ok',
    } as Resource,
  ];
}

describe('inline-labelled elements are redacted under every spelling of PROCESSINLINELABEL (SPEC §5)', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ resources: spellings.flatMap((s, i) => world(i, s.flag)) });
  });
  after(() => h.close());

  const requesters = {
    patient: (p: string) => ({ sub: p, client_id: 'patient-app', fhirUser: `Patient/${p}`, patient: p, scope: 'patient/*.rs' }),
    guardian: () => ({ sub: 'guardian', client_id: 'family-app', fhirUser: 'RelatedPerson/guardian', scope: 'user/*.rs', extensions: pou('FAMRQT') }),
    clinician: () => ({ sub: 'dr', client_id: 'ehr', fhirUser: 'Practitioner/dr', scope: 'user/*.rs', extensions: pou('TREAT') }),
  };
  const surfaces = (p: string) => [
    `Patient/${p}`,
    `Patient?_id=${p}`,
    `Patient?_id=${p}&_elements=address`,
    `Observation/${p}-note`,
    `Observation/${p}-code`,
    `Observation?patient=${p}`,
    `Observation?patient=${p}&_elements=note,code`,
  ];

  for (const [i, spelling] of spellings.entries()) {
    for (const [who, claims] of Object.entries(requesters)) {
      test(`${spelling.name}: ${who} gets no inline-V element on any surface`, async () => {
        const p = `il${i}`;
        const token = await h.token(claims(p));
        for (const path of surfaces(p)) {
          const r = await h.request(path, { token });
          assert.equal(r.status, 200, `${path}: ${r.text}`);
          assert.doesNotMatch(r.text, /HIDDEN-/, `${path} released an inline-V element: ${r.text}`);
          const resources: Resource[] = r.body.resourceType === 'Bundle' ? r.body.entry.map((e: { resource: Resource }) => e.resource) : [r.body];
          assert.ok(resources.length > 0, `${path}: nothing released`);
          for (const res of resources) {
            assert.ok(res.meta?.security?.some((c) => c.system === V3_OBSERVATION_VALUE && c.code === 'REDACTED'), `${path}: ${res.id} not marked REDACTED`);
            assert.equal((res as { text?: unknown }).text, undefined, `${path}: narrative kept`);
          }
        }
        // A required element (Observation.code 1..1) is replaced by data-absent-reason#masked.
        const coded = await h.request(`Observation/${p}-code`, { token });
        assert.deepEqual(coded.body.code, { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/data-absent-reason', valueCode: 'masked' }] });
        assert.ok(DATA_ABSENT_REASON.startsWith('http://terminology.hl7.org/'));
        // What is not labelled stays.
        const patient = await h.request(`Patient/${p}`, { token });
        assert.deepEqual(patient.body.address, [{ city: 'Opencity' }]);
      });
    }
  }
});
