// Soak (issue 6 §4): sustained concurrent traffic through the gateway on loopback, with Consent changes
// behind it, bounded in time and count. Fails (exit 1) on any error answer, any leak of never-releasable
// data, memory growth past the stated bounds after warm-up, or a response whose audit event is missing.
//
//   node scripts/soak.ts [--seconds 120] [--workers 8] [--max-requests 500000]
//                                     [--heap-growth-mb 48] [--rss-growth-mb 160]
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Consent, Observation, Resource } from '@medplum/fhirtypes';
import { verifyJournal } from '../src/audit/verify.ts';
import { startEmbeddedUpstream } from '../src/embedded/upstream/index.ts';
import { CONSENT_SCOPE, V3_ACT_REASON, V3_CONFIDENTIALITY } from '../src/fhir/systems.ts';
import { eventsByRequest } from '../test/reliability/support.ts';
import { pou, startHarness } from '../test/support/harness.ts';

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  if (at === -1) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} needs a positive number`);
  return value;
}

const seconds = option('seconds', 120);
const workers = option('workers', 8);
const maxRequests = option('max-requests', 500_000);
const heapBoundMb = option('heap-growth-mb', 48);
const rssBoundMb = option('rss-growth-mb', 160);
const PATIENTS = 12;
const OBSERVATIONS = 25;
const run = Math.random().toString(36).slice(2, 8);

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

// ---- data: N and R observations per patient, one V observation that nothing may ever release ----

const neverMarker = (p: number) => `NEVER-${run}-${p}-V`;
const resources: Resource[] = [{ resourceType: 'Practitioner', id: 'soak-dr' }];
for (let p = 0; p < PATIENTS; p++) {
  const patient = `soak-p${p}`;
  resources.push({ resourceType: 'Patient', id: patient, generalPractitioner: [{ reference: 'Practitioner/soak-dr' }] });
  resources.push({ resourceType: 'Encounter', id: `soak-p${p}-e`, status: 'finished', class: { code: 'AMB' }, subject: { reference: `Patient/${patient}` } });
  for (let o = 0; o < OBSERVATIONS; o++) {
    const label = o % 10 === 0 ? 'R' : undefined;
    const obs: Observation = {
      resourceType: 'Observation',
      id: `soak-p${p}-o${o}`,
      status: 'final',
      ...(label ? { meta: { security: [{ system: V3_CONFIDENTIALITY, code: label }] } } : {}),
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      subject: { reference: `Patient/${patient}` },
      encounter: { reference: `Encounter/soak-p${p}-e` },
      effectiveDateTime: `2024-0${1 + (o % 9)}-15T10:00:00Z`,
      valueString: `value ${o}`,
    };
    resources.push(obs);
  }
  resources.push({
    resourceType: 'Observation',
    id: `soak-p${p}-v`,
    status: 'final',
    meta: { security: [{ system: V3_CONFIDENTIALITY, code: 'V' }] },
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: `Patient/${patient}` },
    valueString: neverMarker(p),
  });
}

/** A consent that flips between permitting treatment (N and R) and denying everything. */
function consentFor(p: number, version: number): Consent {
  const permit = version % 2 === 0;
  return {
    resourceType: 'Consent',
    id: `soak-c${p}`,
    status: 'active',
    scope: { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/soak-p${p}` },
    dateTime: new Date(Date.UTC(2024, 0, 1) + version * 1000).toISOString(),
    policy: [{ uri: 'https://example.org/privacy-policy' }],
    provision: permit
      ? { type: 'permit', purpose: [{ system: V3_ACT_REASON, code: 'TREAT' }], securityLabel: [{ system: V3_CONFIDENTIALITY, code: 'R' }] }
      : { type: 'deny' },
  };
}

interface Tally {
  requests: number;
  errors: string[];
  leaks: string[];
  requestIds: string[];
  consentChanges: number;
  /** Reads of ordinary (N) records answered 200 and 404: both must occur, or the consent changes did nothing. */
  readsReleased: number;
  readsWithheld: number;
}

