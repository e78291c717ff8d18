// Bulk Data `$export` for the embedded upstream (SPEC §5.1: "the embedded upstream supports $export at all
// three levels, so the demo shows it"): kick-off at system, Patient and Group/{id} level → 202 with
// Content-Location; the status URL answers 202 with X-Progress on its first poll, then the manifest; each
// output file is NDJSON written from the repository as it is read; DELETE on the status URL cancels.
import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import { isResourceType } from '@medplum/core';
import type { Group, OperationOutcome, Parameters } from '@medplum/fhirtypes';
import { patientCompartmentTypes } from '../../fhir/compartment.ts';
import type { EmbeddedRepository } from './repository.ts';

interface ExportJob {
  readonly request: string;
  readonly transactionTime: string;
  readonly types: readonly string[];
  /** Bare patient ids whose compartments are exported; undefined = every resource (system level). */
  readonly patients?: readonly string[];
  readonly since?: string;
  polls: number;
}

const NDJSON = 'application/fhir+ndjson';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
/** Bytes gathered before a write, so a large file is not a write per line. */
const writeChunkBytes = 64 * 1024;

function outcome(code: 'invalid' | 'not-found' | 'not-supported', text: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, details: { text } }] };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const json = JSON.stringify(body);
  res.writeHead(status, { 'content-type': headers['content-type'] ?? FHIR_JSON, 'content-length': String(Buffer.byteLength(json)), ...headers });
  res.end(json);
}

class ExportRequestError extends Error {
  readonly status: number;
  readonly outcome: OperationOutcome;
  constructor(status: number, outcome: OperationOutcome) {
    super(outcome.issue?.[0]?.details?.text);
    this.status = status;
    this.outcome = outcome;
  }
}

/** Kick-off parameters from the query or a POSTed Parameters body (Bulk Data 2.0 §kick-off). */
function exportParams(query: URLSearchParams, body: Buffer): Map<string, string> {
  const params = new Map<string, string>();
  for (const [name, value] of query) params.set(name, value);
  if (body.length > 0) {
    let parsed: Parameters;
    try {
      parsed = JSON.parse(body.toString('utf8')) as Parameters;
    } catch {
      throw new ExportRequestError(400, outcome('invalid', 'the kick-off body is not valid JSON'));
    }
    for (const p of parsed.parameter ?? []) {
      const value = p.valueString ?? p.valueInstant ?? p.valueCode;
      if (value !== undefined) params.set(p.name, params.has(p.name) ? `${params.get(p.name)},${value}` : value);
    }
  }
  return params;
}

function groupMembers(group: Group): string[] {
  return (group.member ?? []).flatMap((m) => {
    const ref = m.entity?.reference;
    return m.inactive !== true && ref?.startsWith('Patient/') ? [ref.slice('Patient/'.length)] : [];
  });
}

async function kickOff(repo: EmbeddedRepository, path: string, query: URLSearchParams, body: Buffer, requestUrl: string): Promise<ExportJob> {
  const params = exportParams(query, body);
  const format = params.get('_outputFormat');
  if (format !== undefined && !/^(application\/fhir\+ndjson|application\/ndjson|ndjson)$/.test(format)) {
    throw new ExportRequestError(400, outcome('not-supported', 'only NDJSON output is produced'));
  }
  const sinceRaw = params.get('_since');
  const since = sinceRaw === undefined ? undefined : new Date(Date.parse(sinceRaw));
  if (since !== undefined && Number.isNaN(since.getTime())) throw new ExportRequestError(400, outcome('invalid', '_since must be an instant'));
  const [first, groupId] = path.split('/');
  let patients: string[] | undefined;
  if (first === 'Group') {
    const group = await repo.readResource<Group>('Group', groupId).catch(() => undefined);
    if (!group) throw new ExportRequestError(404, outcome('not-found', 'no such Group'));
    patients = groupMembers(group);
  } else if (first === 'Patient') {
    patients = repo.exportResources('Patient').map((p) => p.id);
  }
  const compartment = patientCompartmentTypes();
  const asked = params.get('_type')?.split(',').map((t) => t.trim()).filter(Boolean);
  for (const type of asked ?? []) if (!isResourceType(type)) throw new ExportRequestError(400, outcome('invalid', `unknown resource type '${type}'`));
  const stored = repo.storedTypes();
  const levelTypes = patients === undefined ? stored : stored.filter((t) => compartment.has(t));
  const types = asked ? levelTypes.filter((t) => asked.includes(t)) : levelTypes;
  return { request: requestUrl, transactionTime: new Date().toISOString(), types, patients, since: since?.toISOString(), polls: 0 };
}

