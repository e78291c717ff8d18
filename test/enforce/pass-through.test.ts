// Byte pass-through of unchanged entries, end to end: a resource released as the upstream sent it goes out
// in the upstream's own bytes; anything the gateway changed (redaction, a view) or could not read exactly
// as a client would (duplicate keys) is serialised from the decided object, so nothing undecided leaves.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Bundle, Coding, Observation, Resource } from '@medplum/fhirtypes';
import { startEmbeddedUpstream, type EmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { DS4P_INLINE_LABEL, V3_CONFIDENTIALITY } from '../../src/fhir/systems.ts';
import { PROCESS_INLINE } from '../decide/fixtures.ts';
import { DUPLICATE_ID, startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';

const P = 'ptp';
const conf = (code: string): Coding => ({ system: V3_CONFIDENTIALITY, code });
const observation = (id: string, extra: Partial<Observation> = {}): Observation => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
  subject: { reference: `Patient/${P}` },
  effectiveDateTime: '2024-03-02T09:10:00Z',
  ...extra,
});

const resources: Resource[] = [
  { resourceType: 'Patient', id: P },
  observation('ptp-plain-1', { valueString: 'plain-value-1' }),
  observation('ptp-plain-2', { valueString: 'plain-value-2', note: [{ text: 'ünïcödé ✓ "quoted" \\ back' }] }),
  observation('ptp-inline', {
    meta: { security: [PROCESS_INLINE] },
    valueString: 'inline-secret-word',
    _valueString: { extension: [{ url: DS4P_INLINE_LABEL, valueCoding: conf('V') }] },
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">inline-secret-word</div>' },
  } as Partial<Observation>),
  observation('ptp-restricted', { meta: { security: [conf('R')] }, valueString: 'restricted-secret-word' }),
];
const SECRETS = ['inline-secret-word', 'restricted-secret-word', 'ptp-restricted'];

let upstream: EmbeddedUpstream;
let proxy: FaultProxy;
let h: Harness;
let token: string;

before(async () => {
  upstream = await startEmbeddedUpstream({ resources });
  proxy = await startFaultProxy(upstream.url);
  h = await startHarness({ upstream, settings: { UPSTREAM_URL: proxy.url } });
  token = await h.token({ sub: 'dr-a', client_id: 'ehr', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: pou('TREAT') });
});
after(async () => {
  await h.close();
  await proxy.close();
  await upstream.close();
});

const search = (query = '') => h.request(`Observation?patient=${P}&_count=10${query}`, { token });
const idsOf = (bundle: Bundle): string[] => (bundle.entry ?? []).map((e) => e.resource?.id ?? '').sort();

function assertClean(text: string): void {
  for (const secret of SECRETS) assert.ok(!text.includes(secret), `${secret} must not be sent`);
}

describe('byte pass-through of unchanged entries', () => {
  test('unchanged resources go out in the upstream’s bytes; a redacted one is serialised without what was removed', async () => {
    await proxy.set('pretty-printed');
    const res = await search();
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(idsOf(res.body), ['ptp-inline', 'ptp-plain-1', 'ptp-plain-2']);
    // The upstream's two-space indentation survives inside the unchanged resources only.
    const upstreamText = JSON.stringify(JSON.parse((await (await fetch(`${upstream.url}/Observation/ptp-plain-2`)).text())), null, 2);
    assert.ok(upstreamText.includes('"valueString": "plain-value-2"'));
    assert.ok(res.text.includes('"valueString": "plain-value-2"'), 'the unchanged resource keeps the upstream’s bytes');
    const inline = (res.body.entry as { resource: Observation }[]).find((e) => e.resource.id === 'ptp-inline')?.resource;
    assert.equal(inline?.valueString, undefined);
    assert.equal(inline?.text, undefined);
    assert.ok(inline?.meta?.security?.some((c) => c.code === 'REDACTED'));
    assertClean(res.text);
  });

  test('a view (_elements) is applied: no pass-through of the whole resource', async () => {
    await proxy.set('pretty-printed');
    const res = await search('&_elements=status');
    assert.equal(res.status, 200, res.text);
    for (const e of res.body.entry as { resource: Observation }[]) assert.equal(e.resource.valueString, undefined, e.resource.id);
    assertClean(res.text);
  });

  test('an upstream answer with duplicate keys is sent as decided (the last key), never as written', async () => {
    await proxy.set('duplicate-keys');
    const res = await search();
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(idsOf(res.body), ['ptp-inline', 'ptp-plain-1', 'ptp-plain-2']);
    assert.ok(!res.text.includes(DUPLICATE_ID), 'the key JSON.parse dropped is not sent');
    assertClean(res.text);
  });

  test('a compact upstream answer passes through unchanged and means what the parsed page means', async () => {
    await proxy.set('pass');
    const res = await search();
    assert.equal(res.status, 200, res.text);
    const direct = (await (await fetch(`${upstream.url}/Observation/ptp-plain-2`)).json()) as Observation;
    const sent = (res.body.entry as { resource: Observation }[]).find((e) => e.resource.id === 'ptp-plain-2')?.resource;
    assert.deepEqual(sent, direct);
    assertClean(res.text);
  });
});
