// compile(): answers every request-side question once per (patient, requester) — actor, purpose,
// action, periods, break-the-glass, harm-flag validity — so that evaluate() reads only resource facts.
import type { CodeableConcept, Coding, Consent, ConsentProvision, Period, Reference } from '@medplum/fhirtypes';
import type { DecisionPolicy } from '../config/policy.ts';
import { canonicalCoding, canonicalSystem, V3_ACT_CODE, V3_ACT_REASON, V3_CONFIDENTIALITY } from '../fhir/systems.ts';
import {
  type Effect,
  enforcementStatus,
  isLegalRestriction,
  periodContains,
  type ProvisionShape,
  readConsentShape,
} from './consent-shape.ts';
import { harmDeterminationValidity, type HarmGround, harmRefusalText } from './harm.ts';
import { keyType, type LocalBases, referenceKey } from '../fhir/references.ts';
import { dateHigh, dateLow } from './resource-facts.ts';
import { confidentialityRank, part2ReleaseCodes, purposeIsA, RANK_N, RANK_R, sensitivityWithDescendants } from './terminology.ts';
import type { EnforcementStatus, Obligation, PatientPolicyInputs, Requester, TraceEntry } from './types.ts';

/** Resource-side constraints of one provision; an absent group does not constrain (SPEC §4.1). */
export interface ResourceMatcher {
  readonly classTypes: ReadonlySet<string> | null;
  readonly classProfiles: ReadonlySet<string> | null;
  readonly classMimes: ReadonlySet<string> | null;
  readonly hasClass: boolean;
  /** system ('' = any system) → codes. */
  readonly codes: ReadonlyMap<string, ReadonlySet<string>> | null;
  readonly hasLabel: boolean;
  /** Permit: clearance (resource ≤ rank); deny: floor (resource ≥ rank); -1 = no confidentiality code. */
  readonly confidentiality: number;
  readonly sensitivity: ReadonlyMap<string, ReadonlySet<string>> | null;
  readonly periodLow: number;
  readonly periodHigh: number;
  readonly hasPeriod: boolean;
  readonly instance: ReadonlySet<string> | null;
  readonly related: ReadonlySet<string> | null;
  readonly dependents: ReadonlySet<string> | null;
  readonly authoredBy: ReadonlySet<string> | null;
  readonly hasData: boolean;
}

export interface CompiledProvision {
  readonly rule: string;
  readonly path: string;
  readonly effect: Effect;
  /** Period current and request-side elements (actor, purpose, action) match this requester. */
  readonly active: boolean;
  /** Matched only because break-the-glass added BTG to the purposes. */
  readonly btgOnly: boolean;
  /** A permit whose securityLabel names 42CFRPart2/SUD/ETHUD/OPIOIDUD (SPEC §4.4). */
  readonly part2Release: boolean;
  readonly matcher: ResourceMatcher | null;
  readonly children: readonly CompiledProvision[];
  readonly trace: TraceEntry;
}

export interface CompiledConsent {
  readonly reference: string;
  readonly legal: boolean;
  /** Consent.dateTime in ms (-Infinity when absent). */
  readonly dateTime: number;
  readonly root: CompiledProvision;
  /** Root permit always applies; root deny only when its request-side elements match (SPEC §4.1). */
  readonly applies: boolean;
  /** The deny that a root permit gives for what it does not grant. */
  readonly notGranted: CompiledProvision;
}

export interface CompiledHarm {
  readonly flag: string;
  readonly ground: HarmGround;
  readonly obligation: Obligation;
  readonly trace: TraceEntry;
}

export interface PolicyStatus {
  readonly reference: string;
  readonly status: EnforcementStatus;
  readonly reason?: string;
}

export interface CompiledPatientPolicy {
  readonly patientId: string;
  readonly policy: DecisionPolicy;
  readonly breakGlass: boolean;
  /** Request purposes as evaluated (BTG present exactly when break-the-glass is in effect). */
  readonly purposes: readonly string[];
  readonly legalRestrictions: readonly CompiledConsent[];
  /** Patient consents in force, most recent first. */
  readonly consents: readonly CompiledConsent[];
  /** Withheld record → the harm determination that withholds it from this requester. */
  readonly harmWithheld: ReadonlyMap<string, CompiledHarm>;
  /** Highest confidentiality rank the implicit policy releases to this requester (-1 = none). */
  readonly implicitCeiling: number;
  /** Implicit releases are break-the-glass releases (break-glass-only). */
  readonly implicitIsBreakGlass: boolean;
  readonly implicitTrace: { readonly permit: TraceEntry; readonly deny: TraceEntry };
  /** Consents and flags not used, with the reason (always part of the trace). */
  readonly ignored: readonly TraceEntry[];
  /** Per consent, what $consent-enforcement-status reports. */
  readonly statuses: readonly PolicyStatus[];
  /** Bases whose absolute references in a resource are local (from the inputs; decide/ does no I/O). */
  readonly localBases: LocalBases;
}

