// The upstream client against real node:http servers (SPEC §2 settings, §5 failures fail closed).
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import { createUpstreamClient, parseUpstreamBase, rewriteUpstreamUrl, upstreamResource, UpstreamError, type UpstreamClient } from '../../src/upstream/index.ts';

type Route = (req: http.IncomingMessage, res: http.ServerResponse) => void;

interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

const patient = { resourceType: 'Patient', id: 'p1' };
const fhirJson = { 'content-type': 'application/fhir+json' };

// One server for the whole file; each route is a scenario.
const routes: Record<string, Route> = {
  '/fhir/Patient/p1': (_req, res) => {
    res.writeHead(200, fhirJson);
    res.end(JSON.stringify(patient));
  },
  '/fhir/slow-headers': () => {
    // never answers: the client's deadline must fire
  },
  '/fhir/slow-body': (_req, res) => {
    res.writeHead(200, fhirJson);
    res.write('{"resourceType":"Bundle",');
  },
  '/fhir/reset-mid-body': (req, res) => {
    res.writeHead(200, { ...fhirJson, 'content-length': '1000' });
    res.write('{"resourceType":"Bundle","entry":[', () => req.socket.destroy());
  },
  '/fhir/malformed': (_req, res) => {
    res.writeHead(200, fhirJson);
    res.end('{"resourceType":"Patient",');
  },
  '/fhir/html': (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<html><body>login</body></html>');
  },
  '/fhir/no-resource-type': (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"id":"x"}');
  },
  '/fhir/oversized-declared': (_req, res) => {
    const body = Buffer.alloc(4096, 0x20);
    res.writeHead(200, { ...fhirJson, 'content-length': String(body.length) });
    res.end(body);
  },
  '/fhir/oversized-chunked': (_req, res) => {
    res.writeHead(200, fhirJson);
    for (let i = 0; i < 8; i++) res.write(Buffer.alloc(1024, 0x20));
    res.end();
  },
  '/fhir/gzip-bomb': (_req, res) => {
    // ~1 KiB on the wire (under maxBytes), 1 MiB once decoded (far over it).
    const bomb = zlib.gzipSync(Buffer.alloc(1024 * 1024, 0x20));
    assert.ok(bomb.length < 2048, 'the bomb must fit under maxBytes on the wire');
    res.writeHead(200, { ...fhirJson, 'content-encoding': 'gzip', 'content-length': String(bomb.length) });
    res.end(bomb);
  },
  '/fhir/gzip': (_req, res) => compressed(res, 'gzip', zlib.gzipSync(JSON.stringify(patient))),
  '/fhir/deflate': (_req, res) => compressed(res, 'deflate', zlib.deflateSync(JSON.stringify(patient))),
  '/fhir/br': (_req, res) => compressed(res, 'br', zlib.brotliCompressSync(JSON.stringify(patient))),
  '/fhir/corrupt-gzip': (_req, res) => compressed(res, 'gzip', Buffer.from('definitely not gzip')),
  '/fhir/server-error': (_req, res) => {
    res.writeHead(500, fhirJson);
    res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception' }] }));
  },
  '/fhir/not-found': (_req, res) => {
    res.writeHead(404, fhirJson);
    res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }));
  },
  '/fhir/Observation': (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const page = Number(url.searchParams.get('page') ?? '1');
    const next = url.searchParams.get('next');
    const link =
      next === 'foreign'
        ? [{ relation: 'next', url: 'http://evil.example/fhir/Observation?page=2' }]
        : next === 'loop'
          ? [{ relation: 'next', url: `${baseUrl}/Observation?next=loop` }]
          : page < 3
            ? [{ relation: 'next', url: `${baseUrl}/Observation?page=${page + 1}` }]
            : [];
    res.writeHead(200, fhirJson);
    res.end(
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'searchset',
        link,
        entry: [
          { resource: { resourceType: 'Observation', id: `o${page}` }, search: { mode: 'match' } },
          { resource: { resourceType: 'Patient', id: `p${page}` }, search: { mode: 'include' } },
        ],
      }),
    );
  },
};

function compressed(res: http.ServerResponse, encoding: string, body: Buffer): void {
  res.writeHead(200, { ...fhirJson, 'content-encoding': encoding, 'content-length': String(body.length) });
  res.end(body);
}

const seen: SeenRequest[] = [];
let connections = 0;
let server: http.Server;
let baseUrl = '';
let client: UpstreamClient;

before(async () => {
  server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const route = routes[path];
    if (route) route(req, res);
    else {
      res.writeHead(404, fhirJson);
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [] }));
    }
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
  client = createUpstreamClient({ baseUrl, bearerToken: 'gateway-secret', timeoutMs: 300, maxBytes: 2048, connections: 4 });
});

