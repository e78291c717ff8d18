// Operations (SPEC §5, §7): $everything, the explain operation $disclosure-decision, the per-consent
// $consent-enforcement-status, $security-label (§4.7), and whatever the policy's allowOperations lets through — each resource
// of their answers still decided. Anything else is refused.
import type { Bundle, Consent, Parameters, ParametersParameter, Resource } from '@medplum/fhirtypes';
import { decideDisclosure, enforcementStatus } from '../decide/index.ts';
import { RequestFacts, validationFailure } from '../policy/index.ts';
import type { Decision, Obligation } from '../decide/types.ts';
import { badRequest, forbidden, GatewayError, notFound, operationOutcome, resourceBody } from '../fhir/outcome.ts';
import type { SecurityLabeler } from '../label/index.ts';
import type { RequestContext } from '../provenance/context.ts';
import { localKey, referenceKey } from '../fhir/references.ts';
import { withinPatientContext } from '../provenance/confine.ts';
import { holdsAuditEventScope, mayConcernPatient, parseScopes } from '../provenance/scopes.ts';
import { upstreamFailure, upstreamResource } from '../upstream/index.ts';
import { type Exchange, type Reply, requestFactsDeps } from './exchange.ts';
import { assembledBundle, echoedToSender, gatewayAuthored } from './reply.ts';
import { exportKickOff } from './export.ts';
import { confineInstance, everything } from './interactions.ts';
import { applyObligations } from './redact.ts';
import { flat } from '../fhir/flat.ts';

/** Explain and status are for administrators and auditors (SPEC §7). */
function requireAuditor(x: Exchange): void {
  const administrator = x.ctx.scopes.some((s) => s.kind === 'system' && (s.resourceType === 'Consent' || s.resourceType === '*') && s.interactions.has('r'));
  const ok = administrator || (holdsAuditEventScope(x.ctx, 'r') && holdsAuditEventScope(x.ctx, 's'));
  if (!ok) throw forbidden();
}

function params(p: Parameters, name: string): ParametersParameter[] {
  return (p.parameter ?? []).filter((x) => x.name === name);
}

/** One line per rule in the trace, naming the rule's resource and provision. */
export function traceReasons(decision: Decision): string[] {
  return decision.trace.map((t) => `${t.layer} ${t.rule}${t.provision ? ` ${t.provision}` : ''}${t.ground ? ` (${t.ground})` : ''}: ${t.effect} — ${t.reason}`);
}

export function decisionParameters(decision: Decision): Parameters {
  const parameter: ParametersParameter[] = [{ name: 'decision', valueCode: decision.outcome }];
  for (const o of decision.obligations) {
    const part: ParametersParameter[] = [{ name: 'code', valueCode: o.kind }];
    if (o.kind === 'redact') part.push({ name: 'path', valueString: o.path });
    if (o.kind === 'add-security-label') part.push({ name: 'label', valueCoding: o.coding });
    if (o.kind === 'notice' || o.kind === 'harm-refusal') part.push({ name: 'text', valueString: o.text });
    parameter.push({ name: 'obligation', part });
  }
  for (const reason of traceReasons(decision)) parameter.push({ name: 'reason', valueString: reason });
  return { resourceType: 'Parameters', parameter };
}

