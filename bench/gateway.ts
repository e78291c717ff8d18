// The side-by-side table (issue 7): direct to the canned upstream, a plain undici pass-through, the parse
// floor, and the gateway for a permitted patient, a patient with consents (a third withheld, some
// redacted) and break-the-glass, on 100- and 1,000-entry searchsets. Ratios to the floor are the result.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Bundle } from '@medplum/fhirtypes';
import { startChild, wrk, type Child, type WrkResult } from './load.ts';
import { summariseProfiles } from './profile-summary.ts';
import { ensureWrk, fmt, ISSUER, machine, requesterClaims, startWorld, table, type BenchWorld } from './setup.ts';

type Kind = 'direct' | 'passthrough' | 'floor' | 'permitted' | 'withholding' | 'break-glass';

interface Cell {
  readonly kind: Kind;
  readonly size: number;
  readonly result: WrkResult;
  readonly rssMb: number;
  /** Upstream requests per request served, during the measured run. */
  readonly upstreamPerRequest: number;
  /** Policy-store reads (Consent, Flag, actors, care relationships) during the measured run: 0 on the cache-hit path. */
  readonly policyReads: number;
  readonly entries: number;
  readonly redacted: number;
}

export interface GatewayBenchOptions {
  readonly sizes: readonly number[];
  readonly seconds: number;
  readonly warmupSeconds: number;
  readonly connections: number;
  readonly profileDir?: string;
  readonly kinds: readonly Kind[];
}

const labels: Record<Kind, string> = {
  direct: 'direct to upstream',
  passthrough: 'pass-through proxy (undici stream)',
  floor: 'parse floor (buffer+parse+stringify)',
  permitted: 'gateway (a) permitted patient',
  withholding: 'gateway (b) consents: ⅓ withheld, some redacted',
  'break-glass': 'gateway (c) break-the-glass',
};

const redactedCode = 'REDACTED';
const policyShape = /^\/fhir\/(Consent|Flag|Practitioner|PractitionerRole|Organization|Group|CareTeam|Encounter|Patient)\b/;

async function probe(url: string, headers: Record<string, string>): Promise<{ entries: number; redacted: number }> {
  const res = await fetch(url, { headers });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`probe ${url} answered ${res.status}: ${text.slice(0, 300)}`);
  const bundle = JSON.parse(text) as Bundle;
  const entries = (bundle.entry ?? []).filter((e) => e.resource?.resourceType === 'Observation');
  const redacted = entries.filter((e) => e.resource?.meta?.security?.some((c) => c.code === redactedCode)).length;
  return { entries: entries.length, redacted };
}

async function measure(world: BenchWorld, kind: Kind, size: number, opts: GatewayBenchOptions): Promise<Cell> {
  const patient = kind === 'withholding' || kind === 'break-glass' ? world.load.withholding.id : world.load.permitted.id;
  const query = `Observation?patient=${patient}&_count=${size}`;
  let child: Child | undefined;
  let url: string;
  const headers: Record<string, string> = { accept: 'application/fhir+json' };
  if (kind === 'direct') url = `${world.cannedBase}/${query}`;
  else if (kind === 'passthrough' || kind === 'floor') {
    child = await startChild({ role: kind, target: world.canned.url });
    url = `${child.url}/fhir/${query}`;
  } else {
    child = await startChild({ role: 'gateway', upstreamUrl: world.cannedBase, jwks: world.issuer.jwks, issuer: ISSUER }, { profileDir: opts.profileDir });
    headers.authorization = `Bearer ${await world.issuer.token(child.url, requesterClaims(kind === 'break-glass' ? 'btg' : 'treat'))}`;
    url = `${child.url}/${query}`;
  }
  try {
    // The first request records the upstream answers and fills the policy cache; later ones hit both.
    const shape = await probe(url, headers);
    await wrk(url, { connections: opts.connections, seconds: opts.warmupSeconds, headers });
    const before = await world.canned.stats();
    const result = await wrk(url, { connections: opts.connections, seconds: opts.seconds, headers });
    const after = await world.canned.stats();
    const rssMb = (child ?? world.canned).peakRssMb();
    const policyReads = Object.entries(after.byShape)
      .filter(([shape]) => policyShape.test(shape) && !shape.includes('_lastUpdated'))
      .reduce((sum, [shape, n]) => sum + n - (before.byShape[shape] ?? 0), 0);
    return { kind, size, result, rssMb, upstreamPerRequest: (after.requests - before.requests) / result.requests, policyReads, ...shape };
  } finally {
    await child?.stop();
  }
}

