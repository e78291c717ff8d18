// Timeline (issue 8 §2): disclosures over time with filters, break-the-glass events highlighted with their
// stated reason and a "reviewed" mark stored as a FHIR Task. Paging is the gateway's (next links);
// filters the upstream cannot search (client, purpose, disposition) are applied to each fetched page.
/* global FormData, CustomEvent */
import { BTG_REVIEW, DG_AUDIT_CODES, PURPOSES, isAuditRecordRead, purposeText, reviewTaskId, summarise } from './audit-model.js';
import { disclosureChart } from './chart.js';
import { announce, formatInstant, h, replace } from './dom.js';
import { FhirError, fhir, getToken, searchPage, tokenClaims } from './fhir.js';

const PAGE_SIZE = 100;
/** Rows to collect per "load" before stopping, and how many pages may be scanned for them. */
const TARGET_ROWS = 50;
const MAX_PAGES_PER_LOAD = 10;

export const FILTERS = ['patient', 'requester', 'client', 'purpose', 'outcome', 'show', 'from', 'to'];

/** @param {URLSearchParams} filters */
export function auditSearchPath(filters) {
  const q = new URLSearchParams();
  const patient = filters.get('patient')?.trim();
  if (patient) q.append('patient', patient.includes('/') ? patient : `Patient/${patient}`);
  const requester = filters.get('requester')?.trim();
  if (requester && requester.includes('/')) q.append('agent', requester);
  const outcome = filters.get('outcome');
  if (outcome === 'success') q.append('outcome', '0');
  else if (outcome === 'refused') q.append('outcome', '4');
  else if (outcome === 'failed') q.append('outcome', '8,12');
  const from = filters.get('from');
  if (from && /^\d{4}-\d{2}-\d{2}$/.test(from)) q.append('date', `ge${from}`);
  const to = filters.get('to');
  if (to && /^\d{4}-\d{2}-\d{2}$/.test(to)) {
    const next = new Date(`${to}T00:00:00Z`);
    next.setUTCDate(next.getUTCDate() + 1);
    q.append('date', `lt${next.toISOString().slice(0, 10)}`);
  }
  q.append('_sort', '-date');
  q.append('_count', String(PAGE_SIZE));
  return `AuditEvent?${q.toString()}`;
}

/** The filters the upstream cannot search, applied to each summarised event. */
export function matchesLocalFilters(s, filters) {
  const show = filters.get('show') || 'data';
  if (show !== 'all' && s.kind !== 'rest') return false;
  // Every AuditEvent search is audited too; unless asked for, those reads would drown the disclosures.
  if (show !== 'all' && show !== 'requests' && isAuditRecordRead(s)) return false;
  if (show === 'withheld' && s.counts.withheld === 0) return false;
  if (show === 'redacted' && s.counts.redacted === 0) return false;
  if (show === 'btg' && !s.breakGlass) return false;
  const client = filters.get('client')?.trim();
  if (client && s.client !== client) return false;
  const purpose = filters.get('purpose');
  if (purpose && !s.purposes.includes(purpose)) return false;
  const requester = filters.get('requester')?.trim();
  if (requester && !requester.includes('/') && s.requester !== requester && s.user !== requester) return false;
  return true;
}

function field(id, label, input, hint) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('span', { class: 'hint', id: `${id}-hint` }, hint) : null);
}

function select(id, name, value, options) {
  return h('select', { id, name }, options.map(([v, text]) => h('option', { value: v, selected: v === value }, text)));
}

function filterForm(filters, onApply) {
  const text = (name, hint) => h('input', { id: `f-${name}`, name, type: 'text', value: filters.get(name) ?? '', autocomplete: 'off', 'aria-describedby': hint ? `f-${name}-hint` : null });
  const form = h(
    'form',
    { id: 'timeline-filters', class: 'filters', role: 'search', 'aria-label': 'Filter audit events' },
    field('f-patient', 'Patient', text('patient', true), 'id, e.g. p1'),
    field('f-requester', 'Requester', text('requester', true), 'e.g. Practitioner/dr-a'),
    field('f-client', 'Client', text('client', true), 'client_id'),
    field('f-purpose', 'Purpose of use', select('f-purpose', 'purpose', filters.get('purpose') ?? '', [['', 'any'], ...Object.entries(PURPOSES).map(([c, t]) => [c, `${c} — ${t}`])])),
    field('f-outcome', 'Outcome', select('f-outcome', 'outcome', filters.get('outcome') ?? '', [['', 'any'], ['success', 'success'], ['refused', 'refused'], ['failed', 'failed']])),
    field(
      'f-show',
      'Show',
      select('f-show', 'show', filters.get('show') ?? 'data', [
        ['data', 'disclosures of patient data'],
        ['requests', 'all requests (with reads of audit records)'],
        ['withheld', 'requests with withheld resources'],
        ['redacted', 'requests with redacted resources'],
        ['btg', 'break-the-glass only'],
        ['all', 'all audit events (with consent decisions)'],
      ]),
    ),
    field('f-from', 'From', h('input', { id: 'f-from', name: 'from', type: 'date', value: filters.get('from') ?? '' })),
    field('f-to', 'To', h('input', { id: 'f-to', name: 'to', type: 'date', value: filters.get('to') ?? '' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'apply-filters' }, 'Apply filters'), h('a', { href: '#/timeline', class: 'button secondary' }, 'Clear')),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (String(value).trim()) next.set(name, String(value).trim());
    if (next.get('show') === 'data') next.delete('show');
    onApply(next);
  });
  return form;
}