const readActions: ReadonlySet<string> = new Set(['access', 'use', 'disclose']);
const RESOURCE_TYPES = 'http://hl7.org/fhir/resource-types';
const MIME = 'urn:ietf:bcp:13';

interface RequestView {
  readonly patientId: string;
  readonly references: ReadonlySet<string>;
  readonly identifiers: ReadonlySet<string>;
  readonly purposes: readonly string[];
  readonly purposesWithoutBtg: readonly string[];
  readonly action: Requester['action'];
  readonly memberships: PatientPolicyInputs['memberships'];
  readonly actorIdentifiers: PatientPolicyInputs['identifiers'];
  readonly dataReferences: Readonly<Record<string, readonly string[]>>;
  readonly breakGlass: boolean;
  readonly now: number;
}

export function compile(
  inputs: PatientPolicyInputs,
  requester: Requester,
  policy: DecisionPolicy,
  now: Date,
): CompiledPatientPolicy {
  const view = requestView(inputs, requester, now);
  const ignored: TraceEntry[] = [];
  const { statuses, legalRestrictions, consents } = compileConsents(inputs, policy, now, view, ignored);
  const fhirUser = referenceKey(requester.fhirUser);
  return {
    patientId: inputs.patientId,
    policy,
    breakGlass: requester.breakGlass,
    purposes: view.purposes,
    legalRestrictions,
    consents,
    harmWithheld: compileHarmDeterminations(inputs, now, fhirUser, view.purposes, ignored),
    ...implicitPolicy(policy, requester, fhirUser, view.purposes),
    ignored,
    statuses,
    localBases: new Set(inputs.localBases ?? []),
  };
}

/** What a consent's actors, purposes and data are matched against, for this requester and patient. */
function requestView(inputs: PatientPolicyInputs, requester: Requester, now: Date): RequestView {
  // SPEC §3: BTG is a purpose exactly while break-the-glass is in effect.
  const withoutBtg = requester.purposes.filter((p) => p !== 'BTG');
  const references = new Set<string>();
  // The store lists fhirUser among the references only while it may be named (a representative whose relationship ended is not).
  for (const r of requester.references) {
    const key = referenceKey(r);
    if (key) references.add(key);
  }
  return {
    patientId: inputs.patientId,
    references,
    identifiers: new Set(requester.identifiers),
    purposes: requester.breakGlass ? [...withoutBtg, 'BTG'] : withoutBtg,
    purposesWithoutBtg: withoutBtg,
    action: requester.action,
    memberships: inputs.memberships,
    actorIdentifiers: inputs.identifiers,
    dataReferences: inputs.dataReferences ?? {},
    breakGlass: requester.breakGlass,
    now: now.getTime(),
  };
}

/** Enforceable consents compiled (legal restrictions apart, the rest newest first); the others traced as ignored. */
function compileConsents(inputs: PatientPolicyInputs, policy: DecisionPolicy, now: Date, view: RequestView, ignored: TraceEntry[]) {
  const statuses: PolicyStatus[] = [];
  const legalRestrictions: CompiledConsent[] = [];
  const consents: CompiledConsent[] = [];
  for (const consent of inputs.consents) {
    const reference = `Consent/${consent.id ?? '(no id)'}`;
    const legal = isLegalRestriction(consent);
    const layer = legal ? 'legal-restriction' : 'consent';
    const status = enforcementStatus(consent, policy, now, inputs.invalid?.[reference]);
    statuses.push({ reference, ...status });
    if (status.status !== 'ENFORCEABLE') {
      ignored.push({ layer, effect: 'ignored', rule: reference, reason: `${status.status}: ${status.reason ?? ''}` });
      continue;
    }
    const shape = readConsentShape(consent);
    if (!shape.ok) continue; // enforcementStatus already reported it
    const compiled = compileConsent(consent, reference, legal, shape.shape.root, view);
    (legal ? legalRestrictions : consents).push(compiled);
  }
  consents.sort((a, b) => b.dateTime - a.dateTime);
  return { statuses, legalRestrictions, consents };
}

