// Typed upstream failures (SPEC §5): every one makes the request fail closed with its status, and
// upstreamFailure() is the one place they become the client's answer.
import { GatewayError, type IssueCode } from '../fhir/outcome.ts';
export type UpstreamErrorCode = 'unreachable' | 'timeout' | 'too-large' | 'bad-body' | 'bad-status' | 'bad-content-type';
export type UpstreamErrorStatus = 502 | 503 | 504;

const statusByCode: Record<UpstreamErrorCode, UpstreamErrorStatus> = {
  unreachable: 502,
  timeout: 504,
  'too-large': 502,
  'bad-body': 502,
  'bad-status': 502,
  'bad-content-type': 502,
};

export class UpstreamError extends Error {
  readonly status: UpstreamErrorStatus;
  readonly code: UpstreamErrorCode;
  /** The upstream's HTTP status when one was received (bad-status, bad-body, bad-content-type). */
  readonly upstreamStatus?: number;

  constructor(
    code: UpstreamErrorCode,
    message: string,
    opts: { status?: UpstreamErrorStatus; upstreamStatus?: number; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'UpstreamError';
    this.code = code;
    this.status = opts.status ?? statusByCode[code];
    if (opts.upstreamStatus !== undefined) this.upstreamStatus = opts.upstreamStatus;
  }
}

export function isUpstreamError(err: unknown): err is UpstreamError {
  return err instanceof UpstreamError;
}

/** What the client is told about one upstream exchange that did not give the gateway what it needed. */
export interface UpstreamFailureWording {
  /** The upstream failed, or answered something the gateway cannot use (→ 502/503/504). */
  readonly failed: string;
  /** The upstream refused what the client asked for (a 4xx the client's own request caused). */
  readonly refused?: string;
}

/** Which upstream 4xx answers are the client's to see. */
export interface UpstreamRefusalPolicy {
  /** Passed on as they are (410 counts as 404): 400 on a search, 404 on an operation, 409/412 on a write. */
  readonly kept?: readonly number[];
  /** Any other 4xx: 400 when the client's own request was refused (writes, operations), by default 502 —
   * a read the gateway itself needed failed. */
  readonly otherwise?: 400 | 502;
}

const refusalIssue: Readonly<Record<number, IssueCode>> = { 400: 'invalid', 404: 'not-found', 409: 'conflict', 412: 'conflict' };

/**
 * The one mapping of upstream failures to the gateway's answer (SPEC §5: fail closed, never echo the
 * upstream's body). `failure` is an UpstreamError (its 502/503/504), the upstream's HTTP status (a 4xx is
 * mapped by `policy`; 5xx or an unusable 2xx answer is 502), or anything else thrown by the client (502).
 */
export function upstreamFailure(failure: unknown, wording: UpstreamFailureWording, policy: UpstreamRefusalPolicy = {}): GatewayError {
  if (isUpstreamError(failure)) {
    const text = failure.status === 504 ? 'the upstream server did not answer in time' : wording.failed;
    return new GatewayError(failure.status, failure.status === 504 ? 'timeout' : 'exception', text);
  }
  const status = typeof failure === 'number' ? (failure === 410 ? 404 : failure) : 502;
  if (status >= 400 && status < 500) {
    const refused = wording.refused ?? wording.failed;
    if (policy.kept?.includes(status)) return new GatewayError(status, refusalIssue[status] ?? 'processing', refused);
    if (policy.otherwise === 400) return new GatewayError(400, 'invalid', refused);
  }
  return new GatewayError(502, 'exception', wording.failed);
}
