import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Observation, Patient } from '@medplum/fhirtypes';
import { defaultPolicy, policySchema, type DecisionPolicy } from '../../src/config/policy.ts';
import { buildRequestContext } from '../../src/provenance/build-context.ts';
import {
  compartmentParams,
  confineSearch,
  isPatientCompartmentType,
  patientsNamedBy,
  withinPatientContext,
  type ParsedSearch,
  type SearchInteraction,
} from '../../src/provenance/confine.ts';
import type { RequestContext } from '../../src/provenance/context.ts';
import { ForbiddenError, IncompleteRequestError } from '../../src/provenance/errors.ts';

const patientCtx = buildRequestContext({ client_id: 'app', scope: 'patient/*.rs', patient: 'p1', fhirUser: 'Patient/p1' }, { requestId: 'r' }, defaultPolicy);
const noLaunchCtx = buildRequestContext({ client_id: 'app', scope: 'patient/*.rs', purpose_of_use: 'PATRQT' }, { requestId: 'r' }, defaultPolicy);
const mixedCtx = buildRequestContext(
  { client_id: 'app', scope: 'patient/Observation.rs user/Observation.rs user/Patient.rs', patient: 'p1', fhirUser: 'Practitioner/dr-a', purpose_of_use: 'TREAT' },
  { requestId: 'r' },
  defaultPolicy,
);
const userCtx = buildRequestContext({ client_id: 'app', scope: 'user/*.rs', fhirUser: 'Practitioner/dr-a' }, { requestId: 'r' }, defaultPolicy);
const systemCtx = buildRequestContext({ client_id: 'engine', scope: 'system/*.rs', purpose_of_use: 'TREAT' }, { requestId: 'r' }, defaultPolicy);
const allKinds: DecisionPolicy = policySchema.parse({ requirePatient: ['patient', 'user', 'system'] });

function search(path: string, interaction?: SearchInteraction): ParsedSearch {
  const [route, query = ''] = path.split('?');
  const segments = route.split('/').filter(Boolean);
  const params = new URLSearchParams(query);
  if (segments.length === 3 && segments[0] === 'Patient') {
    return { resourceType: segments[2], compartment: { type: 'Patient', id: segments[1] }, params, interaction: 'search-compartment' };
  }
  const history = segments.at(-1) === '_history';
  const resourceType = segments[0] && segments[0] !== '_history' ? segments[0] : undefined;
  const level = resourceType ? 'type' : 'system';
  return { ...(resourceType ? { resourceType } : {}), params, interaction: interaction ?? (history ? `history-${level}` : `search-${level}`) } as ParsedSearch;
}

type Expect = string | 'forbidden' | 'incomplete';
interface Row {
  name: string;
  ctx: RequestContext;
  request: string;
  policy?: DecisionPolicy;
  expected: Expect;
}

