// One server under test per child process (forked by bench/run.ts), so its CPU and
// peak RSS are its own: the canned upstream, the baselines (pass-through, parse floor) and the gateway.
// Protocol over IPC: parent sends a ServeRequest, child answers { url } once listening; 'stats' → counters;
// 'stop' → closes and exits (so `--cpu-prof` can write its profile).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express, { type Request, type Response } from 'express';
import { Pool, stream } from 'undici';
import type { JSONWebKeySet } from 'jose';
import { createGateway, type Gateway } from '../src/app.ts';
import type { JournalStats } from '../src/audit/journal.ts';
import { policySchema } from '../src/config/policy.ts';
import { settingsSchema } from '../src/config/settings.ts';
import { createLogger } from '../src/ops/logger.ts';
import { startBareGateway, type BareGateway } from './bare-gateway.ts';

export type ServeRequest =
  | { readonly role: 'canned'; readonly origin: string }
  | { readonly role: 'passthrough' | 'floor' | 'floor-express'; readonly target: string }
  | { readonly role: 'gateway'; readonly upstreamUrl: string; readonly jwks: JSONWebKeySet; readonly issuer: string }
  | { readonly role: 'bare-gateway'; readonly upstreamUrl: string; readonly jwks: JSONWebKeySet; readonly issuer: string; readonly audit: 'journal' | 'none' };

export interface ServeStats {
  readonly requests: number;
  readonly misses: number;
  /** Requests per path and parameter names (values dropped), for the canned upstream. */
  readonly byShape: Record<string, number>;
  /** The gateway's audit journal so far: requests recorded (appends), events and bytes committed. */
  readonly audit?: Pick<JournalStats, 'appends' | 'events' | 'bytes'>;
}

interface Recorded {
  readonly status: number;
  readonly contentType: string;
  readonly body: Buffer;
}

let requests = 0;
let misses = 0;
let auditStats: (() => JournalStats) | undefined;
const byShape: Record<string, number> = {};

function shapeOf(url: string): string {
  const [path, query = ''] = url.split('?');
  const names = [...new URLSearchParams(query).keys()].sort().join('&');
  return `${path.replace(/\/[^/]+$/, (last) => (/^\/[A-Z]/.test(last) ? last : '/{id}'))}?${names}`;
}

function listen(server: Server): Promise<string> {
  return new Promise((ok, fail) => {
    server.once('error', fail).listen(0, '127.0.0.1', () => ok(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  });
}

/** Answers GETs from memory; a miss is fetched once from the embedded upstream, its links rewritten to this base. */
async function canned(origin: string): Promise<{ url: string; close: () => Promise<void> }> {
  const recorded = new Map<string, Promise<Recorded>>();
  let self = '';
  const upstreamOrigin = new URL(origin).origin;
  const record = async (req: IncomingMessage): Promise<Recorded> => {
    misses++;
    const res = await fetch(`${upstreamOrigin}${req.url ?? '/'}`, { headers: { accept: 'application/fhir+json' } });
    const text = (await res.text()).replaceAll(upstreamOrigin, self);
    return { status: res.status, contentType: res.headers.get('content-type') ?? 'application/fhir+json', body: Buffer.from(text) };
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'POST') return acceptAuditBatch(req, res);
    requests++;
    const key = req.url ?? '/';
    const shape = shapeOf(key);
    byShape[shape] = (byShape[shape] ?? 0) + 1;
    // Only GET is recorded; the policy store's change polls carry a moving timestamp and are not kept.
    const keep = req.method === 'GET' && !key.includes('_lastUpdated=');
    let answer = keep ? recorded.get(key) : undefined;
    if (!answer) {
      answer = record(req);
      if (keep) recorded.set(key, answer);
    }
    answer.then(
      (r) => {
        res.writeHead(r.status, { 'content-type': r.contentType, 'content-length': r.body.length });
        res.end(r.body);
      },
      () => {
        recorded.delete(key);
        res.writeHead(502).end();
      },
    );
  });
  server.keepAliveTimeout = 60_000;
  self = await listen(server);
  return { url: self, close: () => closeServer(server) };
}

/**
 * The gateway's audit forwarder POSTs batches of `PUT AuditEvent/<id>`: answered 200 per entry without
 * storing them (the canned upstream isolates the gateway's cost; storing would load the shared cores).
 */
function acceptAuditBatch(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    let entries = 0;
    for (let at = text.indexOf('"method":"PUT"'); at !== -1; at = text.indexOf('"method":"PUT"', at + 1)) entries++;
    const body = Buffer.from(JSON.stringify({ resourceType: 'Bundle', type: 'batch-response', entry: Array.from({ length: entries }, () => ({ response: { status: '200 OK' } })) }));
    res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': body.length });
    res.end(body);
  });
}

type Baseline = (pool: Pool, origin: string, req: IncomingMessage, res: ServerResponse) => Promise<unknown>;

