import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import fc from 'fast-check';
import { flat } from '../../src/fhir/flat.ts';

test('flat reads exactly as the template literal, whatever is interpolated', () => {
  const value = fc.oneof(fc.string({ unit: 'binary' }), fc.integer(), fc.double(), fc.constant(undefined), fc.constant(null), fc.boolean());
  fc.assert(
    fc.property(fc.string(), value, fc.string(), value, (a, x, b, y) => {
      // Every count of values flat handles apart (0–3) and the general one (4, 5).
      assert.equal(flat`${x}`, `${x}`);
      assert.equal(flat`${a}/${x}`, `${a}/${x}`);
      assert.equal(flat`${a}${x}/${b}`, `${a}${x}/${b}`);
      assert.equal(flat`${a}${x}/${b}?${y}`, `${a}${x}/${b}?${y}`);
      assert.equal(flat`(${a}${x}/${b}?${y}#${a})`, `(${a}${x}/${b}?${y}#${a})`);
    }),
  );
  assert.equal(flat`plain`, 'plain');
});

test('flat returns one flat string where a template literal returns a concatenation (V8 itself says so)', () => {
  // %StringIsFlat needs --allow-natives-syntax, so the check runs in a child on the same Node.
  const module = fileURLToPath(new URL('../../src/fhir/flat.ts', import.meta.url));
  const script = `
    const { flat } = await import(${JSON.stringify(module)});
    const base = 'http://127.0.0.1:' + (1000 + Math.floor(Math.random() * 9000)) + '/fhir';
    const id = 'obs-' + Math.random().toString(36).slice(2);
    const built = \`\${base}/Observation/\${id}\`;
    const joined = flat\`\${base}/Observation/\${id}\`;
    const general = flat\`\${base}/\${'Observation'}/\${id}/_history/\${1}?\${'x'}\`;
    console.log(JSON.stringify({ template: %StringIsFlat(built), flat: %StringIsFlat(joined) && %StringIsFlat(general), same: built === joined }));`;
  const out = execFileSync(process.execPath, ['--allow-natives-syntax', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.deepEqual(JSON.parse(out), { template: false, flat: true, same: true });
});
