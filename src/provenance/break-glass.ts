// Break-the-glass (SPEC §3): in effect only with the policy's break-glass scope AND a BTG/ETREAT
// purpose or the FHIR `Category` header naming the BTG security category. Header alone is an attempt.
import type { DecisionPolicy } from '../config/policy.ts';
import { canonicalSystem, SECURITY_TAG_SCHEME, V3_ACT_REASON } from '../fhir/systems.ts';
import type { RequestContext } from './context.ts';

export const BTG_CATEGORY_TERM = `${V3_ACT_REASON}#BTG`;
const breakGlassPurposes = new Set(['BTG', 'ETREAT']);

export interface CategoryValue {
  readonly term: string;
  readonly params: ReadonlyMap<string, string>;
}

/** Splits on `sep` outside double quotes. */
function splitOutsideQuotes(text: string, sep: string): string[] {
  const parts: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '\\' && quoted && i + 1 < text.length) {
      current += ch + text[++i];
      continue;
    }
    if (ch === '"') quoted = !quoted;
    if (ch === sep && !quoted) {
      parts.push(current);
      current = '';
    } else current += ch;
  }
  parts.push(current);
  return parts;
}

function unquote(value: string): string {
  const trimmed = value.trim();
  if (trimmed.length >= 2 && trimmed.startsWith('"') && trimmed.endsWith('"')) return trimmed.slice(1, -1).replace(/\\(.)/g, '$1');
  return trimmed;
}

/** Parses the FHIR `Category` header (http.html#tags): comma-separated `term; label="…"; scheme="…"` values. */
export function parseCategoryHeader(header: string | readonly string[] | undefined): CategoryValue[] {
  if (header === undefined) return [];
  const lines = typeof header === 'string' ? [header] : header;
  const values: CategoryValue[] = [];
  for (const line of lines) {
    for (const item of splitOutsideQuotes(line, ',')) {
      const [termPart, ...paramParts] = splitOutsideQuotes(item, ';');
      const term = termPart.trim();
      if (!term) continue;
      const params = new Map<string, string>();
      for (const part of paramParts) {
        const eq = part.indexOf('=');
        if (eq > 0) params.set(part.slice(0, eq).trim().toLowerCase(), unquote(part.slice(eq + 1)));
      }
      values.push({ term, params });
    }
  }
  return values;
}

/** True when the header carries the BTG security category exactly. */
export function categoryRequestsBreakGlass(header: string | readonly string[] | undefined): boolean {
  return parseCategoryHeader(header).some((value) => isBtgTerm(value.term) && value.params.get('scheme') === SECURITY_TAG_SCHEME);
}

/** `system#code` naming v3-ActReason#BTG, the system in any spelling the standards accept (issue 13). */
function isBtgTerm(term: string): boolean {
  const hash = term.lastIndexOf('#');
  return hash > 0 && term.slice(hash + 1) === 'BTG' && canonicalSystem(term.slice(0, hash)) === V3_ACT_REASON;
}

export interface BreakGlassAssessment {
  readonly breakGlass: RequestContext['breakGlass'];
  /** The purposes of use: BTG added while break-the-glass is in effect, removed while it is not. */
  readonly purposeOfUse: readonly string[];
}

export function assessBreakGlass(
  input: { grantedScopes: readonly string[]; purposeOfUse: readonly string[]; categoryHeader?: string | readonly string[] },
  policy: Pick<DecisionPolicy, 'breakGlassScope'>,
): BreakGlassAssessment {
  const hasScope = input.grantedScopes.includes(policy.breakGlassScope);
  const byHeader = categoryRequestsBreakGlass(input.categoryHeader);
  const byPurpose = input.purposeOfUse.some((code) => breakGlassPurposes.has(code));
  const inEffect = hasScope && (byPurpose || byHeader);
  const requested = inEffect || byHeader || input.purposeOfUse.includes('BTG');
  // BTG counts as a purpose only while authorised; asked for without the scope it changes nothing
  const others = input.purposeOfUse.filter((code) => code !== 'BTG');
  const purposeOfUse = inEffect ? [...others, 'BTG'] : others;
  return { breakGlass: { inEffect, requested }, purposeOfUse };
}
