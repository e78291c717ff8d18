// Bulk Data $export through the gateway (SPEC §5.1), end to end: a real MedplumClient kicks off, polls and
// reads the manifest; each file is downloaded and checked line by line against what the rules allow.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { journalEvents } from '../reliability/support.ts';
import { ClientStorage, MedplumClient, MemoryStorage } from '@medplum/core';
import type { AuditEvent, Consent, Group, Observation, Patient, Resource } from '@medplum/fhirtypes';
import { DS4P_INLINE_LABEL, V3_ACT_REASON, V3_CONFIDENTIALITY, V3_OBSERVATION_VALUE } from '../../src/fhir/systems.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';

const patient = (id: string): Patient => ({ resourceType: 'Patient', id, name: [{ family: `Family-${id}` }] });
const observation = (id: string, subject: string, extra: Partial<Observation> = {}): Observation => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { text: 'Body weight' },
  subject: { reference: `Patient/${subject}` },
  valueString: `VALUE-${id}`,
  ...extra,
});

/** p2 opts out of sharing for payment: the payer's integration engine exports for HPAYMT. */
const optOut: Consent = {
  resourceType: 'Consent',
  id: 'c-p2-optout',
  status: 'active',
  scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
  category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
  patient: { reference: 'Patient/p2' },
  dateTime: '2024-01-01T00:00:00Z',
  policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] },
  provision: { type: 'deny', purpose: [{ system: V3_ACT_REASON, code: 'HPAYMT' }] },
};

const group: Group = {
  resourceType: 'Group',
  id: 'g1',
  type: 'person',
  actual: true,
  active: true,
  member: [{ entity: { reference: 'Patient/p1' } }, { entity: { reference: 'Patient/p2' } }, { entity: { reference: 'Patient/p3' } }],
};

const data: Resource[] = [
  patient('p1'),
  patient('p2'),
  patient('p3'),
  patient('p4'), // not a member of g1
  group,
  optOut,
  observation('o-p1', 'p1'),
  observation('o-p1-r', 'p1', { meta: { security: [{ system: V3_CONFIDENTIALITY, code: 'R' }] } }),
  observation('o-p1-inline', 'p1', {
    meta: { security: [{ system: V3_OBSERVATION_VALUE, code: 'PROCESSINLINELABEL' }] },
    note: [{ text: 'routine' }, { text: 'SECRET-NOTE', extension: [{ url: DS4P_INLINE_LABEL, valueCoding: { system: V3_CONFIDENTIALITY, code: 'V' } }] }],
  }),
  observation('o-p2', 'p2'),
  observation('o-p3', 'p3'),
  observation('o-p4', 'p4'),
];

const engine = { sub: 'engine', client_id: 'payer-engine', scope: 'system/Patient.rs system/Observation.rs system/Group.rs', extensions: pou('HPAYMT') };

function client(h: Harness, token: string): MedplumClient {
  const medplum = new MedplumClient({ baseUrl: h.base.replace(/fhir$/, ''), fhirUrlPath: 'fhir', fetch: globalThis.fetch.bind(globalThis), storage: new ClientStorage(new MemoryStorage()) });
  medplum.setAccessToken(token);
  return medplum;
}

async function download(medplum: MedplumClient, url: string): Promise<Resource[]> {
  const blob = await medplum.download(url, { headers: { Accept: 'application/fhir+ndjson' } });
  const text = await blob.text();
  assert.ok(text === '' || text.endsWith('\n'), 'NDJSON ends each line');
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Resource);
}

async function manifestOf(medplum: MedplumClient, level: string, types?: string) {
  const manifest = await medplum.bulkExport(level, types, undefined, { pollStatusOnAccepted: true, pollStatusPeriod: 20 });
  return manifest as unknown as { output: { type: string; url: string; count?: number }[]; requiresAccessToken: boolean; error: unknown[]; request: string; deleted?: unknown };
}

/** The gateway's request and decision counters, by metric line (name with labels). */
async function decisionMetrics(h: Harness): Promise<Map<string, number>> {
  const text = await (await fetch(new URL('/metrics', h.base))).text();
  return new Map(text.split('\n').filter((l) => /^dg_(requests|decisions)_total\{/.test(l)).map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]));
}

// Journal lines as the console and `audit verify` read them (large events are stored deflated, issue 15).
async function auditEvents(h: Harness): Promise<AuditEvent[]> {
  return journalEvents(h.auditDir);
}

/** Kicks off with fetch, for the refusals: the status and whether a Content-Location came back. */
async function kickOff(h: Harness, path: string, token: string, headers: Record<string, string> = { prefer: 'respond-async' }) {
  return h.request(path, { token, headers });
}

