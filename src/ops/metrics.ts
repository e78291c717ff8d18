// Prometheus metrics (SPEC §8). Labels are codes and interaction names only: no ids, no patient data.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface GatewayMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'interaction' | 'status'>;
  readonly decisions: Counter<'outcome'>;
  readonly withheld: Counter<'layer'>;
  readonly redacted: Counter;
  readonly upstreamLatency: Histogram<'outcome'>;
  readonly decisionLatency: Histogram;
  readonly policyCache: Counter<'result'>;
  readonly journalLagEvents: Gauge;
  readonly journalLagSeconds: Gauge;
  readonly auditAppendLatency: Histogram;
  readonly pageBudgetWaits: Counter;
}

export function createMetrics(): GatewayMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'dg_' });
  const registers = [registry];
  return {
    registry,
    requests: new Counter({ name: 'dg_requests_total', help: 'FHIR requests by interaction and HTTP status', labelNames: ['interaction', 'status'], registers }),
    decisions: new Counter({ name: 'dg_decisions_total', help: 'Resource decisions by outcome', labelNames: ['outcome'], registers }),
    withheld: new Counter({ name: 'dg_withheld_total', help: 'Resources withheld, by the rule layer that withheld them', labelNames: ['layer'], registers }),
    redacted: new Counter({ name: 'dg_redacted_total', help: 'Resources released with elements redacted', registers }),
    upstreamLatency: new Histogram({ name: 'dg_upstream_seconds', help: 'Upstream request latency', labelNames: ['outcome'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15], registers }),
    decisionLatency: new Histogram({ name: 'dg_decision_seconds', help: 'Time to decide one response (all its resources)', buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5], registers }),
    policyCache: new Counter({ name: 'dg_policy_cache_total', help: 'Policy store lookups by result', labelNames: ['result'], registers }),
    journalLagEvents: new Gauge({ name: 'dg_audit_forward_lag_events', help: 'Journal events not yet forwarded to the upstream', registers }),
    journalLagSeconds: new Gauge({ name: 'dg_audit_forward_lag_seconds', help: 'Age of the oldest journal event not yet forwarded', registers }),
    auditAppendLatency: new Histogram({ name: 'dg_audit_append_seconds', help: 'Time to make a response’s audit events durable', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5], registers }),
    pageBudgetWaits: new Counter({ name: 'dg_upstream_page_budget_waits_total', help: 'Requests that waited for room in UPSTREAM_PAGE_BUDGET_BYTES before parsing a search page', registers }),
  };
}
