// `npm run bench [-- <name> [options]]`: no name runs the full table (gateway + audit + scaling);
// a name runs one module's `run(args)`. A wrong name or option value exits 2 before anything starts.
import { reportUsage, UsageError } from './usage.ts';

const modules: Record<string, () => Promise<{ run(args: readonly string[]): Promise<void> }>> = {
  gateway: () => import('./gateway.ts'),
  audit: () => import('./audit.ts'),
  scaling: () => import('./scaling.ts'),
  export: () => import('./export.ts'),
  decide: () => import('./decide.ts') as Promise<{ run(args: readonly string[]): Promise<void> }>,
  'upstream-search': () => import('./upstream-search.ts') as Promise<{ run(args: readonly string[]): Promise<void> }>,
  'audit-journal': () => import('./audit-journal.ts') as Promise<{ run(args: readonly string[]): Promise<void> }>,
  'audit-size': () => import('./audit-size.ts'),
  'http-framework': () => import('./http-framework.ts'),
  allocations: () => import('./allocations.ts'),
  profile: () => import('./profile-summary.ts').then((m) => ({ run: (args: readonly string[]) => m.summariseProfiles(args[0] ?? '.') })),
};

const [name, ...args] = process.argv.slice(2);
const started = performance.now();
const finished = await reportUsage(async () => {
  if (name === undefined || name.startsWith('--')) {
    const all = name === undefined ? [] : [name, ...args];
    (await import('./gateway.ts')).defaultGatewayOptions(all); // the gateway's options, checked before decide runs
    for (const part of ['decide', 'gateway', 'audit', 'scaling']) {
      console.log(`\n=== ${part} ===`);
      await (await modules[part]()).run(all);
    }
  } else if (modules[name]) {
    await (await modules[name]()).run(args);
  } else {
    throw new UsageError(`unknown benchmark "${name}"; one of: ${Object.keys(modules).join(', ')} (or none for decide + gateway + audit + scaling)`);
  }
});
if (finished) console.log(`\nbench finished in ${((performance.now() - started) / 1000).toFixed(0)} s`);
