// Patient-context confinement and the incomplete-request rule (SPEC §3), on parsed requests: pure, no I/O.
// Tokens holding any patient/ scope see only their launch patient's compartment; user/ (and, by policy,
// system/) clients must name the patient of a Patient-compartment query before the upstream is asked.
import { getSearchParameter } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import type { DecisionPolicy } from '../config/policy.ts';
import {
  isPatientCompartmentType as inPatientCompartment,
  patientCompartmentParams,
  patientIdOfReference,
  patientsOf,
} from '../fhir/compartment.ts';
import { loadFhirDefinitions } from '../fhir/definitions.ts';
import { isFhirId } from '../fhir/references.ts';
import type { RequestContext } from './context.ts';
import { ForbiddenError, IncompleteRequestError } from './errors.ts';
import { confinedToLaunchPatient, governingKind } from './scopes.ts';

export type SearchInteraction = 'search-type' | 'search-system' | 'history-type' | 'history-system' | 'search-compartment';

export interface PatientCompartmentPath {
  readonly type: 'Patient';
  readonly id: string;
}

export interface ParsedSearch {
  readonly resourceType?: string;
  readonly compartment?: PatientCompartmentPath;
  readonly params: URLSearchParams;
  readonly interaction: SearchInteraction;
}

/** Types whose queries need no patient even from user/ clients: auditors search across patients (SPEC §3, §6). */
const incompleteRuleExceptions = new Set(['AuditEvent']);

export function isPatientCompartmentType(resourceType: string): boolean {
  return inPatientCompartment(resourceType);
}

/** The search parameters that place a type in the Patient compartment (R4 CompartmentDefinition). */
export function compartmentParams(resourceType: string): string[] {
  return [...patientCompartmentParams(resourceType)];
}

function hasSearchParameter(resourceType: string, name: string): boolean {
  loadFhirDefinitions();
  return getSearchParameter(resourceType, name) !== undefined;
}

/** Parameters through which a query of this type can name a patient; undefined type = system level. */
function patientNamingParams(resourceType: string | undefined): ReadonlySet<string> {
  if (resourceType === undefined) return new Set(['patient', 'subject']);
  if (resourceType === 'Patient') return new Set(['_id', 'identifier', 'link']);
  const names = new Set(compartmentParams(resourceType));
  // SPEC §5: Device.patient and the like name a patient outside the compartment too.
  for (const name of ['patient', 'subject']) if (hasSearchParameter(resourceType, name)) names.add(name);
  return names;
}

interface PatientNaming {
  /** Ids named unambiguously as patients (patient=, :Patient, Patient/…, _id on Patient, compartment path). */
  readonly definite: Set<string>;
  /** Bare ids on a parameter that can point at other types too (subject=p1): possibly a patient. */
  readonly possible: Set<string>;
  /** Named only by identifier or chain: the caller must resolve or refuse. */
  unresolved: boolean;
  /** Ids that one parameter names alone (every OR value is that patient): such a parameter confines by itself. */
  readonly sole: Set<string>;
}

function splitKey(key: string): { name: string; modifier?: string; chain?: string } {
  const dot = key.indexOf('.');
  const colon = key.indexOf(':');
  const nameEnd = Math.min(dot < 0 ? key.length : dot, colon < 0 ? key.length : colon);
  const modifier = colon >= 0 && (dot < 0 || colon < dot) ? key.slice(colon + 1, dot > colon ? dot : key.length) : undefined;
  return { name: key.slice(0, nameEnd), ...(modifier !== undefined ? { modifier } : {}), ...(dot >= 0 ? { chain: key.slice(dot + 1) } : {}) };
}

function analyse(resourceType: string | undefined, params: URLSearchParams, compartment?: PatientCompartmentPath): PatientNaming {
  const naming: PatientNaming = { definite: new Set(), possible: new Set(), unresolved: false, sole: new Set() };
  if (compartment) naming.definite.add(compartment.id);
  const namingParams = patientNamingParams(resourceType);
  for (const [key, value] of params) {
    const { name, modifier, chain } = splitKey(key);
    if (!namingParams.has(name)) continue;
    if (chain !== undefined || modifier === 'identifier' || name === 'identifier') {
      naming.unresolved = true;
      continue;
    }
    // :missing, :not, :text, :above… and other target types do not identify a patient
    if (modifier !== undefined && modifier !== 'Patient') continue;
    const targetsPatientOnly = name === 'patient' || name === '_id' || modifier === 'Patient';
    const definiteHere = new Set<string>();
    let onlyDefinite = true;
    for (const item of value.split(',').map((v) => v.trim()).filter(Boolean)) {
      const fromReference = name === '_id' ? undefined : patientIdOfReference(item);
      const id = fromReference ?? (targetsPatientOnly && isFhirId(item) ? item : undefined);
      if (id) {
        naming.definite.add(id);
        definiteHere.add(id);
        continue;
      }
      onlyDefinite = false;
      // a bare id on a parameter that may target other types (subject=p1) is possibly a patient;
      // anything else (Group/g1, unparseable) names no patient
      if (!item.includes('/') && isFhirId(item)) naming.possible.add(item);
    }
    // Patient?link=Patient/p1 finds other patients' records: only _id confines a Patient search
    if (onlyDefinite && definiteHere.size === 1 && name !== 'link') naming.sole.add([...definiteHere][0]);
  }
  return naming;
}

