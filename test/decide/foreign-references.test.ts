// Issue 18 (SPEC §4.1) and issue 17 item 2 (SPEC §4.2), decided purely: every place compile/evaluate
// compares an actor, organisation or data reference, with a foreign key (another server's absolute URL,
// as the policy store hands it over) beside the local namesake; and a restriction's ETREAT exception.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ConsentProvision } from '@medplum/fhirtypes';
import type { Requester } from '../../src/decide/types.ts';
import { compile, evaluate } from '../../src/decide/index.ts';
import { defaultPolicy } from '../../src/config/policy.ts';
import { actor, consent, harmFlag, inputs, legalRestriction, NOW, observation, purpose, who } from './fixtures.ts';

const FOREIGN = 'https://other.example/fhir';
const requester = (references: string[], extra: Partial<Requester> = {}): Requester => ({
  fhirUser: references[0],
  references,
  identifiers: [],
  purposes: ['TREAT'],
  breakGlass: false,
  clientKind: 'user',
  action: 'access',
  ...extra,
});
const localDrA = requester(['Practitioner/dr-a', 'Organization/hospital']);
const foreignDrA = requester([`${FOREIGN}/Practitioner/dr-a`, `${FOREIGN}/Organization/hospital`]);

function outcome(provision: ConsentProvision, who: Requester, resource = observation('o1'), extra: Partial<Parameters<typeof inputs>[2]> = {}): string {
  return evaluate(compile(inputs([consent('c1', provision)], [], extra), who, defaultPolicy, NOW), resource).outcome;
}

describe('a foreign Consent actor never grants the local namesake (issue 18)', () => {
  const rows: { name: string; actorRef: string; who: Requester; expect: string }[] = [
    { name: 'control: local actor permits the local practitioner', actorRef: 'Practitioner/dr-a', who: localDrA, expect: 'permit' },
    { name: 'attack: foreign actor does not permit the local practitioner', actorRef: `${FOREIGN}/Practitioner/dr-a`, who: localDrA, expect: 'deny' },
    { name: 'control: foreign actor permits the same foreign practitioner', actorRef: `${FOREIGN}/Practitioner/dr-a`, who: foreignDrA, expect: 'permit' },
    { name: 'attack: local actor does not permit a foreign practitioner of that name', actorRef: 'Practitioner/dr-a', who: foreignDrA, expect: 'deny' },
    { name: 'attack: foreign organisation does not permit the local organisation', actorRef: `${FOREIGN}/Organization/hospital`, who: localDrA, expect: 'deny' },
    { name: 'control: local organisation permits its member', actorRef: 'Organization/hospital', who: localDrA, expect: 'permit' },
  ];
  for (const row of rows) {
    test(row.name, () => assert.equal(outcome({ type: 'permit', actor: [actor(row.actorRef)] }, row.who), row.expect));
  }

  test('attack: a foreign Group does not take the local Group’s members', () => {
    const memberships = { 'Group/btg-users': ['Practitioner/dr-a'] };
    assert.equal(outcome({ type: 'permit', actor: [actor(`${FOREIGN}/Group/btg-users`)] }, localDrA, undefined, { memberships }), 'deny');
    assert.equal(outcome({ type: 'permit', actor: [actor('Group/btg-users')] }, localDrA, undefined, { memberships }), 'permit');
  });

  test('attack: a local Group listing a foreign member does not admit the local namesake', () => {
    const memberships = { 'Group/g': [`${FOREIGN}/Practitioner/dr-a`] };
    assert.equal(outcome({ type: 'permit', actor: [actor('Group/g')] }, localDrA, undefined, { memberships }), 'deny');
    assert.equal(outcome({ type: 'permit', actor: [actor('Group/g')] }, foreignDrA, undefined, { memberships }), 'permit');
  });
});