/** The resources valid harm determinations withhold from this requester, each with the determination that does. */
function compileHarmDeterminations(inputs: PatientPolicyInputs, now: Date, fhirUser: string | undefined, purposes: readonly string[], ignored: TraceEntry[]): Map<string, CompiledHarm> {
  const harmWithheld = new Map<string, CompiledHarm>();
  const isPatient = fhirUser === `Patient/${inputs.patientId}` || purposes.includes('PATRQT');
  const isRepresentative =
    (fhirUser !== undefined && keyType(fhirUser) === 'RelatedPerson') || purposes.includes('FAMRQT') || purposes.includes('PWATRNY');
  for (const flag of inputs.flags) {
    const rule = `Flag/${flag.id ?? '(no id)'}`;
    const validity = harmDeterminationValidity(flag, inputs, now);
    if (!validity.valid) {
      ignored.push({ layer: 'harm-determination', effect: 'ignored', rule, reason: `harm determination ignored: ${validity.reason}` });
      continue;
    }
    // SPEC §4.3: life-safety and other-person withhold from the patient and representatives;
    // harm-representative only from representatives; never from treatment or other purposes.
    const applies = isRepresentative || (isPatient && validity.ground !== 'harm-representative');
    if (!applies) continue;
    const compiled: CompiledHarm = {
      flag: rule,
      ground: validity.ground,
      obligation: { kind: 'harm-refusal', flag: rule, ground: validity.ground, text: harmRefusalText(validity.ground) },
      trace: {
        layer: 'harm-determination',
        effect: 'deny',
        rule,
        ground: validity.ground,
        reason: `withheld by harm determination (${validity.ground}); the refusal is stated with the right to review`,
      },
    };
    for (const ref of validity.withheld) if (!harmWithheld.has(ref)) harmWithheld.set(ref, compiled);
  }
  return harmWithheld;
}

/** SPEC §4.5: what the implicit policy releases to this requester when no consent applies. */
function implicitPolicy(policy: DecisionPolicy, requester: Requester, fhirUser: string | undefined, purposes: readonly string[]): Pick<CompiledPatientPolicy, 'implicitCeiling' | 'implicitIsBreakGlass' | 'implicitTrace'> {
  const implicit = policy.implicitPolicy;
  const clinician = fhirUser !== undefined && (keyType(fhirUser) === 'Practitioner' || keyType(fhirUser) === 'PractitionerRole');
  const baseAllowed =
    implicit === 'all-normal' ||
    (implicit === 'basic-normal' && clinician && purposes.some((p) => purposeIsA(p, 'TREAT'))) ||
    (implicit === 'break-glass-only' && requester.breakGlass);
  const rule = `implicit:${implicit}`;
  return {
    // SPEC §4.5/§3: N and below; authorised BTG lifts the ceiling to R, never V.
    implicitCeiling: !baseAllowed ? -1 : requester.breakGlass ? RANK_R : RANK_N,
    implicitIsBreakGlass: implicit === 'break-glass-only',
    implicitTrace: {
      permit: { layer: 'implicit-policy', effect: 'permit', rule, reason: `no consent applies; implicit policy ${implicit} releases this confidentiality` },
      deny: { layer: 'implicit-policy', effect: 'deny', rule, reason: `no consent applies; implicit policy ${implicit} does not release this to this requester` },
    },
  };
}

function compileConsent(
  consent: Consent,
  reference: string,
  legal: boolean,
  root: ProvisionShape,
  view: RequestView,
): CompiledConsent {
  const compiledRoot = compileProvision(root, reference, legal, view, true) ?? inactiveRoot(root, reference, legal);
  const layer = legal ? 'legal-restriction' : 'consent';
  return {
    reference,
    legal,
    dateTime: consentDate(consent),
    root: compiledRoot,
    applies: root.effect === 'permit' || compiledRoot.active,
    notGranted: {
      rule: reference,
      path: root.path,
      effect: 'deny',
      active: true,
      btgOnly: false,
      part2Release: false,
      matcher: null,
      children: [],
      trace: {
        layer,
        effect: 'deny',
        rule: reference,
        provision: root.path,
        reason: legal
          ? 'the restriction permits only what its provisions match; this is outside them'
          : 'the consent permits only what its provisions match; this is not granted',
      },
    },
  };
}

