// Issue 13: the HL7 DS4P IG's own example resources (fixtures/ig/ds4p, 1.0.0) through the whole gateway.
// Each labelled example is decided and redacted as the IG means it: a confidentiality label (on the
// resource, or inline on an element of a PROCESSINLINELABEL resource) restricts; integrity labels
// (PATRPT, UNCERTREL) and label metadata (basis, classifier, related artifact, display) do not.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Resource, StructureDefinition } from '@medplum/fhirtypes';
import { personaClaims } from '../../src/embedded/personas.ts';
import { DS4P_EXTENSION_DISPLAY, DS4P_INLINE_LABEL, PART2_NOTICE, V3_ACT_CODE, V3_OBSERVATION_VALUE } from '../../src/fhir/systems.ts';
import { startHarness, type Harness } from '../support/harness.ts';

const dir = new URL('../../fixtures/ig/ds4p/examples/', import.meta.url);
const example = (file: string): Resource => JSON.parse(readFileSync(new URL(`${file}.json`, dir), 'utf8')) as Resource;
const definition = (file: string): StructureDefinition => JSON.parse(readFileSync(new URL(`../resources/${file}.json`, dir), 'utf8')) as StructureDefinition;
/** The one value[x] type an extension's StructureDefinition allows, as its JSON key (`valueAnnotation`). */
const valueKey = (sd: StructureDefinition): string => {
  const code = sd.differential?.element?.find((e) => e.path.startsWith('Extension.value'))?.type?.[0]?.code ?? '';
  return `value${code[0].toUpperCase()}${code.slice(1)}`;
};
const part2 = { resourceType: 'Observation', id: 'ds4p-part2', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/P001' },
  meta: { security: [{ system: V3_ACT_CODE, code: '42CFRPart2' }] } } as Resource;

type Expectation =
  | { readonly kind: 'released whole' }
  | { readonly kind: 'withheld' }
  | { readonly kind: 'redacted'; readonly removed: (r: Record<string, unknown>) => boolean; readonly kept: (r: Record<string, unknown>) => boolean };

interface Row {
  readonly file: string;
  readonly path: string;
  readonly meaning: string;
  readonly clinician: Expectation;
  readonly breakGlass: Expectation;
}

const identifiers = (r: Record<string, unknown>) => (r.identifier as { system?: string }[] | undefined) ?? [];
const hasSsn = (r: Record<string, unknown>) => identifiers(r).some((i) => i.system === 'http://hl7.org/fhir/sid/us-ssn');
const whole: Expectation = { kind: 'released whole' };
const withheld: Expectation = { kind: 'withheld' };

const rows: Row[] = [
  { file: 'extension-inline-sec-label-patient', path: 'Patient/P002',
    meaning: 'PROCESSINLINELABEL (v3-ActCode) with the SSN identifier labelled R inline: the SSN is removed under the implicit policy (N and below), kept under authorised break-the-glass (R)',
    clinician: { kind: 'redacted', removed: (r) => !hasSsn(r), kept: (r) => identifiers(r).length === 1 && (r.name as unknown[]).length === 1 },
    breakGlass: whole },
  { file: 'extension-inline-sec-label-immunization', path: 'Immunization/I001',
    meaning: 'PROCESSINLINELABEL with integrity labels (UNCERTREL, PATRPT) inline on Immunization.patient: they restrict nobody, nothing is removed',
    clinician: whole, breakGlass: whole },
  { file: 'extension-sec-label-basis', path: 'Observation/example-extension-sec-label-basis',
    meaning: 'R with its basis (42CFRPart2) as label metadata: R decides (withheld by the implicit policy, released under break-the-glass); the basis names no Part 2 label',
    clinician: withheld, breakGlass: whole },
  { file: 'extension-sec-label-related-artifact-consent', path: 'Observation/example-extension-sec-label-related-artifact-consent',
    meaning: 'R justified by a Consent (related artifact): R decides',
    clinician: withheld, breakGlass: whole },
  { file: 'extensions-sec-label-classifier', path: 'Observation/example-extension-sec-label-classifier',
    meaning: 'R with its classifier: R decides',
    clinician: withheld, breakGlass: whole },
  { file: 'extension-sec-label-related-artifact-provenance', path: 'Observation/example-extension-sec-label-related-artifact-provenance',
    meaning: 'PATRPT (integrity) with a Provenance: no confidentiality label, so N: released',
    clinician: whole, breakGlass: whole },
  { file: 'extension-display-observation', path: 'Observation/example-extension-display',
    meaning: 'a CUI marking in extension-display on meta: no label, released with the marking kept',
    clinician: whole, breakGlass: whole },
  { file: 'extension-display-patient', path: 'Patient/P001',
    meaning: 'the same marking on a Patient: released with the marking kept',
    clinician: whole, breakGlass: whole },
];

