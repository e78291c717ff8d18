// Scaling note (issue 7 §4): the enforcement cost of one searchset page, in-process, as the bundle size,
// the number of consents per patient and the number of patients per bundle grow. Upstream answers and
// policy inputs come from memory (as from the canned upstream and a warm policy cache), so what is timed
// is parse → decide every entry → shape → stringify, next to parse → stringify of the same bytes.
import { pathToFileURL } from 'node:url';
import { getHeapStatistics } from 'node:v8';
import type { Bundle, Consent, Observation, Resource } from '@medplum/fhirtypes';
import { policySchema } from '../src/config/policy.ts';
import type { PatientPolicyInputs, Requester } from '../src/decide/types.ts';
import { DisclosureSession } from '../src/enforce/disclose.ts';
import type { PolicySource } from '../src/policy/index.ts';
import { listingBundle, runListing, type ListingRequest } from '../src/enforce/listing.ts';
import { loadSyntheaBundles } from '../src/embedded/upstream/index.ts';
import { loadFhirDefinitions } from '../src/fhir/definitions.ts';
import { labelerFromPolicy } from '../src/label/index.ts';
import { buildRequestContext } from '../src/provenance/build-context.ts';
import type { UpstreamClient } from '../src/upstream/index.ts';
import { REQUESTER, syntheticObservation, withholdingConsents } from './data.ts';
import { fmt, machine, table } from './setup.ts';

export interface Case {
  readonly entries: number;
  readonly consents: number;
  readonly patients: number;
}

const policy = policySchema.parse({});
const labeler = labelerFromPolicy(policy.labeling);
const requester: Requester = { fhirUser: REQUESTER, references: [REQUESTER], identifiers: [], purposes: ['TREAT'], breakGlass: false, clientKind: 'user', action: 'access' };

function pageText(templates: readonly Observation[], c: Case): string {
  const entry = Array.from({ length: c.entries }, (_, i) => {
    const patient = `scale-p${i % c.patients}`;
    const resource: Resource = syntheticObservation(templates[i % templates.length], patient, i, c.consents > 0 ? 'withholding' : 'plain');
    return { fullUrl: `http://upstream.test/fhir/Observation/${resource.id}`, resource, search: { mode: 'match' as const } };
  });
  return JSON.stringify({ resourceType: 'Bundle', type: 'searchset', entry } satisfies Bundle);
}

function consentsFor(patient: string, count: number): Consent[] {
  if (count === 0) return [];
  return withholdingConsents(patient, Math.max(0, count - 4)).slice(0, count);
}

function timeIt(fn: () => void | Promise<void>, minMs = 400): Promise<number> {
  return (async () => {
    for (let i = 0; i < 3; i++) await fn(); // warm-up
    let runs = 0;
    const start = performance.now();
    while (performance.now() - start < minMs) {
      await fn();
      runs++;
    }
    return (performance.now() - start) / runs;
  })();
}

/**
 * V8 heap bytes allocated per call (garbage included): a GC-cost proxy that the machine's noise does not move.
 * Read at steady state: the figure falls by a quarter over the first ~1,000 calls as the code is optimised.
 */
export async function allocatedPerCall(fn: () => void | Promise<void>, n = 100): Promise<number> {
  const warmUntil = performance.now() + 1500;
  for (let i = 0; i < 1500 && performance.now() < warmUntil; i++) await fn();
  let least = Infinity;
  for (let window = 0; window < 3; window++) {
    const before = getHeapStatistics().total_allocated_bytes;
    for (let i = 0; i < n; i++) await fn();
    least = Math.min(least, (getHeapStatistics().total_allocated_bytes - before) / n);
  }
  return least;
}

/**
 * The response's own serialisation against a structured clone of it (flat strings, fresh objects), each the
 * first stringify of its graph, in alternating order. Near 1.0 when JSON.stringify keeps its fast path; a
 * string built by concatenation anywhere in the Bundle (src/fhir/flat.ts) would make the response 2–4× slower.
 */
async function serialiseRatio(once: () => Promise<Bundle>, rounds = 60): Promise<{ serialiseUs: number; ratio: number }> {
  let own = 0;
  let copy = 0;
  for (let i = 0; i < rounds; i++) {
    const bundle = await once();
    const clone = structuredClone(bundle);
    const order = i % 2 === 0 ? [bundle, clone] : [clone, bundle];
    const times = order.map((value) => {
      const start = performance.now();
      JSON.stringify(value);
      return performance.now() - start;
    });
    own += i % 2 === 0 ? times[0] : times[1];
    copy += i % 2 === 0 ? times[1] : times[0];
  }
  return { serialiseUs: (own * 1000) / rounds, ratio: copy / own };
}

