// The scenarios.md cast and the checks the end-to-end suites share: fixtures (P1's world, one patient
// per row), tokens for each persona, "filtered" / "nothing released" as assertions, and the audit
// journal read back by request id.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import type { AuditEvent, Bundle, BundleEntry, Coding, Extension, Observation, Resource } from '@medplum/fhirtypes';
import { DG_EXT_AUDIT_BREAK_THE_GLASS, DG_EXT_AUDIT_RULE } from '../../src/audit/extensions.ts';
import { act, actor, conf, consent as consentFor, purpose, TPO } from '../decide/fixtures.ts';
import { pou, type Harness } from '../support/harness.ts';
import { eventOfLine } from '../reliability/support.ts';

export { act, actor, conf, purpose, TPO };

export type Res = Awaited<ReturnType<Harness['request']>>;

const GP = { reference: 'Practitioner/dr-a' };

/** People and organisations every row's world holds (scenarios.md "Fixtures used below"). */
export function cast(guardianOf = 'p1'): Resource[] {
  return [
    { resourceType: 'Organization', id: 'hospital', name: 'Hospital' },
    { resourceType: 'Organization', id: 'payer', name: 'Payer' },
    { resourceType: 'Organization', id: 'research', name: 'Research' },
    { resourceType: 'Practitioner', id: 'dr-a', name: [{ family: 'A' }] },
    { resourceType: 'Practitioner', id: 'bob', name: [{ family: 'Bob' }] },
    { resourceType: 'Group', id: 'btg-users', type: 'practitioner', actual: true, member: [{ entity: { reference: 'Practitioner/dr-a' } }] },
    { resourceType: 'RelatedPerson', id: 'guardian', patient: { reference: `Patient/${guardianOf}` } },
  ];
}

/** A patient whose general practitioner is Dr A. */
export function patient(id: string): Resource {
  return { resourceType: 'Patient', id, generalPractitioner: [GP] };
}

/** A marker planted in a resource's content: if it shows up in a response, that content was released. */
export const content = (id: string): string => `content-of-${id}`;

export function obs(id: string, patientId: string, labels: Coding[] = [], extra: Partial<Observation> = {}): Observation {
  return {
    resourceType: 'Observation',
    id,
    ...(labels.length ? { meta: { security: labels } } : {}),
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }], text: 'heart rate' },
    subject: { reference: `Patient/${patientId}` },
    effectiveDateTime: '2024-03-02T09:10:00Z',
    valueString: content(id),
    ...extra,
  };
}

/** A valid R4 patient-privacy Consent for `patientId` (builders from the decision-engine tests). */
export function consent(id: string, patientId: string, provision: Parameters<typeof consentFor>[1], extra: Parameters<typeof consentFor>[2] = {}): Resource {
  return consentFor(id, provision, { patient: { reference: `Patient/${patientId}` }, ...extra });
}

/** Relative ISO date `days` from today (periods that must be current, ended or in the future). */
export function daysFromNow(days: number): string {
  return new Date(Date.now() + days * 86_400_000).toISOString().slice(0, 10);
}

export interface Personas {
  /** Dr A (P1's GP) with user/*.rs and the given purpose; `btg` adds the break-the-glass scope. */
  drA(purposeCode?: string, opts?: { btg?: boolean; organization?: string }): Promise<string>;
  bob(purposeCode?: string, opts?: { btg?: boolean }): Promise<string>;
  /** The patient themself: patient/*.rs with launch context and fhirUser. */
  pt(patientId: string, scope?: string): Promise<string>;
  /** A backend service of an organisation: system/*.rs. */
  sys(organization: string, purposeCode: string): Promise<string>;
  guardian(purposeCode?: string): Promise<string>;
}

export function personas(h: Harness): Personas {
  return {
    drA: (p = 'TREAT', o = {}) =>
      h.token({ sub: 'dr-a', client_id: 'ehr', fhirUser: 'Practitioner/dr-a', scope: `user/*.rs${o.btg ? ' btg' : ''}`, extensions: pou(p), ...(o.organization ? { organization: o.organization } : {}) }),
    bob: (p = 'TREAT', o = {}) => h.token({ sub: 'bob', client_id: 'ehr', fhirUser: 'Practitioner/bob', scope: `user/*.rs${o.btg ? ' btg' : ''}`, extensions: pou(p) }),
    pt: (id, scope = 'patient/*.rs') => h.token({ sub: `pt-${id}`, client_id: 'patient-app', patient: id, fhirUser: `Patient/${id}`, scope }),
    sys: (organization, p) => h.token({ sub: `svc-${organization}`, client_id: `svc-${organization}`, organization: `Organization/${organization}`, scope: 'system/*.rs', extensions: pou(p) }),
    guardian: (p = 'FAMRQT') => h.token({ sub: 'guardian', client_id: 'family-app', fhirUser: 'RelatedPerson/guardian', scope: 'user/*.rs', extensions: pou(p) }),
  };
}

export function entriesOf(body: Bundle | undefined, mode: 'match' | 'include' | 'outcome' = 'match'): BundleEntry[] {
  return (body?.entry ?? []).filter((e) => (e.search?.mode ?? 'match') === mode);
}

export function idsOf(body: Bundle | undefined, mode: 'match' | 'include' = 'match'): string[] {
  return entriesOf(body, mode).map((e) => e.resource?.id ?? '').sort();
}

