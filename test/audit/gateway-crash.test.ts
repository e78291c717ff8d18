// SPEC §6 under a crash: the gateway is SIGKILLed in the middle of concurrent traffic. Every response a
// client received has its events in the journal, the chain verifies, and after a restart the forwarder
// delivers every journal event to the upstream exactly once.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { verifyJournal } from '../../src/audit/verify.ts';
import { startEmbeddedUpstream } from '../../src/embedded/upstream/index.ts';
import { journalEvents, requestIdOf } from '../reliability/support.ts';
import { freePort, pou } from '../support/harness.ts';

const CHILD = fileURLToPath(new URL('./gateway-child.ts', import.meta.url));
const ISSUER = 'https://issuer.crash.test';
let dir = '';
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function startChild(args: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      if (line === 'ready') resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`gateway child exited early (${code})`)));
  });
}

test('SIGKILL mid-traffic: every received response is audited, the chain verifies, forwarding after restart is exactly once', { timeout: 120_000 }, async () => {
  dir = await mkdtemp(join(tmpdir(), 'dg-gateway-crash-'));
  const resources: Resource[] = [{ resourceType: 'Patient', id: 'pc' }];
  for (let i = 0; i < 30; i++) resources.push({ resourceType: 'Observation', id: `oc${i}`, status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pc' } } as Resource);
  const upstream = await startEmbeddedUpstream({ resources });
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES256', use: 'sig' }] };
  try {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}/fhir`;
    const args = (forward: string) => [upstream.url, dir, String(port), ISSUER, JSON.stringify(jwks), forward];
    const token = await new SignJWT({ sub: 'dr', client_id: 'crash-client', fhirUser: 'Practitioner/dr', scope: 'user/*.rs', extensions: pou('TREAT') })
      .setProtectedHeader({ alg: 'ES256', kid: 'k' })
      .setIssuer(ISSUER)
      .setAudience(base)
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(privateKey);

    const child = await startChild(args('false'));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_c, signal) => resolve(signal)));
    const received: string[] = [];
    let stop = false;
    let sent = 0;
    const worker = async (w: number) => {
      for (let i = 0; !stop; i++) {
        const requestId = `crash-${w}-${i}`;
        sent++;
        try {
          const path = i % 2 === 0 ? 'Observation?patient=pc&_count=10' : `Observation/oc${i % 30}`;
          const res = await fetch(`${base}/${path}`, { headers: { authorization: `Bearer ${token}`, 'x-request-id': requestId } });
          await res.arrayBuffer();
          if (res.status === 200) received.push(requestId);
        } catch {
          // the gateway died mid-request: that response was never received
        }
      }
    };
    const workers = Array.from({ length: 8 }, (_, w) => worker(w));
    // Kill only once traffic is well under way (bounded: at most ~20 s of requests).
    for (let waited = 0; received.length < 300 && waited < 200; waited++) await new Promise((r) => setTimeout(r, 100));
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL');
    stop = true;
    await Promise.all(workers);
    assert.ok(received.length >= 300, `traffic was under way when the gateway died (${received.length} of ${sent} received)`);

    const journaled = new Set((await journalEvents(dir)).map(requestIdOf));
    assert.deepEqual(received.filter((id) => !journaled.has(id)), [], 'every received response has its events in the journal');
    const verified = await verifyJournal(dir);
    assert.equal(verified.ok, true, JSON.stringify(verified));

    // Restart with forwarding: the journal recovers and every event reaches the upstream once.
    const restarted = await startChild(args('true'));
    try {
      const events = await journalEvents(dir);
      const expected = new Set(events.map((e) => e.id));
      let stored: string[] = [];
      for (let attempt = 0; attempt < 150; attempt++) {
        const bundle = (await (await fetch(`${upstream.url}/AuditEvent?_count=1000&_elements=id`)).json()) as Bundle;
        stored = (bundle.entry ?? []).map((e) => e.resource?.id as string);
        if (stored.filter((id) => expected.has(id)).length >= expected.size) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      const delivered = stored.filter((id) => expected.has(id));
      assert.equal(delivered.length, expected.size, 'every journal event was delivered');
      assert.equal(new Set(delivered).size, delivered.length, 'no event was delivered twice');
      const histories = await Promise.all(
        events.slice(0, 20).map(async (e) => ((await (await fetch(`${upstream.url}/AuditEvent/${e.id}/_history`)).json()) as Bundle).entry?.length ?? 0),
      );
      assert.ok(histories.every((n) => n === 1), `each event is stored once, not rewritten (${histories.join(',')})`);
    } finally {
      restarted.kill('SIGTERM');
      await new Promise((r) => restarted.once('exit', r));
    }
  } finally {
    await upstream.close();
  }
});
