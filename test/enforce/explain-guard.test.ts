// Issue 18: $disclosure-decision asks decide/ directly — no enforcement session, so no obligation applied and
// nothing accounted — and still cannot disagree with enforcement: both decide with decideDisclosure on the
// facts RequestFacts prepares. Read from the source, like test/decide/purity.test.ts.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { specifiers } from '../support/imports.ts';

const root = resolve(import.meta.dirname, '../..');
const source = (path: string): string => readFileSync(join(root, path), 'utf8');
const operations = source('src/enforce/operations.ts');
const enforcement = source('src/enforce/disclose.ts');

test('$disclosure-decision builds no DisclosureSession', () => {
  assert.ok(!specifiers(operations).includes('./disclose.ts'), 'operations.ts imports the enforcement session');
  assert.doesNotMatch(operations, /\bDisclosureSession\b/);
  // The guard can fail: the enforcement module is the one that declares the session.
  assert.match(enforcement, /export class DisclosureSession\b/);
});

test('explain and enforcement decide with the same function on facts from the same preparation', () => {
  for (const [name, text] of [['operations.ts', operations], ['disclose.ts', enforcement]]) {
    assert.match(text, /\bdecideDisclosure\(/, `${name} does not call decide/'s rule chain`);
    assert.match(text, /new RequestFacts\(/, `${name} does not prepare its facts with RequestFacts`);
  }
});