after(async () => {
  await client.close();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

async function failure(promise: Promise<unknown>): Promise<UpstreamError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof UpstreamError, `expected an UpstreamError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the upstream call to fail');
}

describe('failures fail closed with a typed error (SPEC §5)', () => {
  const cases: { name: string; call: () => Promise<unknown>; status: number; code: string }[] = [
    { name: 'no headers before the deadline → 504', call: () => client.readJson('slow-headers'), status: 504, code: 'timeout' },
    { name: 'body stalls before the deadline → 504', call: () => client.readJson('slow-body'), status: 504, code: 'timeout' },
    { name: 'connection reset mid-body → 502', call: () => client.readJson('reset-mid-body'), status: 502, code: 'unreachable' },
    { name: 'malformed JSON → 502 bad-body', call: () => client.readJson('malformed'), status: 502, code: 'bad-body' },
    { name: 'JSON without resourceType → 502 bad-body', call: () => client.readJson('no-resource-type'), status: 502, code: 'bad-body' },
    { name: 'HTML page on a FHIR JSON read → 502 bad-content-type', call: () => client.readJson('html'), status: 502, code: 'bad-content-type' },
    { name: 'declared body over maxBytes → 502 too-large', call: () => client.readJson('oversized-declared'), status: 502, code: 'too-large' },
    { name: 'streamed body over maxBytes → 502 too-large', call: () => client.readJson('oversized-chunked'), status: 502, code: 'too-large' },
    { name: 'gzip bomb (small on the wire, huge decoded) → 502 too-large', call: () => client.readJson('gzip-bomb'), status: 502, code: 'too-large' },
    { name: 'corrupt gzip → 502 bad-body', call: () => client.readJson('corrupt-gzip'), status: 502, code: 'bad-body' },
    { name: 'upstream 5xx on a strict read → 502 bad-status', call: () => client.readJson('server-error'), status: 502, code: 'bad-status' },
    { name: 'path escaping the base is refused before sending', call: () => client.readJson('../admin'), status: 502, code: 'bad-body' },
    { name: 'encoded dot segments are refused before sending', call: () => client.readJson('%2e%2e/admin'), status: 502, code: 'bad-body' },
    { name: 'absolute URL on another host is refused', call: () => client.readJson('http://evil.example/fhir/Patient/p1'), status: 502, code: 'bad-body' },
    { name: 'search whose next link points to another host', call: () => client.searchAll('Observation?next=foreign'), status: 502, code: 'bad-body' },
    { name: 'search whose next link loops', call: () => client.searchAll('Observation?next=loop'), status: 502, code: 'bad-body' },
    { name: 'search with more pages than allowed', call: () => client.searchAll('Observation', { maxPages: 2 }), status: 502, code: 'bad-body' },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const err = await failure(c.call());
      assert.equal(err.status, c.status);
      assert.equal(err.code, c.code);
    });
  }

  test('refused connection → 503 unreachable', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const refused = createUpstreamClient({ baseUrl: `http://127.0.0.1:${port}/fhir`, timeoutMs: 2000 });
    try {
      const err = await failure(refused.readJson('Patient/p1'));
      assert.equal(err.status, 503);
      assert.equal(err.code, 'unreachable');
    } finally {
      await refused.close();
    }
  });

  test('nothing before the path-escape refusal reached the server', () => {
    assert.ok(!seen.some((r) => r.url.includes('admin')), 'a refused path was sent upstream');
  });
});

describe('answers that are passed on', () => {
  test('upstream 5xx without strict mode is returned for enforcement to decide', async () => {
    const res = await client.request({ method: 'GET', path: 'server-error' });
    assert.equal(res.status, 500);
    assert.equal(upstreamResource(res)?.resourceType, 'OperationOutcome');
  });

  test('a 404 read returns its OperationOutcome with the status', async () => {
    const res = await client.readJson('not-found');
    assert.equal(res.status, 404);
    assert.equal((res.resource as { resourceType: string }).resourceType, 'OperationOutcome');
  });

  test('HTML without expectJson is returned raw, not parsed', async () => {
    const res = await client.request({ method: 'GET', path: 'html' });
    assert.equal(res.status, 200);
    assert.equal(res.json, undefined);
    assert.match(res.body.toString('utf8'), /login/);
  });

  for (const encoding of ['gzip', 'deflate', 'br']) {
    test(`${encoding} body is decoded and its encoding headers dropped`, async () => {
      const res = await client.readJson(encoding);
      assert.deepEqual(res.resource, patient);
      assert.equal(res.headers['content-encoding'], undefined);
    });
  }
});

