// Issue 15: journal bytes and CPU per 100-entry request for the audit path alone (build, serialise,
// deflate, hash), in process, measured as process CPU time (robust on a shared machine, unlike wall
// time). Records shaped like the gateway bench's cases: (a) 100 released; (b) 100 released (10 of them
// redacted) and 50 withheld by three rules, two consents deciding. Versions are random UUIDs, as
// @medplum/fhir-router assigns them; ids as the bench load names them.
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { constants, deflateRaw, deflateRawSync } from 'node:zlib';
import { buildAuditEvents } from '../src/audit/build.ts';
import type { DisclosureRecord } from '../src/audit/record.ts';
import { eventPayload, GENESIS_HASH, journalLine, type EventPayload } from '../src/audit/segment.ts';
import type { RequestContext } from '../src/provenance/context.ts';
import { fmt, machine, table } from './setup.ts';

const versions = Array.from({ length: 300 }, () => randomUUID());
const context: RequestContext = {
  requestId: 'bench',
  clientId: 'bench-client',
  subject: 'bench-dr-a',
  issuer: 'https://issuer.bench',
  grantedScopes: ['user/Observation.rs'],
  scopes: [],
  kinds: new Set(['user']),
  fhirUser: 'Practitioner/bench-dr-a',
  purposeOfUse: ['TREAT'],
  purposeSource: 'claim',
  breakGlass: { inEffect: false, requested: false },
};

function record(kind: 'a' | 'b'): DisclosureRecord {
  const ref = (i: number) => ({ reference: `Observation/bench-consents-obs-${i}`, versionId: versions[i] });
  const released = Array.from({ length: 100 }, (_, i) => ref(i));
  const deny = (rule: string) => [{ layer: 'consent' as const, effect: 'deny' as const, rule, provision: 'provision', reason: 'provision denies (deepest matching provision)' }];
  const withheld = kind === 'a' ? [] : Array.from({ length: 50 }, (_, i) => ({ disposition: 'withheld' as const, ...ref(200 + i), trace: deny(`Consent/bench-consents-c${1 + (i % 3)}`) }));
  const redacted = kind === 'a' ? [] : released.slice(0, 10).map((r) => ({ disposition: 'redacted' as const, ...r, paths: ['note[1]'], trace: [{ layer: 'implicit-policy' as const, effect: 'redact' as const, rule: 'implicit:all-normal', reason: 'element note[1]: no consent applies' }] }));
  const consentDecisions = kind === 'a' ? [] : [1, 2].map((n) => ({ consent: `Consent/bench-consents-c${n}`, provision: 'provision', effect: 'deny' as const, reason: 'provision denies (deepest matching provision)' }));
  return {
    requestId: randomUUID(),
    recorded: new Date().toISOString(),
    interaction: 'search-type',
    method: 'GET',
    query: '/fhir/Observation?patient=bench-consents&_count=100',
    resourceType: 'Observation',
    outcome: 'success',
    httpStatus: 200,
    context,
    clientId: 'bench-client',
    clientAddress: '127.0.0.1',
    // One disposition per resource: in (b) the first 10 released are redacted.
    patients: [{ patientId: 'bench-consents', dispositions: [...redacted, ...released.slice(redacted.length).map((r) => ({ disposition: 'released' as const, ...r })), ...withheld], ignored: [], consentDecisions }],
  };
}

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const opts = { gatewayDevice: 'Device/disclosure-gateway', site: 'http://127.0.0.1:8080', address: '127.0.0.1:8080' };

/** Journal bytes of one request; `deflate` false stores every event as plain JSON (the pre-deflate journal). */
function journalBytes(r: DisclosureRecord, deflate: boolean): number {
  let bytes = 0;
  for (const event of buildAuditEvents(r, opts)) {
    // As the journal serialises it (segment.ts eventPayload); the plain-JSON row skips the deflate.
    const payload: EventPayload = deflate ? eventPayload(event) : { json: Buffer.from(JSON.stringify(event), 'utf8') };
    for (const part of journalLine(1, GENESIS_HASH, payload).parts) bytes += part.length;
  }
  return bytes;
}

/** Least CPU µs per call over five rounds of `n` calls, after a warm-up. */
function cpuPerCall(fn: () => unknown, n = 300): number {
  for (let i = 0; i < n; i++) fn();
  let best = Infinity;
  for (let round = 0; round < 5; round++) {
    const start = cpuMs();
    for (let i = 0; i < n; i++) fn();
    best = Math.min(best, ((cpuMs() - start) * 1000) / n);
  }
  return best;
}

export async function run(): Promise<void> {
  const rows: string[][] = [];
  for (const kind of ['a', 'b'] as const) {
    const r = record(kind);
    const build = cpuPerCall(() => buildAuditEvents(r, opts));
    for (const deflate of [false, true]) {
      rows.push([`(${kind}) ${kind === 'a' ? '100 released' : '100 released (10 red.), 50 withheld'}`, deflate ? 'deflated ≥ 1 KiB' : 'plain JSON', fmt.n(journalBytes(r, deflate) / 1024, 1), fmt.n(build), fmt.n(cpuPerCall(() => journalBytes(r, deflate)))]);
    }
  }
  console.log(`\n${machine()}\n`);
  console.log(table(['request', 'journal lines', 'KB / request', 'build µs CPU', 'build + serialise + deflate + hash µs CPU'], rows));
  await deflateForms(Buffer.from(JSON.stringify(buildAuditEvents(record('a'), opts)[0])));
}

/**
 * Why the journal deflates in place: process CPU (all threads) per deflate of (a)'s event, in place against
 * zlib's async form on libuv's pool (three in flight, as under load), and the async form's time on this thread.
 */
async function deflateForms(json: Buffer, n = 2000): Promise<void> {
  const z = { level: constants.Z_BEST_SPEED };
  const inPlace = cpuPerCall(() => deflateRawSync(json, z), n);
  let best = { cpu: Infinity, thread: Infinity };
  for (let round = 0; round < 3; round++) {
    let thread = 0;
    const start = cpuMs();
    for (let i = 0; i < n / 3; i++) {
      const calls: Promise<unknown>[] = [];
      for (let k = 0; k < 3; k++) {
        const at = performance.now();
        calls.push(new Promise((done) => deflateRaw(json, z, done)));
        thread += performance.now() - at;
      }
      await Promise.all(calls);
    }
    const cpu = ((cpuMs() - start) * 1000) / n;
    if (cpu < best.cpu) best = { cpu, thread: (thread * 1000) / n };
  }
  console.log(`\ndeflate of (a)'s ${(json.length / 1024).toFixed(1)} KB event, µs of process CPU: in place ${fmt.n(inPlace)}; zlib's async form ${fmt.n(best.cpu)}, of which ${fmt.n(best.thread)} on the calling thread`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await run();
