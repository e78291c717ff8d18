// The policy store against a real FHIR server over HTTP (FhirRouter + MemoryRepository behind node:http).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Consent, Resource } from '@medplum/fhirtypes';
import { defaultPolicy, type DecisionPolicy } from '../../src/config/policy.ts';
import { DG_CODES } from '../../src/fhir/systems.ts';
import { PolicyStore, type PolicyStoreObserver } from '../../src/policy/index.ts';
import type { ClientKind, RequestContext } from '../../src/provenance/context.ts';
import { createUpstreamClient, UpstreamError, type UpstreamClient } from '../../src/upstream/index.ts';
import { startTestUpstream, type TestUpstream } from './fhir-upstream.ts';

const harmCode = { coding: [{ system: DG_CODES, code: 'harm-determination' }] };
const privacyScope = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] };
const legalCategory = [{ coding: [{ system: DG_CODES, code: 'legal-restriction' }] }];

function policyWith(cache: Partial<DecisionPolicy['cache']>): DecisionPolicy {
  return { ...defaultPolicy, cache: { ...defaultPolicy.cache, ...cache } };
}

function consent(id: string, patient: string, extra: Partial<Consent> = {}): Consent {
  return {
    resourceType: 'Consent',
    id,
    status: 'active',
    scope: privacyScope,
    category: [{ text: 'privacy' }],
    patient: { reference: `Patient/${patient}` },
    dateTime: '2024-01-01',
    provision: { type: 'permit' },
    ...extra,
  };
}

// The scenario fixtures (scenarios.md): P1 with Dr A as GP, Group/btg-users, a guardian, a harm determination.
const fixtures: Resource[] = [
  { resourceType: 'Patient', id: 'p1', generalPractitioner: [{ reference: 'Practitioner/dr-a' }, { reference: 'Organization/clinic' }] },
  { resourceType: 'Patient', id: 'p2' },
  { resourceType: 'Practitioner', id: 'dr-a', identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '111' }] },
  { resourceType: 'Practitioner', id: 'bob', identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '222' }] },
  { resourceType: 'Practitioner', id: 'dr-c', identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '333' }] },
  {
    resourceType: 'PractitionerRole',
    id: 'role-c',
    practitioner: { reference: 'Practitioner/dr-c' },
    organization: { reference: 'Organization/hospital' },
    identifier: [{ system: 'urn:roles', value: 'rc' }],
  },
  { resourceType: 'Organization', id: 'payer', identifier: [{ system: 'urn:payers', value: 'p-9' }] },
  { resourceType: 'Organization', id: 'hospital', identifier: [{ system: 'urn:orgs', value: 'h-1' }] },
  { resourceType: 'RelatedPerson', id: 'guardian', patient: { reference: 'Patient/p1' }, identifier: [{ system: 'urn:rp', value: 'g' }] },
  {
    resourceType: 'Group',
    id: 'btg-users',
    type: 'practitioner',
    actual: true,
    member: [
      { entity: { reference: 'Practitioner/dr-a' } },
      { entity: { reference: 'Practitioner/bob' }, inactive: true },
      { entity: { reference: 'Practitioner/dr-c' }, period: { end: '2001-01-01' } },
    ],
  },
  { resourceType: 'CareTeam', id: 'consent-team', status: 'active', participant: [{ member: { reference: 'Practitioner/nurse' } }] },
  { resourceType: 'CareTeam', id: 'p1-team', status: 'active', subject: { reference: 'Patient/p1' }, participant: [{ member: { reference: 'Practitioner/nurse-2' } }] },
  { resourceType: 'CareTeam', id: 'p1-old-team', status: 'inactive', subject: { reference: 'Patient/p1' }, participant: [{ member: { reference: 'Practitioner/old' } }] },
  {
    resourceType: 'Encounter',
    id: 'e1',
    status: 'finished',
    class: { code: 'AMB' },
    subject: { reference: 'Patient/p1' },
    participant: [{ individual: { reference: 'PractitionerRole/role-c' } }],
  },
  consent('c-permit', 'p1', {
    provision: {
      type: 'permit',
      provision: [
        { type: 'permit', actor: [{ role: { text: 'grantee' }, reference: { reference: 'Group/btg-users' } }] },
        {
          type: 'deny',
          provision: [{ type: 'deny', actor: [{ role: { text: 'grantee' }, reference: { reference: 'Organization/payer' } }] }],
        },
        { type: 'permit', actor: [{ role: { text: 'grantee' }, reference: { reference: 'CareTeam/consent-team' } }] },
      ],
    },
  }),
  consent('c-legal', 'p1', {
    category: legalCategory,
    provision: { type: 'deny', actor: [{ role: { text: 'grantee' }, reference: { reference: 'RelatedPerson/guardian' } }] },
  }),
  consent('c-inactive', 'p1', { status: 'inactive', provision: { type: 'deny', actor: [{ role: { text: 'x' }, reference: { reference: 'Practitioner/ghost' } }] } }),
  consent('c-other-patient', 'p2'),
  {
    resourceType: 'Flag',
    id: 'h1',
    status: 'active',
    code: harmCode,
    subject: { reference: 'Patient/p1' },
    author: { reference: 'PractitionerRole/role-c' },
  },
  { resourceType: 'Flag', id: 'h-inactive', status: 'inactive', code: harmCode, subject: { reference: 'Patient/p1' } },
  { resourceType: 'Flag', id: 'f-other-code', status: 'active', code: { text: 'fall risk' }, subject: { reference: 'Patient/p1' } },
];

