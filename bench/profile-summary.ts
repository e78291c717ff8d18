// Summarises `--cpu-prof` output: the functions with the most self time, per profile and in total.
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';

interface ProfileNode {
  readonly id: number;
  readonly children?: readonly number[];
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly hitCount?: number;
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples?: readonly number[];
  readonly timeDeltas?: readonly number[];
}

/**
 * The profile with hit counts recomputed from the samples of its last `seconds` only (the measured
 * run, leaving out start-up and warm-up); unchanged when the profile has no sample list.
 */
export function lastSeconds(profile: CpuProfile, seconds: number | undefined): CpuProfile {
  if (!seconds || !profile.samples || !profile.timeDeltas) return profile;
  const times: number[] = [];
  let t = 0;
  for (const d of profile.timeDeltas) times.push((t += d));
  const from = t - seconds * 1e6;
  const hits = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    if (times[i] >= from) hits.set(id, (hits.get(id) ?? 0) + 1);
  });
  return { nodes: profile.nodes.map((n) => ({ ...n, hitCount: hits.get(n.id) ?? 0 })) };
}

function where(url: string, line: number): string {
  const path = url.startsWith('file://') ? relative(process.cwd(), new URL(url).pathname) : url;
  const short = path.replace(/^node_modules\//, 'nm/');
  return short ? `${short}:${line + 1}` : '(native)';
}

/** Self-time share per function, highest first. */
export function selfTimes(profile: CpuProfile): { name: string; share: number }[] {
  const totals = new Map<string, number>();
  let all = 0;
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    all += hits;
    const name = `${node.callFrame.functionName || '(anonymous)'} ${where(node.callFrame.url, node.callFrame.lineNumber)}`;
    totals.set(name, (totals.get(name) ?? 0) + hits);
  }
  return [...totals.entries()].map(([name, hits]) => ({ name, share: hits / Math.max(1, all) })).sort((a, b) => b.share - a.share);
}

/** Each node's caller, to walk a sample's stack upwards. */
function callerOf(profile: CpuProfile): (node: ProfileNode) => ProfileNode | undefined {
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  return (node) => byId.get(parent.get(node.id) ?? -1);
}

/** Self time attributed to the nearest project frame (src/…) on the stack: which of our functions costs what. */
export function projectTimes(profile: CpuProfile): { name: string; share: number }[] {
  const caller = callerOf(profile);
  const totals = new Map<string, number>();
  let all = 0;
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0) continue;
    all += hits;
    let at: ProfileNode | undefined = node;
    while (at && !at.callFrame.url.includes('/src/')) at = caller(at);
    const name = at ? `${at.callFrame.functionName || '(anonymous)'} ${where(at.callFrame.url, at.callFrame.lineNumber)}` : `(outside src) ${node.callFrame.functionName || node.callFrame.url.split('/').slice(-2).join('/') || '(native)'}`;
    totals.set(name, (totals.get(name) ?? 0) + hits);
  }
  return [...totals.entries()].map(([name, hits]) => ({ name, share: hits / Math.max(1, all) })).sort((a, b) => b.share - a.share);
}

/** Inclusive time of each src/ function: the share of samples with it anywhere on the stack. */
export function inclusiveTimes(profile: CpuProfile): { name: string; share: number }[] {
  const caller = callerOf(profile);
  const totals = new Map<string, number>();
  let all = 0;
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0) continue;
    all += hits;
    const seen = new Set<string>();
    for (let at: ProfileNode | undefined = node; at; at = caller(at)) {
      if (!at.callFrame.url.includes('/src/')) continue;
      const name = `${at.callFrame.functionName || '(anonymous)'} ${where(at.callFrame.url, at.callFrame.lineNumber)}`;
      if (seen.has(name)) continue;
      seen.add(name);
      totals.set(name, (totals.get(name) ?? 0) + hits);
    }
  }
  return [...totals.entries()].map(([name, hits]) => ({ name, share: hits / Math.max(1, all) })).sort((a, b) => b.share - a.share);
}

export async function summariseProfiles(dir: string, top = 25, windowSeconds?: number): Promise<void> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile')).sort();
  for (const file of files) {
    const profile = lastSeconds(JSON.parse(await readFile(join(dir, file), 'utf8')) as CpuProfile, windowSeconds);
    if (!profile.nodes.some((n) => (n.hitCount ?? 0) > 0 && n.callFrame.url.includes('/src/'))) continue; // a worker thread
    console.log(`\n${join(dir, file)}${windowSeconds ? ` (last ${windowSeconds} s)` : ''} — top ${top} by self time`);
    for (const { name, share } of selfTimes(profile).slice(0, top)) console.log(`  ${(share * 100).toFixed(1).padStart(5)}%  ${name}`);
    console.log(`  — attributed to the nearest src/ frame:`);
    for (const { name, share } of projectTimes(profile).slice(0, top)) console.log(`  ${(share * 100).toFixed(1).padStart(5)}%  ${name}`);
    console.log(`  — inclusive, src/ functions:`);
    for (const { name, share } of inclusiveTimes(profile).slice(0, top)) console.log(`  ${(share * 100).toFixed(1).padStart(5)}%  ${name}`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await summariseProfiles(process.argv[2] ?? '.', Number(process.argv[3] ?? 25), process.argv[4] ? Number(process.argv[4]) : undefined);
