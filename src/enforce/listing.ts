// Search, history and $everything pages (SPEC §5): every upstream entry decided, withheld ones leaving no
// trace, short pages refilled from the upstream, and a next link only when another released entry exists
// (a trailing empty page would itself reveal that something was withheld).
import type { Bundle, BundleEntry, Coding, OperationOutcome, Resource } from '@medplum/fhirtypes';
import { GatewayError } from '../fhir/outcome.ts';
import { canonicalSystem, V3_CONFIDENTIALITY } from '../fhir/systems.ts';
import { referencesIn } from '../fhir/references.ts';
import { type UpstreamClient, upstreamFailure } from '../upstream/index.ts';
import type { CursorState } from './cursor.ts';
import type { PageLease } from '../upstream/page-budget.ts';
import type { DisclosureSession, Verdict } from './disclose.ts';
import { assembledBundle, gatewayAuthored, type Releasable, type ReleasableEntry } from './reply.ts';
import { applyView, maxPageSize, redactionChangesMatch } from './search-params.ts';
import { flat } from '../fhir/flat.ts';

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
  return flat`${resource.resourceType}/${resource.id}`; // a history entry's request.url is this string
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

/** One upstream page of a listing: its matches, the next page (on the upstream) and the versions hidden by their current one. */
interface UpstreamPage {
  readonly entries: readonly BundleEntry[];
  readonly matches: readonly BundleEntry[];
  readonly nextUpstream?: string;
  readonly blockedByCurrent: ReadonlySet<string>;
}

interface ListingOptions {
  readonly requestId: string;
  /** Upstream pages are parsed within the request's share of the page budget (upstream/page-budget.ts). */
  readonly pageLease?: PageLease;
  readonly currentVersionGate?: (resources: Resource[]) => Promise<Set<string>>;
}

/** A listing's reads of upstream pages, counted against the page budget, and its unrecorded judgements of their entries. */
class ListingReader {
  private pages = 0;
  private readonly upstream: UpstreamClient;
  readonly session: DisclosureSession;
  readonly request: ListingRequest;
  private readonly opts: ListingOptions;

  constructor(upstream: UpstreamClient, session: DisclosureSession, request: ListingRequest, opts: ListingOptions) {
    this.upstream = upstream;
    this.session = session;
    this.request = request;
    this.opts = opts;
  }

  /** Every upstream page one gateway page may read has been read: it is returned short. */
  get budgetSpent(): boolean {
    return this.pages >= maxUpstreamPagesPerPage;
  }

  /** One upstream page, with the policies of every patient its entries name loaded. */
  async read(path: string): Promise<UpstreamPage> {
    this.pages++;
    const { status, resource: page } = await this.upstream.readJson<Bundle>(path, { requestId: this.opts.requestId, pageLease: this.opts.pageLease });
    if (status === 404 || status === 410) throw new GatewayError(404, 'not-found', 'resource not found');
    if (status >= 400) throw upstreamFailure(status, { failed: 'the upstream server failed', refused: 'the upstream server rejected the search' }, { kept: [400] });
    if (page.resourceType !== 'Bundle') throw upstreamFailure(status, { failed: 'the upstream answered a search with something other than a Bundle' });
    const entries = page.entry ?? [];
    const upstreamNext = page.link?.find((l) => l.relation === 'next')?.url;
    const nextUpstream = upstreamNext === undefined ? undefined : this.upstream.rewriteUpstreamUrl(upstreamNext);
    // A next link leaving the upstream is never followed (SPEC §5); the request fails closed.
    if (nextUpstream === null) throw upstreamFailure(status, { failed: 'the upstream returned a paging link outside its base' });
    const resources = entries.flatMap((e) => (e.resource && e.search?.mode !== 'outcome' ? [e.resource] : []));
    await this.session.prepare(resources);
    // History: a version is released only if the current version of the same resource is (a label added
    // later must also hide the versions written before it).
    const blockedByCurrent = this.request.history && this.opts.currentVersionGate ? await this.opts.currentVersionGate(resources) : new Set<string>();
    return { entries, matches: entries.filter((e) => e.search?.mode !== 'include' && e.search?.mode !== 'outcome'), nextUpstream, blockedByCurrent };
  }

