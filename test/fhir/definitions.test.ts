// The trimmed R4 definitions (src/fhir/definitions.ts) leave out only what @medplum/core never reads: with
// either, the type schemas, search parameters and validation outcomes are the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { prepareTrimmedDefinitions, trimmedDefinitionsPath } from '../../src/fhir/definitions.ts';

function dump(variant: 'full' | 'trimmed'): { text: string; summary: { types: number; validated: number; issues: number } } {
  const text = execFileSync(process.execPath, ['test/fhir/definitions-dump.ts', variant], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  const parsed = JSON.parse(text) as { types: object; validation: string[][] };
  return { text, summary: { types: Object.keys(parsed.types).length, validated: parsed.validation.length, issues: parsed.validation.flat().length } };
}

test('the trimmed definitions give @medplum/core the same schemas, search parameters and validation results', () => {
  if (!existsSync(trimmedDefinitionsPath())) prepareTrimmedDefinitions();
  const full = dump('full');
  const trimmed = dump('trimmed');
  assert.ok(full.summary.types > 500, `the dump covers the R4 types (${full.summary.types})`);
  assert.ok(full.summary.issues >= 3, 'the broken resources fail validation');
  assert.deepEqual(trimmed.summary, full.summary);
  const hash = (s: string) => createHash('sha256').update(s).digest('hex');
  assert.equal(hash(trimmed.text), hash(full.text));
});
