// Batch and transaction (SPEC §5): every entry is parsed by the same router and handled by the same
// interaction handlers as a request of its own (same provenance, same session, same refusals) — an entry
// that reads in a write's clothing (`POST Type/_search`, `$graphql`, any operation) is a read or an
// operation there too. A transaction's writes are each planned (every check) before any is sent, then
// reach the upstream as one transaction; what it answers is decided before the client sees it.
import type { Binary, Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import { badRequest, forbidden, GatewayError, resourceBody } from '../fhir/outcome.ts';
import { confinedToLaunchPatient } from '../provenance/scopes.ts';
import { isUpstreamError, upstreamFailure, upstreamResource } from '../upstream/index.ts';
import { dispatch } from './dispatch.ts';
import type { Exchange, Reply } from './exchange.ts';
import { assembledBundle, gatewayAuthored, type ReleasableEntry } from './reply.ts';
import { parseFhirRoute, type FhirRoute } from './route.ts';
import { planWrite, writeReply, type PlannedWrite, type WriteKind } from './write.ts';

const maxEntries = 1000;
type WriteRoute = Extract<FhirRoute, { interaction: WriteKind }>;
const isWriteRoute = (route: FhirRoute): route is WriteRoute => ['create', 'update', 'patch', 'delete'].includes(route.interaction);

interface EntryRequest {
  readonly method: string;
  readonly route: FhirRoute;
  /** The entry as an exchange of its own: its query, its body, only its own conditional headers. */
  readonly exchange: Exchange;
}

function parseBundle(body: Buffer | undefined): Bundle {
  const bundle = resourceBody<Bundle>(body, 'Bundle', 'a batch or transaction Bundle');
  if (bundle.type !== 'batch' && bundle.type !== 'transaction') throw badRequest('the body must be a batch or transaction Bundle');
  if ((bundle.entry?.length ?? 0) > maxEntries) throw new GatewayError(413, 'too-costly', `a batch may hold at most ${maxEntries} entries`);
  return bundle;
}

/** A PATCH entry carries its JSON Patch as a Binary (FHIR R4 batch); anything else is sent as a resource. */
function entryBody(route: FhirRoute, resource: Resource | undefined): { body?: Buffer; contentType?: string } {
  if (!resource) return {};
  if (route.interaction === 'patch' && resource.resourceType === 'Binary') {
    const binary = resource as Binary;
    return { body: Buffer.from(binary.data ?? '', 'base64'), contentType: binary.contentType };
  }
  if ('viaPost' in route && route.viaPost) throw badRequest('a _search entry carries its parameters in its url');
  return { body: Buffer.from(JSON.stringify(resource)), contentType: 'application/fhir+json' };
}

function entryRequest(x: Exchange, entry: BundleEntry): EntryRequest {
  const method = entry.request?.method;
  const url = entry.request?.url;
  if (!method || !url) throw badRequest('every entry needs request.method and request.url');
  if (/^[a-z][a-z0-9+.-]*:/i.test(url)) throw badRequest('batch entry urls must be relative');
  const at = url.indexOf('?');
  const path = at === -1 ? url : url.slice(0, at);
  const rawQuery = at === -1 ? '' : url.slice(at + 1);
  const route = parseFhirRoute(method, path.startsWith('/') ? path : `/${path}`);
  if (route.interaction === 'batch') throw badRequest('a batch entry cannot itself be a batch');
  if (route.interaction === 'capabilities' || route.interaction === 'smart-configuration') throw forbidden();
  const { body, contentType } = entryBody(route, entry.resource);
  const viaPost = 'viaPost' in route && route.viaPost;
  const headers: Record<string, string | undefined> = {
    'content-type': viaPost ? 'application/x-www-form-urlencoded' : contentType,
    'if-match': entry.request?.ifMatch,
    'if-none-exist': entry.request?.ifNoneExist,
    'if-none-match': entry.request?.ifNoneMatch,
    'if-modified-since': entry.request?.ifModifiedSince,
  };
  for (const name of Object.keys(headers)) if (headers[name] === undefined) delete headers[name];
  return { method, route, exchange: { ...x, query: new URLSearchParams(rawQuery), rawQuery, headers, body } };
}

function replyEntry(reply: Reply): ReleasableEntry {
  const headers = reply.headers ?? {};
  return { resource: reply.body, response: { status: String(reply.status), etag: headers.ETag, location: headers.Location, lastModified: headers['Last-Modified'] } };
}

function failureEntry(err: unknown): ReleasableEntry {
  if (err instanceof GatewayError) return { response: { status: String(err.status), outcome: gatewayAuthored(err.outcome) } };
  if (isUpstreamError(err)) {
    const failure = upstreamFailure(err, { failed: 'the entry failed' });
    return { response: { status: String(failure.status), outcome: gatewayAuthored(failure.outcome) } };
  }
  throw err; // an unexpected failure fails the whole request closed
}

/** One entry, exactly as the same request on its own; a refusal becomes that entry's response. */
async function answerEntry(x: Exchange, entry: BundleEntry): Promise<ReleasableEntry> {
  try {
    const { method, route, exchange } = entryRequest(x, entry);
    return replyEntry(await dispatch(exchange, route, method));
  } catch (err) {
    return failureEntry(err);
  }
}

/** Sends planned writes upstream as one transaction and decides what it stored. */
async function sendTransaction(x: Exchange, writes: readonly { entry: BundleEntry; request: EntryRequest; plan: PlannedWrite }[]): Promise<ReleasableEntry[]> {
  if (writes.length === 0) return [];
  const upstreamBundle: Bundle = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: writes.map(({ entry, plan }) => ({
      fullUrl: entry.fullUrl,
      resource: plan.resource,
      request: { method: plan.method as 'POST', url: plan.url, ifMatch: plan.ifMatch, ifNoneExist: plan.ifNoneExist },
    })),
  };
  const response = await x.deps.upstream.request({ method: 'POST', path: '', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(upstreamBundle), requestId: x.ctx.requestId, strict: true, expectJson: true, pageLease: x.pageLease });
  if (response.status >= 400) {
    for (const { plan } of writes) for (const r of [plan.previous, plan.resource]) if (r?.id) x.deps.store.invalidateResource(r);
    throw upstreamFailure(response.status, { failed: 'the upstream server failed the transaction', refused: 'the upstream server refused the transaction' }, { kept: [409, 412], otherwise: 400 });
  }
  const answered = upstreamResource<Bundle>(response)?.entry ?? [];
  const results: ReleasableEntry[] = [];
  for (const [i, { request, plan }] of writes.entries()) {
    const status = Number.parseInt(answered[i]?.response?.status ?? '200', 10) || 200;
    results.push(replyEntry(await writeReply(request.exchange, plan, status, answered[i]?.resource)));
  }
  return results;
}

