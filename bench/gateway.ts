// The side-by-side table (issue 7): direct to the canned upstream, a plain undici pass-through, the parse
// floor, and the gateway for a permitted patient, a patient with consents (a third withheld, some
// redacted) and break-the-glass, on 100- and 1,000-entry searchsets. Ratios to the floor are the result.
// wrk's closed loop runs every cell at saturation, where p99 is mostly queueing (≈ connections / req/s); a
// second, paced table measures direct, the floor and gateway (a) at 100 entries well below saturation, for
// issue 7's "p99 added latency < 5 ms at 100 entries, concurrency 10".
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Bundle } from '@medplum/fhirtypes';
import { maxPageSize } from '../src/enforce/search-params.ts';
import { startChild, wrk, type Child, type WrkResult } from './load.ts';
import type { ServeStats } from './serve.ts';
import { summariseProfiles } from './profile-summary.ts';
import { ensureWrk, fmt, ISSUER, machine, requesterClaims, startWorld, table, type BenchWorld } from './setup.ts';
import { reportUsage, UsageError } from './usage.ts';

const allKinds = ['direct', 'passthrough', 'floor', 'floor-express', 'permitted', 'withholding', 'break-glass'] as const;
type Kind = (typeof allKinds)[number];
const gatewayKinds: readonly Kind[] = ['permitted', 'withholding', 'break-glass'];
/** The paced table's servers (those of them `--kinds` selects) and page size. */
const pacedKinds: readonly Kind[] = ['direct', 'floor', 'permitted'];
const pacedSize = 100;

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
  /** The server process's CPU ms per request during the measured run (all its threads); robust on a busy machine. */
  readonly cpuMsPerRequest?: number;
  /** Of it, V8's background threads (mostly concurrent marking: issue 15, fifth session). */
  readonly v8HelperMsPerRequest?: number;
  /** Paced cells: the round it was measured in (1-based); every round measures each paced server once. */
  readonly round?: number;
  /** Gateway cells: audit journal bytes and events per request during the measured run (issue 15). */
  readonly audit?: { readonly bytes: number; readonly events: number };
}

export interface GatewayBenchOptions {
  readonly sizes: readonly number[];
  readonly seconds: number;
  readonly warmupSeconds: number;
  readonly connections: number;
  readonly profileDir?: string;
  readonly kinds: readonly Kind[];
  /** `true`: the closed-loop table, then the paced one; `false`: closed-loop only; `only`: paced only. */
  readonly paced: boolean | 'only';
  /** Paced cells: each connection waits `paceMs` on average (± half) between a response and its next request. */
  readonly paceMs: number;
  readonly pacedSeconds: number;
  /** Paced servers are measured in this many interleaved rounds; the tables read the median round. */
  readonly pacedRounds: number;
}

