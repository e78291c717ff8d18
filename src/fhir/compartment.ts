// Which patients a resource is about, from the R4 Patient CompartmentDefinition (SPEC §5: a resource
// naming several patients needs every one's permission). Paths are compiled once per type so that
// deciding a 1,000-entry bundle does not evaluate FHRPath per entry.
import { getExpressionForResourceType, getSearchParameter } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions, patientCompartmentDefinition } from './definitions.ts';

type ElementPath = readonly string[];

interface CompartmentType {
  /** Search parameter names that link this type to the Patient compartment. */
  readonly params: readonly string[];
  /** Element paths (without the type prefix) whose references may point at a Patient. */
  readonly paths: readonly ElementPath[];
}

let index: Map<string, CompartmentType> | undefined;

function toPaths(resourceType: string, expression: string): ElementPath[] {
  return expression
    .split('|')
    .map((branch) => branch.trim().replace(/^\(+|\)+$/g, '').replace(/\.where\(.*$/, ''))
    .filter((branch) => branch.startsWith(`${resourceType}.`))
    .map((branch) => branch.slice(resourceType.length + 1).split('.'));
}

function compartmentIndex(): Map<string, CompartmentType> {
  if (index) return index;
  loadFhirDefinitions();
  const built = new Map<string, CompartmentType>();
  for (const entry of patientCompartmentDefinition().resource ?? []) {
    const resourceType = entry.code as string;
    const params = (entry.param ?? []).filter((p) => p !== '{def}');
    const paths: ElementPath[] = [];
    for (const param of params) {
      const definition = getSearchParameter(resourceType, param);
      const expression = definition?.expression && getExpressionForResourceType(resourceType, definition.expression);
      if (!expression) throw new Error(`no expression for ${resourceType}.${param} in the Patient compartment`);
      paths.push(...toPaths(resourceType, expression));
    }
    if (params.length > 0 || resourceType === 'Patient') built.set(resourceType, { params, paths });
  }
  index = built;
  return built;
}

/** True for the resource types in the Patient compartment (Patient itself included). */
export function isPatientCompartmentType(resourceType: string): boolean {
  return compartmentIndex().has(resourceType);
}

let byParams: ReadonlyMap<string, readonly string[]> | undefined;

/** Every type a parameter places in the Patient compartment, in CompartmentDefinition order, with those parameters. */
export function patientCompartmentTypes(): ReadonlyMap<string, readonly string[]> {
  if (!byParams) {
    const byType = new Map<string, readonly string[]>();
    for (const [type, { params }] of compartmentIndex()) if (params.length > 0) byType.set(type, params);
    byParams = byType;
  }
  return byParams;
}

/** The search parameters that place a type in the Patient compartment. */
export function patientCompartmentParams(resourceType: string): readonly string[] {
  return compartmentIndex().get(resourceType)?.params ?? [];
}

const patientReference = /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/;

/** Bare id of the Patient a reference string points at, if it does. */
export function patientIdOfReference(reference: string | undefined): string | undefined {
  if (!reference) return undefined;
  return patientReference.exec(reference)?.[1];
}

function collect(value: unknown, path: ElementPath, depth: number, into: Set<string>): void {
  if (value === null || value === undefined) return;
  if (Array.isArray(value)) {
    for (const item of value) collect(item, path, depth, into);
    return;
  }
  if (depth === path.length) {
    const id = patientIdOfReference((value as { reference?: string }).reference);
    if (id) into.add(id);
    return;
  }
  if (typeof value === 'object') collect((value as Record<string, unknown>)[path[depth]], path, depth + 1, into);
}

/** Bare ids of every patient whose compartment the resource is in. */
export function patientsOf(resource: Resource): string[] {
  if (resource.resourceType === 'Binary') {
    // Binary is in no compartment; a Patient security context makes it that patient's data (FHIR R4 Binary).
    const id = patientIdOfReference(resource.securityContext?.reference);
    return id ? [id] : [];
  }
  const type = compartmentIndex().get(resource.resourceType);
  if (!type) return [];
  const ids = new Set<string>();
  if (resource.resourceType === 'Patient' && resource.id) ids.add(resource.id);
  for (const path of type.paths) collect(resource, path, 0, ids);
  return [...ids];
}
