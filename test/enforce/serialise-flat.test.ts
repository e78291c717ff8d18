// Issue 15: the replies a client gets keep V8's fast JSON.stringify path (src/fhir/flat.ts). A `fullUrl` or
// link built with a template literal made every 100-entry searchset serialise 3–4× slower; this follows the
// real request path (search, its next page, history, $everything, a compartment search) in a child that can ask V8.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

test('the Bundles the gateway serialises hold only flat strings (no concatenation left for JSON.stringify)', () => {
  const child = fileURLToPath(new URL('./serialise-flat-child.ts', import.meta.url));
  const out = execFileSync(process.execPath, ['--allow-natives-syntax', child], { encoding: 'utf8' });
  const result = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { checked: number; notFlat: string[]; next: boolean };
  assert.equal(result.next, true, 'the first page has a next link to follow');
  assert.ok(result.checked >= 5, `every reply checked (${result.checked})`);
  assert.deepEqual(result.notFlat, []);
});