// R5 shape (SPEC §4.1: read-compatible): root provision is a list, the patient is `subject`.
const r5Consent = {
  resourceType: 'Consent',
  id: 'c-r5',
  status: 'active',
  subject: { reference: 'Patient/p3' },
  patient: { reference: 'Patient/p3' },
  decision: 'deny',
  provision: [{ actor: [{ reference: { reference: 'Practitioner/bob' } }], provision: [{ actor: [{ reference: { reference: 'Group/btg-users' } }] }] }],
} as unknown as Consent;

let upstream: TestUpstream;
let client: UpstreamClient;
const opened: PolicyStore[] = [];

before(async () => {
  upstream = await startTestUpstream();
  for (const r of [...fixtures, r5Consent]) await upstream.update(r);
  client = createUpstreamClient({ baseUrl: upstream.baseUrl, timeoutMs: 5000 });
});

after(async () => {
  for (const store of opened) await store.stopPolling();
  await client.close();
  await upstream.close();
});

function newStore(opts: { policy?: DecisionPolicy; now?: () => number; observer?: PolicyStoreObserver; pollIntervalMs?: number; pollOverlapMs?: number; client?: UpstreamClient } = {}): PolicyStore {
  const store = new PolicyStore({ upstream: opts.client ?? client, policy: opts.policy ?? defaultPolicy, ...opts });
  opened.push(store);
  return store;
}

/** Upstream requests made while `fn` runs. */
async function requestsDuring(fn: () => Promise<unknown>): Promise<string[]> {
  const before = upstream.requests.length;
  await fn();
  return upstream.requests.slice(before);
}

