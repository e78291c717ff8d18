// The one reference model (issue 18): parse, key against the local bases, walk; and who a resource is
// about (SPEC §5: the Patient compartment and any other Patient reference, by identifier too).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Resource } from '@medplum/fhirtypes';
import { attributePatients } from '../../src/fhir/compartment.ts';
import { localBases, parseReference, referenceKey, referencesIn, withReferenceKeys } from '../../src/fhir/references.ts';

const local = localBases('http://upstream.test/fhir', 'https://gateway.test/fhir/');

describe('referenceKey', () => {
  const table: [string | undefined, string | undefined][] = [
    ['Practitioner/dr-a', 'Practitioner/dr-a'],
    ['Patient/p1/_history/2', 'Patient/p1'],
    ['http://upstream.test/fhir/Patient/p1', 'Patient/p1'],
    ['HTTP://UPSTREAM.test:80/fhir/Patient/p1/_history/3', 'Patient/p1'],
    ['https://gateway.test/fhir/Practitioner/dr-a', 'Practitioner/dr-a'],
    ['https://other.example/fhir/Practitioner/dr-a', 'https://other.example/fhir/Practitioner/dr-a'],
    ['https://upstream.test/fhir/Patient/p1', 'https://upstream.test/fhir/Patient/p1'], // another scheme is another server
    ['http://upstream.test/Patient/p1', 'http://upstream.test/Patient/p1'], // outside the base path
    ['#contained', undefined],
    ['urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0', undefined],
    ['dr-a', undefined],
    ['Practitioner/', undefined],
    [undefined, undefined],
  ];
  for (const [input, expected] of table) test(String(input), () => assert.equal(referenceKey(input, local), expected));

  test('without bases every absolute reference is foreign', () => {
    assert.equal(referenceKey('http://upstream.test/fhir/Patient/p1'), 'http://upstream.test/fhir/Patient/p1');
    assert.deepEqual(parseReference('https://other.example/fhir/Patient/p1/_history/2'), { resourceType: 'Patient', id: 'p1', version: '2', base: 'https://other.example/fhir' });
  });
});

describe('the one walker', () => {
  const resource = {
    resourceType: 'Observation',
    id: 'o1',
    subject: { reference: 'http://upstream.test/fhir/Patient/p1' },
    performer: [{ reference: 'https://other.example/fhir/Practitioner/dr-a' }],
    contained: [{ resourceType: 'Provenance', id: 'c', agent: [{ who: { reference: 'Practitioner/dr-b' } }] }],
    hasMember: [{ reference: '#c' }],
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Patient/p9</div>' },
  } as Resource;
  test('keys local and foreign references, walks contained, ignores narrative', () => {
    assert.deepEqual([...referencesIn(resource, new Set(), local)].sort(), ['Patient/p1', 'Practitioner/dr-b', 'https://other.example/fhir/Practitioner/dr-a']);
  });
  test('withReferenceKeys rewrites a policy resource for decide/', () => {
    const keyed = withReferenceKeys(resource, local) as typeof resource & { subject: { reference: string } };
    assert.equal(keyed.subject.reference, 'Patient/p1');
    assert.equal((resource as { subject: { reference: string } }).subject.reference, 'http://upstream.test/fhir/Patient/p1', 'the original is untouched');
  });
});

