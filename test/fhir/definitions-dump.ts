// Child process of definitions.test.ts: indexes the R4 definitions (shipped or trimmed, per argv) and prints
// one JSON line describing what @medplum/core then knows and does — type schemas, search parameters, and
// the validation issues of a corpus — with documentation-only fields left out.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { getAllDataTypes, globalSchema, validateResource } from '@medplum/core';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../../src/fhir/definitions.ts';

const full = process.argv[2] === 'full';
loadFhirDefinitions({ full });

const documentation = new Set(['description', 'xpath', 'text', 'contact', 'publisher', 'parentType']);
const canonical = (_key: string, value: unknown): unknown => {
  if (documentation.has(_key)) return undefined;
  if (value instanceof Set) return [...value].sort();
  if (value instanceof Map) return Object.fromEntries([...value.entries()].sort());
  return value;
};

const corpus: Resource[] = [];
for (const name of readdirSync('fixtures/synthea').filter((n) => n.endsWith('.json'))) {
  for (const e of (JSON.parse(readFileSync(join('fixtures/synthea', name), 'utf8')) as Bundle).entry ?? []) if (e.resource) corpus.push(e.resource);
}
// Broken on purpose: each must fail validation the same way under both.
corpus.push({ resourceType: 'Observation', status: 'nonsense' } as unknown as Resource);
corpus.push({ resourceType: 'Consent', status: 'active', scope: {}, category: [], extension: [{ url: 'x' }] } as unknown as Resource);
corpus.push({ resourceType: 'Flag', status: 'active', code: { text: 'x' }, subject: { reference: 'Patient/p' }, period: { start: 'not a date' } } as unknown as Resource);

const validation = corpus.map((resource) => {
  try {
    return validateResource(resource).map((i) => `${i.severity}|${i.code}|${i.details?.text}|${i.expression?.join(',')}`);
  } catch (err) {
    return [`threw: ${(err as Error).message}`];
  }
});

process.stdout.write(`${JSON.stringify({ types: getAllDataTypes(), searchParams: globalSchema.types, validation }, canonical)}\n`);
