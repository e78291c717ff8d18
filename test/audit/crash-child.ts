// Child process of crash.test.ts: appends events from 8 concurrent appenders forever and prints
// `ack <id>` for each event once its append resolved (durable); the parent SIGKILLs it mid-flight.
// With an upstream URL it also forwards, so the kill can land mid-batch too.
import type { Bundle } from '@medplum/fhirtypes';
import { AuditForwarder } from '../../src/audit/forwarder.ts';
import { AuditJournal } from '../../src/audit/journal.ts';
import { journalEvent } from './fixtures.ts';

const [dir, upstreamUrl] = process.argv.slice(2);
const journal = await AuditJournal.open(dir, { maxSegmentBytes: 64 * 1024 });
if (upstreamUrl !== undefined) {
  const postBatch = async (batch: Buffer): Promise<Bundle> => {
    const response = await fetch(upstreamUrl, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: new Uint8Array(batch) });
    if (!response.ok) throw new Error(`upstream answered ${response.status}`);
    return (await response.json()) as Bundle;
  };
  new AuditForwarder({ dir, journal, postBatch, batchSize: 25, intervalMs: 50 }).start();
}
let n = 0;
async function appender(worker: number): Promise<never> {
  for (;;) {
    const ids = Array.from({ length: 1 + (n % 3) }, () => `crash-${worker}-${++n}`);
    await journal.append(ids.map(journalEvent));
    process.stdout.write(ids.map((id) => `ack ${id}\n`).join(''));
  }
}
await Promise.all(Array.from({ length: 8 }, (_, w) => appender(w)));
