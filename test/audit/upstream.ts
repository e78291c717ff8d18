// A real FHIR R4 server for the forwarder tests: @medplum/fhir-router's FhirRouter + MemoryRepository
// behind node:http on 127.0.0.1:0, with a switch that makes it answer 503 for a while.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { getStatus } from '@medplum/core';
import { FhirRouter, MemoryRepository, type FhirRequest, type HttpMethod } from '@medplum/fhir-router';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../../src/fhir/definitions.ts';

export interface AuditUpstream {
  readonly baseUrl: string;
  readonly repo: MemoryRepository;
  /** Answer every request with 503 while true. */
  failing: boolean;
  /** Batch requests received (including failed ones). */
  batches: number;
  /** POSTs a batch Bundle (its JSON text, as the forwarder makes it) to the server, as the gateway's upstream client would. */
  postBatch(batch: Buffer): Promise<Bundle>;
  auditEvents(): Promise<AuditEvent[]>;
  /** How many versions the upstream holds of an AuditEvent (1 = written once). */
  versions(id: string): Promise<number>;
  close(): Promise<void>;
}

export async function startAuditUpstream(): Promise<AuditUpstream> {
  loadFhirDefinitions();
  const repo = new MemoryRepository();
  const router = new FhirRouter();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => void answer(req, Buffer.concat(chunks), res));
  });
  const upstream: AuditUpstream = {
    baseUrl: '',
    repo,
    failing: false,
    batches: 0,
    async postBatch(batch) {
      const response = await fetch(upstream.baseUrl, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: new Uint8Array(batch) });
      if (!response.ok) throw new Error(`upstream answered ${response.status}`);
      return (await response.json()) as Bundle;
    },
    auditEvents: () => repo.searchResources<AuditEvent>({ resourceType: 'AuditEvent', count: 100_000 }),
    async versions(id) {
      return (await repo.readHistory('AuditEvent', id)).entry?.length ?? 0;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };

  async function answer(req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const relative = url.pathname.replace(/^\/fhir\/?/, '');
    if (req.method === 'POST' && relative === '') upstream.batches += 1;
    if (upstream.failing) {
      res.writeHead(503, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient' }] }));
      return;
    }
    const request: FhirRequest = {
      method: (req.method ?? 'GET') as HttpMethod,
      url: relative + url.search,
      pathname: '',
      body: body.length > 0 ? (JSON.parse(body.toString('utf8')) as unknown) : undefined,
      params: {},
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
    };
    try {
      const [outcome, resource] = await router.handleRequest(request, repo);
      res.writeHead(getStatus(outcome), { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify(resource ?? outcome));
    } catch {
      res.writeHead(500, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception' }] }));
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  (upstream as { baseUrl: string }).baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
  return upstream;
}

/** Waits (without a deadline of its own: the test runner's timeout bounds it) until `condition` holds. */
export async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((r) => setTimeout(r, 10));
}
