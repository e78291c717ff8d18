// Audit journal throughput (SPEC §6): 100 concurrent appenders, each appending the events of one
// request and waiting for durability, against the same work with no journal. Group commit should keep
// fsyncs per event far below 1.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { buildAuditEvents } from '../src/audit/build.ts';
import { AuditJournal } from '../src/audit/journal.ts';
import type { DisclosureRecord } from '../src/audit/record.ts';

const APPENDERS = 100;
const REQUESTS_PER_APPENDER = 50;

function record(i: number): DisclosureRecord {
  return {
    requestId: `bench-${i}`,
    recorded: new Date().toISOString(),
    interaction: 'search-type',
    method: 'GET',
    query: '/fhir/Observation?patient=P1&_count=20',
    resourceType: 'Observation',
    outcome: 'success',
    httpStatus: 200,
    clientId: 'bench-app',
    clientAddress: '127.0.0.1',
    patients: [
      {
        patientId: 'P1',
        dispositions: Array.from({ length: 20 }, (_, k) => ({ disposition: 'released' as const, reference: `Observation/o${k}`, versionId: '1' })),
        ignored: [],
        consentDecisions: [],
      },
    ],
  };
}

interface Row {
  mode: string;
  requests: number;
  events: number;
  seconds: number;
  fsyncs: number;
}

async function measure(mode: string, sink: ((events: ReturnType<typeof buildAuditEvents>) => Promise<void>) | undefined, fsyncs: () => number): Promise<Row> {
  let events = 0;
  let seq = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: APPENDERS }, async () => {
      for (let r = 0; r < REQUESTS_PER_APPENDER; r++) {
        const built = buildAuditEvents(record(seq++), { gatewayDevice: 'Device/disclosure-gateway' });
        events += built.length;
        if (sink) await sink(built);
        else await new Promise((resolve) => setImmediate(resolve));
      }
    }),
  );
  return { mode, requests: APPENDERS * REQUESTS_PER_APPENDER, events, seconds: (performance.now() - start) / 1000, fsyncs: fsyncs() };
}

export async function run(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-audit-'));
  try {
    const none = await measure('build only, no journal', undefined, () => 0);
    const journal = await AuditJournal.open(dir);
    const journaled = await measure('build + journal (fsync)', (events) => journal.append(events), () => journal.stats().fsyncs);
    await journal.close();
    console.log(`audit journal: ${APPENDERS} concurrent appenders × ${REQUESTS_PER_APPENDER} requests`);
    console.table(
      [none, journaled].map((row) => ({
        mode: row.mode,
        'requests/s': Math.round(row.requests / row.seconds),
        'events/s': Math.round(row.events / row.seconds),
        fsyncs: row.fsyncs,
        'fsyncs/event': row.events === 0 ? 0 : Number((row.fsyncs / row.events).toFixed(4)),
        'events/fsync': row.fsyncs === 0 ? '-' : Number((row.events / row.fsyncs).toFixed(1)),
      })),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await run();
