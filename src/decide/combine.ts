// Rules that combine decisions (SPEC §5): deny-wins across a resource's patients, a stored Bundle released
// all-or-nothing, contained resources decided with their container. Pure: the per-resource decision is
// passed in, so enforcement (which knows patients, scopes and labels) and $disclosure-decision share them.
import type { Bundle, Resource } from '@medplum/fhirtypes';
import type { Decision, Obligation, RuleLayer, TraceEntry } from './types.ts';

/** A refusal decided before any patient's rules (scopes, patient context, attribution), as a decision with its trace. */
export function refusal(rule: string, reason: string, layer: RuleLayer = 'scope'): Decision {
  return { outcome: 'deny', obligations: [], trace: [{ layer, effect: 'deny', rule, reason }], breakGlassUsed: false, part2: false };
}

/** The rule layer that withheld a denied resource (consent, restriction, scope…), for metrics and export counts. */
export function withholdingLayer(decision: Decision): string {
  return decision.trace.find((t) => t.effect === 'deny')?.layer ?? 'unknown';
}

/** A permit that no patient's rules govern, with the reason it was released. */
export function ungoverned(reason: string): Decision {
  return { outcome: 'permit', obligations: [], trace: [{ layer: 'not-patient-data', effect: 'permit', rule: 'scope', reason }], breakGlassUsed: false, part2: false };
}

function sameObligation(a: Obligation, b: Obligation): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Deny from any patient wins; otherwise the union of every patient's obligations. */
export function combineDecisions(decisions: readonly Decision[]): Decision {
  if (decisions.length === 1) return decisions[0];
  const trace = decisions.flatMap((d) => d.trace);
  const obligations: Obligation[] = [];
  const denied = decisions.some((d) => d.outcome === 'deny');
  for (const d of decisions) {
    for (const o of d.obligations) {
      if (denied && o.kind !== 'harm-refusal') continue;
      if (!obligations.some((x) => sameObligation(x, o))) obligations.push(o);
    }
  }
  if (denied) return { outcome: 'deny', obligations, trace, breakGlassUsed: false, part2: decisions.some((d) => d.part2) };
  return {
    outcome: decisions.some((d) => d.outcome === 'redact') ? 'redact' : 'permit',
    obligations,
    trace,
    breakGlassUsed: decisions.some((d) => d.breakGlassUsed),
    part2: decisions.some((d) => d.part2),
  };
}

/**
 * A stored Bundle (a document, a message) is released whole or not at all: only when every resource in it
 * may be released unchanged. `decideEntry` decides one entry; the first that may not be released ends it.
 */
export function storedBundleDecision(bundle: Bundle, decideEntry: (resource: Resource) => Decision): Decision {
  const trace: TraceEntry[] = [];
  let breakGlassUsed = false;
  for (const entry of bundle.entry ?? []) {
    if (!entry.resource) continue;
    const inner = decideEntry(entry.resource);
    // Computed labels alone do not change a stored copy enough to withhold it (SPEC §4.7 adds sensitivity, not secrecy).
    if (inner.outcome !== 'permit' || inner.obligations.some((o) => o.kind !== 'harm-refusal' && o.kind !== 'add-security-label')) {
      const layer = inner.trace.find((t) => t.effect === 'deny' || t.effect === 'redact')?.layer ?? 'scope';
      const reason = 'a stored Bundle is released only when every resource in it may be released unchanged';
      return {
        outcome: 'deny',
        obligations: inner.obligations.filter((o) => o.kind === 'harm-refusal'),
        trace: [...inner.trace, { layer, effect: 'deny', rule: `Bundle/${bundle.id ?? ''}`, reason }],
        breakGlassUsed: false,
        part2: inner.part2,
      };
    }
    trace.push(...inner.trace);
    breakGlassUsed ||= inner.breakGlassUsed;
  }
  return { outcome: 'permit', obligations: [], trace, breakGlassUsed, part2: false };
}

/** SPEC §5: contained resources are decided with their container's patients; a denied one is removed (redacted). */
export function withContainedDecided(decision: Decision, resource: Resource, decideContained: (inner: Resource) => Decision): Decision {
  const contained = (resource as { contained?: Resource[] }).contained;
  if (!contained?.length || decision.outcome === 'deny') return decision;
  const removals: Obligation[] = [];
  const trace: TraceEntry[] = [];
  contained.forEach((inner, index) => {
    const innerDecision = decideContained(inner);
    if (innerDecision.outcome === 'deny') {
      removals.push({ kind: 'redact', path: `contained[${index}]`, reason: 'contained resource withheld' });
      trace.push(...innerDecision.trace);
    }
  });
  if (removals.length === 0) return decision;
  return { ...decision, outcome: 'redact', obligations: [...decision.obligations, ...removals], trace: [...decision.trace, ...trace] };
}
