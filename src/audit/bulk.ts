// The AuditEvent of one Bulk Data file download (SPEC §5.1): the request's event, naming every patient whose
// data was released or withheld in the file with counts rather than every reference (a file can hold millions).
import type { AuditEvent, AuditEventEntity, AuditEventEntityDetail } from '@medplum/fhirtypes';
import type { BulkDisclosure } from './record.ts';

const AUDIT_ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';

function counts(entries: readonly [string, number][]): AuditEventEntityDetail[] {
  return entries.filter(([, n]) => n > 0).map(([type, n]) => ({ type, valueString: String(n) }));
}

function patientCountEntity(patientId: string, detail: AuditEventEntityDetail[]): AuditEventEntity {
  return {
    what: { reference: `Patient/${patientId}` },
    type: { system: AUDIT_ENTITY_TYPE, code: '1', display: 'Person' },
    role: { system: OBJECT_ROLE, code: '1', display: 'Patient' },
    detail,
  };
}

/** Adds to the request's event one Patient entity per patient with `released`/`redacted`/`withheld` counts. */
export function withBulkCounts(event: AuditEvent, bulk: BulkDisclosure): AuditEvent {
  const entity: AuditEventEntity[] = [...(event.entity ?? [])];
  const file: AuditEventEntityDetail[] = [{ type: 'file-type', valueString: bulk.resourceType }];
  file.push(...counts([['unpatiented-released', bulk.unpatiented.released], ['unpatiented-withheld', bulk.unpatiented.withheld]]));
  file.push(...counts(Object.entries(bulk.withheldBy).map(([layer, n]) => [`withheld-by-${layer}`, n])));
  const query = entity.find((e) => e.role?.code === '24');
  if (query) query.detail = [...(query.detail ?? []), ...file];
  for (const p of bulk.patients) {
    entity.push(patientCountEntity(p.patientId, counts([['released', p.released], ['redacted', p.redacted], ['withheld', p.withheld]])));
  }
  return { ...event, entity };
}