async function explain(x: Exchange): Promise<Reply> {
  requireAuditor(x);
  const p = resourceBody<Parameters>(x.body, 'Parameters', 'a Parameters resource');
  const actor = params(p, 'actor')[0]?.valueReference?.reference;
  const fhirUser = referenceKey(actor, x.deps.store.localBases);
  if (!fhirUser) throw badRequest('actor (valueReference to the requester’s fhirUser) is required');
  const orgRef = params(p, 'organization')[0]?.valueReference?.reference;
  const purposes = params(p, 'purpose').flatMap((q) => (q.valueCode ? [q.valueCode] : q.valueCoding?.code ? [q.valueCoding.code] : []));
  const scope = params(p, 'scope')[0]?.valueString ?? '';
  const breakGlass = params(p, 'breakGlass')[0]?.valueBoolean === true;
  if (purposes.length === 0 && !breakGlass) throw badRequest('purpose is required');
  const { scopes, kinds } = parseScopes(scope);
  if (scopes.length === 0) throw badRequest('scope must hold at least one SMART resource scope');

  let resource = params(p, 'resource')[0]?.resource as Resource | undefined;
  if (!resource) {
    const ref = params(p, 'reference')[0]?.valueReference?.reference;
    const relative = localKey(referenceKey(ref, x.deps.store.localBases));
    if (!relative) throw badRequest('resource or reference is required');
    const read = await x.deps.upstream.readJson<Resource>(relative, { requestId: x.ctx.requestId });
    // another patient's resource, for a token confined to its launch patient, reads as a missing one; so does
    // any upstream refusal of the read (the explain endpoint conceals like a read, not an upstream failure)
    if (read.status >= 400 || !withinPatientContext(x.ctx, read.resource)) throw notFound();
    resource = read.resource;
  } else if (!withinPatientContext(x.ctx, resource)) {
    throw forbidden();
  }
  const patient = fhirUser.startsWith('Patient/') ? fhirUser.slice('Patient/'.length) : undefined;
  const hypothetical: RequestContext = Object.freeze({
    requestId: x.ctx.requestId,
    clientId: `explain:${x.ctx.clientId}`,
    grantedScopes: Object.freeze([...scope.split(/\s+/).filter(Boolean), ...(breakGlass ? [x.deps.policy.breakGlassScope] : [])]),
    scopes: Object.freeze(scopes),
    kinds,
    patient,
    fhirUser,
    organization: referenceKey(orgRef, x.deps.store.localBases),
    purposeOfUse: Object.freeze(breakGlass && !purposes.includes('BTG') ? [...purposes, 'BTG'] : purposes),
    purposeSource: 'claim',
    breakGlass: Object.freeze({ inEffect: breakGlass, requested: breakGlass }),
  });
  const requester = await x.deps.store.resolveRequester(hypothetical);
  // The facts and the rule chain enforcement decides with, so that explain and enforcement cannot disagree;
  // nothing is released, so no obligation is applied and nothing is accounted.
  const facts = new RequestFacts(requestFactsDeps(x.deps), hypothetical, requester);
  await facts.prepare([resource]);
  const decision = decideDisclosure(resource, 'r', facts);
  for (const id of facts.patientsOf(resource)) x.namedPatients.add(id);
  return { status: 200, body: gatewayAuthored(decisionParameters(decision)) };
}

function statusParameter(consent: Consent, x: Exchange): ParametersParameter {
  const { status, reason } = enforcementStatus(consent, x.deps.policy, x.deps.now(), validationFailure(consent));
  const part: ParametersParameter[] = [
    { name: 'reference', valueReference: { reference: `Consent/${consent.id}` } },
    { name: 'status', valueCode: status },
  ];
  if (reason) part.push({ name: 'reason', valueString: reason });
  return { name: 'consent', part };
}

async function consentEnforcementStatus(x: Exchange, resourceType: string, id: string): Promise<Reply> {
  requireAuditor(x);
  let consents: Consent[];
  if (resourceType === 'Consent') {
    const read = await x.deps.upstream.readJson<Consent>(`Consent/${id}`, { requestId: x.ctx.requestId });
    if (read.status === 404 || read.status === 410) throw notFound();
    if (read.status >= 400 || read.resource.resourceType !== 'Consent') throw upstreamFailure(read.status, { failed: 'the upstream failed to read the consent' });
    // another patient's consent, for a token confined to its launch patient, reads as a missing one
    if (!withinPatientContext(x.ctx, read.resource)) throw notFound();
    consents = [read.resource];
  } else {
    x.namedPatients.add(id);
    if (!mayConcernPatient(x.ctx, id)) throw forbidden();
    const all = await x.deps.upstream.searchAll(`Consent?patient=Patient/${id}&_count=200`, { requestId: x.ctx.requestId });
    consents = all.resources as Consent[];
  }
  return { status: 200, body: gatewayAuthored<Parameters>({ resourceType: 'Parameters', parameter: consents.map((c) => statusParameter(c, x)) }) };
}