const ref = 'Patient/p1';
const table: Row[] = [
  // patient/ tokens: confined to the launch patient
  { name: 'pt: Observation without patient is confined', ctx: patientCtx, request: 'Observation?code=1234-5', expected: `code=1234-5&patient=${encodeURIComponent(ref)}` },
  { name: 'pt: Patient search is confined by _id', ctx: patientCtx, request: 'Patient?name=smith', expected: 'name=smith&_id=p1' },
  { name: 'pt: Patient by identifier is confined by _id', ctx: patientCtx, request: 'Patient?identifier=mrn|1', expected: 'identifier=mrn%7C1&_id=p1' },
  { name: 'pt: Encounter confined by patient', ctx: patientCtx, request: 'Encounter', expected: `patient=${encodeURIComponent(ref)}` },
  { name: 'pt: Group confined by its compartment param', ctx: patientCtx, request: 'Group', expected: `member=${encodeURIComponent(ref)}` },
  { name: 'pt: own patient as bare id passes unchanged', ctx: patientCtx, request: 'Observation?patient=p1', expected: 'patient=p1' },
  { name: 'pt: own patient as reference passes', ctx: patientCtx, request: 'Observation?subject=Patient/p1', expected: 'subject=Patient%2Fp1' },
  { name: 'pt: own patient as absolute URL passes', ctx: patientCtx, request: 'Observation?patient=https://fhir.example.org/fhir/Patient/p1', expected: 'patient=https%3A%2F%2Ffhir.example.org%2Ffhir%2FPatient%2Fp1' },
  { name: 'pt: OR with a Group is still confined', ctx: patientCtx, request: 'Observation?subject=Patient/p1,Group/g1', expected: `subject=Patient%2Fp1%2CGroup%2Fg1&patient=${encodeURIComponent(ref)}` },
  { name: 'pt: unparseable value beside own patient is still confined', ctx: patientCtx, request: 'Observation?patient=p1,bad%20id', expected: `patient=p1%2Cbad+id&patient=${encodeURIComponent(ref)}` },
  { name: 'pt: own patient repeated in an OR list confines by itself', ctx: patientCtx, request: 'Observation?patient=p1,Patient/p1', expected: 'patient=p1%2CPatient%2Fp1' },
  { name: 'pt: Patient?link to self is still confined by _id', ctx: patientCtx, request: 'Patient?link=Patient/p1', expected: 'link=Patient%2Fp1&_id=p1' },
  { name: 'pt: Patient?_id=self passes', ctx: patientCtx, request: 'Patient?_id=p1', expected: '_id=p1' },
  { name: 'pt: ambiguous bare subject is still confined', ctx: patientCtx, request: 'Observation?subject=p1', expected: `subject=p1&patient=${encodeURIComponent(ref)}` },
  { name: 'pt: :missing does not name, so confined', ctx: patientCtx, request: 'Observation?patient:missing=true', expected: `patient%3Amissing=true&patient=${encodeURIComponent(ref)}` },
  { name: 'pt: own compartment path', ctx: patientCtx, request: 'Patient/p1/Observation?code=x', expected: 'code=x' },
  { name: 'pt: Organization unconfined', ctx: patientCtx, request: 'Organization?name=acme', expected: 'name=acme' },
  { name: 'pt: Practitioner unconfined', ctx: patientCtx, request: 'Practitioner', expected: '' },
  { name: 'pt: Medication unconfined', ctx: patientCtx, request: 'Medication?code=x', expected: 'code=x' },
  { name: 'pt: another patient by id', ctx: patientCtx, request: 'Observation?patient=p2', expected: 'forbidden' },
  { name: 'pt: another patient by reference', ctx: patientCtx, request: 'Observation?subject=Patient/p2', expected: 'forbidden' },
  { name: 'pt: another patient by absolute URL', ctx: patientCtx, request: 'Observation?patient=https://x.org/fhir/Patient/p2', expected: 'forbidden' },
  { name: 'pt: another patient by subject:Patient', ctx: patientCtx, request: 'Observation?subject:Patient=p2', expected: 'forbidden' },
  { name: 'pt: another patient in an OR list', ctx: patientCtx, request: 'Observation?patient=p1,p2', expected: 'forbidden' },
  { name: 'pt: another patient as bare subject', ctx: patientCtx, request: 'Observation?subject=p2', expected: 'forbidden' },
  { name: 'pt: another patient as performer', ctx: patientCtx, request: 'Observation?performer=Patient/p2', expected: 'forbidden' },
  { name: 'pt: chained patient.identifier', ctx: patientCtx, request: 'Observation?patient.identifier=mrn|2', expected: 'forbidden' },
  { name: 'pt: patient:identifier', ctx: patientCtx, request: 'Observation?patient:identifier=mrn|2', expected: 'forbidden' },
  { name: 'pt: subject:Patient.name chain', ctx: patientCtx, request: 'Observation?subject:Patient.name=smith', expected: 'forbidden' },
  { name: 'pt: _id of another Patient', ctx: patientCtx, request: 'Patient?_id=p2', expected: 'forbidden' },
  { name: 'pt: another compartment path', ctx: patientCtx, request: 'Patient/p2/Observation', expected: 'forbidden' },
  { name: 'pt: system-level search', ctx: patientCtx, request: '?_type=Observation', expected: 'forbidden' },
  { name: 'pt: type history cannot be confined (requirePatient covers patient)', ctx: patientCtx, request: 'Observation/_history', expected: 'incomplete' },
  { name: 'pt: type history without the rule → 403', ctx: patientCtx, request: 'Observation/_history', policy: policySchema.parse({ requirePatient: ['user'] }), expected: 'forbidden' },
  { name: 'pt: patient/ scopes without a launch patient', ctx: noLaunchCtx, request: 'Observation', expected: 'forbidden' },
  // patient/ beside user/ scopes: confined exactly as patient/ alone — the user/ scopes never widen it
  { name: 'mixed: Observation without patient is confined', ctx: mixedCtx, request: 'Observation?code=1234-5', expected: `code=1234-5&patient=${encodeURIComponent(ref)}` },
  { name: 'mixed: own patient passes unchanged', ctx: mixedCtx, request: 'Observation?patient=p1', expected: 'patient=p1' },
  { name: 'mixed: another patient by id', ctx: mixedCtx, request: 'Observation?patient=p2', expected: 'forbidden' },
  { name: 'mixed: another patient in an OR list', ctx: mixedCtx, request: 'Observation?patient=p1,p2', expected: 'forbidden' },
  { name: 'mixed: another compartment path', ctx: mixedCtx, request: 'Patient/p2/Observation', expected: 'forbidden' },
  { name: 'mixed: Patient search is confined by _id', ctx: mixedCtx, request: 'Patient?name=smith', expected: 'name=smith&_id=p1' },
  { name: 'mixed: _id of another Patient', ctx: mixedCtx, request: 'Patient?_id=p2', expected: 'forbidden' },
  // incomplete-request rule: user/ clients
  { name: 'usr: Observation by code only', ctx: userCtx, request: 'Observation?code=X', expected: 'incomplete' },
  { name: 'usr: Observation with no parameters', ctx: userCtx, request: 'Observation', expected: 'incomplete' },
  { name: 'usr: patient bare id', ctx: userCtx, request: 'Observation?patient=p1', expected: 'patient=p1' },
  { name: 'usr: patient reference', ctx: userCtx, request: 'Observation?patient=Patient/p1', expected: 'patient=Patient%2Fp1' },
  { name: 'usr: subject absolute URL', ctx: userCtx, request: 'Observation?subject=https://x.org/fhir/Patient/p1', expected: 'subject=https%3A%2F%2Fx.org%2Ffhir%2FPatient%2Fp1' },
  { name: 'usr: subject:Patient', ctx: userCtx, request: 'Observation?subject:Patient=p1', expected: 'subject%3APatient=p1' },
  { name: 'usr: patient:identifier', ctx: userCtx, request: 'Observation?patient:identifier=mrn|1', expected: 'patient%3Aidentifier=mrn%7C1' },
  { name: 'usr: chain patient.identifier', ctx: userCtx, request: 'Observation?patient.identifier=mrn|1', expected: 'patient.identifier=mrn%7C1' },
  { name: 'usr: compartment path', ctx: userCtx, request: 'Patient/p1/Observation', expected: '' },
  { name: 'usr: Patient by _id', ctx: userCtx, request: 'Patient?_id=p1', expected: '_id=p1' },
  { name: 'usr: Patient by identifier', ctx: userCtx, request: 'Patient?identifier=mrn|1', expected: 'identifier=mrn%7C1' },
  { name: 'usr: Patient by name only', ctx: userCtx, request: 'Patient?name=smith', expected: 'incomplete' },
  { name: 'usr: subject is a Group, not a patient', ctx: userCtx, request: 'Observation?subject=Group/g1', expected: 'incomplete' },
  { name: 'usr: patient:missing does not name', ctx: userCtx, request: 'Observation?patient:missing=false', expected: 'incomplete' },
  { name: 'usr: _id on Observation is not a patient', ctx: userCtx, request: 'Observation?_id=o1', expected: 'incomplete' },
  { name: 'usr: AuditEvent across patients (exception)', ctx: userCtx, request: 'AuditEvent?date=ge2024-01-01', expected: 'date=ge2024-01-01' },
  { name: 'usr: Organization needs no patient', ctx: userCtx, request: 'Organization?name=acme', expected: 'name=acme' },
  { name: 'usr: type history of a compartment type', ctx: userCtx, request: 'Observation/_history', expected: 'incomplete' },
  { name: 'usr: type history of AuditEvent', ctx: userCtx, request: 'AuditEvent/_history', expected: '' },
  { name: 'usr: type history of Practitioner', ctx: userCtx, request: 'Practitioner/_history', expected: '' },
  { name: 'usr: system search without _type', ctx: userCtx, request: '?code=x', expected: 'incomplete' },
  { name: 'usr: system search of compartment types naming a patient', ctx: userCtx, request: '?_type=Observation,Condition&patient=p1', expected: '_type=Observation%2CCondition&patient=p1' },
  { name: 'usr: system search of non-compartment types', ctx: userCtx, request: '?_type=Organization,Practitioner&name=x', expected: '_type=Organization%2CPractitioner&name=x' },
  { name: 'usr: system history', ctx: userCtx, request: '_history', expected: 'incomplete' },
  // system/ clients pass unless the policy extends the rule to them
  { name: 'sys: Observation across patients', ctx: systemCtx, request: 'Observation?code=X', expected: 'code=X' },
  { name: 'sys: type history', ctx: systemCtx, request: 'Observation/_history', expected: '' },
  { name: 'sys with requirePatient: Observation by code', ctx: systemCtx, request: 'Observation?code=X', policy: allKinds, expected: 'incomplete' },
  { name: 'sys with requirePatient: Observation by patient', ctx: systemCtx, request: 'Observation?patient=p1', policy: allKinds, expected: 'patient=p1' },
];

