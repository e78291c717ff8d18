// The decision engine's inputs and outputs (SPEC §4). A decision is data: enforcement, audit and
// $disclosure-decision all read the same value.
import type { Coding, Consent, Flag } from '@medplum/fhirtypes';
import type { ClientKind } from '../provenance/context.ts';

/** Everything the policy store resolved about one patient from the upstream. */
export interface PatientPolicyInputs {
  /** Bare patient id. */
  readonly patientId: string;
  /** Consents about the patient, legal restrictions included (told apart by category). */
  readonly consents: readonly Consent[];
  /** Harm-determination candidates: Flags whose code carries DG#harm-determination. */
  readonly flags: readonly Flag[];
  /** Group or CareTeam reference (e.g. `Group/btg-users`) → member references (active members only). */
  readonly memberships: Readonly<Record<string, readonly string[]>>;
  /** Actor reference → its identifiers as `system|value`, for actors the consents name. */
  readonly identifiers: Readonly<Record<string, readonly string[]>>;
  /** Practitioner / PractitionerRole references with a care relationship to the patient
   * (generalPractitioner, active CareTeam participant, Encounter participant). */
  readonly careRelationships: readonly string[];
  /** Resource named by a consent provision's `data` (meaning `related`) → the references it contains
   * (SPEC §4.1 `related`: that resource and what it references). Optional: without it `related`
   * covers only the named resource. */
  readonly dataReferences?: Readonly<Record<string, readonly string[]>>;
  /** The upstream's and the gateway's bases: a resource's absolute references on them are local (SPEC §4.1).
   * Optional: without them every absolute reference in a resource is another server's. */
  readonly localBases?: readonly string[];
  /** Consents and Flags (`Consent/id`, `Flag/id`) that failed FHIR R4 validation when the policy store
   * loaded them → the validator's message. Validation reads definitions from disk, so it is done in
   * policy/ once per resource; decide/ only reads the result. Absent: none failed. */
  readonly invalid?: Readonly<Record<string, string>>;
}

export type PolicyResourceValidity = { readonly valid: true } | { readonly valid: false; readonly message: string };

/** The requester, resolved: every reference and identifier under which a rule may name them. */
export interface Requester {
  /** Relative reference, e.g. `Practitioner/dr-a`, `Patient/p1`, `RelatedPerson/guardian`. */
  readonly fhirUser?: string;
  /** fhirUser (unless a RelatedPerson whose relationship ended), the organization claim, and for a
   * PractitionerRole in force its practitioner and organization. Only these match consent actors. */
  readonly references: readonly string[];
  /** `system|value` identifiers of those references. */
  readonly identifiers: readonly string[];
  /** v3-ActReason codes of this request (BTG included while break-the-glass is in effect). */
  readonly purposes: readonly string[];
  /** Break-the-glass in effect (authorised by scope, SPEC §3). */
  readonly breakGlass: boolean;
  /** The narrowest kind of resource scope the token holds. */
  readonly clientKind: ClientKind;
  /** What the request does with the data; reads are `access`. */
  readonly action: 'access' | 'correct' | 'collect';
}

export type Outcome = 'permit' | 'deny' | 'redact';

export type RuleLayer =
  | 'legal-restriction'
  | 'consent'
  | 'harm-determination'
  | 'part2'
  | 'implicit-policy'
  | 'break-the-glass'
  /** SMART scopes or patient context (decided by enforcement, recorded in the same trace shape). */
  | 'scope'
  /** Data that is not about a patient, or audit records governed by auditor scopes. */
  | 'not-patient-data'
  /** A label the labeling service computed from the resource's codes (SPEC §4.7). */
  | 'security-label';

/** One rule that mattered (or was ignored) for a decision. No patient data: ids, codes and fixed wording only. */
export interface TraceEntry {
  readonly layer: RuleLayer;
  readonly effect: 'permit' | 'deny' | 'redact' | 'ignored' | 'not-applicable' | 'labelled';
  /** The rule's resource (`Consent/c1`, `Flag/h1`), `implicit:<policy>`, or `label:<rule set>`. */
  readonly rule: string;
  /** Provision path inside a consent, e.g. `provision.provision[1]`. */
  readonly provision?: string;
  /** Harm-determination ground code. */
  readonly ground?: string;
  /** Plain words: why this rule had this effect. */
  readonly reason: string;
}

export type Obligation =
  /** Remove the element at `path` (dotted, with indices: `note[0]`, `component[1].valueQuantity`). */
  | { readonly kind: 'redact'; readonly path: string; readonly reason: string }
  /** Add a label to `meta.security` (REDACTED, NORDSCLCD). */
  | { readonly kind: 'add-security-label'; readonly coding: Coding }
  /** Attach a notice to the released resource (the Part 2 redisclosure notice). */
  | { readonly kind: 'notice'; readonly code: 'part2'; readonly text: string }
  /** A refusal that must be stated to the patient/representative (harm determination, SPEC §4.3). */
  | { readonly kind: 'harm-refusal'; readonly flag: string; readonly ground: string; readonly text: string };

export interface Decision {
  readonly outcome: Outcome;
  readonly obligations: readonly Obligation[];
  readonly trace: readonly TraceEntry[];
  /** True when the resource was released only because break-the-glass was in effect. */
  readonly breakGlassUsed: boolean;
  /** True when the resource is 42 CFR Part 2 data. */
  readonly part2: boolean;
}

export type EnforcementStatus = 'ENFORCEABLE' | 'INACTIVE' | 'UNSUPPORTED';
