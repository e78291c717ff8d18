// Shared by the reliability suite (issue 6): leak detection over everything a response carries, the
// audit journal read back by request id, and raw HTTP for requests fetch() would normalise or refuse.
import { readdir, readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import type { AuditEvent, Observation } from '@medplum/fhirtypes';
import { V3_CONFIDENTIALITY } from '../../src/fhir/systems.ts';
import { parseEntry } from '../../src/audit/segment.ts';

export interface SeenResponse {
  readonly status: number;
  readonly headers: Headers | Record<string, string | string[] | undefined>;
  readonly text: string;
}

/** Everything a client receives: status line aside, every header and the whole body. */
export function surfaceOf(res: SeenResponse): string {
  const headerLines: string[] = [];
  if (res.headers instanceof Headers) res.headers.forEach((value, name) => headerLines.push(`${name}: ${value}`));
  else for (const [name, value] of Object.entries(res.headers)) headerLines.push(`${name}: ${Array.isArray(value) ? value.join(', ') : (value ?? '')}`);
  return `${headerLines.join('\n')}\n\n${res.text}`;
}

/** The markers (ids, planted strings) that appear anywhere in the response. */
export function leakedMarkers(res: SeenResponse, markers: Iterable<string>): string[] {
  const surface = surfaceOf(res);
  return [...markers].filter((m) => surface.includes(m));
}

/** Asserts the body is an OperationOutcome with at least one issue. */
export function isOperationOutcome(text: string): boolean {
  try {
    const parsed = JSON.parse(text) as { resourceType?: string; issue?: unknown[] };
    return parsed.resourceType === 'OperationOutcome' && Array.isArray(parsed.issue) && parsed.issue.length > 0;
  } catch {
    return false;
  }
}

/** The event of one journal line, plain or deflated (src/audit/segment.ts). */
export function eventOfLine(line: string): AuditEvent {
  const entry = parseEntry(line);
  if (!entry) throw new Error(`not a journal line: ${line.slice(0, 80)}`);
  return entry.event;
}

/** Every event in the journal directory, in sequence order. */
export async function journalEvents(dir: string): Promise<AuditEvent[]> {
  const names = (await readdir(dir)).filter((n) => /^audit-\d{12}\.ndjson$/.test(n)).sort();
  const events: AuditEvent[] = [];
  for (const name of names) {
    const text = await readFile(join(dir, name), 'utf8');
    for (const line of text.split('\n')) if (line.trim()) events.push(eventOfLine(line));
  }
  return events;
}

/** The X-Request-Id an event records (REST events: an XrequestId entity; AuthZconsent: an entity detail). */
export function requestIdOf(event: AuditEvent): string | undefined {
  for (const entity of event.entity ?? []) {
    if (entity.type?.code === 'XrequestId' && entity.what?.identifier?.value) return entity.what.identifier.value;
    const detail = entity.detail?.find((d) => d.type === 'X-Request-Id');
    if (detail?.valueString) return detail.valueString;
  }
  return undefined;
}

/** Events grouped by request id. */
export async function eventsByRequest(dir: string): Promise<Map<string, AuditEvent[]>> {
  const byRequest = new Map<string, AuditEvent[]>();
  for (const event of await journalEvents(dir)) {
    const id = requestIdOf(event);
    if (id) (byRequest.get(id) ?? byRequest.set(id, []).get(id))?.push(event);
  }
  return byRequest;
}

export interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
}

/** One HTTP/1.1 request with the path sent exactly as given (no URL normalisation, no header limits). */
export function rawRequest(base: string, opts: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer }): Promise<RawResponse> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, method: opts.method ?? 'GET', path: opts.path, headers: { accept: 'application/fhir+json', connection: 'close', ...opts.headers }, insecureHTTPParser: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** An Observation carrying a unique marker string (its value), optionally labelled, for leak checks. */
export function markedObservation(id: string, patient: string, marker: string, security?: string): Observation {
  return {
    resourceType: 'Observation',
    id,
    status: 'final',
    ...(security ? { meta: { security: [{ system: V3_CONFIDENTIALITY, code: security }] } } : {}),
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: `Patient/${patient}` },
    effectiveDateTime: '2024-03-02T09:10:00Z',
    valueString: marker,
  };
}