/** The resource with its computed labels added; a Bundle's entries each labelled, in order (SPEC §4.7). */
function labelled<T extends Resource>(labeler: SecurityLabeler, resource: T): T {
  const computed = labeler.label(resource);
  const obligations = computed.added.map((coding): Obligation => ({ kind: 'add-security-label', coding }));
  const result = applyObligations(resource, { outcome: 'permit', obligations, trace: [], breakGlassUsed: false, part2: false });
  if (result.resourceType !== 'Bundle' || !Array.isArray(result.entry)) return result;
  const entry = result.entry.map((e) => (e?.resource ? { ...e, resource: labelled(labeler, e.resource) } : e));
  return { ...result, entry } as T;
}

/** `POST $security-label`: reads nothing upstream, stores nothing, discloses only what it was given (SPEC §4.7). */
export function securityLabel(labeler: SecurityLabeler, body: Buffer | undefined): Reply {
  const resource = resourceBody<Resource>(body, undefined, 'a FHIR resource or Bundle');
  return { status: 200, body: echoedToSender(labelled(labeler, resource)) };
}

/** An operation the policy lets through: its answer is decided like any other read (SPEC §4.6 allowOperations). */
async function allowedOperation(x: Exchange, method: string, name: string, resourceType?: string, id?: string): Promise<Reply> {
  const path = [resourceType, id, name].filter(Boolean).join('/');
  const response = await x.deps.upstream.request({
    method,
    path: x.rawQuery ? `${path}?${x.rawQuery}` : path,
    headers: method === 'POST' ? { 'content-type': 'application/fhir+json' } : {},
    body: method === 'POST' ? x.body : undefined,
    requestId: x.ctx.requestId,
    strict: true,
    expectJson: true,
    pageLease: x.pageLease,
  });
  if (response.status >= 400) throw upstreamFailure(response.status, { failed: 'the upstream server failed the operation', refused: 'the upstream server refused the operation' }, { kept: [404], otherwise: 400 });
  const answer = upstreamResource(response);
  // GraphQL and other non-FHIR answers cannot be decided per resource: never released (SPEC §5).
  if (!answer) throw upstreamFailure(response.status, { failed: 'the upstream answered the operation with something other than a FHIR resource' });
  if (answer.resourceType === 'Bundle') {
    const bundle = answer as Bundle;
    const resources = (bundle.entry ?? []).flatMap((e) => (e.resource ? [e.resource] : []));
    await x.session.prepare(resources);
    const entry = resources.flatMap((r) => {
      const verdict = x.session.decide(r, 's');
      return verdict.released ? [{ fullUrl: flat`${x.deps.fhirBase}/${r.resourceType}/${r.id}`, resource: verdict.resource }] : [];
    });
    return { status: 200, body: assembledBundle({ resourceType: 'Bundle', type: bundle.type === 'searchset' ? 'searchset' : 'collection' }, entry) };
  }
  // The upstream's own outcome may echo stored data: the gateway states the result in its own words.
  if (answer.resourceType === 'OperationOutcome') return { status: response.status, body: gatewayAuthored(operationOutcome('informational', 'the operation completed', 'information')) };
  if (answer.resourceType === 'Parameters') throw new GatewayError(502, 'not-supported', 'operations answering Parameters cannot be decided per resource');
  await x.session.prepare([answer]);
  const verdict = x.session.decide(answer, 'r');
  if (!verdict.released) throw notFound();
  return { status: 200, body: verdict.resource };
}

export async function operation(x: Exchange, method: string, name: string, resourceType?: string, id?: string): Promise<Reply> {
  if (name === '$everything' && resourceType === 'Patient' && id && (method === 'GET' || method === 'HEAD')) return everything(x, id, x.query);
  if (name === '$disclosure-decision' && !resourceType && method === 'POST') return explain(x);
  if (name === '$export') return exportKickOff(x, method, resourceType, id);
  if (name === '$consent-enforcement-status' && id && (resourceType === 'Consent' || resourceType === 'Patient') && method === 'GET') {
    return consentEnforcementStatus(x, resourceType, id);
  }
  if (x.deps.policy.allowOperations.includes(name) && (method === 'GET' || method === 'POST')) {
    if (resourceType && !x.ctx.scopes.some((s) => s.resourceType === '*' || s.resourceType === resourceType)) throw forbidden();
    if (resourceType && id) confineInstance(x, resourceType, id);
    return allowedOperation(x, method, name, resourceType, id);
  }
  throw forbidden();
}
