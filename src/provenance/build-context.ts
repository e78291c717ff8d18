// Verified claims + request headers + policy → the immutable RequestContext every later step reads (SPEC §3).
import type { DecisionPolicy } from '../config/policy.ts';
import { isFhirId, keyType, type LocalBases, localKey, referenceKey } from '../fhir/references.ts';
import { assessBreakGlass } from './break-glass.ts';
import type { ClientKind, RequestContext, SmartScope } from './context.ts';
import { InvalidTokenError } from './errors.ts';
import { resolvePurposeOfUse } from './purpose.ts';
import { parseScopes } from './scopes.ts';
import type { VerifiedClaims } from './verify-token.ts';

/** A Set that cannot be changed once built: freezing a Set does not stop `add`. */
class ImmutableSet<T> extends Set<T> {
  #sealed = false;
  constructor(values: Iterable<T>) {
    super();
    for (const value of values) super.add(value);
    this.#sealed = true;
  }
  override add(value: T): this {
    if (this.#sealed) throw new TypeError('RequestContext sets are immutable');
    return super.add(value);
  }
  override delete(): boolean {
    throw new TypeError('RequestContext sets are immutable');
  }
  override clear(): void {
    throw new TypeError('RequestContext sets are immutable');
  }
}

const fhirUserTypes = new Set(['Patient', 'Practitioner', 'PractitionerRole', 'RelatedPerson', 'Person']);

function optionalString(claims: VerifiedClaims, name: keyof VerifiedClaims): string | undefined {
  const value = claims[name];
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw new InvalidTokenError(`the ${String(name)} claim must be a string`);
  return value;
}

function grantedScopesOf(claims: VerifiedClaims): string[] {
  const value = claims.scope ?? claims.scp;
  const items = typeof value === 'string' ? value.split(/\s+/) : Array.isArray(value) ? value : [];
  return [...new Set(items.filter((item): item is string => typeof item === 'string' && item.length > 0))];
}

// A claim the rules depend on that cannot be read would silently widen access (a deny naming the
// actor would no longer match), so it invalidates the token instead of being dropped.
// SPEC §3: an absolute claim on the upstream's or the gateway's own base is the local resource; on any
// other server it stays absolute, a foreign actor that never matches its local namesake.
function normaliseFhirUser(value: string | undefined, local: LocalBases): string | undefined {
  if (value === undefined) return undefined;
  const reference = referenceKey(value, local);
  if (!reference || !fhirUserTypes.has(keyType(reference))) throw new InvalidTokenError('the fhirUser claim is not a reference to a user');
  return reference;
}

function normaliseOrganization(value: string | undefined, local: LocalBases): string | undefined {
  if (value === undefined) return undefined;
  const reference = referenceKey(value, local) ?? (isFhirId(value) ? `Organization/${value}` : undefined);
  if (!reference || keyType(reference) !== 'Organization') throw new InvalidTokenError('the organization claim is not an Organization reference');
  return reference;
}

// The launch patient is a local patient: one on another server could only be confused with a namesake.
function normalisePatient(value: string | undefined, local: LocalBases): string | undefined {
  if (value === undefined) return undefined;
  if (isFhirId(value)) return value;
  const reference = localKey(referenceKey(value, local));
  if (!reference?.startsWith('Patient/')) throw new InvalidTokenError('the patient claim is not a local patient id');
  return reference.slice('Patient/'.length);
}

function freezeScope(scope: SmartScope): SmartScope {
  const query = scope.query ? new Map(scope.query) : undefined;
  return Object.freeze({
    raw: scope.raw,
    kind: scope.kind,
    resourceType: scope.resourceType,
    interactions: new ImmutableSet(scope.interactions),
    ...(query ? { query: Object.freeze(query) as ReadonlyMap<string, readonly string[]> } : {}),
  });
}

export function buildRequestContext(
  claims: VerifiedClaims,
  req: { requestId: string; categoryHeader?: string | string[] },
  policy: DecisionPolicy,
  local: LocalBases = new Set(),
): RequestContext {
  const clientId = optionalString(claims, 'client_id') ?? optionalString(claims, 'azp') ?? optionalString(claims, 'sub');
  if (!clientId) throw new InvalidTokenError('the token names no client');
  const grantedScopes = grantedScopesOf(claims);
  const { scopes, kinds } = parseScopes(grantedScopes.join(' '));
  const patient = normalisePatient(optionalString(claims, 'patient'), local);
  const fhirUser = normaliseFhirUser(optionalString(claims, 'fhirUser'), local);
  const organization = normaliseOrganization(optionalString(claims, 'organization'), local);

  const purposeInputs = { claims, clientId, kinds, patient, fhirUser };
  let purpose = resolvePurposeOfUse(purposeInputs, policy);
  const assessed = assessBreakGlass({ grantedScopes, purposeOfUse: purpose.codes, categoryHeader: req.categoryHeader }, policy);
  if (!assessed.breakGlass.inEffect && purpose.codes.includes('BTG')) {
    // BTG asked for without the scope changes nothing: the purpose is what it would have been otherwise
    purpose = resolvePurposeOfUse({ ...purposeInputs, ignore: new Set(['BTG']) }, policy);
  }
  const purposeOfUse = assessed.breakGlass.inEffect ? assessed.purposeOfUse : purpose.codes.filter((code) => code !== 'BTG');

  const context: RequestContext = {
    requestId: req.requestId,
    clientId,
    ...(typeof claims.sub === 'string' ? { subject: claims.sub } : {}),
    ...(typeof claims.jti === 'string' ? { tokenId: claims.jti } : {}),
    ...(typeof claims.iss === 'string' ? { issuer: claims.iss } : {}),
    ...(typeof claims.exp === 'number' ? { expiresAt: claims.exp } : {}),
    grantedScopes: Object.freeze(grantedScopes),
    scopes: Object.freeze(scopes.map(freezeScope)),
    kinds: new ImmutableSet<ClientKind>(kinds),
    ...(patient ? { patient } : {}),
    ...(fhirUser ? { fhirUser } : {}),
    ...(organization ? { organization } : {}),
    purposeOfUse: Object.freeze(purposeOfUse),
    purposeSource: purpose.source,
    breakGlass: Object.freeze({ ...assessed.breakGlass }),
  };
  return Object.freeze(context);
}
