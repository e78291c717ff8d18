// Reads the gateway's AuditEvents (src/audit/build.ts, src/audit/extensions.ts) into plain summaries:
// who received what, when, for which purpose, and which rule released, redacted or withheld each resource.
/* global atob */

const DG = 'https://disclosure-gateway.org/fhir';
export const EXT = {
  disposition: `${DG}/StructureDefinition/audit-disposition`,
  rule: `${DG}/StructureDefinition/audit-rule`,
  redactedPath: `${DG}/StructureDefinition/audit-redacted-path`,
  breakTheGlass: `${DG}/StructureDefinition/audit-break-the-glass`,
};
export const DG_AUDIT_CODES = `${DG}/CodeSystem/audit`;
export const DG_DISCLOSURE_CODES = `${DG}/CodeSystem/disclosure`;
const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const ROLE_CLASS = 'http://terminology.hl7.org/CodeSystem/v3-RoleClass';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const BALP_ENTITY_TYPE = 'https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType';

/** v3-ActReason purposes of use the gateway meets, in plain words. */
export const PURPOSES = {
  TREAT: 'treatment',
  ETREAT: 'emergency treatment',
  BTG: 'break the glass',
  HPAYMT: 'payment',
  HOPERAT: 'healthcare operations',
  PATRQT: 'patient request',
  FAMRQT: 'family request',
  PWATRNY: 'power of attorney',
  HRESCH: 'research',
  PUBHLTH: 'public health',
  HLEGAL: 'legal',
  CAREMGT: 'care management',
  HMARKT: 'marketing',
};

export const OUTCOMES = { 0: 'success', 4: 'refused', 8: 'failed', 12: 'failed' };

/** Why an event is flagged for break-the-glass review (BreakTheGlassReview in extensions.ts). */
export const BTG_REVIEW = {
  'btg-released': 'data was released only because the glass was broken',
  'btg-in-effect': 'break-the-glass was in effect for this request',
  'btg-attempt': 'break-the-glass was asked for without authorisation',
};

function ext(element, url) {
  return (element?.extension ?? []).filter((e) => e.url === url);
}