describe('confineSearch', () => {
  for (const row of table) {
    test(row.name, () => {
      const parsed = search(row.request);
      const before = parsed.params.toString();
      const run = () => confineSearch(row.ctx, row.policy ?? defaultPolicy, parsed);
      if (row.expected === 'forbidden') {
        assert.throws(run, (err: unknown) => err instanceof ForbiddenError && err.status === 403 && err.issueCode === 'forbidden');
      } else if (row.expected === 'incomplete') {
        assert.throws(run, (err: unknown) => {
          assert.ok(err instanceof IncompleteRequestError);
          assert.equal(err.status, 400);
          assert.equal(err.issueCode, 'required');
          assert.equal(err.message, 'the request must identify the patient');
          return true;
        });
      } else {
        assert.equal(run().toString(), row.expected);
      }
      assert.equal(parsed.params.toString(), before, 'the input parameters are not mutated');
    });
  }
});

describe('patientsNamedBy', () => {
  const table: [string, string | undefined, string, { ids: string[]; unresolved: boolean }][] = [
    ['bare patient', 'Observation', 'patient=p1', { ids: ['p1'], unresolved: false }],
    ['two patients, two forms', 'Observation', 'patient=Patient/p1&subject=https://x/fhir/Patient/p2', { ids: ['p1', 'p2'], unresolved: false }],
    ['identifier only', 'Observation', 'patient:identifier=s|v', { ids: [], unresolved: true }],
    ['chain only', 'Encounter', 'subject.identifier=s|v', { ids: [], unresolved: true }],
    ['non-patient reference', 'Observation', 'subject=Group/g1', { ids: [], unresolved: false }],
    ['unrelated params', 'Observation', 'code=x&status=final', { ids: [], unresolved: false }],
    ['Patient _id list', 'Patient', '_id=p1,p3', { ids: ['p1', 'p3'], unresolved: false }],
    ['system level', undefined, 'patient=p4', { ids: ['p4'], unresolved: false }],
    ['non-compartment type ignores patient-looking params', 'Organization', 'patient=p1', { ids: [], unresolved: false }],
  ];
  for (const [name, type, query, expected] of table) {
    test(name, () => assert.deepEqual(patientsNamedBy(type, new URLSearchParams(query)), expected));
  }
  test('compartment path names its patient', () => {
    assert.deepEqual(patientsNamedBy('Observation', new URLSearchParams(), { type: 'Patient', id: 'p7' }), { ids: ['p7'], unresolved: false });
  });
});

