import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { getReferenceString } from '@medplum/core';
import fc from 'fast-check';
import type { AuditEvent, DiagnosticReport, Observation, Patient } from '@medplum/fhirtypes';
import {
  AUDIT_ENTITY_TYPE,
  BALP_AUTHZ_SUBTYPE,
  BALP_ENTITY_TYPE,
  BALP_PROFILE,
  REQUEST_ID_DETAIL,
  RESOURCE_TYPES,
  RESTFUL_INTERACTION,
  buildAuditEvents,
} from '../../src/audit/build.ts';
import {
  DG_EXT_AUDIT_BREAK_THE_GLASS,
  DG_EXT_AUDIT_DISPOSITION,
  DG_EXT_AUDIT_REDACTED_PATH,
  DG_EXT_AUDIT_RULE,
} from '../../src/audit/extensions.ts';
import type { DisclosureRecord, Interaction } from '../../src/audit/record.ts';
import type { TraceEntry } from '../../src/decide/types.ts';
import { DG_CODES, V3_ACT_CODE, V3_ACT_REASON } from '../../src/fhir/systems.ts';
import { asRedacted, asReleased, asWithheld, CONSENT_DENY_TRACE, GATEWAY, consoleModel, context, entitiesByRole, entityOf, ext, outcomeOf, patient, record, requester, resourcesOf, sub } from './fixtures.ts';
import { auditEventProblems, loadAuditProfiles, validateR4 } from './validate.ts';

function build(r: DisclosureRecord): AuditEvent[] {
  const events = buildAuditEvents(r, GATEWAY);
  for (const event of events) assert.deepEqual(auditEventProblems(event), [], `event ${event.subtype?.[0]?.code} must be valid`);
  return events;
}

describe('profiles/audit artefacts', () => {
  test('every StructureDefinition, ValueSet and CodeSystem is valid R4', () => {
    const { all } = loadAuditProfiles();
    assert.ok(all.length >= 7);
    for (const resource of all) assert.deepEqual(validateR4(resource), [], `${resource.resourceType}/${resource.id}`);
  });

  test('the extension check catches misuse (wrong context, code outside its value set, undefined extension, missing part)', () => {
    const [event] = buildAuditEvents(record({ patients: [patient('P1', { dispositions: [asWithheld({ reference: 'Observation/o1', trace: [CONSENT_DENY_TRACE] })] })] }), GATEWAY);
    const misuse: AuditEvent = {
      ...event,
      extension: [
        { url: DG_EXT_AUDIT_DISPOSITION, valueCode: 'released' },
        { url: DG_EXT_AUDIT_BREAK_THE_GLASS, valueCode: 'sometimes' },
        { url: 'https://disclosure-gateway.org/fhir/StructureDefinition/made-up', valueString: 'x' },
        { url: DG_EXT_AUDIT_RULE, extension: [{ url: 'layer', valueCode: 'consent' }] },
      ],
    };
    const problems = auditEventProblems(misuse).join('\n');
    assert.match(problems, /audit-disposition not allowed on AuditEvent/);
    assert.match(problems, /code 'sometimes' not in/);
    assert.match(problems, /no StructureDefinition for .*made-up/);
    assert.match(problems, /sub-extension 'rule' missing/);
  });
});

