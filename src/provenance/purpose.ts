// Purpose of use (SPEC §3): IHE IUA extension, else the `purpose_of_use` claim, else what the token
// implies (the patient themself → PATRQT, a RelatedPerson → FAMRQT), else the policy default.
import type { DecisionPolicy } from '../config/policy.ts';
import { keyType } from '../fhir/references.ts';
import { canonicalSystem, V3_ACT_REASON } from '../fhir/systems.ts';
import type { ClientKind, RequestContext } from './context.ts';
import { MissingPurposeOfUseError } from './errors.ts';
import { governingKind } from './scopes.ts';
import type { VerifiedClaims } from './verify-token.ts';

export interface PurposeOfUse {
  readonly codes: readonly string[];
  readonly source: RequestContext['purposeSource'];
}

export interface PurposeInputs {
  readonly claims: VerifiedClaims;
  readonly clientId: string;
  readonly kinds: ReadonlySet<ClientKind>;
  /** Bare launch-context patient id. */
  readonly patient?: string;
  /** fhirUser as a reference key (`Type/id`, absolute when on another server). */
  readonly fhirUser?: string;
  /** Codes to disregard wherever they appear (BTG asked for without the break-glass scope). */
  readonly ignore?: ReadonlySet<string>;
}

const codePattern = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

function unique(codes: string[]): string[] {
  return [...new Set(codes)];
}

/** IUA carries Codings; a coding of another system is not a v3-ActReason purpose and is skipped. */
function codesFromCodings(value: unknown): string[] {
  const items = Array.isArray(value) ? value : [value];
  const codes: string[] = [];
  for (const item of items) {
    if (typeof item === 'string') {
      if (codePattern.test(item)) codes.push(item);
    } else if (item && typeof item === 'object') {
      const { system, code } = item as { system?: unknown; code?: unknown };
      if ((system === undefined || (typeof system === 'string' && canonicalSystem(system) === V3_ACT_REASON)) && typeof code === 'string' && codePattern.test(code)) codes.push(code);
    }
  }
  return unique(codes);
}

/** The claim is a code string (space separated tolerated) or an array of codes. */
function codesFromClaim(value: unknown): string[] {
  const items = typeof value === 'string' ? value.split(/\s+/) : Array.isArray(value) ? value : [];
  return unique(items.filter((item): item is string => typeof item === 'string' && codePattern.test(item)));
}

function policyDefault(policy: DecisionPolicy, clientId: string, kinds: ReadonlySet<ClientKind>): string | undefined {
  const defaults = policy.defaultPurpose;
  const forClient = defaults.clients && Object.hasOwn(defaults.clients, clientId) ? defaults.clients[clientId] : undefined;
  if (forClient) return forClient;
  const kind = governingKind(kinds);
  return kind ? defaults[kind] : undefined;
}

/** Resolves the purposes of use, or throws MissingPurposeOfUseError (403 `security`). */
export function resolvePurposeOfUse(inputs: PurposeInputs, policy: DecisionPolicy): PurposeOfUse {
  const kept = (codes: string[]): string[] => (inputs.ignore ? codes.filter((code) => !inputs.ignore?.has(code)) : codes);
  const iua = kept(codesFromCodings(inputs.claims.extensions?.ihe_iua?.purpose_of_use));
  if (iua.length > 0) return { codes: iua, source: 'iua-extension' };
  const claimed = kept(codesFromClaim(inputs.claims.purpose_of_use));
  if (claimed.length > 0) return { codes: claimed, source: 'claim' };
  if (inputs.patient && inputs.kinds.has('patient') && inputs.fhirUser === `Patient/${inputs.patient}`) {
    return { codes: ['PATRQT'], source: 'implied' };
  }
  if (inputs.fhirUser && keyType(inputs.fhirUser) === 'RelatedPerson') return { codes: ['FAMRQT'], source: 'implied' };
  const fallback = policyDefault(policy, inputs.clientId, inputs.kinds);
  if (fallback) return { codes: [fallback], source: 'policy-default' };
  throw new MissingPurposeOfUseError();
}
