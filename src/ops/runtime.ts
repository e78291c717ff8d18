// How the gateway's Node process is started (issue 15, peak RSS). Its live heap is ~35–55 MB and the page budget
// bounds what requests add, but V8 lets old space fill with ~150 MB of garbage before it collects; the cap makes
// it collect sooner. A cap alone also shrinks the young generation, so a page's objects outlive it and are
// promoted (+30% CPU at 1,000 entries): the semi-space keeps its usual 32 MB. `npm start`, the Dockerfile and the
// bench start the gateway with these flags (test/reliability/runtime-flags.test.ts keeps the three in step).
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--max-old-space-size=192', '--max-semi-space-size=32'];