describe('compartment helpers', () => {
  test('membership and parameters come from the R4 CompartmentDefinition', () => {
    assert.equal(isPatientCompartmentType('Observation'), true);
    assert.equal(isPatientCompartmentType('AuditEvent'), true);
    assert.equal(isPatientCompartmentType('Organization'), false);
    assert.deepEqual(compartmentParams('Observation').sort(), ['performer', 'subject']);
    assert.deepEqual(compartmentParams('Medication'), []);
  });

  const observation = (subject: string): Observation => ({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: subject } });
  const table: [string, RequestContext, Observation | Patient, boolean][] = [
    ['own observation', patientCtx, observation('Patient/p1'), true],
    ["another patient's observation", patientCtx, observation('Patient/p2'), false],
    ['observation about a group', patientCtx, observation('Group/g1'), false],
    ['own Patient resource', patientCtx, { resourceType: 'Patient', id: 'p1' }, true],
    ['another Patient resource', patientCtx, { resourceType: 'Patient', id: 'p2' }, false],
    ['user/ tokens are not confined', userCtx, observation('Patient/p2'), true],
    ['patient/ beside user/ scopes: own observation', mixedCtx, observation('Patient/p1'), true],
    ["patient/ beside user/ scopes: another patient's observation", mixedCtx, observation('Patient/p2'), false],
    ['patient/ scopes without a launch patient', noLaunchCtx, observation('Patient/p1'), false],
  ];
  for (const [name, ctx, resource, expected] of table) test(`withinPatientContext: ${name}`, () => assert.equal(withinPatientContext(ctx, resource), expected));
});
