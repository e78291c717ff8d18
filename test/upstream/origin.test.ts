// Bulk Data status and file URLs are followed anywhere on the upstream's origin, never elsewhere (SPEC §5.1).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { originRequestTarget, parseUpstreamBase } from '../../src/upstream/index.ts';

const base = parseUpstreamBase('http://upstream.test:8080/fhir');

const table: { name: string; url: string; target: string | null }[] = [
  { name: 'inside the base', url: 'http://upstream.test:8080/fhir/$export-status/1', target: '/fhir/$export-status/1' },
  { name: 'outside the base on the same origin', url: 'http://upstream.test:8080/bulk/files/1.ndjson?sig=x', target: '/bulk/files/1.ndjson?sig=x' },
  { name: 'another port', url: 'http://upstream.test:8081/fhir/x', target: null },
  { name: 'another host', url: 'http://elsewhere.test:8080/fhir/x', target: null },
  { name: 'another scheme', url: 'https://upstream.test:8080/fhir/x', target: null },
  { name: 'credentials in the URL', url: 'http://user:pw@upstream.test:8080/fhir/x', target: null },
  { name: 'an encoded separator', url: 'http://upstream.test:8080/fhir/a%2F..%2Fadmin', target: null },
  { name: 'not a URL', url: 'fhir/x', target: null },
];

for (const row of table) {
  test(`originRequestTarget: ${row.name}`, () => {
    assert.equal(originRequestTarget(base, row.url), row.target);
  });
}
