// Memoised compile: one compile per (inputs object, requester, minute); the compile function is
// injected so this test does not depend on the decision engine's rules.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { defaultPolicy, type DecisionPolicy } from '../../src/config/policy.ts';
import type { PatientPolicyInputs, Requester } from '../../src/decide/types.ts';
import { CompiledPolicyCache } from '../../src/policy/index.ts';

const inputs = (): PatientPolicyInputs => ({ patientId: 'p1', consents: [], flags: [], memberships: {}, identifiers: {}, careRelationships: [] });
const drA: Requester = { fhirUser: 'Practitioner/dr-a', references: ['Practitioner/dr-a'], identifiers: [], purposes: ['TREAT'], breakGlass: false, clientKind: 'user', action: 'access' };
const t0 = Date.UTC(2025, 0, 1, 12, 0, 0);

function recordingCache(): { cache: CompiledPolicyCache<string>; calls: { requester: Requester; now: Date; policy: DecisionPolicy }[] } {
  const calls: { requester: Requester; now: Date; policy: DecisionPolicy }[] = [];
  const cache = new CompiledPolicyCache<string>({
    policy: defaultPolicy,
    compile: (i, requester, policy, now) => {
      calls.push({ requester, now, policy });
      return `${i.patientId}@${now.toISOString()}#${calls.length}`;
    },
  });
  return { cache, calls };
}

describe('CompiledPolicyCache', () => {
  const cases: { name: string; second: (first: PatientPolicyInputs) => [PatientPolicyInputs, Requester, number]; compiles: number }[] = [
    { name: 'same inputs, same requester, same minute → one compile', second: (i) => [i, drA, t0 + 59_000], compiles: 1 },
    { name: 'same requester with purposes reordered → one compile', second: (i) => [i, { ...drA, purposes: ['TREAT'] }, t0 + 1], compiles: 1 },
    { name: 'next minute → compiled again', second: (i) => [i, drA, t0 + 60_000], compiles: 2 },
    { name: 'another purpose → compiled again', second: (i) => [i, { ...drA, purposes: ['HPAYMT'] }, t0], compiles: 2 },
    { name: 'break-the-glass → compiled again', second: (i) => [i, { ...drA, breakGlass: true }, t0], compiles: 2 },
    { name: 'reloaded inputs (new object) → compiled again', second: () => [inputs(), drA, t0], compiles: 2 },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { cache, calls } = recordingCache();
      const first = inputs();
      const a = cache.get(first, drA, t0);
      const [i2, r2, now2] = c.second(first);
      const b = cache.get(i2, r2, now2);
      assert.equal(calls.length, c.compiles);
      assert.equal(a === b, c.compiles === 1);
    });
  }

  test('compile sees the minute start and the configured policy', () => {
    const { cache, calls } = recordingCache();
    cache.get(inputs(), drA, t0 + 42_123);
    assert.equal(calls[0].now.getTime(), t0);
    assert.equal(calls[0].policy, defaultPolicy);
  });
});
