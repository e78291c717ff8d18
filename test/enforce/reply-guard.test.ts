// Issue 17 by construction (src/enforce/reply.ts): a Reply holds only Releasable content, and the brand is
// minted in exactly four places. This test keeps it so: no other file may cast to Releasable or call the
// decision's minting function, so an undecided upstream body cannot type-check as a reply.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(path)));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

test('Releasable is minted only by the decision and by the gateway’s own authored content', async () => {
  const files = await sources('src');
  const mint = /\bdecidedRelease\s*\(/;
  const cast = /as\s+(unknown\s+as\s+)?Releasable\b/;
  const offenders: string[] = [];
  for (const file of files) {
    const text = await readFile(file, 'utf8');
    const isReply = file.endsWith(join('enforce', 'reply.ts'));
    if (!isReply && cast.test(text)) offenders.push(`${file}: casts to Releasable`);
    if (!isReply && !file.endsWith(join('enforce', 'disclose.ts')) && mint.test(text)) offenders.push(`${file}: mints a decided release`);
  }
  assert.deepEqual(offenders, []);
  // The guard can fail: the decision path itself mints, so the pattern is live.
  assert.ok(mint.test(await readFile(join('src', 'enforce', 'disclose.ts'), 'utf8')));
});

test('a Reply body is typed Releasable and the upstream client never produces one', async () => {
  const exchange = await readFile(join('src', 'enforce', 'exchange.ts'), 'utf8');
  assert.match(exchange, /readonly body\?: Releasable;/);
  for (const file of await sources(join('src', 'upstream'))) assert.ok(!/\bReleasable\b|from '\.\.\/enforce\//.test(await readFile(file, 'utf8')), file);
  // The upstream's parsed body is opaque until upstreamResource() reads it as a resource to decide.
  assert.match(await readFile(join('src', 'upstream', 'client.ts'), 'utf8'), /json\?: UpstreamJson;/);
});