/** When the consent was given: R4 `dateTime`, R5 `date` (SPEC §4.1 combiner: most recent decides). */
function consentDate(consent: Consent): number {
  const written = consent.dateTime ?? (consent as unknown as { date?: string }).date;
  return written ? dateLow(written) : -Infinity;
}

function inactiveRoot(root: ProvisionShape, reference: string, legal: boolean): CompiledProvision {
  return {
    rule: reference,
    path: root.path,
    effect: root.effect,
    active: false,
    btgOnly: false,
    part2Release: false,
    matcher: null,
    children: [],
    trace: { layer: legal ? 'legal-restriction' : 'consent', effect: root.effect, rule: reference, provision: root.path, reason: 'root provision' },
  };
}

/** Compile one provision; null when neither it nor anything below it can match this request. */
function compileProvision(
  shape: ProvisionShape,
  rule: string,
  legal: boolean,
  view: RequestView,
  isRoot: boolean,
): CompiledProvision | null {
  const p = shape.element as ConsentProvision;
  const children: CompiledProvision[] = [];
  for (const child of shape.children) {
    const compiled = compileProvision(child, rule, legal, view, false);
    if (compiled) children.push(compiled);
  }
  // SPEC §4.1: a nested provision whose period is not current is skipped (the root's was checked).
  const current = isRoot || periodContains(p.period, view.now);
  // SPEC §4.2: a restriction's emergency exception counts only while break-the-glass is in effect.
  const emergencyOnly = legal && shape.effect === 'permit' && !view.breakGlass;
  const withBtg = current && requestMatches(p, view, view.purposes, emergencyOnly);
  const withoutBtg = withBtg && requestMatches(p, view, view.purposesWithoutBtg, emergencyOnly);
  if (!withBtg && children.length === 0 && !isRoot) return null;
  const part2Release =
    shape.effect === 'permit' &&
    (p.securityLabel ?? []).some((c) => part2ReleaseCodes.has(c.code ?? '') && (canonicalSystem(c.system) === V3_ACT_CODE || c.system === undefined));
  const layer = legal ? 'legal-restriction' : 'consent';
  const reason = legal
    ? shape.effect === 'deny'
      ? 'legal restriction denies; it overrides every consent and the implicit policy'
      : 'legal restriction exception: its own permit lifts the restriction here (the other layers decide)'
    : `provision ${shape.effect === 'permit' ? 'permits' : 'denies'} (deepest matching provision)`;
  return {
    rule,
    path: shape.path,
    effect: shape.effect,
    active: withBtg,
    btgOnly: withBtg && !withoutBtg,
    part2Release,
    matcher: compileMatcher(p, shape.effect, view),
    children,
    trace: { layer, effect: shape.effect, rule, provision: shape.path, reason },
  };
}

const EMERGENCY_PURPOSES: ReadonlySet<string> = new Set(['BTG', 'ETREAT']);

function requestMatches(p: ConsentProvision, view: RequestView, purposes: readonly string[], emergencyNeedsBtg: boolean): boolean {
  if (p.actor && p.actor.length > 0 && !p.actor.some((a) => actorMatches(a.reference, view))) return false;
  const rulePurposes = emergencyNeedsBtg ? p.purpose?.filter((c) => !EMERGENCY_PURPOSES.has(c.code ?? '')) : p.purpose;
  if (p.purpose && p.purpose.length > 0 && !rulePurposes?.some((c) => purposeMatches(c, purposes))) return false;
  if (p.action && p.action.length > 0 && !p.action.some((cc) => actionMatches(cc, view.action))) return false;
  return true;
}

function actorMatches(reference: Reference | undefined, view: RequestView): boolean {
  if (!reference) return false;
  const key = referenceKey(reference.reference);
  if (key) {
    if (view.references.has(key)) return true;
    // A Group or CareTeam the requester belongs to (SPEC §4.1).
    const members = view.memberships[key];
    if (members?.some((m) => view.references.has(referenceKey(m) ?? m))) return true;
    // Identifiers compared where references differ.
    if (view.actorIdentifiers[key]?.some((id) => view.identifiers.has(id))) return true;
  }
  const id = reference.identifier;
  return !!(id?.value && view.identifiers.has(`${id.system ?? ''}|${id.value}`));
}

