// Search-parameter helpers for the embedded upstream: narrowed expressions (each R4 parameter is a
// union over many resource types; only the branches of the searched type can match), parsed once.
import {
  badRequest,
  convertToSearchableDates,
  convertToSearchableReferences,
  convertToSearchableStrings,
  convertToSearchableTokens,
  evalFhirPathTyped,
  getExpressionForResourceType,
  getParsedExpressionForResourceType,
  globalSchema,
  OperationOutcomeError,
  splitSearchOnComma,
  toTypedValue,
  type Filter,
  type FhirPathAtom,
  type SortRule,
} from '@medplum/core';
import type { Resource, SearchParameter } from '@medplum/fhirtypes';
import { parseReference } from '../../fhir/references.ts';

interface Narrowed {
  readonly original: string;
  readonly narrowed: string | undefined;
}

const narrowedExpressions = new Map<string, Narrowed>();
const parsedExpressions = new Map<string, FhirPathAtom>();

/**
 * The search parameter `code` of `resourceType`, with its entry in @medplum/core's global schema
 * replaced by a copy whose expression keeps only the union branches of that type. medplum's matcher
 * (`matchesSearchRequest`) reads that entry and evaluates it on resources of that type only, where
 * the dropped branches always yield nothing, so results are unchanged and the scan is much cheaper.
 */
export function searchParameter(resourceType: string, code: string): SearchParameter | undefined {
  const params = globalSchema.types[resourceType]?.searchParams;
  const param = params?.[code];
  if (!params || !param?.expression) return param;
  const key = `${resourceType}.${code}`;
  let entry = narrowedExpressions.get(key);
  if (!entry || (param.expression !== entry.original && param.expression !== entry.narrowed)) {
    entry = { original: param.expression, narrowed: getExpressionForResourceType(resourceType, param.expression) };
    narrowedExpressions.set(key, entry);
  }
  if (entry.narrowed && param.expression !== entry.narrowed) {
    params[code] = { ...param, expression: entry.narrowed };
  }
  return params[code];
}

/** The search parameter or a 400 naming it (SPEC: a bad search answers 400, never an empty set). */
export function requireSearchParameter(resourceType: string, code: string): SearchParameter & { expression: string } {
  const param = searchParameter(resourceType, code);
  if (!param) throw new OperationOutcomeError(badRequest(`Unknown search parameter '${code}' for ${resourceType}`));
  if (!param.expression) {
    throw new OperationOutcomeError(badRequest(`Search parameter '${code}' is not supported for ${resourceType}`));
  }
  return param as SearchParameter & { expression: string };
}

/** The narrowed FHIRPath of a parameter, parsed once per type and code. */
export function parsedExpression(resourceType: string, code: string): FhirPathAtom {
  const key = `${resourceType}.${code}`;
  let atom = parsedExpressions.get(key);
  if (!atom) {
    const param = requireSearchParameter(resourceType, code);
    atom = getParsedExpressionForResourceType(resourceType, param.expression);
    parsedExpressions.set(key, atom);
  }
  return atom;
}

/** Reference strings a resource holds for a reference parameter, exactly as medplum's matcher sees them. */
export function referencesOf(resource: Resource, atom: FhirPathAtom): string[] {
  return convertToSearchableReferences(evalFhirPathTyped(atom, [toTypedValue(resource)]));
}

/** True when a reference search value is a relative `Type/id` (what the reference indexes hold). */
export function isRelativeReference(value: string): boolean {
  const parsed = parseReference(value);
  return parsed !== undefined && parsed.base === undefined && parsed.version === undefined;
}

/**
 * Rewrites bare-id reference values (`patient=123`) to `Type/123` for every target type of the
 * parameter, as FHIR search allows a bare id for references (R4 search §3.1.1.4.9).
 */
export function expandBareIds(resourceType: string, filter: Filter): Filter {
  const param = searchParameter(resourceType, filter.code);
  if (param?.type !== 'reference' || filter.operator === 'missing' || filter.operator === 'present') return filter;
  const targets = param.target ?? [];
  const values = splitSearchOnComma(filter.value).flatMap((value) =>
    value === '' || value.includes('/') || value.includes(':') || targets.length === 0
      ? [value]
      : targets.map((target) => `${target}/${value}`),
  );
  return { ...filter, value: values.join(',') };
}

type SortKey = string | number | undefined;

function sortKeyOf(resource: Resource, resourceType: string, rule: SortRule): SortKey {
  if (rule.code === '_lastUpdated') return resource.meta?.lastUpdated;
  if (rule.code === '_id') return resource.id;
  const param = requireSearchParameter(resourceType, rule.code);
  const values = evalFhirPathTyped(parsedExpression(resourceType, rule.code), [toTypedValue(resource)]);
  switch (param.type) {
    case 'date': {
      const periods = convertToSearchableDates(values);
      const bounds = periods
        .map((p) => (rule.descending ? (p.end ?? p.start) : (p.start ?? p.end)))
        .filter((v): v is string => Boolean(v))
        .map((v) => Date.parse(v))
        .filter((v) => !Number.isNaN(v));
      if (bounds.length === 0) return undefined;
      return rule.descending ? Math.max(...bounds) : Math.min(...bounds);
    }
    case 'string':
      return convertToSearchableStrings(values)[0]?.toLowerCase();
    case 'token':
      return convertToSearchableTokens(values)[0]?.value;
    case 'reference':
      return convertToSearchableReferences(values)[0];
    case 'number':
    case 'quantity': {
      const first = values[0]?.value as unknown;
      if (typeof first === 'number') return first;
      const quantity = first as { value?: number } | undefined;
      return typeof quantity?.value === 'number' ? quantity.value : undefined;
    }
    default:
      throw new OperationOutcomeError(badRequest(`Sorting by '${rule.code}' is not supported`));
  }
}

function compareKeys(a: SortKey, b: SortKey): number {
  if (a === b) return 0;
  if (a === undefined) return 1;
  if (b === undefined) return -1;
  return a < b ? -1 : 1;
}

/** Stable sort by the `_sort` rules; resources without a value sort last in either direction. */
export function sortResources<T extends Resource>(resourceType: string, resources: T[], rules: readonly SortRule[]): T[] {
  if (rules.length === 0) return resources;
  for (const rule of rules) {
    if (rule.code !== '_lastUpdated' && rule.code !== '_id') requireSearchParameter(resourceType, rule.code);
  }
  const keyed = resources.map((resource) => ({
    resource,
    keys: rules.map((rule) => sortKeyOf(resource, resourceType, rule)),
  }));
  keyed.sort((a, b) => {
    for (let i = 0; i < rules.length; i++) {
      const [x, y] = [a.keys[i], b.keys[i]];
      const order = compareKeys(x, y);
      if (order !== 0) return x === undefined || y === undefined || !rules[i].descending ? order : -order;
    }
    return 0;
  });
  return keyed.map((k) => k.resource);
}
