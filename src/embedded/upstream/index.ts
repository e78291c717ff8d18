// The embedded upstream (SPEC §2): a real FHIR R4 server over HTTP built on @medplum/fhir-router's
// FhirRouter + MemoryRepository, for `npm start` without UPSTREAM_URL and for tests of the gateway.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { getStatus, isOk } from '@medplum/core';
import { FhirRouter } from '@medplum/fhir-router';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { createEmbeddedFhirHandler } from './http.ts';
import { EmbeddedRepository } from './repository.ts';

export { createEmbeddedFhirHandler, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './http.ts';
export type { EmbeddedFhirHandler, EmbeddedFhirHandlerOptions } from './http.ts';
export { EmbeddedRepository, patientCompartmentTypes } from './repository.ts';
export type { Change, PageOptions } from './repository.ts';
export { loadSyntheaBundles, syntheaBundleNames, SYNTHEA_DIR } from './synthea.ts';

export interface EmbeddedUpstream {
  /** FHIR base, e.g. `http://127.0.0.1:PORT/fhir`. */
  readonly url: string;
  readonly repo: EmbeddedRepository;
  close(): Promise<void>;
}

export interface EmbeddedUpstreamOptions {
  /** Default 0 (any free port). */
  readonly port?: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Stored with their ids (PUT semantics: created when absent, a new version when present). */
  readonly resources?: Resource[];
  /** Transaction (or batch) bundles, e.g. `loadSyntheaBundles()`, run in order after `resources`. */
  readonly bundles?: Bundle[];
}

/** Stores `resources` by id and runs `bundles` as transactions, in-process. */
export async function seedRepository(repo: EmbeddedRepository, resources: readonly Resource[] = [], bundles: readonly Bundle[] = []): Promise<void> {
  for (const resource of resources) {
    if (!resource.id) throw new Error(`Seed ${resource.resourceType} has no id`);
    await repo.updateResource(resource);
  }
  const router = new FhirRouter();
  for (const bundle of bundles) {
    const [outcome, result] = await router.handleRequest(
      { method: 'POST', url: '', pathname: '', body: bundle, params: {}, query: {}, config: { transactions: true } },
      repo,
    );
    if (!isOk(outcome)) {
      throw new Error(`Seed bundle failed (${getStatus(outcome)}): ${outcome.issue?.[0]?.details?.text ?? 'unknown error'}`);
    }
    const failed = (result as Bundle | undefined)?.entry?.find((e) => !e.response?.status?.startsWith('2'));
    if (failed) throw new Error(`Seed bundle entry failed with ${failed.response?.status}`);
  }
}

/** Starts the server; `url` is its FHIR base (`/fhir`). Seeds before listening. */
export async function startEmbeddedUpstream(opts: EmbeddedUpstreamOptions = {}): Promise<EmbeddedUpstream> {
  const repo = new EmbeddedRepository();
  await seedRepository(repo, opts.resources, opts.bundles);
  let url = '';
  const server = http.createServer(createEmbeddedFhirHandler(repo, { basePath: '/fhir', baseUrl: () => url }));
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/fhir`;
  return {
    url,
    repo,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
