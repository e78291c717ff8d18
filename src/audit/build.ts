// DisclosureRecord → IHE BALP AuditEvents (SPEC §6): one PatientRead/PatientQuery-shaped event per
// request and patient, one AuthZconsent-shaped event per Consent that decided. Only references, codes
// and fixed-wording trace reasons go in: the record carries no resource content, so neither can an event.
// Query-shaped events list resources compactly, one entity per outcome (issue 15, groupedEntities); a
// new event kind (a refused request's patients, a bulk-export file) composes restEvent's parts the same way.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { AuditEvent, AuditEventAgent, AuditEventEntity, Coding, Extension } from '@medplum/fhirtypes';
import type { TraceEntry } from '../decide/types.ts';
import { isFhirId, isPlainRelative, parseReference } from '../fhir/references.ts';
import { DG_CODES, V3_ACT_CODE, V3_ACT_REASON } from '../fhir/systems.ts';
import type { RequestContext } from '../provenance/context.ts';
import {
  DG_EXT_AUDIT_BREAK_THE_GLASS,
  DG_EXT_AUDIT_DISPOSITION,
  DG_EXT_AUDIT_REDACTED_PATH,
  DG_EXT_AUDIT_RULE,
  type AuditDisposition,
  type BreakTheGlassReview,
} from './extensions.ts';
import type { DisclosureRecord, Interaction, PatientDisclosure, ResourceDisposition } from './record.ts';
import { withBulkCounts } from './bulk.ts';

const BALP = 'https://profiles.ihe.net/ITI/BALP';
export const BALP_PROFILE = {
  read: `${BALP}/StructureDefinition/IHE.BasicAudit.Read`,
  patientRead: `${BALP}/StructureDefinition/IHE.BasicAudit.PatientRead`,
  query: `${BALP}/StructureDefinition/IHE.BasicAudit.Query`,
  patientQuery: `${BALP}/StructureDefinition/IHE.BasicAudit.PatientQuery`,
  authzConsent: `${BALP}/StructureDefinition/IHE.BasicAudit.AuthZconsent`,
} as const;
export const BALP_ENTITY_TYPE = `${BALP}/CodeSystem/BasicAuditEntityType`;
export const BALP_AUTHZ_SUBTYPE = `${BALP}/CodeSystem/AuthZsubType`;
export const BALP_USER_AGENT_TYPES = `${BALP}/CodeSystem/UserAgentTypes`;

export const AUDIT_EVENT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
export const RESTFUL_INTERACTION = 'http://hl7.org/fhir/restful-interaction';
export const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
export const AUDIT_ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
export const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
export const RESOURCE_TYPES = 'http://hl7.org/fhir/resource-types';
type AgentWho = NonNullable<AuditEventAgent['who']>;
type ObserverWho = AuditEvent['source']['observer'];
const PARTICIPATION_TYPE = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const ROLE_CLASS = 'http://terminology.hl7.org/CodeSystem/v3-RoleClass';
const EXTRA_SECURITY_ROLE = 'http://terminology.hl7.org/CodeSystem/extra-security-role-type';
const SECURITY_SOURCE_TYPE = 'http://terminology.hl7.org/CodeSystem/security-source-type';
/** Request id entity detail on AuthZconsent events, whose entity slicing is closed (no XrequestId slot). */
export const REQUEST_ID_DETAIL = 'X-Request-Id';

export interface AuditBuildOptions {
  /** The gateway as observer/server/authorizer: a reference (`Device/disclosure-gateway`) or a display name. */
  readonly gatewayDevice: string;
  readonly site?: string;
  /** The gateway's network address (its public base URL or host name); defaults to the host name. */
  readonly address?: string;
}

const OUTCOME = { success: '0', refused: '4', error: '8' } as const;

