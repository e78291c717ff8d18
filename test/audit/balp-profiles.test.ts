// Issue 13: every AuditEvent the gateway writes validates against the IHE BALP profiles it claims, using the
// published StructureDefinitions (fixtures/ig/balp) with @medplum/core's validator plus the slice checks
// of test/audit/balp.ts. The validator is first shown to accept the IG's own examples and to refuse broken ones.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AuditEvent, CodeSystem } from '@medplum/fhirtypes';
import { BALP_PROFILE } from '../../src/audit/build.ts';
import { demoResources, demoSamplePaths } from '../../src/embedded/demo-data.ts';
import { personaClaims, personaNames } from '../../src/embedded/personas.ts';
import { journalEvents } from '../reliability/support.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';
import { BALP_BASE, BALP_DIR, balpProblems, balpProfiles } from './balp.ts';
import { auditEventProblems } from './validate.ts';

const examples = readdirSync(BALP_DIR).filter((f) => f.startsWith('AuditEvent-'));
const example = (file: string): AuditEvent => JSON.parse(readFileSync(join(BALP_DIR, file), 'utf8')) as AuditEvent;
const agentOfType = (e: AuditEvent, code: string) => e.agent.filter((a) => a.type?.coding?.[0]?.code === code);

describe('BALP profiles as published (fixtures/ig/balp)', () => {
  test('the profiles the gateway claims are all published, with snapshots', () => {
    for (const url of Object.values(BALP_PROFILE)) assert.ok(balpProfiles().get(url)?.snapshot?.element?.length, url);
  });

  for (const file of examples) {
    test(`IG example ${file} validates against the profile it claims`, () => {
      const event = example(file);
      assert.ok(event.meta?.profile?.some((p) => p.startsWith(BALP_BASE)));
      assert.deepEqual(balpProblems(event), []);
    });
  }

  const broken: { name: string; file: string; breakIt: (e: AuditEvent) => void; problem: RegExp }[] = [
    { name: 'PatientRead without its patient entity', file: 'AuditEvent-ex-auditBasicReadServer.json', breakIt: (e) => { e.entity = e.entity?.filter((x) => x.role?.code !== '1'); }, problem: /slice 'patient'/ },
    { name: 'PatientRead claimed by a failure', file: 'AuditEvent-ex-auditBasicReadServer.json', breakIt: (e) => { e.outcome = '4'; }, problem: /outcome: Value did not match expected pattern/ },
    { name: 'Read with a search subtype', file: 'AuditEvent-ex-auditBasicReadServer.json', breakIt: (e) => { e.subtype = [{ system: 'http://hl7.org/fhir/restful-interaction', code: 'search-type' }]; }, problem: /subtype:anyRead: 0 members/ },
    { name: 'Read whose client agent has no network', file: 'AuditEvent-ex-auditBasicReadServer.json', breakIt: (e) => { for (const a of agentOfType(e, '110152')) delete a.network; }, problem: /agent:client\.network: required/ },
    { name: 'Read whose user is not the requestor', file: 'AuditEvent-ex-auditBasicReadServer.json', breakIt: (e) => { for (const a of agentOfType(e, 'IRCP')) a.requestor = false; }, problem: /agent:user\.requestor: does not match/ },
    { name: 'Query whose query entity has no query', file: 'AuditEvent-ex-auditBasicQueryGetServer.json', breakIt: (e) => { for (const x of e.entity ?? []) if (x.role?.code === '24') delete x.query; }, problem: /entity:query\.query: required/ },
    { name: 'AuthZconsent with an entity outside its closed slicing', file: 'AuditEvent-ex-auditAuthZconsent.json', breakIt: (e) => { e.entity?.push({ what: { reference: 'Observation/x' }, type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2' } }); }, problem: /slicing is closed/ },
    { name: 'AuthZconsent whose authorizer is not the audit source', file: 'AuditEvent-ex-auditAuthZconsent.json', breakIt: (e) => { e.source.observer = { display: 'another system' }; }, problem: /val-audit-source/ },
  ];
  for (const b of broken) {
    test(`refused: ${b.name}`, () => {
      const event = example(b.file);
      b.breakIt(event);
      assert.match(balpProblems(event).join('\n'), b.problem);
    });
  }
  test('refused: a claimed BALP profile that is not published', () => {
    const event = example('AuditEvent-ex-auditBasicReadServer.json');
    event.meta = { profile: [`${BALP_BASE}IHE.BasicAudit.NoSuchThing`] };
    assert.match(balpProblems(event).join('\n'), /not a published BALP profile/);
  });
});

describe('every AuditEvent the gateway writes validates against the BALP profiles it claims', () => {
  let h: Harness;
  let events: AuditEvent[];
  before(async () => {
    h = await startHarness({ resources: demoResources() });
    // Each demo persona's sample request, plus the other read surfaces and refusals.
    const extra: [claims: Record<string, unknown>, path: string, method?: string, body?: unknown][] = [
      [personaClaims('clinician'), 'Observation/o-inline'],
      [personaClaims('clinician'), 'Patient/p1/Observation'],
      [personaClaims('clinician'), 'Observation/o-inline/_history'],
      [personaClaims('clinician'), 'Patient/p1/$everything'],
      [personaClaims('clinician'), '', 'POST', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Observation?patient=p1' } }] }],
      [{ sub: 'p1', client_id: 'p1-app', fhirUser: 'Patient/p1', patient: 'p1', scope: 'patient/*.rs' }, 'Observation?patient=p2'],
      [{ sub: 'dr', client_id: 'ehr', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: pou('TREAT') }, 'Observation'],
    ];
    const requests = [
      ...personaNames.map((name) => [{ ...personaClaims(name), client_id: `persona-${name}` }, demoSamplePaths[name]] as const),
      ...extra,
    ];
    for (const [claims, path, method, body] of requests) {
      const r = await h.request(path ?? '', { token: await h.token(claims), method, body });
      assert.ok(r.status < 500, `${path}: ${r.status}`);
    }
    events = await journalEvents(h.auditDir);
  });
  after(() => h.close());

  test('no event has a problem (R4, BALP, gateway extensions)', () => {
    assert.ok(events.length > 10);
    const problems = events.flatMap((e) => auditEventProblems(e).map((p) => `${e.subtype?.[0]?.code} ${e.outcome}: ${p}`));
    assert.deepEqual(problems, []);
  });

  test('the run exercised every profile the gateway claims, and failures claim none', () => {
    const claimed = new Set(events.flatMap((e) => e.meta?.profile ?? []));
    for (const url of [BALP_PROFILE.patientRead, BALP_PROFILE.patientQuery, BALP_PROFILE.query, BALP_PROFILE.authzConsent]) assert.ok(claimed.has(url), `no event claims ${url}`);
    for (const e of events) if (e.type?.code === 'rest' && e.outcome !== '0') assert.equal(e.meta?.profile, undefined);
  });

  test('every BALP code the gateway writes is defined by the published BALP CodeSystem it names', () => {
    const systems = new Map<string, Set<string>>();
    for (const file of readdirSync(BALP_DIR).filter((f) => f.startsWith('CodeSystem-'))) {
      const cs = JSON.parse(readFileSync(join(BALP_DIR, file), 'utf8')) as CodeSystem;
      systems.set(cs.url as string, new Set((cs.concept ?? []).map((c) => c.code as string)));
    }
    const written: string[] = [];
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (node && typeof node === 'object') {
        const { system, code } = node as { system?: unknown; code?: unknown };
        if (typeof system === 'string' && system.startsWith('https://profiles.ihe.net/ITI/BALP/') && typeof code === 'string') written.push(`${system}|${code}`);
        Object.values(node).forEach(walk);
      }
    };
    walk(events);
    assert.ok(written.length > 0);
    for (const coding of new Set(written)) {
      const [system, code] = coding.split('|');
      assert.ok(systems.get(system)?.has(code), `${coding} is not defined by the published CodeSystem`);
    }
  });
});