describe('loading a patient’s policy inputs (SPEC §4)', () => {
  test('consents, harm flags, memberships, identifiers and care relationships', async () => {
    const inputs = await newStore().load('p1');
    assert.equal(inputs.patientId, 'p1');
    assert.deepEqual(inputs.consents.map((c) => c.id).sort(), ['c-legal', 'c-permit']);
    assert.deepEqual(inputs.flags.map((f) => f.id), ['h1']);
    assert.deepEqual(inputs.memberships, {
      'CareTeam/consent-team': ['Practitioner/nurse'],
      'Group/btg-users': ['Practitioner/dr-a'],
    });
    assert.deepEqual(inputs.identifiers, {
      'Organization/payer': ['urn:payers|p-9'],
      'RelatedPerson/guardian': ['urn:rp|g'],
    });
    assert.deepEqual(inputs.careRelationships, ['Practitioner/dr-a', 'Practitioner/dr-c', 'Practitioner/nurse-2', 'PractitionerRole/role-c']);
  });

  test('R5-shaped consent: list of provisions, nested actors', async () => {
    const inputs = await newStore().load('p3');
    assert.deepEqual(inputs.consents.map((c) => c.id), ['c-r5']);
    assert.deepEqual(inputs.identifiers, { 'Practitioner/bob': ['http://hl7.org/fhir/sid/us-npi|222'] });
    assert.deepEqual(inputs.memberships, { 'Group/btg-users': ['Practitioner/dr-a'] });
  });

  test('no harm flag: no care-relationship reads (Encounters, CareTeams, Patient)', async () => {
    let inputs: Awaited<ReturnType<PolicyStore['load']>> | undefined;
    const seen = await requestsDuring(async () => (inputs = await newStore().load('p2')));
    assert.deepEqual(inputs?.consents.map((c) => c.id), ['c-other-patient']);
    assert.deepEqual(inputs?.careRelationships, []);
    assert.deepEqual(seen.map((r) => r.split('?')[0]).sort(), ['GET Consent', 'GET Flag']);
    assert.ok(seen.every((r) => r.includes('patient=Patient/p2')), 'every search names the patient');
  });

  test('a patient with nothing on file loads empty inputs', async () => {
    const inputs = await newStore().load('nobody');
    assert.deepEqual(
      { consents: inputs.consents, flags: inputs.flags, memberships: inputs.memberships, identifiers: inputs.identifiers, careRelationships: inputs.careRelationships },
      { consents: [], flags: [], memberships: {}, identifiers: {}, careRelationships: [] },
    );
  });

  test('an id that is not a FHIR id is refused without asking the upstream', async () => {
    const seen = await requestsDuring(() => assert.rejects(newStore().load('p1&_id=x'), RangeError));
    assert.deepEqual(seen, []);
  });

  test('loadMany answers every patient, once each', async () => {
    const store = newStore();
    const result = await store.loadMany(['p1', 'p2', 'p1']);
    assert.deepEqual([...result.keys()], ['p1', 'p2']);
    assert.deepEqual(result.get('p2')?.consents.map((c) => c.id), ['c-other-patient']);
    assert.equal(store.size, 2);
  });
});

// Issue 18: decide/ sees only local keys or explicit foreign ones.
describe('references are keyed as the store loads them', () => {
  const irc = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] };
  test('an actor on the upstream’s base becomes local; one on another server stays whole and is not read', async () => {
    await upstream.update({ resourceType: 'Patient', id: 'p-keyed' });
    await upstream.update(
      consent('c-keyed', 'p-keyed', {
        provision: {
          type: 'permit',
          actor: [
            { role: irc, reference: { reference: `${upstream.baseUrl}/Practitioner/dr-a/_history/1` } },
            { role: irc, reference: { reference: 'https://other.example/fhir/Group/btg-users' } },
          ],
        },
      }),
    );
    let inputs: Awaited<ReturnType<PolicyStore['load']>> | undefined;
    const seen = await requestsDuring(async () => (inputs = await newStore().load('p-keyed')));
    assert.deepEqual(inputs?.consents[0].provision?.actor?.map((a) => a.reference?.reference), ['Practitioner/dr-a', 'https://other.example/fhir/Group/btg-users']);
    assert.deepEqual(inputs?.memberships, {}, 'the foreign Group is not taken for the local one');
    assert.ok(!seen.some((r) => r.includes('Group/')), 'nothing of another server is asked of the upstream');
  });

  // SPEC §5 (issue 17 item 7): identifiers are looked up together, one search per batch.
  test('patient identifiers resolve in one batched search; an unknown one resolves to nothing', async () => {
    await upstream.update({ resourceType: 'Patient', id: 'p-mrn', identifier: [{ system: 'urn:mrn', value: 'a,1' }, { system: 'urn:mrn', value: 'b' }] });
    const store = newStore();
    let found: Map<string, string[]> | undefined;
    const seen = await requestsDuring(async () => (found = await store.resolvePatientIdentifiers(['urn:mrn|a,1', 'urn:mrn|b', 'urn:mrn|none'])));
    assert.deepEqual(Object.fromEntries(found ?? []), { 'urn:mrn|a,1': ['p-mrn'], 'urn:mrn|b': ['p-mrn'] });
    assert.equal(seen.length, 1);
    assert.deepEqual(await requestsDuring(() => store.resolvePatientIdentifiers(['urn:mrn|b', 'urn:mrn|none'])), [], 'cached within the TTL, misses too');
  });
});

