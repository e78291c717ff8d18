// evaluate(): one resource against a compiled patient policy. Reads only resource facts; the layers
// are applied in SPEC order: legal restriction (§4.2) → harm determination (§4.3) → patient consents
// (§4.1) or the implicit policy (§4.5) → 42 CFR Part 2 (§4.4) → inline-label redaction (§5).
import type { Coding, Resource } from '@medplum/fhirtypes';
import { PART2_NOTICE, V3_ACT_CODE, V3_OBSERVATION_VALUE } from '../fhir/systems.ts';
import type { ComputedLabels, LabelReason } from '../label/label.ts';
import type { CompiledConsent, CompiledPatientPolicy, CompiledProvision, ResourceMatcher } from './compile.ts';
import { labelledElements, ResourceFacts } from './resource-facts.ts';
import { RANK_N } from './terminology.ts';
import type { Decision, Obligation, TraceEntry } from './types.ts';

const DENY = 0;
const PERMIT = 1;
const PERMIT_BTG = 2;
type CoreOutcome = typeof DENY | typeof PERMIT | typeof PERMIT_BTG;

const NORDSCLCD: Coding = Object.freeze({ system: V3_ACT_CODE, code: 'NORDSCLCD', display: 'no redisclosure without consent directive' });
const REDACTED: Coding = Object.freeze({ system: V3_OBSERVATION_VALUE, code: 'REDACTED', display: 'redacted' });
const part2Obligations: readonly Obligation[] = Object.freeze([
  Object.freeze({ kind: 'add-security-label', coding: NORDSCLCD }) as Obligation,
  Object.freeze({ kind: 'notice', code: 'part2', text: PART2_NOTICE }) as Obligation,
]);
const redactedLabel: Obligation = Object.freeze({ kind: 'add-security-label', coding: REDACTED });

const part2ConsentTrace = (rule: string, provision: string): TraceEntry => ({
  layer: 'part2',
  effect: 'permit',
  rule,
  provision,
  reason: '42 CFR Part 2 record released under a consent provision that permits it for this requester',
});
const part2EmergencyTrace: TraceEntry = Object.freeze({
  layer: 'part2',
  effect: 'permit',
  rule: '42CFR2.51',
  reason: '42 CFR Part 2 record released for a medical emergency (§2.51) under authorised break-the-glass',
});
const part2DenyTrace: TraceEntry = Object.freeze({
  layer: 'part2',
  effect: 'deny',
  rule: '42CFRPart2',
  reason: '42 CFR Part 2 record: no consent provision permits Part 2 data for this requester and no break-the-glass',
});
const btgTrace: TraceEntry = Object.freeze({
  layer: 'break-the-glass',
  effect: 'permit',
  rule: 'break-the-glass',
  reason: 'released only because authorised break-the-glass was in effect',
});

/** SPEC §4.7: the trace names the rule set and the system and code that labelled. */
const labelTrace = (r: LabelReason): TraceEntry => ({
  layer: 'security-label',
  effect: 'labelled',
  rule: `label:${r.ruleSet}`,
  reason: `computed label ${r.label.code} from ${r.system}|${r.code}`,
});