/** R4 has no search-compartment code: a compartment search is a search of its type (SPEC §5). */
const SUBTYPE: Record<Interaction, string> = {
  read: 'read',
  vread: 'vread',
  'history-instance': 'history-instance',
  'history-type': 'history-type',
  'history-system': 'history-system',
  'search-type': 'search-type',
  'search-system': 'search-system',
  'search-compartment': 'search-type',
  batch: 'batch',
  transaction: 'transaction',
  operation: 'operation',
  create: 'create',
  update: 'update',
  patch: 'patch',
  delete: 'delete',
  capabilities: 'capabilities',
};

type Shape = 'read' | 'query' | 'write' | 'other';

function shapeOf(interaction: Interaction): Shape {
  switch (interaction) {
    case 'read':
    case 'vread':
      return 'read';
    case 'create':
    case 'update':
    case 'patch':
    case 'delete':
      return 'write';
    case 'capabilities':
      return 'other';
    default:
      return 'query';
  }
}

function actionOf(interaction: Interaction): AuditEvent['action'] {
  switch (interaction) {
    case 'read':
    case 'vread':
    case 'capabilities':
      return 'R';
    case 'create':
      return 'C';
    case 'update':
    case 'patch':
      return 'U';
    case 'delete':
      return 'D';
    default:
      return 'E';
  }
}

function gatewayWho(device: string): AgentWho & ObserverWho {
  const parsed = parseReference(device);
  return (parsed && parsed.base === undefined && parsed.version === undefined ? { reference: device } : { display: device }) as AgentWho & ObserverWho;
}

function purposeCodings(ctx: RequestContext | undefined): Coding[] {
  return (ctx?.purposeOfUse ?? []).map((code) => ({ system: V3_ACT_REASON, code }));
}

function hasUser(ctx: RequestContext | undefined): boolean {
  return ctx !== undefined && (ctx.fhirUser !== undefined || ctx.subject !== undefined);
}

function clientWho(record: DisclosureRecord): AgentWho {
  const clientId = record.context?.clientId ?? record.clientId;
  if (clientId === undefined) return { display: 'unidentified client' };
  const issuer = record.context?.issuer;
  return { identifier: issuer === undefined ? { value: clientId } : { system: issuer, value: clientId } };
}

function userAgent(ctx: RequestContext): AuditEventAgent {
  const who: AgentWho =
    ctx.fhirUser !== undefined
      ? ({ reference: ctx.fhirUser } as AgentWho)
      : { identifier: ctx.issuer === undefined ? { value: ctx.subject } : { system: ctx.issuer, value: ctx.subject } };
  const agent: AuditEventAgent = {
    type: { coding: [{ system: PARTICIPATION_TYPE, code: 'IRCP', display: 'information recipient' }] },
    who,
    requestor: true,
  };
  if (ctx.tokenId !== undefined) agent.policy = [ctx.tokenId];
  const purposes = purposeCodings(ctx);
  if (purposes.length > 0) agent.purposeOfUse = [{ coding: purposes }];
  return agent;
}

function organizationAgent(organization: string): AuditEventAgent {
  return {
    type: { coding: [{ system: ROLE_CLASS, code: 'PROV', display: 'healthcare provider' }] },
    who: { reference: organization } as AgentWho,
    requestor: false,
  };
}

