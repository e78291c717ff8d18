// One request's enforcement: decides each resource with decide/'s rule chain on the request's facts, applies the
// obligations, and keeps the per-patient account that audit records.
import type { Resource } from '@medplum/fhirtypes';
import type { PatientDisclosure, ResourceDisposition } from '../audit/record.ts';
import { decideDisclosure, type DisclosureOptions, withholdingLayer } from '../decide/index.ts';
import type { Decision, Obligation, Requester, TraceEntry } from '../decide/types.ts';
import type { LocalBases } from '../fhir/references.ts';
import type { RequestContext, ScopeInteraction } from '../provenance/context.ts';
import { RequestFacts, type RequestFactsDeps } from '../policy/index.ts';
import { applyObligations } from './redact.ts';
import { decidedRelease, type Releasable } from './reply.ts';

export type Verdict =
  | { readonly released: true; readonly resource: Releasable; readonly decision: Decision; readonly patients: readonly string[] }
  | { readonly released: false; readonly decision: Decision; readonly patients: readonly string[] };

function reference(resource: Resource): string {
  return `${resource.resourceType}/${resource.id ?? ''}`;
}

interface PatientAccount {
  dispositions: ResourceDisposition[];
  ignored: Map<string, TraceEntry>;
  consentDecisions: Map<string, PatientDisclosure['consentDecisions'][number]>;
}

/** The labeling entries of a trace, once each (several patients' decisions repeat them); undefined when none. */
function labelTrace(trace: readonly TraceEntry[]): TraceEntry[] | undefined {
  let out: TraceEntry[] | undefined;
  for (const t of trace) {
    if (t.layer !== 'security-label' || out?.some((x) => x.rule === t.rule && x.reason === t.reason)) continue;
    (out ??= []).push(t);
  }
  return out;
}

export class DisclosureSession {
  private readonly facts: RequestFacts;
  private readonly accounts = new Map<string, PatientAccount>();
  /** Harm-determination refusals met in this request, to be stated to the patient (SPEC §4.3). */
  readonly harmRefusals: Extract<Obligation, { kind: 'harm-refusal' }>[] = [];
  /** Resources withheld for a reason other than a stated harm determination (the general notice). */
  withheldUnstated = 0;
  /** The layer that withheld each withheld resource (metrics). */
  readonly withheldLayers: string[] = [];

  constructor(deps: RequestFactsDeps, ctx: RequestContext, requester: Requester) {
    this.facts = new RequestFacts(deps, ctx, requester);
  }

  /** Bases whose absolute references are local (SPEC §4.1). */
  get localBases(): LocalBases | undefined {
    return this.facts.localBases;
  }

  /** Loads and compiles the policies of every patient these resources name; call before `decide`. */
  prepare(resources: Iterable<Resource>, extraPatients: readonly string[] = []): Promise<void> {
    return this.facts.prepare(resources, extraPatients);
  }

  /** Decides one resource and, unless told not to, records the outcome in each of its patients' accounts. */
  decide(resource: Resource, access: ScopeInteraction = 'r', opts: DisclosureOptions & { readonly record?: boolean } = {}): Verdict {
    const patients = opts.patients ?? this.facts.patientsOf(resource);
    const decision = decideDisclosure(resource, access, this.facts, { patients, contextChecked: opts.contextChecked });
    const verdict: Verdict = decision.outcome === 'deny' ? { released: false, decision, patients } : { released: true, resource: decidedRelease(applyObligations(resource, decision)), decision, patients };
    if (opts.record !== false) this.record(resource, verdict);
    return verdict;
  }

  /** Accounts for a verdict reached earlier without recording (a listing records only what it shows or skips in range). */
  record(resource: Resource, verdict: Verdict): void {
    const { decision, patients } = verdict;
    const ref = reference(resource);
    const versionId = resource.meta?.versionId;
    if (!verdict.released) {
      this.withheldLayers.push(withholdingLayer(decision));
      let stated = false;
      for (const o of decision.obligations) {
        if (o.kind !== 'harm-refusal') continue;
        stated = true;
        if (!this.harmRefusals.some((h) => h.flag === o.flag)) this.harmRefusals.push(o);
      }
      if (!stated) this.withheldUnstated++;
      for (const id of patients) {
        this.account(id, decision).dispositions.push({ disposition: 'withheld', reference: ref, versionId, trace: decision.trace });
      }
      return;
    }
    const paths = decision.obligations.flatMap((o) => (o.kind === 'redact' ? [o.path] : []));
    // SPEC §4.7: the audit names the rule set, system and code of each label a released resource gained.
    const labelled = labelTrace(decision.trace);
    const breakGlassUsed = decision.breakGlassUsed || undefined;
    const part2 = decision.part2 || undefined;
    const disposition: ResourceDisposition =
      paths.length > 0
        ? { disposition: 'redacted', reference: ref, versionId, paths, trace: decision.trace, breakGlassUsed, part2 }
        : { disposition: 'released', reference: ref, versionId, breakGlassUsed, part2, labelled };
    for (const id of patients) this.account(id, decision).dispositions.push(disposition);
  }

  /** One patient’s account, noting the consents that decided and the rules that were ignored. */
  private account(patientId: string, decision: Decision): PatientAccount {
    let account = this.accounts.get(patientId);
    if (!account) {
      account = { dispositions: [], ignored: new Map(), consentDecisions: new Map() };
      this.accounts.set(patientId, account);
    }
    for (const entry of decision.trace) {
      if (entry.effect === 'ignored') account.ignored.set(`${entry.rule}|${entry.reason}`, entry);
      if (entry.layer === 'consent' && (entry.effect === 'permit' || entry.effect === 'deny')) {
        const key = `${entry.rule}|${entry.provision ?? ''}|${entry.effect}`;
        if (!account.consentDecisions.has(key)) {
          account.consentDecisions.set(key, { consent: entry.rule, provision: entry.provision, effect: entry.effect, reason: entry.reason });
        }
      }
    }
    return account;
  }

  /** Notes a patient the request was about even if nothing of theirs was returned (an empty search). */
  touch(patientId: string): void {
    if (!this.accounts.has(patientId)) this.accounts.set(patientId, { dispositions: [], ignored: new Map(), consentDecisions: new Map() });
  }

  disclosures(): PatientDisclosure[] {
    return [...this.accounts.entries()].map(([patientId, a]) => ({
      patientId,
      dispositions: a.dispositions,
      ignored: [...a.ignored.values()],
      consentDecisions: [...a.consentDecisions.values()],
    }));
  }
}