/** A baseline server: each request handled against a 32-connection pool to the target; any failure → 502. */
async function baseline(target: string, handle: Baseline): Promise<{ url: string; close: () => Promise<void> }> {
  const origin = new URL(target).origin;
  const pool = new Pool(origin, { connections: 32 });
  const server = createServer((req, res) => {
    requests++;
    handle(pool, origin, req, res).catch(() => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
  });
  server.keepAliveTimeout = 60_000;
  const url = await listen(server);
  return { url, close: async () => {
    await closeServer(server);
    await pool.close();
  } };
}

/** A plain reverse proxy: undici `stream` piping the upstream body straight into the response. */
const passthrough = (target: string) =>
  baseline(target, (pool, origin, req, res) =>
    stream(`${origin}${req.url ?? '/'}`, { method: 'GET', dispatcher: pool, headers: { accept: 'application/fhir+json' } }, ({ statusCode, headers }) => {
      res.writeHead(statusCode, { 'content-type': String(headers['content-type'] ?? 'application/fhir+json') });
      return res;
    }),
  );

/** The least an inspecting gateway does: buffer the upstream body, JSON.parse it, JSON.stringify it. */
const floor = (target: string) =>
  baseline(target, async (pool, _origin, req, res) => {
    const { statusCode, body } = await pool.request({ path: req.url ?? '/', method: 'GET', headers: { accept: 'application/fhir+json' } });
    const out = JSON.stringify(JSON.parse(await body.text()) as unknown);
    res.writeHead(statusCode, { 'content-type': 'application/fhir+json; charset=utf-8' });
    res.end(out);
  });

/**
 * The same floor mounted as the gateway mounts its FHIR handler (src/app.ts, src/enforce/pipeline.ts):
 * express 5, extended query parser, an ops router before it, `express.raw` body parsing, the named
 * wildcard route. The ratio of this to the plain floor is what the framework costs on the hot path.
 */
async function floorExpress(target: string): Promise<{ url: string; close: () => Promise<void> }> {
  const pool = new Pool(new URL(target).origin, { connections: 32 });
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'extended');
  const ops = express.Router();
  for (const path of ['/healthz', '/readyz', '/metrics']) ops.get(path, (_req, res) => void res.end('ok'));
  app.use(ops);
  const fhir = express.Router();
  fhir.all(['/fhir', '/fhir/*path'], express.raw({ type: () => true, limit: 16 * 1024 * 1024 }), (req: Request, res: Response) => {
    requests++;
    pool
      .request({ path: req.url, method: 'GET', headers: { accept: 'application/fhir+json' } })
      .then(async ({ statusCode, body }) => {
        const out = JSON.stringify(JSON.parse(await body.text()) as unknown);
        res.writeHead(statusCode, { 'content-type': 'application/fhir+json; charset=utf-8' });
        res.end(out);
      })
      .catch(() => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
  });
  app.use(fhir);
  const server = createServer(app);
  server.keepAliveTimeout = 60_000;
  const url = await listen(server);
  return { url, close: async () => {
    await closeServer(server);
    await pool.close();
  } };
}

/** The real gateway, assembled by createGateway exactly as the harness does (journal in a temp dir). */
async function gateway(req: Extract<ServeRequest, { role: 'gateway' }>): Promise<{ url: string; close: () => Promise<void> }> {
  const auditDir = await mkdtemp(join(tmpdir(), 'dg-bench-audit-'));
  const parsed = settingsSchema.parse({ PORT: '0', UPSTREAM_URL: req.upstreamUrl, AUDIT_DIR: auditDir, LOG_LEVEL: 'silent' });
  const probe = createServer();
  const port = Number(new URL(await listen(probe)).port);
  await closeServer(probe);
  const gw: Gateway = await createGateway({
    settings: { ...parsed, policy: policySchema.parse({}), AUTH_ISSUER: req.issuer },
    embedded: { upstreamUrl: req.upstreamUrl, jwks: req.jwks, issuer: req.issuer },
    logger: createLogger('silent'),
    publicBaseUrl: `http://127.0.0.1:${port}`,
  });
  await gw.listen(port, '127.0.0.1');
  auditStats = () => gw.journal.stats();
  return { url: gw.fhirBase, close: async () => {
    await gw.close();
    await rm(auditDir, { recursive: true, force: true });
  } };
}

async function bare(req: Extract<ServeRequest, { role: 'bare-gateway' }>): Promise<{ url: string; close: () => Promise<void> }> {
  const gw: BareGateway = await startBareGateway(req);
  return { url: gw.fhirBase, close: () => gw.close() };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((ok) => {
    server.close(() => ok());
    server.closeAllConnections();
  });
}

async function start(req: ServeRequest): Promise<{ url: string; close: () => Promise<void> }> {
  switch (req.role) {
    case 'canned':
      return canned(req.origin);
    case 'passthrough':
      return passthrough(req.target);
    case 'floor':
      return floor(req.target);
    case 'floor-express':
      return floorExpress(req.target);
    case 'gateway':
      return gateway(req);
    case 'bare-gateway':
      return bare(req);
  }
}

let running: { close: () => Promise<void> } | undefined;
process.on('message', (msg: unknown) => {
  const send = (m: unknown): void => void process.send?.(m);
  if (msg === 'stats') return send({ stats: { requests, misses, byShape: { ...byShape }, audit: auditStats?.() } satisfies ServeStats });
  if (msg === 'stop') {
    void (running?.close() ?? Promise.resolve()).finally(() => process.exit(0));
    return;
  }
  start(msg as ServeRequest).then(
    (s) => {
      running = s;
      send({ url: s.url });
    },
    (err: unknown) => send({ error: (err as Error).stack ?? String(err) }),
  );
});
process.on('disconnect', () => process.exit(0));