const labels: Record<Kind, string> = {
  direct: 'direct to upstream',
  passthrough: 'pass-through proxy (undici stream)',
  floor: 'parse floor (buffer+parse+stringify)',
  'floor-express': 'parse floor on express 5 (as the gateway mounts it)',
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

async function measure(world: BenchWorld, kind: Kind, size: number, opts: GatewayBenchOptions, paced = false): Promise<Cell> {
  const patient = kind === 'withholding' || kind === 'break-glass' ? world.load.withholding.id : world.load.permitted.id;
  const query = `Observation?patient=${patient}&_count=${size}`;
  let child: Child | undefined;
  let url: string;
  const headers: Record<string, string> = { accept: 'application/fhir+json' };
  if (kind === 'direct') url = `${world.cannedBase}/${query}`;
  else if (kind === 'passthrough' || kind === 'floor' || kind === 'floor-express') {
    child = await startChild({ role: kind, target: world.canned.url });
    url = `${child.url}/fhir/${query}`;
  } else {
    child = await startChild({ role: 'gateway', upstreamUrl: world.cannedBase, jwks: world.issuer.jwks, issuer: ISSUER }, { profileDir: paced ? undefined : opts.profileDir });
    headers.authorization = `Bearer ${await world.issuer.token(child.url, requesterClaims(kind === 'break-glass' ? 'btg' : 'treat'))}`;
    url = `${child.url}/${query}`;
  }
  try {
    // The first request records the upstream answers and fills the policy cache; later ones hit both.
    const shape = await probe(url, headers);
    await wrk(url, { connections: opts.connections, seconds: opts.warmupSeconds, headers });
    // Requests the warm-up left in flight finish before a paced run starts.
    if (paced) await sleep(250);
    const before = await world.canned.stats();
    const auditBefore = child ? (await child.stats()).audit : undefined;
    const cpuBefore = child?.cpuMs();
    const helperBefore = child?.v8HelperCpuMs();
    const result = paced
      ? await wrk(url, { connections: opts.connections, seconds: opts.pacedSeconds, headers, paceMs: opts.paceMs })
      : await wrk(url, { connections: opts.connections, seconds: opts.seconds, headers });
    const after = await world.canned.stats();
    const auditAfter = child ? (await child.stats()).audit : undefined;
    const cpuMsPerRequest = child && cpuBefore !== undefined ? (child.cpuMs() - cpuBefore) / result.requests : undefined;
    const v8HelperMsPerRequest = child && helperBefore !== undefined ? (child.v8HelperCpuMs() - helperBefore) / result.requests : undefined;
    const rssMb = (child ?? world.canned).peakRssMb();
    const policyReads = Object.entries(after.byShape)
      .filter(([shape]) => policyShape.test(shape) && !shape.includes('_lastUpdated'))
      .reduce((sum, [shape, n]) => sum + n - (before.byShape[shape] ?? 0), 0);
    const audit = auditPerRequest(auditBefore, auditAfter);
    return { kind, size, result, rssMb, upstreamPerRequest: (after.requests - before.requests) / result.requests, policyReads, ...shape, ...(audit ? { audit } : {}), ...(cpuMsPerRequest !== undefined ? { cpuMsPerRequest } : {}), ...(v8HelperMsPerRequest !== undefined ? { v8HelperMsPerRequest } : {}) };
  } finally {
    await child?.stop();
  }
}

type AuditCounters = ServeStats['audit'];

/** Journal bytes and events per recorded request between two snapshots of a gateway's counters. */
function auditPerRequest(before: AuditCounters, after: AuditCounters): Cell['audit'] {
  if (!before || !after || after.appends === before.appends) return undefined;
  const requests = after.appends - before.appends;
  return { bytes: (after.bytes - before.bytes) / requests, events: (after.events - before.events) / requests };
}

function isKind(name: string): name is Kind {
  return (allKinds as readonly string[]).includes(name);
}

function positiveEnv(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new UsageError(`${name}=${text}: a positive number`);
  return value;
}

function wholeEnv(name: string, fallback: number): number {
  const value = positiveEnv(name, fallback);
  if (!Number.isInteger(value)) throw new UsageError(`${name}=${process.env[name]}: a whole number`);
  return value;
}

/** The options of `npm run bench -- gateway`; a wrong value throws a UsageError before anything starts. */
export function defaultGatewayOptions(args: readonly string[]): GatewayBenchOptions {
  const option = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const sizesText = option('sizes');
  const sizes = sizesText === undefined ? [100, 1000] : sizesText.split(',').map((text) => {
    if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > maxPageSize) {
      throw new UsageError(`invalid size "${text}" in --sizes=${sizesText}: page sizes are whole numbers from 1 to ${maxPageSize} (the gateway's largest page), e.g. --sizes=100,1000`);
    }
    return Number(text);
  });
  const kindsText = option('kinds');
  const kinds = kindsText === undefined ? [...allKinds] : kindsText.split(',').map((name) => {
    if (!isKind(name)) throw new UsageError(`unknown kind "${name}" in --kinds=${kindsText}; valid kinds: ${allKinds.join(', ')}`);
    return name;
  });
  const pacedText = option('paced') ?? 'true';
  if (pacedText !== 'true' && pacedText !== 'false' && pacedText !== 'only') throw new UsageError(`--paced=${pacedText}: one of true, false, only`);
  const paced = pacedText === 'only' ? 'only' : pacedText === 'true';
  if (paced === 'only' && (!sizes.includes(pacedSize) || !kinds.some((k) => pacedKinds.includes(k)))) {
    // Nothing would run.
    throw new UsageError(`--paced=only measures ${pacedKinds.join(', ')} at ${pacedSize} entries: --sizes must include ${pacedSize} and --kinds one of those`);
  }
  return {
    sizes,
    seconds: positiveEnv('BENCH_SECONDS', 6),
    warmupSeconds: positiveEnv('BENCH_WARMUP_SECONDS', 1),
    connections: positiveEnv('BENCH_CONNECTIONS', 10),
    profileDir: args.includes('--profile') ? join(tmpdir(), `dg-bench-profile-${Date.now()}`) : undefined,
    kinds,
    paced,
    paceMs: positiveEnv('BENCH_PACE_MS', 100),
    pacedSeconds: positiveEnv('BENCH_PACED_SECONDS', 10),
    pacedRounds: wholeEnv('BENCH_PACED_ROUNDS', 3),
  };
}

