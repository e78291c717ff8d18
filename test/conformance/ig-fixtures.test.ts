// Issue 13: every vendored IG artifact (fixtures/ig) has its row in docs/conformance.md, every row names
// an artifact that is there, and every test a row names exists.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';

const root = new URL('../../', import.meta.url).pathname;
const igDir = join(root, 'fixtures/ig');
const table = readFileSync(join(root, 'docs/conformance.md'), 'utf8').split('\n').filter((line) => line.startsWith('| ') && !line.startsWith('| IG '));

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.json') ? [relative(igDir, join(dir, e.name))] : []));
}

describe('docs/conformance.md covers fixtures/ig', () => {
  const rows = table.map((line) => line.split(' | ').map((cell) => cell.replace(/^\| |`| \|$/g, '')));
  const artifacts = rows.map((cells) => cells[1]);

  test('one row per vendored artifact, and no row without its artifact', () => {
    assert.deepEqual([...artifacts].sort(), files(igDir).sort());
  });

  test('every row names a test that exists', () => {
    for (const cells of rows) {
      const tests = [...cells[4].matchAll(/test\/[\w/.-]+\.test\.ts/g)].map((m) => m[0]);
      assert.ok(tests.length > 0, `${cells[1]} names no test`);
      for (const t of tests) assert.ok(existsSync(join(root, t)), `${cells[1]}: ${t} does not exist`);
    }
  });

  test('every artifact folder says where it came from, its version and its licence', () => {
    const readme = readFileSync(join(igDir, 'README.md'), 'utf8');
    for (const folder of readdirSync(igDir, { withFileTypes: true }).filter((e) => e.isDirectory())) {
      const row = readme.split('\n').find((line) => line.startsWith(`| \`${folder.name}/\``));
      assert.ok(row, `${folder.name} has no README row`);
      assert.match(row, /licen[cs]e|CC0|CC BY/i);
    }
  });
});
