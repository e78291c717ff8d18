// Two gateway instances in front of one upstream (SPEC §5, issue 4 §1): a Consent changed behind them is
// seen by both within the cache bound (polling `_lastUpdated`, TTL 2 s here); a Consent written through
// one gateway takes effect on that gateway at once. Convergence is polled with a bounded number of
// attempts, never asserted against a clock.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import type { Resource } from '@medplum/fhirtypes';
import { pou, startHarness, type Harness } from '../support/harness.ts';
import { consent, idsOf, obs, patient, TPO } from './support.ts';

const PID = 'pg';
const cache = { ttlSeconds: 2, maxPatients: 100 };
const resources: Resource[] = [{ resourceType: 'Practitioner', id: 'dr-a' }, patient(PID), obs(`${PID}-o1`, PID), obs(`${PID}-o2`, PID)];
const denyTPO = consent(`${PID}-c`, PID, { type: 'deny', purpose: TPO });

let g1: Harness;
let g2: Harness;

before(async () => {
  g1 = await startHarness({ resources, policy: { cache } });
  g2 = await startHarness({ upstream: g1.upstream, policy: { cache } });
});
after(async () => {
  await g2.close();
  await g1.close();
});

async function released(g: Harness): Promise<string[]> {
  const token = await g.token({ sub: 'dr-a', client_id: 'ehr', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: pou('TREAT') });
  const res = await g.request(`Observation?patient=${PID}`, { token });
  assert.equal(res.status, 200);
  return idsOf(res.body);
}

/** Polls both gateways until each answers `expected`; at most `attempts` rounds (well past the 2 s bound). */
async function converge(expected: string[], attempts = 120): Promise<number> {
  for (let round = 1; round <= attempts; round++) {
    const [a, b] = await Promise.all([released(g1), released(g2)]);
    if (JSON.stringify(a) === JSON.stringify(expected) && JSON.stringify(b) === JSON.stringify(expected)) return round;
    await sleep(100);
  }
  return -1;
}

describe('two gateways, one upstream', () => {
  test('a Consent changed behind both gateways is enforced by both within the cache bound', async () => {
    const all = [`${PID}-o1`, `${PID}-o2`];
    // Both instances have the patient's (empty) policy cached.
    assert.deepEqual(await released(g1), all);
    assert.deepEqual(await released(g2), all);
    await g1.put(denyTPO);
    assert.notEqual(await converge([]), -1, 'both gateways enforce the new deny');
    await g1.put({ ...denyTPO, status: 'inactive' } as Resource);
    assert.notEqual(await converge(all), -1, 'both gateways drop the inactivated consent');
  });

  test('a Consent written through one gateway takes effect there at once, and on the other within the bound', async () => {
    const writer = await g1.token({ sub: 'admin', client_id: 'consent-app', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs user/Consent.cu', extensions: pou('TREAT') });
    const all = [`${PID}-o1`, `${PID}-o2`];
    assert.notEqual(await converge(all), -1);
    const written = await g1.request(`Consent/${PID}-c`, { token: writer, method: 'PUT', body: { ...denyTPO, status: 'active' } });
    assert.ok(written.status === 200 || written.status === 201, `write through the gateway: ${written.status} ${written.text.slice(0, 200)}`);
    // No waiting: the writing gateway invalidated the patient's policy with the write.
    assert.deepEqual(await released(g1), [], 'the writing gateway enforces the new consent on the next request');
    assert.notEqual(await converge([]), -1, 'the other gateway follows within the bound');
  });
});