describe('cache (SPEC §4.6 cache, §5 invalidation)', () => {
  test('a cache hit makes no upstream request', async () => {
    let hits = 0;
    const store = newStore({ observer: { onCacheHit: () => hits++ } });
    const first = await store.load('p1');
    const seen = await requestsDuring(() => store.load('p1'));
    assert.deepEqual(seen, []);
    assert.equal(hits, 1);
    assert.equal(await store.load('p1'), first);
  });

  test('single flight: 10 concurrent loads share one upstream fetch set', async () => {
    let loads = 0;
    const store = newStore({ observer: { onLoad: () => loads++ } });
    const seen = await requestsDuring(() => Promise.all(Array.from({ length: 10 }, () => store.load('p2'))));
    assert.equal(loads, 1);
    assert.equal(seen.filter((r) => r.startsWith('GET Consent?')).length, 1);
    assert.equal(seen.filter((r) => r.startsWith('GET Flag?')).length, 1);
  });

  test('TTL expiry reloads', async () => {
    let clock = 1_000_000;
    const store = newStore({ now: () => clock, policy: policyWith({ ttlSeconds: 30 }) });
    await store.load('p2');
    clock += 29_000;
    assert.deepEqual(await requestsDuring(() => store.load('p2')), []);
    clock += 1_000;
    const seen = await requestsDuring(() => store.load('p2'));
    assert.equal(seen.filter((r) => r.startsWith('GET Consent?')).length, 1);
  });

  test('ttlSeconds 0 caches nothing', async () => {
    const store = newStore({ policy: policyWith({ ttlSeconds: 0 }) });
    await store.load('p2');
    assert.equal(store.size, 0);
    const seen = await requestsDuring(() => store.load('p2'));
    assert.equal(seen.filter((r) => r.startsWith('GET Consent?')).length, 1);
  });

  test('invalidate reloads and sees a Consent written since', async () => {
    const store = newStore();
    assert.deepEqual((await store.load('p4')).consents, []);
    await upstream.update(consent('c-p4', 'p4'));
    assert.deepEqual((await store.load('p4')).consents, [], 'still cached before invalidation');
    store.invalidate('p4');
    assert.deepEqual((await store.load('p4')).consents.map((c) => c.id), ['c-p4']);
  });

  test('invalidate during a load: the stale result is not cached', async () => {
    const store = newStore();
    const inFlight = store.load('p2');
    store.invalidate('p2');
    await inFlight;
    assert.equal(store.size, 0);
  });

  test('LRU bound respected: the least recently used patient is evicted', async () => {
    const store = newStore({ policy: policyWith({ maxPatients: 2 }) });
    await store.load('p1');
    await store.load('p2');
    await store.load('p1'); // p1 now most recent
    await store.load('p3'); // evicts p2
    assert.equal(store.size, 2);
    assert.deepEqual(await requestsDuring(() => store.load('p1')), []);
    const seen = await requestsDuring(() => store.load('p2'));
    assert.ok(seen.some((r) => r.startsWith('GET Consent?patient=Patient/p2')), 'the evicted patient is reloaded');
  });
});

