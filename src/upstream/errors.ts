// Typed upstream failures (SPEC §5): every one makes the request fail closed with its status.
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
