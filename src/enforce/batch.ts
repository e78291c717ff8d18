// Batch and transaction (SPEC §5): each GET entry goes through the same read/search path as a request of
// its own (same provenance, same session), write entries are checked against the scopes. A transaction's
// writes reach the upstream as one transaction; its reads are answered after them.
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import { patientsOf } from '../fhir/compartment.ts';
import { confinedToLaunchPatient, resourceMatchesScopes } from '../provenance/scopes.ts';
import { badRequest, forbidden, GatewayError, operationOutcome, resourceBody } from '../fhir/outcome.ts';
import type { Exchange, Reply } from './exchange.ts';
import { everything, history, page, read, requireScope, search } from './interactions.ts';
import { parseFhirRoute } from './route.ts';
import { write, type WriteKind } from './write.ts';

const maxEntries = 1000;

function parseBundle(body: Buffer | undefined): Bundle {
  const bundle = resourceBody<Bundle>(body, 'Bundle', 'a batch or transaction Bundle');
  if (bundle.type !== 'batch' && bundle.type !== 'transaction') throw badRequest('the body must be a batch or transaction Bundle');
  if ((bundle.entry?.length ?? 0) > maxEntries) throw new GatewayError(413, 'too-costly', `a batch may hold at most ${maxEntries} entries`);
  return bundle;
}

function splitUrl(url: string | undefined): { path: string; query: string } {
  if (!url || /^[a-z]+:/i.test(url)) throw badRequest('batch entry urls must be relative');
  const [path, query = ''] = url.replace(/^\/+/, '').split('?', 2);
  return { path, query };
}

function failureEntry(err: unknown): BundleEntry {
  if (err instanceof GatewayError) return { response: { status: String(err.status), outcome: err.outcome } };
  const status = (err as { status?: number }).status;
  if (typeof status === 'number' && status >= 400) return { response: { status: String(status), outcome: operationOutcome('exception', 'the entry failed') } };
  throw err; // an unexpected failure fails the whole request closed
}

async function readEntry(x: Exchange, entry: BundleEntry): Promise<BundleEntry> {
  try {
    const { path, query } = splitUrl(entry.request?.url);
    const params = new URLSearchParams(query);
    const sub: Exchange = { ...x, query: params, rawQuery: query };
    const route = parseFhirRoute('GET', `/${path}`);
    let reply: Reply;
    switch (route.interaction) {
      case 'read':
        reply = await read(sub, route.resourceType, route.id);
        break;
      case 'vread':
        reply = await read(sub, route.resourceType, route.id, route.versionId);
        break;
      case 'search-type':
      case 'search-system':
        reply = await search(sub, { resourceType: route.interaction === 'search-type' ? route.resourceType : undefined, interaction: route.interaction }, params);
        break;
      case 'search-compartment':
        reply = await search(sub, { resourceType: route.resourceType, compartmentId: route.compartmentId, interaction: route.interaction }, params);
        break;
      case 'history-instance':
      case 'history-type':
      case 'history-system':
        reply = await history(sub, { resourceType: 'resourceType' in route ? route.resourceType : undefined, id: 'id' in route ? route.id : undefined }, params);
        break;
      case 'page':
        reply = await page(sub, params.get('cursor') ?? '');
        break;
      case 'operation':
        if (route.name === '$everything' && route.resourceType === 'Patient' && route.id) {
          reply = await everything(sub, route.id, params);
          break;
        }
        throw forbidden();
      default:
        throw forbidden();
    }
    return { resource: reply.body, response: { status: String(reply.status), etag: reply.headers?.ETag } };
  } catch (err) {
    return failureEntry(err);
  }
}

function writeKind(method: string | undefined): WriteKind {
  switch (method) {
    case 'POST':
      return 'create';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return 'delete';
    default:
      throw badRequest('unsupported batch entry method');
  }
}