describe('Bulk Data $export through the gateway', () => {
  let h: Harness;
  let second: Harness;
  before(async () => {
    const settings = { CURSOR_SECRET: 'shared-export-secret-for-both-instances' };
    h = await startHarness({ resources: data, settings });
    second = await startHarness({ upstream: h.upstream, settings });
  });
  after(async () => {
    await second.close();
    await h.close();
  });

  test('a Group export releases members’ permitted lines only: withheld, redacted, opted out and non-member checked line by line', async () => {
    const medplum = client(h, await h.token(engine));
    const manifest = await manifestOf(medplum, 'Group/g1', 'Patient,Observation');
    assert.equal(manifest.requiresAccessToken, true);
    assert.deepEqual(manifest.error, []);
    assert.equal(manifest.deleted, undefined);
    assert.ok(manifest.output.every((o) => o.url.startsWith(`${h.base}/_export/file/`) && o.count === undefined), 'gateway URLs, no counts');
    assert.ok(!JSON.stringify(manifest).includes(h.upstream.url), 'nothing of the upstream’s URLs reaches the client');
    const files = new Map<string, Resource[]>();
    const metricsBefore = await decisionMetrics(h);
    for (const o of manifest.output) files.set(o.type, [...(files.get(o.type) ?? []), ...(await download(medplum, o.url))]);
    // Streamed downloads are counted like any request, from the file's ledger (p1: 2 released incl. 1 redacted, 1 withheld; p2: 1 withheld; Patient file: p2 withheld).
    const metricsAfter = await decisionMetrics(h);
    const delta = (name: string) => (metricsAfter.get(name) ?? 0) - (metricsBefore.get(name) ?? 0);
    assert.equal(delta(`dg_requests_total{interaction="operation",status="200"}`), manifest.output.length, 'one request counted per file');
    assert.equal(delta('dg_decisions_total{outcome="redact"}'), 1);
    assert.equal(delta('dg_decisions_total{outcome="permit"}'), 4, 'o-p1, o-p3, Patient p1 and p3');
    assert.equal(delta('dg_decisions_total{outcome="deny"}'), 3, 'o-p1-r, o-p2 and Patient p2');

    const ids = (type: string) => (files.get(type) ?? []).map((r) => r.id).sort();
    assert.deepEqual(ids('Patient'), ['p1', 'p3'], 'p2 opted out of payment sharing; p4 is no member');
    assert.deepEqual(ids('Observation'), ['o-p1', 'o-p1-inline', 'o-p3'], 'the R-labelled line and p2’s line withheld; p4 not a member');
    const inline = files.get('Observation')?.find((r) => r.id === 'o-p1-inline') as Observation;
    assert.deepEqual(inline.note?.map((n) => n.text), ['routine'], 'the inline-labelled note is redacted');
    assert.ok(inline.meta?.security?.some((c) => c.code === 'REDACTED'));
    for (const lines of files.values()) assert.doesNotMatch(JSON.stringify(lines), /SECRET-NOTE|VALUE-o-p2|VALUE-o-p1-r|VALUE-o-p4/);

    const fileEvents = (await auditEvents(h)).filter((e) => e.entity?.some((x) => x.detail?.some((d) => d.type === 'file-type' && d.valueString === 'Observation')));
    assert.equal(fileEvents.length, 1, 'one AuditEvent per file download');
    const counts = (p: string) => Object.fromEntries(fileEvents[0].entity?.find((x) => x.what?.reference === `Patient/${p}`)?.detail?.map((d) => [d.type, d.valueString]) ?? []);
    assert.deepEqual(counts('p1'), { released: '2', redacted: '1', withheld: '1' });
    assert.deepEqual(counts('p2'), { withheld: '1' });
    assert.doesNotMatch(JSON.stringify(fileEvents[0]), /VALUE-|SECRET-NOTE|Family-/, 'no patient data in the audit');
    const queryOf = (e: AuditEvent) => Buffer.from(e.entity?.find((x) => x.query)?.query ?? '', 'base64').toString('utf8');
    const kickOffs = (await auditEvents(h)).filter((e) => queryOf(e).includes('/fhir/Group/g1/$export'));
    assert.equal(kickOffs.length, 1, 'one AuditEvent for the kick-off, naming the Group in its query');

  });

  test('a system-level export without _type is narrowed to the types the client may read', async () => {
    const medplum = client(h, await h.token(engine));
    const manifest = await manifestOf(medplum, '');
    assert.deepEqual([...new Set(manifest.output.map((o) => o.type))].sort(), ['Group', 'Observation', 'Patient'], 'no Consent file');
  });

  test('a POSTed Parameters kick-off is honoured, and audited as one event naming no patient (system level)', async () => {
    const token = await h.token(engine);
    const body = { resourceType: 'Parameters', parameter: [{ name: '_type', valueString: 'Group' }] };
    const start = await h.request('$export', { token, method: 'POST', body, headers: { prefer: 'respond-async' } });
    assert.equal(start.status, 202);
    const requestId = start.headers.get('x-request-id');
    const kickOffEvents = (await auditEvents(h)).filter((e) => e.entity?.some((x) => x.what?.identifier?.value === requestId));
    assert.equal(kickOffEvents.length, 1, 'one AuditEvent for the kick-off');
    assert.ok(!kickOffEvents[0].entity?.some((x) => x.what?.reference?.startsWith('Patient/')), 'a system-level kick-off names no patient');
    const status = start.headers.get('content-location') ?? '';
    let poll = await h.request(status, { token });
    while (poll.status === 202) poll = await h.request(status, { token });
    assert.deepEqual(poll.body.output.map((o: { type: string }) => o.type), ['Group']);
  });

  const refusals: { name: string; claims: Record<string, unknown>; path: string; status: number }[] = [
    { name: 'a patient/ token', claims: { sub: 'p1', client_id: 'app', patient: 'p1', fhirUser: 'Patient/p1', scope: 'patient/*.rs' }, path: 'Patient/$export', status: 403 },
    { name: 'a user/ token', claims: { sub: 'dr', client_id: 'app', fhirUser: 'Practitioner/dr', scope: 'user/*.rs', extensions: pou('TREAT') }, path: '$export', status: 403 },
    { name: 'a _type outside the scopes', claims: engine, path: '$export?_type=Consent', status: 403 },
    { name: '_typeFilter', claims: engine, path: '$export?_typeFilter=Observation%3Fcode%3Dx', status: 400 },
    { name: '_elements', claims: engine, path: 'Patient/$export?_elements=id', status: 400 },
    { name: 'a non-NDJSON _outputFormat', claims: engine, path: '$export?_outputFormat=application/json', status: 400 },
  ];
  for (const row of refusals) {
    test(`refused before the upstream is asked: ${row.name}`, async () => {
      const proxy = await startFaultProxy(h.upstream.url);
      const gateway = await startHarness({ upstream: { ...h.upstream, url: proxy.url } });
      try {
        const r = await kickOff(gateway, row.path, await gateway.token(row.claims));
        assert.equal(r.status, row.status);
        assert.equal(r.headers.get('content-location'), null);
        assert.ok(!proxy.seen.some((p) => p.includes('$export')), 'the upstream was never asked');
      } finally {
        await gateway.close();
        await proxy.close();
      }
    });
  }

  test('the job and its files belong to the client that started them; another client gets 404', async () => {
    const token = await h.token(engine);
    const start = await kickOff(h, 'Patient/$export?_type=Patient', token);
    assert.equal(start.status, 202);
    const status = start.headers.get('content-location') ?? '';
    assert.ok(status.startsWith(`${h.base}/_export/status/`));
    const other = await h.token({ ...engine, sub: 'other', client_id: 'other-engine' });
    assert.equal((await h.request(status, { token: other })).status, 404);
    assert.equal((await h.request(status)).status, 401, 'the bearer token is required');
    let poll = await h.request(status, { token });
    while (poll.status === 202) {
      assert.ok(poll.headers.get('x-progress'));
      poll = await h.request(status, { token });
    }
    assert.equal(poll.status, 200);
    const file = poll.body.output[0].url as string;
    assert.equal((await h.request(file, { token: other, headers: { accept: 'application/fhir+ndjson' } })).status, 404);
    const tampered = file.slice(0, -3) + (file.endsWith('A') ? 'BBB' : 'AAA');
    assert.equal((await h.request(tampered, { token, headers: { accept: 'application/fhir+ndjson' } })).status, 404);
    assert.equal((await h.request(file.replace('/_export/file/', '/_export/status/'), { token })).status, 404, 'a file handle is not a job handle');
  });

  test('a second gateway instance with the same secret serves the status and the files', async () => {
    const token = await h.token(engine);
    const start = await kickOff(h, 'Group/g1/$export?_type=Observation', token);
    const onSecond = (start.headers.get('content-location') ?? '').replace(h.base, second.base);
    const secondToken = await second.token(engine);
    let poll = await second.request(onSecond, { token: secondToken });
    while (poll.status === 202) poll = await second.request(onSecond, { token: secondToken });
    assert.equal(poll.status, 200);
    const url = (poll.body.output[0].url as string).replace(h.base, second.base);
    const lines = (await download(client(second, secondToken), url)).map((r) => r.id).sort();
    assert.deepEqual(lines, ['o-p1', 'o-p1-inline', 'o-p3']);
  });

  test('DELETE on the status URL cancels the job, upstream too', async () => {
    const token = await h.token(engine);
    const status = (await kickOff(h, '$export?_type=Patient', token)).headers.get('content-location') ?? '';
    const cancel = await h.request(status, { token, method: 'DELETE' });
    assert.equal(cancel.status, 202);
    assert.equal((await h.request(status, { token })).status, 404, 'the upstream job is gone');
  });

  test('upstream export URLs on another origin are not followed (502), and never reach the client', async () => {
    // An upstream that hands out a status URL, or a file URL, on a host the gateway must not call.
    let self = '';
    const foreign = createServer((req, res) => {
      if (req.url?.includes('Patient/$export')) return void res.writeHead(202, { 'content-location': 'http://elsewhere.invalid/status' }).end();
      if (req.url?.includes('$export')) return void res.writeHead(202, { 'content-location': `${self}/status` }).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ transactionTime: '2026-01-01T00:00:00Z', output: [{ type: 'Patient', url: 'http://elsewhere.invalid/file' }], error: [] }));
    });
    await new Promise<void>((ok) => foreign.listen(0, '127.0.0.1', () => ok()));
    self = `http://127.0.0.1:${(foreign.address() as AddressInfo).port}/fhir`;
    const gateway = await startHarness({ upstream: { ...h.upstream, url: self } });
    try {
      const token = await gateway.token(engine);
      const refused = await kickOff(gateway, 'Patient/$export?_type=Patient', token);
      assert.equal(refused.status, 502);
      const start = await kickOff(gateway, '$export?_type=Patient', token);
      assert.equal(start.status, 202);
      const status = await gateway.request(start.headers.get('content-location') ?? '', { token });
      assert.equal(status.status, 502);
      assert.doesNotMatch(refused.text + status.text, /elsewhere/);
    } finally {
      await gateway.close();
      foreign.close();
      foreign.closeAllConnections();
    }
  });

  test('a download whose audit event cannot be made durable never completes', async () => {
    const gateway = await startHarness({ upstream: h.upstream });
    try {
      const token = await gateway.token(engine);
      const manifest = await manifestOf(client(gateway, token), 'Group/g1', 'Observation');
      await gateway.gateway.journal.close(); // the journal is gone: nothing more can be audited
      const body = await fetch(manifest.output[0].url, { headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+ndjson' } }).then(
        async (res) => (res.status >= 500 ? 'failed' : await res.text().then((text) => text, () => 'failed')),
        () => 'failed',
      );
      assert.equal(body, 'failed', 'the client sees a failed download, not a complete file');
    } finally {
      await gateway.close();
    }
  });

  test('an upstream that fails mid-file breaks the download; no unchecked line is sent', async () => {
    const proxy: FaultProxy = await startFaultProxy(h.upstream.url);
    const gateway = await startHarness({ upstream: { ...h.upstream, url: proxy.url } });
    try {
      // A file long enough that decided lines may have left before the upstream breaks off.
      await h.put(patient('p5'));
      await h.put({ resourceType: 'Group', id: 'g-long', type: 'person', actual: true, member: [{ entity: { reference: 'Patient/p5' } }] } as Group);
      for (let i = 0; i < 1600; i++) await h.put(observation(`o-p5-${i}`, 'p5'));
      const token = await gateway.token(engine);
      const manifest = await manifestOf(client(gateway, token), 'Group/g-long', 'Observation');
      await proxy.set('reset-mid-body', { only: /\$export-file/ });
      // Either the response breaks off (before or after its headers) or it is a 5xx: never a complete 200.
      const body = await fetch(manifest.output[0].url, { headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+ndjson' } }).then(
        async (res) => (res.status >= 500 ? 'failed' : await res.text().then((text) => text, () => 'failed')),
        () => 'failed',
      );
      assert.equal(body, 'failed', 'the client sees a failed download');
      assert.equal(proxy.faulted, 1);
      const failure = (await auditEvents(gateway)).find((e) => e.outcome === '8' && e.entity?.some((x) => x.detail?.some((d) => d.type === 'file-type')));
      assert.ok(failure, 'the broken download is audited as failed, with what had left');
      const released = Number(failure.entity?.find((x) => x.what?.reference === 'Patient/p5')?.detail?.find((d) => d.type === 'released')?.valueString ?? 0);
      // How many decided lines left before the reset depends on timing (a reset discards unread bytes); never all.
      assert.ok(released < 1600, `never the whole file (${released} released before the break)`);
    } finally {
      await gateway.close();
      await proxy.close();
    }
  });
});
