// Client search parameters, made safe to send upstream (SPEC §5 "leave no trace"). View parameters are
// taken off and applied after the decision (a view that strips meta.security would hide the labels the
// decision needs); parameters that can test for withheld data are refused; paging is the gateway's own.
import { getExpressionForResourceType, getSearchParameter, matchesSearchRequest, parseSearchRequest, tryGetDataType } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../fhir/definitions.ts';
import { badRequest, GatewayError } from '../fhir/outcome.ts';

export const defaultPageSize = 20;
export const maxPageSize = 1000;

export interface SearchView {
  readonly elements?: readonly string[];
  readonly summary?: 'true' | 'text' | 'data';
}

export interface IncludeParam {
  readonly reverse: boolean;
  readonly sourceType: string;
  readonly param: string;
  readonly targetType?: string;
}

export interface SanitisedSearch {
  /** Parameters to send upstream (without paging). */
  readonly upstream: URLSearchParams;
  readonly count: number;
  /** Released entries to skip before the first one returned (gateway-level `_offset`). */
  readonly offset: number;
  readonly view: SearchView;
  readonly includes: readonly IncludeParam[];
  /** The client's filter parameters, to re-check a redacted resource against (a match on a removed element must not show). */
  readonly criteria: readonly [string, string][];
}

/** Each of these lets a client learn something about resources it may not see. */
const refusedParameters: Record<string, string> = {
  _has: 'reverse chaining (_has) tests resources the gateway may withhold',
  _filter: '_filter can test resources and elements the gateway may withhold',
  _query: 'named queries are not supported by the gateway',
  _text: 'full-text search can match withheld narrative',
  _content: 'full-text search can match withheld content',
  _list: '_list is not supported by the gateway',
  _contained: 'searching contained resources is not supported by the gateway',
  _containedType: 'searching contained resources is not supported by the gateway',
  _total: '', // dropped silently: totals are never returned
};

const singleValued = new Set(['_count', '_offset', '_sort', '_summary', '_elements', '_format']);
const paramName = /^[A-Za-z_][A-Za-z0-9_-]*(?::[A-Za-z0-9_-]+)?$/;

function integer(name: string, value: string, min: number, max: number): number {
  if (!/^\d{1,7}$/.test(value)) throw badRequest(`${name} must be a whole number`);
  const n = Number(value);
  if (n < min || n > max) throw badRequest(`${name} must be between ${min} and ${max}`);
  return n;
}

function sortKey(resourceType: string | undefined, key: string): boolean {
  const name = key.replace(/^-/, '');
  if (name === '_id' || name === '_lastUpdated') return true;
  if (!resourceType) return false;
  // Sorting on a value the gateway may redact would reveal its order; dates are never redacted alone.
  return getSearchParameter(resourceType, name)?.type === 'date';
}

function parseInclude(value: string, reverse: boolean): IncludeParam {
  const parts = value.split(':');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[A-Za-z][A-Za-z0-9-]*$/.test(p))) {
    throw badRequest(`${reverse ? '_revinclude' : '_include'} must be Type:param or Type:param:Target (no wildcards)`);
  }
  return { reverse, sourceType: parts[0], param: parts[1], targetType: parts[2] };
}

export function sanitiseSearch(resourceType: string | undefined, params: URLSearchParams): SanitisedSearch {
  loadFhirDefinitions();
  const upstream = new URLSearchParams();
  const seen = new Set<string>();
  const includes: IncludeParam[] = [];
  const criteria: [string, string][] = [];
  let count = defaultPageSize;
  let offset = 0;
  let elements: string[] | undefined;
  let summary: SearchView['summary'];
  for (const [rawName, value] of params) {
    const name = rawName.trim();
    if (!paramName.test(name) && !name.includes('.')) throw badRequest(`invalid search parameter name`);
    const base = name.split(':')[0];
    if (singleValued.has(base)) {
      if (seen.has(base)) throw badRequest(`${base} may be given only once`);
      seen.add(base);
    }
    if (base.startsWith('_has') || name.includes('.')) {
      throw new GatewayError(400, 'not-supported', base.startsWith('_has') ? refusedParameters._has : 'chained search parameters are not supported by the gateway: they test resources it may withhold');
    }
    if (base in refusedParameters) {
      if (refusedParameters[base]) throw new GatewayError(400, 'not-supported', refusedParameters[base]);
      continue;
    }
    switch (base) {
      case '_count':
        count = integer('_count', value, 1, maxPageSize);
        break;
      case '_offset':
        offset = integer('_offset', value, 0, 1_000_000);
        break;
      case '_summary':
        if (value === 'count') throw new GatewayError(400, 'not-supported', '_summary=count is not supported: counts would reveal withheld resources');
        if (value === 'true' || value === 'text' || value === 'data') summary = value;
        else if (value !== 'false') throw badRequest('_summary must be true, text, data or false');
        break;
      case '_elements':
        elements = value.split(',').map((e) => e.trim()).filter(Boolean);
        if (elements.some((e) => !/^[A-Za-z][A-Za-z0-9]*$/.test(e))) throw badRequest('_elements must list element names');
        break;
      case '_format':
      case '_pretty':
        break;
      case '_sort':
        for (const key of value.split(',')) {
          if (!sortKey(resourceType, key.trim())) throw new GatewayError(400, 'not-supported', `_sort is supported on _id, _lastUpdated and date parameters only`);
        }
        upstream.append('_sort', value);
        break;
      case '_include':
      case '_revinclude':
        if (name !== base) throw new GatewayError(400, 'not-supported', `${base} modifiers (:iterate) are not supported by the gateway`);
        includes.push(parseInclude(value, base === '_revinclude'));
        upstream.append(base, value);
        break;
      default:
        upstream.append(name, value);
        criteria.push([name, value]);
    }
  }
  return { upstream, count, offset, view: { elements, summary }, includes, criteria };
}

