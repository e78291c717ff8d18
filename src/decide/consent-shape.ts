// How a Consent is read (SPEC §4.1): status, scope, base decision, R4 vs R5 provision semantics,
// root period. Shared by compile() and $consent-enforcement-status so both say the same thing.
import type { Consent, Period } from '@medplum/fhirtypes';
import type { DecisionPolicy } from '../config/policy.ts';
import { canonicalSystem, CONSENT_SCOPE, DG_CODES, R5_CONSENT_DECISION, R5_CONSENT_PERIOD } from '../fhir/systems.ts';
import { dateHigh, dateLow } from './resource-facts.ts';
import type { EnforcementStatus } from './types.ts';

type Json = Record<string, unknown>;
export type Effect = 'permit' | 'deny';

/** One provision with its effect resolved (R4: as written; R5: the reverse of its parent). */
export interface ProvisionShape {
  readonly element: Json;
  readonly path: string;
  readonly effect: Effect;
  readonly children: readonly ProvisionShape[];
}

export interface ConsentShape {
  readonly root: ProvisionShape;
  readonly r5: boolean;
  /** Where the base decision came from, for the trace. */
  readonly baseFrom: string;
}

const scopeCodes: ReadonlySet<string> = new Set(['patient-privacy', 'research', 'treatment', 'adr']);

/** True for a Consent written in R5 shape (SPEC §4.1 reads those too); R4 validation does not apply. */
export function isR5Consent(resource: { readonly resourceType: string }): boolean {
  const r = resource as unknown as Record<string, unknown>;
  return resource.resourceType === 'Consent' && (r.decision !== undefined || Array.isArray(r.provision));
}

/** SPEC §4.2: a Consent whose category carries DG#legal-restriction. */
export function isLegalRestriction(consent: Consent): boolean {
  return (consent.category ?? []).some((cc) =>
    (cc.coding ?? []).some((c) => c.system === DG_CODES && c.code === 'legal-restriction'),
  );
}

/** Consent scope codes: R4 `scope`; R5 has none, so a consentscope code in `category`, else R5 → patient-privacy. */
export function consentScopeCodes(consent: Consent): string[] {
  const fromScope = (consent.scope?.coding ?? []).map((c) => c.code).filter((c): c is string => !!c);
  if (fromScope.length > 0) return fromScope;
  const fromCategory = (consent.category ?? [])
    .flatMap((cc) => cc.coding ?? [])
    .filter((c) => canonicalSystem(c.system) === CONSENT_SCOPE || (c.system === undefined && scopeCodes.has(c.code ?? '')))
    .map((c) => c.code)
    .filter((c): c is string => !!c);
  if (fromCategory.length > 0) return fromCategory;
  return isR5Consent(consent) ? ['patient-privacy'] : [];
}

/** Root period: R4 provision.period, R5 Consent.period (R5-in-R4: its period extension). */
export function rootPeriod(consent: Consent): Period | undefined {
  const r = consent as unknown as Json;
  // R5-in-R4: the root provision is an exception (its period is the exception's), the consent's own
  // period travels in the R5 period extension.
  if (r5Decision(consent) && !Array.isArray(r.provision)) return consent.extension?.find((e) => e.url === R5_CONSENT_PERIOD)?.valuePeriod;
  const provision = r.provision;
  if (provision && !Array.isArray(provision) && (provision as Json).period) return (provision as Json).period as Period;
  return r.period as Period | undefined;
}

/** Does the period contain `now` (bounds inclusive, at their own precision)? */
export function periodContains(period: Period | undefined, now: number): boolean {
  if (!period) return true;
  if (period.start && !(dateLow(period.start) <= now)) return false;
  if (period.end && !(now <= dateHigh(period.end))) return false;
  return true;
}

function r5Decision(consent: Consent): Effect | undefined {
  const r = consent as unknown as Json;
  if (r.decision === 'permit' || r.decision === 'deny') return r.decision;
  const ext = (consent.extension ?? []).find((e) => e.url === R5_CONSENT_DECISION);
  return ext?.valueCode === 'permit' || ext?.valueCode === 'deny' ? ext.valueCode : undefined;
}

function policyRuleDecision(consent: Consent): Effect | undefined {
  for (const c of consent.policyRule?.coding ?? []) {
    if (c.code === 'OPTIN') return 'permit';
    if (c.code === 'OPTOUT') return 'deny';
  }
  return undefined;
}

const reverse = (e: Effect): Effect => (e === 'permit' ? 'deny' : 'permit');

