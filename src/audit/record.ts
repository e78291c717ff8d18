// What enforcement tells audit about one request: the input of the AuditEvent builders (SPEC §6).
// References, codes and trace entries only — never resource content.
import type { Decision, TraceEntry } from '../decide/types.ts';
import type { RequestContext } from '../provenance/context.ts';

export type Interaction =
  | 'read'
  | 'vread'
  | 'history-instance'
  | 'history-type'
  | 'history-system'
  | 'search-type'
  | 'search-system'
  | 'search-compartment'
  | 'batch'
  | 'transaction'
  | 'operation'
  | 'create'
  | 'update'
  | 'patch'
  | 'delete'
  | 'capabilities';

/** What enforcement did with one resource version, as audit and metrics read it (issue 18: one list, one entry each). */
export type ResourceDisposition = ReleasedResource | RedactedResource | WithheldResource;

export interface ReleasedResource {
  readonly disposition: 'released';
  /** `Observation/o1` */
  readonly reference: string;
  readonly versionId?: string;
  /** Released only because break-the-glass was in effect. */
  readonly breakGlassUsed?: boolean;
  readonly part2?: boolean;
  /** Labels the labeling service computed for it (SPEC §4.7): rule set, system and code; absent when none. */
  readonly labelled?: readonly TraceEntry[];
}

/** Released with elements removed. */
export interface RedactedResource {
  readonly disposition: 'redacted';
  readonly reference: string;
  readonly versionId?: string;
  /** Element paths removed. */
  readonly paths: readonly string[];
  readonly trace: readonly TraceEntry[];
  readonly breakGlassUsed?: boolean;
  readonly part2?: boolean;
}

export interface WithheldResource {
  readonly disposition: 'withheld';
  readonly reference: string;
  readonly versionId?: string;
  /** The trace of the decision that withheld it (or a single synthetic entry for scope refusals). */
  readonly trace: readonly TraceEntry[];
}

/** What happened to one patient's data in this request. */
export interface PatientDisclosure {
  /** Bare patient id. */
  readonly patientId: string;
  /** One entry per resource decided for this patient, in the order enforcement decided them. */
  readonly dispositions: readonly ResourceDisposition[];
  /** Rules that were ignored for this patient and why (invalid harm flag, non-computable consent…). */
  readonly ignored: readonly TraceEntry[];
  /** Consent decisions that mattered (one AuthZconsent event per consent + effect). */
  readonly consentDecisions: readonly { readonly consent: string; readonly provision?: string; readonly effect: 'permit' | 'deny'; readonly reason: string }[];
}

export interface DisclosureRecord {
  readonly requestId: string;
  /** ISO instant the request was received. */
  readonly recorded: string;
  readonly interaction: Interaction;
  /** HTTP method and the gateway-relative path+query the client asked for (no token). */
  readonly method: string;
  readonly query: string;
  /** Resource type asked for, when one. */
  readonly resourceType?: string;
  /** success (0), refused before data (4 minor… we use 4), error (8 serious, 12 major) per BALP/FHIR AuditEvent.outcome. */
  readonly outcome: 'success' | 'refused' | 'error';
  readonly httpStatus: number;
  /** Why a refused/error request failed (fixed wording, no data). */
  readonly outcomeDesc?: string;
  /** Undefined when the request failed before provenance (bad token): the client id may still be known. */
  readonly context?: RequestContext;
  readonly clientId?: string;
  /** Break-the-glass asked for without authorisation (header without scope): an attempt to audit. */
  readonly breakGlassAttempt?: boolean;
  /** Per patient; empty when the request touched no patient data (e.g. refused before read). */
  readonly patients: readonly PatientDisclosure[];
  /** Patients the request named when it was refused before data was read. */
  readonly requestedPatients?: readonly string[];
  /** Source address of the client (network access point). */
  readonly clientAddress?: string;
  /** A Bulk Data file download: one event with counts per patient instead of one per patient (SPEC §5.1). */
  readonly bulk?: BulkDisclosure;
}

/** What left in one Bulk Data file, counted per patient rather than listed per resource (SPEC §5.1). */
export interface BulkDisclosure {
  /** The file's resource type as the manifest named it. */
  readonly resourceType: string;
  readonly patients: readonly BulkPatientCount[];
  /** Lines about no patient. */
  readonly unpatiented: { readonly released: number; readonly withheld: number };
  /** Withheld lines by the decision layer that withheld them (consent, restriction, scope…). */
  readonly withheldBy: Readonly<Record<string, number>>;
}

export interface BulkPatientCount {
  /** Bare patient id. */
  readonly patientId: string;
  /** Lines released (redacted ones included). */
  readonly released: number;
  readonly redacted: number;
  readonly withheld: number;
}

/** A decision paired with the resource reference it was made for; the explain endpoint and audit share it. */
export interface DecidedResource {
  readonly reference: string;
  readonly versionId?: string;
  readonly decision: Decision;
}
