// How the gateway's Node process is started (issue 15). Its live heap is ~35–55 MB and the page budget bounds
// what requests add, but V8 lets old space fill with ~150 MB of garbage before it collects; the cap makes it
// collect sooner. A cap alone also shrinks the young generation, so a page's objects outlive it and are promoted
// (+30% CPU at 1,000 entries): the semi-space keeps its usual 32 MB. One V8 background thread, not four: on two
// cores the helpers the request thread woke to mark pre-empted it, and the paced p99 fell from 33–45 to 18–29 ms
// with one (docs/performance.md); a larger host runs more processes, not more helpers. With one helper marking
// takes longer and old space overshoots more (peak RSS at 1,000 entries up to 306 MB at a 192 MB cap), hence
// 160 MB. V8 starts marking as soon as old space's room below its limit is smaller than the young generation, and
// with its own growing factor (~1.3 here) that room is gone after every mark-compact: it marked 40% of the time.
// A growing factor of 2.5 lets the limit reach its bound (halfway to the cap) instead: mark-compacts per 1,000
// requests 9.1 → 5.3, the helper's marking 0.50 → 0.32 ms a request, peak RSS unchanged. `npm start`, the
// Dockerfile and the bench start the gateway with these flags (test/reliability/runtime-flags.test.ts keeps the
// three in step).
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--max-old-space-size=160', '--max-semi-space-size=32', '--v8-pool-size=1', '--heap-growing-percent=150'];

/**
 * The flags of GATEWAY_NODE_FLAGS this process was started without, by name: a value chosen for a larger
 * machine counts as set. A hand start (`node bin/disclosure-gateway.js serve`) gets V8's defaults and
 * ~400 MB at 1,000-entry pages, so `serve` warns.
 */
export function missingNodeFlags(execArgv: readonly string[] = process.execArgv, nodeOptions: string = process.env.NODE_OPTIONS ?? ''): string[] {
  const given = [...execArgv, ...nodeOptions.split(/\s+/)].map((flag) => flag.split('=')[0].replaceAll('_', '-'));
  return GATEWAY_NODE_FLAGS.filter((flag) => !given.includes(flag.split('=')[0]));
}