describe('store failures reject and are not cached (SPEC §5 fails closed)', () => {
  const cases: { name: string; prefix: string; mode: 'status' | 'html' | 'garbage' }[] = [
    { name: 'Consent search answers 500', prefix: 'Consent', mode: 'status' },
    { name: 'Consent search answers an HTML page', prefix: 'Consent', mode: 'html' },
    { name: 'Consent bundle is unparseable', prefix: 'Consent', mode: 'garbage' },
    { name: 'Flag search answers 500', prefix: 'Flag', mode: 'status' },
    { name: 'an actor Group read answers 500', prefix: 'Group', mode: 'status' },
    { name: 'care-relationship Encounter search answers 500', prefix: 'Encounter', mode: 'status' },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      let errors = 0;
      const store = newStore({ observer: { onLoadError: () => errors++ } });
      upstream.fail = { prefix: c.prefix, mode: c.mode };
      try {
        await assert.rejects(store.load('p1'), (err: unknown) => err instanceof UpstreamError && err.status === 502);
      } finally {
        upstream.fail = undefined;
      }
      assert.equal(errors, 1);
      assert.equal(store.size, 0);
      const inputs = await store.load('p1');
      assert.deepEqual(inputs.consents.map((x) => x.id).sort(), ['c-legal', 'c-permit']);
    });
  }

  test('a next link pointing off the upstream is never followed', async () => {
    await upstream.update(consent('c-p5a', 'p5'));
    await upstream.update(consent('c-p5b', 'p5'));
    const paged = new PolicyStore({ upstream: client, policy: defaultPolicy, pageSize: 1 });
    upstream.foreignNextLink = true;
    try {
      await assert.rejects(paged.load('p5'), (err: unknown) => err instanceof UpstreamError && err.code === 'bad-body');
    } finally {
      upstream.foreignNextLink = false;
    }
    assert.equal(paged.size, 0);
    assert.deepEqual((await paged.load('p5')).consents.map((c) => c.id).sort(), ['c-p5a', 'c-p5b']);
  });

  test('paging: consents spread over several pages are all loaded', async () => {
    await upstream.update(consent('c-p6a', 'p6'));
    await upstream.update(consent('c-p6b', 'p6'));
    await upstream.update(consent('c-p6c', 'p6'));
    const store = new PolicyStore({ upstream: client, policy: defaultPolicy, pageSize: 2 });
    const seen = await requestsDuring(async () => {
      const inputs = await store.load('p6');
      assert.deepEqual(inputs.consents.map((c) => c.id).sort(), ['c-p6a', 'c-p6b', 'c-p6c']);
    });
    assert.equal(seen.filter((r) => r.startsWith('GET Consent?')).length, 2);
  });
});

