// Turns a request under /fhir into one FHIR interaction, or refuses it. Only the shapes listed here
// exist; anything else is refused rather than passed through (SPEC §5: "any other operation … 403").
import { isResourceType } from '@medplum/core';
import { badRequest, forbidden, GatewayError } from '../fhir/outcome.ts';
import { loadFhirDefinitions } from '../fhir/definitions.ts';
import { isFhirId } from '../fhir/references.ts';
import type { Interaction } from '../audit/record.ts';

export type FhirRoute =
  | { readonly interaction: 'capabilities' }
  | { readonly interaction: 'smart-configuration' }
  | { readonly interaction: 'read'; readonly resourceType: string; readonly id: string }
  | { readonly interaction: 'vread'; readonly resourceType: string; readonly id: string; readonly versionId: string }
  | { readonly interaction: 'history-instance'; readonly resourceType: string; readonly id: string }
  | { readonly interaction: 'history-type'; readonly resourceType: string }
  | { readonly interaction: 'history-system' }
  | { readonly interaction: 'search-type'; readonly resourceType: string; readonly viaPost: boolean }
  | { readonly interaction: 'search-system'; readonly viaPost: boolean }
  | { readonly interaction: 'search-compartment'; readonly compartmentId: string; readonly resourceType: string }
  | { readonly interaction: 'page' }
  | { readonly interaction: 'batch' }
  | { readonly interaction: 'create'; readonly resourceType: string }
  | { readonly interaction: 'update'; readonly resourceType: string; readonly id?: string }
  | { readonly interaction: 'patch'; readonly resourceType: string; readonly id?: string }
  | { readonly interaction: 'delete'; readonly resourceType: string; readonly id?: string }
  | { readonly interaction: 'operation'; readonly name: string; readonly resourceType?: string; readonly id?: string }
  | { readonly interaction: 'export-status'; readonly job: string }
  | { readonly interaction: 'export-file'; readonly file: string };

const operationName = /^\$[A-Za-z][A-Za-z0-9-]{0,63}$/;
/** A compact JWE: base64url parts separated by dots. */
const sealedHandle = /^[A-Za-z0-9_\-.]{1,8192}$/;

function resourceType(segment: string): string {
  loadFhirDefinitions();
  if (!isResourceType(segment)) throw new GatewayError(404, 'not-supported', `unknown resource type`);
  return segment;
}

function id(segment: string): string {
  if (!isFhirId(segment) || /^\.+$/.test(segment)) throw badRequest('invalid resource id', 'invalid');
  return segment;
}

/** `segments` are the decoded path segments after /fhir; `rawPath` is the undecoded path, to catch encoded separators. */
export function parseFhirRoute(method: string, rawPath: string): FhirRoute {
  // %2F, %5C and %2E in the path are how traversal and alternative-path tricks get past a router.
  if (/%(2f|5c|2e|00)/i.test(rawPath) || rawPath.includes('\\') || rawPath.includes('//')) throw badRequest('invalid request path');
  const segments = rawPath.split('/').filter((s) => s.length > 0).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw badRequest('invalid request path');
    }
  });
  if (segments.some((s) => s === '.' || s === '..')) throw badRequest('invalid request path');
  const [a, b, c, d, ...rest] = segments;
  if (rest.length > 0) throw badRequest('invalid request path');
  const get = method === 'GET' || method === 'HEAD';

  if (a === undefined) {
    if (method === 'POST') return { interaction: 'batch' };
    if (get) return { interaction: 'search-system', viaPost: false };
    throw forbidden();
  }
  if (a === 'metadata' && b === undefined && get) return { interaction: 'capabilities' };
  if (a === '.well-known' && b === 'smart-configuration' && c === undefined && get) return { interaction: 'smart-configuration' };
  if (a === '_page' && b === undefined && get) return { interaction: 'page' };
  if (a === '_history' && b === undefined && get) return { interaction: 'history-system' };
  if (a === '_search' && b === undefined && method === 'POST') return { interaction: 'search-system', viaPost: true };
  if (operationName.test(a) && b === undefined) return { interaction: 'operation', name: a };
  // Bulk Data job and file URLs carry a sealed handle (SPEC §5.1; src/enforce/export.ts).
  if (a === '_export' && (b === 'status' || b === 'file') && c !== undefined && d === undefined && sealedHandle.test(c)) {
    return b === 'status' ? { interaction: 'export-status', job: c } : { interaction: 'export-file', file: c };
  }

  const type = resourceType(a);
  if (b === undefined) {
    if (get) return { interaction: 'search-type', resourceType: type, viaPost: false };
    if (method === 'POST') return { interaction: 'create', resourceType: type };
    if (method === 'PUT') return { interaction: 'update', resourceType: type };
    if (method === 'PATCH') return { interaction: 'patch', resourceType: type };
    if (method === 'DELETE') return { interaction: 'delete', resourceType: type };
    throw forbidden();
  }
  if (b === '_search' && c === undefined && method === 'POST') return { interaction: 'search-type', resourceType: type, viaPost: true };
  if (b === '_history' && c === undefined && get) return { interaction: 'history-type', resourceType: type };
  if (operationName.test(b) && c === undefined) return { interaction: 'operation', name: b, resourceType: type };

  const resourceId = id(b);
  if (c === undefined) {
    if (get) return { interaction: 'read', resourceType: type, id: resourceId };
    if (method === 'PUT') return { interaction: 'update', resourceType: type, id: resourceId };
    if (method === 'PATCH') return { interaction: 'patch', resourceType: type, id: resourceId };
    if (method === 'DELETE') return { interaction: 'delete', resourceType: type, id: resourceId };
    throw forbidden();
  }
  if (c === '_history' && get) {
    if (d === undefined) return { interaction: 'history-instance', resourceType: type, id: resourceId };
    return { interaction: 'vread', resourceType: type, id: resourceId, versionId: id(d) };
  }
  if (operationName.test(c) && d === undefined) return { interaction: 'operation', name: c, resourceType: type, id: resourceId };
  if (type === 'Patient' && d === undefined && get) {
    if (c === '*') throw badRequest('compartment search across all types is not supported; name a type');
    return { interaction: 'search-compartment', compartmentId: resourceId, resourceType: resourceType(c) };
  }
  throw badRequest('invalid request path');
}

/** The audit interaction for a route. */
export function auditInteraction(route: FhirRoute): Interaction {
  switch (route.interaction) {
    case 'smart-configuration':
    case 'capabilities':
      return 'capabilities';
    case 'page':
      return 'search-type';
    case 'export-status':
    case 'export-file':
      return 'operation';
    default:
      return route.interaction;
  }
}