function manifest(repo: EmbeddedRepository, job: ExportJob, jobId: string, baseUrl: string): object {
  const output = job.types.flatMap((type) => {
    const count = repo.exportResources(type, job.patients, job.since).length;
    return count > 0 ? [{ type, url: `${baseUrl}/$export-file/${jobId}/${type}`, count }] : [];
  });
  return { transactionTime: job.transactionTime, request: job.request, requiresAccessToken: true, output, error: [] };
}

async function writeFile(res: http.ServerResponse, repo: EmbeddedRepository, job: ExportJob, type: string): Promise<void> {
  res.writeHead(200, { 'content-type': NDJSON });
  let chunk = '';
  for (const resource of repo.exportResources(type, job.patients, job.since)) {
    chunk += `${JSON.stringify(resource)}\n`;
    if (chunk.length < writeChunkBytes) continue;
    const more = res.write(chunk);
    chunk = '';
    if (!more) await new Promise<void>((ok, fail) => res.once('drain', ok).once('close', () => fail(new Error('client went away'))));
  }
  res.end(chunk);
}

export interface BulkExportRoutes {
  /** Serves the request when it is a `$export` kick-off, status or file; false when it is anything else. */
  handle(req: http.IncomingMessage, res: http.ServerResponse, baseUrl: string, path: string, query: URLSearchParams): boolean;
}

const kickOffPath = /^(\$export|Patient\/\$export|Group\/[A-Za-z0-9\-.]{1,64}\/\$export)$/;

export function bulkExportRoutes(repo: EmbeddedRepository): BulkExportRoutes {
  const jobs = new Map<string, ExportJob>();

  async function serve(req: http.IncomingMessage, res: http.ServerResponse, baseUrl: string, path: string, query: URLSearchParams): Promise<void> {
    const method = req.method ?? 'GET';
    const [head, jobId, type] = path.split('/');
    if (kickOffPath.test(path)) {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      if (!/respond-async/i.test(String(req.headers.prefer ?? ''))) throw new ExportRequestError(400, outcome('invalid', 'Prefer: respond-async is required'));
      const id = randomUUID();
      jobs.set(id, await kickOff(repo, path, query, Buffer.concat(chunks), `${baseUrl}/${path}${query.size ? `?${query}` : ''}`));
      res.writeHead(202, { 'content-location': `${baseUrl}/$export-status/${id}`, 'content-length': '0' });
      res.end();
      return;
    }
    const job = jobId === undefined ? undefined : jobs.get(jobId);
    if (!job) throw new ExportRequestError(404, outcome('not-found', 'no such export job'));
    if (head === '$export-status' && type === undefined && method === 'DELETE') {
      jobs.delete(jobId);
      sendJson(res, 202, { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', details: { text: 'export cancelled' } }] });
    } else if (head === '$export-status' && type === undefined && method === 'GET') {
      // One 202 first, so a client's polling (and the gateway's relaying of X-Progress) is shown.
      if (job.polls++ === 0) res.writeHead(202, { 'x-progress': 'preparing files', 'retry-after': '1', 'content-length': '0' }).end();
      else sendJson(res, 200, manifest(repo, job, jobId, baseUrl), { 'content-type': 'application/json' });
    } else if (head === '$export-file' && type !== undefined && job.types.includes(type) && method === 'GET') {
      await writeFile(res, repo, job, type);
    } else {
      throw new ExportRequestError(404, outcome('not-found', 'no such export file'));
    }
  }

  return {
    handle(req, res, baseUrl, path, query) {
      const first = path.split('/')[0];
      if (!kickOffPath.test(path) && first !== '$export-status' && first !== '$export-file') return false;
      serve(req, res, baseUrl, path, query).catch((err: unknown) => {
        if (res.headersSent) return void res.destroy();
        if (err instanceof ExportRequestError) sendJson(res, err.status, err.outcome);
        else sendJson(res, 500, outcome('not-supported', 'export failed'));
      });
      return true;
    },
  };
}
