// The labeling step alone (SPEC §4.7): shipped rule sets load and name source and licence, codes map to
// the labels their public structure gives, a broken rule file is named, and computed labels never
// remove or lower a label a resource had (property).
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { Coding, Resource } from '@medplum/fhirtypes';
import { compile, evaluate } from '../../src/decide/index.ts';
import { confidentialityRank } from '../../src/decide/terminology.ts';
import { applyObligations } from '../../src/enforce/redact.ts';
import { V3_ACT_CODE, V3_CONFIDENTIALITY } from '../../src/fhir/systems.ts';
import { loadRuleSet, loadRuleSets, SecurityLabeler, SHIPPED_RULE_FILES, SHIPPED_RULES_DIR } from '../../src/label/index.ts';
import { act, consent, inputs, NOW, observation, policyWith, who } from '../decide/fixtures.ts';
import { categories, factResource, ICD, LOINC, RXNORM, SCT } from './categories.ts';

const labeler = new SecurityLabeler(loadRuleSets(), { enabled: true });
const condition = (system: string, code: string): Resource => ({ resourceType: 'Condition', id: 'x', subject: { reference: 'Patient/p1' }, code: { coding: [{ system, code }] } });
const codesOf = (r: Resource, l = labeler): string[] => l.label(r).added.map((c) => c.code ?? '').sort();

describe('shipped rule sets', () => {
  test('one file per category, each naming its source and licence', () => {
    for (const file of SHIPPED_RULE_FILES) {
      const set = loadRuleSet(join(SHIPPED_RULES_DIR, file));
      assert.equal(`${set.ruleSet}.json`, file);
      assert.ok(set.source.length > 40 && set.licence.length > 20, `${file} names source and licence`);
    }
  });

  const table: { name: string; system: string; code: string; labels: string[] }[] = [
    { name: 'F10.20 alcohol dependence → ETHUD', system: ICD, code: 'F10.20', labels: ['ETHUD'] },
    { name: 'dotless and lower-case ICD codes match alike', system: ICD, code: 'f1120', labels: ['OPIOIDUD'] },
    { name: 'F19.99 (last of F10–F19) → SUD', system: ICD, code: 'F19.99', labels: ['SUD'] },
    { name: 'F17.210 nicotine dependence: tobacco is not SUD', system: ICD, code: 'F17.210', labels: [] },
    { name: 'F20.9 schizophrenia (first of F20–F99) → MH, PSY', system: ICD, code: 'F20.9', labels: ['MH', 'PSY'] },
    { name: 'F99 → MH, PSY', system: ICD, code: 'F99', labels: ['MH', 'PSY'] },
    { name: 'F03.90 dementia (F01–F09) is not labelled', system: ICD, code: 'F03.90', labels: [] },
    { name: 'Z71.41 alcohol abuse counseling → ETHUD', system: ICD, code: 'Z71.41', labels: ['ETHUD'] },
    { name: 'A64 (last of A50–A64) → STD', system: ICD, code: 'A64', labels: ['STD'] },
    { name: 'A65 is outside the STI block', system: ICD, code: 'A65', labels: [] },
    { name: 'T74.01 neglect is not SDV', system: ICD, code: 'T74.01XA', labels: [] },
    { name: 'O03.9 spontaneous abortion → SEX', system: ICD, code: 'O03.9', labels: ['SEX'] },
    { name: 'Z34.00 normal pregnancy supervision is not labelled', system: ICD, code: 'Z34.00', labels: [] },
    { name: 'an ICD code under another system is not read as ICD-10-CM', system: SCT, code: 'F10.20', labels: [] },
    { name: 'SNOMED 55680006 drug overdose (Synthea) → SUD', system: SCT, code: '55680006', labels: ['SUD'] },
    { name: 'SNOMED 266919005 never smoker is not labelled', system: SCT, code: '266919005', labels: [] },
    { name: 'LOINC 44261-6 PHQ-9 total → MH', system: LOINC, code: '44261-6', labels: ['MH'] },
    { name: 'RxNorm 1049221 oxycodone/acetaminophen (analgesic) is not OUD', system: RXNORM, code: '1049221', labels: [] },
    { name: 'RxNorm 1551468 bupropion/naltrexone (weight loss) is not SUD', system: RXNORM, code: '1551468', labels: [] },
  ];
  for (const row of table) test(row.name, () => assert.deepEqual(codesOf(condition(row.system, row.code)), row.labels.sort()));

  test('Synthea fixtures: the contraceptives and miscarriage codes the bundles use are labelled SEX', () => {
    assert.deepEqual(codesOf({ resourceType: 'MedicationRequest', status: 'active', intent: 'order', subject: { reference: 'Patient/p' }, medicationCodeableConcept: { coding: [{ system: RXNORM, code: '748879' }] } }), ['SEX']);
    assert.deepEqual(codesOf(condition(SCT, '19169002')), ['SEX']);
  });

  test('a label already on the resource is not added again, and the trace names only what was added', () => {
    const r = { ...condition(ICD, 'F10.20'), meta: { security: [{ system: V3_ACT_CODE, code: 'ETHUD' }] } } as Resource;
    assert.deepEqual(labeler.label(r), { added: [], reasons: [] });
  });

  test('labeling.confidentiality adds its code only to labelled resources, never over a higher one', () => {
    const strict = new SecurityLabeler(loadRuleSets(), { enabled: true, confidentiality: 'R' });
    assert.deepEqual(codesOf(condition(ICD, 'F32.9'), strict), ['MH', 'PSY', 'R']);
    assert.deepEqual(codesOf(condition(LOINC, '8302-2'), strict), []);
    const v = { ...condition(ICD, 'F32.9'), meta: { security: [{ system: V3_CONFIDENTIALITY, code: 'V' }] } } as Resource;
    assert.deepEqual(codesOf(v, strict), ['MH', 'PSY']);
  });

  test('disabled, it labels nothing', () => {
    assert.deepEqual(codesOf(condition(ICD, 'F10.20'), new SecurityLabeler(loadRuleSets(), { enabled: false })), []);
  });
});

