import { pino, type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/**
 * Secrets never enter log objects by design (nothing logs a header map, a token
 * response or the config). Redaction is the second guard, for the day someone does.
 */
export const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'headers["x-keap-api-key"]',
  'req.headers.authorization',
  'req.headers["x-keap-api-key"]',
  'access_token',
  'refresh_token',
  'accessToken',
  'refreshToken',
  'client_secret',
  'clientSecret',
  'apiKey',
  'privateKey',
  'grant.accessToken',
  'grant.refreshToken',
  '*.access_token',
  '*.refresh_token',
  '*.accessToken',
  '*.refreshToken',
  '*.clientSecret',
  '*.apiKey',
];

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'keap-proxy' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ sync: false }),
  );
}
