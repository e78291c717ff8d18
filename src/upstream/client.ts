// The only code that talks HTTP to the FHIR server (ARCHITECTURE). Fails closed: every way the
// upstream can misbehave becomes a typed UpstreamError with a 502/503/504 status (SPEC §5).
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import type { Readable } from 'node:stream';
import { Pool } from 'undici';
import { UpstreamError } from './errors.ts';
import type { PageLease } from './page-budget.ts';
import { originRequestTarget, parseUpstreamBase, rewriteUpstreamUrl, upstreamRequestTarget, type UpstreamBase } from './url.ts';
import { mediaTypeOf } from '../fhir/media-type.ts';

export const DEFAULT_UPSTREAM_TIMEOUT_MS = 15_000;
export const DEFAULT_UPSTREAM_MAX_BYTES = 50 * 1024 * 1024;

declare const undecided: unique symbol;
/** The upstream's parsed answer, opaque: no code may treat it as a resource, let alone reply with it, without `upstreamResource` (issue 17). */
export type UpstreamJson = { readonly [undecided]: true };

export interface UpstreamResponse {
  status: number;
  /** Lower-case names; repeated headers joined with ", ". Content-Encoding/Length removed once decoded. */
  headers: Record<string, string>;
  /** The decoded (decompressed) body. */
  body: Buffer;
  /** The parsed body when the content type is JSON and the body is not empty. */
  json?: UpstreamJson;
}

export interface UpstreamRequestOptions {
  method: string;
  /** Relative to the base (`Observation?patient=Patient/1`), or an absolute URL inside the base. */
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  requestId?: string;
  signal?: AbortSignal;
  /** Upstream 5xx → UpstreamError bad-status (502). Otherwise the response is returned as is. */
  strict?: boolean;
  /** A non-empty body that is not JSON → UpstreamError bad-content-type (502). */
  expectJson?: boolean;
  /** `path` may be an absolute URL anywhere on the upstream's origin, not only inside the base (Bulk Data, SPEC §5.1). */
  onOrigin?: boolean;
  /** The request's share of the page budget: a JSON body is parsed only once it is reserved there. */
  pageLease?: PageLease;
}

export interface UpstreamStream {
  status: number;
  headers: Record<string, string>;
  /** The decoded body as it arrives; it errors when the upstream fails mid-body. */
  body: Readable;
}

export interface SearchAllOptions {
  requestId?: string;
  /** Most pages read (default 20). */
  maxPages?: number;
  /** What to do past maxPages: 'error' (default, for data whose absence could release something) or 'truncate'. */
  onLimit?: 'error' | 'truncate';
}

export interface SearchAllResult {
  /** Resources of the entries whose search.mode is `match` (or absent), in page order. */
  resources: Resource[];
  pages: number;
  truncated: boolean;
}

export interface UpstreamClient {
  readonly baseUrl: string;
  request(opts: UpstreamRequestOptions): Promise<UpstreamResponse>;
  /** GET, parse, require a `resourceType`; 5xx, non-JSON or malformed JSON → UpstreamError. 4xx answers are returned. */
  readJson<T = Resource>(
    path: string,
    opts?: { requestId?: string; signal?: AbortSignal; pageLease?: PageLease },
  ): Promise<{ status: number; resource: T; headers: Record<string, string> }>;
  /** A search followed through its `next` links; a link leaving the base or a non-200 page → UpstreamError. */
  searchAll(path: string, opts?: SearchAllOptions): Promise<SearchAllResult>;
  /**
   * GET a body read as it arrives (Bulk Data files, SPEC §5.1): the deadline covers the headers, the pool's
   * body timeout every pause in the body. Transport failures before the headers → UpstreamError.
   */
  stream(path: string, opts?: { requestId?: string; onOrigin?: boolean; accept?: string }): Promise<UpstreamStream>;
  /** Absolute upstream URL → base-relative path, or null when it points anywhere else. */
  rewriteUpstreamUrl(url: string): string | null;
  close(): Promise<void>;
}

export interface UpstreamClientOptions {
  baseUrl: string;
  /** The gateway's own credential (UPSTREAM_BEARER_TOKEN); the client's token never goes upstream. */
  bearerToken?: string;
  timeoutMs?: number;
  maxBytes?: number;
  /** Keep-alive connections in the pool (default 16). */
  connections?: number;
}

