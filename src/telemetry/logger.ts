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

export function createLogger(level: string | undefined, destination?: pino.DestinationStream): Logger {
  const lvl = (level ?? 'info') as LevelWithSilent;
  // The destination's own warning (lines dropped) follows the logger's level, read when it is written
  // (never during construction, so `logger` is set by then).
  const logger: Logger = pino(
    {
      level: lvl,
      base: { service: 'tollgate' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? new LogDestination({ fd: 1, warns: () => logger.isLevelEnabled('warn') }),
  );
  return logger;
}
