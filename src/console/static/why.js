// "Why?" (issue 8 §4): the decision trace of one AuditEvent — which rule released, redacted or withheld
// each resource — and an explain form that asks `$disclosure-decision` about a hypothetical request.
/* global FormData */
import { BTG_REVIEW, computedLabelsText, purposeText, ruleText, summarise, unversioned } from './audit-model.js';
import { announce, formatInstant, h, replace } from './dom.js';
import { FhirError, fhir, searchPage } from './fhir.js';

function dl(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(([, v]) => v !== undefined && v !== '').map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

/** The consent decisions recorded for the same request (AuthZconsent events share its instant and request id). */
async function consentDecisionsOf(s) {
  if (!s.patient || !s.requestId || !s.recorded) return [];
  try {
    const q = new URLSearchParams({ patient: `Patient/${s.patient}`, _count: '100' });
    q.append('date', `ge${s.recorded}`);
    q.append('date', `le${s.recorded}`);
    const page = await searchPage(`AuditEvent?${q}`);
    return page.resources.map(summarise).filter((x) => x.kind === 'consent-decision' && x.requestId === s.requestId);
  } catch {
    return [];
  }
}

function traceTable(s, consentDecisions) {
  if (s.resources.length === 0) return h('p', { id: 'trace-empty' }, s.refused ? `No data was read: the request was ${s.outcomeText} before any resource was decided.` : 'This event names no resources.');
  const released = consentDecisions.map((d) => `consent ${d.outcomeDesc}`);
  const rows = s.resources.map((r) => {
    const lines = r.rules.map(ruleText);
    if (lines.length === 0 && r.disposition === 'released') lines.push(...(released.length ? released : ['released: no rule withheld or redacted it (implicit policy and scopes)']));
    const notes = [];
    if (r.breakGlass) notes.push('released only because the glass was broken');
    if (r.part2) notes.push('42 CFR Part 2 data');
    // SPEC §4.7: the upstream never labelled it; the gateway's rule sets did, and the decision read those labels.
    const computed = computedLabelsText(r.rules);
    if (computed.length) notes.push(`${r.disposition === 'released' ? 'labelled' : 'decided on labels computed'} by the gateway from its codes: ${computed.join('; ')}`);
    return h(
      'tr',
      { class: `disposition-${r.disposition}` },
      h('th', { scope: 'row' }, r.reference),
      h('td', null, h('span', { class: `badge disposition-${r.disposition}` }, r.disposition)),
      h('td', null, h('ul', { class: 'rules' }, lines.map((l) => h('li', null, l)))),
      h('td', null, r.paths.length ? h('ul', { class: 'refs' }, r.paths.map((p) => h('li', null, h('code', null, p)))) : '—'),
      h('td', null, notes.join('; ') || '—'),
    );
  });
  return h(
    'table',
    { id: 'trace-table', class: 'events' },
    h('caption', null, 'Decision trace per resource'),
    h('thead', null, h('tr', null, ['Resource', 'Outcome', 'Rules', 'Redacted elements', 'Notes'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', null, rows),
  );
}

function explainForm(s) {
  const refs = s ? [...new Set(s.resources.map((r) => unversioned(r.reference)))] : [];
  const actorValue = s?.user?.includes('/') ? s.user : '';
  const scopeValue = actorValue.startsWith('Patient/') || actorValue.startsWith('RelatedPerson/') ? 'patient/*.rs' : 'user/*.rs';
  const input = (id, name, value, attrs = {}) => h('input', { id, name, type: 'text', value, autocomplete: 'off', ...attrs });
  const result = h('div', { id: 'explain-result', 'aria-live': 'polite' });
  const form = h(
    'form',
    { id: 'explain-form', class: 'filters', 'aria-labelledby': 'explain-title' },
    h('div', { class: 'field' }, h('label', { for: 'x-actor' }, 'Requester (fhirUser)'), input('x-actor', 'actor', actorValue, { required: true, 'aria-describedby': 'x-actor-hint' }), h('span', { class: 'hint', id: 'x-actor-hint' }, 'e.g. Practitioner/dr-a')),
    h('div', { class: 'field' }, h('label', { for: 'x-org' }, 'Organization'), input('x-org', 'organization', s?.organization ?? '')),
    h('div', { class: 'field' }, h('label', { for: 'x-purpose' }, 'Purposes of use'), input('x-purpose', 'purpose', (s?.purposes ?? []).filter((p) => p !== 'BTG').join(' ') || 'TREAT', { 'aria-describedby': 'x-purpose-hint' }), h('span', { class: 'hint', id: 'x-purpose-hint' }, 'v3-ActReason codes, space-separated')),
    h('div', { class: 'field' }, h('label', { for: 'x-scope' }, 'Scopes'), input('x-scope', 'scope', scopeValue)),
    h('div', { class: 'field' }, h('label', { for: 'x-reference' }, 'Resource'), input('x-reference', 'reference', refs[0] ?? '', { required: true, list: 'x-reference-list' }), h('datalist', { id: 'x-reference-list' }, refs.map((r) => h('option', { value: r })))),
    h('div', { class: 'field checkbox' }, h('input', { id: 'x-btg', name: 'breakGlass', type: 'checkbox', checked: Boolean(s?.breakGlass && s.breakGlass !== 'btg-attempt') }), h('label', { for: 'x-btg' }, 'Break the glass')),
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'explain-submit' }, 'Explain')),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const purposes = String(data.get('purpose') ?? '').split(/[\s,]+/).filter(Boolean);
    const parameter = [{ name: 'actor', valueReference: { reference: String(data.get('actor') ?? '').trim() } }];
    const org = String(data.get('organization') ?? '').trim();
    if (org) parameter.push({ name: 'organization', valueReference: { reference: org } });
    for (const p of purposes) parameter.push({ name: 'purpose', valueCode: p });
    parameter.push({ name: 'scope', valueString: String(data.get('scope') ?? '').trim() });
    if (data.get('breakGlass')) parameter.push({ name: 'breakGlass', valueBoolean: true });
    parameter.push({ name: 'reference', valueReference: { reference: String(data.get('reference') ?? '').trim() } });
    replace(result, h('p', { class: 'status' }, 'Asking the gateway…'));
    try {
      const answer = await fhir('$disclosure-decision', { method: 'POST', body: { resourceType: 'Parameters', parameter } });
      const params = answer?.parameter ?? [];
      const decision = params.find((p) => p.name === 'decision')?.valueCode ?? 'unknown';
      const obligations = params.filter((p) => p.name === 'obligation').map((p) => (p.part ?? []).map((x) => x.valueCode ?? x.valueString ?? x.valueCoding?.code).filter(Boolean).join(': '));
      const reasons = params.filter((p) => p.name === 'reason').map((p) => p.valueString);
      replace(
        result,
        h('h3', null, 'Decision: ', h('span', { class: `badge decision-${decision}`, id: 'explain-decision' }, decision)),
        obligations.length ? [h('h4', null, 'Obligations'), h('ul', null, obligations.map((o) => h('li', null, o)))] : null,
        h('h4', null, 'Reasons'),
        reasons.length ? h('ol', { id: 'explain-reasons' }, reasons.map((r) => h('li', null, r))) : h('p', null, 'No rule named a reason.'),
      );
      announce(`Decision: ${decision}`);
    } catch (err) {
      replace(result, h('p', { class: 'error', role: 'alert' }, err instanceof FhirError && err.status === 403 ? 'This token may not use the explain operation.' : `The gateway refused the question: ${err.message}`));
    }
  });
  return [h('h2', { id: 'explain-title' }, 'Explain a hypothetical request'), h('p', null, 'Ask the gateway what it would decide for another requester, purpose or scope — nothing is disclosed.'), form, result];
}

