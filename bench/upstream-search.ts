// Embedded-upstream search timing over 20k Observations / 10 patients (NOTES: the shipped
// MemoryRepository scan took ~12 s for one `patient=` search). Prints timings; asserts nothing.
import { pathToFileURL } from 'node:url';
import { parseSearchRequest } from '@medplum/core';
import { MemoryRepository } from '@medplum/fhir-router';
import type { Resource } from '@medplum/fhirtypes';
import { EmbeddedRepository, seedRepository, startEmbeddedUpstream } from '../src/embedded/upstream/index.ts';
import { loadFhirDefinitions } from '../src/fhir/definitions.ts';
import { syntheticObservations, toResources } from '../test/embedded/upstream-synthetic.ts';

const OBSERVATIONS = 20_000;
const PATIENTS = 10;
const SHIPPED_SAMPLE = 2_000;

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const result = await fn();
  return [result, performance.now() - start];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

export async function run(): Promise<void> {
  loadFhirDefinitions();
  const resources = toResources(syntheticObservations(OBSERVATIONS, PATIENTS), PATIENTS);

  // The shipped MemoryRepository on a tenth of the data, for comparison (it scales linearly);
  // run first, before this room narrows the global search-parameter expressions.
  const shipped = new MemoryRepository();
  for (const resource of resources.slice(0, SHIPPED_SAMPLE + PATIENTS) as Resource[]) await shipped.updateResource(resource);
  const [, shippedMs] = await timed(() => shipped.search(parseSearchRequest('Observation', { patient: 'Patient/p0', _count: '20' })));
  console.log(`shipped MemoryRepository patient= search over ${SHIPPED_SAMPLE}: ${shippedMs.toFixed(0)} ms`);

  const repo = new EmbeddedRepository();
  const [, loadMs] = await timed(() => seedRepository(repo, resources));
  console.log(`load ${resources.length} resources in-process: ${loadMs.toFixed(0)} ms`);

  const request = (p: number): ReturnType<typeof parseSearchRequest> => parseSearchRequest('Observation', { patient: `p${p}`, _count: '20' });
  const [, firstMs] = await timed(() => repo.search(request(0)));
  console.log(`first patient= search (builds the reference index): ${firstMs.toFixed(1)} ms`);
  const warm: number[] = [];
  for (let i = 0; i < 50; i++) warm.push((await timed(() => repo.search(request(i % PATIENTS))))[1]);
  console.log(`patient= search, page of 20 of ${OBSERVATIONS / PATIENTS}: median ${median(warm).toFixed(2)} ms (in-process)`);
  const codeOnly = parseSearchRequest('Observation', { code: '8867-4', _count: '20' });
  console.log(`code= search, full scan of ${OBSERVATIONS}: ${(await timed(() => repo.search(codeOnly)))[1].toFixed(0)} ms`);

  const up = await startEmbeddedUpstream({ resources });
  try {
    await fetch(`${up.url}/Observation?patient=p0&_count=1`).then((r) => r.arrayBuffer());
    const http: number[] = [];
    for (let i = 0; i < 50; i++) {
      const [, ms] = await timed(() => fetch(`${up.url}/Observation?patient=p${i % PATIENTS}&_count=20`).then((r) => r.arrayBuffer()));
      http.push(ms);
    }
    console.log(`patient= search over HTTP, page of 20: median ${median(http).toFixed(2)} ms`);
  } finally {
    await up.close();
  }

}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await run();
}