describe('per interaction: one BALP-shaped event per request and patient', () => {
  const released = [asReleased({ reference: 'Observation/o1', versionId: '3' })];
  const rows: {
    name: string;
    interaction: Interaction;
    query: string;
    subtype: string;
    action: AuditEvent['action'];
    /** BALP profile claimed; none where the subtype is outside the profile's value set (Query: AllSearchVS). */
    profile: string | undefined;
  }[] = [
    { name: 'read', interaction: 'read', query: '/fhir/Observation/o1', subtype: 'read', action: 'R', profile: BALP_PROFILE.patientRead },
    { name: 'vread', interaction: 'vread', query: '/fhir/Observation/o1/_history/3', subtype: 'vread', action: 'R', profile: BALP_PROFILE.patientRead },
    { name: 'search', interaction: 'search-type', query: '/fhir/Observation?patient=P1', subtype: 'search-type', action: 'E', profile: BALP_PROFILE.patientQuery },
    { name: 'compartment search', interaction: 'search-compartment', query: '/fhir/Patient/P1/Observation', subtype: 'search-type', action: 'E', profile: BALP_PROFILE.patientQuery },
    { name: 'instance history', interaction: 'history-instance', query: '/fhir/Observation/o1/_history', subtype: 'history-instance', action: 'E', profile: undefined },
    { name: 'batch', interaction: 'batch', query: '/fhir', subtype: 'batch', action: 'E', profile: undefined },
    { name: '$everything', interaction: 'operation', query: '/fhir/Patient/P1/$everything', subtype: 'operation', action: 'E', profile: undefined },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const events = build(record({ interaction: row.interaction, query: row.query, method: row.interaction === 'batch' ? 'POST' : 'GET', patients: [patient('P1', { dispositions: released })] }));
      assert.equal(events.length, 1);
      const [event] = events;
      assert.equal(event.type?.code, 'rest');
      assert.deepEqual(event.subtype, [{ system: RESTFUL_INTERACTION, code: row.subtype }]);
      assert.equal(event.action, row.action);
      assert.equal(event.outcome, '0');
      assert.equal(event.recorded, '2025-03-01T10:00:00.000Z');
      assert.deepEqual(event.meta?.profile, row.profile === undefined ? undefined : [row.profile]);
      assert.equal(entitiesByRole(event, '1')[0]?.what?.reference, 'Patient/P1');
      const transaction = event.entity?.find((e) => e.type?.system === BALP_ENTITY_TYPE && e.type.code === 'XrequestId');
      assert.equal(transaction?.what?.identifier?.value, 'req-1');
      assert.equal(outcomeOf(event, 'Observation/o1/_history/3')?.disposition, 'released', 'released resource recorded with its version');
      const resources = entitiesByRole(event, '4');
      assert.equal(resources.length, 1);
      assert.equal(ext(resources[0].extension, DG_EXT_AUDIT_DISPOSITION)[0]?.valueCode, 'released');
      const queries = entitiesByRole(event, '24');
      if (row.action === 'R') {
        assert.equal(queries.length, 0, 'BALP Read has no query entity');
        assert.equal(resources[0].what?.reference, 'Observation/o1/_history/3');
        assert.deepEqual(resources[0].type, { system: AUDIT_ENTITY_TYPE, code: '2', display: 'System Object' });
      } else {
        assert.equal(queries.length, 1);
        assert.equal(Buffer.from(queries[0].query ?? '', 'base64').toString('utf8'), `${row.interaction === 'batch' ? 'POST' : 'GET'} ${row.query}`);
        // Compact form: the versioned references of one outcome listed per resource type.
        assert.deepEqual(resources[0].detail, [{ type: 'Observation', valueString: 'o1/_history/3' }]);
        assert.equal(resources[0].what, undefined);
      }
      // Agents: the client app by client_id and address, the gateway, the requester with token id and purpose.
      const client = event.agent.find((a) => a.who?.identifier?.value === 'ehr-app');
      assert.equal(client?.who?.identifier?.system, 'https://issuer.test');
      assert.deepEqual(client?.network, { address: '127.0.0.1', type: '2' });
      assert.equal(client?.requestor, false);
      const server = event.agent.find((a) => a.who?.reference === 'Device/disclosure-gateway');
      assert.deepEqual(server?.network, { address: 'https://gateway.test/fhir', type: '5' });
      const user = requester(event);
      assert.equal(user?.who?.reference, 'Practitioner/dr-a');
      assert.equal(user?.type?.coding?.[0]?.code, 'IRCP');
      assert.deepEqual(user?.policy, ['jti-123']);
      assert.deepEqual(user?.purposeOfUse, [{ coding: [{ system: V3_ACT_REASON, code: 'TREAT' }] }]);
      assert.equal(event.agent.find((a) => a.who?.reference === 'Organization/hospital')?.requestor, false);
      assert.equal(event.source.observer.reference, 'Device/disclosure-gateway');
      assert.equal(event.source.site, 'gateway.test');
    });
  }

  test('refused before read: outcome 4, the requested patient named, no profile claimed', () => {
    const [event, ...rest] = build(
      record({ outcome: 'refused', httpStatus: 403, outcomeDesc: 'request refused', patients: [], requestedPatients: ['P2'], query: '/fhir/Observation?patient=P2' }),
    );
    assert.equal(rest.length, 0);
    assert.equal(event.outcome, '4');
    assert.equal(event.outcomeDesc, 'request refused');
    assert.equal(event.meta, undefined);
    assert.equal(entitiesByRole(event, '1')[0]?.what?.reference, 'Patient/P2');
    assert.equal(entitiesByRole(event, '4').length, 0, 'no data was read');
  });

  test('upstream error: outcome 8, no profile claimed', () => {
    const [event] = build(record({ outcome: 'error', httpStatus: 502, outcomeDesc: 'upstream failed', patients: [patient('P1')] }));
    assert.equal(event.outcome, '8');
    assert.equal(event.meta, undefined);
  });

  test('a request that touched no patient still gets one event, without a patient entity', () => {
    const events = build(record({ interaction: 'search-type', query: '/fhir/Organization?name=x', resourceType: 'Organization', patients: [] }));
    assert.equal(events.length, 1);
    assert.equal(entitiesByRole(events[0], '1').length, 0);
    assert.deepEqual(events[0].meta?.profile, [BALP_PROFILE.query]);
  });

  test('bad token: no context, the client id still recorded', () => {
    const [event] = build(record({ context: undefined, clientId: 'unknown-app', outcome: 'refused', httpStatus: 401, patients: [] }));
    assert.equal(event.agent.find((a) => a.who?.identifier?.value === 'unknown-app')?.requestor, true);
    assert.equal(event.outcome, '4');
  });

  test('a search over two patients: one event per patient, each with only its own resources', () => {
    const events = build(
      record({
        interaction: 'search-type',
        patients: [patient('P1', { dispositions: [asReleased({ reference: 'Observation/a', versionId: '1' })] }), patient('P2', { dispositions: [asReleased({ reference: 'Observation/b', versionId: '1' })] })],
      }),
    );
    assert.deepEqual(events.map((e) => entitiesByRole(e, '1')[0]?.what?.reference), ['Patient/P1', 'Patient/P2']);
    assert.deepEqual(resourcesOf(events[0]).map((r) => r.reference), ['Observation/a/_history/1']);
    assert.deepEqual(resourcesOf(events[1]).map((r) => r.reference), ['Observation/b/_history/1']);
    assert.notEqual(events[0].id, events[1].id);
  });

  test('a backend (system) client is itself the requester and carries the purpose of use', () => {
    const ctx = context({ fhirUser: undefined, subject: undefined, organization: undefined, kinds: new Set(['system']), purposeOfUse: ['HOPERAT'] });
    const [event] = build(record({ context: ctx, patients: [patient('P1')] }));
    const client = requester(event);
    assert.equal(client?.who?.identifier?.value, 'ehr-app');
    assert.deepEqual(client?.policy, ['jti-123']);
    assert.equal(client?.purposeOfUse?.[0]?.coding?.[0]?.code, 'HOPERAT');
    assert.equal(event.agent.filter((a) => a.requestor).length, 1);
  });
});

