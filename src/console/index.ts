// The auditor and privacy-officer console (issue 8): static assets under /console, and one JSON endpoint
// for journal integrity. Everything else the console shows comes from the gateway's own FHIR endpoints,
// called from the browser with the auditor's token — this router holds no data and no second verifier.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { JournalStatusCache } from './journal-status.ts';

export interface ConsoleOptions {
  /** The audit journal directory the gateway appends to (SPEC §6). */
  readonly auditDir: string;
  /** The gateway's FHIR base (`…/fhir`): used to check an auditor token when the local socket is unknown. */
  readonly fhirBase: string;
  /** Re-verify the hash chain at most this often (ms); verifying reads the whole journal. Default 30 s. */
  readonly verifyMaxAgeMs?: number;
}

const staticDir = fileURLToPath(new URL('./static/', import.meta.url));

/** Locked down: the console runs only its own scripts and talks only to its own origin (offline, no CDN). */
const securityHeaders: Record<string, string> = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Opener-Policy': 'same-origin',
};

function setSecurityHeaders(res: express.Response): void {
  for (const [name, value] of Object.entries(securityHeaders)) res.setHeader(name, value);
}

function bearerOf(req: express.Request): string | undefined {
  const header = req.headers.authorization;
  const match = typeof header === 'string' ? /^Bearer\s+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(header) : null;
  return match?.[1];
}

/** The gateway reached through the socket this request came in on: the same process, whatever proxy is in front. */
function ownFhirBase(req: express.Request, fallback: string): string {
  const { localAddress, localPort } = req.socket;
  if (!localAddress || !localPort) return fallback.replace(/\/+$/, '');
  const host = localAddress.startsWith('::ffff:') ? localAddress.slice('::ffff:'.length) : localAddress;
  return `http://${host.includes(':') ? `[${host}]` : host}:${localPort}/fhir`;
}

/** An auditor is whoever the gateway lets search AuditEvents: asked of the gateway itself, not re-implemented. */
async function auditorCheck(fhirBase: string, token: string): Promise<number> {
  const response = await fetch(`${fhirBase}/AuditEvent?_count=1`, {
    headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+json', 'x-request-id': `console-journal-status-${Date.now()}` },
    signal: AbortSignal.timeout(15_000),
  });
  await response.arrayBuffer();
  return response.status;
}

export function consoleRouter(opts: ConsoleOptions): express.Router {
  const router = express.Router();
  const journalStatus = new JournalStatusCache(opts.auditDir, opts.verifyMaxAgeMs ?? 30_000);
  // A build that left the assets behind (they are not TypeScript) must not take the gateway down with it.
  const installed = existsSync(join(staticDir, 'index.html'));
  if (!installed) {
    router.use('/console', (_req, res) => {
      setSecurityHeaders(res);
      res.status(503).type('text/plain').send('the console assets are not installed (copy src/console/static next to the compiled console)');
    });
    return router;
  }

  const sendIndex = (req: express.Request, res: express.Response): void => {
    // Relative asset and API paths resolve from /console, not /console/ (express matches both).
    if (req.path.endsWith('/')) {
      res.redirect(301, '../console');
      return;
    }
    setSecurityHeaders(res);
    res.setHeader('Cache-Control', 'no-store');
    res.sendFile('index.html', { root: staticDir });
  };
  router.get('/console', sendIndex);

  router.use(
    '/console/assets',
    express.static(staticDir, {
      index: false,
      fallthrough: true,
      redirect: false,
      setHeaders: (res) => {
        setSecurityHeaders(res);
        res.setHeader('Cache-Control', 'no-cache');
      },
    }),
  );
  router.use('/console/assets', (_req, res) => {
    setSecurityHeaders(res);
    res.status(404).type('text/plain').send('not found');
  });

  router.get('/console/api/journal-status', async (req, res) => {
    setSecurityHeaders(res);
    res.setHeader('Cache-Control', 'no-store');
    const token = bearerOf(req);
    if (!token) {
      res.status(401).setHeader('WWW-Authenticate', 'Bearer').json({ error: 'an auditor bearer token is required' });
      return;
    }
    let status: number;
    try {
      status = await auditorCheck(ownFhirBase(req, opts.fhirBase), token);
    } catch {
      res.status(503).json({ error: 'the gateway could not check the token' });
      return;
    }
    if (status === 401) {
      res.status(401).setHeader('WWW-Authenticate', 'Bearer error="invalid_token"').json({ error: 'the token was refused' });
      return;
    }
    if (status !== 200) {
      res.status(403).json({ error: 'the token may not read audit events' });
      return;
    }
    try {
      res.json(await journalStatus.current());
    } catch {
      res.status(500).json({ error: 'the journal could not be read' });
    }
  });

  return router;
}

export type { JournalStatus } from './journal-status.ts';
