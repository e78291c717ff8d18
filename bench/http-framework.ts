// Issue 15's lever "the HTTP framework's cost on the hot path, measured against plain node:http": the
// same trivial handler behind plain node:http and behind express 5 mounted as src/app.ts mounts the FHIR
// router (extended query parser, an ops router first, express.raw, the named wildcard route). Client and
// servers share this process; CPU time per request (process.cpuUsage) is compared, so the client's share
// cancels out and a busy shared machine distorts the result far less than a throughput figure.
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import express from 'express';
import { Pool } from 'undici';
import { fmt, machine, table } from './setup.ts';

const body = Buffer.from(JSON.stringify({ resourceType: 'Bundle', type: 'searchset', entry: [] }));
const path = '/fhir/Observation?patient=bench-permitted&_count=100';

const plain: RequestListener = (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/fhir+json; charset=utf-8' });
  res.end(body);
};

/** Express as the gateway mounts it; the options drop one part at a time to find what costs. */
function mountedLikeTheGateway(opts: { queryParser?: 'extended' | 'simple'; raw?: boolean } = {}): RequestListener {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', opts.queryParser ?? 'extended');
  const ops = express.Router();
  for (const p of ['/healthz', '/readyz', '/metrics']) ops.get(p, (_req, res) => void res.end('ok'));
  app.use(ops);
  const fhir = express.Router();
  const parts = opts.raw === false ? [] : [express.raw({ type: () => true, limit: 16 * 1024 * 1024 })];
  fhir.all(['/fhir', '/fhir/*path'], ...parts, (req: express.Request, res: express.Response) => {
    void req.query; // the gateway reads the parsed query
    res.writeHead(200, { 'content-type': 'application/fhir+json; charset=utf-8' });
    res.end(body);
  });
  app.use(fhir);
  return app;
}

async function listen(handler: RequestListener): Promise<Server> {
  const server = createServer(handler);
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return server;
}

/** CPU µs per request for `requests` requests, 10 in flight. */
async function cpuPerRequest(server: Server, requests: number): Promise<number> {
  const { port } = server.address() as AddressInfo;
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 10 });
  let sent = 0;
  const worker = async (): Promise<void> => {
    while (sent < requests) {
      sent++;
      const res = await pool.request({ path, method: 'GET' });
      await res.body.arrayBuffer();
    }
  };
  const start = process.cpuUsage();
  await Promise.all(Array.from({ length: 10 }, worker));
  const used = process.cpuUsage(start);
  await pool.close();
  return (used.user + used.system) / requests;
}

export async function run(): Promise<void> {
  const servers = {
    'node:http': await listen(plain),
    'express 5, mounted as the gateway': await listen(mountedLikeTheGateway()),
    '… with the simple query parser': await listen(mountedLikeTheGateway({ queryParser: 'simple' })),
    '… without express.raw on the route': await listen(mountedLikeTheGateway({ raw: false })),
  };
  const best: Record<string, number> = {};
  try {
    for (const server of Object.values(servers)) await cpuPerRequest(server, 2000); // warm-up
    for (let round = 0; round < 4; round++) {
      const order = round % 2 === 0 ? Object.entries(servers) : Object.entries(servers).reverse();
      for (const [name, server] of order) best[name] = Math.min(best[name] ?? Infinity, await cpuPerRequest(server, 10_000));
    }
  } finally {
    for (const server of Object.values(servers)) server.close();
  }
  const base = best['node:http'];
  console.log(`\n${machine()}; CPU per request, client included, least of 4 rounds × 10,000 (ABBA)\n`);
  console.log(table(['server', 'µs CPU / request', 'added by the framework'], Object.entries(best).map(([name, us]) => [name, fmt.n(us), name === 'node:http' ? '' : `+${fmt.n(us - base)} µs`])));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await run();
