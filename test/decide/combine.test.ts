// decide/combine.ts: the combining rules enforcement and $disclosure-decision share (SPEC §5), as pure functions.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { combineDecisions, refusal, storedBundleDecision, ungoverned, withContainedDecided } from '../../src/decide/index.ts';
import type { Decision } from '../../src/decide/types.ts';

const permit = ungoverned('test permit');
const deny = refusal('consent', 'test deny', 'consent');
const harm: Decision = { ...deny, obligations: [{ kind: 'harm-refusal', flag: 'Flag/h1', ground: 'harm-life-safety', text: 'refused' }] };
const redact: Decision = { outcome: 'redact', obligations: [{ kind: 'redact', path: 'note[0]', reason: 'r' }], trace: [], breakGlassUsed: false, part2: false };
const btg: Decision = { ...permit, breakGlassUsed: true };

describe('combineDecisions: deny wins across a resource’s patients', () => {
  const rows: { name: string; decisions: Decision[]; outcome: Decision['outcome']; obligations: number; breakGlassUsed: boolean }[] = [
    { name: 'one decision is itself', decisions: [redact], outcome: 'redact', obligations: 1, breakGlassUsed: false },
    { name: 'permit + deny → deny', decisions: [permit, deny], outcome: 'deny', obligations: 0, breakGlassUsed: false },
    { name: 'redact + deny → deny without redactions', decisions: [redact, deny], outcome: 'deny', obligations: 0, breakGlassUsed: false },
    { name: 'deny keeps the harm refusal to state', decisions: [permit, harm], outcome: 'deny', obligations: 1, breakGlassUsed: false },
    { name: 'permit + redact → redact', decisions: [permit, redact], outcome: 'redact', obligations: 1, breakGlassUsed: false },
    { name: 'break-the-glass on any permit is kept', decisions: [permit, btg], outcome: 'permit', obligations: 0, breakGlassUsed: true },
    { name: 'break-the-glass is not claimed on a deny', decisions: [btg, deny], outcome: 'deny', obligations: 0, breakGlassUsed: false },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const d = combineDecisions(row.decisions);
      assert.equal(d.outcome, row.outcome);
      assert.equal(d.obligations.length, row.obligations);
      assert.equal(d.breakGlassUsed, row.breakGlassUsed);
    });
  }
});

describe('storedBundleDecision: all or nothing', () => {
  const bundle = (ids: string[]): Bundle => ({ resourceType: 'Bundle', id: 'b1', type: 'document', entry: ids.map((id) => ({ resource: { resourceType: 'Observation', id } as Resource })) });
  const by = (decisions: Record<string, Decision>) => (r: Resource): Decision => decisions[r.id ?? ''];
  test('every entry released unchanged → permit', () => assert.equal(storedBundleDecision(bundle(['a', 'b']), by({ a: permit, b: btg })).outcome, 'permit'));
  test('one entry redacted → the whole Bundle withheld, naming the Bundle', () => {
    const d = storedBundleDecision(bundle(['a', 'b']), by({ a: permit, b: redact }));
    assert.equal(d.outcome, 'deny');
    assert.equal(d.trace.at(-1)?.rule, 'Bundle/b1');
  });
  test('one entry withheld on a harm determination → withheld, the refusal still stated', () => {
    const d = storedBundleDecision(bundle(['a', 'b']), by({ a: harm, b: permit }));
    assert.equal(d.outcome, 'deny');
    assert.deepEqual(d.obligations.map((o) => o.kind), ['harm-refusal']);
  });
  test('the first entry that may not be released ends it', () => {
    const seen: string[] = [];
    storedBundleDecision(bundle(['a', 'b', 'c']), (r) => (seen.push(r.id ?? ''), r.id === 'b' ? deny : permit));
    assert.deepEqual(seen, ['a', 'b']);
  });
});

describe('withContainedDecided: a denied contained resource is removed', () => {
  const container = { resourceType: 'Observation', id: 'o1', contained: [{ resourceType: 'Practitioner', id: 'x' }, { resourceType: 'Medication', id: 'm' }] } as Resource;
  test('nothing denied → the container’s decision', () => assert.equal(withContainedDecided(permit, container, () => permit), permit));
  test('a denied one → redact contained[i]', () => {
    const d = withContainedDecided(permit, container, (r) => (r.id === 'm' ? deny : permit));
    assert.equal(d.outcome, 'redact');
    assert.deepEqual(d.obligations, [{ kind: 'redact', path: 'contained[1]', reason: 'contained resource withheld' }]);
  });
  test('a denied container stays denied, its contained not decided', () => {
    let asked = 0;
    assert.equal(withContainedDecided(deny, container, () => (asked++, permit)), deny);
    assert.equal(asked, 0);
  });
});