function resultText(s) {
  if (s.kind === 'consent-decision') return s.outcomeDesc ?? 'consent decision';
  if (s.refused) return `${s.outcomeText}${s.outcomeDesc ? `: ${s.outcomeDesc}` : ''}`;
  const parts = [];
  parts.push(`${s.counts.released} released`);
  if (s.counts.redacted) parts.push(`${s.counts.redacted} redacted`);
  if (s.counts.withheld) parts.push(`${s.counts.withheld} withheld`);
  return parts.join(' · ');
}

/** Review marks already read this session: event id → Task (or null when there is none). */
const reviews = new Map();

function reviewCell(s) {
  const cell = h('div', { class: 'review', id: `review-${s.id}` }, h('span', { class: 'muted' }, 'checking review…'));
  return cell;
}

function renderReview(cell, s, task, error) {
  if (error) {
    replace(cell, h('span', { class: 'error' }, error));
    return;
  }
  if (task) {
    const by = task.owner?.reference ? ` by ${task.owner.reference}` : '';
    replace(cell, h('span', { class: 'badge reviewed' }, `Reviewed${by}`), ' ', h('span', { class: 'muted' }, formatInstant(task.lastModified ?? task.meta?.lastUpdated)));
    return;
  }
  const button = h('button', { type: 'button', class: 'mark-reviewed', 'aria-label': `Mark break-the-glass event of ${formatInstant(s.recorded)} reviewed` }, 'Mark reviewed');
  button.addEventListener('click', async () => {
    button.disabled = true;
    button.textContent = 'Saving…';
    try {
      const saved = await markReviewed(s);
      reviews.set(s.id, saved);
      renderReview(cell, s, saved);
      cell.dispatchEvent(new CustomEvent('review-changed', { bubbles: true }));
      announce('Break-the-glass event marked reviewed.');
      cell.querySelector('.badge')?.setAttribute('tabindex', '-1');
      cell.querySelector('.badge')?.focus();
    } catch (err) {
      renderReview(cell, s, undefined);
      cell.append(h('span', { class: 'error', role: 'alert' }, ` Could not save the review: ${err.message}`));
    }
  });
  replace(cell, button);
}

/** The review mark: a completed Task whose focus is the AuditEvent, owned by the auditor; its id is derived
 * from the event's, so marking twice updates one Task and reading a mark needs no cross-patient search. */
export async function markReviewed(s) {
  const now = new Date().toISOString();
  const claims = tokenClaims(getToken());
  const owner = typeof claims?.fhirUser === 'string' ? claims.fhirUser.replace(/^.*\/(?=[A-Za-z]+\/[^/]+$)/, '') : undefined;
  const task = {
    resourceType: 'Task',
    id: reviewTaskId(s.id),
    status: 'completed',
    intent: 'order',
    code: { coding: [{ system: DG_AUDIT_CODES, code: 'btg-review', display: 'Break-the-glass review' }], text: 'Break-the-glass review' },
    description: 'An auditor reviewed this break-the-glass access.',
    focus: { reference: `AuditEvent/${s.id}` },
    authoredOn: now,
    lastModified: now,
    executionPeriod: { end: now },
    businessStatus: { text: 'reviewed' },
  };
  if (owner) task.owner = { reference: owner };
  return fhir(`Task/${encodeURIComponent(task.id)}`, { method: 'PUT', body: task });
}

async function loadReview(s) {
  if (reviews.has(s.id)) return reviews.get(s.id);
  try {
    const task = await fhir(`Task/${encodeURIComponent(reviewTaskId(s.id))}`);
    reviews.set(s.id, task);
    return task;
  } catch (err) {
    if (err instanceof FhirError && err.status === 404) {
      reviews.set(s.id, null);
      return null;
    }
    throw err;
  }
}

