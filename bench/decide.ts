// Decision-engine benchmark: 5 consents × 10 provisions, 1,000 varied resources, one core; each resource
// labelled first as enforcement does (SPEC §4.7), and the labeling step timed alone.
import { pathToFileURL } from 'node:url';
import type { Consent, ConsentProvision, Resource } from '@medplum/fhirtypes';
import { defaultPolicy } from '../src/config/policy.ts';
import { compile, evaluate } from '../src/decide/index.ts';
import { invalidPolicyResources } from '../src/policy/validate.ts';
import type { PatientPolicyInputs, Requester } from '../src/decide/types.ts';
import { CONSENT_SCOPE, V3_ACT_CODE, V3_ACT_REASON, V3_CONFIDENTIALITY } from '../src/fhir/systems.ts';
import { labelerFromPolicy } from '../src/label/index.ts';

const role = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] };
const types = ['Observation', 'Condition', 'Encounter', 'MedicationRequest', 'DiagnosticReport', 'Procedure'];
// One resource in four also carries a code the rule sets label (ICD-10-CM prefix, SNOMED CT, LOINC, RxNorm).
const sensitiveCodings = [
  { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'F10.20' },
  { system: 'http://snomed.info/sct', code: '370143000' },
  { system: 'http://loinc.org', code: '44261-6' },
  { system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '1010600' },
  { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'F17.210' },
];
const labels = [[], [{ system: V3_CONFIDENTIALITY, code: 'R' }], [{ system: V3_ACT_CODE, code: 'PSY' }], [{ system: V3_ACT_CODE, code: 'OPIOIDUD' }, { system: V3_CONFIDENTIALITY, code: 'R' }]];

function provision(i: number): ConsentProvision {
  const kinds: ConsentProvision[] = [
    { type: 'deny', actor: [{ role, reference: { reference: `Practitioner/other-${i}` } }] },
    { type: 'deny', dataPeriod: { start: `${2015 + (i % 8)}`, end: `${2015 + (i % 8)}` } },
    { type: 'permit', securityLabel: [{ system: V3_ACT_CODE, code: 'PSY' }], purpose: [{ system: V3_ACT_REASON, code: 'TREAT' }] },
    { type: 'deny', class: [{ system: 'http://hl7.org/fhir/resource-types', code: types[i % types.length] }], securityLabel: [{ system: V3_ACT_CODE, code: 'SUD' }] },
    { type: 'deny', data: [{ meaning: 'dependents', reference: { reference: `Encounter/e${i}` } }] },
    { type: 'deny', code: [{ coding: [{ system: 'http://loinc.org', code: `code-${i}` }] }] },
  ];
  return kinds[i % kinds.length];
}

function consents(): Consent[] {
  return Array.from({ length: 5 }, (_, c) => ({
    resourceType: 'Consent',
    id: `c${c}`,
    status: 'active',
    scope: { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: 'Patient/p1' },
    dateTime: `202${c}-01-01`,
    policy: [{ uri: 'https://disclosure-gateway.org/policy/demo' }],
    provision: {
      type: c % 2 ? 'deny' : 'permit',
      purpose: [{ system: V3_ACT_REASON, code: c % 2 ? 'HRESCH' : 'TREAT' }],
      provision: Array.from({ length: 9 }, (_, p) => provision(c * 10 + p)),
    },
  }));
}

function resources(): Resource[] {
  return Array.from({ length: 1000 }, (_, i) => {
    const type = types[i % types.length];
    return {
      resourceType: type,
      id: `r${i}`,
      status: 'final',
      meta: { security: labels[i % labels.length], lastUpdated: '2024-01-01T00:00:00Z' },
      code: { coding: [{ system: 'http://loinc.org', code: `code-${i % 60}` }, ...(i % 4 === 3 ? [sensitiveCodings[i % sensitiveCodings.length]] : [])] },
      subject: { reference: 'Patient/p1' },
      encounter: { reference: `Encounter/e${i % 50}` },
      effectiveDateTime: `${2014 + (i % 11)}-0${1 + (i % 9)}-15`,
      performer: [{ reference: `Practitioner/p${i % 7}` }],
    } as unknown as Resource;
  });
}

