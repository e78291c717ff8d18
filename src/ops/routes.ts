// Operations endpoints outside /fhir (SPEC §8).
import express, { type Router } from 'express';
import type { AuditForwarder } from '../audit/forwarder.ts';
import type { AuditJournal } from '../audit/journal.ts';
import type { UpstreamClient } from '../upstream/index.ts';
import type { GatewayMetrics } from './metrics.ts';

export function opsRouter(deps: { upstream: UpstreamClient; journal: AuditJournal; metrics: GatewayMetrics; forwarder?: AuditForwarder }): Router {
  const router = express.Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (_req, res) => {
    const checks: Record<string, string> = {};
    try {
      const r = await deps.upstream.request({ method: 'GET', path: 'metadata', signal: AbortSignal.timeout(3000) });
      checks.upstream = r.status < 500 ? 'ok' : `status ${r.status}`;
    } catch (err) {
      checks.upstream = (err as { code?: string }).code ?? 'unreachable';
    }
    checks.journal = deps.journal.healthy() ? 'ok' : 'unwritable';
    const ready = Object.values(checks).every((v) => v === 'ok');
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not-ready', checks });
  });
  router.get('/metrics', async (_req, res) => {
    if (deps.forwarder) {
      const lag = deps.forwarder.lag();
      deps.metrics.journalLagEvents.set(lag.events);
      deps.metrics.journalLagSeconds.set(lag.seconds);
    }
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  return router;
}
