// Console shell (issue 8): sign-in with an auditor token, hash routing between the views, and the
// journal integrity line. Nothing but the sign-in form is shown until the gateway accepts the token.
/* global location, history */
import { replace } from './dom.js';
import { FhirError, clearToken, demoAuditorToken, devIssuerAvailable, fhir, getToken, journalStatus, onUnauthorised, setToken, tokenClaims } from './fhir.js';
import { renderPatient } from './patient.js';
import { renderTimeline } from './timeline.js';
import { renderWhy } from './why.js';

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const views = ['timeline', 'patient', 'why'];

/** Checks a token with the gateway itself: an auditor may search AuditEvents. */
async function checkToken(token) {
  try {
    await fhir('AuditEvent?_count=1', { token });
    return undefined;
  } catch (err) {
    if (err instanceof FhirError && err.status === 401) return 'The gateway refused this token (invalid, expired or not issued for this gateway).';
    if (err instanceof FhirError && err.status === 403) return 'This token may not read audit events: an auditor token needs user/AuditEvent.rs.';
    return `The gateway could not be asked: ${err.message}`;
  }
}

function showSignIn(message) {
  $('sign-in').hidden = false;
  $('nav').hidden = true;
  $('session').hidden = true;
  $('integrity').hidden = true;
  for (const v of views) {
    $(`view-${v}`).hidden = true;
    $(`view-${v}`).replaceChildren();
  }
  $('sign-in-error').textContent = message ?? '';
  document.body.dataset.state = 'signed-out';
}

async function refreshIntegrity() {
  const text = $('integrity-text');
  const box = $('integrity');
  text.textContent = 'checking…';
  box.classList.remove('ok', 'bad');
  try {
    const status = await journalStatus();
    if (status.ok) {
      box.classList.add('ok');
      text.textContent = `hash chain intact — ${status.events} events verified at ${status.lastVerified}${status.tornTail ? ' (an unacknowledged last line was cut short by a crash)' : ''}`;
    } else {
      box.classList.add('bad');
      const bad = status.firstBad ?? {};
      text.textContent = `CHAIN BROKEN — ${status.events} events verified, then ${bad.segment ?? '?'} line ${bad.line ?? '?'}${bad.seq !== undefined ? ` (seq ${bad.seq})` : ''}: ${bad.problem ?? 'unknown problem'} (checked ${status.lastVerified})`;
    }
  } catch (err) {
    box.classList.add('bad');
    text.textContent = `status unavailable: ${err.message}`;
  }
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query) };
}

let routeSeq = 0;
async function route() {
  if (!getToken()) return;
  const seq = ++routeSeq;
  const { parts, params } = parseHash();
  let view = parts[0] === 'event' ? 'why' : parts[0];
  if (!views.includes(view)) {
    history.replaceState(null, '', '#/timeline');
    view = 'timeline';
  }
  for (const v of views) $(`view-${v}`).hidden = v !== view;
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.view === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const container = $(`view-${view}`);
  container.setAttribute('aria-busy', 'true');
  document.body.dataset.view = view;
  // Each render gets its own host: a slower earlier render can only fill a host that is no longer shown.
  const host = document.createElement('div');
  container.replaceChildren(host);
  try {
    if (view === 'timeline') await renderTimeline(host, params, go);
    else if (view === 'patient') await renderPatient(host, parts[1], params, go);
    else await renderWhy(host, parts[0] === 'event' ? parts[1] : undefined, go);
  } finally {
    if (seq === routeSeq) {
      // Which address this render answered: a reader can tell a finished render from the previous one's.
      container.dataset.renderedFor = location.hash;
      container.setAttribute('aria-busy', 'false');
    }
  }
  if (seq === routeSeq) container.querySelector('h1')?.setAttribute('tabindex', '-1');
}

function showConsole() {
  const claims = tokenClaims(getToken());
  const who = [claims?.fhirUser ?? claims?.sub, claims?.client_id ? `via ${claims.client_id}` : undefined].filter(Boolean).join(' ');
  replace($('signed-in-as'), who ? `Signed in as ${who}` : 'Signed in');
  $('sign-in').hidden = true;
  $('nav').hidden = false;
  $('session').hidden = false;
  $('integrity').hidden = false;
  document.body.dataset.state = 'signed-in';
  refreshIntegrity();
  if (!location.hash || location.hash === '#') history.replaceState(null, '', '#/timeline');
  return route();
}

async function signIn(token) {
  const trimmed = token.trim().replace(/^Bearer\s+/i, '');
  if (!trimmed) {
    $('sign-in-error').textContent = 'Paste an auditor access token to sign in.';
    $('token-input').focus();
    return;
  }
  $('sign-in-submit').setAttribute('disabled', '');
  $('sign-in-error').textContent = '';
  const problem = await checkToken(trimmed);
  $('sign-in-submit').removeAttribute('disabled');
  if (problem) {
    $('sign-in-error').textContent = problem;
    $('token-input').focus();
    return;
  }
  setToken(trimmed);
  /** @type {HTMLTextAreaElement} */ ($('token-input')).value = '';
  await showConsole();
  $('main').focus();
}

function start() {
  $('sign-in-form').addEventListener('submit', (event) => {
    event.preventDefault();
    signIn(/** @type {HTMLTextAreaElement} */ ($('token-input')).value);
  });
  $('sign-out').addEventListener('click', () => {
    clearToken();
    history.replaceState(null, '', location.pathname);
    showSignIn('Signed out.');
  });
  $('integrity-refresh').addEventListener('click', () => refreshIntegrity());
  onUnauthorised(() => {
    clearToken();
    showSignIn('The gateway no longer accepts the token (expired?). Sign in again.');
  });
  window.addEventListener('hashchange', () => route());
  devIssuerAvailable().then((available) => {
    const button = $('demo-token');
    if (!available) return;
    button.hidden = false;
    button.addEventListener('click', async () => {
      try {
        await signIn(await demoAuditorToken());
      } catch (err) {
        $('sign-in-error').textContent = `The demo issuer failed: ${err.message}`;
      }
    });
  });
  const token = getToken();
  if (!token) {
    showSignIn();
    return;
  }
  // A stored token is re-checked before anything is shown.
  checkToken(token).then((problem) => {
    if (problem) {
      clearToken();
      showSignIn(problem);
    } else showConsole();
  });
}

start();
