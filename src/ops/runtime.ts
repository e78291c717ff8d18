// How the gateway's Node process is started (issue 15, peak RSS). Its live heap is ~35–55 MB and the page budget
// bounds what requests add, but V8 lets old space fill with ~150 MB of garbage before it collects; a cap makes
// it collect sooner. `npm start`, the Dockerfile and the bench start the gateway with these flags
// (test/reliability/runtime-flags.test.ts keeps the three in step).
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--max-old-space-size=192'];
