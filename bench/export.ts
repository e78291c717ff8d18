// `npm run bench -- export` (issue 16): lines per second of a Bulk Data file through the gateway — every
// line decided under its patient's consents, withheld lines dropped, inline labels redacted, the download
// audited — against a plain streaming proxy that only parses and re-serialises each line, and the gateway's
// peak RSS at 10,000 and 100,000 lines (goal ≤ 300 MB, flat). Gateway and proxy each run in their own child
// process (so RSS is theirs alone); a canned upstream in this process serves the export, the NDJSON and
// the policy searches (four consents per patient, a third of the lines withheld).
import { fork, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JSONWebKeySet } from 'jose';
import type { Bundle, Observation, Resource } from '@medplum/fhirtypes';
import { createGateway } from '../src/app.ts';
import { policySchema } from '../src/config/policy.ts';
import { settingsSchema } from '../src/config/settings.ts';
import { createLogger } from '../src/ops/logger.ts';
import { createUpstreamClient } from '../src/upstream/index.ts';
import { GATEWAY_NODE_FLAGS } from '../src/ops/runtime.ts';
import { syntheticObservation, withholdingConsents } from './data.ts';
import { createIssuer, fmt, ISSUER, machine, table } from './setup.ts';
import { UsageError } from './usage.ts';
import { compiledBenchScript } from './build.ts';

const PATIENTS = 1_000;
/** Downloads per proxy and size (the gateway's first is the cold one). */
const RUNS = 3;
const template: Observation = {
  resourceType: 'Observation',
  status: 'final',
  category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs', display: 'vital-signs' }] }],
  code: { coding: [{ system: 'http://loinc.org', code: '29463-7', display: 'Body Weight' }], text: 'Body Weight' },
  valueQuantity: { value: 72.4, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
  interpretation: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: 'N', display: 'Normal' }] }],
  referenceRange: [{ low: { value: 50, unit: 'kg' }, high: { value: 90, unit: 'kg' }, text: 'adult reference range' }],
  performer: [{ reference: 'Practitioner/bench-nurse', display: 'Bench Nurse' }],
};

// ---- the canned upstream (this process) ----

function cannedLine(i: number): string {
  const patient = `bx-p${i % PATIENTS}`;
  return JSON.stringify(syntheticObservation(template, patient, Math.floor(i / PATIENTS), 'withholding'));
}

/** The file's bytes, made before timing starts: what is measured is the proxies, not the line generator. */
function cannedFile(lines: number): Buffer[] {
  const chunks: Buffer[] = [];
  let chunk = '';
  for (let i = 0; i < lines; i++) {
    chunk += `${cannedLine(i)}\n`;
    if (chunk.length < 256 * 1024) continue;
    chunks.push(Buffer.from(chunk));
    chunk = '';
  }
  if (chunk) chunks.push(Buffer.from(chunk));
  return chunks;
}

async function writeFile(res: ServerResponse, chunks: readonly Buffer[]): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/fhir+ndjson' });
  for (const chunk of chunks) if (!res.write(chunk)) await new Promise((ok) => res.once('drain', ok));
  res.end();
}

function searchset(resources: readonly Resource[]): string {
  return JSON.stringify({ resourceType: 'Bundle', type: 'searchset', entry: resources.map((resource) => ({ resource, search: { mode: 'match' } })) } satisfies Bundle);
}

async function startCannedUpstream(lines: number): Promise<{ url: string; server: Server }> {
  let base = '';
  const file = cannedFile(lines);
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://canned.invalid');
    const path = url.pathname.replace(/^\/fhir\/?/, '');
    const json = (status: number, body: string, headers: Record<string, string> = {}) => res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers }).end(body);
    if (path.endsWith('$export')) return void res.writeHead(202, { 'content-location': `${base}/$status/1` }).end();
    if (path === '$status/1') return json(200, JSON.stringify({ transactionTime: new Date().toISOString(), request: `${base}/$export`, requiresAccessToken: true, output: [{ type: 'Observation', url: `${base}/$file/${lines}` }], error: [] }));
    if (path === `$file/${lines}`) return void writeFile(res, file);
    if (path === 'Consent') return json(200, searchset(withholdingConsents((url.searchParams.get('patient') ?? '').replace('Patient/', ''))));
    if (!path.includes('/')) return json(200, searchset([]));
    json(404, JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
  return { url: base, server };
}

