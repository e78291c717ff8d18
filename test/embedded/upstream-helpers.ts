// Small fetch helpers shared by the embedded-upstream tests.
import assert from 'node:assert/strict';
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';

export interface FhirAnswer<T = Resource> {
  readonly status: number;
  readonly headers: Headers;
  readonly body: T;
}

export async function call<T = Resource>(url: string, init: RequestInit = {}): Promise<FhirAnswer<T>> {
  const res = await fetch(url, { ...init, headers: { accept: 'application/fhir+json', ...(init.headers as Record<string, string>) } });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : undefined) as T };
}

export async function getBundle(url: string): Promise<Bundle> {
  const answer = await call<Bundle>(url);
  assert.equal(answer.status, 200, `GET ${url} → ${answer.status} ${JSON.stringify(answer.body).slice(0, 300)}`);
  assert.equal(answer.body.resourceType, 'Bundle');
  return answer.body;
}

export function link(bundle: Bundle, relation: string): string | undefined {
  return bundle.link?.find((l) => l.relation === relation)?.url;
}

export function matches(bundle: Bundle): BundleEntry[] {
  return (bundle.entry ?? []).filter((e) => e.search?.mode === 'match');
}

/** Follows `next` links from `url` to the end; returns every page. Fails on a loop. */
export async function allPages(url: string, maxPages = 500): Promise<Bundle[]> {
  const pages: Bundle[] = [];
  const seen = new Set<string>();
  let next: string | undefined = url;
  while (next) {
    assert.ok(!seen.has(next), `paging loops at ${next}`);
    assert.ok(pages.length < maxPages, 'too many pages');
    seen.add(next);
    const page = await getBundle(next);
    pages.push(page);
    next = link(page, 'next');
  }
  return pages;
}

export function ids(entries: readonly BundleEntry[]): string[] {
  return entries.map((e) => `${e.resource?.resourceType}/${e.resource?.id}`);
}

export function json(body: unknown): RequestInit {
  return { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(body) };
}