/** All of a transaction's writes pass every check or none is sent; its reads are answered after them. */
async function transaction(x: Exchange, entries: readonly BundleEntry[]): Promise<ReleasableEntry[]> {
  // A patient-confined token cannot hold a transaction to its compartment entry by entry: refused whole.
  if (confinedToLaunchPatient(x.ctx)) throw forbidden();
  const requests = entries.map((entry) => ({ entry, request: entryRequest(x, entry) }));
  const writes: { entry: BundleEntry; request: EntryRequest; plan: PlannedWrite; index: number }[] = [];
  for (const [index, { entry, request }] of requests.entries()) {
    const { route, exchange } = request;
    if (!isWriteRoute(route)) continue;
    const plan = await planWrite(exchange, route.interaction, route.resourceType, 'id' in route ? route.id : undefined, exchange.body);
    writes.push({ entry, request, plan, index });
  }
  const results: ReleasableEntry[] = new Array(entries.length);
  const written = await sendTransaction(x, writes);
  writes.forEach(({ index }, k) => (results[index] = written[k]));
  for (const [index, { entry }] of requests.entries()) if (!results[index]) results[index] = await answerEntry(x, entry);
  return results;
}

export async function batch(x: Exchange): Promise<Reply> {
  const bundle = parseBundle(x.body);
  const entries = bundle.entry ?? [];
  let results: ReleasableEntry[];
  if (bundle.type === 'transaction') {
    results = await transaction(x, entries);
  } else {
    results = [];
    for (const entry of entries) results.push(await answerEntry(x, entry));
  }
  return { status: 200, body: assembledBundle({ resourceType: 'Bundle', type: bundle.type === 'transaction' ? 'transaction-response' : 'batch-response' }, results) };
}