function check(expect: Expectation, original: Resource, res: { status: number; body: Record<string, unknown> }, where: string): void {
  if (expect.kind === 'withheld') {
    assert.equal(res.status, 404, `${where}: concealed`);
    return;
  }
  assert.equal(res.status, 200, where);
  const security = ((res.body.meta as { security?: { system?: string; code?: string }[] } | undefined)?.security ?? []);
  const redacted = security.some((c) => c.system === V3_OBSERVATION_VALUE && c.code === 'REDACTED');
  if (expect.kind === 'released whole') {
    assert.equal(redacted, false, `${where}: nothing is redacted`);
    const { meta: _m, ...sent } = res.body;
    const { meta: _o, ...written } = original as unknown as Record<string, unknown>;
    assert.deepEqual(sent, written, `${where}: released as written`);
    const display = (original.meta?.extension ?? []).filter((e) => e.url === DS4P_EXTENSION_DISPLAY);
    const kept = ((res.body.meta as { extension?: unknown[] }).extension ?? []);
    for (const d of display) assert.ok(kept.some((k) => JSON.stringify(k) === JSON.stringify(d)), `${where}: extension-display kept`);
    return;
  }
  assert.ok(redacted, `${where}: marked REDACTED`);
  assert.ok(expect.removed(res.body), `${where}: the labelled element is removed`);
  assert.ok(expect.kept(res.body), `${where}: the rest is kept`);
}

describe('DS4P IG examples, decided and redacted as the IG says (fixtures/ig/ds4p)', () => {
  let h: Harness;
  let clinician: string;
  let breakGlass: string;
  before(async () => {
    h = await startHarness({ resources: [...rows.map((r) => example(r.file)), part2] });
    clinician = await h.token({ ...personaClaims('clinician') });
    breakGlass = await h.token({ ...personaClaims('break-glass') });
  });
  after(() => h.close());

  for (const row of rows) {
    test(`${row.file}: ${row.meaning}`, async () => {
      const original = example(row.file);
      check(row.clinician, original, await h.request(row.path, { token: clinician }), `${row.path} for a clinician (TREAT)`);
      check(row.breakGlass, original, await h.request(row.path, { token: breakGlass }), `${row.path} under authorised break-the-glass`);
    });
  }

  test('the inline-labelled Patient in a search and an _elements view: the SSN never leaves', async () => {
    for (const path of ['Patient?_id=P002', 'Patient?_id=P002&_elements=identifier']) {
      const res = await h.request(path, { token: clinician });
      assert.equal(res.status, 200, path);
      assert.equal(res.body.entry?.length, 1, path);
      assert.doesNotMatch(res.text, /111-22-3333/, path);
    }
  });

  test('the extensions the gateway reads and writes are the DS4P StructureDefinitions, used as they define', async () => {
    const inline = definition('extension-inline-sec-label');
    assert.equal(inline.url, DS4P_INLINE_LABEL);
    assert.equal(valueKey(inline), 'valueCoding');
    const display = definition('extension-display');
    assert.equal(display.url, DS4P_EXTENSION_DISPLAY);
    assert.deepEqual(display.context?.map((c) => c.expression), ['Resource.meta']);
    // The Part 2 notice (SPEC §4.4) the gateway writes on a released Part 2 record takes the value type the IG defines.
    const res = await h.request('Observation/ds4p-part2', { token: breakGlass });
    assert.equal(res.status, 200);
    const notices = (res.body.meta.extension ?? []).filter((e: { url: string }) => e.url === DS4P_EXTENSION_DISPLAY);
    assert.equal(notices.length, 1);
    assert.deepEqual(Object.keys(notices[0]).sort(), ['url', valueKey(display)].sort());
    assert.equal(notices[0].valueAnnotation.text, PART2_NOTICE);
  });
});
