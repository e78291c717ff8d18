// Resource-side facts a provision can ask about (SPEC §4.1), read by direct property access and
// computed lazily so that a resource pays only for what the compiled policy needs.
import type { Coding, Resource } from '@medplum/fhirtypes';
import { type LocalBases, referenceKey, referencesIn } from '../fhir/references.ts';
import { canonicalCoding, DS4P_INLINE_LABEL, SYSTEM_SPELLINGS, V3_ACT_CODE, V3_CONFIDENTIALITY } from '../fhir/systems.ts';
import { confidentialityRank, RANK_N } from './terminology.ts';

type Json = Record<string, unknown>;

/** SPEC §4.1 dataPeriod order; occurrence[x] (Immunization) is added after performed[x]. */
export function clinicalDate(resource: Resource): string | undefined {
  const r = resource as unknown as Json;
  return (
    str(r.effectiveDateTime) ?? str(r.effectiveInstant) ?? periodStart(r.effectivePeriod) ??
    str(r.issued) ??
    str(r.onsetDateTime) ?? periodStart(r.onsetPeriod) ??
    str(r.authoredOn) ??
    str(r.performedDateTime) ?? periodStart(r.performedPeriod) ??
    str(r.occurrenceDateTime) ?? periodStart(r.occurrencePeriod) ??
    periodStart(r.period) ??
    str(r.date) ??
    str(r.recordedDate) ??
    str((r.meta as Json | undefined)?.lastUpdated)
  );
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}
function periodStart(v: unknown): string | undefined {
  return v && typeof v === 'object' ? str((v as Json).start) : undefined;
}

/** First instant (ms) of a FHIR date/dateTime/instant of any precision, NaN when unreadable. */
export function dateLow(value: string): number {
  const len = value.length;
  if (len === 4) return Date.UTC(+value, 0, 1);
  if (len === 7) return Date.UTC(+value.slice(0, 4), +value.slice(5, 7) - 1, 1);
  if (len === 10) return Date.UTC(+value.slice(0, 4), +value.slice(5, 7) - 1, +value.slice(8, 10));
  return Date.parse(value);
}
/** Last instant (ms) of a FHIR date of any precision: `2022` ends on 2022-12-31T23:59:59.999Z. */
export function dateHigh(value: string): number {
  const len = value.length;
  if (len === 4) return Date.UTC(+value + 1, 0, 1) - 1;
  if (len === 7) return Date.UTC(+value.slice(0, 4), +value.slice(5, 7), 1) - 1;
  if (len === 10) return Date.UTC(+value.slice(0, 4), +value.slice(5, 7) - 1, +value.slice(8, 10) + 1) - 1;
  return Date.parse(value);
}

/** The primary code element per resource type (SPEC §4.1 `code`). */
const primaryCodeElement: Readonly<Record<string, string>> = {
  MedicationRequest: 'medicationCodeableConcept',
  MedicationStatement: 'medicationCodeableConcept',
  MedicationAdministration: 'medicationCodeableConcept',
  MedicationDispense: 'medicationCodeableConcept',
  Medication: 'code',
  Immunization: 'vaccineCode',
  Encounter: 'type',
  DocumentReference: 'type',
  Composition: 'type',
  CarePlan: 'category',
  CareTeam: 'category',
  Communication: 'category',
  Coverage: 'type',
  Claim: 'type',
  ExplanationOfBenefit: 'type',
  Device: 'type',
  Specimen: 'type',
  ImagingStudy: 'procedureCode',
  Goal: 'description',
  FamilyMemberHistory: 'relationship',
};

/** Fields that name who authored a resource (SPEC §4.1 `authoredby`). */
const authorFields = ['author', 'recorder', 'asserter', 'requester', 'performer', 'informant'] as const;

export const PROCESSINLINELABEL = 'PROCESSINLINELABEL';

/** Everything evaluate() reads from one resource. One instance per evaluated resource. */
export class ResourceFacts {
  readonly resource: Json;
  readonly resourceType: string;
  /** `Type/id`, undefined for a resource without id. */
  readonly reference: string | undefined;
  /** Highest confidentiality rank among the labels (N when none, SPEC §4.1). */
  readonly confidentiality: number;
  readonly part2: boolean;
  readonly processInline: boolean;
  readonly security: readonly Coding[];
  /** Labels added for an inline-labelled element being decided (redaction). */
  readonly extraLabels: readonly Coding[];
  private codingsCache: Coding[] | undefined;
  private referencesCache: Set<string> | undefined;
  private authorsCache: string[] | undefined;
  private dateCache: number | undefined;

  /** Bases on which a resource's absolute references are local (the policy inputs carry them). */
  private readonly local: LocalBases;

