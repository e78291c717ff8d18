// The labeling step (SPEC §4.7): resource in, computed security labels out. Pure: the rule sets are
// compiled once into lookup tables, then each resource costs a few map lookups per coded element.
import type { CodeableConcept, Coding, Resource } from '@medplum/fhirtypes';
import { V3_ACT_CODE, V3_CONFIDENTIALITY } from '../fhir/systems.ts';
import { confidentialityRank } from '../decide/terminology.ts';
import type { LabelRule, LabelRuleSet } from './rule-set.ts';

export const ICD10CM = 'http://hl7.org/fhir/sid/icd-10-cm';

/** Why a label was computed: the rule set and the resource's system and code that matched. No patient data. */
export interface LabelReason {
  readonly ruleSet: string;
  readonly system: string;
  readonly code: string;
  /** The label added (v3-ActCode sensitivity, or v3-Confidentiality from `labeling.confidentiality`). */
  readonly label: Coding;
}

export interface ComputedLabels {
  /** Labels the resource did not already carry, to be decided on and added to `meta.security`. */
  readonly added: readonly Coding[];
  readonly reasons: readonly LabelReason[];
}

export interface LabelingOptions {
  readonly enabled: boolean;
  /** A confidentiality code added to every resource the rules label (SPEC §4.6), or none. */
  readonly confidentiality?: 'R' | 'V';
}

export const NO_LABELS: ComputedLabels = Object.freeze({ added: Object.freeze([]), reasons: Object.freeze([]) });

interface Hit {
  readonly ruleSet: string;
  readonly labels: readonly Coding[];
  readonly exclude: readonly string[];
}

type Json = Record<string, unknown>;

/** The coded elements a resource's sensitivity depends on, per type (SPEC §4.7). A Map: one hashed lookup per resource. */
const codedElements: ReadonlyMap<string, readonly string[]> = new Map([
  ['Condition', ['code']],
  ['Observation', ['code', 'valueCodeableConcept']],
  ['DiagnosticReport', ['code', 'conclusionCode']],
  ['Procedure', ['code']],
  ['ServiceRequest', ['code']],
  ['MedicationRequest', ['medicationCodeableConcept']],
  ['MedicationStatement', ['medicationCodeableConcept']],
  ['MedicationAdministration', ['medicationCodeableConcept']],
  ['MedicationDispense', ['medicationCodeableConcept']],
  ['Medication', ['code']],
  ['Encounter', ['reasonCode']],
  ['AllergyIntolerance', ['code']],
]);
const medicationTypes = new Set(['MedicationRequest', 'MedicationStatement', 'MedicationAdministration', 'MedicationDispense']);

/** ICD-10-CM codes compare without the dot and in upper case (F10.20 ≡ F1020). */
const normaliseIcd = (code: string): string => code.replace('.', '').toUpperCase();

/** F10–F19 → F10, F11, … F19 (the schema checked both ends share the letter). */
function expandRange(from: string, to: string): string[] {
  const letter = from[0];
  const out: string[] = [];
  for (let n = Number(from.slice(1)); n <= Number(to.slice(1)); n++) out.push(`${letter}${String(n).padStart(2, '0')}`);
  return out;
}

export class SecurityLabeler {
  /** ICD-10-CM prefix (normalised) → rules. */
  private readonly prefixes = new Map<string, Hit[]>();
  /** system → code → rules, for flat code systems. */
  private readonly codes = new Map<string, Map<string, Hit[]>>();
  private readonly confidentiality: Coding | undefined;
  private readonly scratch: LabelReason[] = [];
  readonly enabled: boolean;
  readonly ruleSets: readonly LabelRuleSet[];

  constructor(ruleSets: readonly LabelRuleSet[], options: LabelingOptions) {
    this.enabled = options.enabled;
    this.ruleSets = ruleSets;
    this.confidentiality = options.confidentiality ? Object.freeze({ system: V3_CONFIDENTIALITY, code: options.confidentiality }) : undefined;
    for (const set of ruleSets) for (const rule of set.rules) this.index(set.ruleSet, rule);
  }

  private index(ruleSet: string, rule: LabelRule): void {
    const labels = rule.labels.map((code) => Object.freeze({ system: V3_ACT_CODE, code }));
    const hit: Hit = { ruleSet, labels, exclude: (rule.exclude ?? []).map(normaliseIcd) };
    const add = <K>(map: Map<K, Hit[]>, key: K): void => {
      const list = map.get(key);
      if (list) list.push(hit);
      else map.set(key, [hit]);
    };
    if (rule.system === ICD10CM) {
      for (const p of rule.prefixes ?? []) add(this.prefixes, normaliseIcd(p));
      for (const [from, to] of rule.ranges ?? []) for (const category of expandRange(from, to)) add(this.prefixes, category);
    }
    let bySystem = this.codes.get(rule.system);
    if (!bySystem) this.codes.set(rule.system, (bySystem = new Map()));
    for (const code of rule.codes ?? []) add(bySystem, code);
  }

