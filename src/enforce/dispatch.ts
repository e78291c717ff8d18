// One route → one interaction handler. The top-level request and every batch or transaction entry come
// through here, so an entry meets exactly the refusals and decisions the same request would on its own
// (SPEC §5 batch/transaction).
import { GatewayError } from '../fhir/outcome.ts';
import { batch } from './batch.ts';
import type { Exchange, Reply } from './exchange.ts';
import { exportFile, exportStatus } from './export.ts';
import { history, page, read, search } from './interactions.ts';
import { operation } from './operations.ts';
import type { FhirRoute } from './route.ts';
import { write } from './write.ts';
import { mediaTypeOf } from '../fhir/media-type.ts';

/** A form-encoded body's parameters (`POST _search`); undefined when the body is not form-encoded. */
export function formParams(headers: Exchange['headers'], body: Buffer | undefined): URLSearchParams | undefined {
  const type = mediaTypeOf(headers['content-type']);
  return type === 'application/x-www-form-urlencoded' ? new URLSearchParams(body?.toString('utf8') ?? '') : undefined;
}

/** URL query plus, for POST _search, the form body (FHIR search via POST). */
function searchParams(x: Exchange, route: FhirRoute): URLSearchParams {
  const params = new URLSearchParams(x.query);
  if ('viaPost' in route && route.viaPost) {
    const form = formParams(x.headers, x.body);
    if (!form) throw new GatewayError(415, 'not-supported', 'POST _search needs an application/x-www-form-urlencoded body');
    for (const [name, value] of form) params.append(name, value);
  }
  return params;
}

export async function dispatch(x: Exchange, route: FhirRoute, method: string): Promise<Reply> {
  switch (route.interaction) {
    case 'read':
      return read(x, route.resourceType, route.id);
    case 'vread':
      return read(x, route.resourceType, route.id, route.versionId);
    case 'search-type':
    case 'search-system':
      return search(x, { resourceType: route.interaction === 'search-type' ? route.resourceType : undefined, interaction: route.interaction }, searchParams(x, route));
    case 'search-compartment':
      return search(x, { resourceType: route.resourceType, compartmentId: route.compartmentId, interaction: route.interaction }, x.query);
    case 'history-instance':
      return history(x, { resourceType: route.resourceType, id: route.id }, x.query);
    case 'history-type':
      return history(x, { resourceType: route.resourceType }, x.query);
    case 'history-system':
      return history(x, {}, x.query);
    case 'page':
      return page(x, x.query.get('cursor') ?? '');
    case 'batch':
      return batch(x);
    case 'create':
    case 'update':
    case 'patch':
    case 'delete':
      return write(x, route.interaction, route.resourceType, 'id' in route ? route.id : undefined, x.body);
    case 'operation':
      return operation(x, method, route.name, route.resourceType, route.id);
    case 'export-status':
      return exportStatus(x, method, route.job);
    case 'export-file':
      return exportFile(x, method, route.file);
    default:
      throw new GatewayError(403, 'forbidden', 'access to the requested data is not permitted');
  }
}
