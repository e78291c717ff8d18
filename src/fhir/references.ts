// The one reference model (issue 18, SPEC §4.1): every literal reference is parsed here, and a resource's
// references are walked by one walker. A key is `Type/id` for a local resource — relative, or absolute on
// the upstream's or the gateway's own base — and the absolute `base/Type/id` for one on any other server,
// so a foreign actor never collapses to its local namesake.
import type { Identifier, Reference } from '@medplum/fhirtypes';

export interface ParsedReference {
  readonly resourceType: string;
  readonly id: string;
  readonly version?: string;
  /** Normalised server base (`https://host/fhir`) of an absolute reference; absent for a relative one. */
  readonly base?: string;
}

const literalPattern = /^(?:([hH][tT][tT][pP][sS]?:\/\/[^?#\s]+?)\/)?([A-Z][A-Za-z]{1,63})\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/([A-Za-z0-9\-.]{1,64}))?$/;

const relativePattern = /^[A-Z][A-Za-z]{1,63}\/[A-Za-z0-9\-.]{1,64}$/;
const idPattern = /^[A-Za-z0-9\-.]{1,64}$/;

/** A FHIR id: [A-Za-z0-9\-.]{1,64} (R4 datatypes). */
export function isFhirId(id: string): boolean {
  return idPattern.test(id);
}

/** `Type/id` without a scheme, version or fragment; the cheap checks first, the pattern last. */
export function isPlainRelative(reference: string): boolean {
  const first = reference.charCodeAt(0);
  if (first < 65 || first > 90) return false;
  const slash = reference.indexOf('/');
  return slash > 0 && reference.indexOf('/', slash + 1) < 0 && relativePattern.test(reference);
}

/** A literal reference (relative or absolute http(s)); undefined for contained (`#x`), `urn:` and anything else. */
export function parseReference(reference: string | undefined): ParsedReference | undefined {
  if (!reference) return undefined;
  const match = literalPattern.exec(reference.trim());
  if (!match) return undefined;
  const [, base, resourceType, id, version] = match;
  const normalisedBase = base === undefined ? undefined : normaliseBase(base);
  if (base !== undefined && normalisedBase === undefined) return undefined;
  return { resourceType, id, ...(version ? { version } : {}), ...(normalisedBase ? { base: normalisedBase } : {}) };
}

/** `origin + path` without a trailing slash; scheme and host lower case, default ports dropped (WHATWG URL). */
function normaliseBase(url: string): string | undefined {
  try {
    const parsed = new URL(url);
    if (parsed.username || parsed.password || parsed.search || parsed.hash) return undefined;
    return `${parsed.origin}${parsed.pathname.replace(/\/+$/, '')}`;
  } catch {
    return undefined;
  }
}

/** The bases whose absolute references are local resources: the upstream's and the gateway's own (SPEC §3, §4.1). */
export type LocalBases = ReadonlySet<string>;

export function localBases(...urls: readonly (string | undefined)[]): LocalBases {
  const out = new Set<string>();
  for (const url of urls) {
    const base = url ? normaliseBase(url) : undefined;
    if (base) out.add(base);
  }
  return out;
}

const NO_BASES: LocalBases = new Set();

/**
 * The comparison key of a reference: `Type/id` when local, `base/Type/id` when foreign (versions dropped).
 * Without bases every absolute reference is foreign — `decide/` receives references already normalised.
 */
export function referenceKey(reference: string | undefined, local: LocalBases = NO_BASES): string | undefined {
  // Most references are already `Type/id`: that is their key (decide/ calls this per resource reference).
  if (reference !== undefined && isPlainRelative(reference)) return reference;
  const parsed = parseReference(reference);
  if (!parsed) return undefined;
  const relative = `${parsed.resourceType}/${parsed.id}`;
  return parsed.base === undefined || local.has(parsed.base) ? relative : `${parsed.base}/${relative}`;
}

/** A key naming a resource on another server (SPEC §4.1: only the same absolute URL matches it). */
export function isForeignKey(key: string): boolean {
  return key.includes('://');
}

/** Resource type of a key, local or foreign. */
export function keyType(key: string): string {
  const parts = key.split('/');
  return parts[parts.length - 2] ?? '';
}

/** `Type/id` of a local key; undefined for a foreign one. */
export function localKey(key: string | undefined): string | undefined {
  return key && !isForeignKey(key) ? key : undefined;
}

/** A copy of a policy resource whose every literal reference is its key (issue 18: decide/ compares keys only). */
export function withReferenceKeys<T>(value: T, local: LocalBases): T {
  return rekey(value, local, 0) as T;
}

function rekey(node: unknown, local: LocalBases, depth: number): unknown {
  if (depth > 40 || !node || typeof node !== 'object') return node;
  if (Array.isArray(node)) return node.map((item) => rekey(item, local, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(node)) {
    out[key] = key === 'reference' && typeof inner === 'string' ? (referenceKey(inner, local) ?? inner) : rekey(inner, local, depth + 1);
  }
  return out;
}

/** Called with each Reference element and the name of the property that holds it (`subject`, `entity` …). */
export type ReferenceVisitor = (element: Reference, property: string) => void;

/**
 * The one walker over a resource's Reference elements: every object with a `reference` string or an
 * `identifier` object, at any depth, `contained` resources included (what they reference, their
 * container references); narrative (`text`) skipped. Depth-bounded against hostile bodies.
 */
export function walkReferences(value: unknown, visit: ReferenceVisitor): void {
  walk(value, '', visit, 0);
}

function walk(node: unknown, property: string, visit: ReferenceVisitor, depth: number): void {
  if (depth > 40 || !node || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    for (const item of node) walk(item, property, visit, depth + 1);
    return;
  }
  const object = node as Record<string, unknown>;
  if (typeof object.reference === 'string' || isIdentifier(object.identifier)) visit(object as Reference, property);
  for (const key in object) {
    if (key === 'reference') continue;
    const inner = object[key];
    if (inner && typeof inner === 'object') walk(inner, key, visit, depth + 1);
  }
}

function isIdentifier(value: unknown): value is Identifier {
  return !!value && typeof value === 'object' && !Array.isArray(value);
}

/** Every key a resource refers to, anywhere in it (contained included). */
export function referencesIn(value: unknown, into = new Set<string>(), local: LocalBases = NO_BASES): Set<string> {
  walkReferences(value, (element) => {
    const key = referenceKey(element.reference, local);
    if (key) into.add(key);
  });
  return into;
}
