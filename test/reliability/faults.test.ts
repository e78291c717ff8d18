// Fault injection (issue 6 §1, SPEC §5 "fail closed"): a switchable proxy between the gateway and the real
// embedded upstream breaks the exchange in one way per case. Every case: the documented 5xx with an
// OperationOutcome, not one marker of upstream data in the response, the request audited, and the
// gateway healthy and serving again once the fault is switched off.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Consent, Observation, Resource } from '@medplum/fhirtypes';
import { startEmbeddedUpstream, type EmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { CONSENT_SCOPE, V3_ACT_REASON, V3_CONFIDENTIALITY } from '../../src/fhir/systems.ts';
import { startFaultProxy, FOREIGN_HOST, type FaultMode, type FaultProxy } from '../support/fault-proxy.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';
import { eventsByRequest, isOperationOutcome, leakedMarkers, markedObservation } from './support.ts';

const PATIENT = 'pf1';
const TIMEOUT_MS = 1000;
const MAX_BYTES = 256 * 1024;
const run = Math.random().toString(36).slice(2, 10);

/** Per observation: its id and a planted string that exists nowhere but in that resource. */
const observations = Array.from({ length: 12 }, (_, i) => {
  const id = `obs-fault-${String(i + 1).padStart(2, '0')}`;
  return { id, marker: `FAULTMARK-${run}-${i + 1}-x` };
});
const restricted = { id: 'obs-fault-restricted', marker: `FAULTMARK-${run}-restricted-x` };
const allMarkers = [...observations.flatMap((o) => [o.id, o.marker]), restricted.id, restricted.marker];

const observation = (id: string, marker: string, security?: string): Observation => markedObservation(id, PATIENT, marker, security);

const consent: Consent = {
  resourceType: 'Consent',
  id: 'c-fault',
  status: 'active',
  scope: { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy' }] },
  category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
  patient: { reference: `Patient/${PATIENT}` },
  dateTime: '2024-01-10T09:00:00Z',
  provision: { type: 'permit', purpose: [{ system: V3_ACT_REASON, code: 'TREAT' }], securityLabel: [{ system: V3_CONFIDENTIALITY, code: 'N' }] },
};

const resources: Resource[] = [
  { resourceType: 'Practitioner', id: 'dr-fault' },
  { resourceType: 'Patient', id: PATIENT, generalPractitioner: [{ reference: 'Practitioner/dr-fault' }] },
  consent,
  ...observations.map((o) => observation(o.id, o.marker)),
  observation(restricted.id, restricted.marker, 'R'),
];

interface FaultCase {
  readonly name: string;
  readonly mode: FaultMode;
  readonly only?: RegExp;
  /** Status of a search and of a read under the fault (SPEC §5: 502 bad upstream, 503 unavailable, 504 timeout). */
  readonly search: number;
  readonly read: number;
}

const policySearch = /^\/fhir\/(Consent|Flag)\?/;
const cases: FaultCase[] = [
  { name: 'upstream down (closed port)', mode: 'down', search: 503, read: 503 },
  { name: 'upstream refusing (connection reset before any answer)', mode: 'refuse', search: 502, read: 502 },
  { name: 'upstream slow past the timeout (no answer)', mode: 'slow', search: 504, read: 504 },
  { name: 'upstream slow past the timeout (body stalls half way)', mode: 'slow-body', search: 504, read: 504 },
  { name: 'upstream resets mid-body', mode: 'reset-mid-body', search: 502, read: 502 },
  { name: 'upstream returns malformed JSON', mode: 'malformed-json', search: 502, read: 502 },
  { name: 'upstream returns an HTML error page echoing data', mode: 'html-error', search: 502, read: 502 },
  { name: 'upstream returns the data as text/plain', mode: 'wrong-content-type', search: 502, read: 502 },
  { name: 'upstream body over UPSTREAM_MAX_BYTES (Content-Length)', mode: 'oversized', search: 502, read: 502 },
  { name: 'upstream body over UPSTREAM_MAX_BYTES (chunked)', mode: 'oversized-chunked', search: 502, read: 502 },
  { name: 'upstream gzip bomb', mode: 'gzip-bomb', search: 502, read: 502 },
  { name: 'upstream answers 500 OperationOutcome', mode: 'status-500', search: 502, read: 502 },
  { name: 'Consent search fails while the data search succeeds', mode: 'status-500', only: /^\/fhir\/Consent\?/, search: 502, read: 502 },
  { name: 'Flag search fails while the data search succeeds', mode: 'status-500', only: /^\/fhir\/Flag\?/, search: 502, read: 502 },
  { name: 'Consent and Flag searches reset while the data search succeeds', mode: 'refuse', only: policySearch, search: 502, read: 502 },
  { name: 'Consent search answers an HTML page', mode: 'html-error', only: /^\/fhir\/Consent\?/, search: 502, read: 502 },
  { name: 'Consent search with a paging link to another host', mode: 'foreign-next-link', only: /^\/fhir\/Consent\?/, search: 502, read: 502 },
  // A read answers a resource, not a Bundle: only the search is affected (and must fail, not stop short).
  { name: 'data search with a paging link to another host', mode: 'foreign-next-link', only: /^\/fhir\/Observation\?/, search: 502, read: 200 },
  { name: 'data read fails while the policy searches succeed', mode: 'status-500', only: /^\/fhir\/Observation\/obs/, search: 200, read: 502 },
];

let upstream: EmbeddedUpstream;
let proxy: FaultProxy;
let h: Harness;
let token: string;
const responses: { id: string; status: number }[] = [];

async function gateway(path: string, opts: { method?: string; body?: unknown } = {}) {
  const res = await h.request(path, { token, ...opts });
  const id = res.headers.get('x-request-id');
  if (id) responses.push({ id, status: res.status });
  return res;
}

const batchBody = {
  resourceType: 'Bundle',
  type: 'batch',
  entry: [
    { request: { method: 'GET', url: `Observation/${observations[1].id}` } },
    { request: { method: 'GET', url: `Observation?patient=${PATIENT}&_count=3` } },
  ],
};

describe('fault injection between gateway and upstream', () => {
  before(async () => {
    upstream = await startEmbeddedUpstream({ resources });
    proxy = await startFaultProxy(upstream.url, { oversizeBytes: 4 * MAX_BYTES, bombBytes: 16 * 1024 * 1024 });
    h = await startHarness({
      upstream,
      // No policy cache: every request reads Consents and Flags, so a policy-search fault always bites.
      policy: { cache: { ttlSeconds: 0, maxPatients: 100 } },
      settings: { UPSTREAM_URL: proxy.url, UPSTREAM_TIMEOUT_MS: String(TIMEOUT_MS), UPSTREAM_MAX_BYTES: String(MAX_BYTES) },
    });
    token = await h.token({ scope: 'user/*.rs', fhirUser: 'Practitioner/dr-fault', client_id: 'fault-client', extensions: pou('TREAT') });
  });
  after(async () => {
    await h.close();
    await proxy.close();
    await upstream.close();
  });

  async function assertServing(): Promise<void> {
    const health = await fetch(h.base.replace(/\/fhir$/, '/healthz'));
    assert.equal(health.status, 200);
    await health.body?.cancel();
    const res = await gateway(`Observation?patient=${PATIENT}&_count=5`);
    assert.equal(res.status, 200, res.text);
    const ids = (res.body.entry as { resource: Resource }[]).map((e) => e.resource.id);
    assert.equal(ids.length, 5);
    // The check below can fail: released data does show up, only withheld data must not.
    assert.ok(res.text.includes(observations[0].marker));
    assert.deepEqual(leakedMarkers(res, [restricted.id, restricted.marker]), []);
    const next = (res.body.link as { relation: string; url: string }[]).find((l) => l.relation === 'next')?.url;
    assert.ok(next?.startsWith(h.base), 'paging stays on the gateway');
  }

  test('baseline through the proxy: data flows, the restricted record does not', async () => {
    await proxy.set('pass');
    await assertServing();
    const read = await gateway(`Observation/${restricted.id}`);
    assert.equal(read.status, 404);
    assert.deepEqual(leakedMarkers(read, [restricted.id, restricted.marker]), []);
  });

  for (const c of cases) {
    test(c.name, async () => {
      await proxy.set(c.mode, { only: c.only });
      const search = await gateway(`Observation?patient=${PATIENT}&_count=5`);
      const read = await gateway(`Observation/${observations[0].id}`);
      const batch = await gateway('', { method: 'POST', body: batchBody });
      if (c.mode !== 'down') assert.ok(proxy.faulted > 0, 'the fault was actually injected');
      await proxy.set('pass');

      assert.equal(search.status, c.search, `search: ${search.text.slice(0, 300)}`);
      assert.equal(read.status, c.read, `read: ${read.text.slice(0, 300)}`);
      if (c.search >= 500) {
        assert.ok(isOperationOutcome(search.text), 'search failure is an OperationOutcome');
        assert.deepEqual(leakedMarkers(search, allMarkers), [], 'nothing of the upstream data in a failed search');
      } else {
        assert.deepEqual(leakedMarkers(search, [restricted.id, restricted.marker]), []);
      }
      if (c.read >= 500) {
        assert.ok(isOperationOutcome(read.text), 'read failure is an OperationOutcome');
        assert.deepEqual(leakedMarkers(read, allMarkers), [], 'nothing of the upstream data in a failed read');
      }
      // A batch fails as a whole or entry by entry, each entry with the status its request would have had.
      if (batch.status === 200) {
        const statuses = (batch.body.entry as { response: { status: string } }[]).map((e) => Number.parseInt(e.response.status, 10));
        assert.deepEqual(statuses, [c.read, c.search]);
        // Entries that succeeded may show what they are allowed to; nothing else may appear.
        const allowed = new Set<string>();
        if (c.read < 500) allowed.add(observations[1].id).add(observations[1].marker);
        if (c.search < 500) for (const o of observations) allowed.add(o.id).add(o.marker);
        assert.deepEqual(leakedMarkers(batch, allMarkers.filter((m) => !allowed.has(m))), []);
      } else {
        assert.equal(batch.status, Math.max(c.read, c.search));
        assert.ok(isOperationOutcome(batch.text));
        assert.deepEqual(leakedMarkers(batch, allMarkers), []);
      }
      assert.ok(!search.text.includes(FOREIGN_HOST) && !read.text.includes(FOREIGN_HOST), 'no link to the foreign host');

      await assertServing();
    });
  }

  test('every response of this suite was audited under its request id', async () => {
    const byRequest = await eventsByRequest(h.auditDir);
    assert.ok(responses.length >= cases.length * 3);
    const lost = responses.filter((r) => !byRequest.has(r.id));
    assert.deepEqual(lost, []);
    // Failed requests are audited as failures (BALP outcome 8), never as disclosures.
    const failures = responses.filter((r) => r.status >= 500);
    assert.ok(failures.length >= cases.length);
    for (const r of failures) {
      const events = byRequest.get(r.id) ?? [];
      assert.ok(events.every((e) => e.outcome === '8'), `request ${r.id} audited as a failure`);
    }
  });
});

/** The descriptor number the process holds open on `path` (Linux /proc). */
function descriptorOf(path: string): number {
  const wanted = realpathSync(path);
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`) === wanted) return Number(name);
    } catch {
      // a descriptor closed while listing
    }
  }
  throw new Error(`no open descriptor on ${path}`);
}

/**
 * Puts /dev/full under an open descriptor (dup2 by hand: close it and reopen until the number comes back),
 * so every later write through it fails with ENOSPC, whoever the process runs as.
 */
function fillDescriptor(fd: number): void {
  closeSync(fd);
  const extra: number[] = [];
  try {
    for (;;) {
      const opened = openSync('/dev/full', 'a');
      if (opened === fd) return;
      extra.push(opened);
      if (opened > fd) throw new Error('descriptor number was taken by another open');
    }
  } finally {
    for (const e of extra) closeSync(e);
  }
}

describe('audit journal that cannot be written', () => {
  test('a full disk under the journal: 503, nothing released, the gateway stays up and says it is not ready', async () => {
    const h2 = await startHarness({ resources, policy: { cache: { ttlSeconds: 0, maxPatients: 100 } } });
    try {
      const t = await h2.token({ scope: 'user/*.rs', fhirUser: 'Practitioner/dr-fault', client_id: 'fault-client', extensions: pou('TREAT') });
      const ok = await h2.request(`Observation?patient=${PATIENT}`, { token: t });
      assert.equal(ok.status, 200);
      assert.ok(ok.text.includes(observations[0].marker));

      fillDescriptor(descriptorOf(join(h2.auditDir, 'audit-000000000001.ndjson')));

      const search = await h2.request(`Observation?patient=${PATIENT}`, { token: t });
      const read = await h2.request(`Observation/${observations[0].id}`, { token: t });
      for (const res of [search, read]) {
        assert.equal(res.status, 503);
        assert.ok(isOperationOutcome(res.text));
        assert.deepEqual(leakedMarkers(res, allMarkers), []);
      }
      const health = await fetch(h2.base.replace(/\/fhir$/, '/healthz'));
      assert.equal(health.status, 200);
      await health.body?.cancel();
      const ready = await fetch(h2.base.replace(/\/fhir$/, '/readyz'));
      assert.equal(ready.status, 503);
      assert.equal(((await ready.json()) as { checks: { journal: string } }).checks.journal, 'unwritable');
    } finally {
      await h2.close();
    }
  });

  test('an AUDIT_DIR that cannot be created: the gateway refuses to start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dg-rel-'));
    const file = join(dir, 'not-a-directory');
    writeFileSync(file, 'x');
    const up = await startEmbeddedUpstream({ resources });
    try {
      await assert.rejects(startHarness({ upstream: up, settings: { AUDIT_DIR: join(file, 'audit') } }), /ENOTDIR|not a directory/i);
    } finally {
      await up.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