/** Decides one resource; `computed` are the labels the labeling step added (SPEC §4.7), decided like any other. */
export function evaluate(compiled: CompiledPatientPolicy, resource: Resource, computed?: ComputedLabels): Decision {
  const labelled = computed !== undefined && computed.added.length > 0;
  const facts = new ResourceFacts(resource, labelled ? computed.added : undefined, undefined, compiled.localBases);
  const trace: TraceEntry[] = compiled.ignored.length > 0 ? compiled.ignored.slice() : [];
  if (labelled) for (const r of computed.reasons) trace.push(labelTrace(r));
  const obligations: Obligation[] = [];
  const core = decide(compiled, facts, trace, obligations);
  if (core === DENY) return { outcome: 'deny', obligations, trace, breakGlassUsed: false, part2: facts.part2 };
  // A released resource carries its computed labels so that downstream systems honour them (DS4P).
  if (labelled) for (const coding of computed.added) obligations.push({ kind: 'add-security-label', coding });
  let outcome: Decision['outcome'] = 'permit';
  if (facts.processInline) {
    // SPEC §5: each labelled element is decided as if the resource carried its labels too.
    for (const element of labelledElements(resource)) {
      const elementTrace: TraceEntry[] = [];
      const elementCore = decide(compiled, facts.withLabels(element.labels), elementTrace, []);
      if (elementCore !== DENY) continue;
      const cause = elementTrace.findLast((t) => t.effect === 'deny');
      const reason = `element ${element.path}: ${cause?.reason ?? 'denied'}`;
      obligations.push({ kind: 'redact', path: element.path, reason });
      trace.push({ layer: cause?.layer ?? 'consent', effect: 'redact', rule: cause?.rule ?? 'inline-label', provision: cause?.provision, reason });
      outcome = 'redact';
    }
    if (outcome === 'redact') obligations.push(redactedLabel);
  }
  const breakGlassUsed = core === PERMIT_BTG;
  if (breakGlassUsed) trace.push(btgTrace);
  return { outcome, obligations, trace, breakGlassUsed, part2: facts.part2 };
}

function decide(c: CompiledPatientPolicy, f: ResourceFacts, trace: TraceEntry[], obligations: Obligation[]): CoreOutcome {
  // §4.2 legal restrictions: any matching deny wins; a matching own permit lifts it.
  let liftedByBreakGlass = false;
  for (const restriction of c.legalRestrictions) {
    // Unlike patient consents, a restriction's nested deny counts even when its root does not apply.
    let node = decideTree(restriction.root, f);
    if (node === null && restriction.root.effect === 'permit') node = restriction.notGranted;
    if (node === null) continue;
    trace.push(node.trace);
    if (node.effect === 'deny') return DENY;
    if (node.btgOnly) liftedByBreakGlass = true;
  }

  // §4.3 harm determinations: only the listed records, only from the patient / representatives.
  if (f.reference !== undefined && c.harmWithheld.size > 0) {
    const harm = c.harmWithheld.get(f.reference);
    if (harm) {
      trace.push(harm.trace);
      obligations.push(harm.obligation);
      return DENY;
    }
  }

  // §4.1 patient consents, else §4.5 the implicit policy.
  let permitted: boolean;
  let breakGlass: boolean;
  let part2Provision: CompiledProvision | null = null;
  const decided = decideConsents(c, f);
  if (decided !== null) {
    permitted = true;
    let allBtg = true;
    for (const node of decided) {
      trace.push(node.trace);
      if (node.effect === 'deny') permitted = false;
      else {
        if (!node.btgOnly) allBtg = false;
        if (node.part2Release && part2Provision === null) part2Provision = node;
      }
    }
    breakGlass = permitted && allBtg;
  } else {
    permitted = f.confidentiality <= c.implicitCeiling;
    trace.push(permitted ? c.implicitTrace.permit : c.implicitTrace.deny);
    breakGlass = permitted && (c.implicitIsBreakGlass || f.confidentiality > RANK_N);
  }
  if (!permitted) return DENY;

  // §4.4 42 CFR Part 2: a consent provision that permits Part 2 data, or a §2.51 emergency.
  if (f.part2) {
    if (part2Provision !== null) {
      trace.push(part2ConsentTrace(part2Provision.rule, part2Provision.path));
    } else if (c.breakGlass) {
      trace.push(part2EmergencyTrace);
      breakGlass = true;
    } else {
      trace.push(part2DenyTrace);
      return DENY;
    }
    for (const o of part2Obligations) obligations.push(o);
  }
  return breakGlass || liftedByBreakGlass ? PERMIT_BTG : PERMIT;
}

