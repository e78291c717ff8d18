// The console's only way out: the gateway's own FHIR endpoints (and its journal-status endpoint), with
// the auditor's bearer token. Paths are resolved against the page, so the console works behind any
// public base the gateway is served under.
/* global sessionStorage, location, atob */

const TOKEN_KEY = 'dg-console-token';
/** The directory the console page lives in: `/console` → `/`. */
const root = new URL('./', location.href);
export const fhirBase = new URL('fhir/', root).href;

export class FhirError extends Error {
  /** @param {number} status @param {string} message @param {unknown} [outcome] */
  constructor(status, message, outcome) {
    super(message);
    this.status = status;
    this.outcome = outcome;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

/** @param {string} token */
export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Unverified claims of a JWT, for display only (who is signed in); undefined for opaque tokens. */
export function tokenClaims(token) {
  const part = token?.split('.')[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const json = new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    const claims = JSON.parse(json);
    return claims && typeof claims === 'object' ? claims : undefined;
  } catch {
    return undefined;
  }
}

/** Listeners told when the gateway refuses the session's token (expired, revoked). */
const unauthorisedListeners = new Set();
export function onUnauthorised(listener) {
  unauthorisedListeners.add(listener);
}

/**
 * A gateway link (absolute, under its public base) or a FHIR-relative path → a same-origin URL.
 * @param {string} pathOrUrl
 */
export function resolveFhirUrl(pathOrUrl) {
  if (/^https?:\/\//i.test(pathOrUrl)) {
    const u = new URL(pathOrUrl);
    return new URL(u.pathname + u.search, location.origin).href;
  }
  return new URL(pathOrUrl.replace(/^\//, ''), fhirBase).href;
}

function outcomeText(body) {
  const issues = body && body.resourceType === 'OperationOutcome' ? body.issue ?? [] : [];
  const text = issues.map((i) => i.details?.text ?? i.diagnostics ?? i.code).filter(Boolean).join('; ');
  return text || undefined;
}

/**
 * @param {string} pathOrUrl FHIR-relative path (`AuditEvent?…`) or a gateway link
 * @param {{ method?: string, body?: unknown, token?: string, signal?: AbortSignal }} [opts]
 */
export async function fhir(pathOrUrl, opts = {}) {
  const token = opts.token ?? getToken();
  if (!token) throw new FhirError(401, 'not signed in');
  const headers = { accept: 'application/fhir+json', authorization: `Bearer ${token}` };
  let body;
  if (opts.body !== undefined) {
    headers['content-type'] = 'application/fhir+json';
    body = JSON.stringify(opts.body);
  }
  const response = await fetch(resolveFhirUrl(pathOrUrl), { method: opts.method ?? 'GET', headers, body, signal: opts.signal, cache: 'no-store' });
  const text = await response.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!response.ok) {
    if (response.status === 401 && opts.token === undefined) for (const l of unauthorisedListeners) l();
    throw new FhirError(response.status, outcomeText(json) ?? `the gateway answered ${response.status}`, json);
  }
  return json;
}

/** One page of a search: its resources and the gateway's next link. */
export async function searchPage(pathOrUrl, opts) {
  const bundle = await fhir(pathOrUrl, opts);
  const resources = (bundle?.entry ?? []).filter((e) => e.search?.mode !== 'outcome' && e.resource).map((e) => e.resource);
  const next = (bundle?.link ?? []).find((l) => l.relation === 'next')?.url;
  return { resources, next, bundle };
}

/** The journal integrity endpoint of the console router. */
export async function journalStatus() {
  const token = getToken();
  const response = await fetch(new URL('console/api/journal-status', root).href, { headers: { authorization: `Bearer ${token}` }, cache: 'no-store' });
  const json = await response.json().catch(() => undefined);
  if (!response.ok) throw new FhirError(response.status, json?.error ?? `journal status answered ${response.status}`);
  return json;
}

/** Whether the embedded demo's dev issuer is present (only then is a demo token offered). */
export async function devIssuerAvailable() {
  try {
    const response = await fetch(new URL('dev-issuer/jwks.json', root).href, { cache: 'no-store' });
    return response.ok;
  } catch {
    return false;
  }
}

/** A demo auditor token from the embedded dev issuer. */
export async function demoAuditorToken() {
  const response = await fetch(new URL('dev-issuer/token', root).href, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'persona=auditor',
    cache: 'no-store',
  });
  if (!response.ok) throw new Error('the demo issuer did not answer');
  const json = await response.json();
  if (typeof json?.access_token !== 'string') throw new Error('the demo issuer gave no token');
  return json.access_token;
}
