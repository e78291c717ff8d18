// Issue 18: one mapping of upstream failures to the gateway's answer, used by every caller (SPEC §5).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UpstreamError, upstreamFailure, type UpstreamRefusalPolicy } from '../../src/upstream/index.ts';

const wording = { failed: 'the upstream server failed', refused: 'the upstream server refused it' };
const write: UpstreamRefusalPolicy = { kept: [404, 409, 412], otherwise: 400 };
const search: UpstreamRefusalPolicy = { kept: [400] };

describe('upstreamFailure', () => {
  const rows: { name: string; failure: unknown; policy?: UpstreamRefusalPolicy; status: number; issue: string; text: string }[] = [
    { name: 'timeout → 504', failure: new UpstreamError('timeout', 'x'), status: 504, issue: 'timeout', text: 'the upstream server did not answer in time' },
    { name: 'unreachable (refused connection) → 503', failure: new UpstreamError('unreachable', 'x', { status: 503 }), status: 503, issue: 'exception', text: wording.failed },
    { name: 'bad body → 502', failure: new UpstreamError('bad-body', 'x'), status: 502, issue: 'exception', text: wording.failed },
    { name: 'a read the gateway needed answered 403 → 502', failure: 403, status: 502, issue: 'exception', text: wording.failed },
    { name: '5xx → 502 whatever the policy', failure: 500, policy: write, status: 502, issue: 'exception', text: wording.failed },
    { name: 'an unusable 200 → 502', failure: 200, status: 502, issue: 'exception', text: wording.failed },
    { name: 'something else thrown → 502', failure: new Error('boom'), status: 502, issue: 'exception', text: wording.failed },
    { name: 'search rejected (400) → 400', failure: 400, policy: search, status: 400, issue: 'invalid', text: wording.refused },
    { name: 'search 403 → 502', failure: 403, policy: search, status: 502, issue: 'exception', text: wording.failed },
    { name: 'write conflict 412 → 412', failure: 412, policy: write, status: 412, issue: 'conflict', text: wording.refused },
    { name: 'write on a gone resource 410 → 404', failure: 410, policy: write, status: 404, issue: 'not-found', text: wording.refused },
    { name: 'write refused 422 → 400', failure: 422, policy: write, status: 400, issue: 'invalid', text: wording.refused },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const err = upstreamFailure(row.failure, wording, row.policy);
      assert.equal(err.status, row.status);
      assert.equal(err.issueCode, row.issue);
      assert.equal(err.message, row.text);
    });
  }
});