describe('what goes upstream (SPEC §3: only the gateway credential)', () => {
  test('gateway credential sent, client Authorization stripped, X-Request-Id propagated', async () => {
    seen.length = 0;
    const res = await client.request({
      method: 'GET',
      path: 'Patient/p1',
      requestId: 'req-123',
      headers: { Authorization: 'Bearer client-token', Cookie: 'session=1', 'X-Request-Id': 'spoofed', Prefer: 'handling=strict' },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, patient);
    const sent = seen.at(-1);
    assert.ok(sent, 'the server saw the request');
    assert.equal(sent.headers.authorization, 'Bearer gateway-secret');
    assert.equal(sent.headers['x-request-id'], 'req-123');
    assert.equal(sent.headers.cookie, undefined);
    assert.equal(sent.headers.prefer, 'handling=strict');
    assert.equal(sent.headers.accept, 'application/fhir+json');
    assert.match(String(sent.headers['accept-encoding']), /gzip/);
  });

  test('without a configured credential no Authorization goes upstream at all', async () => {
    const anonymous = createUpstreamClient({ baseUrl });
    try {
      seen.length = 0;
      await anonymous.request({ method: 'GET', path: 'Patient/p1', headers: { authorization: 'Bearer client-token' } });
      assert.equal(seen.at(-1)?.headers.authorization, undefined);
    } finally {
      await anonymous.close();
    }
  });

  test('an absolute URL inside the base is sent to its relative path', async () => {
    seen.length = 0;
    const res = await client.readJson(`${baseUrl}/Patient/p1`);
    assert.equal(res.status, 200);
    assert.equal(seen.at(-1)?.url, '/fhir/Patient/p1');
  });

  test('keep-alive: sequential requests reuse one connection', async () => {
    const reuse = createUpstreamClient({ baseUrl, connections: 1 });
    try {
      const before = connections;
      for (let i = 0; i < 5; i++) await reuse.readJson('Patient/p1');
      assert.equal(connections - before, 1);
    } finally {
      await reuse.close();
    }
  });
});

describe('searchAll follows next links inside the base', () => {
  test('three pages, match entries only', async () => {
    const result = await client.searchAll('Observation');
    assert.deepEqual(
      result.resources.map((r) => `${r.resourceType}/${r.id ?? ''}`),
      ['Observation/o1', 'Observation/o2', 'Observation/o3'],
    );
    assert.equal(result.pages, 3);
    assert.equal(result.truncated, false);
  });

  test('truncate mode stops at the page cap', async () => {
    const result = await client.searchAll('Observation', { maxPages: 2, onLimit: 'truncate' });
    assert.equal(result.resources.length, 2);
    assert.equal(result.truncated, true);
  });
});

describe('rewriteUpstreamUrl', () => {
  const base = parseUpstreamBase('http://fhir.example:8080/fhir/');
  const cases: { name: string; url: string; expected: string | null }[] = [
    { name: 'same base, search', url: 'http://fhir.example:8080/fhir/Observation?patient=1&_offset=20', expected: 'Observation?patient=1&_offset=20' },
    { name: 'same base, host case differs', url: 'http://FHIR.example:8080/fhir/Patient/1', expected: 'Patient/1' },
    { name: 'paging on the base itself (HAPI _getpages)', url: 'http://fhir.example:8080/fhir?_getpages=abc', expected: '?_getpages=abc' },
    { name: 'foreign host', url: 'http://evil.example:8080/fhir/Observation', expected: null },
    { name: 'other port', url: 'http://fhir.example:9090/fhir/Observation', expected: null },
    { name: 'other scheme', url: 'https://fhir.example:8080/fhir/Observation', expected: null },
    { name: 'javascript scheme', url: 'javascript:alert(1)', expected: null },
    { name: 'path outside the base', url: 'http://fhir.example:8080/admin/Observation', expected: null },
    { name: 'path sharing the base prefix', url: 'http://fhir.example:8080/fhirx/Observation', expected: null },
    { name: 'dot segments leaving the base', url: 'http://fhir.example:8080/fhir/../admin', expected: null },
    { name: 'encoded slash', url: 'http://fhir.example:8080/fhir/..%2Fadmin', expected: null },
    { name: 'credentials in the URL', url: 'http://user:pw@fhir.example:8080/fhir/Patient/1', expected: null },
    { name: 'relative URL', url: 'Observation?page=2', expected: null },
  ];
  for (const c of cases) {
    test(c.name, () => assert.equal(rewriteUpstreamUrl(base, c.url), c.expected));
  }

  test('the client method uses its own base', () => {
    assert.equal(client.rewriteUpstreamUrl(`${baseUrl}/Observation?x=1`), 'Observation?x=1');
    assert.equal(client.rewriteUpstreamUrl('http://127.0.0.1:1/fhir/Observation'), null);
  });
});