function eventRow(s) {
  const btg = Boolean(s.breakGlass);
  const requester = h('td', null, s.requester || '—', s.organization ? h('div', { class: 'muted' }, s.organization) : null);
  const btgCell = btg
    ? h(
        'td',
        { class: 'btg-cell' },
        h('span', { class: 'badge btg' }, 'Break-the-glass'),
        h('div', { class: 'btg-reason' }, `Reason: ${purposeText(s.purposes) || 'no purpose stated'}`),
        h('div', { class: 'muted' }, BTG_REVIEW[s.breakGlass] ?? s.breakGlass),
        s.kind === 'rest' ? reviewCell(s) : null,
      )
    : h('td', null, '');
  return h(
    'tr',
    { class: btg ? 'btg-row' : s.refused ? 'refused-row' : '', dataset: { eventId: s.id, client: s.client, patient: s.patient ?? '', outcome: s.outcomeText } },
    h('td', null, h('time', { datetime: s.recorded }, formatInstant(s.recorded))),
    h('td', null, s.patient ? h('a', { href: `#/patient/${encodeURIComponent(s.patient)}` }, s.patient) : '—'),
    requester,
    h('td', null, s.client || '—'),
    h('td', null, s.purposes.join(', ') || '—'),
    h('td', { class: 'query' }, s.kind === 'rest' ? s.query ?? s.interaction : 'consent decision'),
    h('td', null, resultText(s)),
    btgCell,
    h('td', null, h('a', { href: `#/event/${encodeURIComponent(s.id)}`, 'aria-label': `Why? — event of ${formatInstant(s.recorded)}` }, 'Why?')),
  );
}

/**
 * @param {HTMLElement} container
 * @param {URLSearchParams} filters
 * @param {(hash: string) => void} go
 */
export function renderTimeline(container, filters, go) {
  const state = { events: [], scanned: 0, next: auditSearchPath(filters), loading: false, done: false };
  const status = h('p', { id: 'timeline-status', class: 'status', role: 'status' }, 'Loading…');
  const chartHolder = h('div', { id: 'chart-holder' });
  const btgSummary = h('p', { id: 'btg-summary', class: 'btg-summary' });
  const tbody = h('tbody');
  const table = h(
    'table',
    { id: 'timeline-events', class: 'events' },
    h('caption', { class: 'visually-hidden' }, 'Audit events, newest first'),
    h(
      'thead',
      null,
      h(
        'tr',
        null,
        ['When', 'Patient', 'Requester', 'Client', 'Purpose', 'Request', 'Result', 'Break-the-glass', 'Trace'].map((t) => h('th', { scope: 'col' }, t)),
      ),
    ),
    tbody,
  );
  const more = h('button', { type: 'button', id: 'load-more', class: 'secondary', hidden: true }, 'Load older events');
  replace(
    container,
    h('h1', { id: 'timeline-title' }, 'Disclosure timeline'),
    filterForm(filters, (next) => go(`#/timeline${next.size ? `?${next}` : ''}`)),
    status,
    chartHolder,
    btgSummary,
    h('div', { class: 'table-scroll' }, table),
    more,
  );

  const redrawSummary = () => {
    replace(chartHolder, disclosureChart(state.events, `Disclosures in the ${state.events.length} events shown (newest ${state.scanned} audit events scanned)`));
    const btg = state.events.filter((s) => s.breakGlass && s.kind === 'rest');
    const open = btg.filter((s) => reviews.get(s.id) === null).length;
    replace(btgSummary, btg.length === 0 ? '' : `${btg.length} break-the-glass event${btg.length === 1 ? '' : 's'} shown${open ? `, ${open} not yet reviewed` : ''}.`);
  };

  const load = async () => {
    if (state.loading || !state.next) return;
    state.loading = true;
    more.disabled = true;
    status.textContent = 'Loading…';
    const added = [];
    try {
      let pages = 0;
      while (state.next && added.length < TARGET_ROWS && pages < MAX_PAGES_PER_LOAD) {
        const page = await searchPage(state.next);
        pages += 1;
        state.next = page.next;
        for (const resource of page.resources) {
          state.scanned += 1;
          const s = summarise(resource);
          if (matchesLocalFilters(s, filters)) added.push(s);
        }
      }
    } catch (err) {
      status.textContent = `Could not load audit events: ${err.message}`;
      status.classList.add('error');
      state.loading = false;
      more.disabled = false;
      return;
    }
    state.events.push(...added);
    for (const s of added) tbody.append(eventRow(s));
    state.loading = false;
    more.disabled = false;
    more.hidden = !state.next;
    status.classList.remove('error');
    status.textContent =
      state.events.length === 0 && !state.next
        ? 'No audit events match these filters.'
        : `${state.events.length} event${state.events.length === 1 ? '' : 's'} shown, ${state.scanned} scanned${state.next ? ' — older events can be loaded' : ' — end of the audit trail'}.`;
    redrawSummary();
    await Promise.all(
      added
        .filter((s) => s.breakGlass && s.kind === 'rest')
        .map(async (s) => {
          const cell = document.getElementById(`review-${s.id}`);
          if (!cell) return;
          try {
            renderReview(cell, s, await loadReview(s));
          } catch (err) {
            renderReview(cell, s, undefined, err instanceof FhirError && err.status === 403 ? 'reviews not readable with this token' : `review unknown: ${err.message}`);
          }
        }),
    );
    redrawSummary();
  };
  more.addEventListener('click', load);
  table.addEventListener('review-changed', redrawSummary);
  return load();
}
