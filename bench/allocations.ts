// Where the gateway's heap allocation goes on one searchset page (issue 15: GC is about a third of its CPU,
// and allocation is the figure the machine's noise does not move). The scaling bench's page, in process:
// exact bytes per page from V8's counter at steady state, then the inspector's sampling heap profiler
// (garbage included) attributing each sample to the nearest frame in src/ — the code as deployed, inlining
// on, so a function's share includes what the optimiser folded into it. The upstream page's JSON.parse is
// counted under `read` (the listing's upstream read), the reply's JSON.stringify outside src/.
//   npm run bench -- allocations [--entries=100] [--consents=0]
import { Session } from 'node:inspector/promises';
import { pathToFileURL } from 'node:url';
import { allocatedPerCall, pageCase, scalingTemplates } from './scaling.ts';
import { fmt, machine, table } from './setup.ts';
import { UsageError } from './usage.ts';

interface ProfileNode {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly selfSize: number;
  readonly children: readonly ProfileNode[];
}

function countOption(args: readonly string[], name: string, fallback: number): number {
  const given = args.find((a) => a.startsWith(`--${name}=`));
  if (given === undefined) return fallback;
  const value = Number(given.slice(name.length + 3));
  if (!Number.isInteger(value) || value < 0 || value > 10_000) throw new UsageError(`--${name}=${given.slice(name.length + 3)}: a whole number from 0 to 10000`);
  return value;
}

/** Bytes sampled per nearest src/ frame (`function path:line`), and the total sampled. */
function bySourceFrame(head: ProfileNode): { frames: Map<string, number>; total: number } {
  const frames = new Map<string, number>();
  let total = 0;
  const walk = (node: ProfileNode, nearest: string): void => {
    const { functionName, url, lineNumber } = node.callFrame;
    const at = url.indexOf('/src/');
    const here = at >= 0 && !url.includes('/node_modules/') ? `${functionName || '(anonymous)'} ${url.slice(at + 1)}:${lineNumber + 1}` : nearest;
    if (node.selfSize > 0) {
      frames.set(here, (frames.get(here) ?? 0) + node.selfSize);
      total += node.selfSize;
    }
    for (const child of node.children) walk(child, here);
  };
  walk(head, '(outside src/: the bench, JSON.stringify of the reply)');
  return { frames, total };
}

export async function run(args: readonly string[] = []): Promise<void> {
  const entries = countOption(args, 'entries', 100);
  const consents = countOption(args, 'consents', 0);
  if (entries === 0) throw new UsageError('--entries=0: a page needs at least one entry');
  const page = pageCase(scalingTemplates(), { entries, consents, patients: 1 });
  const gatewayBytes = await allocatedPerCall(() => page.gateway(), 300);
  const floorBytes = await allocatedPerCall(() => page.floor(), 300);

  const pages = 300;
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.startSampling', { samplingInterval: 256, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  for (let i = 0; i < pages; i++) await page.gateway();
  const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: ProfileNode } };
  session.disconnect();

  const { frames, total } = bySourceFrame(profile.head);
  const rows = [...frames]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 25)
    .map(([frame, bytes]) => [frame, fmt.n(bytes / pages / 1024, 1), `${fmt.n((100 * bytes) / total, 1)}%`]);
  console.log(`\nallocations of one ${entries}-entry page, ${consents} consents (in process; ${machine()})\n`);
  console.log(
    `heap allocated per page, exact, at steady state: gateway ${fmt.n(gatewayBytes / 1024)} KB, parse floor ${fmt.n(floorBytes / 1024)} KB ` +
      `(${fmt.n(gatewayBytes / floorBytes, 2)}×); ${page.released()} entries released\n`,
  );
  console.log(table(['nearest src/ frame (sampled every 256 bytes, garbage included)', 'KB / page', 'share'], rows));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await run(process.argv.slice(2));
