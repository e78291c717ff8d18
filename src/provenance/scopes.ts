// SMART App Launch scopes, v1 and v2, normalised to v2 (SPEC §3). Malformed scopes are ignored rather
// than fatal: an authorisation server may grant scopes this gateway does not know.
import { matchesSearchRequest, parseSearchRequest } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../fhir/definitions.ts';
import type { ClientKind, RequestContext, ScopeInteraction, SmartScope } from './context.ts';

const scopePattern = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]{1,63})\.([^?]+)(?:\?(.+))?$/;
const v2Permissions = /^c?r?u?d?s?$/;
const v1Permissions: Readonly<Record<string, string>> = { read: 'rs', write: 'cud', '*': 'cruds' };

/** Narrowest first: a token holding patient/ scopes is confined even if it holds others too. */
export const kindOrder: readonly ClientKind[] = ['patient', 'user', 'system'];

function parseQuery(text: string): ReadonlyMap<string, readonly string[]> | undefined {
  const query = new Map<string, string[]>();
  for (const [name, value] of new URLSearchParams(text)) {
    if (!name || !value) return undefined;
    const values = query.get(name) ?? [];
    values.push(...value.split(',').filter(Boolean));
    query.set(name, values);
  }
  if (query.size === 0) return undefined;
  return new Map([...query].map(([name, values]) => [name, Object.freeze(values)]));
}

/** One scope string → SmartScope, or undefined when it is not a (well-formed) resource scope. */
export function parseScope(raw: string): SmartScope | undefined {
  const match = scopePattern.exec(raw);
  if (!match) return undefined;
  const [, kind, resourceType, permissionText, queryText] = match;
  const permissions = v1Permissions[permissionText] ?? permissionText;
  // v1 scopes have no query part; v2 letters must be in order and non-empty
  if (permissionText in v1Permissions && queryText !== undefined) return undefined;
  if (!permissions || !v2Permissions.test(permissions)) return undefined;
  let query: ReadonlyMap<string, readonly string[]> | undefined;
  if (queryText !== undefined) {
    query = parseQuery(queryText);
    if (!query) return undefined;
  }
  return Object.freeze({
    raw,
    kind: kind as ClientKind,
    resourceType,
    interactions: new Set(permissions.split('') as ScopeInteraction[]),
    ...(query ? { query } : {}),
  });
}

/** Split a `scope` claim (space separated) and parse the resource scopes among it. */
export function parseScopes(scope: string): { scopes: SmartScope[]; kinds: Set<ClientKind> } {
  const scopes: SmartScope[] = [];
  const kinds = new Set<ClientKind>();
  for (const raw of scope.split(/\s+/)) {
    const parsed = raw ? parseScope(raw) : undefined;
    if (!parsed) continue;
    scopes.push(parsed);
    kinds.add(parsed.kind);
  }
  return { scopes, kinds };
}

/** The kind that governs confinement and defaults: the narrowest one held (patient < user < system). */
export function governingKind(kinds: ReadonlySet<ClientKind>): ClientKind | undefined {
  return kindOrder.find((kind) => kinds.has(kind));
}

type ScopeHolder = Pick<RequestContext, 'scopes'>;

/**
 * Whether the request is confined to the launch patient (SPEC §3): it is whenever the token holds any
 * patient/ scope, whatever user/ or system/ scopes it holds beside them — those still decide which types
 * and interactions are allowed, never which patients. The compartment is the `patient` claim's; a token
 * without that claim is confined to no patient, so every request about a patient is refused.
 */
export function confinedToLaunchPatient(ctx: Pick<RequestContext, 'kinds'>): boolean {
  return ctx.kinds.has('patient');
}

/** Whether a confined request may concern this patient: only its launch patient (unconfined: any). */
export function mayConcernPatient(ctx: Pick<RequestContext, 'kinds' | 'patient'>, patientId: string): boolean {
  return !confinedToLaunchPatient(ctx) || (ctx.patient !== undefined && ctx.patient === patientId);
}

function applicable(ctx: ScopeHolder, resourceType: string, interaction: ScopeInteraction): SmartScope[] {
  return ctx.scopes.filter((s) => (s.resourceType === '*' || s.resourceType === resourceType) && s.interactions.has(interaction));
}

/** Whether any scope grants this interaction on this type (granular or not). */
export function allows(ctx: ScopeHolder, resourceType: string, interaction: ScopeInteraction): boolean {
  return applicable(ctx, resourceType, interaction).length > 0;
}

/**
 * What the scopes let through for one type and interaction: `'unrestricted'` when an ungranular scope
 * covers it, `'none'` when nothing does, else the granted queries (a resource must match one of them).
 */
export function grantedQueries(
  ctx: ScopeHolder,
  resourceType: string,
  interaction: ScopeInteraction,
): readonly ReadonlyMap<string, readonly string[]>[] | 'unrestricted' | 'none' {
  const scopes = applicable(ctx, resourceType, interaction);
  if (scopes.length === 0) return 'none';
  const queries: ReadonlyMap<string, readonly string[]>[] = [];
  for (const scope of scopes) {
    if (!scope.query) return 'unrestricted';
    queries.push(scope.query);
  }
  return queries;
}

/** Granular queries as FHIR search parameters: values of one parameter OR together (comma), parameters AND. */
export function queryAsSearchParams(query: ReadonlyMap<string, readonly string[]>): Record<string, string> {
  return Object.fromEntries([...query].map(([name, values]) => [name, values.join(',')]));
}

/** A read of a resource outside the granted queries is refused (SPEC §3). */
export function resourceMatchesScopes(ctx: ScopeHolder, resource: Resource, interaction: ScopeInteraction): boolean {
  const granted = grantedQueries(ctx, resource.resourceType, interaction);
  if (granted === 'unrestricted') return true;
  if (granted === 'none') return false;
  loadFhirDefinitions();
  return granted.some((query) => {
    try {
      return matchesSearchRequest(resource, parseSearchRequest(resource.resourceType, queryAsSearchParams(query)));
    } catch {
      // a granted query this gateway cannot evaluate grants nothing (fail closed)
      return false;
    }
  });
}

/** Audit records need a user/ or system/ scope naming AuditEvent itself: a wildcard is not an auditor's grant (SPEC §6). */
export function holdsAuditEventScope(ctx: ScopeHolder, interaction: ScopeInteraction): boolean {
  return ctx.scopes.some((s) => s.kind !== 'patient' && s.resourceType === 'AuditEvent' && s.interactions.has(interaction));
}
