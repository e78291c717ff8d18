// Byte pass-through of unchanged entries (src/fhir/raw-entries.ts): the spans found must be exactly the
// text JSON.parse read for each entry's resource, and any text that a client could read differently from
// JSON.parse (duplicate or escaped keys, invalid UTF-8) must not pass through at all.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Bundle } from '@medplum/fhirtypes';
import { bundleBytes, rememberRawResources, resourceSpans, type RawResources } from '../../src/fhir/raw-entries.ts';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function spansOf(text: string | Buffer): ({ text: string } | undefined)[] | undefined {
  const bytes = typeof text === 'string' ? Buffer.from(text) : text;
  const parsed = JSON.parse(bytes.toString('utf8')) as { entry?: unknown[] };
  const spans = resourceSpans(bytes, parsed.entry?.length ?? 0);
  if (!spans) return undefined;
  return Array.from(spans.starts, (start, i) => (start === -1 ? undefined : { text: bytes.subarray(start, spans.ends[i]).toString('utf8') }));
}

/** Serialises with a random amount of whitespace between tokens, as upstream servers differ. */
function withSpacing(value: Json, space: string): string {
  return JSON.stringify(value, null, space);
}

/** Whether some key anywhere in the value needs an escape in JSON (such text is not passed through). */
function hasEscapedKey(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(hasEscapedKey);
  if (value === null || typeof value !== 'object') return false;
  return Object.entries(value).some(([key, inner]) => JSON.stringify(key).includes('\\') || hasEscapedKey(inner));
}

