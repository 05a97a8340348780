/**
 * The root pino logger. JSON lines to stdout (no transport thread in production); `pretty` is
 * for a terminal and needs pino-pretty installed. Modules take a child: `log.child({ module })`.
 */
import { pino, type Logger } from 'pino';
import type { LogFormat, LogLevel } from './config/config.js';

export type { Logger } from 'pino';

export interface LoggerOptions {
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** Where lines go; default stdout. Tests pass a stream to read them. */
  readonly destination?: pino.DestinationStream;
}

/** Creates the root logger. Secrets in env maps, headers and credentials are redacted. */
export function createLogger({ level, format, destination }: LoggerOptions): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: 'esb-agent' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: {
      paths: ['env.*', 'headers.authorization', 'headers.Authorization', '*.password', '*.auth', '*.identitytoken'],
      censor: '[redacted]',
    },
  };
  if (format === 'pretty' && destination === undefined) {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true } } });
  }
  return destination ? pino(options, destination) : pino(options);
}

/** A logger that writes nothing (unit tests, tools). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
