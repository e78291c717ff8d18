// Issue 5's benchmark: the same gateway request path with the real audit journal (BALP events, hash
// chain, group-committed fdatasync) and with an audit sink that does nothing, at 100 concurrent
// connections, alternated (A B A B) in one run. Goal: the journal costs under 10% of throughput.
import { pathToFileURL } from 'node:url';
import { startChild, wrk, type WrkResult } from './load.ts';
import { ensureWrk, fmt, ISSUER, machine, requesterClaims, startWorld, table } from './setup.ts';

type Variant = 'journal' | 'none';

export async function run(args: readonly string[] = []): Promise<void> {
  await ensureWrk();
  const seconds = Number(process.env.BENCH_SECONDS ?? 6);
  const connections = Number(process.env.BENCH_AUDIT_CONNECTIONS ?? 100);
  const rounds = Number(process.env.BENCH_AUDIT_ROUNDS ?? 2);
  const size = Number(args.find((a) => a.startsWith('--page='))?.slice('--page='.length) ?? 20);
  const world = await startWorld();
  const results: Record<Variant, WrkResult[]> = { journal: [], none: [] };
  try {
    console.log(`audit: wrk -t2 -c${connections}, ${seconds} s per run, ${rounds} rounds, ${size}-entry pages of a permitted patient`);
    for (let round = 0; round < rounds; round++) {
      for (const audit of (round % 2 === 0 ? ['none', 'journal'] : ['journal', 'none']) as Variant[]) {
        const child = await startChild({ role: 'bare-gateway', upstreamUrl: world.cannedBase, jwks: world.issuer.jwks, issuer: ISSUER, audit });
        try {
          const url = `${child.url}/Observation?patient=${world.load.permitted.id}&_count=${size}`;
          const headers = { authorization: `Bearer ${await world.issuer.token(child.url, requesterClaims('treat'))}`, accept: 'application/fhir+json' };
          const first = await fetch(url, { headers });
          await first.arrayBuffer();
          if (first.status !== 200) throw new Error(`audit bench probe answered ${first.status}`);
          await wrk(url, { connections, seconds: 1, threads: 2, headers });
          const result = await wrk(url, { connections, seconds, threads: 2, headers });
          results[audit].push(result);
          console.log(`  ${audit === 'journal' ? 'audited (journal)' : 'unaudited (no-op sink)'}: ${result.rps.toFixed(0)} req/s, p99 ${result.p99.toFixed(1)} ms, errors ${result.errors}`);
        } finally {
          await child.stop();
        }
      }
    }
  } finally {
    await world.close();
  }
  const mean = (xs: WrkResult[], f: (r: WrkResult) => number): number => xs.reduce((a, r) => a + f(r), 0) / xs.length;
  const none = mean(results.none, (r) => r.rps);
  const journal = mean(results.journal, (r) => r.rps);
  const rows = (['none', 'journal'] as Variant[]).map((v) => [
    v === 'journal' ? 'audited: AUDIT_DIR journal' : 'unaudited: no-op sink',
    fmt.n(mean(results[v], (r) => r.rps)),
    fmt.n(mean(results[v], (r) => r.p50), 2),
    fmt.n(mean(results[v], (r) => r.p99), 2),
    String(results[v].reduce((a, r) => a + r.errors, 0)),
  ]);
  console.log(`\n${machine()}\n`);
  console.log(table(['variant', 'req/s', 'p50 ms', 'p99 ms', 'errors'], rows));
  const cost = 1 - journal / none;
  console.log(`\njournal cost at ${connections} concurrent requests: ${(cost * 100).toFixed(1)}% of throughput (goal < 10%: ${cost < 0.1 ? 'met' : 'not met'})`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await run(process.argv.slice(2));
