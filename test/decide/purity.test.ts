// Issue 18: decide/ is pure — no I/O, no express, nothing from the rooms around it, no module state.
// Reads every source file under src/decide and checks what it imports and what it declares at top level.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { specifiers } from '../support/imports.ts';

const root = resolve(import.meta.dirname, '../..');
const decideDir = join(root, 'src/decide');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

const forbiddenPackages = /^(node:)?(fs|fs\/promises|net|http|https|http2|dgram|dns|tls|child_process|worker_threads)$|^undici(\/|$)|^express(\/|$)/;
const forbiddenFolders = ['src/policy/', 'src/enforce/', 'src/audit/', 'src/upstream/', 'src/ops/', 'src/embedded/', 'src/console/'];
const forbiddenFiles = ['src/fhir/definitions.ts', 'src/app.ts', 'src/main.ts'];

/** Why a specifier is not allowed in decide/, or undefined when it is. */
function refusal(file: string, spec: string): string | undefined {
  if (forbiddenPackages.test(spec)) return `imports ${spec} (I/O or HTTP)`;
  if (!spec.startsWith('.')) return undefined;
  const target = relative(root, resolve(file, '..', spec)).split('\\').join('/');
  if (forbiddenFolders.some((f) => target.startsWith(f))) return `imports ${target} (decide/ must not reach outside the decision room)`;
  if (forbiddenFiles.includes(target)) return `imports ${target} (does I/O)`;
  return undefined;
}

/** Top-level declarations that hold mutable module state. */
function moduleState(text: string): string[] {
  const found: string[] = [];
  for (const line of text.split('\n')) {
    if (/^(export\s+)?(let|var)\s/.test(line)) found.push(line.trim());
    // A module-level Map/Set/WeakMap/array is a cache unless typed read-only (ReadonlyMap/ReadonlySet/readonly T[]).
    else if (/^(export\s+)?const\s+\w+\s*=\s*new\s+(Weak)?(Map|Set)\b/.test(line)) found.push(line.trim());
    else if (/^(export\s+)?const\s+\w+\s*:\s*(Weak)?(Map|Set)</.test(line)) found.push(line.trim());
  }
  return found;
}

describe('decide/ purity (issue 18)', () => {
  const files = sources(decideDir);
  test('there are source files to check', () => assert.ok(files.length >= 5, files.join(', ')));
  for (const file of files) {
    const name = relative(root, file);
    const text = readFileSync(file, 'utf8');
    test(`${name} imports nothing that does I/O or belongs to another room`, () => {
      const problems = specifiers(text)
        .map((s) => refusal(file, s))
        .filter((p): p is string => p !== undefined);
      assert.deepEqual(problems, []);
    });
    test(`${name} keeps no module-level mutable state`, () => assert.deepEqual(moduleState(text), []));
  }
  test('the checks catch what they are meant to catch', () => {
    const file = join(decideDir, 'x.ts');
    assert.ok(refusal(file, 'node:fs'));
    assert.ok(refusal(file, 'undici'));
    assert.ok(refusal(file, 'express'));
    assert.ok(refusal(file, '../fhir/definitions.ts'));
    assert.ok(refusal(file, '../policy/store.ts'));
    assert.ok(refusal(file, '../enforce/disclose.ts'));
    assert.ok(refusal(file, '../audit/build.ts'));
    assert.ok(refusal(file, '../upstream/client.ts'));
    assert.equal(refusal(file, '../fhir/references.ts'), undefined);
    assert.equal(refusal(file, './types.ts'), undefined);
    assert.deepEqual(specifiers("import { a } from 'node:fs';\nexport { b } from './y.ts';\nimport type { C } from '../policy/z.ts';"), ['node:fs', './y.ts', '../policy/z.ts']);
    assert.equal(moduleState('let loaded = false;').length, 1);
    assert.equal(moduleState('const remembered = new WeakMap<object, string>();').length, 1);
    assert.equal(moduleState('const cache: Map<string, number> = new Map();').length, 1);
    assert.equal(moduleState("const codes: ReadonlySet<string> = new Set(['a']);").length, 0);
  });
});
