// Search, history and $everything pages (SPEC §5): every upstream entry decided, withheld ones leaving no
// trace, short pages refilled from the upstream, and a next link only when another released entry exists
// (a trailing empty page would itself reveal that something was withheld).
import type { Bundle, BundleEntry, Coding, OperationOutcome, Resource } from '@medplum/fhirtypes';
import { GatewayError } from '../fhir/outcome.ts';
import { canonicalSystem, V3_CONFIDENTIALITY } from '../fhir/systems.ts';
import { referencesIn } from '../fhir/references.ts';
import { type UpstreamClient, upstreamFailure } from '../upstream/index.ts';
import type { CursorState } from './cursor.ts';
import type { DisclosureSession, Verdict } from './disclose.ts';
import { assembledBundle, gatewayAuthored, type Releasable, type ReleasableEntry } from './reply.ts';
import { applyView, maxPageSize, redactionChangesMatch } from './search-params.ts';

/** Upstream pages read at most to fill one gateway page; past it the page is returned short. */
export const maxUpstreamPagesPerPage = 40;

/** A cursor's state (here `upstream` and `skip` name the first upstream page to read) and what only this page needs. */
export interface ListingRequest extends CursorState {
  /** Released entries to skip before the page starts (`_offset`). */
  readonly offset: number;
  readonly history: boolean;
  /** SMART interaction the listing needs per resource: `r` for instance history, `s` otherwise. */
  readonly access: 'r' | 's';
}

export interface ListingResult {
  readonly entries: ReleasableEntry[];
  readonly next?: CursorState;
  /** The highest confidentiality among released entries (SPEC §5 high-water mark). */
  readonly confidentiality?: string;
  /** Entries read in range but not shown: withheld, or versions hidden by their withheld current version. */
  readonly hidden: number;
}

const confidentialityOrder = ['U', 'L', 'M', 'N', 'R', 'V'];

function confidentialityOf(resource: Resource): number {
  let level = confidentialityOrder.indexOf('N');
  for (const c of resource.meta?.security ?? []) {
    if (canonicalSystem(c.system) === V3_CONFIDENTIALITY && c.code) level = Math.max(level, confidentialityOrder.indexOf(c.code));
  }
  return level;
}

function refOf(resource: Resource): string {
  return `${resource.resourceType}/${resource.id}`;
}

interface Position {
  readonly upstream: string;
  readonly skip: number;
}

/** The same upstream page URL asking for `count` entries (servers that ignore it answer a full page: no harm). */
function withCount(path: string, count: number): string {
  const at = path.indexOf('?');
  const query = new URLSearchParams(at === -1 ? '' : path.slice(at + 1));
  query.set('_count', String(count));
  return `${at === -1 ? path : path.slice(0, at)}?${query}`;
}

/** The `_count` an upstream page URL asks for, if it names one. */
function countOf(path: string): number | undefined {
  const at = path.indexOf('?');
  const count = Number(new URLSearchParams(at === -1 ? '' : path.slice(at + 1)).get('_count'));
  return Number.isInteger(count) && count > 0 ? count : undefined;
}

/** A cursor resumes with a full upstream page, even where this page ended in a refill sized for its remainder. */
function resumeAt(path: string, firstPage: string): string {
  const full = countOf(firstPage);
  const asked = countOf(path);
  return full !== undefined && asked !== undefined && asked < full ? withCount(path, full) : path;
}

/** Entries a look-ahead probe asks for before it falls back to reading whole upstream pages. */
const probeSize = 10;

/** Entries to ask the upstream for to show `count`: a few more (5%) and one to know whether a next link is due. */
export function upstreamPageSize(count: number): number {
  // Little is parsed in vain when nothing is withheld; pages with withheld entries are refilled.
  return Math.min(maxPageSize, count + Math.ceil(count / 20) + 1);
}

/**
 * The next upstream page, asking only for what should fill the gateway page at the release rate seen so
 * far — never more than the upstream page already asks for. A refill after a third was withheld then
 * parses ~50 entries, not another full page.
 */
function refillPage(next: string, needed: number, released: number, judged: number): string {
  const asked = countOf(next);
  if (asked === undefined || judged === 0) return next;
  const size = upstreamPageSize(Math.ceil(needed / Math.max(released / judged, 0.05)));
  return size < asked ? withCount(next, size) : next;
}

