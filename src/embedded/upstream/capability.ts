// The embedded upstream's CapabilityStatement: every R4 resource type with its interactions and search
// parameters (fhirclient reads `searchParam` to decide how to scope `client.patient.request`).
import { getResourceTypes, globalSchema } from '@medplum/core';
import type {
  CapabilityStatement,
  CapabilityStatementRestResource,
  CapabilityStatementRestResourceSearchParam,
} from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../../fhir/definitions.ts';

const typeInteractions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'] as const;

let resources: CapabilityStatementRestResource[] | undefined;

function restResources(): CapabilityStatementRestResource[] {
  if (resources) return resources;
  loadFhirDefinitions();
  resources = getResourceTypes()
    .sort()
    .map((type): CapabilityStatementRestResource => {
      const searchParam: CapabilityStatementRestResourceSearchParam[] = Object.entries(globalSchema.types[type]?.searchParams ?? {})
        .filter(([, param]) => Boolean(param.expression && param.url))
        .map(([name, param]) => ({ name, type: param.type, definition: param.url }))
        .sort((a, b) => a.name.localeCompare(b.name));
      return {
        type,
        interaction: typeInteractions.map((code) => ({ code })),
        versioning: 'versioned',
        readHistory: true,
        updateCreate: true,
        conditionalCreate: true,
        conditionalUpdate: true,
        conditionalDelete: 'single',
        searchParam,
        ...(type === 'Patient'
          ? { operation: [{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }] }
          : {}),
      };
    });
  return resources;
}

/** The CapabilityStatement for a server whose FHIR base is `baseUrl`. */
export function capabilityStatement(baseUrl: string): CapabilityStatement {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2024-01-01',
    kind: 'instance',
    software: { name: 'disclosure-gateway embedded upstream (@medplum/fhir-router MemoryRepository)' },
    implementation: { description: 'In-memory FHIR R4 server for development and tests', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [
      {
        mode: 'server',
        compartment: ['http://hl7.org/fhir/CompartmentDefinition/patient'],
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'history-system' }],
        resource: restResources(),
      },
    ],
  };
}
