// Structured JSON logs. Only ids, codes, counts and timings are logged — never resource content (SPEC §8).
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({
    level,
    base: { service: 'disclosure-gateway' },
    // A bearer token or cursor must never reach a log line, even through an error object.
    redact: { paths: ['req.headers.authorization', 'headers.authorization', 'authorization', 'token', 'cursor'], censor: '[redacted]' },
  });
}