// Hop-by-hop and credential headers a caller may never forward (SPEC §3: only the gateway's credential goes upstream).
const refusedRequestHeaders = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'host',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'accept-encoding',
  'upgrade',
  'te',
  'trailer',
  'x-request-id',
]);

const refusedCodes = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);
const timeoutCodes = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);

const gunzip = promisify(zlib.gunzip);
const inflate = promisify(zlib.inflate);
const inflateRaw = promisify(zlib.inflateRaw);
const brotliDecompress = promisify(zlib.brotliDecompress);

export function isJsonContentType(contentType: string | undefined): boolean {
  const mediaType = mediaTypeOf(contentType);
  return mediaType === 'application/json' || mediaType === 'application/fhir+json' || mediaType.endsWith('+json');
}

/**
 * The parsed answer as a FHIR resource to decide — undefined when it is not one. What this returns is a
 * plain Resource: it reaches a client only through DisclosureSession.decide.
 */
export function upstreamResource<T extends Resource = Resource>(response: Pick<UpstreamResponse, 'json'>): T | undefined {
  const value: unknown = response.json;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  return typeof (value as { resourceType?: unknown }).resourceType === 'string' ? (value as T) : undefined;
}

export function createUpstreamClient(opts: UpstreamClientOptions): UpstreamClient {
  const base = parseUpstreamBase(opts.baseUrl);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS;
  const maxBytes = opts.maxBytes ?? DEFAULT_UPSTREAM_MAX_BYTES;
  const pool = new Pool(base.origin, {
    connections: opts.connections ?? 16,
    keepAliveTimeout: 10_000,
    // Backstops; the per-request deadline below covers headers and body together.
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  });
  const authorization = opts.bearerToken ? `Bearer ${opts.bearerToken}` : undefined;

  async function request(req: UpstreamRequestOptions): Promise<UpstreamResponse> {
    const target = resolveTarget(base, req.path, req.onOrigin);
    const headers: Record<string, string> = { accept: 'application/fhir+json' };
    for (const [name, value] of Object.entries(req.headers ?? {})) {
      const lower = name.toLowerCase();
      if (!refusedRequestHeaders.has(lower)) headers[lower] = value;
    }
    headers['accept-encoding'] = 'gzip, deflate, br';
    if (authorization) headers.authorization = authorization;
    if (req.requestId) headers['x-request-id'] = req.requestId;
    if (req.body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/fhir+json';

    const deadline = new AbortController();
    // The error is made only when the deadline passes: building one captures a stack, on every request.
    const timer = setTimeout(() => deadline.abort(new UpstreamError('timeout', `upstream did not answer within ${timeoutMs} ms`)), timeoutMs);
    const signal = req.signal ? AbortSignal.any([req.signal, deadline.signal]) : deadline.signal;
    let status: number;
    let responseHeaders: Record<string, string>;
    let raw: Buffer;
    try {
      const res = await pool.request({ path: target, method: req.method.toUpperCase() as 'GET', headers, body: req.body, signal });
      status = res.statusCode;
      res.body.on('error', ignoreError); // destroy() below emits an error nobody else awaits
      responseHeaders = flattenHeaders(res.headers);
      const declared = Number(responseHeaders['content-length'] ?? 'NaN');
      if (Number.isFinite(declared) && declared > maxBytes) {
        res.body.destroy();
        throw new UpstreamError('too-large', `upstream body of ${declared} bytes exceeds ${maxBytes}`, { upstreamStatus: status });
      }
      const chunks: Buffer[] = [];
      let received = 0;
      for await (const chunk of res.body) {
        const buf = chunk as Buffer;
        received += buf.length;
        if (received > maxBytes) {
          // Stop reading and drop the connection rather than drain an oversized body.
          res.body.destroy();
          throw new UpstreamError('too-large', `upstream body exceeds ${maxBytes} bytes`, { upstreamStatus: status });
        }
        chunks.push(buf);
      }
      raw = Buffer.concat(chunks, received);
    } catch (err) {
      if (req.signal?.aborted && !deadline.signal.aborted) throw err; // the caller gave up: not an upstream failure
      throw classifyTransportError(err, deadline.signal.aborted);
    } finally {
      clearTimeout(timer);
    }

    const body = await decodeBody(raw, responseHeaders, maxBytes, status);
    const response: UpstreamResponse = { status, headers: responseHeaders, body };
    const json = isJsonContentType(responseHeaders['content-type']);
    if (req.expectJson && body.length > 0 && !json) {
      throw new UpstreamError('bad-content-type', `upstream answered ${mediaTypeOf(responseHeaders['content-type']) || 'no content type'}, not JSON`, { upstreamStatus: status });
    }
    if (json && body.length > 0) {
      await req.pageLease?.reserve(body.length);
      try {
        response.json = JSON.parse(body.toString('utf8')) as UpstreamJson;
      } catch (err) {
        throw new UpstreamError('bad-body', 'upstream body is not valid JSON', { upstreamStatus: status, cause: err });
      }
    }
    if (req.strict && status >= 500) {
      throw new UpstreamError('bad-status', `upstream answered ${status}`, { upstreamStatus: status });
    }
    return response;
  }

  async function readJson<T = Resource>(
    path: string,
    opts: { requestId?: string; signal?: AbortSignal; pageLease?: PageLease } = {},
  ): Promise<{ status: number; resource: T; headers: Record<string, string> }> {
    const res = await request({ method: 'GET', path, requestId: opts.requestId, signal: opts.signal, strict: true, expectJson: true, pageLease: opts.pageLease });
    const value: unknown = res.json;
    if (typeof value !== 'object' || value === null || Array.isArray(value) || typeof (value as { resourceType?: unknown }).resourceType !== 'string') {
      throw new UpstreamError('bad-body', 'upstream body is not a FHIR resource', { upstreamStatus: res.status });
    }
    return { status: res.status, resource: value as T, headers: res.headers };
  }

  async function searchAll(path: string, opts: SearchAllOptions = {}): Promise<SearchAllResult> {
    const maxPages = opts.maxPages ?? 20;
    const resources: Resource[] = [];
    const visited = new Set<string>();
    let next: string | undefined = path;
    let pages = 0;
    while (next !== undefined) {
      if (pages >= maxPages) {
        if (opts.onLimit === 'truncate') return { resources, pages, truncated: true };
        throw new UpstreamError('bad-body', `upstream search has more than ${maxPages} pages`);
      }
      visited.add(next);
      const { status, resource } = await readJson<Bundle>(next, { requestId: opts.requestId });
      pages++;
      if (status !== 200) throw new UpstreamError('bad-status', `upstream search answered ${status}`, { upstreamStatus: status });
      if (resource.resourceType !== 'Bundle' || (resource.type !== undefined && resource.type !== 'searchset')) {
        throw new UpstreamError('bad-body', 'upstream search did not answer a searchset Bundle', { upstreamStatus: status });
      }
      for (const entry of resource.entry ?? []) {
        const mode = entry.search?.mode;
        if (entry.resource && (mode === undefined || mode === 'match')) resources.push(entry.resource);
      }
      const link = resource.link?.find((l) => l.relation === 'next')?.url;
      if (link === undefined) break;
      const rewritten = rewriteUpstreamUrl(base, link);
      if (rewritten === null) throw new UpstreamError('bad-body', 'upstream next link points outside the upstream base');
      if (visited.has(rewritten)) throw new UpstreamError('bad-body', 'upstream next link loops');
      next = rewritten;
    }
    return { resources, pages, truncated: false };
  }

  async function stream(path: string, opts: { requestId?: string; onOrigin?: boolean; accept?: string } = {}): Promise<UpstreamStream> {
    const headers: Record<string, string> = { accept: opts.accept ?? 'application/fhir+ndjson', 'accept-encoding': 'gzip' };
    if (authorization) headers.authorization = authorization;
    if (opts.requestId) headers['x-request-id'] = opts.requestId;
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(new UpstreamError('timeout', `upstream did not answer within ${timeoutMs} ms`)), timeoutMs);
    try {
      const res = await pool.request({ path: resolveTarget(base, path, opts.onOrigin), method: 'GET', headers, signal: deadline.signal });
      clearTimeout(timer);
      const responseHeaders = flattenHeaders(res.headers);
      const encoding = (responseHeaders['content-encoding'] ?? 'identity').trim().toLowerCase();
      if (encoding !== 'identity' && encoding !== 'gzip') {
        res.body.destroy();
        throw new UpstreamError('bad-body', `unsupported content-encoding ${encoding}`, { upstreamStatus: res.statusCode });
      }
      // A deadline that passes later must not cut a long download: it only guarded the headers.
      const body: Readable = encoding === 'gzip' ? res.body.pipe(zlib.createGunzip()) : res.body;
      if (body !== res.body) res.body.on('error', (err) => body.destroy(err));
      delete responseHeaders['content-encoding'];
      delete responseHeaders['content-length'];
      return { status: res.statusCode, headers: responseHeaders, body };
    } catch (err) {
      throw classifyTransportError(err, deadline.signal.aborted);
    } finally {
      clearTimeout(timer);
    }
  }

  return {
    baseUrl: base.baseUrl,
    request,
    readJson,
    searchAll,
    stream,
    rewriteUpstreamUrl: (url: string) => rewriteUpstreamUrl(base, url),
    close: () => pool.close(),
  };
}