describe('per rule layer', () => {
  function ruleOf(extension: NonNullable<AuditEvent['extension']>[number]): Record<string, unknown> {
    return {
      layer: sub(extension, 'layer')?.valueCode,
      effect: sub(extension, 'effect')?.valueCode,
      rule: sub(extension, 'rule')?.valueString,
      provision: sub(extension, 'provision')?.valueString,
      ground: sub(extension, 'ground')?.valueCoding?.code,
      reason: sub(extension, 'reason')?.valueString,
    };
  }

  test('consent permit → AuthZconsent event, outcome 0, naming consent and provision', () => {
    const events = build(
      record({
        patients: [
          patient('P1', {
            dispositions: [asReleased({ reference: 'Observation/o1', versionId: '1' })],
            consentDecisions: [{ consent: 'Consent/c1', provision: 'provision', effect: 'permit', reason: 'the consent permits treatment' }],
          }),
        ],
      }),
    );
    assert.equal(events.length, 2);
    const authz = events[1];
    assert.deepEqual(authz.subtype, [{ system: BALP_AUTHZ_SUBTYPE, code: 'AuthZ-Consent' }]);
    assert.equal(authz.type?.code, '110113');
    assert.equal(authz.action, 'E');
    assert.equal(authz.outcome, '0');
    assert.match(authz.outcomeDesc ?? '', /^Consent\/c1 provision: permit — the consent permits treatment$/);
    const consent = entityOf(authz, 'Consent/c1');
    assert.deepEqual(consent?.type, { system: RESOURCE_TYPES, code: 'Consent' });
    assert.deepEqual(consent?.detail, [{ type: REQUEST_ID_DETAIL, valueString: 'req-1' }]);
    assert.equal(entitiesByRole(authz, '1')[0]?.what?.reference, 'Patient/P1');
    assert.ok(authz.entity?.some((e) => e.what?.identifier?.value === 'urn:ietf:params:oauth:jti:jti-123'));
    assert.ok(authz.agent.some((a) => a.type?.coding?.[0]?.code === 'authserver' && a.who?.reference === 'Device/disclosure-gateway'));
    assert.deepEqual(authz.meta?.profile, [BALP_PROFILE.authzConsent]);
  });

  test('consent deny → AuthZconsent outcome 8, and the withheld resource names consent and provision', () => {
    const events = build(
      record({
        patients: [
          patient('P1', {
            dispositions: [asWithheld({ reference: 'Observation/o2', versionId: '4', trace: [CONSENT_DENY_TRACE] })],
            consentDecisions: [{ consent: 'c1', provision: 'provision.provision[0]', effect: 'deny', reason: 'the consent denies this actor' }],
          }),
        ],
      }),
    );
    const [disclosure, authz] = events;
    assert.equal(authz.outcome, '8');
    assert.ok(entityOf(authz, 'Consent/c1'), 'a bare consent id becomes a reference');
    assert.match(authz.outcomeDesc ?? '', /Consent\/c1 provision\.provision\[0\]: deny/);
    const withheld = entitiesByRole(disclosure, '4').find((e) => e.detail?.[0]?.valueString === 'o2/_history/4');
    assert.equal(ext(withheld?.extension, DG_EXT_AUDIT_DISPOSITION)[0]?.valueCode, 'withheld');
    assert.deepEqual(ruleOf(ext(withheld?.extension, DG_EXT_AUDIT_RULE)[0]), {
      layer: 'consent',
      effect: 'deny',
      rule: 'Consent/c1',
      provision: 'provision.provision[0]',
      ground: undefined,
      reason: 'the consent denies this actor',
    });
  });

  const withholdRows: { name: string; trace: TraceEntry }[] = [
    { name: 'legal restriction', trace: { layer: 'legal-restriction', effect: 'deny', rule: 'Consent/court-order', provision: 'provision', reason: 'a legal restriction denies this requester' } },
    { name: 'harm determination with its ground', trace: { layer: 'harm-determination', effect: 'deny', rule: 'Flag/h1', ground: 'harm-life-safety', reason: 'withheld from the patient on a harm determination' } },
    { name: 'Part 2 without a consent', trace: { layer: 'part2', effect: 'deny', rule: 'part2', reason: '42 CFR Part 2 data needs a consent' } },
    { name: 'scope', trace: { layer: 'scope', effect: 'deny', rule: 'scope', reason: 'outside the granted scopes' } },
    { name: 'implicit policy', trace: { layer: 'implicit-policy', effect: 'deny', rule: 'implicit:basic-normal', reason: 'restricted data is never released by the implicit policy' } },
  ];
  for (const row of withholdRows) {
    test(`withheld by ${row.name}: the reason is recorded on the entity`, () => {
      const [event] = build(record({ patients: [patient('P1', { dispositions: [asWithheld({ reference: 'DiagnosticReport/d1', versionId: '2', trace: [row.trace] })] })] }));
      const entity = entitiesByRole(event, '4')[0];
      assert.deepEqual(entity?.detail, [{ type: 'DiagnosticReport', valueString: 'd1/_history/2' }]);
      assert.equal(outcomeOf(event, 'DiagnosticReport/d1/_history/2')?.disposition, 'withheld');
      const rule = ruleOf(ext(entity.extension, DG_EXT_AUDIT_RULE)[0]);
      assert.equal(rule.layer, row.trace.layer);
      assert.equal(rule.rule, row.trace.rule);
      assert.equal(rule.reason, row.trace.reason);
      assert.equal(rule.ground, row.trace.ground);
      if (row.trace.ground !== undefined) {
        assert.equal(sub(ext(entity.extension, DG_EXT_AUDIT_RULE)[0], 'ground')?.valueCoding?.system, DG_CODES);
      }
    });
  }

  test('redacted: the paths removed and the rule, never the values', () => {
    const [event] = build(
      record({
        patients: [
          patient('P1', {
            // The same version decided twice in a request (an include and a match): the redaction is what counts.
            dispositions: [
              asReleased({ reference: 'Observation/o5', versionId: '1' }),
              asRedacted({ reference: 'Observation/o5', versionId: '1', paths: ['note[0]', 'component[1].valueQuantity'], trace: [{ layer: 'consent', effect: 'redact', rule: 'Consent/c2', reason: 'inline label above clearance' }] }),
            ],
          }),
        ],
      }),
    );
    const outcomes = resourcesOf(event).filter((r) => r.reference === 'Observation/o5/_history/1');
    assert.equal(outcomes.length, 1, 'released and redacted collapse into one outcome');
    assert.equal(outcomes[0].disposition, 'redacted');
    assert.deepEqual(outcomes[0].paths, ['note[0]', 'component[1].valueQuantity']);
    const entity = entitiesByRole(event, '4')[0];
    assert.deepEqual(ext(entity.extension, DG_EXT_AUDIT_REDACTED_PATH).map((e) => e.valueString), ['note[0]', 'component[1].valueQuantity']);
  });

  test('Part 2 released under break-the-glass: labelled, flagged on the entity and the event, BTG purpose', () => {
    const ctx = context({ purposeOfUse: ['BTG'], breakGlass: { inEffect: true, requested: true }, grantedScopes: ['user/*.rs', 'btg'] });
    const [event] = build(record({ context: ctx, patients: [patient('P1', { dispositions: [asReleased({ reference: 'Observation/o7', versionId: '1', part2: true, breakGlassUsed: true })] })] }));
    const entity = entitiesByRole(event, '4')[0];
    assert.deepEqual(outcomeOf(event, 'Observation/o7/_history/1'), { reference: 'Observation/o7/_history/1', disposition: 'released', paths: [], rules: [], breakGlass: true, part2: true });
    assert.deepEqual(entity?.securityLabel, [{ system: V3_ACT_CODE, code: '42CFRPart2' }]);
    assert.equal(ext(entity?.extension, DG_EXT_AUDIT_BREAK_THE_GLASS)[0]?.valueCode, 'btg-released');
    assert.equal(ext(event.extension, DG_EXT_AUDIT_BREAK_THE_GLASS)[0]?.valueCode, 'btg-released');
    assert.deepEqual(requester(event)?.purposeOfUse, [{ coding: [{ system: V3_ACT_REASON, code: 'BTG' }] }]);
  });

  const btgRows: { name: string; r: Partial<DisclosureRecord>; flag: string | undefined }[] = [
    { name: 'in effect, nothing needed it', r: { context: context({ purposeOfUse: ['BTG'], breakGlass: { inEffect: true, requested: true } }) }, flag: 'btg-in-effect' },
    { name: 'asked without the scope (attempt)', r: { context: context({ breakGlass: { inEffect: false, requested: true } }), breakGlassAttempt: true }, flag: 'btg-attempt' },
    { name: 'not asked', r: {}, flag: undefined },
  ];
  for (const row of btgRows) {
    test(`break-the-glass review flag: ${row.name}`, () => {
      const [event] = build(record({ ...row.r, patients: [patient('P1', { consentDecisions: [{ consent: 'Consent/c1', effect: 'deny', reason: 'denied' }] })] }));
      assert.equal(ext(event.extension, DG_EXT_AUDIT_BREAK_THE_GLASS)[0]?.valueCode, row.flag);
    });
  }

  test('ignored rules are recorded with their reason', () => {
    const ignored: TraceEntry[] = [
      { layer: 'harm-determination', effect: 'ignored', rule: 'Flag/h9', reason: 'the author has no care relationship with the patient' },
      { layer: 'consent', effect: 'ignored', rule: 'Consent/c9', reason: 'the consent is not computable' },
    ];
    const [event] = build(record({ patients: [patient('P1', { dispositions: [asReleased({ reference: 'DiagnosticReport/d1', versionId: '1' })], ignored })] }));
    const rules = ext(event.extension, DG_EXT_AUDIT_RULE).map(ruleOf);
    assert.deepEqual(
      rules.map((r) => [r.rule, r.effect, r.reason]),
      ignored.map((i) => [i.rule, 'ignored', i.reason]),
    );
  });
});

