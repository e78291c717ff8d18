// Child of serialise-flat.test.ts, run with --allow-natives-syntax: every Bundle the gateway serialises for a
// client is checked, string by string, before JSON.stringify sees it. A string built by concatenation and not
// yet read is not flat (%StringIsFlat), and one such string puts the whole reply on V8's slow path (src/fhir/flat.ts).
import type { Resource } from '@medplum/fhirtypes';
import { pou, startHarness } from '../support/harness.ts';

const isFlat = new Function('s', 'return %StringIsFlat(s)') as (s: string) => boolean;
const notFlat: string[] = [];
let checked = 0;
let gatewayBase = '';

function check(value: unknown, path: string): void {
  if (typeof value === 'string') {
    if (!isFlat(value)) notFlat.push(path);
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => check(item, `${path}[${i}]`));
  } else if (value !== null && typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) check(inner, `${path}.${key}`);
  }
}

const stringify = JSON.stringify;
JSON.stringify = function (this: unknown, value: unknown, ...rest: unknown[]): string {
  const bundle = value as { resourceType?: unknown; link?: { url?: unknown }[] } | null;
  // The gateway's replies only: the embedded upstream in this process answers Bundles too.
  const self = bundle?.resourceType === 'Bundle' ? bundle.link?.[0]?.url : undefined;
  if (typeof self === 'string' && gatewayBase !== '' && self.startsWith(gatewayBase)) {
    checked++;
    check(value, 'Bundle');
  }
  return (stringify as (...args: unknown[]) => string).call(this, value, ...rest);
} as typeof JSON.stringify;

const resources: Resource[] = [{ resourceType: 'Patient', id: 'flat-p' }];
for (let i = 0; i < 6; i++) {
  resources.push({ resourceType: 'Observation', id: `flat-obs-${i}-with-a-long-id`, status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/flat-p' }, effectiveDateTime: `2024-01-0${i + 1}` } as Resource);
}
const h = await startHarness({ resources });
gatewayBase = h.base;
const token = await h.token({ sub: 'dr', client_id: 'app', fhirUser: 'Practitioner/dr', scope: 'user/*.rs', extensions: pou('TREAT') });
const first = await h.request('Observation?patient=flat-p&_count=2', { token });
const next = (first.body as { link?: { relation: string; url: string }[] }).link?.find((l) => l.relation === 'next')?.url;
if (next) await h.request(next, { token });
await h.request('Observation/flat-obs-1-with-a-long-id/_history', { token });
await h.request('Patient/flat-p/$everything', { token });
await h.request('Patient/flat-p/Observation?_count=3', { token });
await h.close();
process.stdout.write(`${JSON.stringify({ checked, notFlat, next: next !== undefined })}\n`);