function ignoreError(): void {}

function resolveTarget(base: UpstreamBase, path: string, onOrigin = false): string {
  const absolute = /^[a-z][a-z0-9+.-]*:/i.test(path);
  if (absolute && onOrigin) {
    const target = originRequestTarget(base, path);
    if (target === null) throw new UpstreamError('bad-body', 'refusing an upstream URL on another origin');
    return target;
  }
  const relative = absolute ? rewriteUpstreamUrl(base, path) : path;
  const target = relative === null ? null : upstreamRequestTarget(base, relative);
  if (target === null) throw new UpstreamError('bad-body', 'refusing an upstream URL outside the upstream base');
  return target;
}

function flattenHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    flat[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return flat;
}

function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  const inner = (err as { errors?: unknown }).errors; // AggregateError from happy-eyeballs connects
  return Array.isArray(inner) && inner.length > 0 ? errorCode(inner[0]) : undefined;
}

// Refused/unresolvable → 503 (the upstream is unavailable, a retry may succeed); reset or any other
// transport failure → 502; any timeout → 504 (SPEC §5).
function classifyTransportError(err: unknown, deadlinePassed: boolean): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (deadlinePassed) return new UpstreamError('timeout', 'upstream timed out', { cause: err });
  const code = errorCode(err);
  if (code !== undefined && timeoutCodes.has(code)) return new UpstreamError('timeout', 'upstream timed out', { cause: err });
  if (code !== undefined && refusedCodes.has(code)) return new UpstreamError('unreachable', 'upstream refused the connection', { status: 503, cause: err });
  if (code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') return new UpstreamError('bad-body', 'upstream body is truncated', { cause: err });
  if (code === 'UND_ERR_HEADERS_OVERFLOW') return new UpstreamError('too-large', 'upstream headers are too large', { cause: err });
  return new UpstreamError('unreachable', 'upstream connection failed', { cause: err });
}