describe('no patient data content in any event', () => {
  const MARKERS = ['MARKER-NAME-Zq81', 'MARKER-NOTE-Yx42', 'MARKER-VALUE-Wp93', 'MARKER-CONCLUSION-Vb07'];
  const p1: Patient = { resourceType: 'Patient', id: 'P1', meta: { versionId: '1' }, name: [{ family: MARKERS[0] }] };
  const o1: Observation = {
    resourceType: 'Observation',
    id: 'o1',
    meta: { versionId: '2' },
    status: 'final',
    code: { text: 'x' },
    subject: { reference: 'Patient/P1' },
    note: [{ text: MARKERS[1] }],
    valueString: MARKERS[2],
  };
  const d1: DiagnosticReport = { resourceType: 'DiagnosticReport', id: 'd1', meta: { versionId: '5' }, status: 'final', code: { text: 'x' }, conclusion: MARKERS[3] };

  test('a record derived from resources holding markers yields events without them', () => {
    const ref = (r: Observation | DiagnosticReport | Patient): { reference: string; versionId?: string } => ({ reference: getReferenceString(r) as string, versionId: r.meta?.versionId });
    const r = record({
      patients: [
        patient('P1', {
          dispositions: [
            asRedacted({ ...ref(o1), paths: ['note[0]', 'valueString'], trace: [{ layer: 'consent', effect: 'redact', rule: 'Consent/c1', reason: 'inline label' }] }),
            asReleased(ref(p1)),
            asWithheld({ ...ref(d1), trace: [{ layer: 'harm-determination', effect: 'deny', rule: 'Flag/h1', ground: 'harm-life-safety', reason: 'harm determination' }] }),
          ],
          consentDecisions: [{ consent: 'Consent/c1', effect: 'permit', reason: 'permitted' }],
        }),
      ],
    });
    const events = build(r);
    assert.equal(outcomeOf(events[0], 'DiagnosticReport/d1/_history/5')?.disposition, 'withheld', 'the references are there');
    const serialised = JSON.stringify(events);
    for (const marker of MARKERS) assert.ok(!serialised.includes(marker), `${marker} must not appear`);
  });

  test('content smuggled into a record at run time is not copied: the builder takes named fields only', () => {
    // What the type forbids, a careless caller might still pass; none of it may reach the event.
    const smuggle = { resource: o1, text: MARKERS[1], value: MARKERS[2] };
    const r = record({
      patients: [
        {
          ...patient('P1'),
          ...{ resource: p1 },
          dispositions: [
            { disposition: 'released', reference: 'Observation/o1', versionId: '2', ...smuggle },
            { disposition: 'withheld', reference: 'DiagnosticReport/d1', trace: [{ ...CONSENT_DENY_TRACE, ...{ resource: d1 } }], ...{ resource: d1 } },
          ],
          consentDecisions: [{ consent: 'Consent/c1', effect: 'deny', reason: 'denied', ...{ resource: p1 } }],
        },
      ],
      ...{ response: { resourceType: 'Bundle', entry: [{ resource: o1 }] } },
    });
    const serialised = JSON.stringify(build(r));
    for (const marker of MARKERS) assert.ok(!serialised.includes(marker), `${marker} must not appear`);
  });
});