/**
 * @param {HTMLElement} container
 * @param {string | undefined} eventId
 * @param {(hash: string) => void} go
 */
export async function renderWhy(container, eventId, go) {
  const openForm = h(
    'form',
    { id: 'event-form', class: 'filters inline' },
    h('div', { class: 'field' }, h('label', { for: 'event-id' }, 'AuditEvent id'), h('input', { id: 'event-id', type: 'text', value: eventId ?? '', autocomplete: 'off' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Open event')),
  );
  openForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = /** @type {HTMLInputElement} */ (openForm.querySelector('#event-id')).value.trim();
    if (id) go(`#/event/${encodeURIComponent(id)}`);
  });
  if (!eventId) {
    replace(container, h('h1', { id: 'why-title' }, 'Why?'), h('p', null, 'Open an event from the timeline or the accounting of disclosures to see its trace.'), openForm, explainForm(undefined));
    return;
  }
  replace(container, h('h1', { id: 'why-title' }, 'Why?'), h('p', { class: 'status' }, 'Loading the event…'));
  let event;
  try {
    event = await fhir(`AuditEvent/${encodeURIComponent(eventId)}`);
  } catch (err) {
    replace(container, h('h1', { id: 'why-title' }, 'Why?'), openForm, h('p', { class: 'error', role: 'alert' }, err instanceof FhirError && err.status === 404 ? 'No such audit event (it may not have been forwarded yet).' : `Could not read the event: ${err.message}`));
    return;
  }
  const s = summarise(event);
  const consentDecisions = s.kind === 'rest' ? await consentDecisionsOf(s) : [];
  replace(
    container,
    h('h1', { id: 'why-title' }, `Why? — event of ${formatInstant(s.recorded)}`),
    openForm,
    dl([
      ['Recorded', formatInstant(s.recorded)],
      ['Outcome', `${s.outcomeText}${s.outcomeDesc ? ` — ${s.outcomeDesc}` : ''}`],
      ['Patient', s.patient ? h('a', { href: `#/patient/${encodeURIComponent(s.patient)}` }, s.patient) : undefined],
      ['Requester', s.user || undefined],
      ['Organization', s.organization || undefined],
      ['Client', s.client || undefined],
      ['Purpose of use', purposeText(s.purposes) || undefined],
      ['Request', s.query ?? s.interaction],
      ['Request id', s.requestId],
      ['Break-the-glass', s.breakGlass ? BTG_REVIEW[s.breakGlass] ?? s.breakGlass : undefined],
      ['Audit event', `AuditEvent/${s.id}`],
    ]),
    h('h2', null, 'Trace per resource'),
    traceTable(s, consentDecisions),
    s.ignored.length ? [h('h2', null, 'Rules ignored for this patient'), h('ul', { id: 'ignored-rules', class: 'rules' }, s.ignored.map((r) => h('li', null, ruleText(r))))] : null,
    consentDecisions.length ? [h('h2', null, 'Consent decisions in this request'), h('ul', { class: 'rules' }, consentDecisions.map((d) => h('li', null, h('a', { href: `#/event/${encodeURIComponent(d.id)}` }, d.outcomeDesc ?? d.consent))))] : null,
    explainForm(s),
  );
}
