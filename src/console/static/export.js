// Accounting of disclosures exports (issue 8 §3), generated in the browser from the fetched AuditEvents:
// a CSV for people and a FHIR collection Bundle of the AuditEvents themselves for systems.
/* global Blob */
import { fhirBase } from './fhir.js';

const CSV_COLUMNS = [
  'recorded',
  'audit_event',
  'request_id',
  'recipient',
  'organization',
  'client',
  'purpose_of_use',
  'interaction',
  'query',
  'outcome',
  'released',
  'redacted',
  'withheld',
  'rules',
  'break_the_glass',
];

/** Quotes a CSV field; a leading = + - @ is neutralised so a spreadsheet never runs it as a formula. */
export function csvField(value) {
  let text = value === undefined || value === null ? '' : String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return `"${text.replace(/"/g, '""')}"`;
}

/** @param {{ summary: any, rules: string[] }[]} rows */
export function accountingCsv(rows) {
  const lines = [CSV_COLUMNS.join(',')];
  for (const { summary: s, rules } of rows) {
    const refs = (d) => s.resources.filter((r) => r.disposition === d).map((r) => r.reference).join(' ');
    lines.push(
      [
        s.recorded,
        s.id,
        s.requestId,
        s.requester,
        s.organization,
        s.client,
        s.purposes.join(' '),
        s.interaction,
        s.query,
        s.outcomeText,
        refs('released'),
        refs('redacted'),
        refs('withheld'),
        rules.join(' | '),
        s.breakGlass ?? '',
      ]
        .map(csvField)
        .join(','),
    );
  }
  return `${lines.join('\r\n')}\r\n`;
}

/** @param {any[]} events AuditEvent resources */
export function accountingBundle(events) {
  return {
    resourceType: 'Bundle',
    type: 'collection',
    timestamp: new Date().toISOString(),
    entry: events.map((event) => ({ fullUrl: new URL(`AuditEvent/${event.id}`, fhirBase).href, resource: event })),
  };
}

/** @param {string} filename @param {string} type @param {string} content */
export function download(filename, type, content) {
  const url = URL.createObjectURL(new Blob([content], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