async function main(): Promise<number> {
  const upstream = await startEmbeddedUpstream({ resources: [...resources, ...Array.from({ length: PATIENTS }, (_, p) => consentFor(p, 0))] });
  // A short cache bound so the poller picks up the consent changes made behind the gateway (SPEC §5).
  const h = await startHarness({ upstream, policy: { cache: { ttlSeconds: 4, maxPatients: 1000 } } });
  const tally: Tally = { requests: 0, errors: [], leaks: [], requestIds: [], consentChanges: 0, readsReleased: 0, readsWithheld: 0 };
  const tokens = {
    clinician: await h.token({ scope: 'user/*.rs', fhirUser: 'Practitioner/soak-dr', client_id: 'soak-clinician', extensions: pou('TREAT') }, { expiresIn: '2h' }),
    system: await h.token({ scope: 'system/*.rs', client_id: 'soak-engine', extensions: pou('HOPERAT') }, { expiresIn: '2h' }),
    patients: await Promise.all(Array.from({ length: PATIENTS }, (_, p) => h.token({ scope: 'patient/*.rs', patient: `soak-p${p}`, fhirUser: `Patient/soak-p${p}`, client_id: 'soak-patient-app' }, { expiresIn: '2h' }))),
  };
  const deadline = Date.now() + seconds * 1000;
  const warmUpEnds = Date.now() + Math.min(20_000, (seconds * 1000) / 4);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)];

  async function call(path: string, token: string, okStatuses: readonly number[], opts: { method?: string; body?: unknown } = {}) {
    tally.requests++;
    let res: Awaited<ReturnType<typeof h.request>>;
    try {
      res = await h.request(path, { token, ...opts });
    } catch (err) {
      tally.errors.push(`${path}: ${(err as Error).message}`);
      return undefined;
    }
    const id = res.headers.get('x-request-id');
    if (id) tally.requestIds.push(id);
    else tally.errors.push(`${path}: no X-Request-Id`);
    if (!okStatuses.includes(res.status)) tally.errors.push(`${path}: ${res.status} ${res.text.slice(0, 160)}`);
    for (let p = 0; p < PATIENTS; p++) if (res.text.includes(neverMarker(p))) tally.leaks.push(`${path}: V-labelled record of patient ${p}`);
    return res;
  }

  const traffic: (() => Promise<unknown>)[] = [
    async () => {
      const p = Math.floor(Math.random() * PATIENTS);
      const first = await call(`Observation?patient=soak-p${p}&_count=10`, tokens.clinician, [200]);
      const next = (first?.body?.link as { relation: string; url: string }[] | undefined)?.find((l) => l.relation === 'next')?.url;
      if (next) await call(next, tokens.clinician, [200]);
    },
    async () => {
      // o1..o9 are unlabelled (N): released while the patient's consent permits, withheld while it denies.
      const res = await call(`Observation/soak-p${Math.floor(Math.random() * PATIENTS)}-o${1 + Math.floor(Math.random() * 9)}`, tokens.clinician, [200, 404]);
      if (res?.status === 200) tally.readsReleased++;
      if (res?.status === 404) tally.readsWithheld++;
    },
    () => call(`Observation/soak-p${Math.floor(Math.random() * PATIENTS)}-v`, tokens.clinician, [404]),
    () => call(`Encounter?patient=soak-p${Math.floor(Math.random() * PATIENTS)}&_revinclude=Observation:encounter&_count=5`, tokens.clinician, [200]),
    () => call(`Observation?patient=soak-p${Math.floor(Math.random() * PATIENTS)}&_count=20`, tokens.system, [200]),
    () => {
      const p = Math.floor(Math.random() * PATIENTS);
      return call('Observation?_count=15', tokens.patients[p], [200]);
    },
    () =>
      call('', tokens.clinician, [200], {
        method: 'POST',
        body: {
          resourceType: 'Bundle',
          type: 'batch',
          entry: Array.from({ length: 3 }, () => ({ request: { method: 'GET', url: `Observation/soak-p${Math.floor(Math.random() * PATIENTS)}-o${Math.floor(Math.random() * OBSERVATIONS)}` } })),
        },
      }),
  ];

  const memory = { baseline: undefined as undefined | { heap: number; rss: number }, peakHeap: 0, peakRss: 0 };
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    memory.peakHeap = Math.max(memory.peakHeap, m.heapUsed);
    memory.peakRss = Math.max(memory.peakRss, m.rss);
    if (!memory.baseline && Date.now() >= warmUpEnds) {
      gc();
      const settled = process.memoryUsage();
      memory.baseline = { heap: settled.heapUsed, rss: settled.rss };
    }
  }, 500);

  // Consent changes behind the gateway while traffic runs.
  const versions = new Array<number>(PATIENTS).fill(0);
  const changer = (async () => {
    while (Date.now() < deadline) {
      await new Promise((ok) => setTimeout(ok, 1000));
      const p = Math.floor(Math.random() * PATIENTS);
      versions[p]++;
      await h.put(consentFor(p, versions[p]));
      tally.consentChanges++;
    }
  })();

  const started = Date.now();
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (Date.now() < deadline && tally.requests < maxRequests) await pick(traffic)();
    }),
  );
  await changer;
  clearInterval(sampler);
  const elapsed = (Date.now() - started) / 1000;

  gc();
  const end = process.memoryUsage();
  const baseline = memory.baseline ?? { heap: end.heapUsed, rss: end.rss };
  const heapGrowthMb = (end.heapUsed - baseline.heap) / 2 ** 20;
  const rssGrowthMb = (end.rss - baseline.rss) / 2 ** 20;

  // Every response was released only after its events were fsynced: all of them must be in the journal now.
  const byRequest = await eventsByRequest(h.auditDir);
  const lost = tally.requestIds.filter((id) => !byRequest.has(id));
  const chain = await verifyJournal(h.auditDir);
  await h.close();
  await upstream.close();

  const failures: string[] = [];
  if (tally.errors.length) failures.push(`${tally.errors.length} errors, first: ${tally.errors.slice(0, 3).join(' | ')}`);
  if (tally.leaks.length) failures.push(`${tally.leaks.length} leaks, first: ${tally.leaks[0]}`);
  if (lost.length) failures.push(`${lost.length} responses without an audit event`);
  if (!chain.ok) failures.push(`audit chain broken at ${chain.firstBad.segment}:${chain.firstBad.line} (${chain.firstBad.problem})`);
  if (heapGrowthMb > heapBoundMb) failures.push(`heap grew ${heapGrowthMb.toFixed(1)} MiB after warm-up (bound ${heapBoundMb})`);
  if (rssGrowthMb > rssBoundMb) failures.push(`RSS grew ${rssGrowthMb.toFixed(1)} MiB after warm-up (bound ${rssBoundMb})`);
  if (tally.consentChanges === 0) failures.push('no consent change happened during the run');
  if (tally.readsReleased === 0 || tally.readsWithheld === 0) failures.push(`consent changes never took effect (${tally.readsReleased} reads released, ${tally.readsWithheld} withheld)`);

  console.log(
    `soak: ${elapsed.toFixed(0)} s, ${workers} workers, ${tally.requests} requests (${(tally.requests / elapsed).toFixed(0)} req/s), ` +
      `${tally.errors.length} errors, ${tally.leaks.length} leaks, ${tally.consentChanges} consent changes (N reads ${tally.readsReleased} released / ${tally.readsWithheld} withheld), ` +
      `audited ${tally.requestIds.length - lost.length}/${tally.requestIds.length} responses (${lost.length} lost, chain ${chain.ok ? `intact, ${chain.events} events` : 'BROKEN'}), ` +
      `heap ${heapGrowthMb >= 0 ? '+' : ''}${heapGrowthMb.toFixed(1)} MiB (bound ${heapBoundMb}), RSS ${rssGrowthMb >= 0 ? '+' : ''}${rssGrowthMb.toFixed(1)} MiB (bound ${rssBoundMb}) after warm-up, peak heap ${(memory.peakHeap / 2 ** 20).toFixed(0)} MiB — ${failures.length ? 'FAIL' : 'PASS'}`,
  );
  for (const f of failures) console.error(`soak failure: ${f}`);
  return failures.length ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error('soak aborted:', err);
    process.exitCode = 1;
  },
);