/** The patients a query names, in any form. `unresolved`: named only by identifier or chain. */
export function patientsNamedBy(
  resourceType: string | undefined,
  params: URLSearchParams,
  compartment?: PatientCompartmentPath,
): { ids: string[]; unresolved: boolean } {
  const naming = analyse(resourceType, params, compartment);
  return { ids: [...new Set([...naming.definite, ...naming.possible])], unresolved: naming.unresolved };
}

/** The parameter and value that confine a search of this type to one patient. */
export function confinementParam(resourceType: string, patientId: string): [name: string, value: string] {
  if (resourceType === 'Patient') return ['_id', patientId];
  const params = compartmentParams(resourceType);
  const name = hasSearchParameter(resourceType, 'patient')
    ? 'patient'
    : params.includes('subject') || (params.length === 0 && hasSearchParameter(resourceType, 'subject'))
      ? 'subject'
      : params[0];
  if (!name) throw new ForbiddenError(`no parameter confines ${resourceType} to a patient`);
  return [name, `Patient/${patientId}`];
}

function typesQueried(req: ParsedSearch): string[] | undefined {
  if (req.resourceType) return [req.resourceType];
  const listed = req.params.getAll('_type').flatMap((v) => v.split(',')).map((t) => t.trim()).filter(Boolean);
  return listed.length > 0 ? listed : undefined; // undefined: every type
}

function confineToPatient(ctx: RequestContext, policy: DecisionPolicy, req: ParsedSearch): URLSearchParams {
  const patient = ctx.patient;
  if (!patient) throw new ForbiddenError('patient/ scopes without a launch patient');
  const naming = analyse(req.resourceType, req.params, req.compartment);
  for (const id of [...naming.definite, ...naming.possible]) {
    if (id !== patient) throw new ForbiddenError('the request names a patient other than the launch patient');
  }
  if (req.interaction === 'search-compartment') return new URLSearchParams(req.params);
  if (!req.resourceType) throw new ForbiddenError('a system-level query cannot be confined to the launch patient');
  if (!isPatientCompartmentType(req.resourceType)) return new URLSearchParams(req.params);
  if (req.interaction === 'history-type') {
    // type-level history takes no search parameters, so it cannot be confined upstream
    if (policy.requirePatient.includes('patient')) throw new IncompleteRequestError();
    throw new ForbiddenError('type-level history cannot be confined to the launch patient');
  }
  // a patient named by identifier or chain cannot be checked against the launch patient (Patient itself is confined by _id)
  if (naming.unresolved && req.resourceType !== 'Patient') throw new ForbiddenError('the request names a patient by identifier or chain');
  const params = new URLSearchParams(req.params);
  // unless one parameter already names exactly the launch patient, add the constraint (an OR list such
  // as subject=Patient/p1,Group/g1 would otherwise reach beyond the compartment)
  if (!naming.sole.has(patient) || naming.unresolved) params.append(...confinementParam(req.resourceType, patient));
  return params;
}

function requirePatientNamed(req: ParsedSearch): void {
  if (req.interaction === 'search-compartment') return;
  const types = typesQueried(req);
  const needsPatient = types === undefined || types.some((t) => isPatientCompartmentType(t) && !incompleteRuleExceptions.has(t));
  if (!needsPatient) return;
  // history takes no search parameters: a patient parameter would be ignored upstream
  if (req.interaction === 'history-type' || req.interaction === 'history-system') throw new IncompleteRequestError();
  const named = patientsNamedBy(req.resourceType, req.params, req.compartment);
  if (named.ids.length === 0 && !named.unresolved) throw new IncompleteRequestError();
}

/**
 * Confines a search or history request (SPEC §3): returns the parameters to send upstream, or throws
 * ForbiddenError (another patient named; unconfinable) or IncompleteRequestError (no patient named).
 */
export function confineSearch(ctx: RequestContext, policy: DecisionPolicy, req: ParsedSearch): URLSearchParams {
  if (confinedToLaunchPatient(ctx)) return confineToPatient(ctx, policy, req);
  const kind = governingKind(ctx.kinds);
  if (kind && policy.requirePatient.includes(kind)) requirePatientNamed(req);
  return new URLSearchParams(req.params);
}

/** For reads: a confined token may see a resource about patients only if the launch patient is one of them. */
export function withinPatientContext(ctx: RequestContext, resource: Resource): boolean {
  if (!confinedToLaunchPatient(ctx)) return true;
  // SPEC §5: data about a patient is confined as theirs whatever its type (Device.patient, Group.member …).
  const patients = patientsOf(resource);
  if (patients.length === 0) return !isPatientCompartmentType(resource.resourceType);
  return ctx.patient !== undefined && patients.includes(ctx.patient);
}
