// Requests and disclosure records the audit tests share.
import type { AuditEvent, AuditEventEntity, Extension } from '@medplum/fhirtypes';
import type { TraceEntry } from '../../src/decide/types.ts';
import type { DisclosureRecord, PatientDisclosure, RedactedResource, ReleasedResource, WithheldResource } from '../../src/audit/record.ts';
import type { RequestContext } from '../../src/provenance/context.ts';

export const GATEWAY = { gatewayDevice: 'Device/disclosure-gateway', site: 'gateway.test', address: 'https://gateway.test/fhir' } as const;

export function context(overrides: Partial<RequestContext> = {}): RequestContext {
  return {
    requestId: 'req-1',
    clientId: 'ehr-app',
    subject: 'user-dr-a',
    tokenId: 'jti-123',
    issuer: 'https://issuer.test',
    grantedScopes: ['user/*.rs'],
    scopes: [],
    kinds: new Set(['user']),
    fhirUser: 'Practitioner/dr-a',
    organization: 'Organization/hospital',
    purposeOfUse: ['TREAT'],
    purposeSource: 'claim',
    breakGlass: { inEffect: false, requested: false },
    ...overrides,
  };
}

/** Dispositions as enforcement hands them to audit (one per resource decided). */
export const asReleased = (r: Omit<ReleasedResource, 'disposition'>): ReleasedResource => ({ disposition: 'released', ...r });
export const asRedacted = (r: Omit<RedactedResource, 'disposition'>): RedactedResource => ({ disposition: 'redacted', ...r });
export const asWithheld = (r: Omit<WithheldResource, 'disposition'>): WithheldResource => ({ disposition: 'withheld', ...r });

export function patient(patientId: string, overrides: Partial<PatientDisclosure> = {}): PatientDisclosure {
  return { patientId, dispositions: [], ignored: [], consentDecisions: [], ...overrides };
}

export function record(overrides: Partial<DisclosureRecord> = {}): DisclosureRecord {
  return {
    requestId: 'req-1',
    recorded: '2025-03-01T10:00:00.000Z',
    interaction: 'search-type',
    method: 'GET',
    query: '/fhir/Observation?patient=P1',
    resourceType: 'Observation',
    outcome: 'success',
    httpStatus: 200,
    context: context(),
    clientId: 'ehr-app',
    clientAddress: '127.0.0.1',
    patients: [],
    ...overrides,
  };
}

export const CONSENT_DENY_TRACE: TraceEntry = {
  layer: 'consent',
  effect: 'deny',
  rule: 'Consent/c1',
  provision: 'provision.provision[0]',
  reason: 'the consent denies this actor',
};

// ——— reading built events back ———

export function entityOf(event: AuditEvent, reference: string): AuditEventEntity | undefined {
  return event.entity?.find((e) => e.what?.reference === reference);
}

/** A resource outcome as the auditor console reads it (src/console/static/audit-model.js `resourcesOf`). */
export interface ReadOutcome {
  readonly reference: string;
  readonly disposition: 'released' | 'redacted' | 'withheld';
  readonly paths: string[];
  readonly rules: { layer: string; effect: string; rule: string; provision?: string; ground?: string; reason: string }[];
  readonly breakGlass: boolean;
  readonly part2: boolean;
}

// The console's own reader (browser JS, untyped): the tests read events exactly as the auditor's screens do.
export const consoleModel = (await import(new URL('../../src/console/static/audit-model.js', import.meta.url).href)) as {
  resourcesOf(entity: AuditEventEntity): ReadOutcome[];
  summarise(event: AuditEvent): { kind: string; requestId?: string; counts: Record<'released' | 'redacted' | 'withheld', number>; resources: ReadOutcome[]; outcomeDesc?: string };
};

/** Every resource an event accounts for, compact groups expanded. */
export function resourcesOf(event: AuditEvent): ReadOutcome[] {
  return (event.entity ?? []).flatMap((e) => consoleModel.resourcesOf(e));
}

/** The outcome recorded for one (versioned) reference, whichever entity form holds it. */
export function outcomeOf(event: AuditEvent, reference: string): ReadOutcome | undefined {
  return resourcesOf(event).find((r) => r.reference === reference);
}

export function entitiesByRole(event: AuditEvent, roleCode: string): AuditEventEntity[] {
  return (event.entity ?? []).filter((e) => e.role?.code === roleCode);
}

export function ext(list: Extension[] | undefined, url: string): Extension[] {
  return (list ?? []).filter((e) => e.url === url);
}

export function sub(extension: Extension, url: string): Extension | undefined {
  return extension.extension?.find((e) => e.url === url);
}

export function requester(event: AuditEvent): AuditEvent['agent'][number] | undefined {
  return event.agent.find((a) => a.requestor === true);
}

/** A small AuditEvent for journal tests. */
export function journalEvent(id: string): AuditEvent {
  return {
    resourceType: 'AuditEvent',
    id,
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
    recorded: '2025-03-01T10:00:00.000Z',
    agent: [{ requestor: true, who: { identifier: { value: 'client' } } }],
    source: { observer: { display: 'gateway' } },
    entity: [{ what: { reference: `Observation/${id}` } }],
  };
}

/** A page-sized AuditEvent (a compact group of `count` versioned references), long enough to be stored deflated. */
export function pageEvent(id: string, count = 100): AuditEvent {
  const items = Array.from({ length: count }, (_, i) => `${id}-obs-${i}/_history/0f9c4a1e-7b2d-4c3a-9e8f-${String(i).padStart(12, '0')}`);
  return { ...journalEvent(id), entity: [{ what: { reference: `Patient/${id}` } }, { detail: [{ type: 'Observation', valueString: items.join(' ') }] }] };
}
