// node:http adapter in front of @medplum/fhir-router's FhirRouter: JSON only, paging links and fullUrls,
// ETag/Last-Modified/Location, OperationOutcome errors, gzip, plus the routes the router lacks
// (metadata, type/system history, Patient compartment search, $everything).
import type http from 'node:http';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import {
  allOk,
  badRequest,
  getStatus,
  normalizeOperationOutcome,
  OperationOutcomeError,
  parseSearchRequest,
} from '@medplum/core';
import { FhirRouter, type FhirRequest, type FhirResponse, type HttpMethod } from '@medplum/fhir-router';
import type { Bundle, BundleLink, OperationOutcome, Resource } from '@medplum/fhirtypes';
import { capabilityStatement } from './capability.ts';
import { bulkExportRoutes } from './bulk-export.ts';
import type { EmbeddedRepository, PageOptions } from './repository.ts';
import { mediaTypeOf } from '../../fhir/media-type.ts';

/** Page size when a search or history request names no `_count`. */
export const DEFAULT_PAGE_SIZE = 20;
/** Largest page served; larger `_count` values are lowered to this (the `self` link says so). */
export const MAX_PAGE_SIZE = 1000;
const MAX_BODY_BYTES = 64 * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

const gzip = promisify(zlib.gzip);

export interface EmbeddedFhirHandlerOptions {
  /** Path prefix of the FHIR base on this server; default `/fhir`. */
  readonly basePath?: string;
  /** Absolute FHIR base used in links, fullUrl and Location; default `http://<Host header><basePath>`. */
  readonly baseUrl?: string | (() => string);
}

export type EmbeddedFhirHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** Outcome ids this adapter raises that @medplum/core's getStatus does not know. */
const adapterStatuses: Record<string, number> = { 'unsupported-media': 415, 'too-large': 413 };
const pagedInteractions = new Set(['search-type', 'search-system', 'history-instance', 'history-type', 'history-system']);
const versionedInteractions = new Set(['read', 'vread', 'create', 'update', 'patch']);

function fail(outcome: OperationOutcome): never {
  throw new OperationOutcomeError(outcome);
}

function outcomeWith(status: 'not-supported' | 'too-costly' | 'invalid', text: string, id?: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', ...(id ? { id } : {}), issue: [{ severity: 'error', code: status, details: { text } }] };
}

function integerParam(query: URLSearchParams, name: string): number | undefined {
  const raw = query.get(name);
  if (raw === null) return undefined;
  if (!/^\d+$/.test(raw)) fail(badRequest(`${name} must be a non-negative integer`));
  return Number(raw);
}

function pageOptions(query: Record<string, string | string[] | undefined>): PageOptions {
  const one = (name: string): string | undefined => {
    const v = query[name];
    return Array.isArray(v) ? v[v.length - 1] : v;
  };
  const since = one('_since');
  let sinceIso: string | undefined;
  if (since !== undefined) {
    const time = Date.parse(since);
    if (Number.isNaN(time)) fail(badRequest(`_since must be an instant: '${since}'`));
    sinceIso = new Date(time).toISOString();
  }
  const count = one('_count');
  const offset = one('_offset');
  return {
    count: count === undefined ? undefined : Number(count),
    offset: offset === undefined ? undefined : Number(offset),
    since: sinceIso,
  };
}

/** Registers the routes FhirRouter 5.2.13 still lacks (test/embedded/medplum5-gaps.test.ts); they read the repository given here. */
function buildRouter(repo: EmbeddedRepository): FhirRouter {
  const router = new FhirRouter();
  router.add('GET', 'metadata', async (): Promise<FhirResponse> => [allOk, capabilityStatement('')], 'operation');
  router.add('GET', '_history', async (req): Promise<FhirResponse> => [allOk, repo.systemHistory(pageOptions(req.query))], 'history-system');
  router.add(
    'GET',
    ':resourceType/_history',
    async (req): Promise<FhirResponse> => [allOk, repo.typeHistory(req.params.resourceType, pageOptions(req.query))],
    'history-type',
  );
  router.add(
    'GET',
    'Patient/:id/$everything',
    async (req): Promise<FhirResponse> => [allOk, await repo.everything(req.params.id, pageOptions(req.query))],
    'operation',
  );
  router.add(
    'GET',
    'Patient/:id/:compartmentType',
    async (req): Promise<FhirResponse> => {
      const request = parseSearchRequest(req.params.compartmentType as Resource['resourceType'], req.query);
      return [allOk, await repo.searchIn(request, req.params.id)];
    },
    'search-type',
  );
  return router;
}

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) fail(outcomeWith('too-costly', 'Request body too large', 'too-large'));
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function acceptsJson(accept: string | undefined): boolean {
  if (!accept) return true;
  return accept.split(',').some((part) => {
    const type = mediaTypeOf(part);
    return type === '*/*' || type === 'application/*' || type.endsWith('json');
  });
}

