// The auditor console in real headless Chromium against the whole gateway (issue 8): sign-in, timeline,
// filters, break-the-glass review, patient view and the "why" trace. Every expectation about what the
// page shows is read from the AuditEvents the gateway recorded, not written into the test.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import type { AuditEvent, Bundle, Parameters, Task } from '@medplum/fhirtypes';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { verifyJournal } from '../../src/audit/verify.ts';
import { demoResources } from '../../src/embedded/demo-data.ts';
import { personaClaims } from '../../src/embedded/personas.ts';
import { pou, startHarness, type Harness } from '../support/harness.ts';
import { breakGlassOf, clientOf, concernsPatient, isRest, launchChromium, patientOf, purposesOf, screenshot } from './support.ts';
import { resourcesOf } from '../audit/fixtures.ts';

/** The scripted traffic whose audit trail the console must show; each request has its own client id. */
const scripted = [
  { name: 'clinician searches the patient’s observations', client: 'ct-clinician', claims: { sub: 'dr-a', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs', extensions: pou('TREAT') }, path: 'Observation?patient=Patient/p1' },
  { name: 'payer reads encounters', client: 'ct-payer', claims: { sub: 'payer-agent', fhirUser: 'Practitioner/payer-agent', organization: 'Organization/payer', scope: 'user/*.rs', extensions: pou('HPAYMT') }, path: 'Encounter?patient=Patient/p1' },
  { name: 'clinician breaks the glass', client: 'ct-btg', claims: { sub: 'dr-a', fhirUser: 'Practitioner/dr-a', scope: 'user/*.rs btg', extensions: pou('BTG') }, path: 'Observation?patient=Patient/p1' },
  { name: 'patient asks for a report a harm determination withholds', client: 'ct-patient', claims: { sub: 'p1', fhirUser: 'Patient/p1', patient: 'p1', scope: 'patient/*.rs' }, path: 'DiagnosticReport?patient=Patient/p1' },
  { name: 'patient app naming another patient is refused', client: 'ct-other-patient', claims: { sub: 'p1', fhirUser: 'Patient/p1', patient: 'p1', scope: 'patient/*.rs' }, path: 'Observation?patient=Patient/p2' },
] as const;
const scriptedClients = new Set<string>(scripted.map((s) => s.client));

describe('auditor console in headless Chromium', () => {
  let h: Harness;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let root: string;
  let auditorToken: string;
  /** Every AuditEvent the scripted requests produced, as the gateway serves them to an auditor. */
  let recorded: AuditEvent[];

  const restOf = (client: string): AuditEvent[] => recorded.filter((e) => isRest(e) && clientOf(e) === client);

  async function auditTrail(): Promise<AuditEvent[]> {
    const events: AuditEvent[] = [];
    let next: string | undefined = 'AuditEvent?_sort=-date&_count=1000';
    while (next) {
      const page: { status: number; body: Bundle<AuditEvent> } = await h.request(next, { token: auditorToken });
      assert.equal(page.status, 200);
      events.push(...(page.body.entry ?? []).flatMap((e) => (e.resource ? [e.resource] : [])));
      next = page.body.link?.find((l) => l.relation === 'next')?.url;
    }
    return events;
  }

  async function signIn(token: string): Promise<void> {
    await page.goto(`${root}/console#/timeline`);
    await page.evaluate(() => sessionStorage.clear());
    await page.reload();
    await page.fill('#token-input', token);
    await page.click('#sign-in-submit');
    await page.waitForSelector('#view-timeline:not([hidden]) #timeline-events');
    await settled('timeline');
  }

  /** Event ids of the timeline rows, with their client column. */
  /** The view has rendered the current address, not the previous one still on screen before the route runs. */
  async function settled(view: 'timeline' | 'patient' | 'why'): Promise<void> {
    await page.waitForFunction((id) => {
      const container = document.getElementById(`view-${id}`);
      return container?.getAttribute('aria-busy') === 'false' && container.dataset.renderedFor === location.hash;
    }, view);
  }

  async function timelineRows(): Promise<{ id: string; client: string; outcome: string; text: string; btg: boolean }[]> {
    return page.$$eval('#timeline-events tbody tr', (rows) =>
      rows.map((r) => {
        const row = r as HTMLElement;
        return { id: row.dataset.eventId ?? '', client: row.dataset.client ?? '', outcome: row.dataset.outcome ?? '', text: row.textContent ?? '', btg: row.classList.contains('btg-row') };
      }),
    );
  }

  async function applyFilters(fields: Record<string, string>): Promise<void> {
    await signIn(auditorToken);
    for (const [name, value] of Object.entries(fields)) {
      const selector = `#f-${name}`;
      const tag = await page.$eval(selector, (el) => el.tagName);
      if (tag === 'SELECT') await page.selectOption(selector, value);
      else await page.fill(selector, value);
    }
    await page.click('#apply-filters');
    await page.waitForFunction((expected) => location.hash.includes(expected), Object.keys(fields)[0]);
    await settled('timeline');
  }

  before(async () => {
    h = await startHarness({ resources: demoResources(), settings: { AUDIT_FORWARD: 'true' } });
    root = h.base.replace(/\/fhir$/, '');
    auditorToken = await h.token({ ...personaClaims('auditor') });
    for (const s of scripted) {
      const token = await h.token({ ...s.claims, client_id: s.client });
      const response = await h.request(s.path, { token });
      assert.ok(response.status < 500, `${s.name}: ${response.status}`);
    }
    // Journal first, then the upstream: drain the forwarder so the auditor can read every event.
    const forwarder = h.gateway.forwarder;
    assert.ok(forwarder, 'AUDIT_FORWARD must start the forwarder');
    while ((await forwarder.forwardOnce()) > 0);
    assert.equal(forwarder.lag().events, 0);
    recorded = (await auditTrail()).filter((e) => scriptedClients.has(clientOf(e) ?? ''));
    for (const s of scripted) assert.ok(restOf(s.client).length > 0, `${s.name} left no AuditEvent`);
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
    page = await context.newPage();
  });

  after(async () => {
    await context?.close();
    await browser?.close();
    await h?.close();
  });

  test('sign-in is refused without a token, with a non-auditor token and with a forged one', async () => {
    await page.goto(`${root}/console`);
    await page.waitForSelector('#sign-in:not([hidden])');
    const refusals = [
      { name: 'no token', token: '', message: /Paste an auditor access token/ },
      { name: 'token without an auditor scope', token: await h.token({ sub: 'dr-a', client_id: 'ct-not-an-auditor', fhirUser: 'Practitioner/dr-a', scope: 'user/Observation.rs', extensions: pou('TREAT') }), message: /may not read audit events/ },
      { name: 'forged token', token: `${auditorToken.slice(0, -4)}AAAA`, message: /refused this token/ },
    ];
    for (const r of refusals) {
      await page.fill('#token-input', r.token);
      await page.click('#sign-in-submit');
      await page.waitForFunction(() => (document.getElementById('sign-in-error')?.textContent ?? '') !== '');
      assert.match((await page.textContent('#sign-in-error')) ?? '', r.message, r.name);
      assert.equal(await page.isVisible('#nav'), false, `${r.name}: navigation shown`);
      assert.equal(await page.$$eval('main .view:not([hidden])', (v) => v.length), 0, `${r.name}: a view is shown`);
      assert.equal(await page.evaluate(() => sessionStorage.length), 0, `${r.name}: token stored`);
      await page.evaluate(() => {
        document.getElementById('sign-in-error')!.textContent = '';
      });
    }
    // No dev issuer in this gateway: no demo-token button.
    assert.equal(await page.isVisible('#demo-token'), false);
    await page.fill('#token-input', '');
    await screenshot(page, 'sign-in');

    const status = await fetch(`${root}/console/api/journal-status`);
    assert.equal(status.status, 401);
    const nonAuditor = await fetch(`${root}/console/api/journal-status`, { headers: { authorization: `Bearer ${refusals[1].token}` } });
    assert.equal(nonAuditor.status, 403);
  });

  test('the timeline shows the events the scripted requests produced, with the chart and journal integrity', async () => {
    await signIn(auditorToken);
    const rows = await timelineRows();
    for (const s of scripted) {
      const expected = restOf(s.client);
      const shown = rows.filter((r) => r.client === s.client);
      assert.deepEqual(shown.map((r) => r.id).sort(), expected.map((e) => e.id).sort(), s.name);
      for (const event of expected) {
        const row = shown.find((r) => r.id === event.id)!;
        const released = resourcesOf(event).filter((r) => r.disposition === 'released').length;
        if (event.outcome === '0') assert.match(row.text, new RegExp(`${released} released`), `${s.name}: released count`);
        else assert.equal(row.outcome, 'refused', `${s.name}: refused`);
        assert.equal(row.btg, breakGlassOf(event) !== undefined, `${s.name}: break-the-glass highlight`);
      }
    }
    assert.ok((await page.$$('#disclosure-chart svg rect')).length > 0, 'the chart draws bars');
    await page.waitForFunction(() => /hash chain intact/.test(document.getElementById('integrity-text')?.textContent ?? ''));
    const integrity = (await page.textContent('#integrity-text')) ?? '';
    const verified = await verifyJournal(h.auditDir);
    assert.equal(verified.ok, true);
    const shownCount = Number(/(\d+) events verified/.exec(integrity)?.[1]);
    assert.ok(shownCount > 0 && shownCount <= verified.events, integrity);
    await screenshot(page, 'timeline');

    const api = await fetch(`${root}/console/api/journal-status`, { headers: { authorization: `Bearer ${auditorToken}` } });
    assert.equal(api.status, 200);
    const body = (await api.json()) as { ok: boolean; events: number; lastVerified: string };
    assert.equal(body.ok, true);
    assert.ok(body.events > 0 && !Number.isNaN(Date.parse(body.lastVerified)));
  });

  const filterCases: { name: string; fields: Record<string, string>; matches: (e: AuditEvent) => boolean }[] = [
    { name: 'client', fields: { client: 'ct-payer' }, matches: (e) => clientOf(e) === 'ct-payer' },
    { name: 'requester (searched upstream as agent)', fields: { requester: 'Practitioner/payer-agent' }, matches: (e) => (e.agent ?? []).some((a) => a.who?.reference === 'Practitioner/payer-agent') },
    { name: 'purpose of use', fields: { purpose: 'BTG' }, matches: (e) => purposesOf(e).includes('BTG') },
    { name: 'outcome', fields: { outcome: 'refused' }, matches: (e) => e.outcome === '4' },
    { name: 'patient', fields: { patient: 'p1' }, matches: (e) => concernsPatient(e, 'p1') },
  ];
  for (const c of filterCases) {
    test(`the ${c.name} filter shows exactly the matching events`, async () => {
      await applyFilters(c.fields);
      const rows = await timelineRows();
      const ids = new Set(rows.map((r) => r.id));
      const expected = recorded.filter((e) => isRest(e) && c.matches(e));
      assert.ok(expected.length > 0, 'the scripted traffic has events for this filter');
      for (const e of expected) assert.ok(ids.has(e.id!), `${clientOf(e)} event missing`);
      for (const e of recorded.filter((x) => isRest(x) && !c.matches(x))) assert.ok(!ids.has(e.id!), `${clientOf(e)} event not filtered out`);
      if (c.name === 'client') await screenshot(page, 'timeline-filtered', { forReadme: false });
    });
  }

  test('a break-the-glass event shows its reason and can be marked reviewed; the mark is a FHIR Task', async () => {
    const event = restOf('ct-btg')[0];
    assert.ok(breakGlassOf(event), 'the scripted break-the-glass request is flagged in the audit');
    await applyFilters({ show: 'btg' });
    const row = page.locator(`#timeline-events tr[data-event-id="${event.id}"]`);
    await row.waitFor();
    assert.equal(await row.evaluate((r) => r.classList.contains('btg-row')), true);
    assert.match((await row.locator('.btg-reason').textContent()) ?? '', /BTG \(break the glass\)/);
    for (const other of await timelineRows()) assert.equal(other.btg, true, 'only break-the-glass events are listed');

    await row.locator('button.mark-reviewed').click();
    await row.locator('.badge.reviewed').waitFor();
    assert.match((await row.locator('.badge.reviewed').textContent()) ?? '', /Reviewed by Practitioner\/auditor/);
    assert.doesNotMatch((await page.textContent('#btg-summary')) ?? '', /not yet reviewed/);
    await screenshot(page, 'break-the-glass-reviewed');

    const read = await h.request(`Task/btg-review-${event.id}`, { token: auditorToken });
    assert.equal(read.status, 200);
    const task = read.body as Task;
    assert.equal(task.status, 'completed');
    assert.equal(task.focus?.reference, `AuditEvent/${event.id}`);
    assert.equal(task.owner?.reference, 'Practitioner/auditor');
    assert.equal(task.code?.coding?.[0]?.code, 'btg-review');

    // The mark is read back from the server: a fresh page shows it without a button.
    await page.reload();
    await settled('timeline');
    await row.locator('.badge.reviewed').waitFor();
    assert.equal(await row.locator('button.mark-reviewed').count(), 0);
  });

  test('the patient view lists each consent’s enforcement status, the harm determinations and the accounting', async () => {
    await page.goto(`${root}/console#/patient/p1`);
    await settled('patient');
    await page.waitForSelector('#consent-table');
    const status = await h.request('Patient/p1/$consent-enforcement-status', { token: auditorToken });
    assert.equal(status.status, 200);
    const consents = ((status.body as Parameters).parameter ?? []).filter((p) => p.name === 'consent');
    assert.ok(consents.length > 0);
    for (const c of consents) {
      const ref = c.part?.find((p) => p.name === 'reference')?.valueReference?.reference;
      const code = c.part?.find((p) => p.name === 'status')?.valueCode;
      const text = (await page.textContent(`#consent-table tr[data-consent="${ref}"]`)) ?? '';
      assert.ok(text.includes(code!), `${ref}: ${code} not shown in "${text}"`);
    }
    assert.match((await page.textContent('#consent-table tr[data-consent="Consent/lr-p1-protective-order"]')) ?? '', /legal restriction/);

    // The demo's two harm determinations: one stands (Dr A is the GP), one is ignored (no care relationship).
    await page.waitForFunction(() => document.querySelectorAll('#harm-table .badge').length === 2);
    assert.match((await page.textContent('#harm-table tr[data-flag="Flag/harm-d1"]')) ?? '', /ENFORCEABLE/);
    assert.match((await page.textContent('#harm-table tr[data-flag="Flag/harm-d2-invalid"]')) ?? '', /UNSUPPORTED.*care relationship/);

    await page.waitForSelector('#accounting-table tbody tr');
    await screenshot(page, 'patient');

    const [csvDownload] = await Promise.all([page.waitForEvent('download'), page.click('#export-csv')]);
    const csv = await readFile((await csvDownload.path())!, 'utf8');
    const [header, ...lines] = csv.trim().split('\r\n');
    assert.match(header, /^recorded,audit_event,request_id,recipient/);
    for (const e of recorded.filter((x) => isRest(x) && patientOf(x) === 'p1')) {
      assert.ok(lines.some((l) => l.includes(`"${e.id}"`)), `accounting CSV lacks the ${clientOf(e)} event`);
    }
    const [bundleDownload] = await Promise.all([page.waitForEvent('download'), page.click('#export-bundle')]);
    const bundle = JSON.parse(await readFile((await bundleDownload.path())!, 'utf8')) as Bundle<AuditEvent>;
    assert.equal(bundle.resourceType, 'Bundle');
    assert.equal(bundle.type, 'collection');
    assert.ok((bundle.entry ?? []).every((e) => e.resource?.resourceType === 'AuditEvent' && concernsPatient(e.resource, 'p1')));
    const exported = new Set((bundle.entry ?? []).map((e) => e.resource?.id));
    for (const e of recorded.filter((x) => patientOf(x) === 'p1')) assert.ok(exported.has(e.id), `bundle lacks the ${clientOf(e)} event`);
  });

  test('the why view shows the trace of each resource and explains a hypothetical request', async () => {
    const event = restOf('ct-patient').find((e) => resourcesOf(e).some((r) => r.disposition === 'withheld'));
    assert.ok(event, 'the harm determination withheld a report from the patient');
    await signIn(auditorToken);
    await page.goto(`${root}/console#/timeline?client=ct-patient`);
    await settled('timeline');
    await page.click(`#timeline-events tr[data-event-id="${event.id}"] a[href^="#/event/"]`);
    await page.waitForSelector('#trace-table');
    await settled('why');
    const rows = await page.$$eval('#trace-table tbody tr', (trs) => trs.map((tr) => ({ resource: tr.querySelector('th')?.textContent ?? '', text: tr.textContent ?? '' })));
    for (const resource of resourcesOf(event)) {
      const row = rows.find((r) => r.resource === resource.reference);
      assert.ok(row, `${resource.reference} missing from the trace`);
      assert.ok(row.text.includes(resource.disposition), `${resource.reference}: disposition`);
      for (const { reason } of resource.rules) assert.ok(row.text.includes(reason), `${resource.reference}: rule "${reason}" not shown`);
    }

    const question = { actor: 'Patient/p1', purpose: 'PATRQT', scope: 'patient/*.rs', reference: 'DiagnosticReport/d1' };
    await page.fill('#x-actor', question.actor);
    await page.fill('#x-org', '');
    await page.fill('#x-purpose', question.purpose);
    await page.fill('#x-scope', question.scope);
    await page.fill('#x-reference', question.reference);
    await page.setChecked('#x-btg', false);
    await page.click('#explain-submit');
    await page.waitForSelector('#explain-decision');
    const answer = await h.request('$disclosure-decision', {
      token: auditorToken,
      method: 'POST',
      body: {
        resourceType: 'Parameters',
        parameter: [
          { name: 'actor', valueReference: { reference: question.actor } },
          { name: 'purpose', valueCode: question.purpose },
          { name: 'scope', valueString: question.scope },
          { name: 'reference', valueReference: { reference: question.reference } },
        ],
      },
    });
    const parameters = (answer.body as Parameters).parameter ?? [];
    assert.equal(await page.textContent('#explain-decision'), parameters.find((p) => p.name === 'decision')?.valueCode);
    assert.equal(await page.textContent('#explain-decision'), 'deny');
    const reasons = await page.$$eval('#explain-reasons li', (lis) => lis.map((li) => li.textContent));
    assert.deepEqual(reasons, parameters.filter((p) => p.name === 'reason').map((p) => p.valueString));
    await screenshot(page, 'why');
  });

  test('signing out removes the token and hides every view', async () => {
    await signIn(auditorToken);
    await page.waitForSelector('#nav:not([hidden])');
    await page.click('#sign-out');
    await page.waitForSelector('#sign-in:not([hidden])');
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    assert.equal(await page.$$eval('main .view:not([hidden])', (v) => v.length), 0);
    await page.goto(`${root}/console#/patient/p1`);
    await page.waitForSelector('#sign-in:not([hidden])');
    assert.equal(await page.$$eval('main .view:not([hidden])', (v) => v.length), 0);
  });
});