describe('foreign data references match only the same absolute URL (issue 18)', () => {
  const deny = (data: NonNullable<ConsentProvision['data']>): ConsentProvision => ({ type: 'permit', provision: [{ type: 'deny', data }] });
  const authored = (author: string) => observation('o1', [], { performer: [{ reference: author }] });
  const rows: { name: string; data: NonNullable<ConsentProvision['data']>; resource: ReturnType<typeof observation>; expect: string }[] = [
    { name: 'control: instance on the local id denies it', data: [{ meaning: 'instance', reference: { reference: 'Observation/o1' } }], resource: observation('o1'), expect: 'deny' },
    { name: 'attack: a foreign instance of that id does not touch the local one', data: [{ meaning: 'instance', reference: { reference: `${FOREIGN}/Observation/o1` } }], resource: observation('o1'), expect: 'permit' },
    { name: 'control: authoredby the local author', data: [{ meaning: 'authoredby', reference: { reference: 'Practitioner/dr-a' } }], resource: authored('Practitioner/dr-a'), expect: 'deny' },
    { name: 'attack: authoredby a foreign author does not match the local author', data: [{ meaning: 'authoredby', reference: { reference: `${FOREIGN}/Practitioner/dr-a` } }], resource: authored('Practitioner/dr-a'), expect: 'permit' },
    { name: 'attack: a resource authored on another server is not the local author’s', data: [{ meaning: 'authoredby', reference: { reference: 'Practitioner/dr-a' } }], resource: authored(`${FOREIGN}/Practitioner/dr-a`), expect: 'permit' },
    { name: 'control: dependents of the local encounter', data: [{ meaning: 'dependents', reference: { reference: 'Encounter/e1' } }], resource: observation('o1', [], { encounter: { reference: 'Encounter/e1' } }), expect: 'deny' },
    { name: 'attack: dependents of a foreign encounter do not match the local one', data: [{ meaning: 'dependents', reference: { reference: `${FOREIGN}/Encounter/e1` } }], resource: observation('o1', [], { encounter: { reference: 'Encounter/e1' } }), expect: 'permit' },
  ];
  for (const row of rows) test(row.name, () => assert.equal(outcome(deny(row.data), localDrA, row.resource), row.expect));
});

// SPEC §4.2: the exception takes effect only while break-the-glass is in effect (the `btg` scope).
describe('a legal restriction’s ETREAT exception needs break-the-glass (issue 17 item 2)', () => {
  const restriction = legalRestriction('court', { type: 'deny', provision: [{ type: 'permit', purpose: purpose('ETREAT') }] });
  const decide = (r: Requester) => evaluate(compile(inputs([restriction]), r, defaultPolicy, NOW), observation('o1')).outcome;
  test('attack: a token that merely states ETREAT stays restricted', () => assert.equal(decide(who.drA(['ETREAT'])), 'deny'));
  test('control: ETREAT with break-the-glass in effect lifts the restriction', () => assert.equal(decide(who.drA(['ETREAT'], true)), 'permit'));
  test('control: an exception for plain TREAT needs no break-the-glass', () => {
    const treat = legalRestriction('court', { type: 'deny', provision: [{ type: 'permit', purpose: purpose('TREAT') }] });
    assert.equal(evaluate(compile(inputs([treat]), who.drA(['TREAT']), defaultPolicy, NOW), observation('o1')).outcome, 'permit');
  });
});

// SPEC §4.3 compares the Flag's subject, author and withheld data with local keys (the store keys them on load).
describe('a harm determination’s references are compared as keys (issue 18)', () => {
  const decide = (flag: ReturnType<typeof harmFlag>, resource = observation('d1', [], { resourceType: 'DiagnosticReport' })) =>
    evaluate(compile(inputs([], [flag]), who.patient(), defaultPolicy, NOW), resource).outcome;
  test('control: a local author with a care relationship withholds the named report', () => assert.equal(decide(harmFlag('h1')), 'deny'));
  test('attack: an author of another server is not the local Dr A', () => {
    assert.equal(decide(harmFlag('h1', { author: { reference: `${FOREIGN}/Practitioner/dr-a` } })), 'permit');
  });
  test('a withheld report of another server does not withhold the local one', () => {
    assert.equal(decide(harmFlag('h1', {}, 'harm-life-safety', [`${FOREIGN}/DiagnosticReport/d1`])), 'permit');
  });
});

// The inputs carry the local bases, so an upstream that writes absolute references on its own base in a
// resource is still compared locally — a deny on `authoredby`/`dependents` is not sidestepped that way.
describe('a resource’s absolute references on the local bases are local (issue 18)', () => {
  const UPSTREAM = 'http://upstream.test/fhir';
  const deny: ConsentProvision = { type: 'permit', provision: [{ type: 'deny', data: [{ meaning: 'authoredby', reference: { reference: 'Practitioner/dr-a' } }] }] };
  const byDrA = observation('o1', [], { performer: [{ reference: `${UPSTREAM}/Practitioner/dr-a` }] });
  test('attack closed: the local author written absolutely is still the local author', () => {
    assert.equal(outcome(deny, localDrA, byDrA, { localBases: [UPSTREAM] }), 'deny');
  });
  test('control: without the bases it would be another server’s author', () => {
    assert.equal(outcome(deny, localDrA, byDrA), 'permit');
  });
});