describe('requester resolution (SPEC §4.1 actor)', () => {
  function context(fields: Partial<Omit<RequestContext, 'kinds'>> & { kinds: ClientKind[] }): RequestContext {
    return {
      requestId: 'r-1',
      clientId: 'app',
      grantedScopes: [],
      scopes: [],
      purposeOfUse: ['TREAT'],
      purposeSource: 'claim',
      breakGlass: { inEffect: false, requested: false },
      ...fields,
      kinds: new Set(fields.kinds),
    };
  }

  const cases: {
    name: string;
    ctx: RequestContext;
    expected: { fhirUser?: string; references: string[]; identifiers: string[]; clientKind: ClientKind; purposes: string[]; breakGlass: boolean };
  }[] = [
    {
      name: 'PractitionerRole adds its practitioner and organization, with identifiers',
      ctx: context({ fhirUser: 'PractitionerRole/role-c', organization: 'Organization/payer', kinds: ['user', 'system'] }),
      expected: {
        fhirUser: 'PractitionerRole/role-c',
        references: ['PractitionerRole/role-c', 'Organization/payer', 'Practitioner/dr-c', 'Organization/hospital'],
        identifiers: ['http://hl7.org/fhir/sid/us-npi|333', 'urn:orgs|h-1', 'urn:payers|p-9', 'urn:roles|rc'],
        clientKind: 'user',
        purposes: ['TREAT'],
        breakGlass: false,
      },
    },
    {
      name: 'Practitioner in break-the-glass',
      ctx: context({ fhirUser: 'Practitioner/dr-a', kinds: ['user'], purposeOfUse: ['TREAT', 'BTG'], breakGlass: { inEffect: true, requested: true } }),
      expected: {
        fhirUser: 'Practitioner/dr-a',
        references: ['Practitioner/dr-a'],
        identifiers: ['http://hl7.org/fhir/sid/us-npi|111'],
        clientKind: 'user',
        purposes: ['TREAT', 'BTG'],
        breakGlass: true,
      },
    },
    {
      name: 'a fhirUser that does not exist upstream: no identifiers, not an error',
      ctx: context({ fhirUser: 'Practitioner/ghost', kinds: ['user'] }),
      expected: { fhirUser: 'Practitioner/ghost', references: ['Practitioner/ghost'], identifiers: [], clientKind: 'user', purposes: ['TREAT'], breakGlass: false },
    },
    {
      name: 'patient token: narrowest kind governs',
      ctx: context({ fhirUser: 'Patient/p1', patient: 'p1', kinds: ['patient', 'user'], purposeOfUse: ['PATRQT'] }),
      expected: { fhirUser: 'Patient/p1', references: ['Patient/p1'], identifiers: [], clientKind: 'patient', purposes: ['PATRQT'], breakGlass: false },
    },
    {
      name: 'backend service with only an organization',
      ctx: context({ organization: 'Organization/payer', kinds: ['system'], purposeOfUse: ['HPAYMT'] }),
      expected: { references: ['Organization/payer'], identifiers: ['urn:payers|p-9'], clientKind: 'system', purposes: ['HPAYMT'], breakGlass: false },
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const requester = await newStore().resolveRequester(c.ctx);
      assert.deepEqual(requester, { ...c.expected, action: 'access' });
    });
  }

  // SPEC §3/§4.1 (issue 17 item 3): another server's actor is kept whole and never read from the upstream.
  test('a foreign fhirUser and organization stay foreign and are not read upstream', async () => {
    const ctx = context({ fhirUser: 'https://other.example/fhir/Practitioner/dr-a', organization: 'https://other.example/fhir/Organization/hospital', kinds: ['user'] });
    let requester: Awaited<ReturnType<PolicyStore['resolveRequester']>> | undefined;
    const seen = await requestsDuring(async () => (requester = await newStore().resolveRequester(ctx)));
    assert.deepEqual(requester?.references, ['https://other.example/fhir/Practitioner/dr-a', 'https://other.example/fhir/Organization/hospital']);
    assert.deepEqual(requester?.identifiers, []);
    assert.deepEqual(seen, []);
  });

  // SPEC §4.1 (issue 17 item 4): a role out of force stands for neither its practitioner nor its organization.
  test('an inactive or expired PractitionerRole adds nothing; an active one does', async () => {
    await upstream.update({ resourceType: 'PractitionerRole', id: 'role-off', active: false, practitioner: { reference: 'Practitioner/dr-c' }, organization: { reference: 'Organization/hospital' } });
    await upstream.update({ resourceType: 'PractitionerRole', id: 'role-past', period: { end: '2020-01-01' }, practitioner: { reference: 'Practitioner/dr-c' }, organization: { reference: 'Organization/hospital' } });
    for (const role of ['role-off', 'role-past']) {
      const requester = await newStore().resolveRequester(context({ fhirUser: `PractitionerRole/${role}`, kinds: ['user'] }));
      assert.deepEqual(requester.references, [`PractitionerRole/${role}`], role);
    }
    const active = await newStore().resolveRequester(context({ fhirUser: 'PractitionerRole/role-c', kinds: ['user'] }));
    assert.ok(active.references.includes('Organization/hospital'));
  });

  test('a RelatedPerson whose relationship is inactive or ended is not among the references', async () => {
    await upstream.update({ resourceType: 'RelatedPerson', id: 'rp-off', active: false, patient: { reference: 'Patient/p1' } });
    await upstream.update({ resourceType: 'RelatedPerson', id: 'rp-past', period: { end: '2020-01-01' }, patient: { reference: 'Patient/p1' } });
    for (const id of ['rp-off', 'rp-past']) {
      const requester = await newStore().resolveRequester(context({ fhirUser: `RelatedPerson/${id}`, kinds: ['user'], purposeOfUse: ['FAMRQT'] }));
      assert.equal(requester.fhirUser, `RelatedPerson/${id}`, 'still a representative for harm determinations');
      assert.deepEqual(requester.references, [], id);
    }
    const current = await newStore().resolveRequester(context({ fhirUser: 'RelatedPerson/guardian', kinds: ['user'], purposeOfUse: ['FAMRQT'] }));
    assert.deepEqual(current.references, ['RelatedPerson/guardian']);
  });

  test('requester facts are cached: the second resolution asks nothing', async () => {
    const store = newStore();
    const ctx = context({ fhirUser: 'PractitionerRole/role-c', kinds: ['user'] });
    await store.resolveRequester(ctx);
    assert.deepEqual(await requestsDuring(() => store.resolveRequester(ctx)), []);
  });

  test('an upstream failure while resolving rejects', async () => {
    upstream.fail = { prefix: 'Practitioner/', mode: 'status' };
    try {
      await assert.rejects(newStore().resolveRequester(context({ fhirUser: 'Practitioner/dr-a', kinds: ['user'] })), UpstreamError);
    } finally {
      upstream.fail = undefined;
    }
  });
});