function purposeMatches(rulePurpose: Coding, purposes: readonly string[]): boolean {
  const code = rulePurpose.code;
  // Requests carry v3-ActReason purposes only (SPEC §3): a rule purpose of another system matches none of them.
  if (!code || (rulePurpose.system !== undefined && canonicalSystem(rulePurpose.system) !== V3_ACT_REASON)) return false;
  return purposes.some((p) => purposeIsA(p, code));
}

function actionMatches(cc: CodeableConcept, action: Requester['action']): boolean {
  return (cc.coding ?? []).some((c) => (action === 'access' ? readActions.has(c.code ?? '') : c.code === action));
}

function compileMatcher(p: ConsentProvision, effect: Effect, view: RequestView): ResourceMatcher | null {
  let classTypes: Set<string> | null = null;
  let classProfiles: Set<string> | null = null;
  let classMimes: Set<string> | null = null;
  for (const c of p.class ?? []) {
    const code = c.code ?? '';
    if (c.system === MIME) (classMimes ??= new Set()).add(code);
    else if (code.includes('/')) (classProfiles ??= new Set()).add(code.split('|')[0]);
    else if (c.system === undefined || c.system === RESOURCE_TYPES) (classTypes ??= new Set()).add(code);
  }
  const hasClass = (p.class?.length ?? 0) > 0;

  let codes: Map<string, Set<string>> | null = null;
  for (const cc of p.code ?? []) {
    for (const c of cc.coding ?? []) {
      if (!c.code) continue;
      codes ??= new Map();
      const set = codes.get(c.system ?? '') ?? new Set<string>();
      set.add(c.code);
      codes.set(c.system ?? '', set);
    }
  }
  if ((p.code?.length ?? 0) > 0 && !codes) codes = new Map(); // coded but unusable → matches nothing

  let confidentiality = -1;
  let sensitivity: Map<string, Set<string>> | null = null;
  for (const written of p.securityLabel ?? []) {
    const c = canonicalCoding(written); // any spelling the standards accept (issue 13)
    const rank = c.system === V3_CONFIDENTIALITY || c.system === undefined ? confidentialityRank(c.code) : -1;
    if (rank >= 0) {
      // Permit: clearance = highest listed; deny: floor = lowest listed (SPEC §4.1).
      confidentiality = confidentiality < 0 ? rank : effect === 'permit' ? Math.max(confidentiality, rank) : Math.min(confidentiality, rank);
      continue;
    }
    if (!c.code) continue;
    sensitivity ??= new Map();
    const system = c.system ?? V3_ACT_CODE;
    const set = sensitivity.get(system) ?? new Set<string>();
    for (const code of system === V3_ACT_CODE ? sensitivityWithDescendants(c.code) : [c.code]) set.add(code);
    sensitivity.set(system, set);
  }
  const hasLabel = (p.securityLabel?.length ?? 0) > 0;

  const period: Period | undefined = p.dataPeriod;
  const hasPeriod = !!(period && (period.start || period.end));

  let instance: Set<string> | null = null;
  let related: Set<string> | null = null;
  let dependents: Set<string> | null = null;
  let authoredBy: Set<string> | null = null;
  const patient = `Patient/${view.patientId}`;
  for (const d of p.data ?? []) {
    const ref = referenceKey(d.reference?.reference);
    if (!ref) continue;
    if (d.meaning === 'instance') (instance ??= new Set()).add(ref);
    else if (d.meaning === 'related') {
      related ??= new Set();
      related.add(ref);
      // SPEC §4.1: what it references, except the patient themself.
      for (const r of view.dataReferences[ref] ?? []) {
        const k = referenceKey(r);
        if (k && k !== patient) related.add(k);
      }
    } else if (d.meaning === 'dependents') (dependents ??= new Set()).add(ref);
    else if (d.meaning === 'authoredby') (authoredBy ??= new Set()).add(ref);
  }
  const hasData = (p.data?.length ?? 0) > 0;

  if (!hasClass && !codes && !hasLabel && !hasPeriod && !hasData) return null;
  return {
    classTypes,
    classProfiles,
    classMimes,
    hasClass,
    codes,
    hasLabel,
    confidentiality,
    sensitivity,
    periodLow: period?.start ? dateLow(period.start) : -Infinity,
    periodHigh: period?.end ? dateHigh(period.end) : Infinity,
    hasPeriod,
    instance,
    related,
    dependents,
    authoredBy,
    hasData,
  };
}
