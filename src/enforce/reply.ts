// What may leave the gateway as a FHIR body (SPEC §5 "no entry ever returns an undecided upstream body").
// A Reply carries only `Releasable` content, and there are exactly four ways to make it: a decision
// that released the resource (DisclosureSession.decide), a resource the gateway wrote itself, the client's
// own body echoed back to it, or a Bundle assembled from entries that are themselves Releasable. Whatever the upstream answered is a plain
// Resource and does not type-check as a reply until it has been decided.
import type { Bundle, BundleEntry, BundleEntryResponse, CapabilityStatement, OperationOutcome, Parameters, Resource } from '@medplum/fhirtypes';

declare const releasable: unique symbol;

/** Content that passed the decision path, or that the gateway authored. */
export type Releasable<T extends Resource = Resource> = T & { readonly [releasable]: true };

/** A Bundle entry whose resource and outcome (if any) are Releasable. */
export type ReleasableEntry = Omit<BundleEntry, 'resource' | 'response'> & {
  resource?: Releasable;
  response?: Omit<BundleEntryResponse, 'outcome'> & { outcome?: Releasable };
};

/** Brands a resource a decision released. Only DisclosureSession.decide calls this (test/enforce/reply-guard). */
export function decidedRelease<T extends Resource>(resource: T): Releasable<T> {
  return resource as Releasable<T>;
}

/** The gateway's own words: outcomes, explain/status Parameters, its CapabilityStatement. */
export function gatewayAuthored<T extends OperationOutcome | Parameters | CapabilityStatement>(resource: T): Releasable<T> {
  return resource as Releasable<T>;
}

/** The client's own request body handed back to it (`$security-label`): it holds nothing the client did not send. */
export function echoedToSender<T extends Resource>(resource: T): Releasable<T> {
  return resource as Releasable<T>;
}

/** JSON the gateway wrote that is not a FHIR resource: a Bulk Data manifest (gateway URLs only, SPEC §5.1), the SMART configuration. */
export function authoredJson(document: object): Releasable {
  return document as unknown as Releasable;
}

/** A Bundle the gateway assembled; every entry's resource must already be Releasable. */
export function assembledBundle(bundle: Omit<Bundle, 'entry'>, entries: readonly ReleasableEntry[]): Releasable<Bundle> {
  return { ...bundle, entry: [...entries] } as Releasable<Bundle>;
}
