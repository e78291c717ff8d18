// Issue 15: the gateway's heap cap (src/ops/runtime.ts) is what `npm start`, the image and the bench run with,
// so the peak RSS the bench reports is the one a deployment gets.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { GATEWAY_NODE_FLAGS, missingNodeFlags } from '../../src/ops/runtime.ts';

const read = (path: string): string => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

test('npm start, the Dockerfile and the benches start the gateway with GATEWAY_NODE_FLAGS', () => {
  assert.ok(GATEWAY_NODE_FLAGS.some((f) => /^--max-old-space-size=\d+$/.test(f)));
  const start = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts.start;
  assert.equal(start, `node ${GATEWAY_NODE_FLAGS.join(' ')} bin/disclosure-gateway.js serve`);
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(read('Dockerfile'))?.[1];
  assert.deepEqual(JSON.parse(entrypoint ?? '[]'), ['node', ...GATEWAY_NODE_FLAGS, 'bin/disclosure-gateway.js']);
  assert.match(read('bench/load.ts'), /if \(req\.role === 'gateway'\) execArgv\.push\(\.\.\.GATEWAY_NODE_FLAGS\)/);
  assert.match(read('bench/export.ts'), /role === 'gateway' \? GATEWAY_NODE_FLAGS : \[\]/);
});

test('a start without the heap flags is named (serve warns); flags given another value, or in NODE_OPTIONS, count as set', () => {
  assert.deepEqual(missingNodeFlags([], ''), [...GATEWAY_NODE_FLAGS]);
  assert.deepEqual(missingNodeFlags([...GATEWAY_NODE_FLAGS], ''), []);
  assert.deepEqual(missingNodeFlags(['--max-old-space-size=1024', '--v8-pool-size=2', '--heap-growing-percent=100'], '--max_semi_space_size=64'), []);
  assert.deepEqual(missingNodeFlags(['--max-old-space-size=1024'], '--v8-pool-size=1'), ['--max-semi-space-size=32', '--heap-growing-percent=150']);
});