/** One page of the case through the gateway's listing, as the scaling rows and `-- allocations` run it. */
export interface PageCase {
  /** Parse → decide every entry → shape: the Bundle the client would receive. */
  respond(): Promise<Bundle>;
  /** What is measured for the gateway: `respond`, then the reply's serialisation. */
  gateway(): Promise<void>;
  /** What is measured for the floor: the same page parsed and serialised. */
  floor(): void;
  /** Entries the last `respond` released. */
  released(): number;
}

export function pageCase(templates: readonly Observation[], c: Case): PageCase {
  const text = pageText(templates, c);
  const inputs = new Map<string, PatientPolicyInputs>();
  for (let p = 0; p < c.patients; p++) {
    const id = `scale-p${p}`;
    inputs.set(id, { patientId: id, consents: consentsFor(id, c.consents), flags: [], memberships: {}, identifiers: {}, careRelationships: [] });
  }
  const policies: PolicySource = { loadMany: async (ids) => new Map(ids.map((id) => [id, inputs.get(id) as PatientPolicyInputs])) };
  const upstream = {
    baseUrl: 'http://upstream.test/fhir',
    readJson: async () => ({ status: 200, resource: JSON.parse(text) as Bundle, headers: {} }),
    rewriteUpstreamUrl: () => null,
  } as unknown as UpstreamClient;
  const ctx = buildRequestContext({ client_id: 'bench', sub: 'bench-dr-a', fhirUser: REQUESTER, scope: 'user/Observation.rs' } as never, { requestId: 'scale' }, policy);
  const request: ListingRequest = {
    interaction: 'search-type', resourceType: 'Observation', upstream: 'Observation?patient=scale-p0', skip: 0, count: c.entries, offset: 0,
    includes: [], criteria: [['patient', 'scale-p0']], view: {}, history: false, access: 's', query: 'patient=scale-p0',
  };
  let released = 0;
  return {
    released: () => released,
    async respond() {
      const session = new DisclosureSession({ policies, policy, now: new Date('2025-06-15T12:00:00Z'), labeler }, ctx, requester);
      const result = await runListing(upstream, session, request, 'http://gateway.test/fhir', { requestId: 'scale' });
      released = result.entries.length;
      session.disclosures();
      return listingBundle('searchset', result, { self: 'http://gateway.test/fhir/Observation?patient=scale-p0' }, []);
    },
    async gateway() {
      JSON.stringify(await this.respond());
    },
    floor() {
      JSON.stringify(JSON.parse(text));
    },
  };
}

/** The Synthea Observations the synthetic pages are cloned from. */
export function scalingTemplates(): Observation[] {
  loadFhirDefinitions();
  return loadSyntheaBundles().flatMap((b) => (b.entry ?? []).flatMap((e) => (e.resource?.resourceType === 'Observation' ? [e.resource as Observation] : [])));
}

async function measure(
  templates: readonly Observation[],
  c: Case,
): Promise<{ gatewayMs: number; floorMs: number; gatewayKb: number; floorKb: number; released: number; serialiseUs: number; ratio: number }> {
  const page = pageCase(templates, c);
  const gatewayMs = await timeIt(() => page.gateway());
  const floorMs = await timeIt(() => page.floor());
  const gatewayKb = (await allocatedPerCall(() => page.gateway())) / 1024;
  const floorKb = (await allocatedPerCall(() => page.floor())) / 1024;
  return { gatewayMs, floorMs, gatewayKb, floorKb, released: page.released(), ...(await serialiseRatio(() => page.respond())) };
}

export async function run(): Promise<void> {
  const templates = scalingTemplates();
  const base: Case = { entries: 100, consents: 4, patients: 1 };
  const cases: Case[] = [
    { ...base, entries: 10 }, base, { ...base, entries: 1000 },
    { ...base, consents: 0 }, { ...base, consents: 1 }, { ...base, consents: 16 }, { ...base, consents: 64 },
    { ...base, patients: 10 }, { ...base, patients: 50 }, { ...base, patients: 100 },
  ];
  const rows: string[][] = [];
  for (const c of cases) {
    const m = await measure(templates, c);
    rows.push([String(c.entries), String(c.consents), String(c.patients), String(m.released), fmt.n(m.gatewayMs, 2), fmt.n((m.gatewayMs * 1000) / c.entries, 1), fmt.n(m.floorMs, 2), `${fmt.n(m.floorMs / m.gatewayMs, 2)}×`, fmt.n(m.gatewayKb), `${fmt.n(m.gatewayKb / m.floorKb, 2)}×`, fmt.n(m.serialiseUs), `${fmt.n(m.ratio, 2)}×`]);
  }
  console.log(`\nscaling (in-process, one core; ${machine()})\n`);
  console.log(table(['entries', 'consents/patient', 'patients/bundle', 'released', 'enforce ms/page', 'µs/entry', 'parse floor ms', 'vs floor', 'allocated KB/page', 'allocated vs floor', 'serialise µs', 'a fresh copy vs it'], rows));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await run();
