import { pino, type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/**
 * Secrets never enter log objects by design (nothing logs a header map, a token
 * response or the config). Redaction is the second guard, for the day someone does.
 */
// Exact paths only: wildcard paths make pino copy and scan every log object, which costs
// more than the whole per-request log line otherwise does.
export const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'headers["x-keap-api-key"]',
  'access_token',
  'refresh_token',
  'client_secret',
  'accessToken',
  'refreshToken',
  'clientSecret',
  'apiKey',
  'privateKey',
  'grant.accessToken',
  'grant.refreshToken',
];

/**
 * Where log lines go: stdout by default, or a file. Lines are written in batches of at
 * least 8 KiB, and at least every 250 ms, so a busy proxy makes a few large writes rather
 * than one write (one thread-pool round trip) per request; a quiet one still shows each
 * line within a quarter second.
 */
export type LogDestination = ReturnType<typeof pino.destination>;

export function createLogDestination(dest: number | string = 1): LogDestination {
  return pino.destination({ dest, sync: false, minLength: 8192, periodicFlush: 250 });
}

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'keap-proxy' },
      // pino's default epoch-ms "time": an ISO string costs a Date round trip on every line.
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? createLogDestination(),
  );
}