describe('the older ETH code and SUD match each other (SPEC §4.7)', () => {
  const rows = [
    { consent: 'SUD', label: 'ETH', outcome: 'deny' },
    { consent: 'ETH', label: 'OPIOIDUD', outcome: 'deny' },
    { consent: 'ETH', label: 'SUD', outcome: 'deny' },
    { consent: 'ETHUD', label: 'ETH', outcome: 'permit' },
    { consent: 'ETH', label: 'PSY', outcome: 'permit' },
  ];
  for (const row of rows) {
    test(`deny ${row.consent} on a resource labelled ${row.label} → ${row.outcome}`, () => {
      const compiled = compile(inputs([consent('c-eth', { type: 'deny', securityLabel: [act(row.consent)] })]), who.drA(), policyWith({}), NOW);
      assert.equal(evaluate(compiled, observation('o1', [act(row.label)])).outcome, row.outcome);
    });
  }
});

describe('a rule file that cannot be loaded is named', () => {
  const good = { ruleSet: 'local', title: 't', source: 'local list', licence: 'CC0', rules: [{ labels: ['PSY'], system: SCT, codes: ['1'] }] };
  const broken: { name: string; content: string; reason: RegExp }[] = [
    { name: 'not JSON', content: '{ nope', reason: /JSON/ },
    { name: 'no licence', content: JSON.stringify({ ...good, licence: undefined }), reason: /licence/ },
    { name: 'adds 42CFRPart2', content: JSON.stringify({ ...good, rules: [{ labels: ['42CFRPart2'], system: SCT, codes: ['1'] }] }), reason: /42CFRPart2/ },
    { name: 'a range across letters', content: JSON.stringify({ ...good, rules: [{ labels: ['SUD'], system: ICD, ranges: [['F10', 'G19']] }] }), reason: /range/ },
    { name: 'a rule with nothing to match', content: JSON.stringify({ ...good, rules: [{ labels: ['SUD'], system: ICD }] }), reason: /prefixes, ranges or codes/ },
  ];
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dg-rules-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  for (const row of broken) {
    test(row.name, async () => {
      const file = join(dir, `${row.name.replace(/\W+/g, '-')}.json`);
      await writeFile(file, row.content);
      assert.throws(() => loadRuleSets([file]), (err: Error) => err.message.includes(file) && row.reason.test(err.message));
    });
  }
  test('a missing file', () => assert.throws(() => loadRuleSets(['/nonexistent/rules.json']), /\/nonexistent\/rules\.json/));
});

describe('computed labels never remove or lower a label the resource had (property)', () => {
  const facts = categories.flatMap((c) => c.facts);
  const labelArb = fc.oneof(
    fc.constantFrom('U', 'L', 'M', 'N', 'R', 'V').map((code): Coding => ({ system: V3_CONFIDENTIALITY, code })),
    fc.constantFrom('SUD', 'ETHUD', 'PSY', 'MH', 'HIV', 'SEX', '42CFRPart2', 'PROCESSINLINELABEL').map((code): Coding => ({ system: V3_ACT_CODE, code })),
  );
  const highest = (labels: readonly Coding[]): number => Math.max(-1, ...labels.filter((c) => c.system === V3_CONFIDENTIALITY).map((c) => confidentialityRank(c.code)));

  test('released meta.security ⊇ the original labels, confidentiality never lower', () => {
    fc.assert(
      fc.property(fc.constantFrom(...facts), fc.array(labelArb, { maxLength: 4 }), fc.constantFrom(undefined, 'R' as const, 'V' as const), (fact, labels, confidentiality) => {
        const l = new SecurityLabeler(loadRuleSetsOnce(), { enabled: true, confidentiality });
        const resource = { ...factResource(fact, 'r1', 'p1'), meta: { security: labels } } as Resource;
        const before = JSON.stringify(resource);
        const computed = l.label(resource);
        for (const c of computed.added) assert.ok(!labels.some((x) => x.system === c.system && x.code === c.code), 'nothing already there is added again');
        const decision = evaluate(compile(inputs(), who.drA(['BTG'], true), policyWith({}), NOW), resource, computed);
        assert.equal(JSON.stringify(resource), before, 'the input is not changed');
        if (decision.outcome === 'deny') return;
        const released = applyObligations(resource, decision).meta?.security ?? [];
        for (const x of labels) assert.ok(released.some((c) => c.system === x.system && c.code === x.code), `kept ${x.code}`);
        assert.ok(highest(released) >= highest(labels), 'confidentiality not lowered');
      }),
      { numRuns: 300 },
    );
  });
});

let cached: ReturnType<typeof loadRuleSets> | undefined;
function loadRuleSetsOnce(): ReturnType<typeof loadRuleSets> {
  cached ??= loadRuleSets();
  return cached;
}