describe('poller: changes behind the gateway (SPEC §5 cache bound)', () => {
  test('pollOnce invalidates the patient of a Consent changed upstream', async () => {
    const store = newStore();
    await store.pollOnce(); // acts on the fixtures' own recent changes first
    await store.load('p7');
    await upstream.update(consent('c-p7', 'p7'));
    assert.equal(await store.pollOnce(), 1);
    assert.deepEqual((await store.load('p7')).consents.map((c) => c.id), ['c-p7']);
    assert.equal(await store.pollOnce(), 0, 'a change already acted on is not acted on again');
  });

  test('a changed Group invalidates the patients whose consents name it', async () => {
    const store = newStore();
    await store.pollOnce(); // acts on the fixtures' own recent changes first
    assert.deepEqual((await store.load('p1')).memberships['Group/btg-users'], ['Practitioner/dr-a']);
    await upstream.update({ resourceType: 'Group', id: 'btg-users', type: 'practitioner', actual: true, member: [{ entity: { reference: 'Practitioner/bob' } }] });
    try {
      assert.equal(await store.pollOnce(), 1);
      assert.deepEqual((await store.load('p1')).memberships['Group/btg-users'], ['Practitioner/bob']);
    } finally {
      const original = fixtures.find((r) => r.resourceType === 'Group');
      if (original) await upstream.update(original);
    }
  });

  test('two gateway instances on one upstream agree after their next poll', async () => {
    // Waits for two completed cycles: the second necessarily started after the wait began.
    const waiting: Record<string, { remaining: number; resolve: () => void; reject: (err: unknown) => void } | undefined> = {};
    const waitForFreshPoll = (name: string): Promise<void> => new Promise((resolve, reject) => (waiting[name] = { remaining: 2, resolve, reject }));
    const observer = (name: string): PolicyStoreObserver => ({
      onPollError: (err) => waiting[name]?.reject(err),
      onPoll: () => {
        const w = waiting[name];
        if (w && --w.remaining === 0) {
          waiting[name] = undefined;
          w.resolve();
        }
      },
    });
    const a = newStore({ pollIntervalMs: 20, observer: observer('a') });
    const b = newStore({ pollIntervalMs: 20, observer: observer('b') });
    await upstream.update(consent('c-p8', 'p8', { provision: { type: 'permit' } }));
    assert.equal((await a.load('p8')).consents[0].provision?.type, 'permit');
    assert.equal((await b.load('p8')).consents[0].provision?.type, 'permit');
    a.startPolling();
    b.startPolling();
    // Gateway A's instance writes through to the upstream; B only learns of it by polling.
    await upstream.update(consent('c-p8', 'p8', { provision: { type: 'deny' } }));
    a.invalidate('p8');
    await Promise.all([waitForFreshPoll('a'), waitForFreshPoll('b')]);
    assert.equal((await a.load('p8')).consents[0].provision?.type, 'deny');
    assert.equal((await b.load('p8')).consents[0].provision?.type, 'deny');
    await a.stopPolling();
    await b.stopPolling();
  });
});