const arbResource = fc.dictionary(fc.string({ maxLength: 8, unit: 'binary' }), fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' }) as fc.Arbitrary<Json>, { maxKeys: 6 }).map((r) => ({ resourceType: 'Observation', ...r }));
const arbEntry = fc.record({ fullUrl: fc.string({ maxLength: 10 }), resource: fc.option(arbResource, { nil: undefined }), search: fc.constant({ mode: 'match' }) }, { requiredKeys: ['fullUrl'] });
const arbBundle = fc.record({ resourceType: fc.constant('Bundle'), type: fc.constant('searchset'), link: fc.constant([{ relation: 'self', url: 'http://x/Observation' }]), entry: fc.array(arbEntry, { maxLength: 8 }) });

describe('resourceSpans', () => {
  test('each span is exactly the text of that entry’s resource, however the upstream spaced it', () => {
    fc.assert(
      fc.property(arbBundle, fc.constantFrom('', ' ', '\t', '  \n'), (bundle, space) => {
        const text = withSpacing(bundle as unknown as Json, space);
        const spans = spansOf(text);
        const parsed = JSON.parse(text) as { entry: { resource?: unknown }[] };
        if (hasEscapedKey(parsed)) return assert.equal(spans, undefined, 'a key with an escape never passes');
        assert.ok(spans, 'plain JSON passes');
        assert.equal(spans.length, parsed.entry.length);
        parsed.entry.forEach((entry, i) => {
          if (entry.resource === undefined) assert.equal(spans[i], undefined);
          else assert.deepEqual(JSON.parse(spans[i]?.text ?? 'null'), entry.resource);
        });
      }),
      { numRuns: 400 },
    );
  });

  test('strings that look like structure do not move the spans', () => {
    const text = '{"resourceType":"Bundle","note":"\\"entry\\":[{\\"resource\\":","entry":[{"resource":{"resourceType":"Basic","text":"} ] { [ \\\\","id":"a"}},{"fullUrl":"\\\\\\"","resource":{"x":["\\"resource\\":{"]}}]}';
    const spans = spansOf(text);
    assert.deepEqual(spans?.map((s) => s && JSON.parse(s.text)), [{ resourceType: 'Basic', text: '} ] { [ \\', id: 'a' }, { x: ['"resource":{'] }]);
  });

  test('an entry without a resource object has no span; other top-level arrays are not entries', () => {
    const spans = spansOf('{"link":[{"resource":{"a":1}}],"entry":[{"request":{"method":"DELETE"}},{"resource":null},{"resource":{"b":2}}]}');
    assert.deepEqual(spans?.map((s) => s?.text), [undefined, undefined, '{"b":2}']);
  });

  const refused: [string, string | Buffer][] = [
    ['a key twice in a resource (JSON.parse keeps the last, other parsers the first)', '{"entry":[{"resource":{"id":"forged","id":"real"}}]}'],
    ['a key twice deep inside a resource', '{"entry":[{"resource":{"note":[{"text":"a","text":"b"}]}}]}'],
    ['`entry` twice at the top', '{"entry":[{"resource":{"a":1}}],"entry":[{"resource":{"a":2}}]}'],
    ['`resource` twice in an entry', '{"entry":[{"resource":{"a":1},"resource":{"a":2}}]}'],
    ['a key written with escapes (the same key as another, spelled differently)', '{"entry":[{"resource":{"id":"a","\\u0069d":"b"}}]}'],
    ['invalid UTF-8', Buffer.concat([Buffer.from('{"entry":[{"resource":{"a":"'), Buffer.from([0xc0, 0xa2]), Buffer.from('"}}]}')])],
    ['nesting deeper than 64', `{"entry":[{"resource":{"a":${'['.repeat(70)}${']'.repeat(70)}}}]}`],
  ];
  for (const [name, text] of refused) {
    test(`no spans for ${name}`, () => {
      const bytes = typeof text === 'string' ? Buffer.from(text) : text;
      const entries = (JSON.parse(bytes.toString('utf8')) as { entry: unknown[] }).entry.length;
      assert.equal(resourceSpans(bytes, entries), undefined);
    });
  }

  test('no spans when the entry count disagrees with the parse', () => {
    assert.equal(resourceSpans(Buffer.from('{"entry":[{"resource":{"a":1}}]}'), 2), undefined);
  });

  test('a stored Bundle in an entry is one resource: its own entries are not the page’s', () => {
    const spans = spansOf('{"entry":[{"resource":{"resourceType":"Bundle","entry":[{"resource":{"a":1}},{"resource":{"b":2}}]}},{"resource":{"c":3}}]}');
    assert.deepEqual(spans?.map((s) => s?.text), ['{"resourceType":"Bundle","entry":[{"resource":{"a":1}},{"resource":{"b":2}}]}', '{"c":3}']);
  });

  test('the same key in sibling objects, or in parent and child, is not a duplicate', () => {
    assert.ok(spansOf('{"entry":[{"resource":{"id":"a","contained":[{"id":"b"},{"id":"c"}],"meta":{"id":"d"}}},{"resource":{"id":"e"}}]}'));
  });
});

describe('bundleBytes', () => {
  test('means what JSON.stringify means, with unchanged resources written from the upstream bytes', () => {
    fc.assert(
      fc.property(arbBundle, fc.constantFrom('', '  '), fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }), (upstream, space, replace) => {
        const body = Buffer.from(withSpacing(upstream as unknown as Json, space));
        const page = JSON.parse(body.toString('utf8')) as { entry: { fullUrl: string; resource?: Record<string, unknown> }[] };
        const raw: RawResources = new WeakMap();
        rememberRawResources(raw, body, page.entry);
        // The gateway's own bundle: new entries, some resources the parsed objects, some replaced (redacted).
        const bundle = {
          resourceType: 'Bundle',
          type: 'searchset',
          entry: page.entry.map((e, i) => ({ fullUrl: `gw/${i}`, resource: e.resource && replace[i] ? { ...e.resource, redacted: true } : e.resource, search: { mode: 'match' } })),
        };
        assert.deepEqual(JSON.parse(bundleBytes(bundle as unknown as Bundle, raw).toString('utf8')), JSON.parse(JSON.stringify(bundle)));
      }),
      { numRuns: 300 },
    );
  });

  test('an unchanged resource goes out byte for byte; a changed one is serialised', () => {
    const body = Buffer.from('{"resourceType":"Bundle","entry":[{"resource":{ "resourceType" : "Basic" , "id":"keep" }},{"resource":{"resourceType":"Basic","id":"change"}}]}');
    const page = JSON.parse(body.toString('utf8')) as { entry: { resource: { id: string } }[] };
    const raw: RawResources = new WeakMap();
    rememberRawResources(raw, body, page.entry);
    const bundle = { resourceType: 'Bundle', entry: [{ resource: page.entry[0].resource }, { resource: { ...page.entry[1].resource, id: 'changed' } }] };
    const out = bundleBytes(bundle as unknown as Bundle, raw).toString('utf8');
    assert.equal(out, '{"resourceType":"Bundle","entry":[{"resource":{ "resourceType" : "Basic" , "id":"keep" }},{"resource":{"resourceType":"Basic","id":"changed"}}]}');
  });
});

test('text JSON.parse would refuse ends the scan without spans (it is never asked to, but must not hang)', () => {
  for (const text of ['{"entry":[{"resource":{"a":"unterminated', '{"entry":[{"resource":{"a', '{"entry":[{"resource":{"a":"\\']) {
    assert.equal(resourceSpans(Buffer.from(text), 1), undefined);
  }
});