/** Resolve base decision and provision effects, or say why the consent is not computable. */
export function readConsentShape(consent: Consent): { ok: true; shape: ConsentShape } | { ok: false; reason: string } {
  const r = consent as unknown as Json;
  const provision = r.provision;
  if (Array.isArray(provision)) {
    // R5: Consent.decision is the base, each top-level provision an exception that reverses it.
    const decision = r5Decision(consent);
    if (!decision) return { ok: false, reason: 'R5 consent without decision: no computable base decision' };
    const root: ProvisionShape = {
      element: {},
      path: 'Consent',
      effect: decision,
      children: (provision as Json[]).map((p, i) => r5Tree(p, `provision[${i}]`, reverse(decision))),
    };
    return { ok: true, shape: { root, r5: true, baseFrom: `decision ${decision}` } };
  }
  const element = (provision as Json | undefined) ?? {};
  const extensionDecision = r5Decision(consent);
  if (extensionDecision) return r5InR4Shape(element, provision !== undefined, extensionDecision);
  const rootType = element.type === 'permit' || element.type === 'deny' ? (element.type as Effect) : undefined;
  if (rootType) {
    const tree = r4Tree(element, 'provision', rootType);
    return tree.ok ? { ok: true, shape: { root: tree.node, r5: false, baseFrom: `provision.type ${rootType}` } } : tree;
  }
  const ruled = policyRuleDecision(consent);
  if (ruled) {
    const tree = r4Tree(element, 'provision', ruled);
    return tree.ok ? { ok: true, shape: { root: tree.node, r5: false, baseFrom: `policyRule ${ruled === 'permit' ? 'OPTIN' : 'OPTOUT'}` } } : tree;
  }
  return {
    ok: false,
    reason: 'no computable base decision: no provision.type, no R5 decision and no policyRule OPTIN/OPTOUT',
  };
}

/**
 * SPEC §4.1: an R4 Consent with the R5 decision extension is read with R5 semantics throughout — the
 * extension is the base decision and the root `provision` too is an exception that reverses it.
 */
function r5InR4Shape(element: Json, hasProvision: boolean, decision: Effect): { ok: true; shape: ConsentShape } | { ok: false; reason: string } {
  const exceptions = hasProvision ? [r5Tree(element, 'provision', reverse(decision))] : [];
  const conflict = exceptions.length > 0 ? typeConflict(exceptions[0]) : undefined;
  if (conflict) return { ok: false, reason: conflict };
  const root: ProvisionShape = { element: {}, path: 'Consent', effect: decision, children: exceptions };
  return { ok: true, shape: { root, r5: true, baseFrom: `decision ${decision} (R5 extension)` } };
}

/** A provision `type` that contradicts its R5 reading makes the consent ambiguous: not guessed. */
function typeConflict(node: ProvisionShape): string | undefined {
  const written = node.element.type;
  if ((written === 'permit' || written === 'deny') && written !== node.effect) {
    return `${node.path}.type is ${written}, but under the R5 decision extension it is an exception that ${node.effect === 'permit' ? 'permits' : 'denies'} (it reverses its parent): ambiguous, not guessed`;
  }
  for (const child of node.children) {
    const found = typeConflict(child);
    if (found) return found;
  }
  return undefined;
}

function r4Tree(element: Json, path: string, effect: Effect): { ok: true; node: ProvisionShape } | { ok: false; reason: string } {
  const children: ProvisionShape[] = [];
  const nested = (element.provision as Json[] | undefined) ?? [];
  for (let i = 0; i < nested.length; i++) {
    const child = nested[i];
    const childPath = `${path}.provision[${i}]`;
    if (child.type !== 'permit' && child.type !== 'deny') {
      return { ok: false, reason: `nested provision ${childPath} has no type (R4 requires one on nested provisions; not guessed)` };
    }
    const sub = r4Tree(child, childPath, child.type);
    if (!sub.ok) return sub;
    children.push(sub.node);
  }
  return { ok: true, node: { element, path, effect, children } };
}

/** R5 splits R4's provision.class into `resourceType` and `documentType`; both are read as class. */
function asR4Provision(element: Json): Json {
  const r5Class = [...((element.resourceType as unknown[] | undefined) ?? []), ...((element.documentType as unknown[] | undefined) ?? [])];
  return r5Class.length === 0 ? element : { ...element, class: [...((element.class as unknown[] | undefined) ?? []), ...r5Class] };
}

function r5Tree(element: Json, path: string, effect: Effect): ProvisionShape {
  const nested = (element.provision as Json[] | undefined) ?? [];
  return {
    element: asR4Provision(element),
    path,
    effect,
    children: nested.map((p, i) => r5Tree(p, `${path}.provision[${i}]`, reverse(effect))),
  };
}

/** SPEC §7 $consent-enforcement-status: is this consent in force and computable? `validationFailure` is the
 * validator's message when the policy store found the consent not valid FHIR R4 (decide/ does not validate). */
export function enforcementStatus(
  consent: Consent,
  policy: DecisionPolicy,
  now: Date,
  validationFailure?: string,
): { status: EnforcementStatus; reason?: string } {
  if (consent.status !== 'active') return { status: 'INACTIVE', reason: `status is ${consent.status ?? 'absent'}, not active` };
  if (validationFailure !== undefined) return { status: 'UNSUPPORTED', reason: `does not validate as FHIR R4: ${validationFailure}` };
  const legal = isLegalRestriction(consent);
  if (!legal) {
    const scopes = consentScopeCodes(consent);
    if (!scopes.some((s) => policy.consentScopes.includes(s))) {
      return {
        status: 'UNSUPPORTED',
        reason: `scope ${scopes.join(',') || 'absent'} is not evaluated (policy consentScopes: ${policy.consentScopes.join(',')})`,
      };
    }
  }
  const period = rootPeriod(consent);
  if (!periodContains(period, now.getTime())) {
    return { status: 'INACTIVE', reason: `period ${period?.start ?? '…'} to ${period?.end ?? '…'} does not contain now` };
  }
  const shape = readConsentShape(consent);
  if (!shape.ok) return { status: 'UNSUPPORTED', reason: shape.reason };
  return { status: 'ENFORCEABLE' };
}
