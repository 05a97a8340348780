/**
 * Captures pino output in memory: pass a LogCapture as the logger's destination and read the
 * parsed lines back.
 */
import { pino } from 'pino';
import type { Logger } from '../../src/log.js';

export type LogLine = Record<string, unknown>;

/** A pino destination that keeps every JSON line. */
export class LogCapture {
  readonly lines: LogLine[] = [];
  /** Raw text, for "this string never appears" checks. */
  text = '';

  write(chunk: string): void {
    this.text += chunk;
    for (const l of chunk.split('\n')) {
      if (l.trim() !== '') this.lines.push(JSON.parse(l) as LogLine);
    }
  }

  /** Lines whose `msg` is `msg` (and whose fields include `match`). */
  find(msg: string, match: LogLine = {}): LogLine[] {
    return this.lines.filter((l) => l['msg'] === msg && Object.entries(match).every(([k, v]) => l[k] === v));
  }
}

/** A debug-level logger writing into `capture`. */
export function captureLogger(capture: LogCapture): Logger {
  return pino({ level: 'debug' }, capture);
}
