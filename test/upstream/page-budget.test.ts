// Issue 15, peak RSS: the page budget admits a request's first page in arrival order while others hold the
// budget, never makes a request that already holds bytes wait, and gives every byte back.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Bundle, Observation, Resource } from '@medplum/fhirtypes';
import { PageBudget } from '../../src/upstream/page-budget.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('page budget', () => {
  test('a first page waits while others hold the budget, and is admitted in arrival order when they give it back', async () => {
    const budget = new PageBudget(100);
    const a = budget.lease();
    const b = budget.lease();
    const c = budget.lease();
    await a.reserve(80);
    const order: string[] = [];
    const bAdmitted = b.reserve(30).then(() => order.push('b'));
    const cAdmitted = c.reserve(10).then(() => order.push('c'));
    await tick();
    assert.deepEqual(order, [], 'c fits, but does not overtake b');
    assert.deepEqual(budget.state(), { held: 80, waiting: 2 });
    a.release();
    await Promise.all([bAdmitted, cAdmitted]);
    assert.deepEqual(order, ['b', 'c']);
    assert.deepEqual(budget.state(), { held: 40, waiting: 0 });
    b.release();
    c.release();
    c.release();
    assert.deepEqual(budget.state(), { held: 0, waiting: 0 }, 'release is idempotent');
  });

  test('a request that holds bytes reads its later pages without waiting, even past the limit', async () => {
    const budget = new PageBudget(100);
    const a = budget.lease();
    await a.reserve(90);
    await a.reserve(90);
    assert.deepEqual(budget.state(), { held: 180, waiting: 0 });
    a.release();
    assert.equal(budget.state().held, 0);
  });

  test('pages one request reads at once queue only once: two such requests cannot wait on each other', async () => {
    const budget = new PageBudget(100);
    const c = budget.lease();
    await c.reserve(90);
    const a = budget.lease();
    const b = budget.lease();
    // Both ask for two pages together while c holds the budget. Had a's second page queued on its own, it would
    // wait behind nothing that could leave (a holds the rest), with b queued behind it: neither would finish.
    const aPages = Promise.all([a.reserve(60), a.reserve(60)]);
    const bPages = Promise.all([b.reserve(30), b.reserve(30)]);
    await tick();
    assert.deepEqual(budget.state(), { held: 90, waiting: 2 }, 'one turn each in the queue, not two');
    c.release();
    await Promise.all([aPages, bPages]);
    assert.deepEqual(budget.state(), { held: 180, waiting: 0 });
    a.release();
    b.release();
    assert.deepEqual(budget.state(), { held: 0, waiting: 0 });
  });

  test('a page larger than the whole budget is read alone; one abandoned while it waited is handed straight back', async () => {
    const waits: number[] = [];
    const budget = new PageBudget(10, () => waits.push(1));
    const big = budget.lease();
    await big.reserve(1000);
    const abandoned = budget.lease();
    const admitted = abandoned.reserve(5);
    abandoned.release();
    big.release();
    await admitted;
    assert.deepEqual(budget.state(), { held: 0, waiting: 0 });
    assert.equal(waits.length, 1);
  });
});

describe('page budget in the gateway: a one-byte budget parses one page at a time and every request still finishes', () => {
  let h: Harness;
  const observations: Resource[] = Array.from({ length: 45 }, (_, i): Observation => ({
    resourceType: 'Observation',
    id: `budget-obs-${i}`,
    status: 'final',
    code: { text: 'weight' },
    subject: { reference: `Patient/budget-p${i % 3}` },
  }));
  const patients: Resource[] = [0, 1, 2].map((i) => ({ resourceType: 'Patient', id: `budget-p${i}` }));
  before(async () => {
    h = await startHarness({ resources: [...patients, ...observations], settings: { UPSTREAM_PAGE_BUDGET_BYTES: '1' } });
  });
  after(() => h.close());

  test('twelve concurrent multi-page searches answer as they would alone, and the wait is counted', async () => {
    const token = await h.token({ sub: 'svc', client_id: 'budget-engine', scope: 'system/*.rs', extensions: pou('TREAT') });
    const query = (i: number): string => `Observation?patient=budget-p${i % 3}&_count=4`;
    const alone = await Promise.all([0, 1, 2].map(async (i) => (await h.request(query(i), { token })).body as Bundle));
    const together = await Promise.all(Array.from({ length: 12 }, async (_, i) => (await h.request(query(i), { token })).body as Bundle));
    together.forEach((bundle, i) => assert.deepEqual(bundle.entry?.map((e) => e.resource?.id), alone[i % 3].entry?.map((e) => e.resource?.id)));
    // Served where operators scrape it (the ops routes sit beside /fhir).
    const metrics = await (await fetch(new URL('/metrics', h.base))).text();
    const waits = Number(/dg_upstream_page_budget_waits_total (\d+)/.exec(metrics)?.[1]);
    assert.ok(waits > 0, `requests waited ${waits} times`);
  });
});
