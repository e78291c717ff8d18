// The two unauthenticated documents (SPEC §3): the CapabilityStatement, taken from the upstream and
// restated for the gateway, and the SMART configuration.
import type { CapabilityStatement, CapabilityStatementRest } from '@medplum/fhirtypes';
import { type UpstreamClient, upstreamFailure } from '../upstream/index.ts';

export interface SmartConfiguration {
  readonly issuer: string;
  readonly jwks_uri?: string;
  readonly authorization_endpoint?: string;
  readonly token_endpoint?: string;
  readonly introspection_endpoint?: string;
}

const writeInteractions = new Set(['create', 'update', 'patch', 'delete']);

export async function capabilityStatement(upstream: UpstreamClient, fhirBase: string, smart: SmartConfiguration, requestId: string): Promise<CapabilityStatement> {
  const { status, resource } = await upstream.readJson<CapabilityStatement>('metadata', { requestId });
  if (status >= 400 || resource.resourceType !== 'CapabilityStatement') throw upstreamFailure(status, { failed: 'the upstream did not answer its capability statement' });
  const rest: CapabilityStatementRest[] = (resource.rest ?? []).map((r) => ({
    ...r,
    security: {
      cors: false,
      service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
      extension: [
        {
          url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
          extension: [
            ...(smart.token_endpoint ? [{ url: 'token', valueUri: smart.token_endpoint }] : []),
            ...(smart.authorization_endpoint ? [{ url: 'authorize', valueUri: smart.authorization_endpoint }] : []),
          ],
        },
      ],
      description: 'Every request needs a SMART bearer token; data is released per the patient’s consents and applicable law.',
    },
    resource: (r.resource ?? []).map((res) => ({
      ...res,
      interaction: (res.interaction ?? []).filter((i) => ['read', 'vread', 'search-type', 'history-instance', 'history-type', ...writeInteractions].includes(i.code ?? '')),
      // Conditional writes are refused to all but system clients, so they are not advertised.
      conditionalCreate: false,
      conditionalUpdate: false,
      conditionalDelete: 'not-supported',
    })),
    operation: [
      { name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' },
      // Bulk Data for system/ clients, each line decided (SPEC §5.1).
      { name: 'export', definition: 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export' },
      { name: 'disclosure-decision', definition: 'https://disclosure-gateway.org/fhir/OperationDefinition/disclosure-decision' },
      { name: 'security-label', definition: 'https://disclosure-gateway.org/fhir/OperationDefinition/security-label' },
      { name: 'consent-enforcement-status', definition: 'https://disclosure-gateway.org/fhir/OperationDefinition/consent-enforcement-status' },
    ],
  }));
  return {
    ...resource,
    id: undefined,
    meta: undefined,
    text: undefined,
    status: 'active',
    kind: 'instance',
    software: { name: 'Disclosure Gateway', version: '0.1.0' },
    implementation: { description: 'Consent and disclosure gateway', url: fhirBase },
    format: ['application/fhir+json', 'json'],
    rest,
  } as CapabilityStatement;
}

export function smartConfigurationDocument(smart: SmartConfiguration): Record<string, unknown> {
  return {
    ...smart,
    grant_types_supported: ['client_credentials', 'authorization_code'],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    scopes_supported: ['openid', 'fhirUser', 'launch/patient', 'patient/*.rs', 'user/*.rs', 'system/*.rs', 'btg'],
    response_types_supported: ['code'],
    capabilities: ['permission-v1', 'permission-v2', 'permission-patient', 'permission-user', 'context-standalone-patient', 'client-confidential-asymmetric'],
    code_challenge_methods_supported: ['S256'],
  };
}
