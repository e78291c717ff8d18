// Applies a decision's obligations to a released resource (SPEC §5 redaction, §4.4 Part 2 notice).
// The input is never mutated: objects on the way to a removed element are copied, the rest is shared.
import { tryGetDataType, type InternalTypeSchema } from '@medplum/core';
import type { Coding, Extension, Meta, Resource } from '@medplum/fhirtypes';
import type { Decision } from '../decide/types.ts';
import { loadFhirDefinitions } from '../fhir/definitions.ts';
import { canonicalSystem, DATA_ABSENT_REASON_EXTENSION, DS4P_EXTENSION_DISPLAY, V3_OBSERVATION_VALUE } from '../fhir/systems.ts';

const maskedExtension: Extension = { url: DATA_ABSENT_REASON_EXTENSION, valueCode: 'masked' };
export const redactedLabel: Coding = { system: V3_OBSERVATION_VALUE, code: 'REDACTED', display: 'redacted' };

type Json = Record<string, unknown>;
type Step = { readonly name: string; readonly index?: number };

function parsePath(path: string): Step[] {
  return path.split('.').map((part) => {
    const match = /^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?$/.exec(part);
    if (!match) throw new Error(`invalid redaction path ${path}`);
    return { name: match[1], index: match[2] === undefined ? undefined : Number(match[2]) };
  });
}

/** The schema element for a JSON property name, choice types included (`valueString` → `value[x]`). */
function schemaElement(schema: InternalTypeSchema | undefined, name: string) {
  if (!schema) return undefined;
  const direct = schema.elements[name];
  if (direct) return { key: name, element: direct };
  for (const [key, element] of Object.entries(schema.elements)) {
    if (key.endsWith('[x]') && name.startsWith(key.slice(0, -3))) return { key, element };
  }
  return undefined;
}

function childSchema(schema: InternalTypeSchema | undefined, name: string): InternalTypeSchema | undefined {
  const found = schemaElement(schema, name);
  const code = found?.element.type[0]?.code;
  if (!schema || !code) return undefined;
  return schema.innerTypes.find((inner) => inner.name === code) ?? tryGetDataType(code);
}

/** Removes one element; a required element is replaced by data-absent-reason#masked. */
function removeAt(node: Json, steps: readonly Step[], schema: InternalTypeSchema | undefined): Json {
  const [step, ...rest] = steps;
  const copy: Json = { ...node };
  const current = copy[step.name];
  if (current === undefined) return node;
  if (rest.length === 0) {
    if (step.index !== undefined) {
      if (!Array.isArray(current)) return node;
      const remaining = current.filter((_, i) => i !== step.index);
      const required = (schemaElement(schema, step.name)?.element.min ?? 0) > 0;
      if (remaining.length > 0) copy[step.name] = remaining;
      else if (required) copy[step.name] = [{ extension: [maskedExtension] }];
      else delete copy[step.name];
      return copy;
    }
    delete copy[step.name];
    if ((schemaElement(schema, step.name)?.element.min ?? 0) > 0) {
      // A primitive keeps its slot through the `_name` sibling; a complex element carries the extension itself.
      if (typeof current === 'object') copy[step.name] = { extension: [maskedExtension] };
      else copy[`_${step.name}`] = { extension: [maskedExtension] };
    }
    return copy;
  }
  const inner = childSchema(schema, step.name);
  if (step.index !== undefined) {
    if (!Array.isArray(current) || typeof current[step.index] !== 'object') return node;
    const array = [...current];
    array[step.index] = removeAt(array[step.index] as Json, rest, inner);
    copy[step.name] = array;
    return copy;
  }
  if (typeof current !== 'object' || current === null) return node;
  copy[step.name] = removeAt(current as Json, rest, inner);
  return copy;
}

/** Compares paths so that later array indices are removed first and earlier indices stay valid. */
function byIndexDescending(a: string, b: string): number {
  return b.localeCompare(a, 'en', { numeric: true });
}

function withSecurity(meta: Meta | undefined, coding: Coding): Meta {
  const security = meta?.security ?? [];
  // Already there in any spelling the standards accept (issue 13): not added twice.
  if (security.some((c) => canonicalSystem(c.system) === coding.system && c.code === coding.code)) return { ...meta };
  return { ...meta, security: [...security, coding] };
}

/** The released form of a resource under a permit or redact decision. */
export function applyObligations<T extends Resource>(resource: T, decision: Decision): T {
  if (decision.obligations.length === 0) return resource;
  loadFhirDefinitions();
  let result = resource as unknown as Json;
  const schema = tryGetDataType(resource.resourceType);
  const paths = decision.obligations.flatMap((o) => (o.kind === 'redact' ? [o.path] : [])).sort(byIndexDescending);
  for (const path of paths) result = removeAt(result, parsePath(path), schema);
  let meta = result.meta as Meta | undefined;
  if (paths.length > 0) {
    // A narrative may repeat what was removed, so a redacted resource never keeps one.
    result = { ...result };
    delete result.text;
    meta = withSecurity(meta, redactedLabel);
  }
  for (const obligation of decision.obligations) {
    if (obligation.kind === 'add-security-label') meta = withSecurity(meta, obligation.coding);
    if (obligation.kind === 'notice') {
      const extension = meta?.extension ?? [];
      // DS4P 1.0.0 extension-display takes an Annotation (its StructureDefinition: Extension.valueAnnotation).
      if (!extension.some((e) => e.url === DS4P_EXTENSION_DISPLAY && e.valueAnnotation?.text === obligation.text)) {
        meta = { ...meta, extension: [...extension, { url: DS4P_EXTENSION_DISPLAY, valueAnnotation: { text: obligation.text } }] };
      }
    }
  }
  if (meta !== result.meta) result = { ...result, meta };
  return result as unknown as T;
}
