// Provenance refusals as typed errors with stable codes (SPEC §3). Each already knows its HTTP status
// and OperationOutcome (via GatewayError), and its message is safe to show: it never quotes the token.
import { GatewayError } from '../fhir/outcome.ts';

const quoted = (text: string): string => text.replace(/["\\\r\n]/g, ' ');

/** 401: the bearer token is missing, malformed, unverifiable, expired or inactive (RFC 6750 §3.1). */
export class InvalidTokenError extends GatewayError {
  static readonly code = 'ERR_INVALID_TOKEN';
  readonly code = InvalidTokenError.code;
  /** The `WWW-Authenticate` header value to send with the 401. */
  readonly wwwAuthenticate: string;
  constructor(description: string) {
    const wwwAuthenticate = `Bearer error="invalid_token", error_description="${quoted(description)}"`;
    super(401, 'login', description, { headers: { 'WWW-Authenticate': wwwAuthenticate } });
    this.name = 'InvalidTokenError';
    this.wwwAuthenticate = wwwAuthenticate;
  }
}

/** 503: the key set or introspection endpoint could not be reached and nothing cached could stand in (fail closed). */
export class TokenVerificationUnavailableError extends GatewayError {
  static readonly code = 'ERR_TOKEN_VERIFICATION_UNAVAILABLE';
  readonly code = TokenVerificationUnavailableError.code;
  constructor(description = 'the access token cannot be verified at the moment') {
    super(503, 'transient', description);
    this.name = 'TokenVerificationUnavailableError';
  }
}

/** The one refusal text for pre-data refusals: it must not say which rule (SPEC §5). */
export const FORBIDDEN_TEXT = 'access to the requested data is not permitted';

/** 403: refused before any data is read. `reason` is for the audit trail only, never sent. */
export class ForbiddenError extends GatewayError {
  static readonly code: string = 'ERR_FORBIDDEN';
  readonly code: string = ForbiddenError.code;
  readonly reason: string;
  constructor(reason: string, opts?: { issueCode?: 'forbidden' | 'security'; text?: string }) {
    super(403, opts?.issueCode ?? 'forbidden', opts?.text ?? FORBIDDEN_TEXT);
    this.name = 'ForbiddenError';
    this.reason = reason;
  }
}

/** 403 `security` naming the missing purpose of use (SPEC §3: the text may say so). */
export class MissingPurposeOfUseError extends ForbiddenError {
  static override readonly code = 'ERR_MISSING_PURPOSE_OF_USE';
  override readonly code: string = MissingPurposeOfUseError.code;
  constructor() {
    const text = 'the request has no purpose of use: the token carries none and the policy gives no default for this client';
    super('no purpose of use', { issueCode: 'security', text });
    this.name = 'MissingPurposeOfUseError';
  }
}

export const INCOMPLETE_REQUEST_TEXT = 'the request must identify the patient';

/** 400 `required`: a cross-patient query from a client kind the incomplete-request rule covers (SPEC §3). */
export class IncompleteRequestError extends GatewayError {
  static readonly code = 'ERR_INCOMPLETE_REQUEST';
  readonly code = IncompleteRequestError.code;
  constructor() {
    super(400, 'required', INCOMPLETE_REQUEST_TEXT);
    this.name = 'IncompleteRequestError';
  }
}