export async function runListing(
  upstream: UpstreamClient,
  session: DisclosureSession,
  request: ListingRequest,
  gatewayBase: string,
  opts: { readonly requestId: string; readonly currentVersionGate?: (resources: Resource[]) => Promise<Set<string>> },
): Promise<ListingResult> {
  const matches: ReleasableEntry[] = [];
  const includeCandidates = new Map<string, { readonly entry: ReleasableEntry; readonly original: Resource; readonly verdict: Verdict }>();
  let toSkipReleased = request.offset;
  let pages = 0;

  const readPage = async (path: string) => {
    pages++;
    const { status, resource: page } = await upstream.readJson<Bundle>(path, { requestId: opts.requestId });
    if (status === 404 || status === 410) throw new GatewayError(404, 'not-found', 'resource not found');
    if (status >= 400) throw upstreamFailure(status, { failed: 'the upstream server failed', refused: 'the upstream server rejected the search' }, { kept: [400] });
    if (page.resourceType !== 'Bundle') throw upstreamFailure(status, { failed: 'the upstream answered a search with something other than a Bundle' });
    const entries = page.entry ?? [];
    const upstreamNext = page.link?.find((l) => l.relation === 'next')?.url;
    const nextUpstream = upstreamNext === undefined ? undefined : upstream.rewriteUpstreamUrl(upstreamNext);
    // A next link leaving the upstream is never followed (SPEC §5); the request fails closed.
    if (nextUpstream === null) throw upstreamFailure(status, { failed: 'the upstream returned a paging link outside its base' });
    const resources = entries.flatMap((e) => (e.resource && e.search?.mode !== 'outcome' ? [e.resource] : []));
    await session.prepare(resources);
    // History: a version is released only if the current version of the same resource is (a label added
    // later must also hide the versions written before it).
    const blockedByCurrent = request.history && opts.currentVersionGate ? await opts.currentVersionGate(resources) : new Set<string>();
    return { entries, matches: entries.filter((e) => e.search?.mode !== 'include' && e.search?.mode !== 'outcome'), nextUpstream, blockedByCurrent };
  };

  /** Whether an entry would be shown: decided without recording (look-ahead and offset skips show nothing). */
  const judge = (entry: BundleEntry, blocked: Set<string>): Verdict | undefined => {
    const resource = entry.resource;
    if (!resource || blocked.has(refOf(resource))) return undefined; // a history delete entry, or a version hidden by its current one
    const verdict = session.decide(resource, request.access, { record: false });
    // A resource whose matching element was redacted away must not be returned by that match.
    if (verdict.released && verdict.decision.outcome === 'redact' && redactionChangesMatch(resource, verdict.resource, request.criteria)) return { ...verdict, released: false };
    return verdict;
  };

  /** Where the next gateway page starts: the first released entry at or after `from`, if any (SPEC §5: no empty trailing page). */
  const releasedAhead = async (from: Position): Promise<Position | undefined> => {
    if (from.skip === 0) {
      // Most often the very next entry is released: a few entries tell, not a whole upstream page.
      const probe = await readPage(withCount(from.upstream, probeSize));
      if (probe.matches.some((e) => judge(e, probe.blockedByCurrent)?.released)) return from;
      if (!probe.nextUpstream && probe.matches.length < probeSize) return undefined;
    }
    let position: Position | undefined = from;
    while (position && pages < maxUpstreamPagesPerPage) {
      const page = await readPage(position.upstream);
      for (let i = position.skip; i < page.matches.length; i++) {
        if (judge(page.matches[i], page.blockedByCurrent)?.released) return { upstream: position.upstream, skip: i };
      }
      position = page.nextUpstream ? { upstream: page.nextUpstream, skip: 0 } : undefined;
    }
    return position; // the page budget ran out: continue from here on the next page
  };

  let position: Position | undefined = { upstream: request.upstream, skip: request.skip };
  let next: Position | undefined;
  let judged = 0;
  let released = 0;
  let hidden = 0;
  while (position) {
    const page = await readPage(position.upstream);
    for (const entry of page.entries) {
      if (entry.search?.mode !== 'include' || !entry.resource) continue;
      const key = refOf(entry.resource);
      if (includeCandidates.has(key)) continue;
      const verdict = session.decide(entry.resource, request.access, { record: false });
      if (verdict.released) includeCandidates.set(key, { entry: { fullUrl: `${gatewayBase}/${key}`, resource: applyView(verdict.resource, request.view), search: { mode: 'include' } }, original: entry.resource, verdict });
    }
    let i: number = position.skip;
    for (; i < page.matches.length && matches.length < request.count; i++) {
      const entry = page.matches[i];
      const verdict = judge(entry, page.blockedByCurrent);
      if (!verdict?.released && entry.resource) hidden++;
      if (!verdict) continue;
      judged++;
      if (verdict.released) released++;
      if (verdict.released && toSkipReleased > 0) {
        toSkipReleased--;
        continue;
      }
      session.record(entry.resource as Resource, verdict);
      if (verdict.released) matches.push(listingEntry(entry, verdict.resource, request, gatewayBase));
    }
    if (matches.length === request.count) {
      // Look ahead for one more released entry: first in what this upstream page still holds.
      for (; i < page.matches.length; i++) {
        if (judge(page.matches[i], page.blockedByCurrent)?.released) {
          next = { upstream: position.upstream, skip: i };
          break;
        }
      }
      if (!next && page.nextUpstream) next = await releasedAhead({ upstream: page.nextUpstream, skip: 0 });
      break;
    }
    position = page.nextUpstream ? { upstream: refillPage(page.nextUpstream, request.count + toSkipReleased - matches.length, released, judged), skip: 0 } : undefined;
    if (position && pages >= maxUpstreamPagesPerPage) {
      next = position; // returned short: the refill budget is spent
      break;
    }
  }

  const matchRefs = new Set(matches.map((e) => refOf(e.resource as Resource)));
  const referencedByMatches = new Set<string>();
  if (includeCandidates.size > 0) for (const e of matches) referencesIn(e.resource, referencedByMatches, session.localBases);
  // An included entry is shown only when a released match justifies it, so nothing arrives through a withheld match.
  const included = [...includeCandidates.values()]
    .filter(({ entry }) => {
      const ref = refOf(entry.resource as Resource);
      if (matchRefs.has(ref)) return false;
      if (referencedByMatches.has(ref)) return true;
      for (const r of referencesIn(entry.resource, new Set(), session.localBases)) if (matchRefs.has(r)) return true;
      return false;
    })
    .map(({ entry, original, verdict }) => {
      session.record(original, verdict);
      return entry;
    });

  const all = [...matches, ...included];
  let level = -1;
  for (const e of all) level = Math.max(level, confidentialityOf(e.resource as Resource));
  return {
    entries: all,
    next: next && {
      interaction: request.interaction,
      resourceType: request.resourceType,
      upstream: resumeAt(next.upstream, request.upstream),
      skip: next.skip,
      count: request.count,
      query: request.query,
      includes: request.includes,
      criteria: request.criteria,
      view: request.view,
    },
    confidentiality: level >= 0 ? confidentialityOrder[level] : undefined,
    hidden,
  };
}

