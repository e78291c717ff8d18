// Where the upstream lives, and which URLs stay inside it (SPEC §5 paging: a link that points
// elsewhere is never followed).

export interface UpstreamBase {
  /** Normalised base URL without a trailing slash, e.g. `http://127.0.0.1:1234/fhir`. */
  readonly baseUrl: string;
  readonly protocol: string;
  /** host[:port] as WHATWG URL normalises it (default ports dropped, lower case). */
  readonly host: string;
  readonly origin: string;
  /** Path of the base without a trailing slash; '' when the base is the server root. */
  readonly basePath: string;
}

export function parseUpstreamBase(baseUrl: string): UpstreamBase {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new TypeError('UPSTREAM_URL is not an absolute URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError('UPSTREAM_URL must be http or https');
  if (url.username || url.password) throw new TypeError('UPSTREAM_URL must not carry credentials (use UPSTREAM_BEARER_TOKEN)');
  if (url.search || url.hash) throw new TypeError('UPSTREAM_URL must not carry a query or fragment');
  const basePath = url.pathname.replace(/\/+$/, '');
  return { baseUrl: `${url.origin}${basePath}`, protocol: url.protocol, host: url.host, origin: url.origin, basePath };
}

// Encoded dots, slashes and backslashes could be decoded by the upstream into a path outside the base.
const smuggledSeparator = /%2e|%2f|%5c|\\/i;

/** The URL parsed when it is on the upstream's own origin (scheme, host and port) without credentials; else null. */
function onUpstreamOrigin(base: UpstreamBase, url: string): URL | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  return parsed.protocol === base.protocol && parsed.host === base.host && !parsed.username && !parsed.password ? parsed : null;
}

/**
 * Maps an absolute URL on the upstream (a Bundle.link, a Location) to a path relative to its base
 * (`Observation?_offset=20`, or `?_getpages=…` for servers that page on the base itself).
 * Returns null for any other scheme, host, port, path outside the base, credentials, or a relative URL.
 */
export function rewriteUpstreamUrl(base: UpstreamBase, url: string): string | null {
  const parsed = onUpstreamOrigin(base, url);
  if (!parsed) return null;
  const path = parsed.pathname;
  let relative: string;
  if (path === base.basePath || path === `${base.basePath}/`) relative = '';
  else if (path.startsWith(`${base.basePath}/`)) relative = path.slice(base.basePath.length + 1);
  else return null;
  if (smuggledSeparator.test(relative)) return null;
  return relative + parsed.search;
}

/**
 * The request-target for a base-relative path. Refuses dot segments, encoded separators and
 * characters that would change the request line, so no caller can leave the base by accident.
 */
export function upstreamRequestTarget(base: UpstreamBase, relative: string): string | null {
  const trimmed = relative.replace(/^\/+/, '');
  if (/[\s#]/.test(trimmed)) return null;
  const queryAt = trimmed.indexOf('?');
  const pathPart = queryAt === -1 ? trimmed : trimmed.slice(0, queryAt);
  if (smuggledSeparator.test(pathPart)) return null;
  if (pathPart.split('/').some((segment) => segment === '.' || segment === '..')) return null;
  if (pathPart === '') return `${base.basePath === '' ? '/' : base.basePath}${trimmed}`;
  return `${base.basePath}/${trimmed}`;
}

/**
 * The request-target for an absolute URL anywhere on the upstream's origin (Bulk Data status and file
 * URLs may live outside the FHIR base, SPEC §5.1), or null for any other origin, credentials or smuggled separators.
 */
export function originRequestTarget(base: UpstreamBase, url: string): string | null {
  const parsed = onUpstreamOrigin(base, url);
  if (!parsed) return null;
  if (smuggledSeparator.test(parsed.pathname) || parsed.pathname.split('/').some((s) => s === '.' || s === '..')) return null;
  return parsed.pathname + parsed.search;
}