function acceptsGzip(header: string | string[] | undefined): boolean {
  const value = Array.isArray(header) ? header.join(',') : (header ?? '');
  return value.split(',').some((part) => {
    const [coding, ...params] = part.trim().toLowerCase().split(';');
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    return (coding === 'gzip' || coding === '*') && (!q || Number(q.slice(2)) > 0);
  });
}

function decodeSegments(path: string): string {
  try {
    return path
      .split('/')
      .filter(Boolean)
      .map((s) => decodeURIComponent(s))
      .join('/');
  } catch {
    return fail(badRequest('Malformed URL path'));
  }
}

function addLinks(bundle: Bundle, baseUrl: string, path: string, query: URLSearchParams): void {
  const url = (params: URLSearchParams): string => `${baseUrl}/${path}${params.size ? `?${params.toString()}` : ''}`;
  const count = query.get('_summary') === 'count' ? 0 : Number(query.get('_count') ?? DEFAULT_PAGE_SIZE);
  const offset = Number(query.get('_offset') ?? 0);
  const total = bundle.total ?? 0;
  const at = (newOffset: number): string => {
    const params = new URLSearchParams(query);
    params.set('_offset', String(newOffset));
    return url(params);
  };
  const link: BundleLink[] = [{ relation: 'self', url: url(query) }];
  if (count > 0) {
    link.push({ relation: 'first', url: at(0) });
    if (offset + count < total) link.push({ relation: 'next', url: at(offset + count) });
    if (offset > 0) link.push({ relation: 'previous', url: at(Math.max(0, offset - count)) });
    link.push({ relation: 'last', url: at(Math.max(0, Math.floor((total - 1) / count) * count)) });
  }
  bundle.link = link;
}

function addFullUrls(bundle: Bundle, baseUrl: string): void {
  for (const entry of bundle.entry ?? []) {
    if (entry.fullUrl) continue;
    if (entry.resource?.id) entry.fullUrl = `${baseUrl}/${entry.resource.resourceType}/${entry.resource.id}`;
    else if (entry.request?.method === 'DELETE' && entry.request.url) entry.fullUrl = `${baseUrl}/${entry.request.url}`;
  }
}

/**
 * A node:http request listener serving FHIR R4 JSON under `basePath` (default `/fhir`) from `repo`
 * through a FhirRouter. Transactions run as transactions (`config.transactions`).
 */