function listingEntry(entry: BundleEntry, resource: Releasable, request: ListingRequest, gatewayBase: string): ReleasableEntry {
  const shown = applyView(resource, request.view);
  const out: ReleasableEntry = { fullUrl: `${gatewayBase}/${refOf(resource)}`, resource: shown };
  if (request.history) {
    if (entry.request) out.request = { method: entry.request.method, url: refOf(resource) };
    if (entry.response) out.response = { status: entry.response.status, etag: entry.response.etag, lastModified: entry.response.lastModified };
  } else {
    out.search = { mode: 'match' };
  }
  return out;
}

/** The searchset/history Bundle the client receives: no total, gateway links only, high-water mark. */
export function listingBundle(
  type: 'searchset' | 'history',
  result: Pick<ListingResult, 'entries' | 'confidentiality'>,
  links: { readonly self: string; readonly next?: string },
  notices: readonly OperationOutcome[],
): Releasable<Bundle> {
  const entry: ReleasableEntry[] = [...result.entries];
  for (const outcome of notices) entry.push({ resource: gatewayAuthored(outcome), search: type === 'searchset' ? { mode: 'outcome' } : undefined });
  const bundle: Omit<Bundle, 'entry'> = { resourceType: 'Bundle', type, link: [{ relation: 'self', url: links.self }] };
  if (links.next) bundle.link?.push({ relation: 'next', url: links.next });
  if (result.confidentiality) {
    const coding: Coding = { system: V3_CONFIDENTIALITY, code: result.confidentiality };
    bundle.meta = { security: [coding] };
  }
  return assembledBundle(bundle, entry);
}