function sameWho(a, b) {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/** @param {{ reference?: string, identifier?: { value?: string }, display?: string } | undefined} who */
export function whoText(who) {
  return who?.reference ?? who?.identifier?.value ?? who?.display ?? '';
}

function decodeQuery(b64) {
  if (!b64) return undefined;
  try {
    return new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  } catch {
    return undefined;
  }
}

/** One audit-rule extension → a trace entry (TraceEntry in src/decide/types.ts). */
export function ruleOf(extension) {
  const part = (name) => (extension.extension ?? []).find((e) => e.url === name);
  return {
    layer: part('layer')?.valueCode ?? '',
    effect: part('effect')?.valueCode ?? '',
    rule: part('rule')?.valueString ?? '',
    provision: part('provision')?.valueString,
    ground: part('ground')?.valueCoding?.code,
    reason: part('reason')?.valueString ?? '',
  };
}

/** `Observation/o1/_history/3` → `Observation/o1` */
export function unversioned(reference) {
  return reference?.replace(/\/_history\/[^/]+$/, '') ?? '';
}

/**
 * @typedef {{ reference: string, disposition: 'released' | 'redacted' | 'withheld', paths: string[], rules: ReturnType<typeof ruleOf>[], breakGlass: boolean, part2: boolean }} ResourceOutcome
 */

const RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;

/**
 * The resources one entity accounts for. An entity with a disposition names one resource (`what`) or, in
 * the compact form of query events, many: each `detail` whose type is a resource type lists space-separated
 * `id/_history/version` items that share the entity's disposition, paths and rules.
 * @param {any} entity an AuditEvent.entity
 * @returns {ResourceOutcome[]}
 */
export function resourcesOf(entity) {
  const disposition = ext(entity, EXT.disposition)[0]?.valueCode;
  if (!disposition) return [];
  const outcome = (reference) => ({
    reference,
    disposition,
    paths: ext(entity, EXT.redactedPath).map((x) => x.valueString),
    rules: ext(entity, EXT.rule).map(ruleOf),
    breakGlass: ext(entity, EXT.breakTheGlass).length > 0,
    part2: (entity.securityLabel ?? []).some((l) => l.code === '42CFRPart2'),
  });
  const references = typeof entity.what?.reference === 'string' ? [entity.what.reference] : [];
  for (const d of entity.detail ?? []) {
    if (!RESOURCE_TYPE.test(d.type ?? '')) continue;
    for (const item of (d.valueString ?? '').split(' ')) if (item) references.push(`${d.type}/${item}`);
  }
  return references.map(outcome);
}

/** @param {any} event an AuditEvent */
export function summarise(event) {
  const agents = event.agent ?? [];
  const observer = event.source?.observer;
  const typeCode = (a) => a.type?.coding?.[0];
  const clientAgent = agents.find((a) => typeCode(a)?.system === DCM && !sameWho(a.who, observer));
  const userAgent = agents.find((a) => typeCode(a)?.system === PARTICIPATION && typeCode(a)?.code === 'IRCP');
  const orgAgent = agents.find((a) => typeCode(a)?.system === ROLE_CLASS && typeCode(a)?.code === 'PROV');
  const entities = event.entity ?? [];
  const patientEntity = entities.find((e) => e.role?.system === OBJECT_ROLE && e.role.code === '1');
  const requestIdEntity = entities.find((e) => e.type?.system === BALP_ENTITY_TYPE && e.type.code === 'XrequestId');
  const requestIdDetail = entities.flatMap((e) => e.detail ?? []).find((d) => d.type === 'X-Request-Id');
  const queryEntity = entities.find((e) => e.role?.system === OBJECT_ROLE && e.role.code === '24');
  const consentEntity = entities.find((e) => e.type?.code === 'Consent');

  /** @type {ResourceOutcome[]} */
  const resources = entities.flatMap(resourcesOf);
  const count = (d) => resources.filter((r) => r.disposition === d).length;
  const subtype = event.subtype?.[0]?.code ?? '';
  const kind = event.type?.code === 'rest' ? 'rest' : subtype === 'AuthZ-Consent' ? 'consent-decision' : 'other';
  const purposes = (event.purposeOfEvent ?? []).flatMap((p) => (p.coding ?? []).map((c) => c.code)).filter(Boolean);
  const patientRef = patientEntity?.what?.reference;
  return {
    id: event.id,
    recorded: event.recorded,
    kind,
    interaction: subtype,
    outcome: String(event.outcome ?? ''),
    outcomeText: OUTCOMES[event.outcome] ?? String(event.outcome ?? ''),
    outcomeDesc: event.outcomeDesc,
    refused: kind === 'rest' && String(event.outcome) !== '0',
    patient: patientRef?.startsWith('Patient/') ? patientRef.slice('Patient/'.length) : undefined,
    requestId: requestIdEntity?.what?.identifier?.value ?? requestIdDetail?.valueString,
    query: decodeQuery(queryEntity?.query),
    consent: consentEntity?.what?.reference,
    client: whoText(clientAgent?.who),
    user: whoText(userAgent?.who),
    requester: whoText(userAgent?.who) || whoText(clientAgent?.who),
    organization: whoText(orgAgent?.who),
    purposes,
    breakGlass: ext(event, EXT.breakTheGlass)[0]?.valueCode,
    ignored: ext(event, EXT.rule).map(ruleOf),
    resources,
    counts: { released: count('released'), redacted: count('redacted'), withheld: count('withheld') },
  };
}

/** @param {string[]} codes */
export function purposeText(codes) {
  return codes.map((c) => (PURPOSES[c] ? `${c} (${PURPOSES[c]})` : c)).join(', ');
}

/** One line for a trace entry, as `$disclosure-decision` words it (src/enforce/operations.ts traceReasons). */
export function ruleText(r) {
  return `${r.layer} ${r.rule}${r.provision ? ` ${r.provision}` : ''}${r.ground ? ` (${r.ground})` : ''}: ${r.effect} — ${r.reason}`;
}

/** Labels the gateway computed from a resource's codes (SPEC §4.7), worded for the "why" view:
 * `ETHUD (rule set substance-use, from http://hl7.org/fhir/sid/icd-10-cm|F10.20)`. */
export function computedLabelsText(rules) {
  return rules
    .filter((r) => r.layer === 'security-label')
    .map((r) => {
      const m = /^computed label (\S+) from (\S+)$/.exec(r.reason);
      const ruleSet = r.rule.replace(/^label:/, '');
      return m ? `${m[1]} (rule set ${ruleSet}, from ${m[2]})` : `${r.reason} (rule set ${ruleSet})`;
    });
}

/** An auditor's (or the console's own) read of audit records: every AuditEvent search is itself audited,
 * naming the events it released, so these are told apart from disclosures of clinical data. */
export function isAuditRecordRead(s) {
  if (s.kind !== 'rest') return false;
  if (s.resources.length > 0) return s.resources.every((r) => r.reference.startsWith('AuditEvent/'));
  return /\/AuditEvent(?:[/?]|$)/.test(s.query ?? '');
}

/** The id of the FHIR Task that records an auditor's review of a break-the-glass event. */
export function reviewTaskId(eventId) {
  return `btg-review-${eventId}`;
}