/** A searchset answered: status 200, never a total. */
export function assertSearchset(res: Res): Bundle {
  assert.equal(res.status, 200, `expected 200, got ${res.status}: ${res.text.slice(0, 300)}`);
  const bundle = res.body as Bundle;
  assert.equal(bundle.resourceType, 'Bundle');
  assert.equal(bundle.type, 'searchset');
  assert.equal(bundle.total, undefined, 'Bundle.total is always removed');
  return bundle;
}

/** "Filtered": exactly `released` come back; every withheld id and its content are absent from the whole response. */
export function assertReleased(res: Res, released: readonly string[], withheld: readonly string[] = []): Bundle {
  const bundle = assertSearchset(res);
  assert.deepEqual(idsOf(bundle), [...released].sort());
  assertNoTrace(res, withheld);
  return bundle;
}

/** No withheld id or planted content anywhere in headers or body. */
export function assertNoTrace(res: Res, withheld: readonly string[]): void {
  const headerLines: string[] = [];
  res.headers.forEach((value, name) => headerLines.push(`${name}: ${value}`));
  const surface = `${headerLines.join('\n')}\n${res.text}`;
  for (const id of withheld) {
    assert.ok(!surface.includes(id), `withheld ${id} appears in the response`);
    assert.ok(!surface.includes(content(id)), `content of withheld ${id} appears in the response`);
  }
}

/** "Nothing released": 403 OperationOutcome when refused before data is read, else an empty searchset. */
export function assertNothingReleased(res: Res, withheld: readonly string[]): void {
  if (res.status === 403) assert.equal(res.body?.resourceType, 'OperationOutcome');
  else {
    const bundle = assertSearchset(res);
    assert.deepEqual(idsOf(bundle), [], 'nothing is released');
    assert.deepEqual(idsOf(bundle, 'include'), []);
  }
  assertNoTrace(res, withheld);
}

export function assertConcealed(res: Res, withheld: readonly string[] = []): void {
  assert.equal(res.status, 404, `expected 404 (concealed), got ${res.status}`);
  assert.equal(res.body?.resourceType, 'OperationOutcome');
  assertNoTrace(res, withheld);
}

/**
 * Pages through a search with `_count=size` following next links: every page but the last is full
 * ("page refilled"), ids never repeat, and their union is returned.
 */
export async function pagedIds(h: Harness, path: string, token: string, size = 1): Promise<string[]> {
  const seen: string[] = [];
  let url: string | undefined = `${path}${path.includes('?') ? '&' : '?'}_count=${size}`;
  for (let pages = 0; url; pages++) {
    assert.ok(pages < 500, 'paging terminates');
    const res = await h.request(url, { token });
    const bundle = assertSearchset(res);
    const ids = idsOf(bundle);
    url = bundle.link?.find((l) => l.relation === 'next')?.url;
    if (url) {
      assert.equal(ids.length, size, 'a page followed by another is full');
      assert.ok(url.startsWith(h.base), 'next link points at the gateway');
    }
    for (const id of ids) assert.ok(!seen.includes(id), `duplicate ${id} across pages`);
    seen.push(...ids);
  }
  return seen.sort();
}

let requestCounter = 0;
/** A fresh X-Request-Id to find this request's events in the journal. */
export function requestId(tag: string): string {
  requestCounter++;
  return `conf-${tag}-${process.pid}-${requestCounter}`;
}

/** Every AuditEvent of one request, read back from the journal files. */
export async function auditEventsFor(auditDir: string, id: string): Promise<AuditEvent[]> {
  const names = (await readdir(auditDir)).filter((n) => /^audit-\d{12}\.ndjson$/.test(n)).sort();
  const events: AuditEvent[] = [];
  for (const name of names) {
    for (const line of (await readFile(join(auditDir, name), 'utf8')).split('\n')) {
      if (!line.trim()) continue;
      const event = eventOfLine(line);
      const ids = (event.entity ?? []).flatMap((e) => [e.what?.identifier?.value, ...(e.detail ?? []).map((d) => d.valueString)]);
      if (ids.includes(id)) events.push(event);
    }
  }
  return events;
}

export function breakTheGlassMarks(events: readonly AuditEvent[]): string[] {
  const marks: string[] = [];
  const visit = (extensions: readonly Extension[] | undefined): void => {
    for (const e of extensions ?? []) if (e.url === DG_EXT_AUDIT_BREAK_THE_GLASS && e.valueCode) marks.push(e.valueCode);
  };
  for (const event of events) {
    visit(event.extension);
    for (const entity of event.entity ?? []) visit(entity.extension);
  }
  return marks;
}

/** The audit-rule extensions an event carries at its top level (rules ignored for the patient). */
export function ignoredRules(events: readonly AuditEvent[]): { rule: string; effect: string; reason: string }[] {
  return events.flatMap((event) =>
    (event.extension ?? [])
      .filter((e) => e.url === DG_EXT_AUDIT_RULE)
      .map((e) => {
        const part = (name: string) => e.extension?.find((p) => p.url === name);
        return { rule: part('rule')?.valueString ?? '', effect: part('effect')?.valueCode ?? '', reason: part('reason')?.valueString ?? '' };
      }),
  );
}

/** One HTTP/1.1 request with the path sent byte for byte (fetch would normalise `..` and encoded slashes). */
export function rawGet(base: string, path: string, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, method: 'GET', path, headers: { accept: 'application/fhir+json', connection: 'close', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}