async function writeEntry(x: Exchange, entry: BundleEntry): Promise<BundleEntry> {
  try {
    const kind = writeKind(entry.request?.method);
    const { path, query } = splitUrl(entry.request?.url);
    const [resourceType, id, ...rest] = path.split('/');
    if (rest.length > 0) throw badRequest('invalid batch entry url');
    const headers = { ...x.headers, 'if-none-exist': entry.request?.ifNoneExist, 'if-match': entry.request?.ifMatch };
    const sub: Exchange = { ...x, rawQuery: query, query: new URLSearchParams(query), headers };
    const body = entry.resource ? Buffer.from(JSON.stringify(entry.resource)) : undefined;
    const reply = await write(sub, kind, resourceType, id, body);
    return { resource: reply.body, response: { status: String(reply.status), location: reply.headers?.Location, etag: reply.headers?.ETag } };
  } catch (err) {
    return failureEntry(err);
  }
}

/** Transaction writes go upstream as one transaction, after every entry passed the scope checks. */
async function transactionWrites(x: Exchange, entries: BundleEntry[]): Promise<BundleEntry[]> {
  if (entries.length === 0) return [];
  for (const entry of entries) {
    const kind = writeKind(entry.request?.method);
    const { path } = splitUrl(entry.request?.url);
    const resourceType = path.split('/')[0];
    const scope = ({ create: 'c', update: 'u', patch: 'u', delete: 'd' } as const)[kind];
    requireScope(x, resourceType, scope);
    if (entry.resource && !resourceMatchesScopes(x.ctx, entry.resource, scope)) throw forbidden();
    // A patch is checked against what the requester may see of the stored resource (write.ts); inside a
    // transaction it would reach the upstream unchecked, so it is refused there.
    if (kind === 'patch') throw new GatewayError(400, 'not-supported', 'PATCH is not supported inside a transaction; send it on its own or in a batch');
    const conditional = entry.request?.ifNoneExist !== undefined || (kind !== 'create' && !path.includes('/'));
    if (conditional && !x.ctx.kinds.has('system')) throw forbidden();
    if (confinedToLaunchPatient(x.ctx)) throw forbidden();
  }
  const upstreamBundle: Bundle = { resourceType: 'Bundle', type: 'transaction', entry: entries.map((e) => ({ fullUrl: e.fullUrl, resource: e.resource, request: e.request })) };
  const response = await x.deps.upstream.request({
    method: 'POST',
    path: '',
    headers: { 'content-type': 'application/fhir+json' },
    body: JSON.stringify(upstreamBundle),
    requestId: x.ctx.requestId,
    strict: true,
    expectJson: true,
  });
  if (response.status >= 400) throw new GatewayError(response.status === 409 ? 409 : 400, 'processing', 'the upstream server refused the transaction');
  const answered = (response.json as Bundle | undefined)?.entry ?? [];
  for (const e of answered) {
    const r = e.resource as Resource | undefined;
    if (r) for (const p of patientsOf(r)) x.deps.store.invalidate(p);
  }
  return entries.map((_, i) => ({ resource: answered[i]?.resource, response: { status: answered[i]?.response?.status ?? '200', etag: answered[i]?.response?.etag } }));
}

export async function batch(x: Exchange): Promise<Reply> {
  const bundle = parseBundle(x.body);
  const entries = bundle.entry ?? [];
  const isRead = (e: BundleEntry) => e.request?.method === 'GET' || e.request?.method === 'HEAD';
  const results: BundleEntry[] = new Array(entries.length);
  if (bundle.type === 'transaction') {
    const writes = entries.map((e, i) => ({ e, i })).filter(({ e }) => !isRead(e));
    const written = await transactionWrites(x, writes.map(({ e }) => e));
    writes.forEach(({ i }, k) => (results[i] = written[k]));
    for (let i = 0; i < entries.length; i++) if (isRead(entries[i])) results[i] = await readEntry(x, entries[i]);
  } else {
    for (let i = 0; i < entries.length; i++) results[i] = isRead(entries[i]) ? await readEntry(x, entries[i]) : await writeEntry(x, entries[i]);
  }
  return { status: 200, body: { resourceType: 'Bundle', type: bundle.type === 'transaction' ? 'transaction-response' : 'batch-response', entry: results } };
}