export function createEmbeddedFhirHandler(repo: EmbeddedRepository, options: EmbeddedFhirHandlerOptions = {}): EmbeddedFhirHandler {
  const basePath = (options.basePath ?? '/fhir').replace(/\/+$/, '');
  const router = buildRouter(repo);
  const bulkExport = bulkExportRoutes(repo);

  /** `$export` kick-off, status and files are served outside FhirRouter (SPEC §5.1). */
  function servedAsBulkExport(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const url = new URL(req.url ?? '/', 'http://embedded.invalid');
    if (!url.pathname.startsWith(`${basePath}/`) || !url.pathname.includes('$export')) return false;
    const configured = typeof options.baseUrl === 'function' ? options.baseUrl() : options.baseUrl;
    const baseUrl = (configured ?? `http://${req.headers.host ?? '127.0.0.1'}${basePath}`).replace(/\/+$/, '');
    return bulkExport.handle(req, res, baseUrl, url.pathname.slice(basePath.length + 1), url.searchParams);
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const gzipOk = acceptsGzip(req.headers['accept-encoding']);
    let status: number;
    let body: Resource;
    const headers: Record<string, string> = {};
    try {
      const url = new URL(req.url ?? '/', 'http://embedded.invalid');
      const configured = typeof options.baseUrl === 'function' ? options.baseUrl() : options.baseUrl;
      const baseUrl = (configured ?? `http://${req.headers.host ?? '127.0.0.1'}${basePath}`).replace(/\/+$/, '');
      if (url.pathname !== basePath && !url.pathname.startsWith(`${basePath}/`)) fail(outcomeWith('not-supported', 'Not a FHIR path', 'not-found'));
      let path = decodeSegments(url.pathname.slice(basePath.length));
      const query = new URLSearchParams(url.search);
      const format = query.get('_format');
      if (!acceptsJson(req.headers.accept) || (format && !format.toLowerCase().includes('json'))) {
        res.writeHead(406, { 'content-type': FHIR_JSON });
        res.end(JSON.stringify(outcomeWith('not-supported', 'Only application/fhir+json is served')));
        return;
      }
      const raw = await readBody(req);
      const contentType = mediaTypeOf(req.headers['content-type']);
      let httpMethod = method as HttpMethod;
      let parsed: unknown;
      if (method === 'POST' && path.endsWith('/_search') && (contentType === 'application/x-www-form-urlencoded' || raw.length === 0)) {
        // POST search is GET search with the parameters in the body (R4 http §3.1.0.8.1).
        for (const [k, v] of new URLSearchParams(raw.toString('utf8'))) query.append(k, v);
        path = path.slice(0, -'/_search'.length);
        httpMethod = 'GET';
      } else if (raw.length > 0) {
        if (contentType && !contentType.endsWith('json')) {
          fail(outcomeWith('not-supported', `Unsupported content type '${contentType}'; send application/fhir+json`, 'unsupported-media'));
        }
        try {
          parsed = JSON.parse(raw.toString('utf8'));
        } catch {
          fail(badRequest('Request body is not valid JSON'));
        }
      }
      const route = router.find(httpMethod, path);
      const interaction = route?.data?.interaction ?? '';
      const paged = httpMethod === 'GET' && (pagedInteractions.has(interaction) || path.endsWith('/$everything'));
      if (paged) {
        const count = integerParam(query, '_count');
        integerParam(query, '_offset');
        if (query.get('_summary') !== 'count') query.set('_count', String(Math.min(count ?? DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)));
      }
      const search = query.size ? `?${query.toString()}` : '';
      const fhirRequest: FhirRequest = {
        method: httpMethod,
        url: path + search,
        pathname: '',
        body: parsed,
        params: {},
        query: {},
        headers: req.headers,
        config: { transactions: true },
      };
      const [outcome, resource] = await router.handleRequest(fhirRequest, repo);
      status = getStatus(outcome);
      body = resource ?? outcome;
      if (resource?.resourceType === 'Bundle') {
        addFullUrls(resource, baseUrl);
        if (paged) addLinks(resource, baseUrl, path, query);
      } else if (resource?.resourceType === 'CapabilityStatement') {
        resource.implementation = { ...resource.implementation, description: resource.implementation?.description ?? '', url: baseUrl };
      }
      if (resource && resource.resourceType !== 'Bundle' && resource.id && versionedInteractions.has(interaction)) {
        const { versionId, lastUpdated } = resource.meta ?? {};
        // FhirRouter answers 200 to an update that created the resource; R4 http §3.1.0.4 wants 201.
        if (interaction === 'update' && status === 200 && versionId && repo.changeOf(resource.resourceType, resource.id, versionId)?.status === '201 Created') {
          status = 201;
        }
        if (versionId) headers.etag = `W/"${versionId}"`;
        if (lastUpdated) headers['last-modified'] = new Date(lastUpdated).toUTCString();
        if (status === 201 && versionId) headers.location = `${baseUrl}/${resource.resourceType}/${resource.id}/_history/${versionId}`;
      }
    } catch (err) {
      const outcome = err instanceof OperationOutcomeError ? err.outcome : normalizeOperationOutcome(err);
      const adapterStatus = outcome.id ? adapterStatuses[outcome.id] : undefined;
      status = adapterStatus ?? getStatus(outcome);
      body = adapterStatus ? { ...outcome, id: undefined } : outcome;
    }
    const json = Buffer.from(JSON.stringify(body), 'utf8');
    headers['content-type'] = FHIR_JSON;
    headers.vary = 'Accept-Encoding';
    if (gzipOk) {
      const compressed = await gzip(json);
      headers['content-encoding'] = 'gzip';
      headers['content-length'] = String(compressed.length);
      res.writeHead(status, headers);
      res.end(compressed);
    } else {
      headers['content-length'] = String(json.length);
      res.writeHead(status, headers);
      res.end(json);
    }
  }

  return (req, res) => {
    if (servedAsBulkExport(req, res)) return;
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': FHIR_JSON });
      res.end(JSON.stringify(outcomeWith('not-supported', 'Internal error')));
    });
  };
}
