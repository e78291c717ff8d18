// Every error leaves the gateway as a FHIR OperationOutcome with the right status (SPEC §5).
import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';

export type IssueCode = OperationOutcomeIssue['code'];

export function operationOutcome(
  code: IssueCode,
  text: string,
  severity: OperationOutcomeIssue['severity'] = 'error',
  details?: OperationOutcomeIssue['details'],
): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: details ?? { text }, diagnostics: undefined }] };
}

/** An error that already knows its HTTP status and the outcome to send. */
export class GatewayError extends Error {
  readonly status: number;
  readonly issueCode: IssueCode;
  readonly headers: Readonly<Record<string, string>>;
  readonly outcome: OperationOutcome;
  constructor(status: number, issueCode: IssueCode, message: string, opts?: { headers?: Record<string, string>; outcome?: OperationOutcome }) {
    super(message);
    this.name = 'GatewayError';
    this.status = status;
    this.issueCode = issueCode;
    this.headers = opts?.headers ?? {};
    this.outcome = opts?.outcome ?? operationOutcome(issueCode, message);
  }
}

export const badRequest = (text: string, code: IssueCode = 'invalid'): GatewayError => new GatewayError(400, code, text);
/** The one refusal text for anything decided before data is read: it must not say which rule (SPEC §5). */
export const forbidden = (): GatewayError => new GatewayError(403, 'forbidden', 'access to the requested data is not permitted');
export const notFound = (): GatewayError => new GatewayError(404, 'not-found', 'resource not found');

/** A request body that must hold a resource of `resourceType` (any type when undefined); anything else is a 400 saying what was expected. */
export function resourceBody<T extends { resourceType?: string }>(body: Buffer | undefined, resourceType: string | undefined, what: string): T {
  if (!body || body.length === 0) throw badRequest(`${what} body is required`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw badRequest('the body is not valid JSON', 'structure');
  }
  const type = parsed && typeof parsed === 'object' ? (parsed as T).resourceType : undefined;
  if (typeof type !== 'string' || (resourceType !== undefined && type !== resourceType)) throw badRequest(`the body must be ${what}`);
  return parsed as T;
}
