// The one typed, immutable answer to "who is asking, for what, under which scopes" (SPEC §3).
export type ClientKind = 'patient' | 'user' | 'system';
export type ScopeInteraction = 'c' | 'r' | 'u' | 'd' | 's';

/** One SMART scope, v1 or v2, normalised to v2 form. */
export interface SmartScope {
  readonly raw: string;
  readonly kind: ClientKind;
  /** A resource type or '*'. */
  readonly resourceType: string;
  readonly interactions: ReadonlySet<ScopeInteraction>;
  /** Granular scope query (`?category=…`): parameter → accepted values (OR within a parameter, AND across). */
  readonly query?: ReadonlyMap<string, readonly string[]>;
}

export interface RequestContext {
  /** X-Request-Id accepted from the client or generated. */
  readonly requestId: string;
  readonly clientId: string;
  readonly subject?: string;
  readonly tokenId?: string;
  readonly issuer?: string;
  /** Seconds since epoch, from the token. */
  readonly expiresAt?: number;
  /** Every scope string granted, verbatim (includes non-resource scopes such as `btg`, `launch`). */
  readonly grantedScopes: readonly string[];
  /** The resource scopes among them, parsed. */
  readonly scopes: readonly SmartScope[];
  /** The kinds of resource scope the token holds; the narrowest (patient < user < system) governs confinement. */
  readonly kinds: ReadonlySet<ClientKind>;
  /** Launch-context patient id (bare id) when the token has one. */
  readonly patient?: string;
  /** fhirUser as a reference key: `Practitioner/dr-a`, or absolute when on another server (SPEC §3). */
  readonly fhirUser?: string;
  /** Requester's organization as a reference key (absolute when on another server, SPEC §3). */
  readonly organization?: string;
  /** v3-ActReason codes; includes BTG while break-the-glass is in effect. */
  readonly purposeOfUse: readonly string[];
  /** Where the purpose came from, for the audit trail. */
  readonly purposeSource: 'iua-extension' | 'claim' | 'implied' | 'policy-default';
  readonly breakGlass: {
    /** The token holds the break-glass scope and asked for BTG by purpose or Category header. */
    readonly inEffect: boolean;
    /** BTG was asked for (header or purpose) — audited even when not in effect. */
    readonly requested: boolean;
  };
}