function serverNetwork(opts: AuditBuildOptions): AuditEventAgent['network'] {
  const address = opts.address ?? hostname();
  return { address, type: /^[a-z]+:\/\//i.test(address) ? '5' : '1' };
}

/** Client, server and (when known) user and organization agents of a RESTful event (BALP Read/Query). */
function restAgents(record: DisclosureRecord, shape: Shape, opts: AuditBuildOptions): AuditEventAgent[] {
  const ctx = record.context;
  const user = hasUser(ctx);
  // BALP: for a Read the client is the Destination, for a Query (and anything sent to the server) the Source.
  const [clientRole, serverRole] = shape === 'read' ? ['110152', '110153'] : ['110153', '110152'];
  const roleDisplay: Record<string, string> = { '110152': 'Destination Role ID', '110153': 'Source Role ID' };
  const client: AuditEventAgent = {
    type: { coding: [{ system: DCM, code: clientRole, display: roleDisplay[clientRole] }] },
    who: clientWho(record),
    requestor: !user,
  };
  if (record.clientAddress !== undefined) client.network = { address: record.clientAddress, type: '2' };
  if (!user) {
    // A backend client is its own requester: its token id and purpose of use go on it.
    if (ctx?.tokenId !== undefined) client.policy = [ctx.tokenId];
    const purposes = purposeCodings(ctx);
    if (purposes.length > 0) client.purposeOfUse = [{ coding: purposes }];
  }
  const server: AuditEventAgent = {
    type: { coding: [{ system: DCM, code: serverRole, display: roleDisplay[serverRole] }] },
    who: gatewayWho(opts.gatewayDevice),
    requestor: false,
    network: serverNetwork(opts),
  };
  const agents = [client, server];
  if (user && ctx !== undefined) agents.push(userAgent(ctx));
  if (ctx?.organization !== undefined) agents.push(organizationAgent(ctx.organization));
  return agents;
}

function ruleExtension(entry: TraceEntry): Extension {
  const parts: Extension[] = [
    { url: 'layer', valueCode: entry.layer },
    { url: 'effect', valueCode: entry.effect },
    { url: 'rule', valueString: entry.rule },
  ];
  if (entry.provision !== undefined) parts.push({ url: 'provision', valueString: entry.provision });
  if (entry.ground !== undefined) parts.push({ url: 'ground', valueCoding: { system: DG_CODES, code: entry.ground } });
  parts.push({ url: 'reason', valueString: entry.reason });
  return { url: DG_EXT_AUDIT_RULE, extension: parts };
}

function breakTheGlassExtension(code: BreakTheGlassReview): Extension {
  return { url: DG_EXT_AUDIT_BREAK_THE_GLASS, valueCode: code };
}

function versioned(reference: string, versionId: string | undefined): string {
  return versionId === undefined ? reference : `${reference}/_history/${versionId}`;
}

interface ResourceOutcome {
  reference: string;
  versionId?: string;
  disposition: AuditDisposition;
  trace: readonly TraceEntry[];
  paths: readonly string[];
  breakGlassUsed: boolean;
  part2: boolean;
}

const dispositionRank: Readonly<Record<AuditDisposition, number>> = { released: 0, redacted: 1, withheld: 2 };
/** One empty trace for every released resource without labels, so groupKey's cache (by array) holds for them. */
const NO_TRACE: readonly TraceEntry[] = [];

/**
 * One entry per resource version, from enforcement's dispositions. A version decided more than once in a
 * request (an include and a match) is recorded once, by its strongest disposition: withheld over redacted
 * over released; released and redacted versions come first, then the withheld (the entity order audit keeps).
 */
function resourceOutcomes(patient: PatientDisclosure): ResourceOutcome[] {
  const byKey = new Map<string, ResourceOutcome>();
  const note = (d: ResourceDisposition): void => {
    const key = versioned(d.reference, d.versionId);
    const prior = byKey.get(key);
    if (prior && dispositionRank[prior.disposition] > dispositionRank[d.disposition]) return;
    byKey.set(key, {
      reference: d.reference,
      versionId: d.versionId,
      disposition: d.disposition,
      trace: d.disposition === 'released' ? (d.labelled ?? NO_TRACE) : d.trace,
      paths: d.disposition === 'redacted' ? d.paths : [],
      breakGlassUsed: d.disposition !== 'withheld' && d.breakGlassUsed === true,
      part2: d.disposition !== 'withheld' && d.part2 === true,
    });
  };
  for (const d of patient.dispositions) if (d.disposition !== 'withheld') note(d);
  for (const d of patient.dispositions) if (d.disposition === 'withheld') note(d);
  return [...byKey.values()];
}

const DOMAIN_RESOURCE_ROLE: Coding = { system: OBJECT_ROLE, code: '4', display: 'Domain Resource' };
const SYSTEM_OBJECT_TYPE: Coding = { system: AUDIT_ENTITY_TYPE, code: '2', display: 'System Object' };

/** A reference the compact form can carry: `Type/id`, id and version FHIR ids (no space, so a list can hold it). */

function fullReference(reference: string, fallbackType: string | undefined): string {
  return reference.includes('/') || fallbackType === undefined ? reference : `${fallbackType}/${reference}`;
}

/** One entity per resource: reads (BALP Read's single `data` entity) and references the compact form cannot hold. */
function resourceEntity(outcome: ResourceOutcome, shape: Shape, fallbackType: string | undefined): AuditEventEntity {
  const reference = fullReference(outcome.reference, fallbackType);
  // BALP Read: the resource read is the `data` slice (System Object); elsewhere a System Object would
  // fall into the Query slice, so the resource is typed by its resource type (R4 AuditEventEntityType).
  const asReadData = shape === 'read' && outcome.disposition !== 'withheld';
  const type = asReadData ? SYSTEM_OBJECT_TYPE : { system: RESOURCE_TYPES, code: reference.split('/')[0] || 'Resource' };
  const entity: AuditEventEntity = { extension: outcomeExtensions(outcome), what: { reference: versioned(reference, outcome.versionId) }, type, role: DOMAIN_RESOURCE_ROLE };
  if (outcome.part2) entity.securityLabel = [{ system: V3_ACT_CODE, code: '42CFRPart2' }];
  return entity;
}

/** What a resource's entity (or its group's) says beyond the reference: disposition, paths, rules, break-the-glass. */
function outcomeExtensions(outcome: Omit<ResourceOutcome, 'reference' | 'versionId'>): Extension[] {
  const extension: Extension[] = [{ url: DG_EXT_AUDIT_DISPOSITION, valueCode: outcome.disposition }];
  for (const path of outcome.paths) extension.push({ url: DG_EXT_AUDIT_REDACTED_PATH, valueString: path });
  for (const entry of outcome.trace) extension.push(ruleExtension(entry));
  if (outcome.breakGlassUsed) extension.push(breakTheGlassExtension('btg-released'));
  return extension;
}

/** Resources that share everything but their reference: one entity holds them all (issue 15, SPEC §6). */
interface OutcomeGroup {
  readonly outcome: Omit<ResourceOutcome, 'reference' | 'versionId'>;
  /** Resource type → `id` or `id/_history/version`, in the order met. */
  readonly byType: Map<string, string[]>;
}

// Two outcomes share an entity when everything but the reference is equal. The key is cached per trace array
// (resources decided by one rule share it) and per disposition and flags; redacted paths are spelled out.
function groupKey(outcome: ResourceOutcome, keys: Map<readonly TraceEntry[], string[]>): string {
  let byFlags = keys.get(outcome.trace);
  if (byFlags === undefined) {
    byFlags = [];
    keys.set(outcome.trace, byFlags);
  }
  const flags = dispositionRank[outcome.disposition] * 4 + (outcome.breakGlassUsed ? 2 : 0) + (outcome.part2 ? 1 : 0);
  let key = byFlags[flags];
  if (key === undefined) {
    const trace = outcome.trace.map((t) => `${t.layer}\u0001${t.effect}\u0001${t.rule}\u0001${t.provision ?? ''}\u0001${t.ground ?? ''}\u0001${t.reason}`).join('\u0002');
    key = byFlags[flags] = `${outcome.disposition}\u0003${outcome.breakGlassUsed}\u0003${outcome.part2}\u0003${trace}`;
  }
  return outcome.paths.length === 0 ? key : `${key}\u0003${outcome.paths.join('\u0001')}`;
}

/**
 * Compact entities for a query-shaped event: one per distinct outcome (disposition, paths, rules, labels),
 * its versioned references listed once per resource type in `detail` (type = the resource type, value =
 * space-separated `id/_history/version`). A released resource costs ~its reference, not a ~400-byte entity.
 */
function groupedEntities(outcomes: readonly ResourceOutcome[], fallbackType: string | undefined): AuditEventEntity[] {
  const groups = new Map<string, OutcomeGroup>();
  const keys = new Map<readonly TraceEntry[], string[]>();
  const single: AuditEventEntity[] = [];
  for (const outcome of outcomes) {
    // Only a plain relative `Type/id` packs into a group's detail; anything else keeps its own entity.
    const reference = fullReference(outcome.reference, fallbackType);
    if (!isPlainRelative(reference) || (outcome.versionId !== undefined && !isFhirId(outcome.versionId))) {
      single.push(resourceEntity(outcome, 'query', fallbackType));
      continue;
    }
    const slash = reference.indexOf('/');
    const resourceType = reference.slice(0, slash);
    const key = groupKey(outcome, keys);
    let group = groups.get(key);
    if (!group) {
      group = { outcome, byType: new Map() };
      groups.set(key, group);
    }
    const items = group.byType.get(resourceType) ?? [];
    items.push(versioned(reference.slice(slash + 1), outcome.versionId));
    group.byType.set(resourceType, items);
  }
  const entities = [...groups.values()].map(({ outcome, byType }) => {
    const entity: AuditEventEntity = {
      extension: outcomeExtensions(outcome),
      role: DOMAIN_RESOURCE_ROLE,
      detail: [...byType].map(([type, items]) => ({ type, valueString: items.join(' ') })),
    };
    if (outcome.part2) entity.securityLabel = [{ system: V3_ACT_CODE, code: '42CFRPart2' }];
    return entity;
  });
  return [...entities, ...single];
}

function patientEntity(patientId: string): AuditEventEntity {
  return {
    what: { reference: `Patient/${patientId}` },
    type: { system: AUDIT_ENTITY_TYPE, code: '1', display: 'Person' },
    role: { system: OBJECT_ROLE, code: '1', display: 'Patient' },
  };
}

function requestIdEntity(requestId: string): AuditEventEntity {
  return {
    what: { identifier: { value: requestId } },
    type: { system: BALP_ENTITY_TYPE, code: 'XrequestId' },
  };
}

function queryEntity(record: DisclosureRecord): AuditEventEntity {
  // BALP: the raw request, base64, so that even a malformed or malicious query is kept exactly.
  return {
    type: { system: AUDIT_ENTITY_TYPE, code: '2', display: 'System Object' },
    role: { system: OBJECT_ROLE, code: '24', display: 'Query' },
    query: Buffer.from(`${record.method} ${record.query}`, 'utf8').toString('base64'),
  };
}

function breakTheGlassReview(record: DisclosureRecord, patient: PatientDisclosure | undefined): BreakTheGlassReview | undefined {
  const releasedUnderBtg = patient !== undefined && patient.dispositions.some((d) => d.disposition !== 'withheld' && d.breakGlassUsed === true);
  if (releasedUnderBtg) return 'btg-released';
  if (record.context?.breakGlass.inEffect === true) return 'btg-in-effect';
  if (record.breakGlassAttempt === true || record.context?.breakGlass.requested === true) return 'btg-attempt';
  return undefined;
}

function isEntityOfType(entity: AuditEventEntity, system: string, code: string): boolean {
  return entity.type?.system === system && entity.type.code === code;
}

/** Which BALP profile a successful RESTful event conforms to, if any (failures claim none, SPEC §6). */
function restProfile(event: AuditEvent, shape: Shape, withPatient: boolean): string | undefined {
  if (event.outcome !== OUTCOME.success) return undefined;
  const agents = event.agent;
  // Client and server must both carry their network access point.
  if (!agents.filter((a) => a.type?.coding?.[0]?.system === DCM).every((a) => a.network !== undefined)) return undefined;
  const entities = event.entity ?? [];
  if (shape === 'read') {
    const data = entities.filter((e) => isEntityOfType(e, AUDIT_ENTITY_TYPE, '2'));
    if (data.length !== 1) return undefined;
    return withPatient ? BALP_PROFILE.patientRead : BALP_PROFILE.read;
  }
  // BALP Query binds its subtype slice to AllSearchVS: history, batch and operations keep the pattern unclaimed.
  if (shape === 'query' && BALP_SEARCH_SUBTYPES.has(event.subtype?.[0]?.code ?? '')) return withPatient ? BALP_PROFILE.patientQuery : BALP_PROFILE.query;
  return undefined;
}

/** BALP ValueSet AllSearchVS (restful-interaction codes a Query event's subtype slice takes). */
const BALP_SEARCH_SUBTYPES = new Set(['search', 'search-type', 'search-system']);

function restEvent(record: DisclosureRecord, patient: PatientDisclosure | undefined, opts: AuditBuildOptions): AuditEvent {
  const shape = shapeOf(record.interaction);
  const entity: AuditEventEntity[] = [];
  if (patient !== undefined) entity.push(patientEntity(patient.patientId));
  entity.push(requestIdEntity(record.requestId));
  if (shape !== 'read') entity.push(queryEntity(record));
  if (patient !== undefined) {
    const outcomes = resourceOutcomes(patient);
    if (shape === 'query') entity.push(...groupedEntities(outcomes, record.resourceType));
    else for (const outcome of outcomes) entity.push(resourceEntity(outcome, shape, record.resourceType));
  }
  const extension: Extension[] = [];
  const review = breakTheGlassReview(record, patient);
  if (review !== undefined) extension.push(breakTheGlassExtension(review));
  for (const ignored of patient?.ignored ?? []) extension.push(ruleExtension(ignored));

  const event: AuditEvent = {
    resourceType: 'AuditEvent',
    id: randomUUID(),
    type: { system: AUDIT_EVENT_TYPE, code: 'rest', display: 'Restful Operation' },
    subtype: [{ system: RESTFUL_INTERACTION, code: SUBTYPE[record.interaction] }],
    action: actionOf(record.interaction),
    recorded: record.recorded,
    outcome: OUTCOME[record.outcome],
    agent: restAgents(record, shape, opts),
    source: sourceOf(opts, '4', 'Application Server'),
    entity,
  };
  if (extension.length > 0) event.extension = extension;
  if (record.outcomeDesc !== undefined) event.outcomeDesc = record.outcomeDesc;
  const purposes = purposeCodings(record.context);
  if (purposes.length > 0) event.purposeOfEvent = [{ coding: purposes }];
  const profile = restProfile(event, shape, patient !== undefined);
  if (profile !== undefined) event.meta = { profile: [profile] };
  return event;
}

function sourceOf(opts: AuditBuildOptions, code: string, display: string): AuditEvent['source'] {
  const source: AuditEvent['source'] = {
    observer: gatewayWho(opts.gatewayDevice),
    type: [{ system: SECURITY_SOURCE_TYPE, code, display }],
  };
  if (opts.site !== undefined) source.site = opts.site;
  return source;
}

function consentReference(consent: string): string {
  return consent.includes('/') ? consent : `Consent/${consent}`;
}

function authzConsentEvent(
  record: DisclosureRecord,
  patient: PatientDisclosure,
  decisions: readonly ConsentDecision[],
  opts: AuditBuildOptions,
): AuditEvent {
  const ctx = record.context;
  const user = hasUser(ctx);
  const client: AuditEventAgent = {
    type: { coding: [{ system: DCM, code: '110150', display: 'Application' }] },
    who: clientWho(record),
    requestor: !user,
  };
  if (record.clientAddress !== undefined) client.network = { address: record.clientAddress, type: '2' };
  if (ctx?.tokenId !== undefined) client.policy = [ctx.tokenId];
  const agent: AuditEventAgent[] = [client];
  if (user && ctx !== undefined) agent.push(userAgent(ctx));
  if (ctx?.organization !== undefined) agent.push(organizationAgent(ctx.organization));
  agent.push({
    type: { coding: [{ system: EXTRA_SECURITY_ROLE, code: 'authserver', display: 'authorization server' }] },
    who: gatewayWho(opts.gatewayDevice),
    requestor: false,
  });

  const consent = consentReference(decisions[0].consent);
  const entity: AuditEventEntity[] = [
    patientEntity(patient.patientId),
    {
      what: { reference: consent },
      type: { system: RESOURCE_TYPES, code: 'Consent' },
      // AuthZconsent's entity slicing is closed: the request id rides on the consent entity.
      detail: [{ type: REQUEST_ID_DETAIL, valueString: record.requestId }],
    },
  ];
  if (ctx?.tokenId !== undefined) {
    entity.push({
      what: { identifier: { value: `urn:ietf:params:oauth:jti:${ctx.tokenId}` } },
      type: { system: BALP_USER_AGENT_TYPES, code: 'UserOauthAgent' },
    });
  }
  const event: AuditEvent = {
    resourceType: 'AuditEvent',
    id: randomUUID(),
    type: { system: DCM, code: '110113', display: 'Security Alert' },
    subtype: [{ system: BALP_AUTHZ_SUBTYPE, code: 'AuthZ-Consent' }],
    action: 'E',
    recorded: record.recorded,
    // BALP AuthZconsent: success when the consent permits, serious failure when it denied anything.
    outcome: decisions.some((d) => d.effect === 'deny') ? '8' : '0',
    outcomeDesc: decisions.map((d) => `${consent}${d.provision === undefined ? '' : ` ${d.provision}`}: ${d.effect} — ${d.reason}`).join('; '),
    agent,
    source: sourceOf(opts, '6', 'Security Server'),
    entity,
  };
  const purposes = purposeCodings(ctx);
  if (purposes.length > 0) event.purposeOfEvent = [{ coding: purposes }];
  const review = breakTheGlassReview(record, undefined);
  if (review !== undefined) event.extension = [breakTheGlassExtension(review)];
  // The profile needs client network, user and user organization; claim it only when all are known.
  if (client.network !== undefined && user && ctx?.organization !== undefined) event.meta = { profile: [BALP_PROFILE.authzConsent] };
  return event;
}

type ConsentDecision = PatientDisclosure['consentDecisions'][number];

/** One AuthZconsent event per consent per request (issue 15): its provisions' decisions go in one outcomeDesc. */
function byConsent(decisions: readonly ConsentDecision[]): ConsentDecision[][] {
  const grouped = new Map<string, ConsentDecision[]>();
  for (const decision of decisions) {
    const key = consentReference(decision.consent);
    grouped.set(key, [...(grouped.get(key) ?? []), decision]);
  }
  return [...grouped.values()];
}

/** The AuditEvents one request produces, in a stable order: per patient its disclosure event, then one event per consent that decided. */
export function buildAuditEvents(record: DisclosureRecord, opts: AuditBuildOptions): AuditEvent[] {
  const patients: PatientDisclosure[] = [...record.patients];
  const covered = new Set(patients.map((p) => p.patientId));
  for (const patientId of record.requestedPatients ?? []) {
    if (covered.has(patientId)) continue;
    covered.add(patientId);
    patients.push({ patientId, dispositions: [], ignored: [], consentDecisions: [] });
  }
  if (record.bulk) return [withBulkCounts(restEvent(record, undefined, opts), record.bulk)];
  if (patients.length === 0) return [restEvent(record, undefined, opts)];
  const events: AuditEvent[] = [];
  for (const patient of patients) {
    events.push(restEvent(record, patient, opts));
    for (const decisions of byConsent(patient.consentDecisions)) events.push(authzConsentEvent(record, patient, decisions, opts));
  }
  return events;
}