// Decompresses in the order the encodings were applied, in reverse; the limit counts decoded bytes,
// so a small compressed body cannot expand past maxBytes (gzip bomb).
async function decodeBody(raw: Buffer, headers: Record<string, string>, maxBytes: number, status: number): Promise<Buffer> {
  const encodings = (headers['content-encoding'] ?? '')
    .split(',')
    .map((e) => e.trim().toLowerCase())
    .filter((e) => e !== '' && e !== 'identity');
  if (encodings.length === 0 || raw.length === 0) return raw;
  let body = raw;
  const limits = { maxOutputLength: maxBytes };
  for (const encoding of encodings.reverse()) {
    try {
      if (encoding === 'gzip' || encoding === 'x-gzip') body = await gunzip(body, limits);
      else if (encoding === 'br') body = await brotliDecompress(body, limits);
      else if (encoding === 'deflate') body = await inflate(body, limits).catch((err: unknown) => (errorCode(err) === 'Z_DATA_ERROR' ? inflateRaw(body, limits) : Promise.reject(err)));
      else throw new UpstreamError('bad-body', `unsupported content-encoding ${encoding}`, { upstreamStatus: status });
    } catch (err) {
      if (err instanceof UpstreamError) throw err;
      if (errorCode(err) === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
        throw new UpstreamError('too-large', `decoded upstream body exceeds ${maxBytes} bytes`, { upstreamStatus: status, cause: err });
      }
      throw new UpstreamError('bad-body', 'upstream body could not be decoded', { upstreamStatus: status, cause: err });
    }
  }
  delete headers['content-encoding'];
  delete headers['content-length'];
  return body;
}