describe('ids', () => {
  test('every event has its own id, assigned once at build time', () => {
    const r = record({ patients: [patient('P1', { consentDecisions: [{ consent: 'Consent/c1', effect: 'permit', reason: 'ok' }] }), patient('P2')] });
    const ids = [...buildAuditEvents(r, GATEWAY), ...buildAuditEvents(r, GATEWAY)].map((e) => e.id);
    assert.equal(new Set(ids).size, 6);
    for (const id of ids) assert.match(id ?? '', /^[0-9a-f-]{36}$/);
  });
});

describe('compact form (issue 15)', () => {
  const arbReference = fc.tuple(fc.constantFrom('Observation', 'Condition', 'Binary', 'odd type', ''), fc.string({ maxLength: 12 })).map(([t, id]) => (t ? `${t}/${id}` : id));
  const arbVersion = fc.option(fc.oneof(fc.constantFrom('1', '2', '17'), fc.string({ maxLength: 6 })), { nil: undefined });
  const arbReleased = fc.record({ reference: arbReference, versionId: arbVersion, breakGlassUsed: fc.option(fc.boolean(), { nil: undefined }), part2: fc.option(fc.boolean(), { nil: undefined }) });
  const arbWithheld = fc.record({ reference: arbReference, versionId: arbVersion, trace: fc.constantFrom([CONSENT_DENY_TRACE], [{ ...CONSENT_DENY_TRACE, rule: 'Consent/c2' }]) });
  const arbRecord = fc.record({
    interaction: fc.constantFrom<Interaction>('read', 'vread', 'search-type', 'search-system', 'batch', 'operation'),
    resourceType: fc.option(fc.constantFrom('Observation', 'Patient'), { nil: undefined }),
    released: fc.array(arbReleased, { maxLength: 12 }),
    withheld: fc.array(arbWithheld, { maxLength: 4 }),
  });
  const full = (reference: string, type: string | undefined): string => (reference.includes('/') || type === undefined ? reference : `${type}/${reference}`);

  test('every released and withheld reference comes back, with its version and disposition, whatever it looks like', () => {
    fc.assert(
      fc.property(arbRecord, ({ interaction, resourceType, released, withheld }) => {
        const [event] = buildAuditEvents(record({ interaction, resourceType, patients: [patient('P1', { dispositions: [...released.map(asReleased), ...withheld.map(asWithheld)] })] }), GATEWAY);
        const expected = new Map<string, string>();
        const versioned = (r: { reference: string; versionId?: string }): string => `${full(r.reference, resourceType)}${r.versionId === undefined ? '' : `/_history/${r.versionId}`}`;
        for (const r of released) expected.set(versioned(r), 'released');
        for (const r of withheld) expected.set(versioned(r), 'withheld');
        const read = new Map(resourcesOf(event).map((r) => [r.reference, r.disposition]));
        assert.deepEqual(read, expected);
      }),
      { numRuns: 300 },
    );
  });

  test('the console summarises a compact event: counts, each resource with its disposition and rules, the request id', () => {
    const events = build(
      record({
        patients: [
          patient('P1', {
            dispositions: [
              asReleased({ reference: 'Observation/o1', versionId: '1' }),
              asRedacted({ reference: 'Observation/o2', versionId: '1', paths: ['note[0]'], trace: [{ layer: 'consent', effect: 'redact', rule: 'Consent/c2', reason: 'inline label' }] }),
              asReleased({ reference: 'Condition/c9', versionId: '4' }),
              asWithheld({ reference: 'Observation/o3', versionId: '7', trace: [CONSENT_DENY_TRACE] }),
            ],
            consentDecisions: [{ consent: 'Consent/c1', provision: 'provision.provision[0]', effect: 'deny', reason: 'the consent denies this actor' }],
          }),
        ],
      }),
    );
    const [page, authz] = events.map((e) => consoleModel.summarise(e));
    assert.deepEqual(page.counts, { released: 2, redacted: 1, withheld: 1 });
    assert.deepEqual(
      page.resources.map((r) => [r.reference, r.disposition, r.paths, r.rules.map((x) => x.rule)]),
      [
        ['Observation/o1/_history/1', 'released', [], []],
        ['Condition/c9/_history/4', 'released', [], []],
        ['Observation/o2/_history/1', 'redacted', ['note[0]'], ['Consent/c2']],
        ['Observation/o3/_history/7', 'withheld', [], ['Consent/c1']],
      ],
    );
    assert.equal(page.requestId, 'req-1');
    assert.deepEqual([authz.kind, authz.requestId], ['consent-decision', 'req-1']);
  });

  test('a page: one group entity per outcome, one AuthZconsent event per consent, a resource costs its reference text', () => {
    const id = (i: number): string => `0f9c4a1e-7b2d-4c3a-9e8f-${String(i).padStart(12, '0')}`;
    const page = (n: number): AuditEvent[] => {
      const released = Array.from({ length: n }, (_, i) => asReleased({ reference: `Observation/${id(i)}`, versionId: '1' }));
      const withheld = Array.from({ length: n / 2 }, (_, i) => asWithheld({ reference: `Observation/${id(n + i)}`, versionId: '2', trace: [i % 2 ? CONSENT_DENY_TRACE : { ...CONSENT_DENY_TRACE, rule: 'Consent/c2' }] }));
      const consentDecisions = [
        { consent: 'Consent/c1', provision: 'provision.provision[0]', effect: 'deny' as const, reason: 'code denied' },
        { consent: 'Consent/c1', provision: 'provision', effect: 'permit' as const, reason: 'treatment permitted' },
        { consent: 'Consent/c2', provision: 'provision', effect: 'deny' as const, reason: 'period denied' },
      ];
      return build(record({ patients: [patient('P1', { dispositions: [...released, ...withheld], consentDecisions })] }));
    };
    const events = page(100);
    assert.equal(events.length, 3, 'one PatientQuery event and one AuthZconsent event per consent');
    assert.equal(events[1].outcome, '8', 'a consent that denied anything in the request');
    assert.match(events[1].outcomeDesc ?? '', /^Consent\/c1 provision\.provision\[0\]: deny — code denied; Consent\/c1 provision: permit — treatment permitted$/);
    assert.equal(entitiesByRole(events[0], '4').length, 3, 'released, withheld by c1, withheld by c2');
    assert.equal(resourcesOf(events[0]).length, 150);
    // 150 more resources add their `id/_history/version` text and a separator each, nothing more.
    const size = (e: AuditEvent): number => Buffer.byteLength(JSON.stringify(e));
    const perResource = (size(page(200)[0]) - size(events[0])) / 150;
    assert.ok(perResource <= `${id(0)}/_history/1 `.length, `${perResource} bytes per resource`);
  });
});