// SPEC §5 (issue 17 items 6, 7): data about a patient is that patient's, whatever its type.
describe('attributePatients', () => {
  const rows: { name: string; resource: Resource; ids: string[]; identifiers?: string[]; unresolvable?: boolean }[] = [
    { name: 'Observation.subject (compartment)', resource: { resourceType: 'Observation', status: 'final', code: {}, subject: { reference: 'Patient/p1' } }, ids: ['p1'] },
    { name: 'Device.patient (outside the R4 compartment)', resource: { resourceType: 'Device', patient: { reference: 'Patient/p1' } }, ids: ['p1'] },
    { name: 'Group.member.entity', resource: { resourceType: 'Group', type: 'person', actual: true, member: [{ entity: { reference: 'Patient/p1' } }, { entity: { reference: 'Patient/p2' } }] }, ids: ['p1', 'p2'] },
    { name: 'an extension naming a patient', resource: { resourceType: 'Basic', code: {}, extension: [{ url: 'x', valueReference: { reference: 'Patient/p3' } }] }, ids: ['p3'] },
    { name: 'a contained resource’s patient', resource: { resourceType: 'Basic', code: {}, contained: [{ resourceType: 'Device', id: 'd', patient: { reference: 'Patient/p4' } }] }, ids: ['p4'] },
    { name: 'a patient named only by identifier on subject', resource: { resourceType: 'Observation', status: 'final', code: {}, subject: { identifier: { system: 'urn:mrn', value: '42' } } }, ids: [], identifiers: ['urn:mrn|42'] },
    { name: 'a typed Patient identifier anywhere', resource: { resourceType: 'Basic', code: {}, author: { type: 'Patient', identifier: { system: 'urn:mrn', value: '7' } } }, ids: [], identifiers: ['urn:mrn|7'] },
    { name: 'an untyped identifier outside a patient element names no patient', resource: { resourceType: 'Observation', status: 'final', code: {}, performer: [{ identifier: { system: 'urn:npi', value: '1' } }] }, ids: [] },
    { name: 'an identifier without system is unresolvable', resource: { resourceType: 'Observation', status: 'final', code: {}, subject: { identifier: { value: '42' } } }, ids: [], unresolvable: true },
    { name: 'a Patient on another server is unresolvable', resource: { resourceType: 'Observation', status: 'final', code: {}, subject: { reference: 'https://other.example/fhir/Patient/p1' } }, ids: [], unresolvable: true },
    { name: 'a Patient on the upstream base is local', resource: { resourceType: 'Observation', status: 'final', code: {}, subject: { reference: 'http://upstream.test/fhir/Patient/p1' } }, ids: ['p1'] },
    { name: 'Binary by its securityContext', resource: { resourceType: 'Binary', contentType: 'text/plain', securityContext: { reference: 'Patient/p5' } }, ids: ['p5'] },
    { name: 'one patient named three ways is one id', resource: { resourceType: 'Observation', status: 'final', code: {}, subject: { reference: 'Patient/p6' }, performer: [{ reference: 'Patient/p6/_history/2' }, { reference: 'http://upstream.test/fhir/Patient/p6' }] }, ids: ['p6'] },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const found = attributePatients(row.resource, local);
      assert.deepEqual([...found.ids].sort(), row.ids);
      assert.deepEqual(found.identifiers, row.identifiers ?? []);
      assert.equal(found.unresolvable, row.unresolvable ?? false);
    });
  }
  // The plain `Patient/<id>` fast path must say what the parse says, for any reference a resource may hold.
  test('any single reference: patients as parseReference and referenceKey read it', () => {
    const id = fc.stringMatching(/^[A-Za-z0-9\-.]{1,64}$/);
    const type = fc.constantFrom('Patient', 'Practitioner', 'Group', 'Patients', 'patient');
    const base = fc.constantFrom('', 'http://upstream.test/fhir/', 'https://other.example/fhir/', 'urn:x/', '#', ' ');
    const reference = fc.tuple(base, type, id, fc.option(id, { nil: undefined })).map(([b, t, i, v]) => `${b}${t}/${i}${v === undefined ? '' : `/_history/${v}`}`);
    fc.assert(
      fc.property(fc.oneof(reference, fc.string()), (ref) => {
        const found = attributePatients({ resourceType: 'Basic', code: {}, subject: { reference: ref } } as Resource, local);
        const parsed = parseReference(ref);
        const key = referenceKey(ref, local);
        const expected = parsed?.resourceType === 'Patient' ? (key && !key.includes('://') ? { ids: [parsed.id], unresolvable: false } : { ids: [], unresolvable: true }) : { ids: [], unresolvable: false };
        assert.deepEqual({ ids: found.ids, unresolvable: found.unresolvable }, expected);
      }),
      { numRuns: 2000 },
    );
  });
});