/** Per `Type|name`: the identifiers of the parameter's expression for that type, or null when not knowable. */
const criterionIdentifiers = new Map<string, readonly string[] | null>();

// Only plain reference and token criteria (no modifier, no chain, no `_` parameter): their match reads
// just the elements their expression names, and evaluating them does not fail on well-formed input.
function identifiersRead(resourceType: string, name: string): readonly string[] | null {
  const key = `${resourceType}|${name}`;
  let known = criterionIdentifiers.get(key);
  if (known === undefined) {
    known = null;
    if (/^[a-z][a-z0-9-]*$/.test(name)) {
      const param = getSearchParameter(resourceType, name);
      const expression = param?.expression && (param.type === 'reference' || param.type === 'token') ? getExpressionForResourceType(resourceType, param.expression) : undefined;
      if (expression && !/descendants|children|repeat|\$this|%/.test(expression)) known = expression.match(/[A-Za-z_][A-Za-z0-9_]*/g) ?? [];
    }
    criterionIdentifiers.set(key, known);
  }
  return known;
}

/** Top-level elements the redaction replaced: redact.ts copies only what it changes and shares the rest. */
function changedElements(original: Resource, redacted: Resource): string[] {
  const a = original as unknown as Record<string, unknown>;
  const b = redacted as unknown as Record<string, unknown>;
  const changed = new Set<string>();
  for (const key of Object.keys(a)) if (a[key] !== b[key]) changed.add(key.replace(/^_/, ''));
  for (const key of Object.keys(b)) if (!(key in a)) changed.add(key.replace(/^_/, ''));
  return [...changed];
}

function cannotSee(resourceType: string, name: string, changed: readonly string[]): boolean {
  const identifiers = identifiersRead(resourceType, name);
  if (!identifiers) return false;
  // `value` in an expression reads `valueString`, `valueQuantity` … (choice types).
  return !changed.some((element) => identifiers.some((id) => element === id || (element.startsWith(id) && /[A-Z]/.test(element.charAt(id.length)))));
}

function matches(resource: Resource, criteria: readonly [string, string][]): boolean | undefined {
  try {
    const query: Record<string, string[]> = {};
    for (const [name, value] of criteria) (query[name] ??= []).push(value);
    return matchesSearchRequest(resource, parseSearchRequest(resource.resourceType, query));
  } catch {
    return undefined;
  }
}

/**
 * Whether redaction removed what made the resource match: then the match itself would reveal the
 * removed element. Judged by comparing the original and the redacted form under the same matcher, so a
 * criterion the matcher reads differently from the upstream (e.g. a bare patient id) changes nothing.
 */
export function redactionChangesMatch(original: Resource, redacted: Resource, criteria: readonly [string, string][]): boolean {
  if (criteria.length === 0) return false;
  // Performance (docs/performance.md): a criterion that reads none of the elements the redaction replaced
  // matches both forms alike, so the FHIRPath evaluation (most of a redacted page's cost) is skipped.
  const changed = changedElements(original, redacted);
  // Each criterion on its own: one the local matcher reads differently from the upstream (a bare patient
  // id) must not mask another that matched only through a removed element.
  for (const criterion of criteria) {
    if (cannotSee(original.resourceType, criterion[0], changed)) continue;
    const before = matches(original, [criterion]);
    const after = matches(redacted, [criterion]);
    if (before === undefined || after === undefined) return true; // cannot tell: withhold (fail closed)
    if (before && !after) return true;
  }
  return false;
}

const subsetted = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED', display: 'subsetted' };

/** Applies `_elements` / `_summary` to a released resource, after the decision (FHIR search §3.1.1.5). */
export function applyView<T extends Resource>(resource: T, view: SearchView): T {
  if (!view.elements && !view.summary) return resource;
  if (view.summary === 'data') {
    const { text: _text, ...rest } = resource as T & { text?: unknown };
    return rest as T;
  }
  const schema = tryGetDataType(resource.resourceType);
  const keep = new Set<string>(['resourceType', 'id', 'meta', ...(schema?.mandatoryProperties ?? [])]);
  if (view.summary === 'true') for (const p of schema?.summaryProperties ?? []) keep.add(p);
  if (view.summary === 'text') keep.add('text');
  for (const e of view.elements ?? []) keep.add(e);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(resource)) {
    const bare = key.startsWith('_') ? key.slice(1) : key;
    if (keep.has(bare) || [...keep].some((k) => bare.startsWith(k) && /^[A-Z]/.test(bare.slice(k.length)))) out[key] = value;
  }
  const meta = (out.meta ?? {}) as { tag?: unknown[] };
  out.meta = { ...meta, tag: [...(meta.tag ?? []), subsetted] };
  return out as T;
}
