// The R4 Patient CompartmentDefinition (search confinement) and which patients a resource is about
// (SPEC §5: a resource naming several patients needs every one's permission).
import { getExpressionForResourceType, getSearchParameter } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions, patientCompartmentDefinition } from './definitions.ts';
import { isForeignKey, isPlainRelative, type LocalBases, parseReference, referenceKey, walkReferences } from './references.ts';

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

/** Bare id of the Patient a reference string points at, if it does (search parameters: the upstream resolves it). */
export function patientIdOfReference(reference: string | undefined): string | undefined {
  const parsed = parseReference(reference);
  return parsed?.resourceType === 'Patient' ? parsed.id : undefined;
}

/** Who a resource is about (SPEC §5): patient ids, patients named only by identifier, and whether one cannot be known. */
export interface PatientAttribution {
  readonly ids: readonly string[];
  /** `system|value` of patients named only by identifier, to be resolved through `Patient?identifier=`. */
  readonly identifiers: readonly string[];
  /** A patient reference that names no local patient (another server's, or an identifier without system and value). */
  readonly unresolvable: boolean;
}

// An untyped identifier names a patient where the element is about the patient (subject, patient); in
// performer, author … it is most often a practitioner, and a wrong guess would withhold the resource.
const PATIENT_ELEMENTS: ReadonlySet<string> = new Set(['patient', 'subject']);

/**
 * SPEC §5: a resource's patients are those the R4 Patient compartment names and any other reference to a
 * Patient it holds (Device.patient, Group.member.entity …), contained resources included. A Binary's are
 * its securityContext's. Local references only: a Patient on another server is no local patient.
 */
export function attributePatients(resource: Resource, local?: LocalBases): PatientAttribution {
  // Arrays, not Sets: a resource names one patient or two, and this runs for every resource of every page.
  const ids: string[] = [];
  const identifiers: string[] = [];
  let unresolvable = false;
  if (resource.resourceType === 'Patient' && resource.id) ids.push(resource.id);
  walkReferences(resource, (element, property) => {
    const reference = element.reference;
    // Only Patient references matter here: skip the parse for every other literal reference.
    if (reference !== undefined && !reference.includes('Patient/')) return;
    // The common `Patient/<id>`: local by construction, its id after the slash (what parseReference would give).
    if (reference !== undefined && reference.startsWith('Patient/') && isPlainRelative(reference)) return addOnce(ids, reference.slice(8));
    const parsed = parseReference(reference);
    if (parsed) {
      if (parsed.resourceType !== 'Patient') return;
      const key = referenceKey(reference, local);
      if (key && !isForeignKey(key)) addOnce(ids, parsed.id);
      else unresolvable = true;
      return;
    }
    if (reference !== undefined) return; // contained (`#p`) or urn: the resource carries that patient itself
    const named = element.type === 'Patient' || (element.type === undefined && PATIENT_ELEMENTS.has(property));
    if (!named || !element.identifier) return;
    const { system, value } = element.identifier;
    if (system && value) addOnce(identifiers, `${system}|${value}`);
    else unresolvable = true;
  });
  return { ids, identifiers, unresolvable };
}

function addOnce(list: string[], value: string): void {
  if (!list.includes(value)) list.push(value);
}

/** Bare ids of every patient the resource is about (by literal reference; see attributePatients). */
export function patientsOf(resource: Resource, local?: LocalBases): string[] {
  return [...attributePatients(resource, local).ids];
}
