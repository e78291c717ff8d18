// Paging cursors (SPEC §5) sealed by CursorCodec: every cursor has its own IV, opens to what was sealed,
// and is refused when altered or presented by another client.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CursorCodec, type CursorState } from '../../src/enforce/cursor.ts';
import { GatewayError } from '../../src/fhir/outcome.ts';
import type { RequestContext } from '../../src/provenance/context.ts';

const owner = { requestId: 'r1', clientId: 'app-1', subject: 'Practitioner/dr-a' } as RequestContext;
const state = (skip: number): CursorState => ({
  interaction: 'search-type',
  resourceType: 'Observation',
  upstream: 'Observation?patient=p1&_count=106',
  skip,
  count: 100,
  query: 'patient=p1&_count=100',
  includes: [],
  criteria: [['patient', 'p1']],
  view: {},
});

describe('paging cursors', () => {
  test('2,100 cursors (the IV pool refilled twice) each have their own IV and open to what was sealed', async () => {
    const codec = new CursorCodec('a shared secret');
    const ivs = new Set<string>();
    const cursors: string[] = [];
    for (let i = 0; i < 2100; i++) {
      const cursor = await codec.seal(state(i), owner);
      const parts = cursor.split('.');
      assert.equal(parts.length, 5, 'a compact JWE');
      ivs.add(parts[2]);
      cursors.push(cursor);
    }
    assert.equal(ivs.size, cursors.length, 'no IV repeats under one key (AES-GCM forbids it)');
    for (const i of [0, 1023, 1024, 2047, 2048, 2099]) assert.deepEqual(await codec.open(cursors[i], owner), state(i));
  });

  test('another instance with the same secret opens it; an altered cursor or another client is refused', async () => {
    const cursor = await new CursorCodec('a shared secret').seal(state(7), owner);
    const other = new CursorCodec('a shared secret');
    assert.deepEqual(await other.open(cursor, owner), state(7));
    const parts = cursor.split('.');
    const flipped = Buffer.from(parts[3], 'base64url');
    flipped[0] ^= 1;
    const altered = [parts[0], parts[1], parts[2], flipped.toString('base64url'), parts[4]].join('.');
    await assert.rejects(other.open(altered, owner), (err: GatewayError) => err.status === 400);
    await assert.rejects(other.open(cursor, { ...owner, clientId: 'app-2' }), (err: GatewayError) => err.status === 403);
    await assert.rejects(new CursorCodec('another secret').open(cursor, owner), (err: GatewayError) => err.status === 400);
  });
});
