/** pino JSON logs; secrets redacted by path wherever they could appear. */
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { LogDestination } from './log-destination.js';

export type { Logger };

export const REDACT_PATHS = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  '"x-cake-authorization"',
  '*["x-cake-authorization"]',
  '*.headers["x-cake-authorization"]',
  'api_key',
  '*.api_key',
  'master_key',
  '*.master_key',
  'key',
  'token',
  '*.token',
  'context_signing_key',
  '*.context_signing_key',
];

let secondStart = -1;
let secondPrefix = '';

/**
 * pino's `,"time":"<ISO 8601>"`, as pino.stdTimeFunctions.isoTime writes it, with the text up to the second
 * made once a second: a Date and its toISOString per line were a few microseconds of every request's log line.
 */
export function isoTime(now = Date.now()): string {
  const ms = now % 1000;
  const second = now - ms;
  if (second !== secondStart) {
    secondStart = second;
    secondPrefix = new Date(second).toISOString().slice(0, 20); // 2026-12-01T23:35:12.
  }
  return `,"time":"${secondPrefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z"`;
}

export function createLogger(level: string | undefined, destination?: pino.DestinationStream): Logger {
  const lvl = (level ?? 'info') as LevelWithSilent;
  // The destination's own warning (lines dropped) follows the logger's level, read when it is written
  // (never during construction, so `logger` is set by then).
  const logger: Logger = pino(
    {
      level: lvl,
      base: { service: 'tollgate' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: isoTime,
    },
    destination ?? new LogDestination({ fd: 1, warns: () => logger.isLevelEnabled('warn') }),
  );
  return logger;
}