export function defaultGatewayOptions(args: readonly string[]): GatewayBenchOptions {
  const seconds = Number(process.env.BENCH_SECONDS ?? 6);
  const profile = args.includes('--profile');
  const only = args.find((a) => a.startsWith('--sizes='));
  const kinds = args.find((a) => a.startsWith('--kinds='));
  return {
    sizes: only ? only.slice('--sizes='.length).split(',').map(Number) : [100, 1000],
    seconds,
    warmupSeconds: Number(process.env.BENCH_WARMUP_SECONDS ?? 1),
    connections: Number(process.env.BENCH_CONNECTIONS ?? 10),
    profileDir: profile ? join(tmpdir(), `dg-bench-profile-${Date.now()}`) : undefined,
    kinds: kinds ? (kinds.slice('--kinds='.length).split(',') as Kind[]) : ['direct', 'passthrough', 'floor', 'permitted', 'withholding', 'break-glass'],
  };
}

export async function runGatewayTable(world: BenchWorld, opts: GatewayBenchOptions): Promise<Cell[]> {
  const cells: Cell[] = [];
  for (const size of opts.sizes) {
    for (const kind of opts.kinds) {
      const cell = await measure(world, kind, size, opts);
      cells.push(cell);
      console.log(`  ${labels[kind]} @${size}: ${cell.result.rps.toFixed(0)} req/s, p99 ${cell.result.p99.toFixed(1)} ms`);
    }
  }
  return cells;
}

export function printGatewayTable(cells: readonly Cell[]): string {
  const rows = cells.map((c) => {
    const floor = cells.find((f) => f.kind === 'floor' && f.size === c.size);
    const direct = cells.find((f) => f.kind === 'direct' && f.size === c.size);
    const gateway = c.kind !== 'direct' && c.kind !== 'passthrough' && c.kind !== 'floor';
    return [
      labels[c.kind],
      String(c.size),
      `${c.entries}${c.redacted ? ` (${c.redacted} red.)` : ''}`,
      fmt.n(c.result.rps),
      fmt.n(c.result.p50, 2),
      fmt.n(c.result.p99, 2),
      direct && c !== direct ? `+${fmt.n(c.result.p99 - direct.result.p99, 2)}` : '',
      fmt.n(c.rssMb),
      floor ? `${fmt.n(c.result.rps / floor.result.rps, 2)}×` : '',
      gateway || c.kind !== 'direct' ? fmt.n(c.upstreamPerRequest, 2) : '',
      gateway ? String(c.policyReads) : '',
      String(c.result.errors),
    ];
  });
  return table(['server', 'page', 'entries', 'req/s', 'p50 ms', 'p99 ms', 'p99 added', 'peak RSS MB', 'vs floor', 'upstream req/req', 'policy reads', 'errors'], rows);
}

export async function run(args: readonly string[] = []): Promise<void> {
  await ensureWrk();
  const opts = defaultGatewayOptions(args);
  const world = await startWorld();
  try {
    console.log(`gateway table: wrk -t1 -c${opts.connections}, ${opts.seconds} s per cell after ${opts.warmupSeconds} s warm-up`);
    const cells = await runGatewayTable(world, opts);
    console.log(`\n${machine()}\n`);
    console.log(printGatewayTable(cells));
  } finally {
    await world.close();
  }
  if (opts.profileDir) await summariseProfiles(opts.profileDir, 30, opts.seconds);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await run(process.argv.slice(2));