/** The deciding provisions of the applicable consents, or null when none applies (→ implicit policy). */
function decideConsents(c: CompiledPatientPolicy, f: ResourceFacts): CompiledProvision[] | null {
  let result: CompiledProvision[] | null = null;
  let resultTime = -Infinity;
  const mostRecent = c.policy.combiner === 'most-recent';
  for (const consent of c.consents) {
    if (!consent.applies) continue;
    // Consents are sorted most recent first: an older one cannot change a most-recent answer.
    if (mostRecent && result !== null && consent.dateTime < resultTime) break;
    const node = consentResult(consent, f);
    if (node === null) continue;
    if (result === null) {
      result = [node];
      resultTime = consent.dateTime;
    } else {
      result.push(node); // same dateTime (ties → deny) or deny-overrides: any deny wins in decide()
    }
  }
  return result;
}

function consentResult(consent: CompiledConsent, f: ResourceFacts): CompiledProvision | null {
  const node = decideTree(consent.root, f);
  if (node !== null) return node;
  // A root permit grants only what it matches; a root deny that does not match leaves the implicit policy.
  return consent.root.effect === 'permit' ? consent.notGranted : null;
}

/** Deepest matching provision of a subtree; disagreeing siblings → deny (SPEC §4.1). */
function decideTree(node: CompiledProvision, f: ResourceFacts): CompiledProvision | null {
  let found: CompiledProvision | null = null;
  const children = node.children;
  for (let i = 0; i < children.length; i++) {
    const r = decideTree(children[i], f);
    if (r === null) continue;
    if (found === null || (r.effect === 'deny' && found.effect === 'permit')) found = r;
    else if (r.effect === 'permit' && found.effect === 'permit' && permitScore(r) > permitScore(found)) found = r;
  }
  if (found !== null) return found;
  if (node.active && (node.matcher === null || matches(node.matcher, node.effect, f))) return node;
  return null;
}

const permitScore = (p: CompiledProvision): number => (p.part2Release ? 2 : 0) + (p.btgOnly ? 0 : 1);

function matches(m: ResourceMatcher, effect: 'permit' | 'deny', f: ResourceFacts): boolean {
  if (m.hasClass && !classMatches(m, f)) return false;
  if (m.codes !== null && !codeMatches(m.codes, f)) return false;
  if (m.hasLabel) {
    const confidentialityOk =
      m.confidentiality >= 0 &&
      (effect === 'permit' ? f.confidentiality <= m.confidentiality : f.confidentiality >= m.confidentiality);
    if (!confidentialityOk && !(m.sensitivity !== null && f.hasLabelIn(m.sensitivity))) return false;
  }
  if (m.hasPeriod) {
    const d = f.date();
    if (!(d >= m.periodLow && d <= m.periodHigh)) return false;
  }
  if (m.hasData && !dataMatches(m, f)) return false;
  return true;
}

function classMatches(m: ResourceMatcher, f: ResourceFacts): boolean {
  if (m.classTypes?.has(f.resourceType)) return true;
  if (m.classProfiles !== null) {
    const profiles = (f.resource.meta as { profile?: string[] } | undefined)?.profile;
    if (profiles?.some((p) => m.classProfiles?.has(p.split('|')[0]))) return true;
  }
  if (m.classMimes !== null) {
    const r = f.resource as { contentType?: string; content?: { attachment?: { contentType?: string } }[] };
    if (r.contentType && m.classMimes.has(r.contentType)) return true;
    if (Array.isArray(r.content) && r.content.some((c) => !!c.attachment?.contentType && !!m.classMimes?.has(c.attachment.contentType))) return true;
  }
  return false;
}

function codeMatches(codes: ReadonlyMap<string, ReadonlySet<string>>, f: ResourceFacts): boolean {
  const anySystem = codes.get('');
  for (const c of f.codings()) {
    if (c.code === undefined) continue;
    if (codes.get(c.system ?? '')?.has(c.code) || anySystem?.has(c.code)) return true;
  }
  return false;
}

function dataMatches(m: ResourceMatcher, f: ResourceFacts): boolean {
  const ref = f.reference;
  if (ref !== undefined && (m.instance?.has(ref) || m.related?.has(ref) || m.dependents?.has(ref))) return true;
  if (m.dependents !== null) for (const r of f.references()) if (m.dependents.has(r)) return true;
  if (m.authoredBy !== null) for (const a of f.authors()) if (m.authoredBy.has(a)) return true;
  return false;
}