export async function runGatewayTable(world: BenchWorld, opts: GatewayBenchOptions): Promise<Cell[]> {
  const cells: Cell[] = [];
  if (opts.paced === 'only') return cells;
  for (const size of opts.sizes) {
    for (const kind of opts.kinds) {
      const cell = await measure(world, kind, size, opts);
      cells.push(cell);
      console.log(`  ${labels[kind]} @${size}: ${cell.result.rps.toFixed(0)} req/s, p99 ${cell.result.p99.toFixed(1)} ms`);
    }
  }
  return cells;
}

/** The paced cells: direct, floor and gateway (a) at 100 entries, as far as `--kinds` and `--sizes` select them. */
function pacedSelection(opts: GatewayBenchOptions): Kind[] {
  if (opts.paced === false || !opts.sizes.includes(pacedSize)) return [];
  return pacedKinds.filter((k) => opts.kinds.includes(k));
}

/**
 * The paced cells, in interleaved rounds (direct, floor, gateway; again): a tail on a shared machine moves
 * with whatever else runs in that minute (one round's floor p99 was 5 ms, the next's 19), so each round's
 * servers share its conditions and the tables read the median round.
 */
export async function runPacedCells(world: BenchWorld, opts: GatewayBenchOptions): Promise<Cell[]> {
  const cells: Cell[] = [];
  for (let round = 1; round <= opts.pacedRounds; round++) {
    for (const kind of pacedSelection(opts)) {
      const cell = { ...(await measure(world, kind, pacedSize, opts, true)), round };
      cells.push(cell);
      console.log(`  paced, round ${round}/${opts.pacedRounds}: ${labels[kind]} @${pacedSize}: ${cell.result.rps.toFixed(0)} req/s, p50 ${cell.result.p50.toFixed(2)} ms, p99 ${cell.result.p99.toFixed(2)} ms`);
    }
  }
  return cells;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** A paced server over the rounds: its median p50 and p99, and what it added over direct in each round (paired by round). */
interface PacedSummary {
  readonly kind: Kind;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly p99s: readonly number[];
  readonly p50Added?: number;
  readonly p99Added?: number;
  readonly p99AddedByRound: readonly number[];
  readonly errors: number;
}

function pacedSummaries(paced: readonly Cell[]): PacedSummary[] {
  const kinds = [...new Set(paced.map((c) => c.kind))];
  const direct = (round: number | undefined): Cell | undefined => paced.find((c) => c.kind === 'direct' && c.round === round);
  return kinds.map((kind) => {
    const rounds = paced.filter((c) => c.kind === kind);
    const added = (pick: (r: WrkResult) => number): number[] => rounds.flatMap((c) => { const d = direct(c.round); return d && kind !== 'direct' ? [pick(c.result) - pick(d.result)] : []; });
    const p50Added = added((r) => r.p50);
    const p99AddedByRound = added((r) => r.p99);
    return {
      kind,
      rps: median(rounds.map((c) => c.result.rps)),
      p50: median(rounds.map((c) => c.result.p50)),
      p99: median(rounds.map((c) => c.result.p99)),
      p99s: rounds.map((c) => c.result.p99),
      p50Added: p50Added.length ? median(p50Added) : undefined,
      p99Added: p99AddedByRound.length ? median(p99AddedByRound) : undefined,
      p99AddedByRound,
      errors: rounds.reduce((sum, c) => sum + c.result.errors, 0),
    };
  });
}

const signed = (v: number): string => `${v >= 0 ? '+' : ''}${fmt.n(v, 2)}`;
const share = (v: number): string => (v < 0.01 ? '<1%' : `${fmt.n(100 * v)}%`);

export function printGatewayTable(cells: readonly Cell[]): string {
  const rows = cells.map((c) => {
    const floor = cells.find((f) => f.kind === 'floor' && f.size === c.size);
    const direct = cells.find((f) => f.kind === 'direct' && f.size === c.size);
    const gateway = gatewayKinds.includes(c.kind);
    return [
      labels[c.kind],
      String(c.size),
      `${c.entries}${c.redacted ? ` (${c.redacted} red.)` : ''}`,
      fmt.n(c.result.rps),
      fmt.n(c.result.p50, 2),
      fmt.n(c.result.p99, 2),
      direct && c !== direct ? signed(c.result.p99 - direct.result.p99) : '',
      fmt.n(c.rssMb),
      c.audit ? `${fmt.n(c.audit.bytes / 1024, 1)} (${fmt.n(c.audit.events, 1)} ev.)` : '',
      floor ? `${fmt.n(c.result.rps / floor.result.rps, 2)}×` : '',
      c.cpuMsPerRequest !== undefined ? fmt.n(c.cpuMsPerRequest, 2) : '',
      c.v8HelperMsPerRequest !== undefined ? fmt.n(c.v8HelperMsPerRequest, 2) : '',
      floor?.cpuMsPerRequest && c.cpuMsPerRequest ? `${fmt.n(floor.cpuMsPerRequest / c.cpuMsPerRequest, 2)}×` : '',
      gateway || c.kind !== 'direct' ? fmt.n(c.upstreamPerRequest, 2) : '',
      gateway ? String(c.policyReads) : '',
      String(c.result.errors),
    ];
  });
  return table(['server', 'page', 'entries', 'req/s', 'p50 ms', 'p99 ms', 'p99 added', 'peak RSS MB', 'audit KB/req', 'vs floor', 'CPU ms/req', 'of it V8 helper', 'CPU vs floor', 'upstream req/req', 'policy reads', 'errors'], rows);
}

const shortLabel: Partial<Record<Kind, string>> = { permitted: '(a)', withholding: '(b)', 'break-glass': '(c)' };

/** Issue 15's four goals beside what this run measured; a goal whose cells did not run says so. */
export function printGoals(cells: readonly Cell[], paced: readonly Cell[]): string {
  const cell = (kind: Kind, size: number): Cell | undefined => cells.find((c) => c.kind === kind && c.size === size);
  const ratio = (kind: Kind): number | undefined => {
    const floor = cell('floor', 100);
    const gateway = cell(kind, 100);
    return floor && gateway ? gateway.result.rps / floor.result.rps : undefined;
  };
  const verdict = (value: number | undefined, ok: (v: number) => boolean): string => (value === undefined ? 'not measured' : ok(value) ? 'met' : 'NOT met');
  const permitted = ratio('permitted');
  const withholding = ratio('withholding');
  // The same ratio from CPU time per request: what the throughput ratio would be on an idle machine if both are CPU-bound.
  const cpuRatio = (kind: Kind): string => {
    const floor = cell('floor', 100)?.cpuMsPerRequest;
    const gateway = cell(kind, 100)?.cpuMsPerRequest;
    return floor && gateway ? ` (CPU ${fmt.n(floor / gateway, 2)}×)` : '';
  };
  const audits = gatewayKinds.flatMap((k) => (cell(k, 100)?.audit ? [{ kind: k, kb: (cell(k, 100)?.audit?.bytes ?? 0) / 1024 }] : []));
  const worstAudit = audits.length ? Math.max(...audits.map((a) => a.kb)) : undefined;
  const summaries = pacedSummaries(paced);
  const pacedGateway = summaries.find((s) => s.kind === 'permitted');
  const pacedFloor = summaries.find((s) => s.kind === 'floor');
  const p99Added = pacedGateway?.p99Added;
  // The rounds, and the floor's own p99 added: what this machine adds to a Node hop that does only parse + stringify.
  const p99Detail = (pacedGateway && pacedGateway.p99AddedByRound.length > 1 ? ` (rounds ${pacedGateway.p99AddedByRound.map((v) => signed(v)).join(' / ')})` : '') +
    (pacedFloor?.p99Added !== undefined ? `; floor ${signed(pacedFloor.p99Added)}` : '');
  const rss = gatewayKinds.flatMap((k) => { const c = cell(k, 1000); return c ? [{ kind: k, mb: c.rssMb }] : []; });
  const worstRss = rss.length ? Math.max(...rss.map((r) => r.mb)) : undefined;
  const rows = [
    ['1. vs parse floor, permitted, 100 entries, forwarding on', '≥ 0.70×', permitted === undefined ? '—' : `${fmt.n(permitted, 2)}×${cpuRatio('permitted')}`, verdict(permitted, (v) => v >= 0.7)],
    ['1. vs parse floor, ⅓ withheld + redacted, 100 entries', '≥ 0.50×', withholding === undefined ? '—' : `${fmt.n(withholding, 2)}×${cpuRatio('withholding')}`, verdict(withholding, (v) => v >= 0.5)],
    ['2. audit journal per 100-entry request, all events', '≤ 12 KB', audits.map((a) => `${shortLabel[a.kind]} ${fmt.n(a.kb, 1)}`).join(' / ') || '—', verdict(worstAudit, (v) => v <= 12)],
    ['3. p99 added by the gateway, paced, 100 entries', '≤ 10 ms', p99Added === undefined ? '—' : `${signed(p99Added)} ms${p99Detail}`, verdict(p99Added, (v) => v <= 10)],
    ['4. peak RSS at 1,000 entries', '≤ 300 MB', rss.map((r) => `${shortLabel[r.kind]} ${fmt.n(r.mb)}`).join(' / ') || '—', verdict(worstRss, (v) => v <= 300)],
  ];
  return table(['goal (issue 15)', 'goal', 'measured', 'status'], rows);
}

/** Title of the paced table: what each connection was asked to do, and the most that could be offered. */
export function pacedTitle(opts: GatewayBenchOptions): string {
  const low = Math.round(opts.paceMs / 2);
  const offered = (opts.connections * 1000) / opts.paceMs;
  return (
    `paced latency, ${opts.connections} connections, ~${fmt.n(offered)} req/s offered: each connection waits ${low}–${low + Math.round(opts.paceMs)} ms ` +
    `(uniform) between a response and its next request; ${opts.pacedSeconds} s per cell after a ${opts.warmupSeconds} s closed-loop warm-up; ` +
    `${opts.pacedRounds} interleaved round${opts.pacedRounds === 1 ? '' : 's'}, medians (added: over direct in the same round)`
  );
}

/**
 * The paced servers with their achieved rate (and its share of the same server's closed-loop rate, when that
 * was measured in this run), median p50 and p99 over the rounds, each round's p99, and what each added over
 * direct to upstream in the same round (median).
 */
export function printPacedTable(paced: readonly Cell[], closed: readonly Cell[]): string {
  const rows = pacedSummaries(paced).map((s) => {
    const saturated = closed.find((f) => f.kind === s.kind && f.size === pacedSize);
    return [
      labels[s.kind],
      String(pacedSize),
      fmt.n(s.rps),
      saturated ? share(s.rps / saturated.result.rps) : '',
      fmt.n(s.p50, 2),
      fmt.n(s.p99, 2),
      s.p99s.map((v) => fmt.n(v, 1)).join(' / '),
      s.p50Added === undefined ? '' : signed(s.p50Added),
      s.p99Added === undefined ? '' : signed(s.p99Added),
      String(s.errors),
    ];
  });
  return table(['server', 'page', 'req/s achieved', 'of closed-loop req/s', 'p50 ms', 'p99 ms', 'p99 by round', 'p50 added', 'p99 added', 'errors'], rows);
}

export async function run(args: readonly string[] = []): Promise<void> {
  const opts = defaultGatewayOptions(args);
  await ensureWrk();
  const world = await startWorld();
  const loadAtStart = loadavg()[0];
  try {
    if (opts.paced !== 'only') console.log(`gateway table: wrk -t1 -c${opts.connections}, ${opts.seconds} s per cell after ${opts.warmupSeconds} s warm-up`);
    const cells = await runGatewayTable(world, opts);
    if (pacedSelection(opts).length) console.log(pacedTitle(opts));
    const paced = await runPacedCells(world, opts);
    // Tails move with whatever else the machine runs: the 1-minute load average brackets the run.
    console.log(`\n${machine()}, load average ${loadAtStart.toFixed(1)} at start, ${loadavg()[0].toFixed(1)} at end\n`);
    if (cells.length) console.log(printGatewayTable(cells));
    if (paced.length) console.log(`\n${pacedTitle(opts)}\n\n${printPacedTable(paced, cells)}`);
    console.log(`\n${printGoals(cells, paced)}`);
  } finally {
    await world.close();
  }
  if (opts.profileDir) await summariseProfiles(opts.profileDir, 30, opts.seconds);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await reportUsage(() => run(process.argv.slice(2)));