  /** Whether an entry would be shown: decided without recording (look-ahead and offset skips show nothing). */
  judge(entry: BundleEntry, blocked: ReadonlySet<string>): Verdict | undefined {
    const resource = entry.resource;
    if (!resource) return undefined; // a history delete entry
    // A version hidden by its current one; only history has any, and a Set lookup by a fresh string interns it.
    if (blocked.size > 0 && blocked.has(refOf(resource))) return undefined;
    const verdict = this.session.decide(resource, this.request.access, { record: false });
    // A resource whose matching element was redacted away must not be returned by that match.
    if (verdict.released && verdict.decision.outcome === 'redact' && redactionChangesMatch(resource, verdict.resource, this.request.criteria)) return { ...verdict, released: false };
    return verdict;
  }

  /** The index of the first match at or after `from` that would be shown, if any. */
  firstReleased(page: UpstreamPage, from: number): number | undefined {
    for (let i = from; i < page.matches.length; i++) if (this.judge(page.matches[i], page.blockedByCurrent)?.released) return i;
    return undefined;
  }
}

interface IncludeCandidate {
  readonly entry: ReleasableEntry;
  readonly original: Resource;
  readonly verdict: Verdict;
}

/** What filling one gateway page gathered and counted. */
interface PageFill {
  readonly matches: ReleasableEntry[];
  readonly includes: Map<string, IncludeCandidate>;
  /** Released entries still to skip for `_offset`. */
  toSkip: number;
  judged: number;
  released: number;
  /** Entries read in range but not shown. */
  hidden: number;
}

export async function runListing(
  upstream: UpstreamClient,
  session: DisclosureSession,
  request: ListingRequest,
  gatewayBase: string,
  opts: ListingOptions,
): Promise<ListingResult> {
  const { fill, next } = await fillPage(new ListingReader(upstream, session, request, opts), gatewayBase);
  const entries = [...fill.matches, ...justifiedIncludes(fill, session)];
  return { entries, next: next && nextCursor(next, request), confidentiality: highWaterMark(entries), hidden: fill.hidden };
}

/** Reads upstream pages until the gateway page is full, the upstream ends or the budget is spent; `next` is where the next page starts. */
async function fillPage(reader: ListingReader, gatewayBase: string): Promise<{ readonly fill: PageFill; readonly next?: Position }> {
  const { request } = reader;
  const fill: PageFill = { matches: [], includes: new Map(), toSkip: request.offset, judged: 0, released: 0, hidden: 0 };
  let position: Position | undefined = { upstream: request.upstream, skip: request.skip };
  while (position) {
    const page = await reader.read(position.upstream);
    gatherIncludes(reader, page, fill.includes, gatewayBase);
    const stoppedAt = takeMatches(reader, page, position.skip, fill, gatewayBase);
    if (fill.matches.length === request.count) return { fill, next: await lookAhead(reader, page, { upstream: position.upstream, skip: stoppedAt }) };
    position = page.nextUpstream ? { upstream: refillPage(page.nextUpstream, request.count + fill.toSkip - fill.matches.length, fill.released, fill.judged), skip: 0 } : undefined;
    if (position && reader.budgetSpent) return { fill, next: position }; // returned short: the refill budget is spent
  }
  return { fill };
}

/** Decides this page's matches from `from` until the gateway page is full, recording what is shown or skipped in range; returns where it stopped. */
function takeMatches(reader: ListingReader, page: UpstreamPage, from: number, fill: PageFill, gatewayBase: string): number {
  let i = from;
  for (; i < page.matches.length && fill.matches.length < reader.request.count; i++) {
    const entry = page.matches[i];
    const verdict = reader.judge(entry, page.blockedByCurrent);
    if (!verdict?.released && entry.resource) fill.hidden++;
    if (!verdict) continue;
    fill.judged++;
    if (verdict.released) fill.released++;
    if (verdict.released && fill.toSkip > 0) {
      fill.toSkip--;
      continue;
    }
    reader.session.record(entry.resource as Resource, verdict);
    if (verdict.released) fill.matches.push(listingEntry(entry, verdict.resource, reader.request, gatewayBase));
  }
  return i;
}