  constructor(resource: Resource, extraLabels: readonly Coding[] = EMPTY, base?: ResourceFacts, local?: LocalBases) {
    this.local = local ?? base?.local ?? NO_BASES;
    this.resource = resource as unknown as Json;
    this.resourceType = resource.resourceType;
    this.reference = resource.id ? `${resource.resourceType}/${resource.id}` : undefined;
    this.security = canonicalLabels(resource.meta?.security ?? EMPTY);
    this.extraLabels = canonicalLabels(extraLabels);
    let rank = -1;
    let part2 = false;
    let inline = false;
    const all = this.extraLabels.length === 0 ? this.security : [...this.security, ...this.extraLabels];
    for (let i = 0; i < all.length; i++) {
      const c = all[i];
      if (c.system === V3_CONFIDENTIALITY) rank = Math.max(rank, confidentialityRank(c.code));
      else if (c.code === '42CFRPart2' && (c.system === V3_ACT_CODE || c.system === undefined)) part2 = true;
      // SPEC §5: the code under v3-ActCode (HL7 Terminology), v3-ObservationValue or any other system.
      else if (c.code === PROCESSINLINELABEL) inline = true;
    }
    this.confidentiality = rank < 0 ? RANK_N : rank;
    this.part2 = part2;
    this.processInline = inline;
    if (base) {
      this.codingsCache = base.codingsCache;
      this.referencesCache = base.referencesCache;
      this.authorsCache = base.authorsCache;
      this.dateCache = base.dateCache;
    }
  }

  /** Codings of the primary code element. */
  codings(): readonly Coding[] {
    if (this.codingsCache) return this.codingsCache;
    const out: Coding[] = [];
    const value = this.resource[primaryCodeElement[this.resourceType] ?? 'code'];
    for (const cc of Array.isArray(value) ? value : [value]) {
      const codings = cc && typeof cc === 'object' ? (cc as Json).coding : undefined;
      if (Array.isArray(codings)) out.push(...(codings as Coding[]));
    }
    this.codingsCache = out;
    return out;
  }

  /** Clinical date in ms (NaN when none). */
  date(): number {
    if (this.dateCache === undefined) {
      const d = clinicalDate(this.resource as unknown as Resource);
      this.dateCache = d ? dateLow(d) : NaN;
    }
    return this.dateCache;
  }

  /** Every reference the resource contains, as keys (`Type/id`; another server's stay absolute). */
  references(): ReadonlySet<string> {
    this.referencesCache ??= referencesIn(this.resource, new Set(), this.local);
    return this.referencesCache;
  }

  /** References in author/recorder/asserter/requester/performer/informant. */
  authors(): readonly string[] {
    if (this.authorsCache) return this.authorsCache;
    const out: string[] = [];
    for (const field of authorFields) {
      const value = this.resource[field];
      for (const item of Array.isArray(value) ? value : [value]) {
        if (!item || typeof item !== 'object') continue;
        const ref = (item as Json).reference ?? ((item as Json).actor as Json | undefined)?.reference;
        const key = typeof ref === 'string' ? referenceKey(ref, this.local) : undefined;
        if (key) out.push(key);
      }
    }
    this.authorsCache = out;
    return out;
  }

  /** The same resource with an element's inline labels added (SPEC §5 redaction). */
  withLabels(labels: readonly Coding[]): ResourceFacts {
    return new ResourceFacts(this.resource as unknown as Resource, [...this.extraLabels, ...labels], this);
  }

  /** True when a label (system, code) is on the resource or the element being decided. */
  hasLabelIn(codes: ReadonlyMap<string, ReadonlySet<string>>): boolean {
    for (const c of this.security) if (c.code !== undefined && codes.get(c.system ?? '')?.has(c.code)) return true;
    for (const c of this.extraLabels) if (c.code !== undefined && codes.get(c.system ?? '')?.has(c.code)) return true;
    return false;
  }
}

const EMPTY: readonly Coding[] = Object.freeze([]);

/** Labels with their systems in canonical spelling; the same array when none needs it (the usual case). */
function canonicalLabels(labels: readonly Coding[]): readonly Coding[] {
  return labels.some((c) => c.system !== undefined && SYSTEM_SPELLINGS.has(c.system)) ? labels.map(canonicalCoding) : labels;
}

const NO_BASES: LocalBases = new Set();

/** An element carrying DS4P inline security labels, with its dotted path (SPEC §5 redaction). */
export interface LabelledElement {
  readonly path: string;
  readonly labels: readonly Coding[];
}

/** Elements of a PROCESSINLINELABEL resource that carry the DS4P inline-label extension. */
export function labelledElements(resource: Resource): LabelledElement[] {
  const out: LabelledElement[] = [];
  walkElements(resource as unknown as Json, '', out, 0);
  return out;
}

function inlineLabels(element: unknown): Coding[] {
  const ext = element && typeof element === 'object' ? (element as Json).extension : undefined;
  if (!Array.isArray(ext)) return [];
  const out: Coding[] = [];
  for (const e of ext as Json[]) if (e?.url === DS4P_INLINE_LABEL && e.valueCoding) out.push(e.valueCoding as Coding);
  return out;
}

function walkElements(node: Json, prefix: string, out: LabelledElement[], depth: number): void {
  if (depth > 32) return;
  for (const [key, value] of Object.entries(node)) {
    if (key === 'meta' || key === 'text' || key === 'extension' || key === 'modifierExtension' || key === 'contained') continue;
    // Primitive elements carry extensions in the `_name` sibling (FHIR JSON).
    const isShadow = key.startsWith('_');
    const name = isShadow ? key.slice(1) : key;
    const items = Array.isArray(value) ? value : [value];
    items.forEach((item, index) => {
      const path = `${prefix}${name}${Array.isArray(value) ? `[${index}]` : ''}`;
      if (!item || typeof item !== 'object') return;
      const labels = inlineLabels(item);
      if (labels.length > 0) out.push({ path, labels });
      else if (!isShadow) walkElements(item as Json, `${path}.`, out, depth + 1);
    });
  }
}