// ---- the children: the gateway, or the plain parse-and-re-serialise proxy ----

interface ChildReady {
  readonly url: string;
}

async function childGateway(upstreamUrl: string, jwks: JSONWebKeySet): Promise<ChildReady> {
  const auditDir = await mkdtemp(join(tmpdir(), 'dg-bench-export-'));
  const port = await new Promise<number>((ok) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const p = (probe.address() as AddressInfo).port;
      probe.close(() => ok(p));
    });
  });
  const settings = { ...settingsSchema.parse({ PORT: String(port), UPSTREAM_URL: upstreamUrl, AUDIT_DIR: auditDir, LOG_LEVEL: 'silent', AUDIT_FORWARD: 'false' }), policy: policySchema.parse({}) };
  const gateway = await createGateway({ settings: { ...settings, AUTH_ISSUER: ISSUER }, embedded: { upstreamUrl, jwks, issuer: ISSUER }, logger: createLogger('silent'), publicBaseUrl: `http://127.0.0.1:${port}` });
  await gateway.listen(port, '127.0.0.1');
  process.once('disconnect', () => void gateway.close().finally(() => rm(auditDir, { recursive: true, force: true })).finally(() => process.exit(0)));
  return { url: gateway.fhirBase };
}

/** What any inspecting proxy must do at the least: split the stream into lines, parse and re-serialise each. */
async function childPlainProxy(upstreamUrl: string): Promise<ChildReady> {
  const upstream = createUpstreamClient({ baseUrl: upstreamUrl });
  const server = createServer((req, res) => {
    void (async () => {
      const file = await upstream.stream(`${upstreamUrl}${req.url ?? ''}`, { onOrigin: true });
      res.writeHead(200, { 'content-type': 'application/fhir+ndjson' });
      let rest = '';
      for await (const chunk of file.body) {
        const lines = (rest + (chunk as Buffer).toString('utf8')).split('\n');
        rest = lines.pop() ?? '';
        let out = '';
        for (const line of lines) if (line) out += `${JSON.stringify(JSON.parse(line))}\n`;
        if (!res.write(out)) await new Promise((ok) => res.once('drain', ok));
      }
      res.end();
    })().catch(() => res.destroy());
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  process.once('disconnect', () => process.exit(0));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

if (process.env.DG_BENCH_EXPORT_ROLE && process.send) {
  const { role, upstreamUrl, jwks } = JSON.parse(process.env.DG_BENCH_EXPORT_ROLE) as { role: 'gateway' | 'plain'; upstreamUrl: string; jwks: JSONWebKeySet };
  const ready = role === 'gateway' ? await childGateway(upstreamUrl, jwks) : await childPlainProxy(upstreamUrl);
  process.send({ ready });
  process.on('message', (m: unknown) => {
    if (m === 'rss') process.send?.({ peakRssMb: process.resourceUsage().maxRSS / 1024 });
  });
}

interface Child {
  readonly url: string;
  peakRssMb(): Promise<number>;
  stop(): void;
}

async function startChild(role: 'gateway' | 'plain', upstreamUrl: string, jwks: JSONWebKeySet): Promise<Child> {
  // Compiled, as the image runs the gateway (bench/build.ts): a process started from .ts also holds Node's type stripper.
  const child: ChildProcess = fork(compiledBenchScript('export'), [], {
    // DG_BENCH_CPU_PROFILE=<dir> writes each child's CPU profile there (see `npm run bench -- profile`).
    // The gateway runs with the heap flags `npm start` uses (src/ops/runtime.ts); the plain proxy as plain Node.
    execArgv: [...(role === 'gateway' ? GATEWAY_NODE_FLAGS : []), ...(process.env.DG_BENCH_CPU_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.DG_BENCH_CPU_PROFILE}`] : [])],
    env: { ...process.env, DG_BENCH_EXPORT_ROLE: JSON.stringify({ role, upstreamUrl, jwks }) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ready = await new Promise<ChildReady>((ok, fail) => {
    child.once('message', (m) => ok((m as { ready: ChildReady }).ready));
    child.once('exit', (code) => fail(new Error(`bench ${role} exited with ${code}`)));
  });
  return {
    url: ready.url,
    peakRssMb: () =>
      new Promise((ok) => {
        child.once('message', (m) => ok((m as { peakRssMb: number }).peakRssMb));
        child.send('rss');
      }),
    stop: () => child.disconnect(),
  };
}

// ---- the measurement ----

interface Download {
  readonly lines: number;
  readonly seconds: number;
}

/** Downloads `url`; lines that came out, and seconds. */
async function download(url: string, headers: Record<string, string>): Promise<Download> {
  const started = performance.now();
  const res = await fetch(url, { headers });
  if (res.status !== 200 || !res.body) throw new Error(`download answered ${res.status}`);
  let lines = 0;
  // Counted natively (indexOf), so the downloader — in the canned upstream's process — is not the bottleneck.
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (let at = bytes.indexOf(10); at !== -1; at = bytes.indexOf(10, at + 1)) lines++;
  }
  return { lines, seconds: (performance.now() - started) / 1000 };
}

/** Kicks off an export through the gateway and returns the gateway URL of its one file. */
async function gatewayFileUrl(gateway: Child, token: string): Promise<string> {
  const headers = { authorization: `Bearer ${token}`, accept: 'application/fhir+json', prefer: 'respond-async' };
  const kickOff = await fetch(`${gateway.url}/$export?_type=Observation`, { headers });
  const status = kickOff.headers.get('content-location');
  if (kickOff.status !== 202 || !status) throw new Error(`kick-off answered ${kickOff.status}`);
  const manifest = (await (await fetch(status, { headers })).json()) as { output: { url: string }[] };
  return manifest.output[0].url;
}

function parseArgs(args: readonly string[]): { sizes: number[] } {
  if (args.length === 0) return { sizes: [10_000, 100_000] };
  const sizes = args.map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1 || n > 10_000_000)) throw new UsageError('export takes line counts, e.g. `npm run bench -- export 10000 100000`');
  return { sizes };
}

export async function run(args: readonly string[]): Promise<void> {
  const { sizes } = parseArgs(args);
  const issuer = await createIssuer();
  const rows: string[][] = [];
  for (const size of sizes) {
    const canned = await startCannedUpstream(size);
    const gateway = await startChild('gateway', canned.url, issuer.jwks);
    const plain = await startChild('plain', canned.url, issuer.jwks);
    const token = await issuer.token(gateway.url, { sub: 'bench-engine', client_id: 'bench-engine', scope: 'system/Observation.rs', purpose_of_use: 'TREAT' });
    const gatewayHeaders = { authorization: `Bearer ${token}`, accept: 'application/fhir+ndjson' };
    // The first download meets cold policy caches; then each proxy runs in turn and the best run counts,
    // as this machine is shared (a busy neighbour slows one run, not the method).
    const cold = await download(await gatewayFileUrl(gateway, token), gatewayHeaders);
    const viaGateway: Download[] = [cold];
    const viaPlain: Download[] = [];
    for (let run = 0; run < RUNS; run++) {
      viaPlain.push(await download(`${plain.url}/$file/${size}`, {}));
      if (run > 0) viaGateway.push(await download(await gatewayFileUrl(gateway, token), gatewayHeaders));
    }
    const best = (runs: readonly Download[]) => Math.min(...runs.map((r) => r.seconds));
    const rss = await gateway.peakRssMb();
    rows.push([
      fmt.n(size),
      fmt.n(cold.lines),
      fmt.n(size / cold.seconds),
      fmt.n(size / best(viaGateway)),
      fmt.n(size / best(viaPlain)),
      fmt.n(best(viaPlain) / best(viaGateway), 2),
      fmt.n(rss),
    ]);
    gateway.stop();
    plain.stop();
    const closed = new Promise<void>((ok) => canned.server.close(() => ok()));
    canned.server.closeAllConnections();
    await closed;
  }
  console.log(`Bulk Data export: one Observation file, ${PATIENTS} patients, four consents each (${machine()})\n`);
  console.log(table(['lines in', 'lines released', 'gateway lines/s, cold', `gateway lines/s, best of ${RUNS}`, `plain proxy lines/s, best of ${RUNS}`, 'gateway ÷ plain (best)', 'gateway peak RSS MB'], rows));
}
