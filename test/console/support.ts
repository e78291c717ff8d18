// Browser-test support for the console (issue 8): Debian's Chromium driven by playwright-core, and
// readers of raw AuditEvents so that what the page shows is checked against what the gateway recorded.
import { existsSync } from 'node:fs';
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import { chromium, type Browser, type Page } from 'playwright-core';
import { DG_EXT_AUDIT_BREAK_THE_GLASS } from '../../src/audit/extensions.ts';

/** A system Chromium when one is installed, else the one @sparticuz/chromium ships inside its npm package (no apt step). */
export async function chromiumExecutable(): Promise<string> {
  const system = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
  if (existsSync(system)) return system;
  const { default: packaged } = await import('@sparticuz/chromium');
  return packaged.executablePath();
}
export const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'console');
export const DOC_SCREENSHOTS = join(process.cwd(), 'docs', 'screenshots');

export async function launchChromium(): Promise<Browser> {
  // chromium.launch gives every run a new temporary user-data-dir.
  return chromium.launch({
    executablePath: await chromiumExecutable(),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * Saves a full-page screenshot as a test artefact; with UPDATE_SCREENSHOTS=1 the README's copy of each view
 * (docs/screenshots, committed) is refreshed too, so that ordinary runs leave the work tree clean.
 */
export async function screenshot(page: Page, name: string, opts: { readonly forReadme?: boolean } = { forReadme: true }): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  if (opts.forReadme === true && process.env.UPDATE_SCREENSHOTS === '1') {
    await mkdir(DOC_SCREENSHOTS, { recursive: true });
    await copyFile(path, join(DOC_SCREENSHOTS, `console-${name}.png`));
  }
}

export function clientOf(event: AuditEvent): string | undefined {
  const observer = JSON.stringify(event.source?.observer ?? null);
  const client = (event.agent ?? []).find((a) => a.type?.coding?.[0]?.system === 'http://dicom.nema.org/resources/ontology/DCM' && JSON.stringify(a.who ?? null) !== observer);
  return client?.who?.identifier?.value ?? client?.who?.reference;
}

export function isRest(event: AuditEvent): boolean {
  return event.type?.code === 'rest';
}

export function purposesOf(event: AuditEvent): string[] {
  return (event.purposeOfEvent ?? []).flatMap((p) => (p.coding ?? []).map((c) => c.code ?? ''));
}

export function patientOf(event: AuditEvent): string | undefined {
  const entity = (event.entity ?? []).find((e) => e.role?.code === '1');
  return entity?.what?.reference?.replace(/^Patient\//, '');
}

/** FHIR's AuditEvent `patient` parameter: the patient as entity, or as agent (a patient's own request). */
export function concernsPatient(event: AuditEvent, patientId: string): boolean {
  const references = [...(event.entity ?? []).map((x) => x.what?.reference), ...(event.agent ?? []).map((a) => a.who?.reference)];
  return references.includes(`Patient/${patientId}`);
}


export function breakGlassOf(event: AuditEvent): string | undefined {
  return event.extension?.find((e) => e.url === DG_EXT_AUDIT_BREAK_THE_GLASS)?.valueCode;
}

