// Patient view (issue 8 §3): every Consent, legal restriction and harm determination of one patient with
// its enforcement status and why, and the accounting of disclosures with CSV and FHIR Bundle export.
import { DG_DISCLOSURE_CODES, isAuditRecordRead, purposeText, ruleText, summarise, unversioned } from './audit-model.js';
import { announce, formatInstant, h, replace } from './dom.js';
import { accountingBundle, accountingCsv, download } from './export.js';
import { FhirError, fhir, searchPage } from './fhir.js';

const DG = 'https://disclosure-gateway.org/fhir';
const HARM_GROUND = `${DG}/StructureDefinition/harm-ground`;
const WITHHELD_DATA = `${DG}/StructureDefinition/withheld-data`;
const LEGAL_RESTRICTION = 'legal-restriction';
const EXPORT_LIMIT = 10_000;

function statusBadge(status) {
  return h('span', { class: `badge status-${String(status).toLowerCase()}` }, status);
}

function parameterParts(param) {
  const part = (name) => (param.part ?? []).find((p) => p.name === name);
  return { reference: part('reference')?.valueReference?.reference, status: part('status')?.valueCode, reason: part('reason')?.valueString };
}

function consentKind(consent) {
  const legal = (consent?.category ?? []).some((c) => (c.coding ?? []).some((x) => x.system === DG_DISCLOSURE_CODES && x.code === LEGAL_RESTRICTION));
  return legal ? 'legal restriction' : 'patient consent';
}

function consentDecision(consent) {
  if (!consent) return '—';
  const type = consent.provision?.type ?? consent.decision;
  if (type) return type;
  const rule = consent.policyRule?.coding?.[0]?.code;
  return rule ? `policy ${rule}` : 'not computable';
}

function errorText(err, what) {
  if (err instanceof FhirError && err.status === 403) return `This token may not read ${what}.`;
  return `Could not read ${what}: ${err.message}`;
}

async function renderConsents(holder, patientId) {
  replace(holder, h('p', { class: 'status' }, 'Loading consents…'));
  let statuses;
  try {
    const parameters = await fhir(`Patient/${encodeURIComponent(patientId)}/$consent-enforcement-status`);
    statuses = (parameters?.parameter ?? []).filter((p) => p.name === 'consent').map(parameterParts);
  } catch (err) {
    replace(holder, h('p', { class: 'error' }, errorText(err, 'consent enforcement status')));
    return;
  }
  if (statuses.length === 0) {
    replace(holder, h('p', null, 'No consents or legal restrictions on record: the implicit policy applies.'));
    return;
  }
  const consents = await Promise.all(statuses.map((s) => (s.reference ? fhir(s.reference).catch(() => undefined) : undefined)));
  const rows = statuses.map((s, i) => {
    const c = consents[i];
    const period = c?.provision?.period;
    return h(
      'tr',
      { dataset: { consent: s.reference ?? '' } },
      h('th', { scope: 'row' }, s.reference ?? '—'),
      h('td', null, c ? consentKind(c) : '—'),
      h('td', null, statusBadge(s.status ?? 'unknown')),
      h('td', null, s.reason ?? (s.status === 'ENFORCEABLE' ? 'active, computable and current' : '—')),
      h('td', null, consentDecision(c)),
      h('td', null, c?.dateTime ? formatInstant(c.dateTime) : '—', period ? h('div', { class: 'muted' }, `period ${period.start ?? '…'} – ${period.end ?? '…'}`) : null),
      h('td', null, c?.sourceReference?.reference ?? c?.sourceReference?.display ?? '—'),
    );
  });
  replace(
    holder,
    h(
      'table',
      { id: 'consent-table', class: 'events' },
      h('caption', null, 'Consents and legal restrictions with their enforcement status'),
      h('thead', null, h('tr', null, ['Consent', 'Kind', 'Enforcement status', 'Why', 'Base decision', 'Dated', 'Source'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, rows),
    ),
  );
}

/** A harm determination's status, asked of `$disclosure-decision` for the person it would withhold from. */
async function harmStatus(patientId, flag) {
  if (flag.status !== 'active') return { status: 'INACTIVE', reason: `the flag is ${flag.status ?? 'without status'}` };
  const ground = (flag.extension ?? []).find((e) => e.url === HARM_GROUND)?.valueCoding?.code;
  const withheld = (flag.extension ?? []).filter((e) => e.url === WITHHELD_DATA).map((e) => e.valueReference?.reference).filter(Boolean);
  if (withheld.length === 0) return { status: 'UNSUPPORTED', reason: 'names no withheld data (an organisation-wide hold would be information blocking)' };
  const purpose = ground === 'harm-representative' ? 'FAMRQT' : 'PATRQT';
  const parameters = await fhir('$disclosure-decision', {
    method: 'POST',
    body: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'actor', valueReference: { reference: `Patient/${patientId}` } },
        { name: 'purpose', valueCode: purpose },
        { name: 'scope', valueString: 'patient/*.rs' },
        { name: 'reference', valueReference: { reference: withheld[0] } },
      ],
    },
  });
  const reasons = (parameters?.parameter ?? []).filter((p) => p.name === 'reason').map((p) => p.valueString ?? '');
  const line = reasons.find((r) => r.startsWith(`harm-determination Flag/${flag.id}`) && /[:\s]/.test(r.charAt(`harm-determination Flag/${flag.id}`.length)));
  if (!line) return { status: 'INACTIVE', reason: `not applied when ${withheld[0]} is asked for under ${purpose}` };
  const match = /: (\S+) — (.*)$/.exec(line);
  const effect = match?.[1];
  const why = match?.[2] ?? line;
  if (effect === 'deny') return { status: 'ENFORCEABLE', reason: `${why} (checked on ${withheld[0]} for purpose ${purpose})` };
  if (effect === 'ignored') return { status: /period/i.test(why) ? 'INACTIVE' : 'UNSUPPORTED', reason: why };
  return { status: 'INACTIVE', reason: why };
}