  /** The labels the rules give this resource, minus those it already carries; never removes or lowers one. */
  label(resource: Resource): ComputedLabels {
    if (!this.enabled) return NO_LABELS;
    const type = resource.resourceType;
    const elements = codedElements.get(type);
    if (elements === undefined) return NO_LABELS;
    // Reused across calls (labeling is synchronous): most resources match nothing and allocate nothing.
    const reasons = this.scratch;
    reasons.length = 0;
    const r = resource as unknown as Json;
    for (let i = 0; i < elements.length; i++) this.matchConcepts(r[elements[i]], reasons);
    if (type === 'Observation' && Array.isArray(r.component)) {
      for (const c of r.component as Json[]) {
        this.matchConcepts(c.code, reasons);
        this.matchConcepts(c.valueCodeableConcept, reasons);
      }
    } else if (medicationTypes.has(type) && r.medicationReference !== undefined) {
      this.matchConcepts(containedMedicationCode(r), reasons);
    }
    if (reasons.length === 0) return NO_LABELS;
    return this.withoutPresent(resource.meta?.security ?? [], reasons.slice());
  }

  /** One CodeableConcept or an array of them (Encounter.reasonCode, DiagnosticReport.conclusionCode). */
  private matchConcepts(value: unknown, reasons: LabelReason[]): void {
    if (!value || typeof value !== 'object') return;
    if (!Array.isArray(value)) return this.matchConcept(value as CodeableConcept, reasons);
    for (let i = 0; i < value.length; i++) this.matchConcept(value[i] as CodeableConcept, reasons);
  }

  private matchConcept(concept: CodeableConcept | undefined, reasons: LabelReason[]): void {
    const codings = concept?.coding;
    if (!codings) return;
    for (let i = 0; i < codings.length; i++) {
      const { system, code } = codings[i];
      if (system && code) this.matchCoding(system, code, reasons);
    }
  }

  private matchCoding(system: string, code: string, reasons: LabelReason[]): void {
    if (system !== ICD10CM) {
      const exact = this.codes.get(system)?.get(code);
      if (exact) for (const hit of exact) pushHit(hit, system, code, reasons);
      return;
    }
    const normal = normaliseIcd(code);
    for (let length = 3; length <= normal.length; length++) {
      const hits = this.prefixes.get(normal.slice(0, length));
      if (hits) for (const hit of hits) if (!hit.exclude.some((e) => normal.startsWith(e))) pushHit(hit, system, code, reasons);
    }
  }

  /** Drops labels already on the resource; adds the configured confidentiality unless one as high is there. */
  private withoutPresent(security: readonly Coding[], reasons: readonly LabelReason[]): ComputedLabels {
    const present = (c: Coding): boolean => security.some((s) => s.system === c.system && s.code === c.code);
    const kept: LabelReason[] = [];
    const added: Coding[] = [];
    for (const reason of reasons) {
      if (present(reason.label)) continue;
      kept.push(reason);
      if (!added.some((c) => c.code === reason.label.code && c.system === reason.label.system)) added.push(reason.label);
    }
    const confidentiality = this.confidentiality;
    if (confidentiality !== undefined) {
      const highest = Math.max(-1, ...security.filter((s) => s.system === V3_CONFIDENTIALITY).map((s) => confidentialityRank(s.code)));
      if (highest < confidentialityRank(confidentiality.code)) {
        added.push(confidentiality);
        kept.push({ ...reasons[0], label: confidentiality });
      }
    }
    return added.length === 0 ? NO_LABELS : { added, reasons: kept };
  }
}

function pushHit(hit: Hit, system: string, code: string, reasons: LabelReason[]): void {
  for (const label of hit.labels) {
    if (!reasons.some((r) => r.label.code === label.code && r.ruleSet === hit.ruleSet)) reasons.push({ ruleSet: hit.ruleSet, system, code, label });
  }
}

/** `medicationReference: #id` → that contained Medication's code (SPEC §4.7). */
function containedMedicationCode(r: Json): unknown {
  const ref = (r.medicationReference as Json | undefined)?.reference;
  if (typeof ref !== 'string' || !ref.startsWith('#')) return undefined;
  const contained = (r.contained as Json[] | undefined)?.find((c) => c.resourceType === 'Medication' && c.id === ref.slice(1));
  return contained?.code;
}