/** Runs `round` 20 times to warm up, then `rounds` times; wall and CPU milliseconds of the measured part. */
function timed(rounds: number, round: () => void): { wallMs: number; cpuMs: number } {
  for (let i = 0; i < 20; i++) round();
  const cpu = process.cpuUsage();
  const wall = performance.now();
  for (let i = 0; i < rounds; i++) round();
  const used = process.cpuUsage(cpu);
  return { wallMs: performance.now() - wall, cpuMs: (used.user + used.system) / 1000 };
}

/** The run with the median CPU time of `times` runs. */
function median(times: number, measure: () => { wallMs: number; cpuMs: number }): { wallMs: number; cpuMs: number } {
  const runs = Array.from({ length: times }, measure).sort((a, b) => a.cpuMs - b.cpuMs);
  return runs[Math.floor(times / 2)];
}

export async function run(): Promise<void> {
  const written = consents();
  const requester: Requester = { fhirUser: 'Practitioner/dr-a', references: ['Practitioner/dr-a'], identifiers: [], purposes: ['TREAT'], breakGlass: false, clientKind: 'user', action: 'access' };
  const now = new Date('2025-06-15T12:00:00Z');
  let t = performance.now();
  // What the policy store does once per loaded patient (issue 18: validity travels in the inputs).
  const inputs: PatientPolicyInputs = { patientId: 'p1', consents: written, flags: [], memberships: {}, identifiers: {}, careRelationships: [], invalid: invalidPolicyResources(written) };
  const validateMs = performance.now() - t;

  const compileRuns = 2000;
  let compiled = compile(inputs, requester, defaultPolicy, now);
  t = performance.now();
  for (let i = 0; i < compileRuns; i++) compiled = compile(inputs, requester, defaultPolicy, now);
  const compileMs = (performance.now() - t) / compileRuns;

  const data = resources();
  const labeler = labelerFromPolicy(defaultPolicy.labeling);
  const rounds = 200;
  const n = rounds * data.length;
  let permits = 0;
  // A major GC of the definitions-sized heap lands in some windows and not others: the median of five.
  const plain = median(5, () => timed(rounds, () => {
    for (const r of data) evaluate(compiled, r);
  }));
  const labelled = median(5, () => timed(rounds, () => {
    for (const r of data) if (evaluate(compiled, r, labeler.label(r)).outcome === 'permit') permits++;
  }));
  const alone = timed(rounds, () => {
    for (const r of data) labeler.label(r);
  });
  const share = data.filter((r) => labeler.label(r).added.length > 0).length / data.length;
  const rate = (ms: number): string => Math.round(n / (ms / 1000)).toLocaleString('en');
  // CPU time of this single-threaded loop is one core's time even on a machine shared with other work.
  console.log(`decide: ${rate(labelled.cpuMs)} decisions/s per CPU-second with labeling on (median of 5 runs) (${rate(labelled.wallMs)}/s wall; without labeling ${rate(plain.cpuMs)}/s per CPU-second) — 5 consents × 10 provisions, 1,000 resources, ${Math.round((100 * permits) / (5 * (n + 20 * data.length)))}% permitted`);
  console.log(`decide: labeling alone ${((alone.cpuMs * 1e6) / n).toFixed(0)} ns per resource of CPU (${((alone.wallMs * 1e6) / n).toFixed(0)} ns wall); ${Math.round(share * 100)}% of these resources gain a label`);
  console.log(`decide: compile ${(compileMs * 1000).toFixed(1)} µs per patient (validation remembered; first validation of 5 consents ${validateMs.toFixed(1)} ms incl. loading R4 definitions)`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await run();
