// What every interaction handler receives: the request's provenance, its disclosure session and the
// gateway's collaborators. Handlers return a Reply; the pipeline audits it and only then sends it.
import type { Writable } from 'node:stream';
import type { BulkDisclosure } from '../audit/record.ts';
import type { DecisionPolicy } from '../config/policy.ts';
import type { Requester } from '../decide/types.ts';
import type { GatewayMetrics } from '../ops/metrics.ts';
import type { SecurityLabeler } from '../label/index.ts';
import type { Logger } from '../ops/logger.ts';
import type { PolicySource, PolicyStore, RequestFactsDeps } from '../policy/index.ts';
import type { CompiledPolicyCache } from '../policy/compiled-cache.ts';
import type { RequestContext } from '../provenance/context.ts';
import type { UpstreamClient } from '../upstream/index.ts';
import type { PageBudget, PageLease } from '../upstream/page-budget.ts';
import type { CursorCodec } from './cursor.ts';
import type { Releasable } from './reply.ts';
import type { DisclosureSession } from './disclose.ts';

export interface GatewayDeps {
  readonly policy: DecisionPolicy;
  /** The gateway's FHIR base as clients see it, e.g. `http://127.0.0.1:8080/fhir`. */
  readonly fhirBase: string;
  readonly upstream: UpstreamClient;
  readonly store: PolicyStore;
  /** Compiled patient policies reused across requests within a minute (src/policy/compiled-cache.ts). */
  readonly compiledPolicies: CompiledPolicyCache;
  /** Computed sensitivity labels (SPEC §4.7), built at start-up from the policy's rule sets. */
  readonly labeler: SecurityLabeler;
  readonly cursors: CursorCodec;
  /** Bytes of upstream pages all requests in progress may hold parsed at once (UPSTREAM_PAGE_BUDGET_BYTES). */
  readonly pageBudget: PageBudget;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  readonly now: () => Date;
}

/** What one request decides with — an enforcement session's facts or explain's — from the gateway's collaborators. */
export function requestFactsDeps(deps: GatewayDeps, policies: PolicySource = deps.store): RequestFactsDeps {
  return { policies, policy: deps.policy, now: deps.now(), compiledPolicies: deps.compiledPolicies, labeler: deps.labeler };
}

export interface Exchange {
  readonly deps: GatewayDeps;
  readonly ctx: RequestContext;
  readonly requester: Requester;
  readonly session: DisclosureSession;
  /** The client's query string, without the leading `?`. */
  readonly query: URLSearchParams;
  readonly rawQuery: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body?: Buffer;
  /** This request's share of the page budget, given back once its reply is sent. */
  readonly pageLease: PageLease;
  /** Patients the request named, for the audit record when nothing was read. */
  readonly namedPatients: Set<string>;
}

export interface Reply {
  readonly status: number;
  /** Only decided or gateway-authored content type-checks here (reply.ts). */
  readonly body?: Releasable;
  readonly headers?: Readonly<Record<string, string>>;
  /** A body written as it is decided (Bulk Data files, SPEC §5.1) instead of `body`. */
  readonly stream?: StreamedBody;
}

/**
 * Writes the decided body to `out`; `finish` makes the download's audit event durable, and only then may `out`
 * end. On any failure the writer destroys `out`, so the client sees a failed download.
 */
export type StreamedBody = (out: Writable, finish: (bulk: BulkDisclosure, failure?: string) => Promise<void>) => Promise<void>;
