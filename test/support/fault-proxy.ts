// A switchable HTTP proxy between the gateway and a real FHIR upstream, for fault injection (issue 6,
// SPEC §5 "fail closed"). In `pass` mode it forwards faithfully (rewriting the upstream's own absolute
// URLs to the proxy's, so paging links stay inside the base); every other mode breaks the exchange one
// way. `only` limits a fault to matching request targets (e.g. only `Consent?`/`Flag?` searches).
import { createServer, request as httpRequest, Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';

export type FaultMode =
  /** Forward faithfully. */
  | 'pass'
  /** Nothing listens on the port (ECONNREFUSED). */
  | 'down'
  /** Accepts the connection, then resets it (TCP RST) before any answer. */
  | 'refuse'
  /** Never answers: the gateway's upstream timeout must fire. */
  | 'slow'
  /** Sends the headers and half the body, then stalls. */
  | 'slow-body'
  /** Sends the headers and half the body, then resets the connection. */
  | 'reset-mid-body'
  /** 200 application/fhir+json whose body is the real answer cut short (not valid JSON). */
  | 'malformed-json'
  /** 500 text/html error page that echoes the real answer (a debug page leaking data). */
  | 'html-error'
  /** The real answer, labelled text/plain. */
  | 'wrong-content-type'
  /** The real answer padded past the size limit, with Content-Length. */
  | 'oversized'
  /** The same, chunked (no Content-Length): the limit must be counted while streaming. */
  | 'oversized-chunked'
  /** A small gzip body that expands to far more than the size limit. */
  | 'gzip-bomb'
  /** 500 with a well-formed OperationOutcome. */
  | 'status-500'
  /** The real answer with its `next` link (added if absent) pointing at another host. */
  | 'foreign-next-link';

export interface FaultProxyOptions {
  /** Bytes an oversized body carries (default 1 MiB). */
  readonly oversizeBytes?: number;
  /** Bytes a gzip bomb expands to (default 16 MiB). */
  readonly bombBytes?: number;
}

export interface FaultProxy {
  /** The proxy's FHIR base (same path as the target's), e.g. `http://127.0.0.1:PORT/fhir`. */
  readonly url: string;
  readonly mode: FaultMode;
  /** Requests the current fault was applied to since the last `set`. */
  readonly faulted: number;
  /** Request targets seen since the last `set` (path and query). */
  readonly seen: readonly string[];
  /** Switches the fault; open connections are dropped so no request straddles two modes. */
  set(mode: FaultMode, opts?: { readonly only?: RegExp }): Promise<void>;
  close(): Promise<void>;
}

/** Where a foreign next link points: a host the gateway must never follow. */
export const FOREIGN_HOST = 'http://upstream.attacker.invalid:8443';

interface Forwarded {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

export async function startFaultProxy(targetBase: string, opts: FaultProxyOptions = {}): Promise<FaultProxy> {
  const target = new URL(targetBase);
  const agent = new Agent({ keepAlive: true, maxSockets: 32 });
  const sockets = new Set<Socket>();
  const stalled = new Set<ServerResponse>();
  let mode: FaultMode = 'pass';
  let only: RegExp | undefined;
  let faulted = 0;
  let seen: string[] = [];
  let proxyOrigin = '';
  let port = 0;
  const oversizeBytes = opts.oversizeBytes ?? 1024 * 1024;
  let bomb: Buffer | undefined;
  // Built once, before the fault is switched on, so compressing it never delays an answer.
  const gzipBomb = (): Buffer =>
    (bomb ??= gzipSync(Buffer.from(`{"resourceType":"Bundle","type":"searchset","padding":"${'A'.repeat(opts.bombBytes ?? 16 * 1024 * 1024)}"}`)));

  function forward(req: IncomingMessage, body: Buffer): Promise<Forwarded> {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined || ['host', 'connection', 'accept-encoding', 'content-length', 'keep-alive'].includes(name)) continue;
      headers[name] = Array.isArray(value) ? value.join(', ') : value;
    }
    headers['accept-encoding'] = 'identity';
    if (body.length > 0) headers['content-length'] = String(body.length);
    return new Promise((resolve, reject) => {
      const upstreamReq = httpRequest(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers, agent },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const flat: Record<string, string> = {};
            for (const [name, value] of Object.entries(res.headers)) {
              if (value !== undefined && !['connection', 'keep-alive', 'transfer-encoding', 'content-length'].includes(name)) flat[name] = Array.isArray(value) ? value.join(', ') : value;
            }
            // The upstream names itself in links, fullUrls and Location: as seen through the proxy, that is the proxy.
            const text = Buffer.concat(chunks).toString('utf8').split(target.origin).join(proxyOrigin);
            if (flat.location) flat.location = flat.location.split(target.origin).join(proxyOrigin);
            if (flat['content-location']) flat['content-location'] = flat['content-location'].split(target.origin).join(proxyOrigin);
            resolve({ status: res.statusCode ?? 502, headers: flat, body: Buffer.from(text, 'utf8') });
          });
        },
      );
      upstreamReq.on('error', reject);
      upstreamReq.end(body);
    });
  }

  function reply(res: ServerResponse, status: number, headers: Record<string, string>, body: Buffer): void {
    res.writeHead(status, { ...headers, 'content-length': String(body.length) });
    res.end(body);
  }

  /** Headers with the full length, then half the body; the caller decides what happens next. */
  function halfBody(res: ServerResponse, answer: Forwarded): void {
    res.writeHead(answer.status, { ...answer.headers, 'content-length': String(answer.body.length) });
    res.write(answer.body.subarray(0, Math.floor(answer.body.length / 2)));
  }

  function padded(answer: Forwarded, bytes: number): Buffer {
    // Still valid JSON, so only the size can be the reason for refusing it.
    const text = answer.body.toString('utf8').trimEnd();
    const open = text.endsWith('}') ? text.slice(0, -1) : '{"resourceType":"Bundle"';
    return Buffer.from(`${open},"padding":"${'x'.repeat(bytes)}"}`, 'utf8');
  }

  function withForeignNext(answer: Forwarded): Buffer {
    let parsed: { resourceType?: string; link?: { relation: string; url: string }[] };
    try {
      parsed = JSON.parse(answer.body.toString('utf8')) as typeof parsed;
    } catch {
      return answer.body;
    }
    if (parsed.resourceType !== 'Bundle') return answer.body;
    const links = (parsed.link ?? []).filter((l) => l.relation !== 'next');
    const existing = parsed.link?.find((l) => l.relation === 'next')?.url;
    const path = existing ? new URL(existing).pathname + new URL(existing).search : `${target.pathname}/Observation?_offset=1`;
    links.push({ relation: 'next', url: `${FOREIGN_HOST}${path}` });
    parsed.link = links;
    return Buffer.from(JSON.stringify(parsed), 'utf8');
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const targetPath = req.url ?? '/';
    seen.push(targetPath);
    const applies = mode !== 'pass' && (only === undefined || only.test(targetPath));
    if (!applies) {
      const answer = await forward(req, body);
      reply(res, answer.status, answer.headers, answer.body);
      return;
    }
    faulted++;
    switch (mode) {
      case 'down':
      case 'refuse':
        req.socket.resetAndDestroy();
        return;
      case 'slow':
        stalled.add(res);
        return;
      case 'status-500':
        reply(res, 500, { 'content-type': 'application/fhir+json' }, Buffer.from(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', details: { text: 'database unavailable' } }] })));
        return;
      case 'gzip-bomb': {
        reply(res, 200, { 'content-type': 'application/fhir+json', 'content-encoding': 'gzip' }, gzipBomb());
        return;
      }
      default:
        break;
    }
    const answer = await forward(req, body);
    switch (mode) {
      case 'slow-body':
        halfBody(res, answer);
        stalled.add(res);
        return;
      case 'reset-mid-body':
        halfBody(res, answer);
        // Let the half body reach the wire before the reset.
        setTimeout(() => res.socket?.resetAndDestroy(), 20);
        return;
      case 'malformed-json':
        reply(res, 200, { ...answer.headers, 'content-type': 'application/fhir+json' }, answer.body.subarray(0, Math.max(1, Math.floor((answer.body.length * 2) / 3))));
        return;
      case 'html-error':
        reply(res, 500, { 'content-type': 'text/html; charset=utf-8' }, Buffer.from(`<html><head><title>500</title></head><body><h1>Internal Server Error</h1><pre>${answer.body.toString('utf8')}</pre></body></html>`));
        return;
      case 'wrong-content-type':
        reply(res, answer.status, { ...answer.headers, 'content-type': 'text/plain; charset=utf-8' }, answer.body);
        return;
      case 'oversized':
        reply(res, answer.status, answer.headers, padded(answer, oversizeBytes));
        return;
      case 'oversized-chunked': {
        res.writeHead(answer.status, answer.headers); // no content-length: chunked
        const big = padded(answer, oversizeBytes);
        for (let i = 0; i < big.length; i += 64 * 1024) res.write(big.subarray(i, i + 64 * 1024));
        res.end();
        return;
      }
      case 'foreign-next-link':
        reply(res, answer.status, answer.headers, withForeignNext(answer));
        return;
      default:
        reply(res, answer.status, answer.headers, answer.body);
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) reply(res, 502, { 'content-type': 'text/plain' }, Buffer.from('fault proxy: upstream failed'));
      else res.destroy();
    });
  });
  server.on('connection', (socket: Socket) => {
    if (mode === 'refuse' && only === undefined) {
      faulted++;
      socket.resetAndDestroy();
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  async function listen(onPort: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(onPort, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    port = (server.address() as AddressInfo).port;
    proxyOrigin = `http://127.0.0.1:${port}`;
  }

  function dropConnections(): void {
    for (const res of stalled) res.destroy();
    stalled.clear();
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  }

  await listen(0);
  return {
    url: `${proxyOrigin}${target.pathname.replace(/\/+$/, '')}`,
    get mode() {
      return mode;
    },
    get faulted() {
      return faulted;
    },
    get seen() {
      return seen;
    },
    async set(next, setOpts = {}) {
      dropConnections();
      if (next === 'gzip-bomb') gzipBomb();
      const wasDown = mode === 'down' && only === undefined;
      const goesDown = next === 'down' && setOpts.only === undefined;
      if (goesDown && !wasDown) await new Promise<void>((resolve) => server.close(() => resolve()));
      if (wasDown && !goesDown) await listen(port); // the same port, so the gateway's UPSTREAM_URL holds
      mode = next;
      only = setOpts.only;
      faulted = 0;
      seen = [];
    },
    async close() {
      dropConnections();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}