async function renderHarm(holder, patientId) {
  replace(holder, h('p', { class: 'status' }, 'Loading harm determinations…'));
  let flags;
  try {
    // R4 Flag has no `code` search parameter: the patient's Flags are read and the harm determinations picked out.
    flags = [];
    let next = `Flag?patient=${encodeURIComponent(`Patient/${patientId}`)}&_count=100`;
    for (let pages = 0; next && pages < 10; pages++) {
      const page = await searchPage(next);
      next = page.next;
      flags.push(...page.resources.filter((f) => f.resourceType === 'Flag' && (f.code?.coding ?? []).some((c) => c.system === DG_DISCLOSURE_CODES && c.code === 'harm-determination')));
    }
  } catch (err) {
    replace(holder, h('p', { class: 'error' }, errorText(err, 'harm determinations (Flag)')));
    return;
  }
  if (flags.length === 0) {
    replace(holder, h('p', null, 'No harm determinations on record.'));
    return;
  }
  const tbody = h('tbody');
  replace(
    holder,
    h(
      'table',
      { id: 'harm-table', class: 'events' },
      h('caption', null, 'Harm determinations with their enforcement status'),
      h('thead', null, h('tr', null, ['Flag', 'Author', 'Ground', 'Withheld data', 'Enforcement status', 'Why'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody,
    ),
  );
  for (const flag of flags) {
    const statusCell = h('td', null, h('span', { class: 'muted' }, 'asking…'));
    const whyCell = h('td');
    tbody.append(
      h(
        'tr',
        { dataset: { flag: `Flag/${flag.id}` } },
        h('th', { scope: 'row' }, `Flag/${flag.id}`),
        h('td', null, flag.author?.reference ?? 'no author'),
        h('td', null, (flag.extension ?? []).find((e) => e.url === HARM_GROUND)?.valueCoding?.code ?? 'no ground'),
        h('td', null, (flag.extension ?? []).filter((e) => e.url === WITHHELD_DATA).map((e) => e.valueReference?.reference).join(', ') || 'none'),
        statusCell,
        whyCell,
      ),
    );
    harmStatus(patientId, flag).then(
      ({ status, reason }) => {
        replace(statusCell, statusBadge(status));
        replace(whyCell, reason);
      },
      (err) => {
        replace(statusCell, statusBadge('UNKNOWN'));
        replace(whyCell, errorText(err, 'the explain operation'));
      },
    );
  }
}

/** Rules behind one request's outcome: the traces of withheld/redacted resources and the consents that decided. */
function rulesOf(s, consentDecisions) {
  const rules = new Set();
  for (const r of s.resources) for (const rule of r.rules) if (rule.effect !== 'not-applicable') rules.add(ruleText(rule));
  for (const d of consentDecisions.get(s.requestId) ?? []) rules.add(d);
  if (rules.size === 0 && s.counts.released > 0) rules.add('no consent decided: implicit policy and scopes');
  return [...rules];
}

function renderAccounting(holder, patientId, range) {
  const q = new URLSearchParams({ patient: `Patient/${patientId}`, _sort: '-date', _count: '100' });
  if (range.from) q.append('date', `ge${range.from}`);
  if (range.to) {
    const next = new Date(`${range.to}T00:00:00Z`);
    next.setUTCDate(next.getUTCDate() + 1);
    q.append('date', `lt${next.toISOString().slice(0, 10)}`);
  }
  const state = { next: `AuditEvent?${q}`, raw: [], consentDecisions: new Map(), loading: false, includeAuditReads: false };
  const includeAudit = h('input', { id: 'include-audit-reads', type: 'checkbox' });
  const status = h('p', { id: 'accounting-status', class: 'status', role: 'status' });
  const tbody = h('tbody');
  const more = h('button', { type: 'button', class: 'secondary', id: 'accounting-more', hidden: true }, 'Load older disclosures');
  const csvButton = h('button', { type: 'button', id: 'export-csv' }, 'Export CSV');
  const bundleButton = h('button', { type: 'button', id: 'export-bundle' }, 'Export FHIR Bundle');
  replace(
    holder,
    h('div', { class: 'actions' }, csvButton, bundleButton, h('div', { class: 'field checkbox' }, includeAudit, h('label', { for: 'include-audit-reads' }, 'Include reads of audit records'))),
    status,
    h(
      'div',
      { class: 'table-scroll' },
      h(
        'table',
        { id: 'accounting-table', class: 'events' },
        h('caption', null, `Accounting of disclosures for Patient/${patientId}`),
        h('thead', null, h('tr', null, ['When', 'Recipient', 'Purpose', 'Released', 'Redacted', 'Withheld', 'Under which rule'].map((t) => h('th', { scope: 'col' }, t)))),
        tbody,
      ),
    ),
    more,
  );

  const shown = (s) => s.kind === 'rest' && (state.includeAuditReads || !isAuditRecordRead(s));
  const rows = () => state.raw.map(summarise).filter(shown).map((s) => ({ summary: s, rules: rulesOf(s, state.consentDecisions) }));
  /** The shown requests' AuditEvents and the consent decisions recorded with them. */
  const exportedEvents = () => {
    const summaries = state.raw.map((event) => ({ event, s: summarise(event) }));
    const requests = new Set(summaries.filter(({ s }) => shown(s)).map(({ s }) => s.requestId));
    return summaries.filter(({ s }) => shown(s) || (s.kind === 'consent-decision' && requests.has(s.requestId))).map(({ event }) => event);
  };
  includeAudit.addEventListener('change', () => {
    state.includeAuditReads = includeAudit.checked;
    redraw();
  });
  const redraw = () => {
    tbody.replaceChildren(
      ...rows().map(({ summary: s, rules }) => {
        const refs = (d) => s.resources.filter((r) => r.disposition === d).map((r) => unversioned(r.reference));
        const list = (items, noun = 'resources') => {
          if (items.length === 0) return '—';
          const ul = h('ul', { class: 'refs' }, items.map((i) => h('li', null, i)));
          return items.length <= 5 ? ul : h('details', null, h('summary', null, `${items.length} ${noun}`), ul);
        };
        return h(
          'tr',
          { class: s.breakGlass ? 'btg-row' : '', dataset: { eventId: s.id } },
          h('td', null, h('time', { datetime: s.recorded }, formatInstant(s.recorded)), h('div', null, h('a', { href: `#/event/${encodeURIComponent(s.id)}`, 'aria-label': `Why? — request of ${formatInstant(s.recorded)}` }, 'Why?'))),
          h('td', null, s.requester || '—', s.organization ? h('div', { class: 'muted' }, s.organization) : null, s.client ? h('div', { class: 'muted' }, `client ${s.client}`) : null),
          h('td', null, purposeText(s.purposes) || '—'),
          h('td', null, list(refs('released'))),
          h('td', null, list(refs('redacted'))),
          h('td', null, list(refs('withheld'))),
          h('td', { class: 'rules-cell' }, list(rules, 'rules')),
        );
      }),
    );
    const n = rows().length;
    status.textContent = n === 0 && !state.next ? 'No disclosures recorded for this patient in this range.' : `${n} request${n === 1 ? '' : 's'} loaded${state.next ? ' — older ones can be loaded' : ' — complete'}.`;
    more.hidden = !state.next;
  };

  const ingest = (resources) => {
    for (const event of resources) {
      state.raw.push(event);
      const s = summarise(event);
      if (s.kind === 'consent-decision' && s.requestId && s.outcomeDesc) {
        const list = state.consentDecisions.get(s.requestId) ?? [];
        list.push(`consent ${s.outcomeDesc}`);
        state.consentDecisions.set(s.requestId, list);
      }
    }
  };

  const loadPage = async () => {
    const page = await searchPage(state.next);
    state.next = page.next;
    ingest(page.resources);
  };

  const load = async () => {
    if (state.loading || !state.next) return;
    state.loading = true;
    try {
      await loadPage();
      redraw();
    } catch (err) {
      status.textContent = errorText(err, 'audit events');
    } finally {
      state.loading = false;
    }
  };

  /** Exports cover the whole range: the remaining pages are fetched first (bounded). */
  const loadAll = async () => {
    while (state.next && state.raw.length < EXPORT_LIMIT) {
      status.textContent = `Fetching the whole range for export… ${state.raw.length} events so far`;
      await loadPage();
    }
    redraw();
  };
  const exportWith = (button, make) => {
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await loadAll();
        make();
        announce('Export ready.');
      } catch (err) {
        status.textContent = errorText(err, 'audit events');
      } finally {
        button.disabled = false;
      }
    });
  };
  const stamp = () => new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-');
  exportWith(csvButton, () => download(`accounting-${patientId}-${stamp()}.csv`, 'text/csv;charset=utf-8', accountingCsv(rows())));
  exportWith(bundleButton, () => download(`accounting-${patientId}-${stamp()}.json`, 'application/fhir+json', JSON.stringify(accountingBundle(exportedEvents()), null, 2)));
  more.addEventListener('click', load);
  return load();
}