/** `_include`d entries released on their own, decided without recording: shown only if a released match justifies them. */
function gatherIncludes(reader: ListingReader, page: UpstreamPage, candidates: Map<string, IncludeCandidate>, gatewayBase: string): void {
  for (const entry of page.entries) {
    if (entry.search?.mode !== 'include' || !entry.resource) continue;
    const key = refOf(entry.resource);
    if (candidates.has(key)) continue;
    const verdict = reader.session.decide(entry.resource, reader.request.access, { record: false });
    if (verdict.released) candidates.set(key, { entry: { fullUrl: flat`${gatewayBase}/${key}`, resource: applyView(verdict.resource, reader.request.view), search: { mode: 'include' } }, original: entry.resource, verdict });
  }
}

/** The full page ends here: one more released entry, first in what this upstream page still holds, decides the next link. */
async function lookAhead(reader: ListingReader, page: UpstreamPage, rest: Position): Promise<Position | undefined> {
  const inPage = reader.firstReleased(page, rest.skip);
  if (inPage !== undefined) return { upstream: rest.upstream, skip: inPage };
  return page.nextUpstream ? releasedAhead(reader, { upstream: page.nextUpstream, skip: 0 }) : undefined;
}

/** Where the next gateway page starts: the first released entry at or after `from`, if any (SPEC §5: no empty trailing page). */
async function releasedAhead(reader: ListingReader, from: Position): Promise<Position | undefined> {
  if (from.skip === 0) {
    // Most often the very next entry is released: a few entries tell, not a whole upstream page.
    const probe = await reader.read(withCount(from.upstream, probeSize));
    if (reader.firstReleased(probe, 0) !== undefined) return from;
    if (!probe.nextUpstream && probe.matches.length < probeSize) return undefined;
  }
  let position: Position | undefined = from;
  while (position && !reader.budgetSpent) {
    const page = await reader.read(position.upstream);
    const found = reader.firstReleased(page, position.skip);
    if (found !== undefined) return { upstream: position.upstream, skip: found };
    position = page.nextUpstream ? { upstream: page.nextUpstream, skip: 0 } : undefined;
  }
  return position; // the page budget ran out: continue from here on the next page
}

/** An included entry is shown only when a released match justifies it, so nothing arrives through a withheld match. */
function justifiedIncludes(fill: PageFill, session: DisclosureSession): ReleasableEntry[] {
  if (fill.includes.size === 0) return [];
  const matchRefs = new Set(fill.matches.map((e) => refOf(e.resource as Resource)));
  const referencedByMatches = new Set<string>();
  for (const e of fill.matches) referencesIn(e.resource, referencedByMatches, session.localBases);
  const justified = (entry: ReleasableEntry): boolean => {
    const ref = refOf(entry.resource as Resource);
    if (matchRefs.has(ref)) return false;
    if (referencedByMatches.has(ref)) return true;
    for (const r of referencesIn(entry.resource, new Set(), session.localBases)) if (matchRefs.has(r)) return true;
    return false;
  };
  return [...fill.includes.values()]
    .filter(({ entry }) => justified(entry))
    .map(({ entry, original, verdict }) => {
      session.record(original, verdict);
      return entry;
    });
}

/** The cursor of the next gateway page: this listing's request, resumed at `next`. */
function nextCursor(next: Position, request: ListingRequest): CursorState {
  return {
    interaction: request.interaction,
    resourceType: request.resourceType,
    upstream: resumeAt(next.upstream, request.upstream),
    skip: next.skip,
    count: request.count,
    query: request.query,
    includes: request.includes,
    criteria: request.criteria,
    view: request.view,
  };
}

/** The highest confidentiality among the released entries (SPEC §5 high-water mark). */
function highWaterMark(entries: readonly ReleasableEntry[]): string | undefined {
  let level = -1;
  for (const e of entries) level = Math.max(level, confidentialityOf(e.resource as Resource));
  return level >= 0 ? confidentialityOrder[level] : undefined;
}

function listingEntry(entry: BundleEntry, resource: Releasable, request: ListingRequest, gatewayBase: string): ReleasableEntry {
  const shown = applyView(resource, request.view);
  const out: ReleasableEntry = { fullUrl: flat`${gatewayBase}/${resource.resourceType}/${resource.id}`, resource: shown };
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