/**
 * @param {HTMLElement} container
 * @param {string | undefined} patientId
 * @param {URLSearchParams} params
 * @param {(hash: string) => void} go
 */
export function renderPatient(container, patientId, params, go) {
  const input = h('input', { id: 'patient-id', name: 'patient', type: 'text', value: patientId ?? '', autocomplete: 'off', required: true });
  const from = h('input', { id: 'acc-from', name: 'from', type: 'date', value: params.get('from') ?? '' });
  const to = h('input', { id: 'acc-to', name: 'to', type: 'date', value: params.get('to') ?? '' });
  const form = h(
    'form',
    { id: 'patient-form', class: 'filters', role: 'search', 'aria-label': 'Choose a patient' },
    h('div', { class: 'field' }, h('label', { for: 'patient-id' }, 'Patient id'), input),
    h('div', { class: 'field' }, h('label', { for: 'acc-from' }, 'Disclosures from'), from),
    h('div', { class: 'field' }, h('label', { for: 'acc-to' }, 'to'), to),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show patient')),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const id = input.value.trim().replace(/^Patient\//, '');
    if (!id) return;
    const q = new URLSearchParams();
    if (from.value) q.set('from', from.value);
    if (to.value) q.set('to', to.value);
    go(`#/patient/${encodeURIComponent(id)}${q.size ? `?${q}` : ''}`);
  });
  const title = h('h1', { id: 'patient-title' }, patientId ? `Patient ${patientId}` : 'Patient');
  if (!patientId) {
    replace(container, title, form, h('p', null, 'Enter a patient id to see their consents, restrictions, harm determinations and accounting of disclosures.'));
    return Promise.resolve();
  }
  const consents = h('div', { id: 'patient-consents' });
  const harm = h('div', { id: 'patient-harm' });
  const accounting = h('div', { id: 'patient-accounting' });
  replace(
    container,
    title,
    form,
    h('section', { 'aria-labelledby': 'consents-title' }, h('h2', { id: 'consents-title' }, 'Consents and legal restrictions'), consents),
    h('section', { 'aria-labelledby': 'harm-title' }, h('h2', { id: 'harm-title' }, 'Harm determinations'), harm),
    h('section', { 'aria-labelledby': 'accounting-title' }, h('h2', { id: 'accounting-title' }, 'Accounting of disclosures'), accounting),
  );
  return Promise.all([
    renderConsents(consents, patientId),
    renderHarm(harm, patientId),
    renderAccounting(accounting, patientId, { from: params.get('from'), to: params.get('to') }),
  ]);
}
